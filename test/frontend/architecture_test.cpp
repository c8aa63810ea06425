#include "frontend/architecture.h"

#include <gtest/gtest.h>

#include <algorithm>
#include <map>
#include <random>

#include "frontend/config.h"

namespace fp4c::frontend {
namespace {

using ir::ParamKind;
using ir::Role;

const std::string kConfigs = std::string(FP4C_SOURCE_DIR) + "/testdata/configs/";
const std::string kDir = "/ckpt/tiny";

struct SynthOptions {
  bool lm_head = true;
  bool qkv_bias = false;
  bool inv_freq = false;
  bool qk_norm = false;   // Qwen3
  bool o_bias = false;    // Llama / Qwen3 with attention_bias
  bool mlp_bias = false;  // Llama with mlp_bias
  DType dtype = DType::BF16;
};

// The tensors a Hugging Face checkpoint of `c` holds, in the order transformers saves them.
std::vector<TensorHeader> synth_headers(const ir::ModelConfig& c, const SynthOptions& o) {
  const int64_t h = c.hidden_size, i = c.intermediate_size, v = c.vocab_size;
  const int64_t q = c.num_attention_heads * c.head_dim, kv = c.num_key_value_heads * c.head_dim;
  std::vector<TensorHeader> out;
  auto add = [&](std::string name, std::vector<int64_t> shape) {
    out.push_back({std::move(name), o.dtype, std::move(shape)});
  };
  add("model.embed_tokens.weight", {v, h});
  for (int64_t l = 0; l < c.num_hidden_layers; ++l) {
    std::string p = "model.layers." + std::to_string(l) + ".";
    add(p + "self_attn.q_proj.weight", {q, h});
    if (o.qkv_bias) add(p + "self_attn.q_proj.bias", {q});
    add(p + "self_attn.k_proj.weight", {kv, h});
    if (o.qkv_bias) add(p + "self_attn.k_proj.bias", {kv});
    add(p + "self_attn.v_proj.weight", {kv, h});
    if (o.qkv_bias) add(p + "self_attn.v_proj.bias", {kv});
    add(p + "self_attn.o_proj.weight", {h, q});
    if (o.o_bias) add(p + "self_attn.o_proj.bias", {h});
    if (o.inv_freq) add(p + "self_attn.rotary_emb.inv_freq", {c.head_dim / 2});
    if (o.qk_norm) {
      add(p + "self_attn.q_norm.weight", {c.head_dim});
      add(p + "self_attn.k_norm.weight", {c.head_dim});
    }
    add(p + "mlp.gate_proj.weight", {i, h});
    add(p + "mlp.up_proj.weight", {i, h});
    add(p + "mlp.down_proj.weight", {h, i});
    if (o.mlp_bias) {
      add(p + "mlp.gate_proj.bias", {i});
      add(p + "mlp.up_proj.bias", {i});
      add(p + "mlp.down_proj.bias", {h});
    }
    add(p + "input_layernorm.weight", {h});
    add(p + "post_attention_layernorm.weight", {h});
  }
  add("model.norm.weight", {h});
  if (o.lm_head) add("lm_head.weight", {v, h});
  return out;
}

ir::ModelConfig load(const std::string& file) {
  auto c = read_config(kConfigs + file);
  EXPECT_TRUE(c.ok()) << c.error().message;
  return c.ok() ? *c : ir::ModelConfig{};
}

// A tiny Llama, the shape of stories260K with two layers.
ir::ModelConfig tiny(std::string arch = "LlamaForCausalLM") {
  ir::ModelConfig c;
  c.architecture = std::move(arch);
  c.hidden_size = 64;
  c.intermediate_size = 172;
  c.num_hidden_layers = 2;
  c.num_attention_heads = 8;
  c.num_key_value_heads = 4;
  c.head_dim = 8;
  c.vocab_size = 512;
  c.max_position_embeddings = 512;
  return c;
}

std::map<std::pair<Role, ParamKind>, int> count_roles(const ir::Model& m) {
  std::map<std::pair<Role, ParamKind>, int> n;
  for (const auto& t : m.tensors) ++n[{t.role, t.kind}];
  return n;
}

// Checks the parts every decoder layout shares: roles, groups, sites, layers, modules.
void check_model(const ir::Model& m, const std::vector<TensorHeader>& headers, bool lm_head,
                 bool bias) {
  const int L = int(m.config.num_hidden_layers);
  ASSERT_EQ(m.tensors.size(), headers.size());
  for (size_t i = 0; i < headers.size(); ++i) {  // the checkpoint's order, as given
    EXPECT_EQ(m.tensors[i].name, headers[i].name);
    EXPECT_EQ(m.tensors[i].shape, headers[i].shape);
    EXPECT_EQ(m.tensors[i].dtype, headers[i].dtype);
    EXPECT_EQ(m.find(headers[i].name), ir::TensorId(i));
  }
  auto n = count_roles(m);
  EXPECT_EQ((n[{Role::Embedding, ParamKind::Weight}]), 1);
  EXPECT_EQ((n[{Role::Norm, ParamKind::Weight}]), 2 * L + 1);
  for (Role r : {Role::Q, Role::K, Role::V, Role::O, Role::Gate, Role::Up, Role::Down})
    EXPECT_EQ((n[{r, ParamKind::Weight}]), L) << role_name(r);
  for (Role r : {Role::Q, Role::K, Role::V})
    EXPECT_EQ((n[{r, ParamKind::Bias}]), bias ? L : 0) << role_name(r);
  EXPECT_EQ((n[{Role::LmHead, ParamKind::Weight}]), lm_head ? 1 : 0);
  EXPECT_EQ(m.tied_lm_head, !lm_head);
  EXPECT_EQ(m.linear_weights().size(), size_t(7 * L + (lm_head ? 1 : 0)));

  ASSERT_EQ(m.fused_groups.size(), size_t(2 * L));
  ASSERT_EQ(m.sites.size(), size_t(2 * L));
  auto roles = [&](const std::vector<ir::TensorId>& ids) {
    std::vector<Role> out;
    for (auto id : ids) {
      EXPECT_EQ(m.tensors[id].kind, ParamKind::Weight);
      out.push_back(m.tensors[id].role);
    }
    return out;
  };
  const std::vector<Role> qkv = {Role::Q, Role::K, Role::V}, gate_up = {Role::Gate, Role::Up};
  for (int l = 0; l < L; ++l) {
    const std::string p = "model.layers." + std::to_string(l) + ".";
    const auto& g0 = m.fused_groups[2 * l].members;
    const auto& g1 = m.fused_groups[2 * l + 1].members;
    EXPECT_EQ(roles(g0), qkv);
    EXPECT_EQ(roles(g1), gate_up);
    for (auto id : g0) EXPECT_EQ(m.tensors[id].layer, l);
    for (auto id : g1) EXPECT_EQ(m.tensors[id].layer, l);
    EXPECT_EQ(m.group_of(g0[1]), &m.fused_groups[2 * l]);
    const auto& s0 = m.sites[2 * l];
    const auto& s1 = m.sites[2 * l + 1];
    EXPECT_EQ(m.tensors[s0.producer].name, p + "input_layernorm.weight");
    EXPECT_EQ(s0.consumers, g0);
    EXPECT_EQ(m.tensors[s1.producer].name, p + "post_attention_layernorm.weight");
    EXPECT_EQ(s1.consumers, g1);
  }
  for (const auto& t : m.tensors) {
    bool per_layer = t.name.starts_with("model.layers.");
    EXPECT_EQ(t.layer.has_value(), per_layer) << t.name;
    std::string suffix = t.kind == ParamKind::Bias ? ".bias" : ".weight";
    EXPECT_EQ(t.module + suffix, t.name);
  }
  EXPECT_FALSE(m.group_of(*m.find("model.layers.0.self_attn.o_proj.weight")));
}

Expected<ir::Model> classify_all(const ir::ModelConfig& c, const std::vector<TensorHeader>& h) {
  return classify(c, h, kDir);
}

std::string error_of(const ir::ModelConfig& c, const std::vector<TensorHeader>& h) {
  auto m = classify(c, h, kDir);
  EXPECT_FALSE(m.ok());
  return m.ok() ? "" : m.error().message;
}

TEST(Architecture, Supported) {
  auto a = supported_architectures();
  ASSERT_EQ(a.size(), 8u);
  EXPECT_EQ(a[0], "Gemma3ForCausalLM");
  EXPECT_EQ(a[1], "LlamaForCausalLM");
  EXPECT_EQ(a[2], "MistralForCausalLM");
  EXPECT_EQ(a[3], "MixtralForCausalLM");
  EXPECT_EQ(a[4], "Phi3ForCausalLM");
  EXPECT_EQ(a[5], "Qwen2ForCausalLM");
  EXPECT_EQ(a[6], "Qwen3ForCausalLM");
  EXPECT_EQ(a[7], "Qwen3MoeForCausalLM");
  EXPECT_TRUE(is_supported_architecture("Qwen2ForCausalLM"));
  EXPECT_FALSE(is_supported_architecture("Qwen2MoeForCausalLM"));
  EXPECT_FALSE(is_supported_architecture(""));
}

TEST(Classify, Qwen25_05B_TiedWithBiases) {
  ir::ModelConfig c = load("qwen2.5-0.5b-instruct.json");
  auto h = synth_headers(c, {.lm_head = false, .qkv_bias = true});
  auto m = classify_all(c, h);
  ASSERT_TRUE(m.ok()) << m.error().message;
  check_model(*m, h, /*lm_head=*/false, /*bias=*/true);
  EXPECT_TRUE(m->tied_lm_head);
  EXPECT_EQ(m->tensors.size(), size_t(24 * 12 + 2));
  const auto& qb = m->tensors[*m->find("model.layers.23.self_attn.q_proj.bias")];
  EXPECT_EQ(qb.role, Role::Q);
  EXPECT_EQ(qb.kind, ParamKind::Bias);
  EXPECT_EQ(qb.module, "model.layers.23.self_attn.q_proj");
  EXPECT_EQ(qb.layer, 23);
  EXPECT_EQ(qb.shape, std::vector<int64_t>{896});
  EXPECT_EQ(m->tensors[*m->find("model.layers.23.self_attn.k_proj.bias")].shape,
            std::vector<int64_t>{128});
}

// Qwen3-8B: head_dim 128 explicit, q/k norms [head_dim] per layer, no biases, untied.
TEST(Classify, Qwen3_8B_QkNorms) {
  ir::ModelConfig c = load("qwen3-8b.json");
  EXPECT_EQ(c.head_dim, 128);
  EXPECT_FALSE(c.attention_bias);
  EXPECT_FALSE(c.sliding_window.has_value());
  c.num_hidden_layers = 2;
  auto h = synth_headers(c, {.qk_norm = true});
  auto m = classify(c, h, kDir);
  ASSERT_TRUE(m.ok()) << m.error().message;
  check_model(*m, h, true, false);
  auto n = count_roles(*m);
  EXPECT_EQ((n[{Role::QNorm, ParamKind::Weight}]), 2);
  EXPECT_EQ((n[{Role::KNorm, ParamKind::Weight}]), 2);
  const auto& qn = m->tensors[*m->find("model.layers.1.self_attn.q_norm.weight")];
  EXPECT_EQ(qn.layer, 1);
  EXPECT_EQ(qn.shape, std::vector<int64_t>{128});
  EXPECT_FALSE(ir::is_linear(qn.role));
  // Without them: a missing tensor, named.
  EXPECT_EQ(error_of(c, synth_headers(c, {})), kDir + ": missing tensor 'model.layers.0.self_attn.q_norm.weight' (Qwen3ForCausalLM)");
  // A Llama has none.
  c.architecture = "LlamaForCausalLM";
  EXPECT_EQ(error_of(c, h), kDir + ": unknown tensor 'model.layers.0.self_attn.q_norm.weight' (not in the LlamaForCausalLM table)");
  // Qwen3Config's own default head_dim is 128, not hidden / heads.
}

// Gemma 3: four norms per layer; the activation sites are input_layernorm -> q/k/v and
// pre_feedforward_layernorm -> gate/up; post_attention_layernorm and post_feedforward_layernorm normalize the
// blocks' outputs (their own roles).
TEST(Classify, Gemma3Norms) {
  ir::ModelConfig c = tiny("Gemma3ForCausalLM");
  c.tie_word_embeddings = true;
  std::vector<TensorHeader> h;
  for (const auto& t : synth_headers(c, {.lm_head = false, .qk_norm = true})) {
    if (t.name.ends_with("post_attention_layernorm.weight")) {
      const std::string p = t.name.substr(0, t.name.size() - std::string("post_attention_layernorm.weight").size());
      h.push_back({p + "post_attention_layernorm.weight", t.dtype, t.shape});
      h.push_back({p + "pre_feedforward_layernorm.weight", t.dtype, t.shape});
      h.push_back({p + "post_feedforward_layernorm.weight", t.dtype, t.shape});
    } else {
      h.push_back(t);
    }
  }
  auto m = classify_all(c, h);
  ASSERT_TRUE(m.ok()) << m.error().message;
  EXPECT_EQ(m->tensors[*m->find("model.layers.0.post_attention_layernorm.weight")].role, Role::AttnOutNorm);
  EXPECT_EQ(m->tensors[*m->find("model.layers.0.post_feedforward_layernorm.weight")].role, Role::MlpOutNorm);
  ASSERT_EQ(m->sites.size(), 4u);
  EXPECT_EQ(m->tensors[m->sites[1].producer].name, "model.layers.0.pre_feedforward_layernorm.weight");
  EXPECT_EQ(m->tensors[m->sites[1].consumers[0]].role, Role::Gate);
  EXPECT_EQ(m->linear_weights().size(), size_t(7 * 2));
  std::erase_if(h, [](const TensorHeader& t) { return t.name == "model.layers.1.post_feedforward_layernorm.weight"; });
  EXPECT_EQ(error_of(c, h), kDir + ": missing tensor 'model.layers.1.post_feedforward_layernorm.weight' (Gemma3ForCausalLM)");
}

TEST(Classify, Qwen25_7B) {
  ir::ModelConfig c = load("qwen2.5-7b-instruct.json");
  auto h = synth_headers(c, {.lm_head = true, .qkv_bias = true});
  auto m = classify_all(c, h);
  ASSERT_TRUE(m.ok()) << m.error().message;
  check_model(*m, h, true, true);
  const auto& k = m->tensors[*m->find("model.layers.0.self_attn.k_proj.weight")];
  EXPECT_EQ(k.shape, (std::vector<int64_t>{512, 3584}));
}

TEST(Classify, Qwen2BiasesRequiredEvenIfConfigSaysNo) {
  ir::ModelConfig c = tiny("Qwen2ForCausalLM");
  c.attention_bias = false;  // a config built by hand; Qwen2 has the biases regardless
  auto h = synth_headers(c, {.qkv_bias = false});
  EXPECT_EQ(error_of(c, h),
            kDir + ": missing tensor 'model.layers.0.self_attn.q_proj.bias' (Qwen2ForCausalLM)");
  auto m = classify_all(c, synth_headers(c, {.qkv_bias = true}));
  ASSERT_TRUE(m.ok()) << m.error().message;
}

TEST(Classify, Llama31_8B) {
  ir::ModelConfig c = load("llama-3.1-8b.json");
  auto h = synth_headers(c, {});
  auto m = classify_all(c, h);
  ASSERT_TRUE(m.ok()) << m.error().message;
  check_model(*m, h, true, false);
  EXPECT_FALSE(m->tied_lm_head);
  EXPECT_EQ(m->tensors.size(), size_t(32 * 9 + 3));
  EXPECT_EQ(m->tensors[*m->find("lm_head.weight")].role, Role::LmHead);
  EXPECT_EQ(m->tensors[*m->find("model.embed_tokens.weight")].role, Role::Embedding);
  EXPECT_EQ(m->tensors[*m->find("model.norm.weight")].role, Role::Norm);
  EXPECT_FALSE(m->tensors[*m->find("model.norm.weight")].layer.has_value());
  EXPECT_EQ(m->tensors[*m->find("model.layers.31.mlp.down_proj.weight")].shape,
            (std::vector<int64_t>{4096, 14336}));
}

TEST(Classify, Mistral7Bv03) {
  ir::ModelConfig c = load("mistral-7b-v0.3.json");
  auto h = synth_headers(c, {});
  auto m = classify_all(c, h);
  ASSERT_TRUE(m.ok()) << m.error().message;
  check_model(*m, h, true, false);
  EXPECT_EQ(m->config.architecture, "MistralForCausalLM");
}

// Llama's attention_bias gives q, k, v and o biases (transformers' LlamaAttention), mlp_bias gate, up and down
// ones; Qwen2 has q/k/v biases and never an o one; Mistral has none.
TEST(Classify, LlamaWithAttentionBias) {
  ir::ModelConfig c = tiny();
  c.attention_bias = true;
  const auto h = synth_headers(c, {.qkv_bias = true, .o_bias = true});
  auto m = classify_all(c, h);
  ASSERT_TRUE(m.ok()) << m.error().message;
  check_model(*m, h, true, true);
  EXPECT_EQ(m->tensors[*m->find("model.layers.1.self_attn.o_proj.bias")].role, Role::O);
  EXPECT_EQ(error_of(c, synth_headers(c, {})),
            kDir + ": missing tensor 'model.layers.0.self_attn.q_proj.bias' (LlamaForCausalLM)");
  EXPECT_EQ(error_of(c, synth_headers(c, {.qkv_bias = true})),
            kDir + ": missing tensor 'model.layers.0.self_attn.o_proj.bias' (LlamaForCausalLM)");
  c.attention_bias = false;
  c.mlp_bias = true;
  const auto hm = synth_headers(c, {.mlp_bias = true});
  m = classify_all(c, hm);
  ASSERT_TRUE(m.ok()) << m.error().message;
  EXPECT_EQ(m->tensors[*m->find("model.layers.0.mlp.down_proj.bias")].shape, std::vector<int64_t>{64});
  c.mlp_bias = false;
  EXPECT_EQ(error_of(c, hm), kDir + ": unexpected tensor 'model.layers.0.mlp.gate_proj.bias': LlamaForCausalLM with "
                                    "mlp_bias false has no MLP biases");
  c = tiny("Qwen2ForCausalLM");
  EXPECT_EQ(error_of(c, synth_headers(c, {.qkv_bias = true, .o_bias = true})),
            kDir + ": unexpected tensor 'model.layers.0.self_attn.o_proj.bias': Qwen2ForCausalLM has no o_proj bias");
}

TEST(Classify, BiasWithoutAttentionBiasIsAnError) {
  ir::ModelConfig c = tiny("MistralForCausalLM");
  EXPECT_EQ(error_of(c, synth_headers(c, {.qkv_bias = true})),
            kDir +
                ": unexpected tensor 'model.layers.0.self_attn.q_proj.bias': MistralForCausalLM "
                "has no q/k/v biases");
  c = tiny();
  EXPECT_EQ(error_of(c, synth_headers(c, {.qkv_bias = true})),
            kDir +
                ": unexpected tensor 'model.layers.0.self_attn.q_proj.bias': LlamaForCausalLM "
                "with attention_bias false has no q/k/v biases");
}

TEST(Classify, OrderIsTheCheckpointsOrder) {
  ir::ModelConfig c = tiny();
  auto h = synth_headers(c, {});
  std::mt19937 rng(7);
  std::shuffle(h.begin(), h.end(), rng);
  auto m = classify_all(c, h);
  ASSERT_TRUE(m.ok()) << m.error().message;
  check_model(*m, h, true, false);
}

TEST(Classify, TiedButLmHeadPresentIsAccepted) {
  ir::ModelConfig c = tiny();
  c.tie_word_embeddings = true;
  auto h = synth_headers(c, {.lm_head = true});
  auto m = classify_all(c, h);
  ASSERT_TRUE(m.ok()) << m.error().message;
  EXPECT_FALSE(m->tied_lm_head);
  check_model(*m, h, true, false);
}

TEST(Classify, LmHeadMissingWhenUntied) {
  ir::ModelConfig c = tiny();
  EXPECT_EQ(error_of(c, synth_headers(c, {.lm_head = false})),
            kDir + ": missing tensor 'lm_head.weight' (LlamaForCausalLM)");
}

TEST(Classify, OldLlamaInvFreqIsOther) {
  ir::ModelConfig c = tiny();
  auto h = synth_headers(c, {.inv_freq = true});
  for (auto& t : h)
    if (t.name.ends_with("inv_freq")) t.dtype = DType::F32;
  auto m = classify_all(c, h);
  ASSERT_TRUE(m.ok()) << m.error().message;
  const auto& t = m->tensors[*m->find("model.layers.1.self_attn.rotary_emb.inv_freq")];
  EXPECT_EQ(t.role, Role::Other);
  EXPECT_EQ(t.layer, 1);
  EXPECT_EQ(t.module, "model.layers.1.self_attn.rotary_emb");
  EXPECT_EQ(t.shape, std::vector<int64_t>{4});
  EXPECT_EQ(m->linear_weights().size(), size_t(7 * 2 + 1));
}

TEST(Classify, WeightDtypes) {
  ir::ModelConfig c = tiny();
  for (DType t : {DType::BF16, DType::F16, DType::F32}) {
    auto m = classify_all(c, synth_headers(c, {.dtype = t}));
    EXPECT_TRUE(m.ok()) << dtype_name(t);
  }
}

// --- errors -----------------------------------------------------------------------------------

TEST(ClassifyError, UnknownTensor) {
  ir::ModelConfig c = tiny();
  for (std::string name :
       {"model.layers.0.mlp.experts.0.w1.weight", "transformer.wte.weight",
        "model.layers.0.self_attn.o_norm.weight", "model.layers.weight", "lm_head.bias"}) {
    auto h = synth_headers(c, {});
    h.insert(h.begin() + 3, {name, DType::BF16, {64}});
    EXPECT_EQ(error_of(c, h),
              kDir + ": unknown tensor '" + name + "' (not in the LlamaForCausalLM table)");
  }
}

TEST(ClassifyError, MissingTensor) {
  ir::ModelConfig c = tiny();
  for (std::string name :
       {"model.embed_tokens.weight", "model.norm.weight", "model.layers.1.mlp.up_proj.weight",
        "model.layers.0.post_attention_layernorm.weight",
        "model.layers.1.self_attn.v_proj.weight"}) {
    auto h = synth_headers(c, {});
    std::erase_if(h, [&](const TensorHeader& t) { return t.name == name; });
    EXPECT_EQ(error_of(c, h), kDir + ": missing tensor '" + name + "' (LlamaForCausalLM)");
  }
}

TEST(ClassifyError, ShapeMismatch) {
  ir::ModelConfig c = tiny();
  struct Case {
    std::string name;
    std::vector<int64_t> shape;
    std::string expected;
  };
  const Case cases[] = {
      {"model.layers.0.self_attn.k_proj.weight", {64, 64}, "[32, 64]"},
      {"model.layers.1.self_attn.o_proj.weight", {64, 32}, "[64, 64]"},
      {"model.layers.1.mlp.down_proj.weight", {172, 64}, "[64, 172]"},
      {"model.layers.0.input_layernorm.weight", {64, 1}, "[64]"},
      {"model.embed_tokens.weight", {500, 64}, "[512, 64]"},
      {"lm_head.weight", {512}, "[512, 64]"},
  };
  for (const Case& k : cases) {
    auto h = synth_headers(c, {});
    for (auto& t : h)
      if (t.name == k.name) t.shape = k.shape;
    std::string actual = "[" + std::to_string(k.shape[0]) +
                         (k.shape.size() > 1 ? ", " + std::to_string(k.shape[1]) : "") + "]";
    EXPECT_EQ(error_of(c, h),
              kDir + ": tensor '" + k.name + "' has shape " + actual + ", expected " + k.expected);
  }
}

TEST(ClassifyError, LayerIndexOutOfRange) {
  ir::ModelConfig c = tiny();
  auto h = synth_headers(c, {});
  h.push_back({"model.layers.2.mlp.up_proj.weight", DType::BF16, {172, 64}});
  EXPECT_EQ(error_of(c, h), kDir +
                                ": tensor 'model.layers.2.mlp.up_proj.weight' has layer index 2, "
                                "but num_hidden_layers is 2");
  h.back().name = "model.layers.99999999999999999999.mlp.up_proj.weight";
  EXPECT_EQ(error_of(c, h), kDir + ": tensor '" + h.back().name + "' has a malformed layer index");
  for (std::string bad : {"01", "-1", "+1", "x", ""}) {
    h.back().name = "model.layers." + bad + ".mlp.up_proj.weight";
    EXPECT_EQ(error_of(c, h),
              kDir + ": tensor '" + h.back().name + "' has a malformed layer index");
  }
}

TEST(ClassifyError, Dtype) {
  ir::ModelConfig c = tiny();
  for (DType bad : {DType::U8, DType::I32, DType::I64, DType::F8_E4M3}) {
    auto h = synth_headers(c, {});
    h[5].dtype = bad;
    EXPECT_EQ(error_of(c, h), kDir + ": tensor '" + h[5].name + "' has dtype " +
                                  std::string(dtype_name(bad)) +
                                  "; weights must be BF16, F16 or F32");
  }
}

TEST(ClassifyError, Duplicate) {
  ir::ModelConfig c = tiny();
  auto h = synth_headers(c, {});
  h.push_back(h[4]);
  EXPECT_EQ(error_of(c, h), kDir + ": duplicate tensor '" + h[4].name + "'");
}

TEST(ClassifyError, UnsupportedArchitecture) {
  ir::ModelConfig c = tiny("GPT2LMHeadModel");
  EXPECT_EQ(error_of(c, {}), kDir +
                                 ": unsupported architecture GPT2LMHeadModel (supported: "
                                 "Gemma3ForCausalLM, LlamaForCausalLM, MistralForCausalLM, MixtralForCausalLM, Phi3ForCausalLM, Qwen2ForCausalLM, Qwen3ForCausalLM, Qwen3MoeForCausalLM)");
}


// Phi-3's checkpoint: qkv_proj [(heads + 2 kv_heads) head_dim, hidden] and gate_up_proj [2 inter, hidden].
std::vector<TensorHeader> phi3_headers(const ir::ModelConfig& c) {
  const int64_t h = c.hidden_size, i = c.intermediate_size, v = c.vocab_size;
  const int64_t q = c.num_attention_heads * c.head_dim, kv = c.num_key_value_heads * c.head_dim;
  std::vector<TensorHeader> out;
  out.push_back({"model.embed_tokens.weight", DType::BF16, {v, h}});
  for (int64_t l = 0; l < c.num_hidden_layers; ++l) {
    const std::string p = "model.layers." + std::to_string(l) + ".";
    out.push_back({p + "input_layernorm.weight", DType::BF16, {h}});
    out.push_back({p + "mlp.down_proj.weight", DType::BF16, {h, i}});
    out.push_back({p + "mlp.gate_up_proj.weight", DType::BF16, {2 * i, h}});
    out.push_back({p + "post_attention_layernorm.weight", DType::BF16, {h}});
    out.push_back({p + "self_attn.o_proj.weight", DType::BF16, {h, q}});
    out.push_back({p + "self_attn.qkv_proj.weight", DType::BF16, {q + 2 * kv, h}});
  }
  out.push_back({"model.norm.weight", DType::BF16, {h}});
  out.push_back({"lm_head.weight", DType::BF16, {v, h}});
  return out;
}

TEST(Classify, Phi3FusedTensorsBecomeRowSlices) {
  ir::ModelConfig c = tiny("Phi3ForCausalLM");
  auto m = classify_all(c, phi3_headers(c));
  ASSERT_TRUE(m.ok()) << m.error().message;
  const int64_t q = 8 * 8, kv = 4 * 8, inter = 172;
  for (int l = 0; l < 2; ++l) {
    const std::string p = "model.layers." + std::to_string(l) + ".";
    struct Want { std::string name; Role role; int64_t row, rows; std::string fused; int64_t total; };
    for (const Want& w : {Want{"self_attn.q_proj", Role::Q, 0, q, "self_attn.qkv_proj", q + 2 * kv},
                          Want{"self_attn.k_proj", Role::K, q, kv, "self_attn.qkv_proj", q + 2 * kv},
                          Want{"self_attn.v_proj", Role::V, q + kv, kv, "self_attn.qkv_proj", q + 2 * kv},
                          Want{"mlp.gate_proj", Role::Gate, 0, inter, "mlp.gate_up_proj", 2 * inter},
                          Want{"mlp.up_proj", Role::Up, inter, inter, "mlp.gate_up_proj", 2 * inter}}) {
      auto id = m->find(p + w.name + ".weight");
      ASSERT_TRUE(id) << p + w.name;
      const ir::TensorInfo& t = m->tensors[*id];
      EXPECT_EQ(t.role, w.role);
      EXPECT_EQ(t.module, p + w.name);
      EXPECT_EQ(t.shape, (std::vector<int64_t>{w.rows, 64}));
      EXPECT_EQ(t.layer, l);
      ASSERT_TRUE(t.stored_in) << t.name;
      EXPECT_EQ(t.stored_in->tensor, p + w.fused + ".weight");
      EXPECT_EQ(t.stored_in->module, p + w.fused);
      EXPECT_EQ(t.stored_in->row_begin, w.row);
      EXPECT_EQ(t.stored_in->rows_total, w.total);
    }
    EXPECT_FALSE(m->tensors[*m->find(p + "self_attn.o_proj.weight")].stored_in);
    EXPECT_FALSE(m->find(p + "self_attn.qkv_proj.weight"));   // only its slices are IR tensors
  }
  // The groups and sites of a Llama: q/k/v and gate/up of each layer, fed by its two norms.
  ASSERT_EQ(m->fused_groups.size(), 4u);
  ASSERT_EQ(m->sites.size(), 4u);
  EXPECT_EQ(m->tensors[m->fused_groups[0].members[0]].role, Role::Q);
  EXPECT_EQ(m->tensors[m->fused_groups[1].members[1]].role, Role::Up);
  EXPECT_EQ(m->linear_weights().size(), size_t(7 * 2 + 1));
}

TEST(ClassifyError, Phi3FusedShapesAndNames) {
  ir::ModelConfig c = tiny("Phi3ForCausalLM");
  // Rows that contradict heads / kv_heads / head_dim: (8 + 2 * 4) * 8 = 128 expected.
  auto h = phi3_headers(c);
  for (auto& t : h)
    if (t.name == "model.layers.1.self_attn.qkv_proj.weight") t.shape = {64 + 64 + 64, 64};
  EXPECT_EQ(error_of(c, h), kDir + ": tensor 'model.layers.1.self_attn.qkv_proj.weight' has shape [192, 64], "
                                   "expected [128, 64] ((num_attention_heads + 2 * num_key_value_heads) * head_dim "
                                   "rows, as the fused parts of the config's shapes)");
  h = phi3_headers(c);
  for (auto& t : h)
    if (t.name == "model.layers.0.mlp.gate_up_proj.weight") t.shape = {172, 64};
  EXPECT_NE(error_of(c, h).find("expected [344, 64] (2 * intermediate_size rows"), std::string::npos)
      << error_of(c, h);
  // A fused tensor missing.
  h = phi3_headers(c);
  h.erase(std::remove_if(h.begin(), h.end(),
                         [](const TensorHeader& t) { return t.name == "model.layers.1.mlp.gate_up_proj.weight"; }),
          h.end());
  EXPECT_EQ(error_of(c, h), kDir + ": missing tensor 'model.layers.1.mlp.gate_up_proj.weight' (Phi3ForCausalLM)");
  // Unfused names are not Phi-3's.
  h = phi3_headers(c);
  h.push_back({"model.layers.0.self_attn.q_proj.weight", DType::BF16, {64, 64}});
  EXPECT_EQ(error_of(c, h), kDir + ": unknown tensor 'model.layers.0.self_attn.q_proj.weight' (not in the "
                                   "Phi3ForCausalLM table)");
  // A fused tensor of a layer beyond the config's, and of an integer dtype.
  h = phi3_headers(c);
  h.push_back({"model.layers.2.self_attn.qkv_proj.weight", DType::BF16, {128, 64}});
  EXPECT_NE(error_of(c, h).find("has layer index 2, but num_hidden_layers is 2"), std::string::npos);
  h = phi3_headers(c);
  for (auto& t : h)
    if (t.name == "model.layers.0.self_attn.qkv_proj.weight") t.dtype = DType::I32;
  EXPECT_NE(error_of(c, h).find("has dtype I32"), std::string::npos) << error_of(c, h);
}

}  // namespace
}  // namespace fp4c::frontend
