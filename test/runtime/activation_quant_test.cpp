// The runtime's fast kernels against the formats' references: NVFP4 activation fake quantization
// (bit-equal to quantize_f32_ref + dequantize), BF16 rounding (bit-equal to bf16::from_float) and
// the vectorisable exp.
#include <gtest/gtest.h>

#include <bit>
#include <cmath>
#include <cstring>
#include <limits>
#include <random>
#include <vector>

#include "formats/bf16.h"
#include "formats/nvfp4.h"
#include "runtime/activation_quant.h"
#include "runtime/elementwise.h"

namespace fp4c::runtime {
namespace {

std::vector<float> reference_round_trip(const std::vector<float>& x, int64_t rows, int64_t cols, float G) {
  std::vector<uint8_t> packed(size_t(rows * cols / 2)), scales(size_t(rows * cols / 16));
  nvfp4::quantize_f32_ref(x.data(), rows, cols, G, packed.data(), scales.data());
  std::vector<float> out(x.size());
  nvfp4::dequantize(packed.data(), scales.data(), rows, cols, G, out.data());
  return out;
}

// Bit patterns equal, except that any NaN matches any NaN.
void expect_same_bits(const std::vector<float>& want, const std::vector<float>& got, const std::vector<float>& x) {
  ASSERT_EQ(want.size(), got.size());
  int64_t bad = 0;
  for (size_t i = 0; i < want.size(); ++i) {
    const bool same = std::isnan(want[i]) ? std::isnan(got[i])
                                          : std::bit_cast<uint32_t>(want[i]) == std::bit_cast<uint32_t>(got[i]);
    if (!same && ++bad <= 5)
      ADD_FAILURE() << "element " << i << ": x " << x[i] << " want " << want[i] << " got " << got[i];
  }
  EXPECT_EQ(bad, 0);
}

// Activation-like rows: normal values with a few outlier channels, exact zeros, whole zero blocks,
// tiny blocks (scales that round to FP8 zero or subnormal), values on FP4 rounding ties, -0.
std::vector<float> activations(int64_t rows, int64_t cols, uint64_t seed) {
  std::mt19937_64 rng(seed);
  std::normal_distribution<float> normal(0.0f, 1.0f);
  std::uniform_int_distribution<int> pick(0, 99);
  std::vector<float> x(size_t(rows * cols));
  for (int64_t r = 0; r < rows; ++r) {
    const float row_scale = std::ldexp(1.0f, int(pick(rng) % 40) - 20);
    for (int64_t c = 0; c < cols; ++c) {
      float v = normal(rng) * row_scale;
      if (c % 97 == 3) v *= 60.0f;  // outlier channel
      const int kind = pick(rng);
      if (kind < 3) v = 0.0f;
      else if (kind < 5) v = -0.0f;
      else if (kind < 8) v = float(pick(rng) % 13 - 6) * 0.25f * row_scale;  // ties at quarter steps
      x[size_t(r * cols + c)] = v;
    }
    if (r % 7 == 1)
      for (int64_t c = 16; c < 32 && c < cols; ++c) x[size_t(r * cols + c)] = 0.0f;
    if (r % 7 == 2)
      for (int64_t c = 0; c < 16; ++c) x[size_t(r * cols + c)] = normal(rng) * 1e-30f;
  }
  return x;
}

TEST(ActivationQuant, BitEqualToReferenceOnRandomRows) {
  const int64_t rows = 257, cols = 896;
  const std::vector<float> x = activations(rows, cols, 7);
  for (float G : {nvfp4::global_scale(nvfp4::amax_f32(x)), 1.0f, 2688.0f / 3.0f, 1e4f, 0.37f,
                  nvfp4::global_scale(1e-20f)}) {
    SCOPED_TRACE(G);
    std::vector<float> got(x.size());
    fake_quantize_nvfp4(x.data(), rows, cols, G, got.data());
    expect_same_bits(reference_round_trip(x, rows, cols, G), got, x);
  }
}

TEST(ActivationQuant, InPlaceEqualsOutOfPlace) {
  const int64_t rows = 33, cols = 64;
  std::vector<float> x = activations(rows, cols, 11);
  std::vector<float> out(x.size());
  const float G = nvfp4::global_scale(nvfp4::amax_f32(x));
  fake_quantize_nvfp4(x.data(), rows, cols, G, out.data());
  fake_quantize_nvfp4(x.data(), rows, cols, G, x.data());
  EXPECT_EQ(0, std::memcmp(x.data(), out.data(), x.size() * sizeof(float)));
}

TEST(ActivationQuant, SpecialValues) {
  // Every FP4 threshold and tie at d = 1 (G = 448 * 6 / 6, block amax 6 -> s = 448), signs, Inf, NaN.
  const float G = 448.0f;
  std::vector<float> x = {6,    0.25f, 0.75f, 1.25f, 1.75f, 2.5f,  3.5f,  5.0f,
                          -0.25f, -0.75f, -1.25f, -2.5f, -5.0f, 7.0f, -0.0f, 0.1f};
  std::vector<float> specials = {std::numeric_limits<float>::infinity(), 1, -1, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0};
  std::vector<float> nan_block = {std::numeric_limits<float>::quiet_NaN(), 1, 2, 3, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0};
  std::vector<float> zeros(16, 0.0f);
  zeros[3] = -0.0f;
  x.insert(x.end(), specials.begin(), specials.end());
  x.insert(x.end(), nan_block.begin(), nan_block.end());
  x.insert(x.end(), zeros.begin(), zeros.end());
  std::vector<float> got(x.size());
  fake_quantize_nvfp4(x.data(), 1, int64_t(x.size()), G, got.data());
  expect_same_bits(reference_round_trip(x, 1, int64_t(x.size()), G), got, x);
  EXPECT_EQ(got[1], 0.0f);   // 0.25 -> 0
  EXPECT_EQ(got[2], 1.0f);   // 0.75 -> 1
  EXPECT_EQ(got[6], 4.0f);   // 3.5 -> 4
  EXPECT_EQ(got[7], 4.0f);   // 5 -> 4
  EXPECT_TRUE(std::signbit(got[8]));  // -0.25 -> -0
  EXPECT_TRUE(std::isnan(got[32]));
  EXPECT_TRUE(std::signbit(got[48 + 3]));
}

TEST(Bf16Rounding, BitEqualToFormats) {
  std::mt19937_64 rng(3);
  std::vector<float> x(100000);
  for (auto& v : x) v = std::bit_cast<float>(uint32_t(rng()));
  // Ties, NaN, Inf, the largest finite (rounds to Inf), subnormals.
  const float extra[] = {std::bit_cast<float>(0x3f808000u), std::bit_cast<float>(0x3f818000u),
                         std::numeric_limits<float>::quiet_NaN(), -std::numeric_limits<float>::infinity(),
                         std::numeric_limits<float>::max(), std::bit_cast<float>(0x00018000u),
                         std::bit_cast<float>(0x7f800001u), -0.0f};
  x.insert(x.end(), std::begin(extra), std::end(extra));
  std::vector<uint16_t> got(x.size());
  round_to_bf16(x.data(), got.data(), int64_t(x.size()));
  for (size_t i = 0; i < x.size(); ++i) ASSERT_EQ(got[i], bf16::from_float(x[i])) << "element " << i;
}

TEST(ExpApprox, WithinThreeUlp) {
  double worst = 0;
  for (float x = -87.0f; x < 88.0f; x += 0.001953125f * 3.1f) {
    const double want = std::exp(double(x));
    const double got = exp_approx(x);
    const double ulp = std::ldexp(1.0, std::ilogb(want) - 23);
    worst = std::max(worst, std::fabs(got - want) / ulp);
  }
  EXPECT_LT(worst, 3.0);
  EXPECT_EQ(exp_approx(0.0f), 1.0f);
  EXPECT_LT(exp_approx(-std::numeric_limits<float>::infinity()), 1e-37f);
  EXPECT_TRUE(std::isfinite(exp_approx(1000.0f)));
}

}  // namespace
}  // namespace fp4c::runtime
