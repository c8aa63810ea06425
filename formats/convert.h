// Floating tensors as float32: BF16, F16 and F32 bytes, converted exactly.
#pragma once

#include <cstddef>
#include <cstdint>
#include <span>
#include <vector>

#include "ir/dtype.h"

namespace fp4c {

// Converts n elements of `dtype` (BF16, F16 or F32) at `src` into `out`; OpenMP for large n.
void convert_to_f32(const std::byte* src, DType dtype, int64_t n, float* out);
std::vector<float> to_f32(std::span<const std::byte> bytes, DType dtype);

}  // namespace fp4c
