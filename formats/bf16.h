// BF16: the upper 16 bits of an IEEE float32.
#pragma once

#include <bit>
#include <cstdint>

namespace fp4c::bf16 {

inline float to_float(uint16_t b) { return std::bit_cast<float>(uint32_t(b) << 16); }

// Round to nearest even; NaN stays a (quiet) NaN.
inline uint16_t from_float(float f) {
  uint32_t u = std::bit_cast<uint32_t>(f);
  if ((u & 0x7fffffffu) > 0x7f800000u) return uint16_t((u >> 16) | 0x40);
  u += 0x7fffu + ((u >> 16) & 1u);
  return uint16_t(u >> 16);
}

}  // namespace fp4c::bf16
