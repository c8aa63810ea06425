// W4A4 activation fake quantization: what a serving engine does to a Linear's input before an NVFP4
// GEMM, in float32. Per row, blocks of 16 along the columns, with the Linear's input global scale Gx
// in place of the weight's G (NVFP4.md §3): s = fp8(clamp(Gx * (amax_block / 6))), a zero scale
// becomes 0.125, q = fp4(clamp(x / (s / Gx))), x' = fp4_value(q) * (s / Gx).
#pragma once

#include <cstdint>

namespace fp4c::runtime {

// out[rows, cols] = x' for x[rows, cols]; cols % 16 == 0; out may equal x. Bit-equal to
// nvfp4::quantize_f32_ref followed by nvfp4::dequantize (NaN blocks come out NaN, as there). OpenMP
// over rows.
void fake_quantize_nvfp4(const float* x, int64_t rows, int64_t cols, float global_scale, float* out);

// MXFP4 W4A4 (formats/mxfp4.h): per row, blocks of 32 along the columns, each block's E8M0 scale from
// its own amax under mxfp4::kDefaultRule (as MX hardware computes activation scales at run time, no
// global scale), x' = fp4_value(fp4(clamp(x / s))) * s. cols % 32 == 0; out may equal x. Bit-equal to
// mxfp4::quantize_f32_ref followed by mxfp4::dequantize (a NaN block comes out NaN). OpenMP over rows.
void fake_quantize_mxfp4(const float* x, int64_t rows, int64_t cols, float* out);

}  // namespace fp4c::runtime
