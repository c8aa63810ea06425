#include "architecture.h"

#include <cmath>

namespace fp4c::synth {

namespace {

// Trained projections keep roughly their init's 1/sqrt(fan_in) scale; attention q/k drift larger,
// v/o and the output head smaller.
struct LinearScale {
  const char* name;
  float factor;
};
constexpr LinearScale kQ{"q_proj", 1.2f}, kK{"k_proj", 1.5f}, kV{"v_proj", 0.7f}, kO{"o_proj", 0.7f},
    kGate{"gate_proj", 1.0f}, kUp{"up_proj", 0.9f}, kDown{"down_proj", 0.8f};
constexpr float kLmHeadFactor = 0.6f;
constexpr float kEmbeddingStd = 0.02f;
constexpr float kBiasStd = 0.02f;

float linear_std(float factor, int64_t fan_in) { return factor / std::sqrt(float(fan_in)); }

}  // namespace

int64_t PlannedTensor::numel() const {
  int64_t n = 1;
  for (int64_t d : shape) n *= d;
  return n;
}

std::vector<PlannedTensor> plan_tensors(const ModelSpec& spec) {
  const Preset& p = spec.preset;
  const int64_t h = p.hidden_size, q_dim = p.num_heads * p.head_dim, kv_dim = p.num_kv_heads * p.head_dim;
  std::vector<PlannedTensor> out;
  out.push_back({"model.embed_tokens.weight", {spec.vocab_size, h}, TensorKind::Embedding, kEmbeddingStd});
  for (int64_t i = 0; i < spec.num_layers; ++i) {
    const std::string layer = "model.layers." + std::to_string(i) + ".";
    auto linear = [&](const std::string& module, const LinearScale& s, int64_t rows, int64_t cols, bool bias) {
      out.push_back({layer + module + s.name + ".weight", {rows, cols}, TensorKind::Linear, linear_std(s.factor, cols)});
      if (bias) out.push_back({layer + module + s.name + ".bias", {rows}, TensorKind::Bias, kBiasStd});
    };
    const bool bias = spec.attention_bias();
    linear("self_attn.", kQ, q_dim, h, bias);
    linear("self_attn.", kK, kv_dim, h, bias);
    linear("self_attn.", kV, kv_dim, h, bias);
    linear("self_attn.", kO, h, q_dim, false);
    if (p.family == Family::Qwen3Moe) {
      // The router, then each expert's SwiGLU (as transformers saves them, per expert).
      out.push_back({layer + "mlp.gate.weight", {p.num_experts, h}, TensorKind::Linear, linear_std(1.0f, h)});
      for (int64_t e = 0; e < p.num_experts; ++e) {
        const std::string ex = "mlp.experts." + std::to_string(e) + ".";
        linear(ex, kGate, p.moe_intermediate_size, h, false);
        linear(ex, kUp, p.moe_intermediate_size, h, false);
        linear(ex, kDown, h, p.moe_intermediate_size, false);
      }
    } else {
      linear("mlp.", kGate, p.intermediate_size, h, false);
      linear("mlp.", kUp, p.intermediate_size, h, false);
      linear("mlp.", kDown, h, p.intermediate_size, false);
    }
    if (p.family == Family::Qwen3 || p.family == Family::Qwen3Moe) {
      out.push_back({layer + "self_attn.q_norm.weight", {p.head_dim}, TensorKind::Norm});
      out.push_back({layer + "self_attn.k_norm.weight", {p.head_dim}, TensorKind::Norm});
    }
    out.push_back({layer + "input_layernorm.weight", {h}, TensorKind::Norm});
    out.push_back({layer + "post_attention_layernorm.weight", {h}, TensorKind::Norm});
  }
  out.push_back({"model.norm.weight", {h}, TensorKind::Norm});
  if (!p.tie_word_embeddings)
    out.push_back({"lm_head.weight", {spec.vocab_size, h}, TensorKind::Linear, linear_std(kLmHeadFactor, h)});
  return out;
}

}  // namespace fp4c::synth
