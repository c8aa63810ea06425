// FP4 E2M1 (NVFP4.md §1): every code, every tie, and the encoder against a brute-force nearest search
// over all BF16 values.
#include "formats/fp4.h"

#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <limits>

#include "formats/bf16.h"

namespace fp4c {
namespace {

constexpr float kValues[16] = {0.0f,  0.5f,  1.0f,  1.5f,  2.0f,  3.0f,  4.0f,  6.0f,
                               -0.0f, -0.5f, -1.0f, -1.5f, -2.0f, -3.0f, -4.0f, -6.0f};

// Independent oracle: clamp, then the nearest of the 8 magnitudes, ties to the even code; the sign
// is kept (a negative value rounding to zero is 0x8); NaN is 0.
uint8_t brute_force_encode(float x) {
  if (std::isnan(x)) return 0;
  const double a = std::min(std::fabs(double(x)), 6.0);
  int best = 0;
  for (int c = 1; c < 8; ++c) {
    const double dc = std::fabs(double(kValues[c]) - a), db = std::fabs(double(kValues[best]) - a);
    if (dc < db || (dc == db && c % 2 == 0)) best = c;
  }
  return uint8_t((std::signbit(x) ? 8 : 0) | best);
}

TEST(Fp4, DecodesEveryCode) {
  for (int c = 0; c < 16; ++c) {
    SCOPED_TRACE(c);
    EXPECT_EQ(fp4::decode(uint8_t(c)), kValues[c]);
    EXPECT_EQ(std::signbit(fp4::decode(uint8_t(c))), c >= 8);
    EXPECT_EQ(fp4::decode(uint8_t(c | 0xF0)), kValues[c]) << "only the low nibble counts";
  }
}

TEST(Fp4, EveryCodeRoundTrips) {
  for (int c = 0; c < 16; ++c) EXPECT_EQ(fp4::encode(fp4::decode(uint8_t(c))), c) << c;
}

TEST(Fp4, ExamplesFromTheSpec) {
  // "0.25->0, 0.75->1, 1.25->1, 1.75->2, 2.5->2, 3.5->4, 5->4, 7->6"
  const struct { float in, out; } cases[] = {{0.25f, 0.0f}, {0.75f, 1.0f}, {1.25f, 1.0f},
                                             {1.75f, 2.0f}, {2.5f, 2.0f},  {3.5f, 4.0f},
                                             {5.0f, 4.0f},  {7.0f, 6.0f}};
  for (const auto& c : cases) {
    SCOPED_TRACE(c.in);
    EXPECT_EQ(fp4::decode(fp4::encode(c.in)), c.out);
    EXPECT_EQ(fp4::decode(fp4::encode(-c.in)), -c.out);
  }
}

TEST(Fp4, EveryTieGoesToTheEvenCode) {
  // Midpoint between codes lo and lo+1 -> the even one of the two; one ulp either side -> nearest.
  for (int lo = 0; lo < 7; ++lo) {
    const float mid = (kValues[lo] + kValues[lo + 1]) / 2;
    const int even = lo % 2 == 0 ? lo : lo + 1;
    SCOPED_TRACE(mid);
    EXPECT_EQ(fp4::encode(mid), even);
    EXPECT_EQ(fp4::encode(-mid), even | 8);
    EXPECT_EQ(fp4::encode(std::nextafter(mid, 0.0f)), lo);
    EXPECT_EQ(fp4::encode(std::nextafter(mid, 10.0f)), lo + 1);
    EXPECT_EQ(fp4::encode(-std::nextafter(mid, 0.0f)), lo | 8);
    EXPECT_EQ(fp4::encode(-std::nextafter(mid, 10.0f)), (lo + 1) | 8);
  }
}

TEST(Fp4, ThresholdTableOfTheSpec) {
  // `<=0.25 -> 0, <0.75 -> 0.5, <=1.25 -> 1, <1.75 -> 1.5, <=2.5 -> 2, <3.5 -> 3, <=5 -> 4, else 6`
  EXPECT_EQ(fp4::encode(0.25f), 0x0);
  EXPECT_EQ(fp4::encode(0.7499f), 0x1);
  EXPECT_EQ(fp4::encode(0.75f), 0x2);
  EXPECT_EQ(fp4::encode(1.25f), 0x2);
  EXPECT_EQ(fp4::encode(1.7499f), 0x3);
  EXPECT_EQ(fp4::encode(1.75f), 0x4);
  EXPECT_EQ(fp4::encode(2.5f), 0x4);
  EXPECT_EQ(fp4::encode(3.4999f), 0x5);
  EXPECT_EQ(fp4::encode(3.5f), 0x6);
  EXPECT_EQ(fp4::encode(5.0f), 0x6);
  EXPECT_EQ(fp4::encode(5.0001f), 0x7);
}

TEST(Fp4, ClampsAndSpecialValues) {
  const float inf = std::numeric_limits<float>::infinity();
  EXPECT_EQ(fp4::encode(6.0f), 0x7);
  EXPECT_EQ(fp4::encode(1e30f), 0x7);
  EXPECT_EQ(fp4::encode(inf), 0x7);
  EXPECT_EQ(fp4::encode(-6.0f), 0xF);
  EXPECT_EQ(fp4::encode(-1e30f), 0xF);
  EXPECT_EQ(fp4::encode(-inf), 0xF);
  EXPECT_EQ(fp4::encode(std::numeric_limits<float>::quiet_NaN()), 0x0);
  EXPECT_EQ(fp4::encode(-std::numeric_limits<float>::quiet_NaN()), 0x0);
  EXPECT_EQ(fp4::encode(0.0f), 0x0);
  EXPECT_EQ(fp4::encode(-0.0f), 0x8);
  // A negative value that rounds to zero keeps its sign (compressed-tensors, ModelOpt).
  EXPECT_EQ(fp4::encode(-0.1f), 0x8);
  EXPECT_EQ(fp4::encode(-0.25f), 0x8);
  EXPECT_EQ(fp4::encode(-std::numeric_limits<float>::denorm_min()), 0x8);
  EXPECT_EQ(fp4::encode(std::numeric_limits<float>::denorm_min()), 0x0);
}

TEST(Fp4, MatchesBruteForceOnEveryBf16Value) {
  for (uint32_t b = 0; b < 0x10000; ++b) {
    const float x = bf16::to_float(uint16_t(b));
    ASSERT_EQ(fp4::encode(x), brute_force_encode(x)) << "bf16 0x" << std::hex << b << " = " << x;
  }
}

TEST(Fp4, Packing) {
  EXPECT_EQ(fp4::pack(0x1, 0x2), 0x21);
  EXPECT_EQ(fp4::pack(0xF, 0x8), 0x8F);
  EXPECT_EQ(fp4::pack(0x1F, 0x2), 0x2F) << "the low code's high bits are dropped";
  // torchao test vector: [[0, 0.5, 4, -0], [-0, 1, -6, 3]] -> [[0x10, 0x86], [0x28, 0x5F]].
  const float v[2][4] = {{0.0f, 0.5f, 4.0f, -0.0f}, {-0.0f, 1.0f, -6.0f, 3.0f}};
  const uint8_t want[2][2] = {{0x10, 0x86}, {0x28, 0x5F}};
  for (int r = 0; r < 2; ++r) {
    for (int k = 0; k < 2; ++k) {
      EXPECT_EQ(fp4::pack(fp4::encode(v[r][2 * k]), fp4::encode(v[r][2 * k + 1])), want[r][k]);
    }
  }
}

}  // namespace
}  // namespace fp4c
