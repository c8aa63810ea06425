// Output error of a Linear: how far a candidate Linear's output (quantized weight, fake-quantized
// input, rescaled input channels) lies from the reference Linear's on the same input rows. The figure
// behind `fp4c eval --per-layer` and the sensitivity pass.
#pragma once

#include <cstdint>
#include <optional>
#include <span>
#include <vector>

#include "formats/nvfp4_rules.h"

namespace fp4c::quant {

// Sums over tokens and output channels.
struct OutputError {
  double error_sq = 0, reference_sq = 0;
  double relative() const;            // error_sq / reference_sq (0 when both are 0, +inf when only the reference is)
  void merge(const OutputError& o);   // adds the sums
};

// Reference Y = X W_ref^T; candidate Yc = fq(X (.) x_scale) W_cand^T, where x_scale (nullable, [in])
// multiplies each input channel and fq is NVFP4 fake-quantization of activations
// (runtime::fake_quantize_nvfp4) with input_global_scale when set (W4A16: none; then in % 16 == 0 is
// required). Biases are left out (they cancel in the difference). x: [rows, in], weights [out, in]
// row-major float. FP32 GEMMs (oneDNN) over chunks of rows; squared differences summed in double per
// row and over rows in row order, so the figures do not depend on the thread count. A GEMM library
// failure falls back to a plain loop.
// With `input_mxfp4` (MXFP4 W4A4; input_global_scale unset) fq is runtime::fake_quantize_mxfp4 instead.
OutputError linear_output_error(const float* x, int64_t rows, int64_t in, const float* w_ref, const float* w_cand,
                                int64_t out, std::optional<float> input_global_scale, const float* x_scale = nullptr,
                                bool input_mxfp4 = false);

// linear_output_error of several candidates of one Linear on the same rows: the input transformed and the
// reference output computed once per chunk, not once per candidate. Each figure is the one
// linear_output_error gives for that candidate, to the bit. `group` candidates share a pass over the rows
// (0: as many as ~512 MiB of their prepared weights allow).
std::vector<OutputError> linear_output_errors(const float* x, int64_t rows, int64_t in, const float* w_ref,
                                              std::span<const float* const> w_cands, int64_t out,
                                              std::optional<float> input_global_scale,
                                              const float* x_scale = nullptr, bool input_mxfp4 = false,
                                              size_t group = 0);

// NVFP4 round trip of a weight: quantized with global scale G and the block rule
// (nvfp4::quantize_rows_with_rule; Weighted needs channel_weights [cols]), dequantized; floats
// [rows, cols], cols % 16 == 0.
std::vector<float> nvfp4_round_trip(const float* w, int64_t rows, int64_t cols, float global_scale,
                                    nvfp4::ScaleRule rule = nvfp4::ScaleRule::Max,
                                    const float* channel_weights = nullptr);

}  // namespace fp4c::quant
