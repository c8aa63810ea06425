// collect_stats: drives the runtime over the calibration set (kept apart from the statistics data
// types so that code reading statistics does not link the runtime).
#include <algorithm>
#include <cmath>
#include <limits>
#include <map>
#include <vector>

#include "base/profile.h"
#include "passes/channel_stats.h"
#include "passes/stats.h"

namespace fp4c::passes {

namespace {

#if defined(__x86_64__) && defined(__GNUC__) && !defined(__clang__)
#define FP4C_STATS_CLONES __attribute__((target_clones("avx512f", "avx2", "default")))
#else
#define FP4C_STATS_CLONES
#endif

// Dot products of `ni` (<= 4) rows of a with b, n elements each: the inner loop of X^T X.
FP4C_STATS_CLONES void dots(const double* a, int64_t stride, int ni, const double* b, int64_t n, double* out) {
  for (int k = 0; k < ni; ++k) {
    const double* ak = a + k * stride;
    double acc = 0;
#pragma omp simd reduction(+ : acc)
    for (int64_t r = 0; r < n; ++r) acc += ak[r] * b[r];
    out[k] = acc;
  }
}

// out (the upper triangle of a [cols, cols] matrix) += X^T X for x [rows, cols], in float64. Tiles of
// rows are transposed to float64 so each entry is a contiguous dot product (vectorized; four rows of the
// output share each loaded column). Every entry is summed by one thread in a fixed order: the result does
// not depend on the thread count.
void accumulate_second_moments(double* out, const float* x, int64_t rows, int64_t cols) {
  constexpr int64_t kRows = 256;
  constexpr int kI = 4;
  std::vector<double> xt(size_t(cols * std::min(rows, kRows)));
  for (int64_t r0 = 0; r0 < rows; r0 += kRows) {
    const int64_t nr = std::min(kRows, rows - r0);
#pragma omp parallel for schedule(static)
    for (int64_t c = 0; c < cols; ++c)
      for (int64_t r = 0; r < nr; ++r) xt[size_t(c * nr + r)] = double(x[(r0 + r) * cols + c]);
#pragma omp parallel for schedule(dynamic, 1)
    for (int64_t i0 = 0; i0 < cols; i0 += kI) {
      const int ni = int(std::min<int64_t>(kI, cols - i0));
      double acc[kI];
      for (int64_t j = i0; j < cols; ++j) {
        dots(xt.data() + i0 * nr, nr, ni, xt.data() + j * nr, nr, acc);
        for (int k = 0; k < ni; ++k)
          if (i0 + k <= j) out[(i0 + k) * cols + j] += acc[k];
      }
    }
  }
}

// Folds rows of x into the site's running statistics. Each column is reduced over rows in row order,
// so the figures do not depend on the thread count (passes/channel_stats.h).
void accumulate(SiteStats& s, const float* x, int64_t rows, int64_t cols, bool second_moments) {
  if (s.absmax.empty()) {
    s.absmax.assign(size_t(cols), 0.0f);
    s.min.assign(size_t(cols), std::numeric_limits<float>::infinity());
    s.max.assign(size_t(cols), -std::numeric_limits<float>::infinity());
    s.mean_square.assign(size_t(cols), 0.0);   // holds sums until finish()
    if (second_moments) s.second_moment.assign(size_t(cols * cols), 0.0);
  }
  accumulate_channel_stats(x, rows, cols, {s.absmax.data(), s.min.data(), s.max.data(), s.mean_square.data()});
  if (second_moments) accumulate_second_moments(s.second_moment.data(), x, rows, cols);
  s.tokens += rows;
}

void finish(SiteStats& s) {
  const double n = double(std::max<int64_t>(s.tokens, 1));
  for (auto& v : s.mean_square) v /= n;
  const int64_t cols = s.cols();
  if (!s.second_moment.empty())
    for (int64_t i = 0; i < cols; ++i)
      for (int64_t j = i; j < cols; ++j) {
        const double v = s.second_moment[size_t(i * cols + j)] / n;
        s.second_moment[size_t(i * cols + j)] = v;
        s.second_moment[size_t(j * cols + i)] = v;
      }
}

}  // namespace

Expected<ActivationStats> collect_stats(const runtime::Forward& forward, runtime::WeightSource& weights,
                                        const std::vector<std::vector<int32_t>>& sequences,
                                        const StatsOptions& options,
                                        const std::function<void(int, int)>& progress) {
  if (sequences.empty()) return make_error("stats: the calibration set has no sequences");
  const int layers = int(forward.config().num_hidden_layers);
  ActivationStats out;
  FP4C_ASSIGN(auto acts, forward.embed(weights, sequences));
  for (int i = 0; i < layers; ++i) {
    FP4C_ASSIGN(auto params, weights.layer(i));
    std::map<ir::Role, SiteStats> sites;
    runtime::LinearHook hook = [&](const runtime::LinearInput& in) {
      profile::Scope timed(profile::Stage::Stats);
      SiteStats& s = sites[in.role];
      s.layer = in.layer;
      s.role = in.role;
      accumulate(s, in.x, in.rows, in.cols, options.second_moments);
    };
    FP4C_TRY(forward.layer(i, params, acts, hook));
    for (ir::Role r : {ir::Role::Q, ir::Role::O, ir::Role::Gate, ir::Role::Down}) {
      auto it = sites.find(r);
      if (it == sites.end()) continue;
      finish(it->second);
      out.sites.push_back(std::move(it->second));
    }
    if (progress) progress(i + 1, layers);
  }
  return out;
}

}  // namespace fp4c::passes
