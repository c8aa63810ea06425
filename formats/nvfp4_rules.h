// NVFP4 block-scale rules (NVFP4.md §3 and §8; the `blockscale` pass): how each block
// of 16 picks its FP8 E4M3 scale. Whatever the rule, the elements are then encoded exactly as in
// NVFP4.md §3 step 3 with the chosen scale byte s: q = fp4(clamp(x / (decode(s) / G), -6, 6)), s / G
// rounded to float32 first and a true division. The output layout is nvfp4::quantize_f32_ref's.
//
//  - Max:         the reference scale fp8(G * a / 6) (a = block amax); bytes identical to
//                 nvfp4::quantize_f32_ref.
//  - Mse:         search candidate scale codes, keep the one with the least sum of squared error of
//                 the block.
//  - Weighted:    the same search, minimizing sum_j w_j (x_j - x'_j)^2 with w = the input channel's
//                 mean square (channel_weights[col]).
//  - FourOverSix: two candidates, fp8(G * a / 6) (block max mapped to 6) and fp8(G * a / 4) (mapped to
//                 4), keep the lower squared error.
//
// Candidate set of Mse and Weighted: let m be the Max rule's code (after the zero-scale replacement).
// Every positive finite FP8 code c with m - kSearchBelow <= c <= m + kSearchAbove (clipped to
// [0x01, 0x7E]) is tried. FP8 E4M3 codes of one sign are monotonic in value, with 8 codes per binade
// in the normal range, so m - 16 is m's value / 4 (for normal codes; subnormals reach further down)
// and m + 4 is up to about 1.5x. When the Max rule's scale rounded to FP8 zero in a block that is not
// all zero (a tiny block under a large G), the search goes down to code 0x01. At most 21 candidates
// (60 in that tiny case), so the search is bounded.
// Ties, in all searching rules, keep the Max rule's code (a candidate replaces the incumbent only with
// a strictly smaller error, and the Max code is tried first), so every rule is never worse than Max on
// the quantity it minimizes. Blocks holding a NaN, all-zero blocks and a G that is not finite and
// positive all get the Max rule's bytes.
#pragma once

#include <cstdint>
#include <optional>
#include <string_view>

#include "formats/nvfp4.h"

namespace fp4c::nvfp4 {

enum class ScaleRule { Max, Mse, Weighted, FourOverSix };

// Search window of Mse and Weighted, in FP8 codes relative to the Max rule's code.
inline constexpr int kSearchBelow = 16;
inline constexpr int kSearchAbove = 4;

// "max", "mse", "weighted", "4over6".
const char* scale_rule_name(ScaleRule rule);
// The inverse of scale_rule_name; nullopt for any other text (exact, case-sensitive).
std::optional<ScaleRule> parse_scale_rule(std::string_view text);

// Quantize a row-major [rows, cols] float matrix (cols % 16 == 0) with block scales chosen by `rule`.
// packed: rows * cols / 2 bytes; scales: rows * cols / 16 bytes, as quantize_f32_ref.
// channel_weights: [cols], each input channel's mean square; required for Weighted (a null pointer
// throws std::invalid_argument), ignored otherwise. Negative or NaN weights are not meaningful.
// err, when non-null, receives the (unweighted) error figures as quantize_f32_ref computes them.
// OpenMP over rows; the bytes and the error figures do not depend on the thread count.
void quantize_rows_with_rule(const float* x, int64_t rows, int64_t cols, float global_scale,
                             ScaleRule rule, const float* channel_weights, uint8_t* packed,
                             uint8_t* scales, ZeroScale zero = ZeroScale::CompressedTensors,
                             ErrorStats* err = nullptr);

}  // namespace fp4c::nvfp4
