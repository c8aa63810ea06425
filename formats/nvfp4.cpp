// NVFP4 (NVFP4.md §3): the reference quantizer (the oracle), the tensor statistics, dequantization,
// and the dispatch of the fast quantizer to its AVX-512 kernel (nvfp4_avx512.cpp) or to the portable
// one.
#include "formats/nvfp4.h"

#include <bit>
#include <cassert>
#include <cmath>
#include <functional>
#include <limits>
#include <omp.h>
#include <vector>

#include "formats/bf16.h"
#include "formats/fp4.h"
#include "formats/fp8_e4m3.h"

namespace fp4c::nvfp4 {

// Defined in nvfp4_avx512.cpp; the linker checks that these signatures match.
namespace detail {
bool avx512_kernel_available();
void quantize_row_f32_avx512(const float* x, int64_t cols, float global_scale, uint8_t* packed, uint8_t* scales,
                             uint8_t zero_scale_code, ErrorStats* row_err);
void quantize_row_bf16_avx512(const uint16_t* x, int64_t cols, float global_scale, uint8_t* packed,
                              uint8_t* scales, uint8_t zero_scale_code, ErrorStats* row_err);
uint32_t amax_f32_bits_avx512(const float* x, int64_t n);
}  // namespace detail

namespace {

// Below these element counts, waking threads costs more than it saves.
constexpr int64_t kParallelAmaxMin = int64_t(1) << 20;
constexpr int64_t kParallelQuantizeMin = int64_t(1) << 14;

uint8_t zero_scale_code(ZeroScale zero) {
  return zero == ZeroScale::ModelOpt ? uint8_t(0x38) : uint8_t(0x20);  // 1.0 : 0.125
}

// std::clamp, but a NaN passes through (std::clamp would be undefined on it).
float clamp_keep_nan(float v, float lo, float hi) { return v < lo ? lo : (v > hi ? hi : v); }


// One row of the reference, straight from NVFP4.md §3. `row_err`, when set, receives this row's
// error figures (accumulated in order, in double).
void quantize_row_ref(const float* x, int64_t cols, float G, uint8_t* packed, uint8_t* scales,
                      uint8_t zero_code, ErrorStats* row_err) {
  for (int64_t b = 0; b < cols / kBlock; ++b) {
    const float* xb = x + b * kBlock;

    // Block amax; a NaN sticks (a NaN block gets a NaN scale, and all its elements code 0).
    float a = 0.0f;
    for (int i = 0; i < kBlock; ++i) {
      const float ax = std::fabs(xb[i]);
      if (std::isnan(ax) || ax > a) a = ax;
    }

    // s = fp8(clamp(G * (a / 6))), in float32, in that order.
    const float s_wanted = clamp_keep_nan(G * (a / 6.0f), -448.0f, 448.0f);
    uint8_t s_code = fp8_e4m3::encode(s_wanted);
    if ((s_code & 0x7F) == 0) s_code = zero_code;
    scales[b] = s_code;
    const float d = fp8_e4m3::decode(s_code) / G;  // s / G, rounded to float32

    for (int i = 0; i < kBlock; i += 2) {
      uint8_t q[2];
      for (int j = 0; j < 2; ++j) {
        const float v = xb[i + j];
        q[j] = fp4::encode(clamp_keep_nan(v / d, -6.0f, 6.0f));  // a true division
        if (row_err) {
          const float vq = fp4::decode(q[j]) * d;
          const double e = double(v) - double(vq);
          row_err->sum_sq_err += e * e;
          row_err->sum_sq_ref += double(v) * double(v);
          if (std::fabs(e) > row_err->max_abs_err) row_err->max_abs_err = std::fabs(e);
        }
      }
      packed[(b * kBlock + i) / 2] = fp4::pack(q[0], q[1]);
    }
  }
  if (row_err) row_err->count += cols;
}

// The portable kernel: the reference's arithmetic without its branches or float copy, so that a
// compiler can vectorise the element loop. Block amax as an integer max of |x| bit patterns (NaN
// patterns sort above Inf: a NaN sticks, as in the reference); the scale by the reference's own
// code; FP4 codes by counting the thresholds of NVFP4.md §1 that |x / d| passes (> and >= alternate
// so that ties go to the even code; NaN passes none and gets no sign).
void quantize_row_bf16_portable(const uint16_t* x, int64_t cols, float G, uint8_t* packed,
                                uint8_t* scales, uint8_t zero_code, ErrorStats* row_err) {
  for (int64_t b = 0; b < cols / kBlock; ++b) {
    const uint16_t* xb = x + b * kBlock;
    uint16_t amax_bits = 0;
    for (int i = 0; i < kBlock; ++i) {
      const uint16_t m = uint16_t(xb[i] & 0x7FFF);
      amax_bits = m > amax_bits ? m : amax_bits;
    }
    const float a = bf16::to_float(amax_bits);
    uint8_t s_code = fp8_e4m3::encode(clamp_keep_nan(G * (a / 6.0f), -448.0f, 448.0f));
    if ((s_code & 0x7F) == 0) s_code = zero_code;
    scales[b] = s_code;
    const float d = fp8_e4m3::decode(s_code) / G;

    float xf[kBlock];
    uint8_t q[kBlock];
    for (int i = 0; i < kBlock; ++i) {
      xf[i] = bf16::to_float(xb[i]);
      const float y = xf[i] / d;
      const float ay = std::fabs(y);
      const int m = (ay > 0.25f) + (ay >= 0.75f) + (ay > 1.25f) + (ay >= 1.75f) + (ay > 2.5f) +
                    (ay >= 3.5f) + (ay > 5.0f);
      q[i] = uint8_t(m | ((std::signbit(y) && !std::isnan(y)) ? 8 : 0));
    }
    for (int i = 0; i < kBlock; i += 2) packed[(b * kBlock + i) / 2] = fp4::pack(q[i], q[i + 1]);
    if (row_err) {  // the reference's sums, in its order
      static constexpr float kFp4Value[16] = {0.0f,  0.5f,  1.0f,  1.5f,  2.0f,  3.0f,  4.0f,  6.0f,
                                              -0.0f, -0.5f, -1.0f, -1.5f, -2.0f, -3.0f, -4.0f, -6.0f};
      double sq_err = row_err->sum_sq_err, sq_ref = row_err->sum_sq_ref, max = row_err->max_abs_err;
      for (int i = 0; i < kBlock; ++i) {
        const double e = double(xf[i]) - double(kFp4Value[q[i]] * d);
        sq_err += e * e;
        sq_ref += double(xf[i]) * double(xf[i]);
        max = std::fabs(e) > max ? std::fabs(e) : max;
      }
      row_err->sum_sq_err = sq_err;
      row_err->sum_sq_ref = sq_ref;
      row_err->max_abs_err = max;
    }
  }
  if (row_err) row_err->count += cols;
}

using RowKernel = void (*)(const uint16_t* x, int64_t cols, float G, uint8_t* packed,
                           uint8_t* scales, uint8_t zero_code, ErrorStats* row_err);

// OpenMP over rows; `row(r, scratch)` gives row r (its own pointer, or `scratch` after filling it). Per-row
// error figures are summed in row order afterwards, so the totals do not depend on the thread count.
template <typename RowSource>
void quantize_rows(RowKernel kernel, const RowSource& row, int64_t rows, int64_t cols, float G, uint8_t* packed,
                   uint8_t* scales, ZeroScale zero, ErrorStats* err) {
  assert(cols % kBlock == 0);
  const uint8_t zc = zero_scale_code(zero);
  std::vector<ErrorStats> row_err(err ? size_t(rows) : 0);
#pragma omp parallel if (rows * cols >= kParallelQuantizeMin)
  {
    std::vector<uint16_t> scratch;
#pragma omp for schedule(static)
    for (int64_t r = 0; r < rows; ++r) {
      kernel(row(r, scratch), cols, G, packed + r * cols / 2, scales + r * cols / kBlock, zc,
             err ? &row_err[size_t(r)] : nullptr);
    }
  }
  if (err) {
    for (const ErrorStats& row_e : row_err) err->merge(row_e);
  }
}

void quantize_rows(RowKernel kernel, const uint16_t* x, int64_t rows, int64_t cols, float G, uint8_t* packed,
                   uint8_t* scales, ZeroScale zero, ErrorStats* err) {
  quantize_rows(kernel, [&](int64_t r, std::vector<uint16_t>&) { return x + r * cols; }, rows, cols, G, packed,
                scales, zero, err);
}

// The AVX-512 kernel assumes a finite positive G (the only kind global_scale returns); the portable
// one follows the reference for every G.
bool avx512_handles(float G) { return std::isfinite(G) && G > 0.0f; }

bool use_avx512() {
  static const bool available = detail::avx512_kernel_available();
  return available;
}

}  // namespace

float global_scale(float amax) {
  if (!(amax > 0.0f) || !std::isfinite(amax)) return 1.0f;
  const float g = 448.0f * 6.0f / amax;
  // An amax below about 7.9e-36 overflows the quotient; the largest float keeps the scales finite.
  return std::isfinite(g) ? g : std::numeric_limits<float>::max();
}

float amax_bf16(std::span<const uint16_t> x) {
  // |x| as bits: magnitudes order like their bit patterns, and NaN patterns sort above Inf, so an
  // integer max is a NaN-propagating max. 15-bit values fit int16_t (SSE2 has a signed 16-bit max).
  const uint16_t* p = x.data();
  const int64_t n = int64_t(x.size());
  int16_t m = 0;
#pragma omp parallel for simd reduction(max : m) schedule(static) if (parallel : n >= kParallelAmaxMin)
  for (int64_t i = 0; i < n; ++i) {
    const int16_t v = int16_t(p[i] & 0x7FFF);
    m = v > m ? v : m;
  }
  return bf16::to_float(uint16_t(m));
}

float amax_f32(std::span<const float> x) {
  const float* p = x.data();
  const int64_t n = int64_t(x.size());
  if (use_avx512()) {  // a max is exact in any order: each thread takes a contiguous range
    uint32_t m = 0;
#pragma omp parallel reduction(max : m) if (n >= kParallelAmaxMin)
    {
      const int64_t parts = omp_get_num_threads(), part = omp_get_thread_num();
      const int64_t begin = n * part / parts, end = n * (part + 1) / parts;
      m = detail::amax_f32_bits_avx512(p + begin, end - begin);
    }
    return std::bit_cast<float>(m);
  }
  int32_t m = 0;
#pragma omp parallel for simd reduction(max : m) schedule(static) if (parallel : n >= kParallelAmaxMin)
  for (int64_t i = 0; i < n; ++i) {
    const int32_t v = int32_t(std::bit_cast<uint32_t>(p[i]) & 0x7FFFFFFFu);
    m = v > m ? v : m;
  }
  return std::bit_cast<float>(uint32_t(m));
}

int64_t count_nonfinite_bf16(std::span<const uint16_t> x) {
  const uint16_t* p = x.data();
  const int64_t n = int64_t(x.size());
  int64_t count = 0;
#pragma omp parallel for simd reduction(+ : count) schedule(static) if (parallel : n >= kParallelAmaxMin)
  for (int64_t i = 0; i < n; ++i) count += (p[i] & 0x7F80) == 0x7F80;  // exponent all ones
  return count;
}

int64_t count_nonfinite_f32(std::span<const float> x) {
  const float* p = x.data();
  const int64_t n = int64_t(x.size());
  int64_t count = 0;
#pragma omp parallel for simd reduction(+ : count) schedule(static) if (parallel : n >= kParallelAmaxMin)
  for (int64_t i = 0; i < n; ++i)  // exponent all ones
    count += (std::bit_cast<uint32_t>(p[i]) & 0x7F800000u) == 0x7F800000u;
  return count;
}

double ErrorStats::sqnr_db() const {
  if (sum_sq_err == 0.0) return std::numeric_limits<double>::infinity();
  return 10.0 * std::log10(sum_sq_ref / sum_sq_err);
}

void quantize_f32_ref(const float* x, int64_t rows, int64_t cols, float global_scale,
                      uint8_t* packed, uint8_t* scales, ZeroScale zero, ErrorStats* err) {
  assert(cols % kBlock == 0);
  const uint8_t zc = zero_scale_code(zero);
  for (int64_t r = 0; r < rows; ++r) {
    ErrorStats row;
    quantize_row_ref(x + r * cols, cols, global_scale, packed + r * cols / 2,
                     scales + r * cols / kBlock, zc, err ? &row : nullptr);
    if (err) err->merge(row);
  }
}

void quantize_bf16_ref(const uint16_t* x, int64_t rows, int64_t cols, float global_scale,
                       uint8_t* packed, uint8_t* scales, ZeroScale zero, ErrorStats* err) {
  assert(cols % kBlock == 0);
  const uint8_t zc = zero_scale_code(zero);
  std::vector<float> row_f32(static_cast<size_t>(cols));
  for (int64_t r = 0; r < rows; ++r) {
    for (int64_t k = 0; k < cols; ++k) row_f32[size_t(k)] = bf16::to_float(x[r * cols + k]);
    ErrorStats row;
    quantize_row_ref(row_f32.data(), cols, global_scale, packed + r * cols / 2,
                     scales + r * cols / kBlock, zc, err ? &row : nullptr);
    if (err) err->merge(row);
  }
}

void quantize_bf16(const uint16_t* x, int64_t rows, int64_t cols, float global_scale,
                   uint8_t* packed, uint8_t* scales, ZeroScale zero, ErrorStats* err) {
  const RowKernel kernel = use_avx512() && avx512_handles(global_scale)
                               ? detail::quantize_row_bf16_avx512
                               : quantize_row_bf16_portable;
  quantize_rows(kernel, x, rows, cols, global_scale, packed, scales, zero, err);
}

void quantize_bf16_rows(const std::function<void(int64_t row, uint16_t* out)>& row, int64_t rows, int64_t cols,
                        float global_scale, uint8_t* packed, uint8_t* scales, ZeroScale zero, ErrorStats* err) {
  const RowKernel kernel = use_avx512() && avx512_handles(global_scale) ? detail::quantize_row_bf16_avx512
                                                                         : quantize_row_bf16_portable;
  quantize_rows(
      kernel,
      [&](int64_t r, std::vector<uint16_t>& scratch) -> const uint16_t* {
        scratch.resize(size_t(cols));
        row(r, scratch.data());
        return scratch.data();
      },
      rows, cols, global_scale, packed, scales, zero, err);
}

void quantize_bf16_portable(const uint16_t* x, int64_t rows, int64_t cols, float global_scale,
                            uint8_t* packed, uint8_t* scales, ZeroScale zero, ErrorStats* err) {
  quantize_rows(quantize_row_bf16_portable, x, rows, cols, global_scale, packed, scales, zero, err);
}

void quantize_f32(const float* x, int64_t rows, int64_t cols, float global_scale, uint8_t* packed,
                  uint8_t* scales, ZeroScale zero, ErrorStats* err) {
  assert(cols % kBlock == 0);
  const uint8_t zc = zero_scale_code(zero);
  const bool avx512 = use_avx512() && avx512_handles(global_scale);
  std::vector<ErrorStats> row_err(err ? size_t(rows) : 0);
#pragma omp parallel for schedule(static) if (rows * cols >= kParallelQuantizeMin)
  for (int64_t r = 0; r < rows; ++r) {
    ErrorStats* e = err ? &row_err[size_t(r)] : nullptr;
    if (avx512)
      detail::quantize_row_f32_avx512(x + r * cols, cols, global_scale, packed + r * cols / 2,
                                      scales + r * cols / kBlock, zc, e);
    else
      quantize_row_ref(x + r * cols, cols, global_scale, packed + r * cols / 2, scales + r * cols / kBlock, zc, e);
  }
  if (err)
    for (const ErrorStats& row_e : row_err) err->merge(row_e);
}

const char* quantize_bf16_kernel() { return use_avx512() ? "avx512" : "portable"; }

void dequantize(const uint8_t* packed, const uint8_t* scales, int64_t rows, int64_t cols,
                float global_scale, float* out) {
  assert(cols % kBlock == 0);
  // fp4::decode of every code, looked up (the same products, bit for bit).
  float value[16];
  for (int c = 0; c < 16; ++c) value[c] = fp4::decode(uint8_t(c));
#pragma omp parallel for schedule(static) if (rows * cols >= kParallelQuantizeMin)
  for (int64_t r = 0; r < rows; ++r) {
    for (int64_t b = 0; b < cols / kBlock; ++b) {
      const float d = fp8_e4m3::decode(scales[r * cols / kBlock + b]) / global_scale;
      const uint8_t* in = packed + (r * cols + b * kBlock) / 2;
      float* o = out + r * cols + b * kBlock;
      for (int i = 0; i < kBlock / 2; ++i) {
        o[2 * i] = value[in[i] & 0xF] * d;
        o[2 * i + 1] = value[in[i] >> 4] * d;
      }
    }
  }
}

}  // namespace fp4c::nvfp4
