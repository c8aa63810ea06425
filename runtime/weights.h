// What the decoder forward consumes and produces, shared by every engine (runtime/engine.h): a layer's
// weights, the source that supplies them, the hidden states of all sequences, and the hook that sees
// each Linear's input.
#pragma once

#include <cstdint>
#include <functional>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "base/expected.h"
#include "ir/model.h"
#include "runtime/spill.h"

namespace fp4c::runtime {

enum class Precision : uint8_t {
  F32,    // FP32 activations and GEMMs (the correctness reference)
  BF16,   // GEMM inputs rounded to BF16, FP32 accumulation (as GPU frameworks run a BF16 model)
};

// "f32" or "bf16", as the command line, the manifest and the statistics keys spell it.
inline std::string_view precision_name(Precision p) { return p == Precision::BF16 ? "bf16" : "f32"; }
inline std::optional<Precision> parse_precision(std::string_view name) {
  if (name == "f32") return Precision::F32;
  if (name == "bf16") return Precision::BF16;
  return std::nullopt;
}

// The artifact's own bytes of an NVFP4 Linear, for an engine that multiplies them directly (CUDA);
// LinearParams::weight holds the same values dequantized, which the CPU multiplies.
// Element (r, c) = e2m1(code) * (e4m3(block_scales[r, c/16]) / global_scale) in float32, or, when
// weight_scale_2 is set (ModelOpt layout), (e2m1(code) * e4m3(scale)) * weight_scale_2: exactly the
// expression of ArtifactReader::dequantize, so every engine sees the same weights bit for bit.
struct PackedNvfp4 {
  std::vector<uint8_t> codes;          // [out, in/2]: element 2i in the low nibble, 2i+1 in the high
  std::vector<uint8_t> block_scales;   // [out, in/16] FP8 E4M3
  float global_scale = 1;              // G
  std::optional<float> weight_scale_2; // ModelOpt: 1/G as stored
};

// A Linear as the forward uses it: dense float32 weight [out, in] row-major (dequantized when the
// source is quantized), an optional bias [out], and for W4A4 the input global scale with which its
// input is fake-quantized to NVFP4 (blocks of 16 along in, FP8 block scales), as a serving engine does.
struct LinearParams {
  int64_t out = 0, in = 0;
  std::vector<float> weight;
  std::optional<PackedNvfp4> packed;       // set for NVFP4 Linears read from an artifact
  std::vector<float> bias;                 // empty: no bias
  std::optional<float> input_global_scale; // set: W4A4 activation fake-quantization
  bool input_mxfp4 = false;                // set: MXFP4 W4A4, input fake-quantized per block of 32 with
                                           // E8M0 scales from each block (runtime::fake_quantize_mxfp4);
                                           // input_global_scale stays unset
};

struct LayerParams {
  std::vector<float> input_norm;           // [hidden]
  std::vector<float> post_norm;            // [hidden]
  // Per-head RMSNorm weights of the queries and keys, applied after the projections (and their biases)
  // and before RoPE (Qwen3); empty when the architecture has none.
  std::vector<float> q_norm, k_norm;       // [head_dim]
  // RMSNorm weights of the attention output and of the MLP output before each residual add (Gemma 3);
  // empty when the architecture has none.
  std::vector<float> attn_out_norm, mlp_out_norm;   // [hidden]
  LinearParams q, k, v, o, gate, up, down;   // gate/up/down: the dense MLP (empty on a sparse MoE layer)
  // A sparse MoE layer (ModelConfig::moe_layer): the router [num_experts, hidden] and each expert's SwiGLU
  // [moe_intermediate_size, hidden] x 2 and [hidden, moe_intermediate_size]. Empty on a dense layer.
  struct Expert {
    LinearParams gate, up, down;
  };
  LinearParams router;
  std::vector<Expert> experts;
};

// q_norm and k_norm both empty, or both [head_dim] (an error naming `where` otherwise).
Status check_head_norms(const LayerParams& p, int64_t head_dim, const std::string& where);
// The per-head RMSNorm of q [rows, heads * head_dim] and k [rows, kv_heads * head_dim] in place, with
// q_norm and k_norm (LayerParams'; runtime::rms_norm over each head_dim-wide row); nothing when empty.
void apply_head_norms(const std::vector<float>& q_norm, const std::vector<float>& k_norm, float* q, float* k,
                      int64_t rows, int64_t heads, int64_t kv_heads, int64_t head_dim, double eps);

// Supplies weights one layer at a time (from a BF16 checkpoint, or dequantized from an artifact).
class WeightSource {
 public:
  virtual ~WeightSource() = default;
  virtual Expected<std::vector<float>> embedding() = 0;  // [vocab, hidden]
  // Rows `ids` of the embedding, [ids.size(), hidden]; a source that can read single rows should,
  // so that a large vocabulary is never held whole. The default gathers from embedding().
  virtual Expected<std::vector<float>> embedding_rows(std::span<const int32_t> ids, int64_t hidden);
  virtual Expected<LayerParams> layer(int index) = 0;
  virtual Expected<std::vector<float>> final_norm() = 0; // [hidden]
  virtual Expected<LinearParams> lm_head() = 0;          // [vocab, hidden] (the embedding when tied)
};

// The input of a Linear group, FP32, [rows = tokens of all sequences, cols = in_features]. `role` is
// the role of the group's first member: Q for {q,k,v}, O, Gate for {gate,up}, Down.
// On a sparse MoE layer, Gate is the MLP norm's output over every token (what the router and, with
// all-expert statistics, every expert reads), and each expert's inputs come with `expert` set: Gate rows are
// the tokens routed to it (`tokens`: their rows in the layer's input, ascending), Down rows its own SiLU-mul
// output on them. ForwardOptions::moe_all_experts runs every token through every expert for the hook instead.
struct LinearInput {
  int layer;
  ir::Role role;
  const float* x;
  int64_t rows;
  int64_t cols;
  int expert = -1;
  const int64_t* tokens = nullptr;   // expert inputs: rows' token indices (null: rows are tokens 0..rows-1)
};
using LinearHook = std::function<void(const LinearInput&)>;

// Hidden states of all sequences, [total tokens, hidden], sequences back to back.
struct Activations {
  HiddenStates hidden;            // spilled to a temporary file beyond ForwardOptions::spill's budget
  std::vector<int64_t> offsets;   // sequence s is rows [offsets[s], offsets[s+1])
  int64_t tokens() const { return offsets.empty() ? 0 : offsets.back(); }
};

struct ForwardOptions {
  Precision precision = Precision::F32;
  int threads = 0;  // OpenMP threads for the forward (oneDNN's included); 0: OpenMP's default
  SpillPolicy spill; // hidden states of all sequences beyond spill.memory_budget go to a temporary file
  // MoE with a hook: the hook sees every expert's inputs over every token (the statistics of
  // llm-compressor's moe_calibrate_all_experts); the layer's output is still the routed one.
  bool moe_all_experts = false;
};

}  // namespace fp4c::runtime
