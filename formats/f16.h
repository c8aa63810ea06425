// IEEE binary16 to float32 (exact).
#pragma once

#include <bit>
#include <cstdint>

namespace fp4c::f16 {

inline float to_float(uint16_t h) {
  const uint32_t sign = uint32_t(h & 0x8000) << 16;
  const uint32_t exp = (h >> 10) & 0x1f;
  uint32_t mant = h & 0x3ff;
  if (exp == 0x1f) return std::bit_cast<float>(sign | 0x7f800000u | (mant << 13));
  if (exp != 0) return std::bit_cast<float>(sign | ((exp + 112) << 23) | (mant << 13));
  if (mant == 0) return std::bit_cast<float>(sign);
  int e = -1;  // subnormal: normalise
  do { mant <<= 1; ++e; } while (!(mant & 0x400));
  return std::bit_cast<float>(sign | uint32_t(112 - e) << 23 | ((mant & 0x3ff) << 13));
}

// float32 to binary16, rounding to nearest even (overflow to inf, NaN quietened keeping its top payload
// bits): bit for bit what a cast to _Float16 gives (checked on all 2^32 inputs against GCC's), for
// compilers without _Float16 on x86 (clang before 15).
inline uint16_t from_float(float f) {
  const uint32_t x = std::bit_cast<uint32_t>(f);
  const uint16_t sign = uint16_t((x >> 16) & 0x8000);
  const uint32_t a = x & 0x7fffffffu;
  if (a >= 0x7f800000u)  // inf, NaN (quietened, top payload bits kept)
    return a == 0x7f800000u ? uint16_t(sign | 0x7c00) : uint16_t(sign | 0x7e00 | ((a >> 13) & 0x3ff));
  if (a >= 0x477ff000u) return uint16_t(sign | 0x7c00);   // rounds to 65536 or more: inf
  uint32_t h, rem, half;
  if (a >= 0x38800000u) {  // normal half
    h = (a - (112u << 23)) >> 13;
    rem = a & 0x1fffu;
    half = 0x1000u;
  } else {                 // subnormal half or zero
    if (a <= 0x33000000u) return sign;   // at most 2^-25: rounds to zero (a tie goes to even 0)
    const uint32_t e = a >> 23, m = (a & 0x7fffffu) | 0x800000u, shift = 126 - e;
    h = m >> shift;
    rem = m & ((1u << shift) - 1);
    half = 1u << (shift - 1);
  }
  if (rem > half || (rem == half && (h & 1))) ++h;
  return uint16_t(sign | h);
}

}  // namespace fp4c::f16
