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

}  // namespace fp4c::f16
