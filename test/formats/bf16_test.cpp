// BF16 (formats/bf16.h): every code round-trips, rounding is to nearest even, NaN stays NaN.
#include "formats/bf16.h"

#include <gtest/gtest.h>

#include <bit>
#include <cmath>
#include <cstdint>
#include <limits>
#include <random>

namespace fp4c {
namespace {

bool is_nan_code(uint16_t b) { return (b & 0x7FFF) > 0x7F80; }

// Independent oracle: of the two BF16 neighbours of f (truncation and the next code up in
// magnitude), the nearer in double, ties to the even code.
uint16_t nearest_even(float f) {
  const uint32_t u = std::bit_cast<uint32_t>(f);
  const uint16_t lo = uint16_t(u >> 16), hi = uint16_t(lo + 1);
  const double d_lo = std::fabs(double(bf16::to_float(lo)) - double(f));
  // The code above the largest finite is Inf: measure it as the next power of two (IEEE overflow).
  const double v_hi = (hi & 0x7FFF) == 0x7F80 ? std::copysign(std::ldexp(1.0, 128), double(f))
                                              : double(bf16::to_float(hi));
  const double d_hi = std::fabs(v_hi - double(f));
  if (d_lo != d_hi) return d_lo < d_hi ? lo : hi;
  return (lo & 1) ? hi : lo;
}

TEST(Bf16, EveryCodeRoundTrips) {
  for (uint32_t b = 0; b < 0x10000; ++b) {
    const float f = bf16::to_float(uint16_t(b));
    EXPECT_EQ(std::bit_cast<uint32_t>(f), b << 16);
    if (is_nan_code(uint16_t(b))) {
      EXPECT_TRUE(std::isnan(f));
      EXPECT_TRUE(is_nan_code(bf16::from_float(f))) << std::hex << b;
    } else {
      ASSERT_EQ(bf16::from_float(f), b) << std::hex << b;
    }
  }
}

TEST(Bf16, KnownValues) {
  EXPECT_EQ(bf16::from_float(1.0f), 0x3F80);
  EXPECT_EQ(bf16::from_float(-2.0f), 0xC000);
  EXPECT_EQ(bf16::from_float(0.0f), 0x0000);
  EXPECT_EQ(bf16::from_float(-0.0f), 0x8000);
  EXPECT_EQ(bf16::from_float(std::numeric_limits<float>::infinity()), 0x7F80);
  EXPECT_EQ(bf16::from_float(-std::numeric_limits<float>::infinity()), 0xFF80);
  EXPECT_EQ(bf16::to_float(0x4040), 3.0f);
}

TEST(Bf16, TiesGoToEven) {
  EXPECT_EQ(bf16::from_float(std::bit_cast<float>(0x3F808000u)), 0x3F80);  // even below
  EXPECT_EQ(bf16::from_float(std::bit_cast<float>(0x3F818000u)), 0x3F82);  // even above
  EXPECT_EQ(bf16::from_float(std::bit_cast<float>(0x3F808001u)), 0x3F81);
  EXPECT_EQ(bf16::from_float(std::bit_cast<float>(0x3F817FFFu)), 0x3F81);
  EXPECT_EQ(bf16::from_float(std::bit_cast<float>(0xBF808000u)), 0xBF80);
  EXPECT_EQ(bf16::from_float(std::bit_cast<float>(0xBF818000u)), 0xBF82);
  // Subnormals round the same way; the largest finite rounds up to Inf only past the tie.
  EXPECT_EQ(bf16::from_float(std::bit_cast<float>(0x00018000u)), 0x0002);
  EXPECT_EQ(bf16::from_float(std::bit_cast<float>(0x00008000u)), 0x0000);
  EXPECT_EQ(bf16::from_float(std::bit_cast<float>(0x7F7F7FFFu)), 0x7F7F);
  EXPECT_EQ(bf16::from_float(std::bit_cast<float>(0x7F7F8000u)), 0x7F80);
}

TEST(Bf16, NaNStaysNaN) {
  // A NaN whose payload is only in the low 16 bits must not truncate to Inf.
  for (uint32_t u : {0x7F800001u, 0xFF800001u, 0x7FC00000u, 0x7F80FFFFu, 0xFFFFFFFFu}) {
    EXPECT_TRUE(is_nan_code(bf16::from_float(std::bit_cast<float>(u)))) << std::hex << u;
  }
}

TEST(Bf16, MatchesNearestEvenOnRandomFloats) {
  const uint32_t seed = std::random_device{}();
  SCOPED_TRACE(testing::Message() << "seed " << seed);
  std::mt19937 rng(seed);
  for (int i = 0; i < 1000000; ++i) {
    uint32_t u = rng();
    if (i % 4 == 0) u = (u & 0xFFFF0000u) | 0x8000u;  // a tie
    const float f = std::bit_cast<float>(u);
    if (!std::isfinite(f)) continue;  // Inf and NaN are pinned above
    ASSERT_EQ(bf16::from_float(f), nearest_even(f)) << std::hex << u;
  }
}

}  // namespace
}  // namespace fp4c
