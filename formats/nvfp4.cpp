// NVFP4 (NVFP4.md §3): the reference quantizer (the oracle), the tensor statistics, dequantization,
// and the dispatch of the fast quantizer to its AVX-512 kernel (nvfp4_avx512.cpp) or to the portable
// one.
#include "formats/nvfp4.h"

#include <cassert>
#include <cmath>
#include <bit>
#include <limits>
#include <vector>

#include "formats/bf16.h"
#include "formats/fp4.h"
#include "formats/fp8_e4m3.h"

namespace fp4c::nvfp4 {

// Defined in nvfp4_avx512.cpp; the linker checks that these signatures match.
namespace detail {
bool avx512_kernel_available();
void quantize_row_bf16_avx512(const uint16_t* x, int64_t cols, float global_scale, uint8_t* packed,
                              uint8_t* scales, uint8_t zero_scale_code, ErrorStats* row_err);
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

// Adds one row's error figures to the total; max ignores NaN, like the kernels.
void add_row_error(const ErrorStats& row, ErrorStats* total) {
  total->sum_sq_err += row.sum_sq_err;
  total->sum_sq_ref += row.sum_sq_ref;
  if (row.max_abs_err > total->max_abs_err) total->max_abs_err = row.max_abs_err;
  total->count += row.count;
}

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

void quantize_row_bf16_ref(const uint16_t* x, int64_t cols, float G, uint8_t* packed,
                           uint8_t* scales, uint8_t zero_code, ErrorStats* row_err,
                           std::vector<float>& buf) {
  buf.resize(size_t(cols));
  for (int64_t i = 0; i < cols; ++i) buf[size_t(i)] = bf16::to_float(x[i]);
  quantize_row_ref(buf.data(), cols, G, packed, scales, zero_code, row_err);
}

// The kernels assume a finite positive G (the only kind global_scale returns); anything else takes
// the reference's path, so the output bytes are the same for every G.
bool kernel_handles(float G) { return std::isfinite(G) && G > 0.0f; }

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
    if (err) add_row_error(row, err);
  }
}

void quantize_bf16_ref(const uint16_t* x, int64_t rows, int64_t cols, float global_scale,
                       uint8_t* packed, uint8_t* scales, ZeroScale zero, ErrorStats* err) {
  assert(cols % kBlock == 0);
  const uint8_t zc = zero_scale_code(zero);
  std::vector<float> buf;
  for (int64_t r = 0; r < rows; ++r) {
    ErrorStats row;
    quantize_row_bf16_ref(x + r * cols, cols, global_scale, packed + r * cols / 2,
                          scales + r * cols / kBlock, zc, err ? &row : nullptr, buf);
    if (err) add_row_error(row, err);
  }
}

void quantize_bf16(const uint16_t* x, int64_t rows, int64_t cols, float global_scale,
                   uint8_t* packed, uint8_t* scales, ZeroScale zero, ErrorStats* err) {
  assert(cols % kBlock == 0);
  const uint8_t zc = zero_scale_code(zero);
  const bool simd = use_avx512() && kernel_handles(global_scale);
  // Per-row figures, summed in row order afterwards: the totals do not depend on the thread count.
  std::vector<ErrorStats> row_err(err ? size_t(rows) : 0);

#pragma omp parallel if (rows * cols >= kParallelQuantizeMin)
  {
    std::vector<float> buf;
#pragma omp for schedule(static)
    for (int64_t r = 0; r < rows; ++r) {
      ErrorStats* re = err ? &row_err[size_t(r)] : nullptr;
      if (simd) {
        detail::quantize_row_bf16_avx512(x + r * cols, cols, global_scale, packed + r * cols / 2,
                                         scales + r * cols / kBlock, zc, re);
      } else {
        quantize_row_bf16_ref(x + r * cols, cols, global_scale, packed + r * cols / 2,
                              scales + r * cols / kBlock, zc, re, buf);
      }
    }
  }
  if (err) {
    for (const ErrorStats& row : row_err) add_row_error(row, err);
  }
}

const char* quantize_bf16_kernel() { return use_avx512() ? "avx512" : "portable"; }

void dequantize(const uint8_t* packed, const uint8_t* scales, int64_t rows, int64_t cols,
                float global_scale, float* out) {
  assert(cols % kBlock == 0);
#pragma omp parallel for schedule(static) if (rows * cols >= kParallelQuantizeMin)
  for (int64_t r = 0; r < rows; ++r) {
    for (int64_t b = 0; b < cols / kBlock; ++b) {
      const float d = fp8_e4m3::decode(scales[r * cols / kBlock + b]) / global_scale;
      for (int i = 0; i < kBlock; ++i) {
        const int64_t k = r * cols + b * kBlock + i;
        const uint8_t byte = packed[k / 2];
        out[k] = fp4::decode((k % 2) ? uint8_t(byte >> 4) : uint8_t(byte & 0xF)) * d;
      }
    }
  }
}

}  // namespace fp4c::nvfp4
