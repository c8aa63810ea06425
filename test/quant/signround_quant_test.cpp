// quant::quantize_with_offsets and offset_gradients: with no offsets and unit multipliers the bytes of the
// formats' reference (zero blocks and blocks whose scale saturates included); offsets move codes by the
// FP4 rounding of w / d + v; multipliers lower the block scales; the straight-through gradients as defined.
#include <gtest/gtest.h>

#include <cmath>
#include <random>
#include <vector>

#include "formats/fp4.h"
#include "formats/fp8_e4m3.h"
#include "formats/nvfp4.h"
#include "formats/nvfp4_rules.h"
#include "quant/signround.h"

namespace fp4c::testing {
namespace {

std::vector<float> random_weights(uint64_t seed, int64_t rows, int64_t cols) {
  std::mt19937_64 rng(seed);
  std::student_t_distribution<float> t(4.0f);
  std::vector<float> w(size_t(rows * cols));
  for (auto& x : w) x = 0.05f * t(rng);
  for (int64_t i = 0; i < 16; ++i) w[size_t(i)] = 0.0f;        // a zero block
  for (int64_t i = 16; i < 32; ++i) w[size_t(i)] = 1e-30f;      // a block whose scale rounds to zero
  return w;
}

TEST(SignRoundQuant, NoOffsetsGiveTheReferenceBytes) {
  const uint64_t seed = std::random_device{}();
  SCOPED_TRACE("seed " + std::to_string(seed));
  const int64_t rows = 24, cols = 96;
  const auto w = random_weights(seed, rows, cols);
  const float G = nvfp4::global_scale(nvfp4::amax_f32(w));
  std::vector<uint8_t> p1(size_t(rows * cols / 2)), s1(size_t(rows * cols / 16)), p2 = p1, s2 = s1;
  nvfp4::ErrorStats e1, e2;
  nvfp4::quantize_f32_ref(w.data(), rows, cols, G, p1.data(), s1.data(), nvfp4::ZeroScale::CompressedTensors, &e1);
  std::vector<float> v(w.size(), 0.0f), alpha(w.size() / 16, 1.0f), deq(w.size()), want(w.size());
  quant::quantize_with_offsets(w.data(), rows, cols, G, v.data(), alpha.data(), p2.data(), s2.data(),
                               nvfp4::ZeroScale::CompressedTensors, deq.data(), &e2);
  EXPECT_EQ(p1, p2);
  EXPECT_EQ(s1, s2);
  EXPECT_DOUBLE_EQ(e1.sum_sq_err, e2.sum_sq_err);
  nvfp4::dequantize(p1.data(), s1.data(), rows, cols, G, want.data());
  EXPECT_EQ(deq, want);
  // Null offsets and multipliers are the same.
  quant::quantize_with_offsets(w.data(), rows, cols, G, nullptr, nullptr, p2.data(), s2.data(),
                               nvfp4::ZeroScale::CompressedTensors, nullptr);
  EXPECT_EQ(p1, p2);
  EXPECT_EQ(s1, s2);
}

TEST(SignRoundQuant, OffsetsAndMultipliersMoveCodesAndScales) {
  const int64_t rows = 1, cols = 16;
  std::vector<float> w(16);
  for (int i = 0; i < 16; ++i) w[size_t(i)] = 0.1f * float(i - 8);
  const float G = nvfp4::global_scale(0.8f);
  std::vector<uint8_t> packed(8), scales(1);
  std::vector<float> deq(16), v(16, 0.0f);
  quant::quantize_with_offsets(w.data(), rows, cols, G, v.data(), nullptr, packed.data(), scales.data(),
                               nvfp4::ZeroScale::CompressedTensors, deq.data());
  const float d = fp8_e4m3::decode(scales[0]) / G;
  for (int i = 0; i < 16; ++i) {
    v.assign(16, 0.0f);
    v[size_t(i)] = 0.5f;
    std::vector<float> moved(16);
    quant::quantize_with_offsets(w.data(), rows, cols, G, v.data(), nullptr, packed.data(), scales.data(),
                                 nvfp4::ZeroScale::CompressedTensors, moved.data());
    EXPECT_FLOAT_EQ(moved[size_t(i)], fp4::decode(fp4::encode(std::clamp(w[size_t(i)] / d + 0.5f, -6.0f, 6.0f))) * d);
    for (int j = 0; j < 16; ++j) {
      if (j == i) continue;
      EXPECT_EQ(moved[size_t(j)], deq[size_t(j)]);
    }
  }
  std::vector<float> alpha{0.5f};
  std::vector<uint8_t> half_scale(1);
  quant::quantize_with_offsets(w.data(), rows, cols, G, nullptr, alpha.data(), packed.data(), half_scale.data(),
                               nvfp4::ZeroScale::CompressedTensors, nullptr);
  EXPECT_EQ(half_scale[0], fp8_e4m3::encode(G * ((0.5f * 0.8f) / 6.0f)));
  EXPECT_LT(fp8_e4m3::decode(half_scale[0]), fp8_e4m3::decode(scales[0]));
}

// From another quantizer's result: its dequantized weight and block scales with v = 0, alpha = 1 give its
// bytes back; alpha scales its block scales.
TEST(SignRoundQuant, BaseScalesKeepAnotherQuantizersBytes) {
  const uint64_t seed = std::random_device{}();
  SCOPED_TRACE("seed " + std::to_string(seed));
  const int64_t rows = 12, cols = 64;
  const auto w = random_weights(seed, rows, cols);
  const float G = nvfp4::global_scale(nvfp4::amax_f32(w));
  std::vector<uint8_t> p1(size_t(rows * cols / 2)), s1(size_t(rows * cols / 16)), p2 = p1, s2 = s1;
  nvfp4::quantize_rows_with_rule(w.data(), rows, cols, G, nvfp4::ScaleRule::Mse, nullptr, p1.data(), s1.data(),
                                 nvfp4::ZeroScale::CompressedTensors, nullptr);
  std::vector<float> deq(w.size());
  nvfp4::dequantize(p1.data(), s1.data(), rows, cols, G, deq.data());
  quant::quantize_with_offsets(deq.data(), rows, cols, G, nullptr, nullptr, p2.data(), s2.data(),
                               nvfp4::ZeroScale::CompressedTensors, nullptr, nullptr, s1.data());
  EXPECT_EQ(s1, s2);
  // Codes: the same values (a zero may change its sign bit).
  std::vector<float> again(w.size());
  nvfp4::dequantize(p2.data(), s2.data(), rows, cols, G, again.data());
  for (size_t i = 0; i < w.size(); ++i) EXPECT_EQ(again[i], deq[i]) << i;
  std::vector<float> alpha(w.size() / 16, 0.5f);
  quant::quantize_with_offsets(deq.data(), rows, cols, G, nullptr, alpha.data(), p2.data(), s2.data(),
                               nvfp4::ZeroScale::CompressedTensors, nullptr, nullptr, s1.data());
  for (size_t b = 0; b < s1.size(); ++b)
    EXPECT_EQ(s2[b], fp8_e4m3::encode(0.5f * fp8_e4m3::decode(s1[b]))) << b;
}

TEST(SignRoundQuant, StraightThroughGradients) {
  const uint64_t seed = std::random_device{}();
  SCOPED_TRACE("seed " + std::to_string(seed));
  const int64_t rows = 8, cols = 64;
  auto w = random_weights(seed, rows, cols);
  const float G = nvfp4::global_scale(nvfp4::amax_f32(w));
  std::mt19937_64 rng(seed + 1);
  std::uniform_real_distribution<float> u(-0.5f, 0.5f);
  std::vector<float> v(w.size()), alpha(w.size() / 16), dq(w.size());
  for (auto& x : v) x = u(rng);
  for (auto& a : alpha) a = 0.75f + 0.5f * u(rng);
  for (auto& g : dq) g = u(rng);
  std::vector<float> dv(w.size()), dalpha(alpha.size());
  quant::offset_gradients(w.data(), rows, cols, G, v.data(), alpha.data(), dq.data(), dv.data(), dalpha.data());
  std::vector<uint8_t> packed(w.size() / 2), scales(alpha.size());
  std::vector<float> deq(w.size());
  quant::quantize_with_offsets(w.data(), rows, cols, G, v.data(), alpha.data(), packed.data(), scales.data(),
                               nvfp4::ZeroScale::CompressedTensors, deq.data());
  int inside = 0, outside = 0;
  for (int64_t b = 0; b < rows * cols / 16; ++b) {
    const float d = fp8_e4m3::decode(scales[size_t(b)]) / G;
    const bool zero = (fp8_e4m3::encode(std::min(448.0f, G * ((alpha[size_t(b)] * [&] {
                         float a = 0;
                         for (int i = 0; i < 16; ++i) a = std::max(a, std::fabs(w[size_t(b * 16 + i)]));
                         return a;
                       }()) / 6.0f))) & 0x7F) == 0;
    double want_da = 0;
    float amax = 0;
    for (int i = 0; i < 16; ++i) {
      const size_t k = size_t(b * 16 + i);
      amax = std::max(amax, std::fabs(w[k]));
      const float y = w[k] / d + v[k];
      const bool in = std::fabs(y) <= 6.0f;
      (in ? inside : outside) += 1;
      EXPECT_FLOAT_EQ(dv[k], in ? dq[k] * d : 0.0f) << k;
      want_da += double(dq[k]) * (double(deq[k] / d) - (in ? double(w[k] / d) : 0.0));
    }
    if (zero) {
      EXPECT_EQ(dalpha[size_t(b)], 0.0f);
    } else {
      EXPECT_NEAR(dalpha[size_t(b)], want_da * amax / 6.0, 1e-5 * (1 + std::fabs(want_da * amax / 6.0)));
    }
  }
  EXPECT_GT(inside, 0);
}

}  // namespace
}  // namespace fp4c::testing
