// collect_stats: drives the runtime over the calibration set (kept apart from the statistics data
// types so that code reading statistics does not link the runtime).
#include <algorithm>
#include <cmath>
#include <limits>
#include <map>

#include "passes/stats.h"

namespace fp4c::passes {

namespace {

// Folds rows of x into the site's running statistics. Each column is reduced over rows in row order,
// so the figures do not depend on the thread count.
void accumulate(SiteStats& s, const float* x, int64_t rows, int64_t cols, bool second_moments) {
  if (s.absmax.empty()) {
    s.absmax.assign(size_t(cols), 0.0f);
    s.min.assign(size_t(cols), std::numeric_limits<float>::infinity());
    s.max.assign(size_t(cols), -std::numeric_limits<float>::infinity());
    s.mean_square.assign(size_t(cols), 0.0);   // holds sums until finish()
    if (second_moments) s.second_moment.assign(size_t(cols * cols), 0.0);
  }
  constexpr int64_t kBlock = 64;
#pragma omp parallel for schedule(static)
  for (int64_t c0 = 0; c0 < cols; c0 += kBlock) {
    const int64_t c1 = std::min(cols, c0 + kBlock);
    for (int64_t r = 0; r < rows; ++r) {
      const float* row = x + r * cols;
      for (int64_t c = c0; c < c1; ++c) {
        const float v = row[c];
        s.absmax[c] = std::max(s.absmax[c], std::fabs(v));
        s.min[c] = std::min(s.min[c], v);
        s.max[c] = std::max(s.max[c], v);
        s.mean_square[c] += double(v) * double(v);
      }
    }
  }
  if (second_moments) {
    // X^T X, upper triangle by rows of the output, mirrored at the end of collection.
#pragma omp parallel for schedule(dynamic, 8)
    for (int64_t i = 0; i < cols; ++i) {
      double* out = s.second_moment.data() + i * cols;
      for (int64_t r = 0; r < rows; ++r) {
        const float* row = x + r * cols;
        const double xi = row[i];
        if (xi == 0) continue;
        for (int64_t j = i; j < cols; ++j) out[j] += xi * double(row[j]);
      }
    }
  }
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
