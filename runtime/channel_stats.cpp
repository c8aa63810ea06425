#include "runtime/channel_stats.h"

#include <omp.h>

#include <algorithm>
#include <cmath>
#include <vector>

#include "base/profile.h"
#include "runtime/elementwise.h"
#include "runtime/vectorize.h"

namespace fp4c::runtime {

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

// Walks x [rows, cols] as accumulate_channel_stats does: each thread its column range (multiples of 16,
// a cache line of floats, except the last), tile of rows by tile, strip by strip; `produce(r0, nr, s, n)`
// writes rows [r0, r0 + nr) x columns [s, s + n) of x first, so that the fold reads them from cache.
template <typename Produce>
void fold_columns(float* x, int64_t rows, int64_t cols, const ChannelAccumulators& acc, Produce&& produce) {
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
        produce(r0, nr, s, n);
        fold_strip(x + r0 * cols + s, cols, nr, n, acc.absmax + s, acc.min + s, acc.max + s, acc.sum_squares + s);
      }
    }
  }
}

}  // namespace

void accumulate_channel_stats(const float* x, int64_t rows, int64_t cols, const ChannelAccumulators& acc) {
  if (rows <= 0 || cols <= 0) return;
  fold_columns(const_cast<float*>(x), rows, cols, acc, [](int64_t, int64_t, int64_t, int64_t) {});
}

void rms_norm_channel_stats(const float* x, const float* w, int64_t rows, int64_t cols, double eps, float* out,
                            const ChannelAccumulators& acc) {
  if (rows <= 0 || cols <= 0) return;
  profile::Scope timed(profile::Stage::Norm);
  std::vector<float> scale(static_cast<size_t>(rows));
#pragma omp parallel for schedule(static) if (rows * cols >= (int64_t(1) << 15))
  for (int64_t r = 0; r < rows; ++r) scale[size_t(r)] = detail::rms_row_scale(x + r * cols, cols, eps);
  fold_columns(out, rows, cols, acc, [&](int64_t r0, int64_t nr, int64_t s, int64_t n) {
    for (int64_t r = r0; r < r0 + nr; ++r)
      detail::rms_scale_row(x + r * cols + s, w + s, scale[size_t(r)], n, out + r * cols + s);
  });
}

void activation_mul_channel_stats(const std::string& act, float* gate, const float* up, int64_t rows, int64_t cols,
                                  const ChannelAccumulators& acc) {
  if (rows <= 0 || cols <= 0) return;
  profile::Scope timed(profile::Stage::Elementwise);
  const bool gelu = act == "gelu_pytorch_tanh";
  fold_columns(gate, rows, cols, acc, [&](int64_t r0, int64_t nr, int64_t s, int64_t n) {
    for (int64_t r = r0; r < r0 + nr; ++r) {
      if (gelu)
        detail::gelu_tanh_mul_chunk(gate + r * cols + s, up + r * cols + s, n);
      else
        detail::silu_mul_chunk(gate + r * cols + s, up + r * cols + s, n);
    }
  });
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

}  // namespace fp4c::runtime
