// ModelOpt's "local Hessian" NVFP4 block scales (NVFP4.md §8): for each block of 16 (row r,
// columns 16b..16b+15) the FP8 scale that minimizes e^T H_b e, e = w_block - Q(w_block), H_b the 16x16
// diagonal sub-block of the input second-moment matrix H = X^T X / n for those columns, i.e. the
// block's own contribution to the output error ||X (W - Q(W))^T||^2 / n (cross-block terms ignored).
//
// Candidates and tie rules are those of nvfp4_rules.h's Mse/Weighted search: the Max rule's code m
// (after the zero-scale replacement) first, then every code in [m - kSearchBelow, m + kSearchAbove]
// clipped to [0x01, 0x7E] (from 0x01 when the Max scale rounded to FP8 zero in a non-zero block); a
// candidate replaces the incumbent only with a strictly smaller error, so the rule is never worse than
// Max on e^T H_b e, block by block. Elements are encoded exactly as NVFP4.md §3 step 3. Blocks holding
// a NaN, all-zero blocks and a G that is not finite and positive get the Max rule's bytes. The error is
// evaluated in double as t = H_b e (j ascending), then sum_i e_i t_i (i ascending), with
// e_i = double(x_i) - double(fp4_value(q_i) * (s / G)): with H = I that is exactly the Mse rule's sum,
// so the bytes equal quantize_rows_with_rule(..., ScaleRule::Mse, ...).
#pragma once

#include <cstdint>

#include "formats/nvfp4.h"

namespace fp4c::quant {

// Same output layout as nvfp4::quantize_* (packed rows*cols/2 bytes, FP8 scales rows*cols/16 bytes,
// zero-scale convention `zero`); err (may be null): the unweighted weight error figures, as
// nvfp4::quantize_f32_ref computes them. h: [cols, cols] row-major double, finite (only its 16x16
// diagonal blocks are read). OpenMP over rows; bytes and figures do not depend on the thread count.
// Like nvfp4::quantize_rows_with_rule, throws std::invalid_argument when cols % 16 != 0 or h is null.
void quantize_rows_localhessian(const float* w, int64_t rows, int64_t cols, float global_scale, const double* h,
                                uint8_t* packed, uint8_t* scales, nvfp4::ZeroScale zero, nvfp4::ErrorStats* err);

// One block: x[16], hb the 16x16 block (row-major), zero_code the zero-scale byte (0x20 or 0x38).
// Returns the chosen scale code and writes the 16 FP4 codes (one per byte) to q.
uint8_t localhessian_block(const float* x, float global_scale, const double* hb, uint8_t zero_code, uint8_t* q);

}  // namespace fp4c::quant
