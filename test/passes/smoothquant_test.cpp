// The smoothquant pass (NVFP4.md §7): factors equal a hand-computed case; the smoothed model computes
// the same logits as the original within FP32 rounding; smoothing flattens planted activation outliers.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <random>

#include "formats/bf16.h"
#include "frontend/checkpoint.h"
#include "passes/smoothquant.h"
#include "passes/stats.h"
#include "runtime/checkpoint_weights.h"
#include "test/support/tiny_checkpoint.h"
#include "test/support/tiny_runtime.h"

namespace fp4c::testing {
namespace {

runtime::LinearParams dense(int64_t out, int64_t in, std::vector<float> w) {
  runtime::LinearParams p;
  p.out = out;
  p.in = in;
  p.weight = std::move(w);
  return p;
}

// Five channels: ranges 4, 9, 4, 0, 1e-12; column maxima over both Linears 2, 4, 0 (a zero column),
// 0.3, 1.
struct HandCase {
  passes::SiteStats site;
  runtime::LinearParams a = dense(2, 5, {0.5f, -1, 0, 0.1f, 1, -2, 0.25f, 0, 0.3f, 0.5f});
  runtime::LinearParams b = dense(1, 5, {1, -4, 0, -0.2f, -0.75f});
  HandCase() {
    site.min = {-1, 0, -2, 0, 0};
    site.max = {3, 9, 2, 0, 1e-12f};
    site.absmax = {3, 9, 2, 0, 1e-12f};
  }
};

TEST(SmoothQuant, FactorsEqualAHandComputedCase) {
  HandCase h;
  const std::vector<const runtime::LinearParams*> balanced{&h.a, &h.b};
  // alpha 0.5: s0 = 4^.5 / 4^.5; s1 = 9^.5 / 8^.5; s2 = range (zero column); s3 = 0 -> floor;
  // s4 = 1e-6 / 2^.5 -> floor.
  auto s5 = passes::smoothing_factors(h.site, balanced, 0.5f);
  ASSERT_EQ(s5.size(), 5u);
  EXPECT_FLOAT_EQ(s5[0], 1.0f);
  EXPECT_FLOAT_EQ(s5[1], 1.0606601717798212f);
  EXPECT_FLOAT_EQ(s5[2], 4.0f);
  EXPECT_FLOAT_EQ(s5[3], 1e-5f);
  EXPECT_FLOAT_EQ(s5[4], 1e-5f);
  // alpha 0.8: s0 = 4^.8 / 4^.2 = 4^.6; s1 = 9^.8 / 8^.2.
  auto s8 = passes::smoothing_factors(h.site, balanced, 0.8f);
  ASSERT_EQ(s8.size(), 5u);
  EXPECT_FLOAT_EQ(s8[0], 2.29739670999407f);
  EXPECT_FLOAT_EQ(s8[1], 3.826273501877373f);
  EXPECT_FLOAT_EQ(s8[2], 4.0f);
  EXPECT_FLOAT_EQ(s8[3], 1e-5f);
  EXPECT_FLOAT_EQ(s8[4], 1e-5f);
  // Another floor.
  auto s_floor = passes::smoothing_factors(h.site, balanced, 0.5f, 0.5f);
  EXPECT_FLOAT_EQ(s_floor[3], 0.5f);
  EXPECT_FLOAT_EQ(s_floor[1], 1.0606601717798212f);
  // maxW is over the concatenation: with only `a`, column 1's maximum is 1, so s1 = 3 / 2^.5.
  auto only_a = passes::smoothing_factors(h.site, {&h.a}, 0.5f);
  EXPECT_FLOAT_EQ(only_a[1], 2.1213203435596424f);
}

TEST(SmoothQuant, ApplyScalesColumnsAndDividesTheNorm) {
  HandCase h;
  const auto a0 = h.a.weight, b0 = h.b.weight;
  std::vector<float> norm{1, 2, 3, 4, 5};
  const std::vector<float> s{2, 0.5f, 4, 1, 8};
  passes::apply_smoothing(norm, {&h.a, &h.b}, s);
  for (size_t j = 0; j < 5; ++j) {
    EXPECT_FLOAT_EQ(norm[j], float(j + 1) / s[j]);
    for (size_t r = 0; r < 2; ++r) EXPECT_FLOAT_EQ(h.a.weight[r * 5 + j], a0[r * 5 + j] * s[j]);
    EXPECT_FLOAT_EQ(h.b.weight[j], b0[j] * s[j]);
  }
}

// Planted outlier channels: a few input_layernorm weights multiplied by 30.

class SmoothQuantModel : public ::testing::TestWithParam<std::string> {};

TEST_P(SmoothQuantModel, SmoothedModelComputesTheSameLogits) {
  const uint64_t seed = std::random_device{}();
  SCOPED_TRACE("seed " + std::to_string(seed));
  TinyShape shape;
  shape.architecture = GetParam();
  // The random checkpoint as written, then with planted 30x norm channels: there the activations
  // of the smoothed sites span a far wider range, so FP32 rounding differs by more (a few 1e-5 of
  // the largest logit at worst over hundreds of seeds), and the bound is looser.
  for (const bool with_outliers : {false, true}) {
  SCOPED_TRACE(with_outliers ? "planted outliers" : "random checkpoint");
  const float tolerance = with_outliers ? 1e-4f : 1e-5f;
  TempDir tmp;
  write_checkpoint(tmp.path / "m", shape, with_outliers ? planted_outliers(shape, seed) : tiny_tensors(shape, seed));
  auto ckpt = frontend::open_checkpoint((tmp.path / "m").string());
  ASSERT_TRUE(ckpt.ok()) << ckpt.error().message;
  const auto seqs = random_sequences(seed, shape.vocab);
  runtime::Forward forward(ckpt->model.config, {.precision = runtime::Precision::F32});

  runtime::CheckpointWeights w(ckpt->model, ckpt->refs, false);
  const auto ref = logits(forward, w, seqs, shape.layers);
  ASSERT_FALSE(ref.empty());
  float max_logit = 0;
  for (float v : ref) max_logit = std::max(max_logit, std::fabs(v));
  ASSERT_GT(max_logit, 0);

  auto stats = passes::collect_stats(forward, w, seqs, {});
  ASSERT_TRUE(stats.ok()) << stats.error().message;
  for (float alpha : {0.5f, 0.8f}) {
    SCOPED_TRACE("alpha " + std::to_string(alpha));
    auto factors = passes::compute_smoothquant(*stats, w, shape.layers, alpha);
    ASSERT_TRUE(factors.ok()) << factors.error().message;
    ASSERT_EQ(factors->size(), size_t(shape.layers));
    bool nontrivial = false;
    for (const auto& f : *factors) {
      ASSERT_EQ(f.attn.size(), size_t(shape.hidden));
      ASSERT_EQ(f.mlp.size(), size_t(shape.hidden));
      for (float s : f.attn) nontrivial |= std::fabs(s - 1) > 0.1f;
    }
    EXPECT_TRUE(nontrivial);
    passes::SmoothedWeights smoothed(w, *factors);
    const auto got = logits(forward, smoothed, seqs, shape.layers);
    ASSERT_EQ(got.size(), ref.size());
    float max_diff = 0;
    for (size_t i = 0; i < ref.size(); ++i) max_diff = std::max(max_diff, std::fabs(got[i] - ref[i]));
    EXPECT_LT(max_diff / max_logit, tolerance) << "max diff " << max_diff << " max logit " << max_logit;
  }
  }
}

float max_over_median(std::vector<float> v) {
  const float mx = *std::max_element(v.begin(), v.end());
  std::nth_element(v.begin(), v.begin() + v.size() / 2, v.end());
  return mx / v[v.size() / 2];
}

TEST_P(SmoothQuantModel, SmoothingFlattensPlantedOutlierChannels) {
  TempDir tmp;
  const uint64_t seed = std::random_device{}();
  SCOPED_TRACE("seed " + std::to_string(seed));
  TinyShape shape;
  shape.architecture = GetParam();
  write_checkpoint(tmp.path / "m", shape, planted_outliers(shape, seed));
  auto ckpt = frontend::open_checkpoint((tmp.path / "m").string());
  ASSERT_TRUE(ckpt.ok()) << ckpt.error().message;
  const auto seqs = random_sequences(seed ^ 0x9e3779b97f4a7c15ull, shape.vocab);
  runtime::Forward forward(ckpt->model.config, {.precision = runtime::Precision::F32});
  runtime::CheckpointWeights w(ckpt->model, ckpt->refs, false);
  auto before = passes::collect_stats(forward, w, seqs, {});
  ASSERT_TRUE(before.ok()) << before.error().message;
  auto factors = passes::compute_smoothquant(*before, w, shape.layers, 0.5f);
  ASSERT_TRUE(factors.ok()) << factors.error().message;
  passes::SmoothedWeights smoothed(w, *factors);
  auto after = passes::collect_stats(forward, smoothed, seqs, {});
  ASSERT_TRUE(after.ok()) << after.error().message;
  for (int i = 0; i < shape.layers; ++i) {
    const auto* b = before->find(i, ir::Role::Q);
    const auto* a = after->find(i, ir::Role::Q);
    ASSERT_TRUE(a && b);
    const float rb = max_over_median(b->absmax), ra = max_over_median(a->absmax);
    SCOPED_TRACE("layer " + std::to_string(i) + ": max/median before " + std::to_string(rb) + ", after " +
                 std::to_string(ra));
    EXPECT_GT(rb, 10.0f);  // the planted channels stand out
    EXPECT_LT(ra, rb);
  }
}

INSTANTIATE_TEST_SUITE_P(Architectures, SmoothQuantModel,
                         ::testing::Values(std::string("LlamaForCausalLM"), std::string("Qwen2ForCausalLM")),
                         [](const auto& info) { return info.param.substr(0, info.param.find("For")); });

TEST(SmoothQuant, MissingStatisticsAreAnErrorNamingTheLayer) {
  TempDir tmp;
  TinyShape shape;
  write_checkpoint(tmp.path / "m", shape, tiny_tensors(shape, 7));
  auto ckpt = frontend::open_checkpoint((tmp.path / "m").string());
  ASSERT_TRUE(ckpt.ok()) << ckpt.error().message;
  runtime::CheckpointWeights w(ckpt->model, ckpt->refs, false);
  passes::ActivationStats empty;
  auto r = passes::compute_smoothquant(empty, w, shape.layers, 0.5f);
  ASSERT_FALSE(r.ok());
  EXPECT_NE(r.error().message.find("layer 0"), std::string::npos) << r.error().message;
  EXPECT_FALSE(passes::compute_smoothquant(empty, w, shape.layers, 1.5f).ok());
}

}  // namespace
}  // namespace fp4c::testing
