// Per-architecture tables that classify every checkpoint tensor once: role, layer, module, fused
// groups and activation sites. Nothing after the frontend matches tensor names.
#pragma once

#include <span>
#include <string>
#include <vector>

#include "base/expected.h"
#include "ir/model.h"

namespace fp4c::frontend {

// Architectures fp4c knows: Gemma3ForCausalLM (text), LlamaForCausalLM, MistralForCausalLM, MixtralForCausalLM,
// Phi3ForCausalLM, Qwen2ForCausalLM, Qwen3ForCausalLM, Qwen3MoeForCausalLM.
std::span<const std::string_view> supported_architectures();
bool is_supported_architecture(std::string_view arch);

struct TensorHeader {   // what the checkpoint says about one tensor
  std::string name;
  DType dtype;
  std::vector<int64_t> shape;
};

// Builds the IR for a checkpoint. Checks every tensor is known to the architecture table (an unknown
// name is an error naming it), that shapes agree with the config (e.g. q_proj is
// [heads*head_dim, hidden]), that every expected tensor is present (lm_head may be absent only when
// tie_word_embeddings), and records fused groups ({q,k,v}, {gate,up} per layer) and activation sites
// (input_layernorm -> {q,k,v}, post_attention_layernorm -> {gate,up}).
Expected<ir::Model> classify(const ir::ModelConfig& config, std::span<const TensorHeader> tensors,
                             const std::string& checkpoint_dir);

}  // namespace fp4c::frontend
