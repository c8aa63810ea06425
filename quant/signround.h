// NVFP4 with tuned rounding (SignRound / AutoRound, Cheng et al. 2023): each weight w gets a rounding offset
// v in [-0.5, 0.5] added to w / d before the FP4 rounding, and each 16-element block a multiplier alpha on its
// max-rule scale before the FP8 rounding. Forward and the straight-through gradients with respect to v and
// alpha, for the block-output reconstruction of passes/signround.h.
#pragma once

#include <cstdint>

#include "formats/nvfp4.h"

namespace fp4c::quant {

// w [rows, cols] (cols % 16 == 0) with global scale G: block b of row r has amax a, scale code
// s = fp8(clamp(G * ((alpha[r, b] * a) / 6), -448, 448)) (a zero code becomes `zero`'s), d = fp8 value(s) / G,
// element w -> fp4(clamp(w / d + v, -6, 6)). With every v = 0 and alpha = 1: nvfp4::quantize_f32_ref's bytes.
// `v` [rows * cols] and `alpha` [rows * cols / 16] may be null (0 and 1). `dequantized` (may be null) gets
// code value * d; `err` (may be null) the weight error figures. OpenMP over rows.
// `base_scales` (may be null): start from another quantizer's block scales instead of the max rule: block b's
// code is fp8(clamp(alpha[b] * fp8 value(base_scales[b]), 448)), so that alpha = 1 keeps them (w then holds that
// quantizer's dequantized weight, and v = 0 its codes).
void quantize_with_offsets(const float* w, int64_t rows, int64_t cols, float G, const float* v, const float* alpha,
                           uint8_t* packed, uint8_t* scales, nvfp4::ZeroScale zero, float* dequantized,
                           nvfp4::ErrorStats* err = nullptr, const uint8_t* base_scales = nullptr);

// The straight-through gradients of a loss through quantize_with_offsets' dequantized weight q d, given
// dq = d(loss)/d(dequantized) [rows, cols]: FP4 and FP8 rounding pass gradients through, clamping does not.
// dv[i] = dq[i] d (0 where |w / d + v| > 6); dalpha[r, b] = sum_i dq[i] (fp4(..) - w_i / d [inside]) a / 6
// (0 for a block whose scale is the zero code or clamped at 448). OpenMP over rows.
// With base_scales, d(d)/d(alpha) = fp8 value(base) / G in place of a / 6.
void offset_gradients(const float* w, int64_t rows, int64_t cols, float G, const float* v, const float* alpha,
                      const float* dq, float* dv, float* dalpha, const uint8_t* base_scales = nullptr);

}  // namespace fp4c::quant
