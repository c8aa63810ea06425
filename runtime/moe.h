// The sparse mixture-of-experts MLP (Mixtral, Qwen3-MoE), shared by the layer-by-layer Forward and the KV-cache
// Decoder: router logits, softmax in float32 over every expert, the top-k experts of each token (ties to the
// lower expert index), their probabilities renormalized to sum 1 where the model does (Mixtral always,
// Qwen3-MoE with norm_topk_prob), then the tokens grouped by expert so that each expert's gate, up and down
// run as one GEMM each over its tokens, and the outputs added back weighted, expert by expert in ascending
// order (transformers' order), each token's row once per expert: the same bits at any thread count.
#pragma once

#include <cstdint>
#include <functional>
#include <vector>

#include "base/expected.h"
#include "ir/model.h"
#include "runtime/weights.h"

namespace fp4c::runtime {

// The routing of T tokens over E experts, top k.
struct Routing {
  int64_t tokens = 0, experts = 0, top_k = 0;
  std::vector<int32_t> expert;   // [T, k]: token t's experts, by descending probability
  std::vector<float> weight;     // [T, k]: their weights (renormalized or not)
  // Grouped by expert: expert e's tokens are token[begin[e] .. begin[e+1]) (ascending), with weights
  // token_weight[...] (the same range).
  std::vector<int64_t> begin;    // [E + 1]
  std::vector<int64_t> token;    // [T * k]
  std::vector<float> token_weight;
  int64_t count(int64_t e) const { return begin[size_t(e) + 1] - begin[size_t(e)]; }
};

// Routing from router logits [T, E] (float32): softmax in float32, top k, renormalized when `renormalize`.
Routing route(const float* logits, int64_t T, int64_t E, int64_t k, bool renormalize);

// Runs one Linear of the block over rows of float input: part Router (expert -1), or Gate / Up / Down of an
// expert. x [rows, in], y [rows, out].
enum class MoePart : uint8_t { Router, Gate, Up, Down };
using MoeLinear = std::function<Status(int expert, MoePart part, const float* x, int64_t rows, float* y)>;

// Temporaries kept between calls.
struct MoeWorkspace {
  std::vector<float> logits, gathered, gate, up, down, all_gate, all_up;
};

// out[T, H] = the MoE MLP of xn[T, H] (the MLP norm's output). `hook` (may be empty) sees the router's input
// (role Gate, expert -1) and each expert's inputs (LinearInput::expert set): its routed tokens, or every token
// when `all_experts` (the layer's output is the routed one either way). `routing_out` (may be null) receives the
// routing.
Status moe_mlp(const ir::ModelConfig& c, int layer, const float* xn, int64_t T, const MoeLinear& run,
               const LinearHook& hook, bool all_experts, MoeWorkspace& ws, float* out, Routing* routing_out = nullptr);

// Shape checks of a sparse layer's router and experts against the config (errors name `where`).
Status check_moe_params(const ir::ModelConfig& c, const LayerParams& p, const std::string& where);

}  // namespace fp4c::runtime
