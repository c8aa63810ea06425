// The model shapes fp4c-synth can make, and the config files of their Hugging Face families.
#pragma once

#include <cstdint>
#include <optional>
#include <span>
#include <string>
#include <string_view>

namespace fp4c::synth {

enum class Family : uint8_t { Qwen2, Llama, Qwen3, Qwen3Moe };

std::string_view architecture_name(Family f);  // "Qwen2ForCausalLM", ...

struct Preset {
  std::string_view name;
  std::string_view summary;              // one line for --help
  Family family;
  int64_t hidden_size;
  int64_t intermediate_size;
  int64_t num_layers;
  int64_t num_heads;
  int64_t num_kv_heads;
  int64_t head_dim;
  std::optional<int64_t> vocab_size;     // unset: the tokenizer's size rounded up to a multiple of 64
  int64_t max_position_embeddings;
  double rope_theta;
  double rms_norm_eps;
  bool tie_word_embeddings;
  bool llama3_rope_scaling;              // Llama 3.1 values: factor 8, low 1, high 4, original 8192
  // Qwen3Moe: every layer sparse, a router [experts, hidden] and experts of moe_intermediate_size.
  int64_t num_experts = 0;
  int64_t experts_per_tok = 0;
  int64_t moe_intermediate_size = 0;
  bool norm_topk_prob = false;
};

std::span<const Preset> presets();
const Preset* find_preset(std::string_view name);

// What the tokenizer decided: its size and the ids of the special tokens the configs name.
struct SpecialIds {
  int64_t tokenizer_size = 0;
  int64_t bos = 0;
  int64_t eos = 0;
};

// A preset made concrete: layer count override applied, vocabulary size and special ids resolved.
struct ModelSpec {
  Preset preset;
  int64_t num_layers = 0;
  int64_t vocab_size = 0;
  SpecialIds ids;
  bool attention_bias() const { return preset.family == Family::Qwen2; }
};

ModelSpec resolve(const Preset& preset, std::optional<int64_t> layers, const SpecialIds& ids);

// config.json and generation_config.json as transformers writes them (sorted keys, indent 2).
std::string config_json(const ModelSpec& spec);
std::string generation_config_json(const ModelSpec& spec);

}  // namespace fp4c::synth
