// NVFP4 (NVFP4.md §3): FP4 E2M1 elements in blocks of 16 along the input dimension, one FP8 E4M3
// scale per block, one FP32 global scale per tensor (shared across a fused group).
//
// Two implementations of the encoder: `*_ref` is the plain oracle, written straight from the spec;
// the fast one (SIMD where the CPU has it, OpenMP over rows) must give the same bytes.
#pragma once

#include <bit>
#include <cstdint>
#include <functional>
#include <span>

namespace fp4c::nvfp4 {

inline constexpr int kBlock = 16;

// What an all-zero block's scale (a scale that rounds to FP8 zero) becomes.
enum class ZeroScale : uint8_t {
  CompressedTensors,  // 0.125 (byte 0x20), as compressed-tensors writes (NVFP4.md says 0x30: that
                      // byte is 0.5; compressed-tensors writes torch.tensor(0.125, float8_e4m3fn))
  ModelOpt,           // 1.0 (byte 0x38). ModelOpt itself now writes 1.0 only for all-zero blocks
                      // and clamps other tiny scales to 2^-9 (0x01); here both get 1.0.
};

// G = 448 * 6 / amax in float32; 1 when amax is 0, negative or not finite. An amax so small (below
// about 7.9e-36) that the quotient overflows gives the largest finite float instead of Inf.
float global_scale(float amax);

// max |x| over the data; NaN if any element is NaN (so callers can reject it), Inf if any is Inf.
float amax_bf16(std::span<const uint16_t> x);
float amax_f32(std::span<const float> x);
// Count of NaN and Inf elements.
int64_t count_nonfinite_bf16(std::span<const uint16_t> x);
// The number of NaN/Inf float32 values.
int64_t count_nonfinite_f32(std::span<const float> x);

// Weight error of a quantized tensor against its source, accumulated in double per row and summed over
// rows in order, so the figures do not depend on the thread count.
// The largest |x| of a block as its float's bit pattern (an integer max: NaN patterns sort above Inf,
// so a NaN in the block sticks); the block amax every NVFP4 and MXFP4 scale starts from.
inline uint32_t block_amax_bits(const float* x, int n) {
  uint32_t amax = 0;
#pragma omp simd reduction(max : amax)
  for (int i = 0; i < n; ++i) {
    const uint32_t m = std::bit_cast<uint32_t>(x[i]) & 0x7fffffffu;
    amax = m > amax ? m : amax;
  }
  return amax;
}

struct ErrorStats {
  double sum_sq_err = 0;   // sum (x - x')^2
  double sum_sq_ref = 0;   // sum x^2
  double max_abs_err = 0;
  int64_t count = 0;
  double relative_mse() const { return sum_sq_ref > 0 ? sum_sq_err / sum_sq_ref : 0.0; }
  // Adds another part's figures (rows merged in order give the serial sums); max ignores NaN.
  void merge(const ErrorStats& o) {
    sum_sq_err += o.sum_sq_err;
    sum_sq_ref += o.sum_sq_ref;
    if (o.max_abs_err > max_abs_err) max_abs_err = o.max_abs_err;
    count += o.count;
  }
  // 10 log10(sum x^2 / sum err^2); +inf when the error is 0.
  double sqnr_db() const;
};

// Quantize a row-major [rows, cols] matrix, cols % 16 == 0.
// packed: rows * cols / 2 bytes; scales: rows * cols / 16 bytes (FP8 E4M3 codes).
// When `err` is non-null the weight error is accumulated into it (x' as in `dequantize`; max_abs_err
// skips NaN errors, the sums do not).
// Inputs callers should reject first, with the bytes they get (the same from every implementation):
// a block holding a NaN gets the NaN scale 0x7F and all its codes 0; an Inf clamps like a huge value
// (scale 448, code +-6). `global_scale` should be finite and > 0 (what global_scale() returns);
// other values follow the reference's arithmetic literally.
void quantize_bf16_ref(const uint16_t* x, int64_t rows, int64_t cols, float global_scale,
                       uint8_t* packed, uint8_t* scales, ZeroScale zero = ZeroScale::CompressedTensors,
                       ErrorStats* err = nullptr);
void quantize_f32_ref(const float* x, int64_t rows, int64_t cols, float global_scale, uint8_t* packed,
                      uint8_t* scales, ZeroScale zero = ZeroScale::CompressedTensors,
                      ErrorStats* err = nullptr);
// Fast: the same output bytes as the reference, OpenMP over rows (AVX-512 where the CPU has it, else
// the portable kernel below). Its error figures equal the reference's within double rounding
// (summation order differs) and do not depend on the thread count.
void quantize_bf16(const uint16_t* x, int64_t rows, int64_t cols, float global_scale, uint8_t* packed,
                   uint8_t* scales, ZeroScale zero = ZeroScale::CompressedTensors,
                   ErrorStats* err = nullptr);
// quantize_f32_ref's bytes, OpenMP over rows: AVX-512 where the CPU has it (error figures as quantize_bf16's,
// within double rounding of the reference's), else the reference's row quantizer (its figures exactly).
void quantize_f32(const float* x, int64_t rows, int64_t cols, float global_scale, uint8_t* packed,
                  uint8_t* scales, ZeroScale zero = ZeroScale::CompressedTensors, ErrorStats* err = nullptr);

// quantize_bf16 on rows a callback writes (row(r, out) fills out[0, cols) with row r), one row at a time
// per thread, so a rewritten matrix need not be held whole. The same bytes and figures as quantize_bf16
// on the matrix of those rows.
void quantize_bf16_rows(const std::function<void(int64_t row, uint16_t* out)>& row, int64_t rows, int64_t cols,
                        float global_scale, uint8_t* packed, uint8_t* scales,
                        ZeroScale zero = ZeroScale::CompressedTensors, ErrorStats* err = nullptr);

// The kernel quantize_bf16 runs on this CPU: "avx512" or "portable" (for benchmarks and logs).
const char* quantize_bf16_kernel();
// quantize_bf16 with the portable kernel, whatever the CPU has: what it falls back to without
// AVX-512; callable directly so that tests check it on every machine.
void quantize_bf16_portable(const uint16_t* x, int64_t rows, int64_t cols, float global_scale,
                            uint8_t* packed, uint8_t* scales,
                            ZeroScale zero = ZeroScale::CompressedTensors, ErrorStats* err = nullptr);

// x' = fp4_value(q) * (s / G), with s / G rounded to float32 as in quantization; into out[rows * cols].
void dequantize(const uint8_t* packed, const uint8_t* scales, int64_t rows, int64_t cols,
                float global_scale, float* out);

}  // namespace fp4c::nvfp4
