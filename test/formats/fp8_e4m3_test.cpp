// FP8 E4M3 "fn" (NVFP4.md §2): all 256 codes, every rounding tie, saturation, subnormals, and the
// encoder against a brute-force nearest search over all BF16 values and random floats.
#include "formats/fp8_e4m3.h"

#include <gtest/gtest.h>

#include <algorithm>
#include <bit>
#include <cmath>
#include <cstdint>
#include <limits>
#include <random>

#include "formats/bf16.h"

namespace fp4c {
namespace {

constexpr float kInf = std::numeric_limits<float>::infinity();
constexpr float kNaN = std::numeric_limits<float>::quiet_NaN();

bool is_nan_code(int c) { return (c & 0x7F) == 0x7F; }

// Independent oracle: saturate to 448, then the nearest of the 127 finite magnitudes (from the
// value formula, not from decode), ties to the even code; the sign is kept; NaN -> 0x7F.
double magnitude_of(int c) {  // c in 0..0x7E
  const int e = c >> 3, m = c & 7;
  return e == 0 ? std::ldexp(double(m), -9) : std::ldexp(1.0 + m / 8.0, e - 7);
}
uint8_t brute_force_encode(float x) {
  if (std::isnan(x)) return 0x7F;
  const double a = std::min(std::fabs(double(x)), 448.0);
  int best = 0;
  for (int c = 1; c <= 0x7E; ++c) {
    const double dc = std::fabs(magnitude_of(c) - a), db = std::fabs(magnitude_of(best) - a);
    if (dc < db || (dc == db && c % 2 == 0)) best = c;
  }
  return uint8_t((std::signbit(x) ? 0x80 : 0) | best);
}

TEST(Fp8E4M3, KnownCodes) {
  EXPECT_EQ(fp8_e4m3::decode(0x7E), 448.0f);
  EXPECT_EQ(fp8_e4m3::decode(0xFE), -448.0f);
  EXPECT_EQ(fp8_e4m3::decode(0x08), 0x1p-6f);
  EXPECT_EQ(fp8_e4m3::decode(0x01), 0x1p-9f);
  EXPECT_EQ(fp8_e4m3::decode(0x07), 7 * 0x1p-9f);
  EXPECT_EQ(fp8_e4m3::decode(0x38), 1.0f);
  EXPECT_EQ(fp8_e4m3::decode(0x20), 0.125f);
  EXPECT_EQ(fp8_e4m3::decode(0x30), 0.5f);
  EXPECT_EQ(fp8_e4m3::decode(0x76), 224.0f);
  EXPECT_EQ(fp8_e4m3::decode(0x7D), 416.0f);
  EXPECT_EQ(fp8_e4m3::decode(0x00), 0.0f);
  EXPECT_FALSE(std::signbit(fp8_e4m3::decode(0x00)));
  EXPECT_TRUE(std::signbit(fp8_e4m3::decode(0x80)));
  EXPECT_EQ(fp8_e4m3::decode(0x80), 0.0f);
  EXPECT_TRUE(std::isnan(fp8_e4m3::decode(0x7F)));
  EXPECT_TRUE(std::isnan(fp8_e4m3::decode(0xFF)));
}

TEST(Fp8E4M3, AllCodesDecodeByTheFormulaAndRoundTrip) {
  for (int c = 0; c < 256; ++c) {
    SCOPED_TRACE(c);
    const float v = fp8_e4m3::decode(uint8_t(c));
    if (is_nan_code(c)) {
      EXPECT_TRUE(std::isnan(v));
      EXPECT_EQ(fp8_e4m3::encode(v), 0x7F);
      continue;
    }
    EXPECT_EQ(double(std::fabs(v)), magnitude_of(c & 0x7F));
    EXPECT_EQ(std::signbit(v), c >= 0x80);
    EXPECT_EQ(fp8_e4m3::encode(v), c);
  }
}

TEST(Fp8E4M3, EveryTieGoesToTheEvenCode) {
  for (int lo = 0; lo < 0x7E; ++lo) {
    const float a = fp8_e4m3::decode(uint8_t(lo)), b = fp8_e4m3::decode(uint8_t(lo + 1));
    const float mid = (a + b) / 2;  // exact: one bit more than the codes
    ASSERT_EQ(double(mid), (double(a) + double(b)) / 2);
    const int even = lo % 2 == 0 ? lo : lo + 1;
    SCOPED_TRACE(mid);
    EXPECT_EQ(fp8_e4m3::encode(mid), even);
    EXPECT_EQ(fp8_e4m3::encode(-mid), even | 0x80);
    EXPECT_EQ(fp8_e4m3::encode(std::nextafter(mid, 0.0f)), lo);
    EXPECT_EQ(fp8_e4m3::encode(std::nextafter(mid, kInf)), lo + 1);
    EXPECT_EQ(fp8_e4m3::encode(-std::nextafter(mid, 0.0f)), lo | 0x80);
    EXPECT_EQ(fp8_e4m3::encode(-std::nextafter(mid, kInf)), (lo + 1) | 0x80);
  }
}

TEST(Fp8E4M3, SaturatesBeforeRounding) {
  // The plain PyTorch cast turns |x| >= 464 into NaN; the spec clamps to +-448 first.
  for (float x : {448.0f, 448.5f, 449.0f, 463.99f, 464.0f, 465.0f, 480.0f, 1e9f,
                  std::numeric_limits<float>::max(), kInf}) {
    SCOPED_TRACE(x);
    EXPECT_EQ(fp8_e4m3::encode(x), 0x7E);
    EXPECT_EQ(fp8_e4m3::encode(-x), 0xFE);
  }
  EXPECT_EQ(fp8_e4m3::encode(432.0f), 0x7E) << "tie between 416 (0x7D) and 448 (0x7E)";
  EXPECT_EQ(fp8_e4m3::encode(431.99f), 0x7D);
}

TEST(Fp8E4M3, NaNAndZeros) {
  EXPECT_EQ(fp8_e4m3::encode(kNaN), 0x7F);
  EXPECT_EQ(fp8_e4m3::encode(-kNaN), 0x7F);
  EXPECT_EQ(fp8_e4m3::encode(0.0f), 0x00);
  EXPECT_EQ(fp8_e4m3::encode(-0.0f), 0x80);
}

TEST(Fp8E4M3, Subnormals) {
  EXPECT_EQ(fp8_e4m3::encode(0x1p-9f), 0x01);
  EXPECT_EQ(fp8_e4m3::encode(0x1p-10f), 0x00) << "half the smallest subnormal ties to 0";
  EXPECT_EQ(fp8_e4m3::encode(-0x1p-10f), 0x80);
  EXPECT_EQ(fp8_e4m3::encode(std::nextafter(0x1p-10f, 1.0f)), 0x01);
  EXPECT_EQ(fp8_e4m3::encode(3 * 0x1p-10f), 0x02) << "1.5 units ties to 2";
  EXPECT_EQ(fp8_e4m3::encode(5 * 0x1p-10f), 0x02) << "2.5 units ties to 2";
  EXPECT_EQ(fp8_e4m3::encode(15 * 0x1p-10f), 0x08) << "7.5 units ties to 8, the smallest normal";
  EXPECT_EQ(fp8_e4m3::encode(1e-30f), 0x00);
  EXPECT_EQ(fp8_e4m3::encode(-1e-30f), 0x80);
  EXPECT_EQ(fp8_e4m3::encode(std::numeric_limits<float>::denorm_min()), 0x00);
  EXPECT_EQ(fp8_e4m3::encode(0x1p-6f), 0x08);
  EXPECT_EQ(fp8_e4m3::encode(std::nextafter(0x1p-6f, 0.0f)), 0x08);
}

TEST(Fp8E4M3, MatchesBruteForceOnEveryBf16Value) {
  for (uint32_t b = 0; b < 0x10000; ++b) {
    const float x = bf16::to_float(uint16_t(b));
    ASSERT_EQ(fp8_e4m3::encode(x), brute_force_encode(x)) << "bf16 0x" << std::hex << b << " = " << x;
  }
}

TEST(Fp8E4M3, MatchesBruteForceOnRandomFloats) {
  const uint32_t seed = std::random_device{}();
  SCOPED_TRACE(testing::Message() << "seed " << seed);
  std::mt19937 rng(seed);
  std::uniform_real_distribution<float> log2_mag(-12.0f, 10.0f);
  for (int i = 0; i < 100000; ++i) {
    float x = std::exp2(log2_mag(rng));
    if (rng() & 1) x = -x;
    ASSERT_EQ(fp8_e4m3::encode(x), brute_force_encode(x)) << x;
  }
  for (int i = 0; i < 100000; ++i) {  // arbitrary bit patterns, NaN and Inf included
    const float x = std::bit_cast<float>(uint32_t(rng()));
    ASSERT_EQ(fp8_e4m3::encode(x), brute_force_encode(x)) << x;
  }
}

}  // namespace
}  // namespace fp4c
