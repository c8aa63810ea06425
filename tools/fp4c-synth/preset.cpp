#include "preset.h"

#include <nlohmann/json.hpp>

namespace fp4c::synth {

namespace {

// Shapes of the real checkpoints (Qwen2.5-0.5B, Qwen2.5-7B, Llama-3.1-8B), and two tiny ones for tests.
const Preset kPresets[] = {
    {"tiny", "Qwen2, hidden 128, 2 layers, tied (seconds; for tests)", Family::Qwen2,
     128, 352, 2, 4, 2, 32, std::nullopt, 2048, 1000000.0, 1e-6, true, false},
    {"tiny-llama", "Llama 3, hidden 128, 2 layers, untied, intermediate 344 (down_proj not NVFP4)",
     Family::Llama, 128, 344, 2, 4, 2, 32, std::nullopt, 2048, 500000.0, 1e-5, false, true},
    {"qwen2.5-0.5b", "Qwen2.5-0.5B shapes, about 1 GB", Family::Qwen2,
     896, 4864, 24, 14, 2, 64, 151936, 32768, 1000000.0, 1e-6, true, false},
    {"qwen2.5-7b", "Qwen2.5-7B shapes, about 15 GB in 4 shards", Family::Qwen2,
     3584, 18944, 28, 28, 4, 128, 152064, 131072, 1000000.0, 1e-6, false, false},
    {"llama-3-8b", "Llama-3.1-8B shapes, about 16 GB in 4 shards", Family::Llama,
     4096, 14336, 32, 32, 8, 128, 128256, 131072, 500000.0, 1e-5, false, true},
    {"tiny-qwen3", "Qwen3, hidden 128, 2 layers, tied, head_dim 64 != hidden/heads (seconds; for tests)",
     Family::Qwen3, 128, 384, 2, 4, 2, 64, std::nullopt, 4096, 1000000.0, 1e-6, true, false},
    {"qwen3-8b", "Qwen3-8B shapes (q/k norms), about 16 GB in 4 shards", Family::Qwen3,
     4096, 12288, 36, 32, 8, 128, 151936, 40960, 1000000.0, 1e-6, false, false},
    {"tiny-moe", "Qwen3-MoE, hidden 128, 2 layers, 8 experts of 64, top 2 renormalized (seconds; for tests)",
     Family::Qwen3Moe, 128, 384, 2, 4, 2, 32, std::nullopt, 4096, 1000000.0, 1e-6, false, false, 8, 2, 64, true},
    {"qwen3-30b-a3b", "Qwen3-30B-A3B shapes: 48 layers, 128 experts of 768, top 8, about 61 GB (use --layers)",
     Family::Qwen3Moe, 2048, 6144, 48, 32, 4, 128, 151936, 40960, 1000000.0, 1e-6, false, false, 128, 8, 768, true},
};

constexpr const char* kTransformersVersion = "4.43.1";

}  // namespace

std::span<const Preset> presets() { return kPresets; }

std::string_view architecture_name(Family f) {
  switch (f) {
    case Family::Qwen2: return "Qwen2ForCausalLM";
    case Family::Llama: return "LlamaForCausalLM";
    case Family::Qwen3: return "Qwen3ForCausalLM";
    case Family::Qwen3Moe: return "Qwen3MoeForCausalLM";
  }
  return "?";
}

const Preset* find_preset(std::string_view name) {
  for (const Preset& p : kPresets)
    if (p.name == name) return &p;
  return nullptr;
}

ModelSpec resolve(const Preset& preset, std::optional<int64_t> layers, const SpecialIds& ids) {
  ModelSpec spec;
  spec.preset = preset;
  spec.num_layers = layers.value_or(preset.num_layers);
  spec.vocab_size = preset.vocab_size.value_or((ids.tokenizer_size + 63) / 64 * 64);
  spec.ids = ids;
  return spec;
}

std::string config_json(const ModelSpec& spec) {
  const Preset& p = spec.preset;
  nlohmann::json j;  // std::map underneath: keys come out sorted, as transformers writes them
  j["attention_dropout"] = 0.0;
  j["bos_token_id"] = spec.ids.bos;
  j["eos_token_id"] = spec.ids.eos;
  j["hidden_act"] = "silu";
  j["hidden_size"] = p.hidden_size;
  j["initializer_range"] = 0.02;
  j["intermediate_size"] = p.intermediate_size;
  j["max_position_embeddings"] = p.max_position_embeddings;
  j["num_attention_heads"] = p.num_heads;
  j["num_hidden_layers"] = spec.num_layers;
  j["num_key_value_heads"] = p.num_kv_heads;
  j["rms_norm_eps"] = p.rms_norm_eps;
  j["rope_theta"] = p.rope_theta;
  j["tie_word_embeddings"] = p.tie_word_embeddings;
  j["torch_dtype"] = "bfloat16";
  j["transformers_version"] = kTransformersVersion;
  j["use_cache"] = true;
  j["vocab_size"] = spec.vocab_size;
  switch (p.family) {
    case Family::Qwen2:
      j["architectures"] = {"Qwen2ForCausalLM"};
      j["model_type"] = "qwen2";
      j["max_window_layers"] = spec.num_layers;
      j["sliding_window"] = p.max_position_embeddings;
      j["use_sliding_window"] = false;
      break;
    case Family::Qwen3:
      j["architectures"] = {"Qwen3ForCausalLM"};
      j["model_type"] = "qwen3";
      j["attention_bias"] = false;
      j["head_dim"] = p.head_dim;
      j["max_window_layers"] = spec.num_layers;
      j["sliding_window"] = nullptr;
      j["use_sliding_window"] = false;
      break;
    case Family::Qwen3Moe:
      j["architectures"] = {"Qwen3MoeForCausalLM"};
      j["model_type"] = "qwen3_moe";
      j["attention_bias"] = false;
      j["head_dim"] = p.head_dim;
      j["sliding_window"] = nullptr;
      j["use_sliding_window"] = false;
      j["num_experts"] = p.num_experts;
      j["num_experts_per_tok"] = p.experts_per_tok;
      j["moe_intermediate_size"] = p.moe_intermediate_size;
      j["norm_topk_prob"] = p.norm_topk_prob;
      j["decoder_sparse_step"] = 1;
      j["mlp_only_layers"] = nlohmann::json::array();
      j["router_aux_loss_coef"] = 0.001;
      j["output_router_logits"] = false;
      break;
    case Family::Llama:
      j["architectures"] = {"LlamaForCausalLM"};
      j["model_type"] = "llama";
      j["attention_bias"] = false;
      j["mlp_bias"] = false;
      j["pretraining_tp"] = 1;
      break;
  }
  if (p.llama3_rope_scaling) {
    j["rope_scaling"] = {{"factor", 8.0},
                         {"high_freq_factor", 4.0},
                         {"low_freq_factor", 1.0},
                         {"original_max_position_embeddings", 8192},
                         {"rope_type", "llama3"}};
  }
  return j.dump(2) + "\n";
}

std::string generation_config_json(const ModelSpec& spec) {
  nlohmann::json j;
  j["bos_token_id"] = spec.ids.bos;
  j["eos_token_id"] = spec.ids.eos;
  j["transformers_version"] = kTransformersVersion;
  switch (spec.preset.family) {
    case Family::Qwen2:  // Qwen2.5 base models decode greedily
    case Family::Qwen3:
    case Family::Qwen3Moe:
      j["do_sample"] = false;
      j["max_new_tokens"] = 2048;
      break;
    case Family::Llama:
      j["do_sample"] = true;
      j["temperature"] = 0.6;
      j["top_p"] = 0.9;
      break;
  }
  return j.dump(2) + "\n";
}

}  // namespace fp4c::synth
