#include "passes/second_moments.h"

#include <omp.h>

#include <algorithm>
#include <cstring>
#include <vector>

#if defined(__x86_64__) && defined(__GNUC__)
#include <immintrin.h>
#define FP4C_SM_X86 1
#endif

namespace fp4c::passes {
namespace {

// The output is computed in tiles of kI x kJ entries held in registers (16 AVX-512 registers of 8
// doubles) while a tile of kRows rows streams past; the tile's sums are read from `out` before and
// written back after, so every entry is still one sum over the rows in order.
constexpr int64_t kI = 8, kJ = 16, kRows = 512;

// c [kI][kJ] += sum over r < nr of a[r][0..kI) (x) b[r][0..kJ), a and b rows kJ doubles apart (panels).
void tile_generic(const double* a, const double* b, int64_t nr, double* c) {
  for (int64_t r = 0; r < nr; ++r) {
    const double* ar = a + r * kJ;
    const double* br = b + r * kJ;
    for (int64_t i = 0; i < kI; ++i)
      for (int64_t j = 0; j < kJ; ++j) c[i * kJ + j] += ar[i] * br[j];
  }
}

#ifdef FP4C_SM_X86
__attribute__((target("avx512f"))) void tile_avx512(const double* a, const double* b, int64_t nr, double* c) {
  __m512d acc[kI][2];
#pragma GCC unroll 8
  for (int i = 0; i < kI; ++i) {
    acc[i][0] = _mm512_loadu_pd(c + i * kJ);
    acc[i][1] = _mm512_loadu_pd(c + i * kJ + 8);
  }
  for (int64_t r = 0; r < nr; ++r) {
    const __m512d b0 = _mm512_loadu_pd(b + r * kJ), b1 = _mm512_loadu_pd(b + r * kJ + 8);
    const double* ar = a + r * kJ;
#pragma GCC unroll 8
    for (int i = 0; i < kI; ++i) {
      const __m512d s = _mm512_set1_pd(ar[i]);
      acc[i][0] = _mm512_fmadd_pd(s, b0, acc[i][0]);
      acc[i][1] = _mm512_fmadd_pd(s, b1, acc[i][1]);
    }
  }
#pragma GCC unroll 8
  for (int i = 0; i < kI; ++i) {
    _mm512_storeu_pd(c + i * kJ, acc[i][0]);
    _mm512_storeu_pd(c + i * kJ + 8, acc[i][1]);
  }
}

__attribute__((target("avx2,fma"))) void tile_avx2(const double* a, const double* b, int64_t nr, double* c) {
  // Half a tile's columns at a time: 8 x 8 entries in 16 registers of 4 doubles.
  for (int half = 0; half < 2; ++half) {
    __m256d acc[kI][2];
    const int64_t j0 = half * 8;
#pragma GCC unroll 8
    for (int i = 0; i < kI; ++i) {
      acc[i][0] = _mm256_loadu_pd(c + i * kJ + j0);
      acc[i][1] = _mm256_loadu_pd(c + i * kJ + j0 + 4);
    }
    for (int64_t r = 0; r < nr; ++r) {
      const __m256d b0 = _mm256_loadu_pd(b + r * kJ + j0), b1 = _mm256_loadu_pd(b + r * kJ + j0 + 4);
      const double* ar = a + r * kJ;
#pragma GCC unroll 8
      for (int i = 0; i < kI; ++i) {
        const __m256d s = _mm256_broadcast_sd(ar + i);
        acc[i][0] = _mm256_fmadd_pd(s, b0, acc[i][0]);
        acc[i][1] = _mm256_fmadd_pd(s, b1, acc[i][1]);
      }
    }
#pragma GCC unroll 8
    for (int i = 0; i < kI; ++i) {
      _mm256_storeu_pd(c + i * kJ + j0, acc[i][0]);
      _mm256_storeu_pd(c + i * kJ + j0 + 4, acc[i][1]);
    }
  }
}
#endif

using TileFn = void (*)(const double*, const double*, int64_t, double*);

TileFn pick_tile() {
#ifdef FP4C_SM_X86
  if (__builtin_cpu_supports("avx512f")) return tile_avx512;
  if (__builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma")) return tile_avx2;
#endif
  return tile_generic;
}

}  // namespace

void accumulate_second_moments(double* out, const float* x, int64_t rows, int64_t cols) {
  if (rows <= 0 || cols <= 0) return;
  static const TileFn tile = pick_tile();
  // Rows are packed, a tile of them at a time, into panels of kJ columns: panel p holds rows r of
  // columns [p kJ, p kJ + kJ) contiguously (zeros past the last column), so a tile's a and b operands
  // are streams of kJ doubles per row.
  const int64_t panels = (cols + kJ - 1) / kJ;
  const int64_t tile_rows = std::min(rows, kRows);
  std::vector<double> packed(size_t(panels * tile_rows * kJ));
  // The upper triangle's tiles: i-blocks of kI rows against the panels from the one holding i0 on.
  struct Tile { int64_t i0, p; };
  std::vector<Tile> tiles;
  for (int64_t i0 = 0; i0 < cols; i0 += kI)
    for (int64_t p = i0 / kJ; p < panels; ++p) tiles.push_back({i0, p});
  for (int64_t r0 = 0; r0 < rows; r0 += kRows) {
    const int64_t nr = std::min(kRows, rows - r0);
#pragma omp parallel for schedule(static)
    for (int64_t p = 0; p < panels; ++p) {
      double* dst = packed.data() + p * nr * kJ;
      const int64_t c0 = p * kJ, n = std::min(kJ, cols - c0);
      for (int64_t r = 0; r < nr; ++r) {
        const float* src = x + (r0 + r) * cols + c0;
        for (int64_t j = 0; j < n; ++j) dst[r * kJ + j] = double(src[j]);
        for (int64_t j = n; j < kJ; ++j) dst[r * kJ + j] = 0.0;
      }
    }
#pragma omp parallel for schedule(dynamic, 8)
    for (size_t t = 0; t < tiles.size(); ++t) {
      const int64_t i0 = tiles[t].i0, p = tiles[t].p, j0 = p * kJ;
      const int64_t ni = std::min(kI, cols - i0), nj = std::min(kJ, cols - j0);
      alignas(64) double c[kI * kJ];
      for (int64_t i = 0; i < kI; ++i)
        for (int64_t j = 0; j < kJ; ++j)
          c[i * kJ + j] = (i < ni && j < nj && i0 + i <= j0 + j) ? out[(i0 + i) * cols + j0 + j] : 0.0;
      // a: columns [i0, i0 + kI) sit in panel i0 / kJ at offset i0 % kJ (kI divides kJ).
      tile(packed.data() + (i0 / kJ) * nr * kJ + (i0 % kJ), packed.data() + p * nr * kJ, nr, c);
      for (int64_t i = 0; i < ni; ++i)
        for (int64_t j = 0; j < nj; ++j)
          if (i0 + i <= j0 + j) out[(i0 + i) * cols + j0 + j] = c[i * kJ + j];
    }
  }
}

void accumulate_second_moments_reference(double* out, const float* x, int64_t rows, int64_t cols) {
  for (int64_t i = 0; i < cols; ++i)
    for (int64_t j = i; j < cols; ++j) {
      double s = out[i * cols + j];
      for (int64_t r = 0; r < rows; ++r) s += double(x[r * cols + i]) * double(x[r * cols + j]);
      out[i * cols + j] = s;
    }
}

#if defined(__GNUC__) && !defined(__clang__)
#define FP4C_NO_CONTRACT __attribute__((optimize("fp-contract=off")))
#else
#define FP4C_NO_CONTRACT
#endif

// GPTAQ's cross moments in tiles of kI x kJ entries as the second moments' (c[i][j] += a[r][i] b[r][j], rows in
// order), each step a multiply and an add, never fused: every clone rounds as the reference does.
#if defined(__x86_64__) && defined(__GNUC__) && !defined(__clang__)
#define FP4C_CROSS_CLONES __attribute__((target_clones("avx512f", "avx2", "default"), optimize("fp-contract=off")))
#else
#define FP4C_CROSS_CLONES FP4C_NO_CONTRACT
#endif

#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wpsabi"
namespace {
typedef double V8D __attribute__((vector_size(64)));

FP4C_CROSS_CLONES
void cross_tile(const double* a, const double* b, int64_t nr, double* c) {
  V8D acc[kI][2];
  std::memcpy(acc, c, sizeof acc);
  for (int64_t r = 0; r < nr; ++r) {
    V8D b0, b1;
    std::memcpy(&b0, b + r * kJ, sizeof b0);
    std::memcpy(&b1, b + r * kJ + 8, sizeof b1);
    const double* ar = a + r * kJ;
    for (int i = 0; i < kI; ++i) {
      acc[i][0] = acc[i][0] + ar[i] * b0;
      acc[i][1] = acc[i][1] + ar[i] * b1;
    }
  }
  std::memcpy(c, acc, sizeof acc);
}
}  // namespace
#pragma GCC diagnostic pop

void accumulate_cross_moments(double* out, const float* x, const float* xq, int64_t rows, int64_t cols) {
  if (rows <= 0 || cols <= 0) return;
  // Panels as accumulate_second_moments packs them: d = X - Xq (in float64) and Xq, kJ columns each.
  const int64_t panels = (cols + kJ - 1) / kJ;
  const int64_t tile_rows = std::min(rows, kRows);
  std::vector<double> dp(size_t(panels * tile_rows * kJ)), qp(dp.size());
  struct Tile { int64_t i0, p; };
  std::vector<Tile> tiles;
  for (int64_t i0 = 0; i0 < cols; i0 += kI)
    for (int64_t p = 0; p < panels; ++p) tiles.push_back({i0, p});
  for (int64_t r0 = 0; r0 < rows; r0 += kRows) {
    const int64_t nr = std::min(kRows, rows - r0);
#pragma omp parallel for schedule(static)
    for (int64_t p = 0; p < panels; ++p) {
      double* dd = dp.data() + p * nr * kJ;
      double* qd = qp.data() + p * nr * kJ;
      const int64_t c0 = p * kJ, n = std::min(kJ, cols - c0);
      for (int64_t r = 0; r < nr; ++r) {
        const float* xs = x + (r0 + r) * cols + c0;
        const float* qs = xq + (r0 + r) * cols + c0;
        for (int64_t j = 0; j < n; ++j) {
          const double vq = double(qs[j]);
          qd[r * kJ + j] = vq;
          dd[r * kJ + j] = double(xs[j]) - vq;
        }
        for (int64_t j = n; j < kJ; ++j) qd[r * kJ + j] = dd[r * kJ + j] = 0.0;
      }
    }
#pragma omp parallel for schedule(dynamic, 8)
    for (size_t t = 0; t < tiles.size(); ++t) {
      const int64_t i0 = tiles[t].i0, p = tiles[t].p, j0 = p * kJ;
      const int64_t ni = std::min(kI, cols - i0), nj = std::min(kJ, cols - j0);
      alignas(64) double c[kI * kJ];
      for (int64_t i = 0; i < kI; ++i)
        for (int64_t j = 0; j < kJ; ++j) c[i * kJ + j] = (i < ni && j < nj) ? out[(i0 + i) * cols + j0 + j] : 0.0;
      cross_tile(dp.data() + (i0 / kJ) * nr * kJ + (i0 % kJ), qp.data() + p * nr * kJ, nr, c);
      for (int64_t i = 0; i < ni; ++i)
        for (int64_t j = 0; j < nj; ++j) out[(i0 + i) * cols + j0 + j] = c[i * kJ + j];
    }
  }
}

FP4C_NO_CONTRACT
void accumulate_cross_moments_reference(double* out, const float* x, const float* xq, int64_t rows, int64_t cols) {
  for (int64_t i = 0; i < cols; ++i)
    for (int64_t j = 0; j < cols; ++j) {
      double s = out[i * cols + j];
      for (int64_t r = 0; r < rows; ++r)
        s += (double(x[r * cols + i]) - double(xq[r * cols + i])) * double(xq[r * cols + j]);
      out[i * cols + j] = s;
    }
}

}  // namespace fp4c::passes
