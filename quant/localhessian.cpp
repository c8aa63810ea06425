// Local-Hessian NVFP4 block scales: see localhessian.h.
#include "quant/localhessian.h"

#include <algorithm>
#include <cmath>
#include <stdexcept>
#include <vector>

#include "formats/fp4.h"
#include "formats/fp8_e4m3.h"
#include "formats/nvfp4_rules.h"

namespace fp4c::quant {

namespace {

using nvfp4::kBlock;

constexpr int64_t kParallelMin = int64_t(1) << 12;

uint8_t zero_scale_code(nvfp4::ZeroScale zero) {
  return zero == nvfp4::ZeroScale::ModelOpt ? uint8_t(0x38) : uint8_t(0x20);  // 1.0 : 0.125
}

float clamp_keep_nan(float v, float lo, float hi) { return v < lo ? lo : (v > hi ? hi : v); }

constexpr float kFp4Value[16] = {0.0f,  0.5f,  1.0f,  1.5f,  2.0f,  3.0f,  4.0f,  6.0f,
                                 -0.0f, -0.5f, -1.0f, -1.5f, -2.0f, -3.0f, -4.0f, -6.0f};

// The candidate search is compiled for AVX-512, AVX2 and the baseline, picked at load time, with no
// fused multiply-adds: every clone does the same roundings, so the bytes do not depend on the CPU.
#if defined(__x86_64__) && defined(__GNUC__) && !defined(__clang__)
#define FP4C_LH_CLONES \
  __attribute__((target_clones("avx512f", "avx2", "default"), optimize("fp-contract=off")))
#else
#define FP4C_LH_CLONES
#endif

// Encodes a non-NaN block with scale code s into q and returns e^T hb e (see localhessian.h).
// hbt is hb transposed (hbt[j * 16 + i] = hb[i * 16 + j]), so that t = hb e is computed lane-wise
// over i, each t_i still summed in ascending j.
inline double encode_block(const float* x, float G, uint8_t s, const double* hbt, uint8_t* q) {
  const float d = fp8_e4m3::decode(s) / G;  // s / G, rounded to float32
  double e[kBlock], t[kBlock];
#pragma omp simd
  for (int i = 0; i < kBlock; ++i) {
    const float y = x[i] / d;  // a true division
    const float ay = std::fabs(y);
    const int m = (ay > 0.25f) + (ay >= 0.75f) + (ay > 1.25f) + (ay >= 1.75f) + (ay > 2.5f) + (ay >= 3.5f) +
                  (ay > 5.0f);
    const int code = m | (std::signbit(y) ? 8 : 0);
    q[i] = uint8_t(code);
    e[i] = double(x[i]) - double(kFp4Value[code] * d);
    t[i] = 0.0;
  }
  for (int j = 0; j < kBlock; ++j) {
    const double ej = e[j];
#pragma omp simd
    for (int i = 0; i < kBlock; ++i) t[i] += hbt[j * kBlock + i] * ej;
  }
  double total = 0.0;
  for (int i = 0; i < kBlock; ++i) total += e[i] * t[i];
  return total;
}

// The search of localhessian.h for a block with a finite positive G and a non-zero, non-NaN amax,
// from the Max code m.
FP4C_LH_CLONES
uint8_t search_block(const float* x, float G, const double* hbt, uint8_t m, bool max_was_zero, uint8_t* q) {
  uint8_t best_s = m;
  double best = encode_block(x, G, m, hbt, q);
  uint8_t trial[kBlock];
  const int lo = max_was_zero ? 1 : std::max(1, int(m) - nvfp4::kSearchBelow);
  const int hi = std::min(0x7E, int(m) + nvfp4::kSearchAbove);
  for (int c = lo; c <= hi; ++c) {
    if (c == m) continue;
    const double e = encode_block(x, G, uint8_t(c), hbt, trial);
    if (e < best) {  // strictly: ties keep the incumbent (the Max code first)
      best = e;
      best_s = uint8_t(c);
      std::copy(trial, trial + kBlock, q);
    }
  }
  return best_s;
}

uint8_t block_with_transposed(const float* x, float G, const double* hbt, uint8_t zero_code, uint8_t* q) {
  float a = 0.0f;
  for (int i = 0; i < kBlock; ++i) {
    const float ax = std::fabs(x[i]);
    if (std::isnan(ax) || ax > a) a = ax;
  }
  uint8_t m = fp8_e4m3::encode(clamp_keep_nan(G * (a / 6.0f), -448.0f, 448.0f));
  const bool max_was_zero = (m & 0x7F) == 0;
  if (max_was_zero) m = zero_code;
  if (std::isnan(a) || !(a > 0.0f) || !std::isfinite(G) || !(G > 0.0f)) {
    // The Max rule's bytes, exactly as nvfp4::quantize_f32_ref writes them (NaN elements code 0).
    const float d = fp8_e4m3::decode(m) / G;
    for (int i = 0; i < kBlock; ++i) q[i] = fp4::encode(clamp_keep_nan(x[i] / d, -6.0f, 6.0f));
    return m;
  }
  return search_block(x, G, hbt, m, max_was_zero, q);
}

void quantize_row(const float* x, int64_t cols, float G, const double* hbts, uint8_t* packed, uint8_t* scales,
                  uint8_t zero_code, nvfp4::ErrorStats* row_err) {
  for (int64_t b = 0; b < cols / kBlock; ++b) {
    const float* xb = x + b * kBlock;
    uint8_t q[kBlock];
    const uint8_t s = block_with_transposed(xb, G, hbts + b * kBlock * kBlock, zero_code, q);
    scales[b] = s;
    for (int i = 0; i < kBlock; i += 2) packed[(b * kBlock + i) / 2] = fp4::pack(q[i], q[i + 1]);
    if (row_err) {  // quantize_f32_ref's figures, in its order
      const float d = fp8_e4m3::decode(s) / G;
      for (int i = 0; i < kBlock; ++i) {
        const float v = xb[i];
        const double e = double(v) - double(fp4::decode(q[i]) * d);
        row_err->sum_sq_err += e * e;
        row_err->sum_sq_ref += double(v) * double(v);
        if (std::fabs(e) > row_err->max_abs_err) row_err->max_abs_err = std::fabs(e);
      }
    }
  }
  if (row_err) row_err->count += cols;
}

}  // namespace

uint8_t localhessian_block(const float* x, float G, const double* hb, uint8_t zero_code, uint8_t* q) {
  double hbt[kBlock * kBlock];
  for (int i = 0; i < kBlock; ++i) {
    for (int j = 0; j < kBlock; ++j) hbt[j * kBlock + i] = hb[i * kBlock + j];
  }
  return block_with_transposed(x, G, hbt, zero_code, q);
}

void quantize_rows_localhessian(const float* w, int64_t rows, int64_t cols, float global_scale, const double* h,
                                uint8_t* packed, uint8_t* scales, nvfp4::ZeroScale zero, nvfp4::ErrorStats* err) {
  if (cols % kBlock != 0) {
    throw std::invalid_argument("quantize_rows_localhessian: cols must be a multiple of 16");
  }
  if (h == nullptr && rows > 0 && cols > 0) {
    throw std::invalid_argument("quantize_rows_localhessian: needs H, the input second-moment matrix");
  }
  const int64_t nb = cols / kBlock;
  // The diagonal 16x16 blocks of H, each transposed, contiguous.
  std::vector<double> hbts(size_t(nb * kBlock * kBlock));
  for (int64_t b = 0; b < nb; ++b) {
    for (int i = 0; i < kBlock; ++i) {
      for (int j = 0; j < kBlock; ++j) {
        hbts[size_t((b * kBlock + j) * kBlock + i)] = h[(b * kBlock + i) * cols + b * kBlock + j];
      }
    }
  }
  const uint8_t zc = zero_scale_code(zero);
  std::vector<nvfp4::ErrorStats> row_err(err ? size_t(rows) : 0);
#pragma omp parallel for schedule(dynamic, 4) if (rows * cols >= kParallelMin)
  for (int64_t r = 0; r < rows; ++r) {
    quantize_row(w + r * cols, cols, global_scale, hbts.data(), packed + r * cols / 2, scales + r * nb, zc,
                 err ? &row_err[size_t(r)] : nullptr);
  }
  if (err) {
    for (const nvfp4::ErrorStats& re : row_err) {
      err->sum_sq_err += re.sum_sq_err;
      err->sum_sq_ref += re.sum_sq_ref;
      if (re.max_abs_err > err->max_abs_err) err->max_abs_err = re.max_abs_err;
      err->count += re.count;
    }
  }
}

}  // namespace fp4c::quant
