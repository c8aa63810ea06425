// FP8 E4M3 "fn" (NVFP4.md §2): bias 7, max finite 448 (0x7E), NaN 0x7F/0xFF, no infinities.
#pragma once

#include <cstdint>

namespace fp4c::fp8_e4m3 {

float decode(uint8_t code);
// Saturating cast: clamp to +-448, then round to nearest even (subnormals included). NaN -> 0x7F.
uint8_t encode(float x);

}  // namespace fp4c::fp8_e4m3
