// FP4 E2M1 (NVFP4.md §1): sign bit 3, exponent bits 2..1 (bias 1), mantissa bit 0; no Inf/NaN.
#pragma once

#include <cstdint>

namespace fp4c::fp4 {

// Value of a 4-bit code (the low nibble of `code`).
float decode(uint8_t code);
// Clamp to [-6, 6], round to nearest, ties to the even code. NaN encodes as +0 (a caller that can see
// NaN must reject it first). A negative value that rounds to zero encodes as 0x8.
uint8_t encode(float x);
// Two codes per byte: element 2k in the low nibble, 2k+1 in the high nibble.
inline uint8_t pack(uint8_t lo, uint8_t hi) { return uint8_t((lo & 0xF) | (hi << 4)); }

}  // namespace fp4c::fp4
