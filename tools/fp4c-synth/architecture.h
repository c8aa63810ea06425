// The tensors of a Qwen2 / Llama decoder checkpoint, named and shaped as the real ones are.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "preset.h"

namespace fp4c::synth {

// What statistics a tensor's values follow (see weights.h).
enum class TensorKind : uint8_t { Embedding, Linear, Norm, Bias };

struct PlannedTensor {
  std::string name;             // e.g. "model.layers.0.self_attn.q_proj.weight"
  std::vector<int64_t> shape;   // [out_features, in_features] for Linears
  TensorKind kind;
  float scale = 0;              // typical magnitude of the values (Linear, Embedding, Bias)
  int64_t numel() const;
  uint64_t nbytes() const { return uint64_t(numel()) * 2; }  // BF16
};

// Every tensor of the model in state-dict order (embedding, then per layer self_attn, mlp,
// input_layernorm, post_attention_layernorm, then the final norm and lm_head unless tied): the
// order transformers saves and shards in.
std::vector<PlannedTensor> plan_tensors(const ModelSpec& spec);

}  // namespace fp4c::synth
