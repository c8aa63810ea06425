#include "passes/channel_stats.h"

#include <omp.h>

#include <algorithm>
#include <cmath>

#include "runtime/vectorize.h"

namespace fp4c::passes {

namespace {

// Columns per strip: a strip's accumulators (20 bytes a column) stay in L1 while a tile of rows
// streams through it.
constexpr int64_t kStrip = 256;
// Rows per tile: each thread walks its columns strip by strip over a tile of rows, then the next tile;
// every column still sees its rows in order.
constexpr int64_t kTileRows = 64;

// Folds rows [0, rows) of x (row stride `stride`) into the n columns' accumulators. The column loop
// is the vector loop; each column's reduction stays sequential over rows.
FP4C_VECTOR_CLONES void fold_strip(const float* __restrict x, int64_t stride, int64_t rows, int64_t n,
                                   float* __restrict amax, float* __restrict lo, float* __restrict hi,
                                   double* __restrict ss) {
  for (int64_t r = 0; r < rows; ++r) {
    const float* __restrict row = x + r * stride;
#pragma omp simd
    for (int64_t c = 0; c < n; ++c) {
      const float v = row[c];
      const float a = std::fabs(v);
      amax[c] = amax[c] < a ? a : amax[c];   // std::max(amax, a)
      lo[c] = v < lo[c] ? v : lo[c];         // std::min(lo, v)
      hi[c] = hi[c] < v ? v : hi[c];         // std::max(hi, v)
      ss[c] += double(v) * double(v);        // exact product: fused or not, one rounding
    }
  }
}

}  // namespace

void accumulate_channel_stats(const float* x, int64_t rows, int64_t cols, const ChannelAccumulators& acc) {
  if (rows <= 0 || cols <= 0) return;
  // Column ranges per thread, multiples of 16 (a cache line of floats) except the last.
  const int64_t work = rows * cols;
  const int team = work >= (int64_t(1) << 16) ? omp_get_max_threads() : 1;
#pragma omp parallel num_threads(team) if (team > 1)
  {
    const int64_t nt = omp_get_num_threads(), me = omp_get_thread_num();
    const int64_t units = (cols + 15) / 16;
    const int64_t c0 = std::min(cols, units * me / nt * 16), c1 = std::min(cols, units * (me + 1) / nt * 16);
    for (int64_t r0 = 0; r0 < rows; r0 += kTileRows) {
      const int64_t nr = std::min(kTileRows, rows - r0);
      for (int64_t s = c0; s < c1; s += kStrip) {
        const int64_t n = std::min(kStrip, c1 - s);
        fold_strip(x + r0 * cols + s, cols, nr, n, acc.absmax + s, acc.min + s, acc.max + s, acc.sum_squares + s);
      }
    }
  }
}

void accumulate_channel_stats_reference(const float* x, int64_t rows, int64_t cols, const ChannelAccumulators& acc) {
  for (int64_t c = 0; c < cols; ++c)
    for (int64_t r = 0; r < rows; ++r) {
      const float v = x[r * cols + c];
      acc.absmax[c] = std::max(acc.absmax[c], std::fabs(v));
      acc.min[c] = std::min(acc.min[c], v);
      acc.max[c] = std::max(acc.max[c], v);
      acc.sum_squares[c] += double(v) * double(v);
    }
}

}  // namespace fp4c::passes
