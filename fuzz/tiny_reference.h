// The reference model of the artifact-reader harnesses: a one-layer Llama (hidden 32, intermediate
// 32, 2 heads of 16, 1 KV head, vocab 32, tied embeddings), the model the seed artifacts in
// fuzz/corpus/{compressed_tensors,modelopt}_reader_fuzz/ were quantized from (fuzz/make_seeds.py).
#pragma once

#include <cstdlib>
#include <string>
#include <vector>

#include "frontend/architecture.h"
#include "frontend/config.h"
#include "ir/model.h"

namespace fp4c::fuzz {

inline constexpr const char* kTinyConfig = R"({
  "architectures": ["LlamaForCausalLM"], "model_type": "llama",
  "hidden_size": 32, "intermediate_size": 32, "num_hidden_layers": 1,
  "num_attention_heads": 2, "num_key_value_heads": 1, "head_dim": 16, "vocab_size": 32,
  "max_position_embeddings": 64, "rms_norm_eps": 1e-05, "rope_theta": 10000.0, "hidden_act": "silu",
  "tie_word_embeddings": true, "torch_dtype": "bfloat16", "bos_token_id": 1, "eos_token_id": 2,
  "attention_bias": false, "mlp_bias": false
})";

inline const ir::Model& tiny_reference() {
  static const ir::Model model = [] {
    auto config = frontend::parse_config(kTinyConfig, "tiny config.json");
    if (!config.ok()) std::abort();   // the harness's own data: never a finding in fp4c
    const std::string p = "model.layers.0.";
    const std::vector<frontend::TensorHeader> tensors = {
        {"model.embed_tokens.weight", DType::BF16, {32, 32}},
        {p + "input_layernorm.weight", DType::BF16, {32}},
        {p + "mlp.down_proj.weight", DType::BF16, {32, 32}},
        {p + "mlp.gate_proj.weight", DType::BF16, {32, 32}},
        {p + "mlp.up_proj.weight", DType::BF16, {32, 32}},
        {p + "post_attention_layernorm.weight", DType::BF16, {32}},
        {p + "self_attn.k_proj.weight", DType::BF16, {16, 32}},
        {p + "self_attn.o_proj.weight", DType::BF16, {32, 32}},
        {p + "self_attn.q_proj.weight", DType::BF16, {32, 32}},
        {p + "self_attn.v_proj.weight", DType::BF16, {16, 32}},
        {"model.norm.weight", DType::BF16, {32}},
    };
    auto model = frontend::classify(*config, tensors, "tiny reference");
    if (!model.ok()) std::abort();
    return std::move(model).value();
  }();
  return model;
}

}  // namespace fp4c::fuzz
