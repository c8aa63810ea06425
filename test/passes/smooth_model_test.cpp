// The smoothquant pass on the IR (smooth_model): its rewrites equal the factors of the reference
// implementation (compute_smoothquant), the rewritten model read through the runtime computes the same
// logits within BF16 storage rounding (also with the extra mappings), rewrites compose, errors name
// the layer.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <random>

#include "formats/bf16.h"
#include "formats/nvfp4.h"
#include "frontend/checkpoint.h"
#include "passes/smoothquant.h"
#include "passes/stats.h"
#include "runtime/checkpoint_weights.h"
#include "test/support/tiny_checkpoint.h"
#include "test/support/tiny_runtime.h"

namespace fp4c::testing {
namespace {

struct Fixture {
  TempDir tmp;
  TinyShape shape;
  uint64_t seed = std::random_device{}();
  std::optional<frontend::LoadedCheckpoint> ckpt;
  explicit Fixture(TinyShape s) : shape(std::move(s)) {
    write_checkpoint(tmp.path / "m", shape, tiny_tensors(shape, seed));
    auto c = frontend::open_checkpoint((tmp.path / "m").string());
    EXPECT_TRUE(c.ok()) << c.error().message;
    if (c.ok()) ckpt.emplace(std::move(*c));
  }
};

TEST(SmoothModel, RewritesEqualTheReferenceFactors) {
  Fixture f({});
  SCOPED_TRACE("seed " + std::to_string(f.seed));
  ASSERT_TRUE(f.ckpt);
  auto& model = f.ckpt->model;
  runtime::Forward forward(model.config, {.precision = runtime::Precision::F32});
  runtime::CheckpointWeights w(model, f.ckpt->refs, false);
  auto stats = passes::collect_stats(forward, w, random_sequences(f.seed, f.shape.vocab), {});
  ASSERT_TRUE(stats.ok()) << stats.error().message;
  auto factors = passes::compute_smoothquant(*stats, w, f.shape.layers, 0.6f);
  ASSERT_TRUE(factors.ok()) << factors.error().message;

  const ir::Model original = model;   // read without the rewrites
  runtime::CheckpointWeights w0(original, f.ckpt->refs, false);
  ASSERT_TRUE(passes::smooth_model(model, f.ckpt->refs, *stats, {.alpha = 0.6f}).ok());
  ASSERT_EQ(model.annotations.smoothing.size(), size_t(2 * f.shape.layers));
  for (const auto& rec : model.annotations.smoothing) {
    const auto& s = rec.mapping == ir::SmoothingMapping::Attention ? (*factors)[size_t(rec.layer)].attn : (*factors)[size_t(rec.layer)].mlp;
    EXPECT_EQ(rec.balanced.size(), rec.mapping == ir::SmoothingMapping::Attention ? 3u : 2u);
    for (ir::TensorId b : rec.balanced) EXPECT_EQ(model.annotations.channel_scale[b], s) << model.tensors[b].name;
    const auto& inv = model.annotations.channel_scale[rec.smooth];
    ASSERT_EQ(inv.size(), s.size());
    for (size_t j = 0; j < s.size(); ++j) EXPECT_NEAR(inv[j] * s[j], 1.0f, 1e-6f);
    EXPECT_LE(rec.factor_min, rec.factor_median);
    EXPECT_LE(rec.factor_median, rec.factor_max);
    EXPECT_EQ(*std::min_element(s.begin(), s.end()), rec.factor_min);
    EXPECT_TRUE(model.transformed(rec.smooth));
  }
  // Untouched: o, down, embeddings, biases.
  for (ir::TensorId id = 0; id < model.tensors.size(); ++id) {
    const auto r = model.tensors[id].role;
    if (r == ir::Role::O || r == ir::Role::Down || r == ir::Role::Embedding) EXPECT_FALSE(model.transformed(id));
  }
  // The runtime reads each rewritten weight as the reference's float rewrite, rounded to BF16.
  passes::SmoothedWeights reference(w0, *factors);
  for (int l = 0; l < f.shape.layers; ++l) {
    auto got = w.layer(l);
    auto want = reference.layer(l);
    ASSERT_TRUE(got.ok() && want.ok());
    auto close_bf16 = [](const std::vector<float>& a, const std::vector<float>& b) {
      ASSERT_EQ(a.size(), b.size());
      for (size_t i = 0; i < a.size(); ++i) {
        const float r = bf16::to_float(bf16::from_float(b[i]));
        EXPECT_LE(std::fabs(a[i] - r), std::fabs(r) * (1.0f / 128)) << i;   // at most one BF16 ulp apart
      }
    };
    close_bf16(got->q.weight, want->q.weight);
    close_bf16(got->up.weight, want->up.weight);
    close_bf16(got->input_norm, want->input_norm);
    close_bf16(got->post_norm, want->post_norm);
    EXPECT_EQ(got->o.weight, want->o.weight);
  }
}

class SmoothModelLogits : public ::testing::TestWithParam<bool> {};

TEST_P(SmoothModelLogits, RewrittenModelComputesTheSameLogits) {
  const bool extra = GetParam();
  TinyShape shape;
  shape.architecture = "Qwen2ForCausalLM";   // q/k/v biases: v's bias is divided too with `extra`
  shape.kv_heads = shape.heads;              // v -> o needs as many key/value heads as query heads
  Fixture f(shape);
  SCOPED_TRACE("seed " + std::to_string(f.seed));
  ASSERT_TRUE(f.ckpt);
  auto& model = f.ckpt->model;
  const auto seqs = random_sequences(f.seed ^ 0x51ed27, shape.vocab);
  runtime::Forward forward(model.config, {.precision = runtime::Precision::F32});
  runtime::CheckpointWeights w(model, f.ckpt->refs, false);
  const auto ref = logits(forward, w, seqs, shape.layers);
  ASSERT_FALSE(ref.empty());
  auto stats = passes::collect_stats(forward, w, seqs, {});
  ASSERT_TRUE(stats.ok());
  ASSERT_TRUE(passes::smooth_model(model, f.ckpt->refs, *stats, {.alpha = 0.5f, .extra = extra}).ok());
  EXPECT_EQ(model.annotations.smoothing.size(), size_t((extra ? 4 : 2) * shape.layers));
  const auto got = logits(forward, w, seqs, shape.layers);   // the same source now reads the rewrites
  ASSERT_EQ(got.size(), ref.size());
  double err = 0, norm = 0, moved = 0;
  for (size_t i = 0; i < ref.size(); ++i) {
    err += double(got[i] - ref[i]) * (got[i] - ref[i]);
    norm += double(ref[i]) * ref[i];
    moved = std::max(moved, double(std::fabs(got[i] - ref[i])));
  }
  // Storing the rewritten weights in BF16 moves the logits by BF16 rounding only (2^-9 relative per
  // weight), far below what NVFP4 moves them (~1e-1).
  EXPECT_LT(std::sqrt(err / norm), 1e-2) << "max abs change " << moved;
  EXPECT_GT(moved, 0.0);   // something was rewritten
}

INSTANTIATE_TEST_SUITE_P(Mappings, SmoothModelLogits, ::testing::Values(false, true),
                         [](const auto& info) { return info.param ? "WithExtraMappings" : "DefaultMappings"; });

TEST(SmoothModel, RewritesCompose) {
  Fixture f({});
  ASSERT_TRUE(f.ckpt);
  auto& model = f.ckpt->model;
  runtime::Forward forward(model.config, {.precision = runtime::Precision::F32});
  runtime::CheckpointWeights w(model, f.ckpt->refs, false);
  const auto seqs = random_sequences(f.seed, f.shape.vocab);
  auto s1 = passes::collect_stats(forward, w, seqs, {});
  ASSERT_TRUE(s1.ok());
  ASSERT_TRUE(passes::smooth_model(model, f.ckpt->refs, *s1, {}).ok());
  const auto q = *model.find("model.layers.0.self_attn.q_proj.weight");
  const auto first = model.annotations.channel_scale[q];
  auto s2 = passes::collect_stats(forward, w, seqs, {});   // of the smoothed model
  ASSERT_TRUE(s2.ok());
  ASSERT_TRUE(passes::smooth_model(model, f.ckpt->refs, *s2, {}).ok());
  EXPECT_EQ(model.annotations.smoothing.size(), size_t(4 * f.shape.layers));
  const auto& both = model.annotations.channel_scale[q];
  ASSERT_EQ(both.size(), first.size());
  const auto& second = model.annotations.smoothing[2 * f.shape.layers].mapping == ir::SmoothingMapping::Attention
                           ? model.annotations.smoothing[2 * f.shape.layers]
                           : model.annotations.smoothing[2 * f.shape.layers + 1];
  (void)second;
  bool changed = false;
  for (size_t j = 0; j < both.size(); ++j) changed |= both[j] != first[j];
  EXPECT_TRUE(changed);
}

TEST(SmoothModel, FusedBf16RewriteIsBitEqualToTheGeneralPath) {
  TinyShape shape;
  shape.kv_heads = shape.heads;
  Fixture f(shape);
  SCOPED_TRACE("seed " + std::to_string(f.seed));
  ASSERT_TRUE(f.ckpt);
  auto& model = f.ckpt->model;
  runtime::Forward forward(model.config, {.precision = runtime::Precision::F32});
  runtime::CheckpointWeights w(model, f.ckpt->refs, false);
  auto stats = passes::collect_stats(forward, w, random_sequences(f.seed, shape.vocab), {});
  ASSERT_TRUE(stats.ok());
  ASSERT_TRUE(passes::smooth_model(model, f.ckpt->refs, *stats, {.alpha = 0.55f, .extra = true}).ok());
  int checked = 0;
  for (ir::TensorId id = 0; id < model.tensors.size(); ++id) {
    if (!model.transformed(id)) continue;
    const auto& ref = f.ckpt->refs[id];
    ASSERT_EQ(ref.entry->dtype, DType::BF16);
    auto general = runtime::read_tensor(model, ref, id, false);
    ASSERT_TRUE(general.ok());
    const int64_t n = int64_t(general->size());
    std::vector<uint16_t> fused(static_cast<size_t>(n), 0);
    runtime::apply_transform_bf16(model, id, reinterpret_cast<const uint16_t*>(ref.file->bytes(*ref.entry).data()),
                                  fused.data(), n);
    for (int64_t i = 0; i < n; ++i)
      ASSERT_EQ(fused[size_t(i)], bf16::from_float((*general)[size_t(i)])) << model.tensors[id].name << " " << i;
    // Row by row, and the amax without writing the rewrite (what pack streams), agree with it.
    const auto* src = reinterpret_cast<const uint16_t*>(ref.file->bytes(*ref.entry).data());
    const int64_t cols = model.tensors[id].shape.back();
    std::vector<uint16_t> row(static_cast<size_t>(cols), 0);
    for (int64_t r = 0; r < n / cols; ++r) {
      runtime::transform_bf16_row(model, id, r, src + r * cols, row.data());
      ASSERT_TRUE(std::equal(row.begin(), row.end(), fused.begin() + r * cols)) << model.tensors[id].name << " row " << r;
    }
    EXPECT_EQ(runtime::transformed_amax_bf16(model, id, src, n), nvfp4::amax_bf16(fused)) << model.tensors[id].name;
    // What smoothquant recorded of the source (pack's shortcut) is its column maxima.
    const auto& cached = model.annotations.source_column_absmax_bits;
    if (id < cached.size() && !cached[id].empty()) {
      ASSERT_EQ(int64_t(cached[id].size()), cols);
      EXPECT_EQ(cached[id], runtime::column_absmax_bits_bf16(src, n / cols, cols));
      for (int64_t c = 0; c < cols; ++c) {
        uint16_t m = 0;
        for (int64_t r = 0; r < n / cols; ++r) m = std::max<uint16_t>(m, uint16_t(src[r * cols + c] & 0x7FFF));
        ASSERT_EQ(cached[id][size_t(c)], m) << c;
      }
    }
    ++checked;
  }
  EXPECT_GT(checked, 7 * shape.layers);   // norms, q, k, v, gate, up, and the extra up/down/v/o rewrites
}

TEST(SmoothModel, ErrorsNameTheLayerAndSite) {
  Fixture f({});
  ASSERT_TRUE(f.ckpt);
  passes::ActivationStats empty;
  auto st = passes::smooth_model(f.ckpt->model, f.ckpt->refs, empty, {});
  ASSERT_FALSE(st.ok());
  EXPECT_NE(st.error().message.find("layer 0"), std::string::npos) << st.error().message;
  EXPECT_NE(st.error().message.find("run 'stats' first"), std::string::npos) << st.error().message;
  st = passes::smooth_model(f.ckpt->model, f.ckpt->refs, empty, {.alpha = 1.5f});
  ASSERT_FALSE(st.ok());
  EXPECT_NE(st.error().message.find("alpha"), std::string::npos);
  EXPECT_TRUE(f.ckpt->model.annotations.smoothing.empty());
}

}  // namespace
}  // namespace fp4c::testing
