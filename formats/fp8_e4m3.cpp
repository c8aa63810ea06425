// FP8 E4M3 "fn" codec, written straight from NVFP4.md §2: it is the oracle for every fast encoder.
#include "formats/fp8_e4m3.h"

#include <cmath>
#include <limits>

namespace fp4c::fp8_e4m3 {

namespace {
constexpr float kMax = 448.0f;       // 0x7E
constexpr float kMinNormal = 0x1p-6f;  // 0x08
}  // namespace

float decode(uint8_t code) {
  const int exponent = (code >> 3) & 0xF;
  const int mantissa = code & 0x7;
  float magnitude;
  if (exponent == 0xF && mantissa == 0x7) {
    magnitude = std::numeric_limits<float>::quiet_NaN();
  } else if (exponent == 0) {
    magnitude = std::ldexp(float(mantissa), -9);  // subnormal: m * 2^-9
  } else {
    magnitude = std::ldexp(float(8 + mantissa), exponent - 7 - 3);  // 1.m * 2^(e-7)
  }
  return (code & 0x80) ? -magnitude : magnitude;
}

uint8_t encode(float x) {
  if (std::isnan(x)) return 0x7F;
  const uint8_t sign = std::signbit(x) ? 0x80 : 0x00;
  float a = std::fabs(x);
  if (a > kMax) a = kMax;  // saturate before rounding: 464 and Inf give 448, never NaN

  // Scale |x| so that one unit is the spacing of the codes around it, round to the nearest integer
  // with ties to even (std::nearbyint in the default rounding mode), and read the code off.
  // Scaling by a power of two is exact, so this is the only rounding.
  if (a < kMinNormal) {
    const float units = std::nearbyint(std::ldexp(a, 9));  // 0..8; 8 is the smallest normal, 0x08
    return uint8_t(sign | uint8_t(units));
  }
  int e2;
  std::frexp(a, &e2);         // a = f * 2^e2, f in [0.5, 1)
  const int exponent = e2 - 1;  // a in [2^exponent, 2^(exponent+1)), exponent in [-6, 8]
  const float units = std::nearbyint(std::ldexp(a, 3 - exponent));  // 8..16: implicit 1 + 3 bits
  // units == 16 carries into the next exponent, which is what adding the codes does.
  const int code = ((exponent + 7) << 3) + (int(units) - 8);
  return uint8_t(sign | uint8_t(code));
}

}  // namespace fp4c::fp8_e4m3
