// GPTQ on the NVFP4 grid: see gptq.h for the algorithm and the choices made.
#include "quant/gptq.h"

#include <algorithm>
#include <cmath>
#include <cstring>
#include <list>
#include <memory>
#include <mutex>
#include <numeric>
#include <span>
#include <string>
#include <vector>

#include "formats/fp4.h"
#include "formats/fp8_e4m3.h"
#include "formats/hash.h"
#include "quant/localhessian.h"

namespace fp4c::quant {

namespace {

using nvfp4::kBlock;

// The hot loops are compiled for AVX-512, AVX2 and the baseline, picked at load time. Contraction
// into fused multiply-adds is off, so every clone does the same roundings (a multiply, then a
// subtract): the bytes do not depend on the CPU, and equal a plain loop's.
#if defined(__x86_64__) && defined(__GNUC__) && !defined(__clang__)
#define FP4C_GPTQ_CLONES \
  __attribute__((target_clones("avx512f", "avx2", "default"), optimize("fp-contract=off")))
#else
#define FP4C_GPTQ_CLONES
#endif

// The factorization of an H smaller than this runs on one thread: at n = 896 it takes about 25 ms,
// less than what dozens of fork/join points cost on a loaded machine.
constexpr int64_t kParallelFactorMin = 2048;

#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wpsabi"  // vectors by value between inlined helpers of this file only

// Eight doubles: GCC vector extensions, so that the register-blocked kernels keep their accumulators
// in registers (one zmm each with AVX-512); lane-wise IEEE arithmetic, nothing fused.
typedef double V8D __attribute__((vector_size(64)));
inline V8D load8d(const double* p) {
  V8D v;
  std::memcpy(&v, p, sizeof v);
  return v;
}
inline void store8d(double* p, V8D v) { std::memcpy(p, &v, sizeof v); }

uint8_t zero_scale_code(nvfp4::ZeroScale zero) {
  return zero == nvfp4::ZeroScale::ModelOpt ? uint8_t(0x38) : uint8_t(0x20);  // 1.0 : 0.125
}

float clamp_keep_nan(float v, float lo, float hi) { return v < lo ? lo : (v > hi ? hi : v); }

// A group's FP8 scale code from its current weights x[0..16): local-Hessian when `group_hessian` is given, else
// the max rule (NVFP4.md §3), an all-zero group taking `zero_code`.
uint8_t group_scale_code(const float* x, float G, const double* group_hessian, uint8_t zero_code) {
  if (group_hessian) {
    uint8_t q[kBlock];
    return localhessian_block(x, G, group_hessian, zero_code, q);
  }
  float a = 0.0f;
  for (int t = 0; t < kBlock; ++t) {
    const float ax = std::fabs(x[t]);
    if (std::isnan(ax) || ax > a) a = ax;
  }
  uint8_t s = fp8_e4m3::encode(clamp_keep_nan(G * (a / 6.0f), -448.0f, 448.0f));
  if ((s & 0x7F) == 0) s = zero_code;
  return s;
}

// H[a][b] of a symmetric H, read from its upper triangle (diagonal included).
inline double h_sym(const double* h, int64_t n, int64_t a, int64_t b) {
  return a <= b ? h[a * n + b] : h[b * n + a];
}

// A dead input channel (H_jj == 0) counts as H_jj = 1.
inline double diag_fixed(const double* h, int64_t n, int64_t j) {
  const double d = h[j * n + j];
  return d == 0.0 ? 1.0 : d;
}

// Cholesky's trailing update for rows [i0, i1): a[i][j] -= sum_k a[i][k0 + k] pt[k][j], k in [0, nb),
// j in [k1, i1) (columns up to the tile's last row: rows above it also update a few upper-triangle
// scratch entries, which keeps the loop rectangular), k ascending for every element. Four rows by
// sixteen columns in registers; the remaining columns (and shorter tiles) one row at a time.
FP4C_GPTQ_CLONES
void trailing_update(double* a, int64_t n, const double* pt, int64_t k0, int64_t nb, int64_t k1,
                     int64_t i0, int64_t i1) {
  int64_t j0 = k1;
  if (i1 - i0 == 4) {
    const double* p0 = a + i0 * n + k0;
    const double* p1 = p0 + n;
    const double* p2 = p1 + n;
    const double* p3 = p2 + n;
    for (; j0 + 16 <= i1; j0 += 16) {
      double* r0 = a + i0 * n + j0;
      V8D a00 = load8d(r0), a01 = load8d(r0 + 8), a10 = load8d(r0 + n), a11 = load8d(r0 + n + 8),
          a20 = load8d(r0 + 2 * n), a21 = load8d(r0 + 2 * n + 8), a30 = load8d(r0 + 3 * n),
          a31 = load8d(r0 + 3 * n + 8);
      const double* ptk = pt + j0;
      for (int64_t k = 0; k < nb; ++k, ptk += n) {
        const V8D v0 = load8d(ptk), v1 = load8d(ptk + 8);
        a00 -= p0[k] * v0;
        a01 -= p0[k] * v1;
        a10 -= p1[k] * v0;
        a11 -= p1[k] * v1;
        a20 -= p2[k] * v0;
        a21 -= p2[k] * v1;
        a30 -= p3[k] * v0;
        a31 -= p3[k] * v1;
      }
      store8d(r0, a00);
      store8d(r0 + 8, a01);
      store8d(r0 + n, a10);
      store8d(r0 + n + 8, a11);
      store8d(r0 + 2 * n, a20);
      store8d(r0 + 2 * n + 8, a21);
      store8d(r0 + 3 * n, a30);
      store8d(r0 + 3 * n + 8, a31);
    }
  }
  for (int64_t i = i0; i < i1; ++i) {
    double* ai = a + i * n;
    for (int64_t k = 0; k < nb; ++k) {
      const double p = ai[k0 + k];
      const double* ptk = pt + k * n;
#pragma omp simd
      for (int64_t j = j0; j < i1; ++j) ai[j] -= p * ptk[j];
    }
  }
}

// In-place lower Cholesky of the row-major [n, n] matrix a (lower triangle read; on success its
// lower triangle holds L, the upper triangle is scratch). Right-looking, panels of kPanel columns,
// the trailing update vectorised along rows; each element receives its updates in a fixed order, so
// the result does not depend on the thread count. Returns the failing pivot, or -1.
int64_t cholesky_lower(double* a, int64_t n) {
  constexpr int64_t kPanel = 64;
  std::vector<double> pt;  // the panel transposed: pt[k * n + j] = a[j][k0 + k]
  for (int64_t k0 = 0; k0 < n; k0 += kPanel) {
    const int64_t k1 = std::min(k0 + kPanel, n), nb = k1 - k0;
    // 1. the diagonal block.
    for (int64_t j = k0; j < k1; ++j) {
      double d = a[j * n + j];
      for (int64_t k = k0; k < j; ++k) d -= a[j * n + k] * a[j * n + k];
      if (!(d > 0.0) || !std::isfinite(d)) return j;
      const double ljj = std::sqrt(d);
      a[j * n + j] = ljj;
      for (int64_t i = j + 1; i < k1; ++i) {
        double s = a[i * n + j];
        for (int64_t k = k0; k < j; ++k) s -= a[i * n + k] * a[j * n + k];
        a[i * n + j] = s / ljj;
      }
    }
    if (k1 == n) break;
    // 2. the panel below it: a[i][k0:k1] <- a[i][k0:k1] L11^-T.
#pragma omp parallel for schedule(static) if (n >= kParallelFactorMin)
    for (int64_t i = k1; i < n; ++i) {
      for (int64_t j = k0; j < k1; ++j) {
        double s = a[i * n + j];
        for (int64_t k = k0; k < j; ++k) s -= a[i * n + k] * a[j * n + k];
        a[i * n + j] = s / a[j * n + j];
      }
    }
    // 3. the trailing matrix: a[i][j] -= sum_k a[i][k] a[j][k], k in [k0, k1), j in [k1, i].
    pt.assign(size_t(nb * n), 0.0);
    for (int64_t j = k1; j < n; ++j) {
      for (int64_t k = 0; k < nb; ++k) pt[size_t(k * n + j)] = a[j * n + k0 + k];
    }
    constexpr int64_t kRows = 4;
    const int64_t tiles = (n - k1 + kRows - 1) / kRows;
#pragma omp parallel for schedule(dynamic, 1) if (n >= kParallelFactorMin && (n - k1) >= 256)
    for (int64_t t = 0; t < tiles; ++t) {
      const int64_t i0 = k1 + t * kRows;
      trailing_update(a, n, pt.data(), k0, nb, k1, i0, std::min(i0 + kRows, n));
    }
  }
  return -1;
}

constexpr int64_t kInvCols = 16;

// Columns [c0, c0 + w) of M = L^-1 (w <= 16), rows c0..n-1, into mc[(i - c0) * 16 + (j - c0)] (zeroed
// by the caller): M[i][j] = (delta_ij - sum_{k<i} L[i][k] M[k][j]) / L[i][i], k ascending. Four rows
// at a time: their sums over k below the first of them together (each M row loaded once for four),
// then the small triangle among them in order.
FP4C_GPTQ_CLONES
void invert_chunk(const double* l, int64_t n, int64_t c0, int64_t w, double* mc) {
  auto delta = [c0](int64_t i, int half) {
    V8D v = {0, 0, 0, 0, 0, 0, 0, 0};
    const int64_t j = i - c0 - 8 * half;
    if (j >= 0 && j < 8) v[j] = 1.0;
    return v;
  };
  int64_t i = c0;
  for (; i + 4 <= n; i += 4) {
    const double* l0 = l + i * n;
    const double* l1 = l0 + n;
    const double* l2 = l1 + n;
    const double* l3 = l2 + n;
    V8D a00 = delta(i, 0), a01 = delta(i, 1), a10 = delta(i + 1, 0), a11 = delta(i + 1, 1),
        a20 = delta(i + 2, 0), a21 = delta(i + 2, 1), a30 = delta(i + 3, 0), a31 = delta(i + 3, 1);
    const double* mk = mc;
    for (int64_t k = c0; k < i; ++k, mk += kInvCols) {
      const V8D v0 = load8d(mk), v1 = load8d(mk + 8);
      a00 -= l0[k] * v0;
      a01 -= l0[k] * v1;
      a10 -= l1[k] * v0;
      a11 -= l1[k] * v1;
      a20 -= l2[k] * v0;
      a21 -= l2[k] * v1;
      a30 -= l3[k] * v0;
      a31 -= l3[k] * v1;
    }
    const V8D m00 = a00 / l0[i], m01 = a01 / l0[i];
    a10 -= l1[i] * m00;
    a11 -= l1[i] * m01;
    const V8D m10 = a10 / l1[i + 1], m11 = a11 / l1[i + 1];
    a20 -= l2[i] * m00;
    a21 -= l2[i] * m01;
    a20 -= l2[i + 1] * m10;
    a21 -= l2[i + 1] * m11;
    const V8D m20 = a20 / l2[i + 2], m21 = a21 / l2[i + 2];
    a30 -= l3[i] * m00;
    a31 -= l3[i] * m01;
    a30 -= l3[i + 1] * m10;
    a31 -= l3[i + 1] * m11;
    a30 -= l3[i + 2] * m20;
    a31 -= l3[i + 2] * m21;
    const V8D m30 = a30 / l3[i + 3], m31 = a31 / l3[i + 3];
    double* mi = mc + (i - c0) * kInvCols;
    store8d(mi, m00);
    store8d(mi + 8, m01);
    store8d(mi + 16, m10);
    store8d(mi + 24, m11);
    store8d(mi + 32, m20);
    store8d(mi + 40, m21);
    store8d(mi + 48, m30);
    store8d(mi + 56, m31);
  }
  for (; i < n; ++i) {
    double acc[kInvCols];
    for (int64_t j = 0; j < kInvCols; ++j) acc[j] = (i - c0 == j) ? 1.0 : 0.0;
    const double* li = l + i * n;
    for (int64_t k = c0; k < i; ++k) {
      const double lik = li[k];
      const double* mk = mc + (k - c0) * kInvCols;
#pragma omp simd
      for (int64_t j = 0; j < kInvCols; ++j) acc[j] -= lik * mk[j];
    }
    double* mi = mc + (i - c0) * kInvCols;
    for (int64_t j = 0; j < kInvCols; ++j) mi[j] = acc[j] / li[i];
  }
  // Above the diagonal M is zero (the sums there are of exact zeros; this also clears their signs).
  for (int64_t r = c0; r < std::min(n, c0 + w); ++r) {
    for (int64_t j = r - c0 + 1; j < kInvCols; ++j) mc[(r - c0) * kInvCols + j] = 0.0;
  }
}

// M = L^-1 for lower triangular L (row-major [n, n], lower triangle read); M lower, zeros above.
// Columns of M are independent: OpenMP over chunks of columns, each element's sum in a fixed order.
std::vector<double> invert_lower(const double* l, int64_t n) {
  std::vector<double> m(size_t(n * n), 0.0);
  const int64_t chunks = (n + kInvCols - 1) / kInvCols;
#pragma omp parallel for schedule(dynamic, 1) if (n >= kParallelFactorMin)
  for (int64_t c = 0; c < chunks; ++c) {
    const int64_t c0 = c * kInvCols, w = std::min(c0 + kInvCols, n) - c0;
    std::vector<double> mc(size_t((n - c0) * kInvCols), 0.0);
    invert_chunk(l, n, c0, w, mc.data());
    for (int64_t i = c0; i < n; ++i) {
      for (int64_t j = 0; j < w; ++j) m[size_t(i * n + c0 + j)] = mc[size_t((i - c0) * kInvCols + j)];
    }
  }
  return m;
}

// fp4::encode(clamp(y, -6, 6)) for a non-NaN y, inline and branch-free: the thresholds of NVFP4.md
// §1 that |y| passes (> and >= alternate so that ties go to the even code), and the sign.
inline uint8_t fp4_code(float y) {
  const float ay = std::fabs(y);
  const int m = (ay > 0.25f) + (ay >= 0.75f) + (ay > 1.25f) + (ay >= 1.75f) + (ay > 2.5f) + (ay >= 3.5f) +
                (ay > 5.0f);
  return uint8_t(m | (std::signbit(y) ? 8 : 0));
}
// fp4::decode.
constexpr float kFp4Value[16] = {0.0f,  0.5f,  1.0f,  1.5f,  2.0f,  3.0f,  4.0f,  6.0f,
                                 -0.0f, -0.5f, -1.0f, -1.5f, -2.0f, -3.0f, -4.0f, -6.0f};

// Sixteen floats: GCC vector extensions, so that the register-blocked kernel below keeps its
// accumulators in registers (one zmm each with AVX-512); lane-wise IEEE arithmetic, nothing fused.
typedef float V16 __attribute__((vector_size(64)));

inline V16 load16(const float* p) {
  V16 v;
  std::memcpy(&v, p, sizeof v);
  return v;
}
inline void store16(float* p, V16 v) { std::memcpy(p, &v, sizeof v); }

// Lazy-batch GEMM update of a tile of rows: w[r][k] -= sum_i e[r][i] * u[i0 + i][k] for k in
// [k_begin, k_end) (a multiple of 16 wide), i in [0, ni), each element's subtractions in ascending i
// (the order of the plain unblocked loop). e[r][i] is e[r * e_stride + i]. Eight rows by sixteen
// columns in registers.
FP4C_GPTQ_CLONES
void lazy_update(float* w, int64_t rows, int64_t cols, const float* e, int64_t e_stride, const float* u,
                 int64_t i0, int64_t ni, int64_t k_begin, int64_t k_end) {
  constexpr int kR = 8;
  int64_t r = 0;
  for (; r + kR <= rows; r += kR) {
    float* wr = w + r * cols;
    const float* er = e + r * e_stride;
    for (int64_t k = k_begin; k < k_end; k += 16) {
      V16 a0 = load16(wr + k), a1 = load16(wr + cols + k), a2 = load16(wr + 2 * cols + k),
          a3 = load16(wr + 3 * cols + k), a4 = load16(wr + 4 * cols + k), a5 = load16(wr + 5 * cols + k),
          a6 = load16(wr + 6 * cols + k), a7 = load16(wr + 7 * cols + k);
      const float* ui = u + i0 * cols + k;
      for (int64_t i = 0; i < ni; ++i, ui += cols) {
        const V16 v = load16(ui);
        a0 -= er[i] * v;
        a1 -= er[e_stride + i] * v;
        a2 -= er[2 * e_stride + i] * v;
        a3 -= er[3 * e_stride + i] * v;
        a4 -= er[4 * e_stride + i] * v;
        a5 -= er[5 * e_stride + i] * v;
        a6 -= er[6 * e_stride + i] * v;
        a7 -= er[7 * e_stride + i] * v;
      }
      store16(wr + k, a0);
      store16(wr + cols + k, a1);
      store16(wr + 2 * cols + k, a2);
      store16(wr + 3 * cols + k, a3);
      store16(wr + 4 * cols + k, a4);
      store16(wr + 5 * cols + k, a5);
      store16(wr + 6 * cols + k, a6);
      store16(wr + 7 * cols + k, a7);
    }
  }
  for (; r < rows; ++r) {
    float* wr = w + r * cols;
    for (int64_t k = k_begin; k < k_end; k += 16) {
      V16 a = load16(wr + k);
      const float* ui = u + i0 * cols + k;
      for (int64_t i = 0; i < ni; ++i, ui += cols) a -= e[r * e_stride + i] * load16(ui);
      store16(wr + k, a);
    }
  }
}

// Step 5 of gptq.h for one tile of `rows` rows (w, codes: stride cols; scale_codes: stride cols/16).
// The scale of the group of 16 columns at g0 in each of a tile's rows, from its current weights (its code into
// scale_codes, its decoded step into d[r]); quantize_tile and quantize_tile_asym share it.
inline void tile_group_scales(const float* w, int64_t rows, int64_t cols, int64_t g0, float G, uint8_t zero_code,
                              const double* group_hessians, uint8_t* scale_codes, std::vector<float>& d) {
  const int64_t groups = cols / kBlock;
  const double* h = group_hessians ? group_hessians + (g0 / kBlock) * kBlock * kBlock : nullptr;
  for (int64_t r = 0; r < rows; ++r) {
    const uint8_t s = group_scale_code(w + r * cols + g0, G, h, zero_code);
    scale_codes[r * groups + g0 / kBlock] = s;
    d[size_t(r)] = fp8_e4m3::decode(s) / G;
  }
}

// Two levels of lazy batches: inside a group of 16 columns the updates are eager; after each group,
// the rest of the `block`-wide batch is updated with that group's errors; after each batch, every
// column beyond it with the batch's errors. Every element still receives its subtractions in column
// order.
FP4C_GPTQ_CLONES
void quantize_tile(float* w, int64_t rows, int64_t cols, const float* u, float G, int64_t block,
                   uint8_t zero_code, const double* group_hessians, uint8_t* codes, uint8_t* scale_codes,
                   std::vector<float>& e, std::vector<float>& d) {
  e.resize(size_t(rows * block));
  d.resize(size_t(rows));
  for (int64_t b0 = 0; b0 < cols; b0 += block) {
    const int64_t b1 = std::min(b0 + block, cols), nb = b1 - b0;
    for (int64_t g0 = b0; g0 < b1; g0 += kBlock) {
      const int64_t g1 = g0 + kBlock;
      tile_group_scales(w, rows, cols, g0, G, zero_code, group_hessians, scale_codes, d);
      for (int64_t i = g0; i < g1; ++i) {
        const float* ui = u + i * cols;
        const float uii = ui[i];
        for (int64_t r = 0; r < rows; ++r) {
          float* wr = w + r * cols;
          const float x = wr[i], dr = d[size_t(r)];
          const uint8_t q = fp4_code(x / dr);
          codes[r * cols + i] = q;
          const float er = (x - kFp4Value[q] * dr) / uii;
          e[size_t(r * block + (i - b0))] = er;
          for (int64_t k = i + 1; k < g1; ++k) wr[k] -= er * ui[k];
        }
      }
      if (g1 < b1) lazy_update(w, rows, cols, e.data() + (g0 - b0), block, u, g0, kBlock, g1, b1);
    }
    if (b1 < cols) lazy_update(w, rows, cols, e.data(), block, u, b0, nb, b1, cols);
  }
}

// GPTAQ's lazy-batch update of a tile of rows: w[r][k] -= e[r][i] * u[i0 + i][k] - x[r][i] * p[i0 + i][k] for k
// in [k_begin, k_end) (a multiple of 16 wide), i in [0, ni), each element's subtractions in ascending i (the
// order of the unbatched per-row loop, and its roundings: a multiply, a multiply, their difference, the
// subtraction). e and x: stride e_stride. Eight rows by sixteen columns in registers.
FP4C_GPTQ_CLONES
void lazy_update_asym(float* w, int64_t rows, int64_t cols, const float* e, const float* x, int64_t e_stride,
                      const float* u, const float* p, int64_t i0, int64_t ni, int64_t k_begin, int64_t k_end) {
  constexpr int kR = 8;
  int64_t r = 0;
  for (; r + kR <= rows; r += kR) {
    float* wr = w + r * cols;
    const float* er = e + r * e_stride;
    const float* xr = x + r * e_stride;
    for (int64_t k = k_begin; k < k_end; k += 16) {
      V16 a[kR];
      for (int j = 0; j < kR; ++j) a[j] = load16(wr + j * cols + k);
      const float* ui = u + i0 * cols + k;
      const float* pi = p + i0 * cols + k;
      for (int64_t i = 0; i < ni; ++i, ui += cols, pi += cols) {
        const V16 vu = load16(ui), vp = load16(pi);
        for (int j = 0; j < kR; ++j) a[j] -= er[j * e_stride + i] * vu - xr[j * e_stride + i] * vp;
      }
      for (int j = 0; j < kR; ++j) store16(wr + j * cols + k, a[j]);
    }
  }
  for (; r < rows; ++r) {
    float* wr = w + r * cols;
    for (int64_t k = k_begin; k < k_end; k += 16) {
      V16 a = load16(wr + k);
      const float* ui = u + i0 * cols + k;
      const float* pi = p + i0 * cols + k;
      for (int64_t i = 0; i < ni; ++i, ui += cols, pi += cols)
        a -= e[r * e_stride + i] * load16(ui) - x[r * e_stride + i] * load16(pi);
      store16(wr + k, a);
    }
  }
}

// GPTAQ's column loop (quantize_row_asym's arithmetic) for a tile of `rows` rows, batched as quantize_tile
// batches GPTQ's: inside a group of 16 columns the updates are eager, after each group the rest of the
// `block`-wide batch is updated with that group's errors and values, after each batch every column beyond
// it; every element still receives its subtractions in column order, so the bytes are the unbatched loop's.
FP4C_GPTQ_CLONES
void quantize_tile_asym(float* w, int64_t rows, int64_t cols, const float* u, const float* p, float G, int64_t block,
                        uint8_t zero_code, const double* group_hessians, uint8_t* codes, uint8_t* scale_codes,
                        std::vector<float>& e, std::vector<float>& xs, std::vector<float>& d) {
  e.resize(size_t(rows * block));
  xs.resize(size_t(rows * block));
  d.resize(size_t(rows));
  for (int64_t b0 = 0; b0 < cols; b0 += block) {
    const int64_t b1 = std::min(b0 + block, cols), nb = b1 - b0;
    for (int64_t g0 = b0; g0 < b1; g0 += kBlock) {
      const int64_t g1 = g0 + kBlock;
      tile_group_scales(w, rows, cols, g0, G, zero_code, group_hessians, scale_codes, d);
      for (int64_t i = g0; i < g1; ++i) {
        const float* ui = u + i * cols;
        const float* pi = p + i * cols;
        const float uii = ui[i];
        for (int64_t r = 0; r < rows; ++r) {
          float* wr = w + r * cols;
          const float x = wr[i], dr = d[size_t(r)];
          const uint8_t q = fp4_code(x / dr);
          codes[r * cols + i] = q;
          const float er = (x - kFp4Value[q] * dr) / uii;
          e[size_t(r * block + (i - b0))] = er;
          xs[size_t(r * block + (i - b0))] = x;
          for (int64_t k = i + 1; k < g1; ++k) wr[k] -= er * ui[k] - x * pi[k];
        }
      }
      if (g1 < b1)
        lazy_update_asym(w, rows, cols, e.data() + (g0 - b0), xs.data() + (g0 - b0), block, u, p, g0, kBlock, g1, b1);
    }
    if (b1 < cols) lazy_update_asym(w, rows, cols, e.data(), xs.data(), block, u, p, b0, nb, b1, cols);
  }
}

// GPTAQ's column loop for one row (w: cols floats in processing order, modified in place), unbatched:
// column i's scale (at the first column of its group) from the current weights, its code, then every
// later column k: w_k -= e_i U_ik - w_i P_ik, in column order.
FP4C_GPTQ_CLONES
void quantize_row_asym(float* w, int64_t cols, const float* u, const float* p, float G, uint8_t zero_code,
                       const double* group_hessians, uint8_t* codes, uint8_t* scale_codes) {
  float dr = 1.0f;
  for (int64_t i = 0; i < cols; ++i) {
    if (i % kBlock == 0) {
      const uint8_t s = group_scale_code(
          w + i, G, group_hessians ? group_hessians + (i / kBlock) * kBlock * kBlock : nullptr, zero_code);
      scale_codes[i / kBlock] = s;
      dr = fp8_e4m3::decode(s) / G;
    }
    const float x = w[i];
    const uint8_t q = fp4_code(x / dr);
    codes[i] = q;
    const float* ui = u + i * cols;
    const float* pi = p + i * cols;
    const float er = (x - kFp4Value[q] * dr) / ui[i];
#pragma omp simd
    for (int64_t k = i + 1; k < cols; ++k) w[k] -= er * ui[k] - x * pi[k];
  }
}


// GPTAQ's A = triu_1(D' U^T) for the rows [i0, i0 + 8) (ni of them real): a[i][j] = sum_{k >= j} D'[i][k] U[j][k],
// k ascending from j, for j > i. dpanel: D' of those rows by column, dpanel[k * 8 + l] = D'[i0 + l][k] (zeros past
// ni). The eight rows are the lanes, four j at a time: each lane's sum is the reference's, addition for addition.
FP4C_GPTQ_CLONES
void correction_a_rows(const double* dpanel, const double* u, int64_t n, int64_t i0, int64_t ni, double* a) {
  const auto put = [&](const V8D& s, int64_t j) {
    for (int64_t l = 0; l < ni && i0 + l < j; ++l) a[(i0 + l) * n + j] = s[l];
  };
  int64_t j = i0 + 1;
  for (; j + 4 <= n; j += 4) {
    const double *u0 = u + j * n, *u1 = u0 + n, *u2 = u1 + n, *u3 = u2 + n;
    V8D s0 = {}, s1 = {}, s2 = {}, s3 = {};
    s0 = s0 + load8d(dpanel + j * 8) * u0[j];
    s0 = s0 + load8d(dpanel + (j + 1) * 8) * u0[j + 1];
    s1 = s1 + load8d(dpanel + (j + 1) * 8) * u1[j + 1];
    s0 = s0 + load8d(dpanel + (j + 2) * 8) * u0[j + 2];
    s1 = s1 + load8d(dpanel + (j + 2) * 8) * u1[j + 2];
    s2 = s2 + load8d(dpanel + (j + 2) * 8) * u2[j + 2];
    for (int64_t k = j + 3; k < n; ++k) {
      const V8D d = load8d(dpanel + k * 8);
      s0 = s0 + d * u0[k];
      s1 = s1 + d * u1[k];
      s2 = s2 + d * u2[k];
      s3 = s3 + d * u3[k];
    }
    put(s0, j), put(s1, j + 1), put(s2, j + 2), put(s3, j + 3);
  }
  for (; j < n; ++j) {
    const double* uj = u + j * n;
    V8D s = {};
    for (int64_t k = j; k < n; ++k) s = s + load8d(dpanel + k * 8) * uj[k];
    put(s, j);
  }
}

// GPTAQ's P = alpha A U for the rows [i0, i0 + 8) and the columns [k0, k0 + 16): p[i][k] = alpha sum_{i < j <= k}
// a[i][j] U[j][k], j ascending (the reference's order and roundings: a multiply, an add, alpha last).
FP4C_GPTQ_CLONES
void correction_p_tile(const double* a, const double* u, int64_t n, int64_t i0, int64_t k0, double alpha, double* p) {
  typedef int64_t V8L __attribute__((vector_size(64)));
  const V8L lane = {0, 1, 2, 3, 4, 5, 6, 7};
  V8D acc[8][2] = {};
  const int64_t j_end = std::min(k0 + 16, n);
  for (int64_t j = i0 + 1; j < j_end; ++j) {
    const V8D u0 = load8d(u + j * n + k0), u1 = load8d(u + j * n + k0 + 8);
    const int rows_on = int(std::min<int64_t>(8, j - i0));   // rows i < j
    if (j <= k0) {
      for (int t = 0; t < rows_on; ++t) {
        const double at = a[(i0 + t) * n + j];
        acc[t][0] = acc[t][0] + at * u0;
        acc[t][1] = acc[t][1] + at * u1;
      }
    } else {   // only the columns k >= j
      const V8L m0 = lane >= (j - k0), m1 = lane + 8 >= (j - k0);
      for (int t = 0; t < rows_on; ++t) {
        const double at = a[(i0 + t) * n + j];
        acc[t][0] = m0 ? acc[t][0] + at * u0 : acc[t][0];
        acc[t][1] = m1 ? acc[t][1] + at * u1 : acc[t][1];
      }
    }
  }
  for (int t = 0; t < 8; ++t) {
    store8d(p + (i0 + t) * n + k0, acc[t][0] * alpha);
    store8d(p + (i0 + t) * n + k0 + 8, acc[t][1] * alpha);
  }
}
#pragma GCC diagnostic pop

}  // namespace

namespace gptq_detail {

std::vector<double> asymmetry_correction(const double* dxt, int64_t n, const std::vector<double>& u,
                                         const std::vector<int64_t>& order, double alpha) {
  if (n % 16 != 0) return asymmetry_correction_reference(dxt, n, u, order, alpha);
  std::vector<double> a(size_t(n * n), 0.0), p(size_t(n * n), 0.0);
  const int64_t row_blocks = n / 8;
#pragma omp parallel if (n >= 256)
  {
    std::vector<double> panel(size_t(n * 8));
#pragma omp for schedule(dynamic, 1)
    for (int64_t b = 0; b < row_blocks; ++b) {
      const int64_t i0 = b * 8;
      for (int64_t l = 0; l < 8; ++l)
        for (int64_t k = 0; k < n; ++k) panel[size_t(k * 8 + l)] = dxt[order[size_t(i0 + l)] * n + order[size_t(k)]];
      correction_a_rows(panel.data(), u.data(), n, i0, 8, a.data());
    }
  }
  const int64_t col_blocks = n / 16;
#pragma omp parallel for schedule(dynamic, 4) if (n >= 256)
  for (int64_t t = 0; t < row_blocks * col_blocks; ++t) {
    const int64_t i0 = (t / col_blocks) * 8, k0 = (t % col_blocks) * 16;
    if (k0 + 16 <= i0 + 1) continue;   // left of the diagonal: zero
    correction_p_tile(a.data(), u.data(), n, i0, k0, alpha, p.data());
  }
  return p;
}

std::vector<double> asymmetry_correction_reference(const double* dxt, int64_t n, const std::vector<double>& u,
                                                   const std::vector<int64_t>& order, double alpha) {
  // A = triu_1(D' U^T): A[i][j] = sum_{k >= j} D'[i][k] U[j][k] for j > i (U upper).
  std::vector<double> a(size_t(n * n), 0.0), p(size_t(n * n), 0.0);
#pragma omp parallel for schedule(dynamic, 16) if (n >= 256)
  for (int64_t i = 0; i < n; ++i) {
    std::vector<double> di(static_cast<size_t>(n));
    for (int64_t k = 0; k < n; ++k) di[size_t(k)] = dxt[order[size_t(i)] * n + order[size_t(k)]];
    for (int64_t j = i + 1; j < n; ++j) {
      const double* uj = u.data() + j * n;
      double s = 0.0;
      for (int64_t k = j; k < n; ++k) s += di[size_t(k)] * uj[k];
      a[size_t(i * n + j)] = s;
    }
  }
  // P = alpha A U: P[i][k] = alpha sum_{i < j <= k} A[i][j] U[j][k], j ascending.
#pragma omp parallel for schedule(dynamic, 16) if (n >= 256)
  for (int64_t i = 0; i < n; ++i) {
    double* pi = p.data() + i * n;
    for (int64_t j = i + 1; j < n; ++j) {
      const double aij = a[size_t(i * n + j)];
      const double* uj = u.data() + j * n;
      for (int64_t k = j; k < n; ++k) pi[k] += aij * uj[k];
    }
    for (int64_t k = 0; k < n; ++k) pi[k] *= alpha;
  }
  return p;
}

std::vector<int64_t> column_order(const double* h, int64_t cols, bool act_order) {
  std::vector<int64_t> order(static_cast<size_t>(cols));
  std::iota(order.begin(), order.end(), int64_t(0));
  if (!act_order) return order;
  const int64_t groups = cols / kBlock;
  std::vector<double> sum(size_t(groups), 0.0);
  for (int64_t g = 0; g < groups; ++g) {
    for (int t = 0; t < kBlock; ++t) sum[size_t(g)] += diag_fixed(h, cols, g * kBlock + t);
  }
  std::vector<int64_t> g_order(static_cast<size_t>(groups));
  std::iota(g_order.begin(), g_order.end(), int64_t(0));
  std::stable_sort(g_order.begin(), g_order.end(),
                   [&](int64_t a, int64_t b) { return sum[size_t(a)] > sum[size_t(b)]; });
  for (int64_t p = 0; p < groups; ++p) {
    for (int t = 0; t < kBlock; ++t) order[size_t(p * kBlock + t)] = g_order[size_t(p)] * kBlock + t;
  }
  return order;
}

Expected<std::vector<double>> inverse_cholesky_upper(const double* h, int64_t n, double damp,
                                                     const std::vector<int64_t>& order) {
  double mean = 0.0;
  for (int64_t j = 0; j < n; ++j) mean += diag_fixed(h, n, j);
  mean /= double(n);
  const double add = damp * mean;
  // B = J H' J (H' = H permuted by order, dead diagonals fixed, damped): B[i][j] = H'[n-1-i][n-1-j];
  // only its lower triangle is needed.
  std::vector<double> b(size_t(n * n), 0.0);
#pragma omp parallel for schedule(static) if (n >= kParallelFactorMin)
  for (int64_t i = 0; i < n; ++i) {
    const int64_t oi = order[size_t(n - 1 - i)];
    for (int64_t j = 0; j < i; ++j) b[size_t(i * n + j)] = h_sym(h, n, oi, order[size_t(n - 1 - j)]);
    b[size_t(i * n + i)] = diag_fixed(h, n, oi) + add;
  }
  const int64_t failed = cholesky_lower(b.data(), n);
  if (failed >= 0) {
    return make_error("GPTQ: H + damp * mean(diag H) * I is not positive definite (Cholesky pivot " +
                      std::to_string(n - 1 - failed) + " in processing order, damp " +
                      std::to_string(damp) + "); raise damp");
  }
  std::vector<double> u = invert_lower(b.data(), n);
  b = {};
  // U = J M J: U[i][j] = M[n-1-i][n-1-j], i.e. the row-major array reversed (M lower -> U upper).
  std::reverse(u.begin(), u.end());
  return u;
}

void quantize_columns(float* w, int64_t rows, int64_t cols, const float* u, float global_scale,
                      int block, nvfp4::ZeroScale zero, uint8_t* codes, uint8_t* scale_codes,
                      const double* group_hessians) {
  constexpr int64_t kTile = 32;
  const uint8_t zc = zero_scale_code(zero);
  const int64_t tiles = (rows + kTile - 1) / kTile;
#pragma omp parallel if (tiles > 1)
  {
    std::vector<float> e, d;
#pragma omp for schedule(dynamic, 1)
    for (int64_t t = 0; t < tiles; ++t) {
      const int64_t r0 = t * kTile, nr = std::min(kTile, rows - r0);
      quantize_tile(w + r0 * cols, nr, cols, u, global_scale, block, zc, group_hessians, codes + r0 * cols,
                    scale_codes + r0 * (cols / kBlock), e, d);
    }
  }
}

void quantize_columns_asym(float* w, int64_t rows, int64_t cols, const float* u, const float* p, float global_scale,
                           int block, uint8_t zero_code, const double* group_hessians, uint8_t* codes,
                           uint8_t* scale_codes) {
  constexpr int64_t kTile = 32;
  const int64_t tiles = (rows + kTile - 1) / kTile;
#pragma omp parallel if (tiles > 1)
  {
    std::vector<float> e, xs, d;
#pragma omp for schedule(dynamic, 1)
    for (int64_t t = 0; t < tiles; ++t) {
      const int64_t r0 = t * kTile, nr = std::min(kTile, rows - r0);
      quantize_tile_asym(w + r0 * cols, nr, cols, u, p, global_scale, block, zero_code, group_hessians,
                         codes + r0 * cols, scale_codes + r0 * (cols / kBlock), e, xs, d);
    }
  }
}

void quantize_columns_asym_unbatched(float* w, int64_t rows, int64_t cols, const float* u, const float* p,
                                     float global_scale, uint8_t zero_code, const double* group_hessians,
                                     uint8_t* codes, uint8_t* scale_codes) {
  for (int64_t r = 0; r < rows; ++r)
    quantize_row_asym(w + r * cols, cols, u, p, global_scale, zero_code, group_hessians, codes + r * cols,
                      scale_codes + r * (cols / kBlock));
}

}  // namespace gptq_detail

namespace {

// The processing order and U (rounded to float32) of one H, damp and act_order: what the column loop
// needs. Several quantizations share one H (q, k and v; gate and up; auto's gptq candidates and then
// pack's), so the factors are kept in a process-wide cache keyed by the contents of H (its XXH3-128),
// its size, damp and act_order, least recently used first out beyond kFactorCacheBytes. The result is a
// pure function of the key, so the cache changes no byte.
struct Factor {
  std::vector<int64_t> order;
  std::vector<float> u;
  size_t bytes() const { return order.size() * sizeof(int64_t) + u.size() * sizeof(float); }
};

struct FactorKey {
  hash::Digest h;
  int64_t cols;
  double damp;
  bool act_order;
  bool operator==(const FactorKey&) const = default;
};

constexpr size_t kFactorCacheBytes = size_t(512) << 20;

// Least recently used first out beyond kFactorCacheBytes (Value::bytes()).
template <typename Key, typename Value>
class LruCache {
 public:
  std::shared_ptr<const Value> find(const Key& key) {
    std::lock_guard<std::mutex> lock(mutex_);
    for (auto it = entries_.begin(); it != entries_.end(); ++it) {
      if (it->first == key) {
        entries_.splice(entries_.begin(), entries_, it);
        return it->second;
      }
    }
    return nullptr;
  }
  void clear() {
    std::lock_guard<std::mutex> lock(mutex_);
    entries_.clear();
    bytes_ = 0;
  }
  void insert(const Key& key, std::shared_ptr<const Value> f) {
    const size_t b = f->bytes();
    if (b > kFactorCacheBytes) return;
    std::lock_guard<std::mutex> lock(mutex_);
    for (const auto& e : entries_)
      if (e.first == key) return;
    entries_.emplace_front(key, std::move(f));
    bytes_ += b;
    while (bytes_ > kFactorCacheBytes && !entries_.empty()) {
      bytes_ -= entries_.back().second->bytes();
      entries_.pop_back();
    }
  }

 private:
  std::mutex mutex_;
  std::list<std::pair<Key, std::shared_ptr<const Value>>> entries_;
  size_t bytes_ = 0;
};

using FactorCache = LruCache<FactorKey, Factor>;

FactorCache& factor_cache() {
  static FactorCache* cache = new FactorCache;  // never destroyed: no exit-order hazards
  return *cache;
}

// GPTAQ's P (rounded to float32) of one factor, D and alpha: auto's two GPTAQ candidates (max and local-Hessian
// scales) and each smoothed variant's share it. A pure function of the key, as the factors.
struct Correction {
  std::vector<float> p;
  size_t bytes() const { return p.size() * sizeof(float); }
};

struct CorrectionKey {
  FactorKey factor;
  hash::Digest d;
  double alpha;
  bool operator==(const CorrectionKey&) const = default;
};

using CorrectionCache = LruCache<CorrectionKey, Correction>;

CorrectionCache& correction_cache() {
  static CorrectionCache* cache = new CorrectionCache;  // never destroyed: no exit-order hazards
  return *cache;
}

std::shared_ptr<const Correction> correction_for(const double* h, const double* dxt, int64_t cols,
                                                 const GptqOptions& options, const Factor& factor) {
  const CorrectionKey key{{hash::xxh3_128(std::as_bytes(std::span(h, size_t(cols * cols)))), cols, options.damp,
                           options.act_order},
                          hash::xxh3_128(std::as_bytes(std::span(dxt, size_t(cols * cols)))), options.asym_alpha};
  if (auto c = correction_cache().find(key)) return c;
  const std::vector<double> u64(factor.u.begin(), factor.u.end());
  const std::vector<double> p64 = gptq_detail::asymmetry_correction(dxt, cols, u64, factor.order, options.asym_alpha);
  auto c = std::make_shared<Correction>();
  c->p.assign(p64.begin(), p64.end());
  std::shared_ptr<const Correction> out = std::move(c);
  correction_cache().insert(key, out);
  return out;
}

Expected<std::shared_ptr<const Factor>> factor_for(const double* h, int64_t cols, const GptqOptions& options) {
  const FactorKey key{hash::xxh3_128(std::as_bytes(std::span(h, size_t(cols * cols)))), cols, options.damp,
                      options.act_order};
  if (auto f = factor_cache().find(key)) return f;
  auto f = std::make_shared<Factor>();
  f->order = gptq_detail::column_order(h, cols, options.act_order);
  FP4C_ASSIGN(std::vector<double> u64, gptq_detail::inverse_cholesky_upper(h, cols, options.damp, f->order));
  f->u.resize(u64.size());
  for (size_t i = 0; i < u64.size(); ++i) f->u[i] = float(u64[i]);
  std::shared_ptr<const Factor> out = std::move(f);
  factor_cache().insert(key, out);
  return out;
}

}  // namespace

void gptq_detail::clear_factor_cache() {
  factor_cache().clear();
  correction_cache().clear();
}

namespace {

// gptq_quantize, and with dxt gptaq_quantize.
Status quantize_impl(const char* name, const float* w, int64_t rows, int64_t cols, const double* h, const double* dxt,
                     float global_scale, const GptqOptions& options, uint8_t* packed, uint8_t* scales,
                     nvfp4::ZeroScale zero, float* dequantized, nvfp4::ErrorStats* err) {
  auto fail = [name](const std::string& what) { return make_error(std::string(name) + ": " + what); };
  if (rows < 0 || cols <= 0 || cols % kBlock != 0) {
    return fail("cols must be a positive multiple of 16 and rows >= 0 (got [" + std::to_string(rows) +
                ", " + std::to_string(cols) + "]): NVFP4 blocks are 16 input channels");
  }
  if (!w || !h || (rows > 0 && (!packed || !scales))) return fail("null weight, H or output buffer");
  if (!std::isfinite(global_scale) || !(global_scale > 0.0f)) {
    return fail("the global scale must be finite and > 0 (got " + std::to_string(global_scale) + ")");
  }
  if (!std::isfinite(options.damp) || options.damp < 0.0) {
    return fail("damp must be finite and >= 0 (got " + std::to_string(options.damp) + ")");
  }
  if (options.block <= 0 || options.block % kBlock != 0) {
    return fail("block must be a positive multiple of 16 (got " + std::to_string(options.block) + ")");
  }
  for (int64_t i = 0; i < rows * cols; ++i) {
    if (!std::isfinite(w[i])) {
      return fail(std::string("W[") + std::to_string(i / cols) + ", " + std::to_string(i % cols) +
                  "] is " + (std::isnan(w[i]) ? "NaN" : "Inf") + ": the weight must be finite");
    }
  }
  for (int64_t i = 0; i < cols * cols; ++i) {
    if (!std::isfinite(h[i])) {
      return fail(std::string("H[") + std::to_string(i / cols) + ", " + std::to_string(i % cols) +
                  "] is " + (std::isnan(h[i]) ? "NaN" : "Inf") + ": H must be finite");
    }
  }
  for (int64_t j = 0; j < cols; ++j) {
    if (h[j * cols + j] < 0.0) {
      return fail("H[" + std::to_string(j) + ", " + std::to_string(j) +
                  "] is negative: H must be a second-moment matrix X^T X / n");
    }
  }
  if (dxt) {
    if (!std::isfinite(options.asym_alpha) || options.asym_alpha < 0.0)
      return fail("alpha must be finite and >= 0 (got " + std::to_string(options.asym_alpha) + ")");
    for (int64_t i = 0; i < cols * cols; ++i) {
      if (!std::isfinite(dxt[i])) {
        return fail(std::string("D[") + std::to_string(i / cols) + ", " + std::to_string(i % cols) +
                    "] is " + (std::isnan(dxt[i]) ? "NaN" : "Inf") + ": D must be finite");
      }
    }
  }
  if (rows == 0) return Status();

  FP4C_ASSIGN(const std::shared_ptr<const Factor> factor, factor_for(h, cols, options));
  const std::vector<int64_t>& order = factor->order;
  const std::vector<float>& u = factor->u;

  const int64_t groups = cols / kBlock;
  std::vector<float> wp(size_t(rows * cols));
#pragma omp parallel for schedule(static) if (rows * cols >= (1 << 16))
  for (int64_t r = 0; r < rows; ++r) {
    for (int64_t c = 0; c < cols; ++c) wp[size_t(r * cols + c)] = w[r * cols + order[size_t(c)]];
  }
  // With local-Hessian scales: each processing group's 16x16 block of H (as given).
  std::vector<double> group_h(options.localhessian_scales ? size_t(cols * kBlock) : 0);
  for (int64_t p = 0; p < (options.localhessian_scales ? groups : 0); ++p) {
    for (int i = 0; i < kBlock; ++i) {
      for (int j = 0; j < kBlock; ++j) {
        group_h[size_t((p * kBlock + i) * kBlock + j)] =
            h_sym(h, cols, order[size_t(p * kBlock + i)], order[size_t(p * kBlock + j)]);
      }
    }
  }
  std::vector<uint8_t> codes(size_t(rows * cols)), sc(size_t(rows * groups));
  if (!dxt) {
    gptq_detail::quantize_columns(wp.data(), rows, cols, u.data(), global_scale, options.block, zero,
                                  codes.data(), sc.data(), options.localhessian_scales ? group_h.data() : nullptr);
  } else {
    const std::shared_ptr<const Correction> correction = correction_for(h, dxt, cols, options, *factor);
    const std::vector<float>& p = correction->p;
    const uint8_t zc = zero_scale_code(zero);
    const double* gh = options.localhessian_scales ? group_h.data() : nullptr;
    gptq_detail::quantize_columns_asym(wp.data(), rows, cols, u.data(), p.data(), global_scale, options.block, zc, gh,
                                       codes.data(), sc.data());
  }
  for (int64_t i = 0; i < rows * groups; ++i) {
    if ((sc[size_t(i)] & 0x7F) == 0x7F) {
      return fail("the error updates overflowed (row " + std::to_string(i / groups) +
                  "): H is too ill-conditioned for this damp; raise damp");
    }
  }

  // Back to the original column order: a processing group p is the original group order[16p] / 16.
  std::vector<nvfp4::ErrorStats> row_err(err ? size_t(rows) : 0);
#pragma omp parallel for schedule(static) if (rows * cols >= (1 << 16))
  for (int64_t r = 0; r < rows; ++r) {
    std::vector<uint8_t> q(static_cast<size_t>(cols));
    for (int64_t p = 0; p < groups; ++p) {
      const int64_t g = order[size_t(p * kBlock)] / kBlock;
      scales[r * groups + g] = sc[size_t(r * groups + p)];
      for (int t = 0; t < kBlock; ++t) {
        q[size_t(g * kBlock + t)] = codes[size_t(r * cols + p * kBlock + t)];
      }
    }
    for (int64_t c = 0; c < cols; c += 2) {
      packed[(r * cols + c) / 2] = fp4::pack(q[size_t(c)], q[size_t(c + 1)]);
    }
    nvfp4::ErrorStats* re = err ? &row_err[size_t(r)] : nullptr;
    for (int64_t g = 0; g < groups; ++g) {
      const float d = fp8_e4m3::decode(scales[r * groups + g]) / global_scale;
      for (int t = 0; t < kBlock; ++t) {
        const int64_t c = g * kBlock + t;
        const float v = w[r * cols + c], vq = fp4::decode(q[size_t(c)]) * d;
        if (dequantized) dequantized[r * cols + c] = vq;
        if (re) {
          const double e = double(v) - double(vq);
          re->sum_sq_err += e * e;
          re->sum_sq_ref += double(v) * double(v);
          if (std::fabs(e) > re->max_abs_err) re->max_abs_err = std::fabs(e);
        }
      }
    }
    if (re) re->count += cols;
  }
  if (err) {
    for (const nvfp4::ErrorStats& re : row_err) {
      err->sum_sq_err += re.sum_sq_err;
      err->sum_sq_ref += re.sum_sq_ref;
      if (re.max_abs_err > err->max_abs_err) err->max_abs_err = re.max_abs_err;
      err->count += re.count;
    }
  }
  return Status();
}

}  // namespace

Status gptq_quantize(const float* w, int64_t rows, int64_t cols, const double* h, float global_scale,
                     const GptqOptions& options, uint8_t* packed, uint8_t* scales,
                     nvfp4::ZeroScale zero, float* dequantized, nvfp4::ErrorStats* err) {
  return quantize_impl("gptq_quantize", w, rows, cols, h, nullptr, global_scale, options, packed, scales, zero,
                       dequantized, err);
}

Status gptaq_quantize(const float* w, int64_t rows, int64_t cols, const double* h, const double* dxt,
                      float global_scale, const GptqOptions& options, uint8_t* packed, uint8_t* scales,
                      nvfp4::ZeroScale zero, float* dequantized, nvfp4::ErrorStats* err) {
  if (!dxt) return make_error("gptaq_quantize: null D");
  return quantize_impl("gptaq_quantize", w, rows, cols, h, dxt, global_scale, options, packed, scales, zero,
                       dequantized, err);
}

}  // namespace fp4c::quant
