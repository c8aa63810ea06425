// Floating tensors as float32: BF16, F16 and F32 bytes, converted exactly.
#pragma once

#include <cstddef>
#include <cstdint>
#include <span>
#include <vector>

#include "base/dtype.h"

namespace fp4c {

// Converts n elements of `dtype` (BF16, F16 or F32) at `src` into `out`; OpenMP for large n.
void convert_to_f32(const std::byte* src, DType dtype, int64_t n, float* out);
std::vector<float> to_f32(std::span<const std::byte> bytes, DType dtype);

// The other way: n floats to `dtype` (BF16 or F16 rounded to nearest even, F32 copied) at `out`.
void convert_from_f32(const float* src, DType dtype, int64_t n, std::byte* out);
// Rounds each value to the nearest value `dtype` holds (BF16, F16; F32 unchanged), as storing it would.
void round_to_dtype(float* v, int64_t n, DType dtype);

}  // namespace fp4c
