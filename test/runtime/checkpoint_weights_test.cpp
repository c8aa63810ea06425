// CheckpointWeights: every tensor the forward needs, found through the IR's classification and
// converted to float exactly; biases where the architecture has them; tied lm_head; F32 tensors.
#include <gtest/gtest.h>

#include <map>

#include "formats/bf16.h"
#include "frontend/checkpoint.h"
#include "runtime/checkpoint_weights.h"
#include "test/support/tiny_checkpoint.h"

namespace fp4c::runtime {
namespace {

using fp4c::testing::TinyShape;
using fp4c::testing::TinyTensor;

std::map<std::string, std::vector<float>> as_floats(const std::vector<TinyTensor>& tensors) {
  std::map<std::string, std::vector<float>> out;
  for (const TinyTensor& t : tensors) {
    std::vector<float>& v = out[t.name];
    for (uint16_t b : t.bf16) v.push_back(bf16::to_float(b));
  }
  return out;
}

void expect_linear(const LinearParams& p, const std::map<std::string, std::vector<float>>& want,
                   const std::string& module, int64_t out, int64_t in, bool bias) {
  SCOPED_TRACE(module);
  EXPECT_EQ(p.out, out);
  EXPECT_EQ(p.in, in);
  EXPECT_EQ(p.weight, want.at(module + ".weight"));
  if (bias) EXPECT_EQ(p.bias, want.at(module + ".bias"));
  else EXPECT_TRUE(p.bias.empty());
  EXPECT_FALSE(p.input_global_scale);
}

void check_all(const std::string& arch, bool tied) {
  fp4c::testing::TempDir dir;
  TinyShape shape;
  shape.architecture = arch;
  shape.tied = tied;
  const auto tensors = fp4c::testing::tiny_tensors(shape, 17);
  fp4c::testing::write_checkpoint(dir.path, shape, tensors, 2);
  auto ckpt = frontend::open_checkpoint(dir.path.string());
  ASSERT_TRUE(ckpt.ok()) << ckpt.error().message;
  const auto want = as_floats(tensors);
  const bool bias = arch == "Qwen2ForCausalLM";
  const int64_t H = shape.hidden, I = shape.intermediate, hd = H / shape.heads;

  CheckpointWeights w(ckpt->model, ckpt->refs);
  auto emb = w.embedding();
  ASSERT_TRUE(emb.ok()) << emb.error().message;
  EXPECT_EQ(*emb, want.at("model.embed_tokens.weight"));
  auto norm = w.final_norm();
  ASSERT_TRUE(norm.ok());
  EXPECT_EQ(*norm, want.at("model.norm.weight"));
  auto head = w.lm_head();
  ASSERT_TRUE(head.ok()) << head.error().message;
  EXPECT_EQ(head->weight, want.at(tied ? "model.embed_tokens.weight" : "lm_head.weight"));
  EXPECT_EQ(head->out, shape.vocab);
  EXPECT_EQ(head->in, H);
  for (int l = 0; l < shape.layers; ++l) {
    const std::string p = "model.layers." + std::to_string(l) + ".";
    auto layer = w.layer(l);
    ASSERT_TRUE(layer.ok()) << layer.error().message;
    EXPECT_EQ(layer->input_norm, want.at(p + "input_layernorm.weight"));
    EXPECT_EQ(layer->post_norm, want.at(p + "post_attention_layernorm.weight"));
    expect_linear(layer->q, want, p + "self_attn.q_proj", shape.heads * hd, H, bias);
    expect_linear(layer->k, want, p + "self_attn.k_proj", shape.kv_heads * hd, H, bias);
    expect_linear(layer->v, want, p + "self_attn.v_proj", shape.kv_heads * hd, H, bias);
    expect_linear(layer->o, want, p + "self_attn.o_proj", H, shape.heads * hd, false);
    expect_linear(layer->gate, want, p + "mlp.gate_proj", I, H, false);
    expect_linear(layer->up, want, p + "mlp.up_proj", I, H, false);
    expect_linear(layer->down, want, p + "mlp.down_proj", H, I, false);
  }
  auto beyond = w.layer(shape.layers);
  ASSERT_FALSE(beyond.ok());
  EXPECT_EQ(beyond.error().message, "checkpoint weights: layer 2 outside [0, 2)");
  // A layer read twice (its pages released in between) gives the same values.
  auto again = w.layer(0);
  ASSERT_TRUE(again.ok());
  EXPECT_EQ(again->q.weight, want.at("model.layers.0.self_attn.q_proj.weight"));
}

TEST(CheckpointWeights, Llama) { check_all("LlamaForCausalLM", false); }
TEST(CheckpointWeights, Qwen2WithBiasesTied) { check_all("Qwen2ForCausalLM", true); }

TEST(CheckpointWeights, F32Tensors) {
  fp4c::testing::TempDir dir;
  TinyShape shape;
  const auto tensors = fp4c::testing::tiny_tensors(shape, 5);
  std::filesystem::create_directories(dir.path);
  fp4c::testing::write_text(dir.path / "config.json", fp4c::testing::tiny_config(shape));
  // Norms in F32, the rest in BF16.
  std::vector<safetensors::TensorSpec> specs;
  for (const auto& t : tensors)
    specs.push_back({t.name, t.shape.size() == 1 ? DType::F32 : DType::BF16, t.shape});
  auto writer = safetensors::Writer::create((dir.path / "model.safetensors").string(), specs);
  ASSERT_TRUE(writer.ok());
  for (const auto& t : tensors) {
    if (t.shape.size() == 1) {
      std::vector<float> f;
      for (uint16_t b : t.bf16) f.push_back(bf16::to_float(b) + 1e-4f);  // not BF16-representable
      ASSERT_TRUE(writer->write(std::as_bytes(std::span<const float>(f))).ok());
    } else {
      ASSERT_TRUE(writer->write(std::as_bytes(std::span<const uint16_t>(t.bf16))).ok());
    }
  }
  ASSERT_TRUE(writer->finish().ok());
  auto ckpt = frontend::open_checkpoint(dir.path.string());
  ASSERT_TRUE(ckpt.ok()) << ckpt.error().message;
  CheckpointWeights w(ckpt->model, ckpt->refs);
  auto layer = w.layer(1);
  ASSERT_TRUE(layer.ok());
  const auto want = as_floats(tensors);
  const auto& norm = want.at("model.layers.1.input_layernorm.weight");
  ASSERT_EQ(layer->input_norm.size(), norm.size());
  for (size_t i = 0; i < norm.size(); ++i) EXPECT_EQ(layer->input_norm[i], norm[i] + 1e-4f);
}

// A derived source replaces values and input global scales by tensor id (as an artifact reader does).
class Doubled : public CheckpointWeights {
 public:
  using CheckpointWeights::CheckpointWeights;

 protected:
  Expected<std::vector<float>> read_weight(ir::TensorId id, bool release) const override {
    FP4C_ASSIGN(auto v, CheckpointWeights::read_weight(id, release));
    for (float& x : v) x *= 2;
    return v;
  }
  std::optional<float> input_global_scale(ir::TensorId id) const override { return float(id) + 0.5f; }
};

TEST(CheckpointWeights, DerivedSourcesReplaceValuesAndScales) {
  fp4c::testing::TempDir dir;
  TinyShape shape;
  const auto tensors = fp4c::testing::tiny_tensors(shape, 2);
  fp4c::testing::write_checkpoint(dir.path, shape, tensors);
  auto ckpt = frontend::open_checkpoint(dir.path.string());
  ASSERT_TRUE(ckpt.ok());
  Doubled w(ckpt->model, ckpt->refs);
  auto layer = w.layer(1);
  ASSERT_TRUE(layer.ok());
  const auto want = as_floats(tensors).at("model.layers.1.mlp.up_proj.weight");
  ASSERT_EQ(layer->up.weight.size(), want.size());
  for (size_t i = 0; i < want.size(); ++i) ASSERT_EQ(layer->up.weight[i], 2 * want[i]);
  const auto id = ckpt->model.find("model.layers.1.mlp.up_proj.weight");
  ASSERT_TRUE(id);
  EXPECT_EQ(layer->up.input_global_scale, float(*id) + 0.5f);
}

TEST(CheckpointWeights, MismatchedRefsAreAnError) {
  fp4c::testing::TempDir dir;
  TinyShape shape;
  fp4c::testing::write_checkpoint(dir.path, shape, fp4c::testing::tiny_tensors(shape, 1));
  auto ckpt = frontend::open_checkpoint(dir.path.string());
  ASSERT_TRUE(ckpt.ok());
  CheckpointWeights w(ckpt->model, std::span(ckpt->refs).first(3));
  auto layer = w.layer(0);
  ASSERT_FALSE(layer.ok());
  EXPECT_NE(layer.error().message.find("3 tensor refs for"), std::string::npos);
}

}  // namespace
}  // namespace fp4c::runtime
