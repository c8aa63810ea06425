// Mixture-of-experts checkpoints in the frontend: MixtralForCausalLM and Qwen3MoeForCausalLM configs (every MoE
// key read or refused by name) and their per-expert tensors classified (router, experts with their index, one
// {gate, up} group per expert, the MLP site feeding every expert), and the bad input: too many experts per
// token, a missing or misshapen expert tensor, an expert index past the config, transformers' fused 3-D form.
#include <gtest/gtest.h>

#include <nlohmann/json.hpp>

#include "frontend/architecture.h"
#include "frontend/config.h"

namespace fp4c::frontend {
namespace {

using nlohmann::json;
using ir::Role;

const std::string kPath = "ckpt/config.json";

json mixtral() {
  return json::parse(R"({
    "architectures": ["MixtralForCausalLM"], "model_type": "mixtral", "hidden_size": 32, "intermediate_size": 48,
    "num_hidden_layers": 2, "num_attention_heads": 4, "num_key_value_heads": 2, "vocab_size": 64,
    "max_position_embeddings": 128, "rms_norm_eps": 1e-5, "num_local_experts": 4, "num_experts_per_tok": 2,
    "router_jitter_noise": 0.1, "router_aux_loss_coef": 0.02, "output_router_logits": true, "sliding_window": null,
    "rope_parameters": {"rope_theta": 1000000.0, "rope_type": "default"}, "tie_word_embeddings": false
  })");
}

json qwen3moe() {
  return json::parse(R"({
    "architectures": ["Qwen3MoeForCausalLM"], "model_type": "qwen3_moe", "hidden_size": 32, "intermediate_size": 48,
    "moe_intermediate_size": 16, "num_hidden_layers": 4, "num_attention_heads": 4, "num_key_value_heads": 2,
    "head_dim": 8, "vocab_size": 64, "max_position_embeddings": 128, "rms_norm_eps": 1e-6, "num_experts": 4,
    "num_experts_per_tok": 2, "norm_topk_prob": true, "decoder_sparse_step": 1, "mlp_only_layers": [2],
    "tie_word_embeddings": false
  })");
}

Expected<ir::ModelConfig> parse(const json& j) { return parse_config(j.dump(), kPath); }

std::string config_error(const json& j) {
  auto c = parse(j);
  EXPECT_FALSE(c.ok()) << j.dump();
  return c.ok() ? "" : c.error().message;
}

TEST(MoeConfig, Mixtral) {
  auto c = parse(mixtral());
  ASSERT_TRUE(c.ok()) << c.error().message;
  EXPECT_EQ(c->num_experts, 4);
  EXPECT_EQ(c->num_experts_per_tok, 2);
  EXPECT_TRUE(c->norm_topk_prob);   // Mixtral always renormalizes
  EXPECT_EQ(c->moe_intermediate_size, 48);
  EXPECT_EQ(c->moe_layers, std::vector<bool>({true, true}));
  EXPECT_FALSE(c->sliding_window);
  EXPECT_EQ(c->rope_theta, 1e6);
  json j = mixtral();
  j.erase("rope_parameters");
  EXPECT_EQ(parse(j)->rope_theta, 1e6);   // MixtralConfig's default_theta
  j["sliding_window"] = 16;
  EXPECT_EQ(parse(j)->sliding_layers, std::vector<bool>({true, true}));
  j = mixtral();
  j["norm_topk_prob"] = false;
  EXPECT_NE(config_error(j).find("key 'norm_topk_prob' is not read by MixtralForCausalLM"), std::string::npos);
}

TEST(MoeConfig, Qwen3MoeLayersAndDefaults) {
  auto c = parse(qwen3moe());
  ASSERT_TRUE(c.ok()) << c.error().message;
  EXPECT_EQ(c->num_experts, 4);
  EXPECT_TRUE(c->norm_topk_prob);
  EXPECT_EQ(c->moe_intermediate_size, 16);
  EXPECT_EQ(c->moe_layers, std::vector<bool>({true, true, false, true}));
  json j = qwen3moe();
  j["decoder_sparse_step"] = 2;
  j.erase("mlp_only_layers");
  EXPECT_EQ(parse(j)->moe_layers, std::vector<bool>({false, true, false, true}));
  j.erase("norm_topk_prob");
  EXPECT_FALSE(parse(j)->norm_topk_prob);   // Qwen3MoeConfig's default
  j.erase("num_experts");
  j["num_local_experts"] = 4;               // as transformers 5 writes it
  EXPECT_EQ(parse(j)->num_experts, 4);
  j["use_sliding_window"] = true;
  j["sliding_window"] = 8;
  EXPECT_EQ(parse(j)->sliding_layers, std::vector<bool>(4, true));
}

TEST(MoeConfig, BadKeysAreNamed) {
  json j = qwen3moe();
  j["num_experts_per_tok"] = 5;
  EXPECT_EQ(config_error(j), kPath + ": key 'num_experts_per_tok' = 5 exceeds the 4 experts of key 'num_experts'");
  j = mixtral();
  j["num_experts_per_tok"] = 9;
  EXPECT_EQ(config_error(j),
            kPath + ": key 'num_experts_per_tok' = 9 exceeds the 4 experts of key 'num_local_experts'");
  j = qwen3moe();
  j["num_local_experts"] = 8;
  EXPECT_EQ(config_error(j), kPath + ": keys 'num_local_experts' (8) and 'num_experts' (4) disagree");
  j = qwen3moe();
  j["mlp_only_layers"] = {7};
  EXPECT_EQ(config_error(j), kPath + ": key 'mlp_only_layers' holds layer 7, outside [0, 4)");
  j = qwen3moe();
  j["architectures"] = {"Qwen3ForCausalLM"};
  EXPECT_NE(config_error(j).find("key 'num_experts' = 4: Qwen3ForCausalLM has no experts"), std::string::npos);
}

// The tensors save_pretrained writes for a config (per expert).
std::vector<TensorHeader> headers(const ir::ModelConfig& c) {
  const bool mix = c.architecture == "MixtralForCausalLM";
  const int64_t H = c.hidden_size, I = c.intermediate_size, Im = c.moe_intermediate_size, hd = c.head_dim;
  std::vector<TensorHeader> h;
  auto add = [&](std::string n, std::vector<int64_t> s) { h.push_back({std::move(n), DType::BF16, std::move(s)}); };
  add("model.embed_tokens.weight", {c.vocab_size, H});
  add("model.norm.weight", {H});
  add("lm_head.weight", {c.vocab_size, H});
  for (int64_t l = 0; l < c.num_hidden_layers; ++l) {
    const std::string p = "model.layers." + std::to_string(l) + ".";
    add(p + "input_layernorm.weight", {H});
    add(p + "post_attention_layernorm.weight", {H});
    add(p + "self_attn.q_proj.weight", {c.num_attention_heads * hd, H});
    add(p + "self_attn.k_proj.weight", {c.num_key_value_heads * hd, H});
    add(p + "self_attn.v_proj.weight", {c.num_key_value_heads * hd, H});
    add(p + "self_attn.o_proj.weight", {H, c.num_attention_heads * hd});
    if (!mix) {
      add(p + "self_attn.q_norm.weight", {hd});
      add(p + "self_attn.k_norm.weight", {hd});
    }
    if (!c.moe_layer(l)) {
      add(p + "mlp.gate_proj.weight", {I, H});
      add(p + "mlp.up_proj.weight", {I, H});
      add(p + "mlp.down_proj.weight", {H, I});
      continue;
    }
    const std::string moe = p + (mix ? "block_sparse_moe." : "mlp.");
    add(moe + "gate.weight", {c.num_experts, H});
    for (int64_t e = 0; e < c.num_experts; ++e) {
      const std::string x = moe + "experts." + std::to_string(e) + ".";
      add(x + (mix ? "w1.weight" : "gate_proj.weight"), {Im, H});
      add(x + (mix ? "w3.weight" : "up_proj.weight"), {Im, H});
      add(x + (mix ? "w2.weight" : "down_proj.weight"), {H, Im});
    }
  }
  return h;
}

std::string classify_error(const ir::ModelConfig& c, const std::vector<TensorHeader>& h) {
  auto m = classify(c, h, "/ckpt");
  EXPECT_FALSE(m.ok());
  return m.ok() ? "" : m.error().message;
}

TEST(MoeClassify, ExpertsGroupsAndSites) {
  for (const json& j : {mixtral(), qwen3moe()}) {
    auto c = parse(j);
    ASSERT_TRUE(c.ok()) << c.error().message;
    auto m = classify(*c, headers(*c), "/ckpt");
    ASSERT_TRUE(m.ok()) << m.error().message;
    SCOPED_TRACE(c->architecture);
    const bool mix = c->architecture == "MixtralForCausalLM";
    const std::string router = mix ? "model.layers.1.block_sparse_moe.gate.weight" : "model.layers.1.mlp.gate.weight";
    const auto& r = m->tensors[*m->find(router)];
    EXPECT_EQ(r.role, Role::Router);
    EXPECT_FALSE(r.expert);
    const std::string x = mix ? "model.layers.1.block_sparse_moe.experts.3.w" : "model.layers.1.mlp.experts.3.";
    const auto g = *m->find(x + (mix ? "1.weight" : "gate_proj.weight"));
    const auto u = *m->find(x + (mix ? "3.weight" : "up_proj.weight"));
    const auto d = *m->find(x + (mix ? "2.weight" : "down_proj.weight"));
    EXPECT_EQ(m->tensors[g].role, Role::Gate);
    EXPECT_EQ(m->tensors[u].role, Role::Up);
    EXPECT_EQ(m->tensors[d].role, Role::Down);
    for (auto id : {g, u, d}) {
      EXPECT_EQ(m->tensors[id].expert, 3);
      EXPECT_EQ(m->tensors[id].layer, 1);
    }
    ASSERT_TRUE(m->group_of(g));
    EXPECT_EQ(m->group_of(g)->members, std::vector<ir::TensorId>({g, u}));
    EXPECT_FALSE(m->group_of(d));
    // Layer 1's MLP site: post_attention_layernorm -> every expert's gate and up, expert by expert.
    const auto post = *m->find("model.layers.1.post_attention_layernorm.weight");
    const ir::ActivationSite* site = nullptr;
    for (const auto& s : m->sites)
      if (s.producer == post) site = &s;
    ASSERT_TRUE(site);
    ASSERT_EQ(site->consumers.size(), size_t(2 * c->num_experts));
    EXPECT_EQ(site->consumers[6], g);
    EXPECT_EQ(site->consumers[7], u);
    // Per layer: qkv and one group per expert on a sparse layer, qkv and gate/up on a dense one.
    size_t groups = 0;
    for (int64_t l = 0; l < c->num_hidden_layers; ++l) groups += 1 + (c->moe_layer(l) ? c->num_experts : 1);
    EXPECT_EQ(m->fused_groups.size(), groups);
  }
}

TEST(MoeClassify, BadTensorsAreNamed) {
  auto c = parse(qwen3moe());
  ASSERT_TRUE(c.ok());
  auto h = headers(*c);
  // An expert missing.
  auto missing = h;
  std::erase_if(missing, [](const TensorHeader& t) { return t.name == "model.layers.3.mlp.experts.2.down_proj.weight"; });
  EXPECT_EQ(classify_error(*c, missing),
            "/ckpt: missing tensor 'model.layers.3.mlp.experts.2.down_proj.weight' (Qwen3MoeForCausalLM)");
  // An expert's shape contradicting moe_intermediate_size.
  auto shaped = h;
  for (auto& t : shaped)
    if (t.name == "model.layers.0.mlp.experts.1.up_proj.weight") t.shape = {24, 32};
  EXPECT_EQ(classify_error(*c, shaped),
            "/ckpt: tensor 'model.layers.0.mlp.experts.1.up_proj.weight' has shape [24, 32], expected [16, 32]");
  // A router for a different number of experts.
  auto router = h;
  for (auto& t : router)
    if (t.name == "model.layers.0.mlp.gate.weight") t.shape = {8, 32};
  EXPECT_EQ(classify_error(*c, router), "/ckpt: tensor 'model.layers.0.mlp.gate.weight' has shape [8, 32], expected [4, 32]");
  // An expert index past the config.
  auto extra = h;
  extra.push_back({"model.layers.0.mlp.experts.4.up_proj.weight", DType::BF16, {16, 32}});
  EXPECT_EQ(classify_error(*c, extra),
            "/ckpt: tensor 'model.layers.0.mlp.experts.4.up_proj.weight' has expert index 4, but the config has 4 experts");
  // Experts on a dense layer (mlp_only_layers).
  auto dense = h;
  dense.push_back({"model.layers.2.mlp.gate.weight", DType::BF16, {4, 32}});
  EXPECT_EQ(classify_error(*c, dense), "/ckpt: unexpected tensor 'model.layers.2.mlp.gate.weight': layer 2 is a dense "
                                       "MLP layer (mlp_only_layers / decoder_sparse_step)");
  // transformers' fused in-memory form.
  auto fused = h;
  fused.push_back({"model.layers.0.mlp.experts.gate_up_proj", DType::BF16, {4, 32, 32}});
  EXPECT_NE(classify_error(*c, fused).find("holds every expert in one 3-D tensor"), std::string::npos);
  auto padded = h;
  padded.push_back({"model.layers.0.mlp.experts.01.up_proj.weight", DType::BF16, {16, 32}});
  EXPECT_NE(classify_error(*c, padded).find("malformed expert index"), std::string::npos);
}

}  // namespace
}  // namespace fp4c::frontend
