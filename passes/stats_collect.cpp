// collect_stats: drives the runtime over the calibration set (kept apart from the statistics data
// types so that code reading statistics does not link the runtime).
#include <algorithm>
#include <cmath>
#include <limits>
#include <map>
#include <vector>

#include "base/profile.h"
#include "passes/channel_stats.h"
#include "passes/second_moments.h"
#include "passes/stats.h"

namespace fp4c::passes {

namespace {

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
