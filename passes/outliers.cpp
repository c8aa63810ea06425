#include "passes/outliers.h"

#include <omp.h>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <limits>
#include <numeric>

namespace fp4c::passes {

ir::ChannelOutliers channel_outliers(std::span<const float> magnitudes, double k, int top) {
  ir::ChannelOutliers o;
  const size_t n = magnitudes.size();
  o.channels = int64_t(n);
  std::vector<float> v(magnitudes.begin(), magnitudes.end());
  for (float& x : v)
    if (std::isnan(x)) x = 0;  // keeps the orderings below strict weak orderings
  if (n == 0) {
    o.max_over_median = 1;
    return o;
  }

  // Top channels first: the order of `idx` is all we need from v before the median reorders it.
  const size_t t = std::min(n, size_t(std::max(top, 0)));
  std::vector<int64_t> idx(n);
  std::iota(idx.begin(), idx.end(), int64_t(0));
  std::partial_sort(idx.begin(), idx.begin() + t, idx.end(), [&](int64_t a, int64_t b) {
    return v[size_t(a)] != v[size_t(b)] ? v[size_t(a)] > v[size_t(b)] : a < b;
  });
  o.top.reserve(t);
  for (size_t i = 0; i < t; ++i) o.top.emplace_back(idx[i], v[size_t(idx[i])]);

  // Moments in double, in channel order.
  double sum = 0;
  float mx = 0;
  for (float x : v) {
    sum += x;
    mx = std::max(mx, x);
  }
  const double mean = sum / double(n);
  double m2 = 0, m4 = 0;
  for (float x : v) {
    const double d = double(x) - mean, d2 = d * d;
    m2 += d2;
    m4 += d2 * d2;
  }
  m2 /= double(n);
  m4 /= double(n);
  o.kurtosis = m2 > 0 ? m4 / (m2 * m2) - 3.0 : 0.0;
  o.max = mx;

  // Lower middle: element (n-1)/2 of the ascending order.
  std::vector<float> sorted = v;
  auto mid = sorted.begin() + std::ptrdiff_t((n - 1) / 2);
  std::nth_element(sorted.begin(), mid, sorted.end());
  o.median = *mid;
  if (o.median > 0) o.max_over_median = double(o.max) / double(o.median);
  else o.max_over_median = o.max > 0 ? std::numeric_limits<double>::infinity() : 1.0;

  const double threshold = k * double(o.median);
  for (float x : v) o.above_k += double(x) > threshold ? 1 : 0;
  return o;
}

namespace {

// Per-column maxima of magnitude(row[j]) over the rows, OpenMP over rows with per-thread maxima merged in
// thread order, so the result does not depend on the thread count.
template <typename T, typename Magnitude>
std::vector<float> column_max(const T* w, int64_t out, int64_t in, Magnitude magnitude) {
  std::vector<float> result(size_t(std::max<int64_t>(in, 0)), 0.0f);
  if (out <= 0 || in <= 0) return result;
  // Enough rows per thread to pay for its private maxima.
  const int64_t min_rows = std::max<int64_t>(1, (int64_t(1) << 16) / in);
  const int threads = int(std::clamp<int64_t>(out / min_rows, 1, omp_get_max_threads()));
  std::vector<float> partial(size_t(threads) * size_t(in), 0.0f);
#pragma omp parallel num_threads(threads)
  {
    const int64_t t = omp_get_thread_num(), nt = omp_get_num_threads();
    float* m = partial.data() + t * in;
    for (int64_t r = out * t / nt, end = out * (t + 1) / nt; r < end; ++r) {
      const T* row = w + r * in;
#pragma omp simd
      for (int64_t j = 0; j < in; ++j) {
        const float a = magnitude(row[j]);
        m[j] = a > m[j] ? a : m[j];  // a NaN compares false: ignored
      }
    }
  }
  // Maxima merged in thread order (max is exact; threads that got no rows left zeros).
  for (int t = 0; t < threads; ++t) {
    const float* m = partial.data() + size_t(t) * size_t(in);
    for (int64_t j = 0; j < in; ++j) result[size_t(j)] = std::max(result[size_t(j)], m[j]);
  }
  return result;
}

}  // namespace

std::vector<float> column_absmax(std::span<const float> w, int64_t out, int64_t in) {
  return column_max(w.data(), out, in, [](float v) { return std::fabs(v); });
}

Status analyze_outliers(ir::Model& model, const std::function<Expected<std::vector<float>>(ir::TensorId)>& read,
                        const ActivationStats* stats, double k, int top) {
  auto& slots = model.annotations.outliers;
  slots.assign(model.tensors.size(), std::nullopt);
  for (ir::TensorId id : model.linear_weights()) {
    const ir::TensorInfo& t = model.tensors[id];
    const std::string where = "outliers: tensor '" + t.name + "'";
    if (t.shape.size() != 2 || t.shape[0] < 0 || t.shape[1] < 0)
      return make_error(where + ": a Linear weight must be 2-D [out, in], it has " + std::to_string(t.shape.size()) +
                        " dimension(s)");
    const int64_t out = t.shape[0], in = t.shape[1];
    auto values = read(id);
    if (!values.ok()) {
      const std::string& msg = values.error().message;
      return make_error(msg.find(t.name) != std::string::npos ? msg : where + ": " + msg);
    }
    if (int64_t(values->size()) != out * in)
      return make_error(where + ": read " + std::to_string(values->size()) + " values, expected [" +
                        std::to_string(out) + ", " + std::to_string(in) + "] = " + std::to_string(out * in));

    ir::OutlierStats s;
    s.k = k;
    s.weight = channel_outliers(column_absmax(*values, out, in), k, top);
    if (stats && t.layer) {
      // An expert's own routed tokens (or its layer's, below kMinExpertTokens).
      const SiteStats* site = weight_input_stats(stats, t);
      if (site && site->cols() == in) s.activation = channel_outliers(site->absmax, k, top);
    }
    slots[id] = std::move(s);
  }
  return {};
}

namespace {

std::string ratio(double r) {
  if (std::isinf(r)) return "inf";
  char buf[32];
  std::snprintf(buf, sizeof buf, "%.2f", r);
  return buf;
}

std::string top3(const ir::ChannelOutliers& c) {
  std::string s;
  for (size_t i = 0; i < std::min<size_t>(3, c.top.size()); ++i) {
    char buf[48];
    std::snprintf(buf, sizeof buf, "%s%lld:%.3g", i ? " " : "", static_cast<long long>(c.top[i].first),
                  double(c.top[i].second));
    s += buf;
  }
  return s.empty() ? "-" : s;
}

}  // namespace

std::string format_outliers(const ir::Model& model) {
  const auto& slots = model.annotations.outliers;
  std::string text;
  char line[512];
  bool header = false;
  for (ir::TensorId id = 0; id < model.tensors.size() && id < slots.size(); ++id) {
    if (!slots[id]) continue;
    const ir::OutlierStats& s = *slots[id];
    const ir::TensorInfo& t = model.tensors[id];
    if (!header) {
      std::snprintf(line, sizeof line,
                    "outliers (k = %g): weight channels = max |W[:, j]|, activation channels = input absmax\n"
                    "%-44s %-7s %5s %9s %8s %6s %9s %8s %6s  %-32s %s\n",
                    s.k, "module", "role", "layer", "W max/med", "W kurt", "W >k", "A max/med", "A kurt", "A >k",
                    "W top", "A top");
      text += line;
      header = true;
    }
    const std::string layer = t.layer ? std::to_string(*t.layer) : "-";
    const auto& w = s.weight;
    if (s.activation) {
      const auto& a = *s.activation;
      std::snprintf(line, sizeof line, "%-44s %-7s %5s %9s %8.2f %6lld %9s %8.2f %6lld  %-32s %s\n", t.module.c_str(),
                    std::string(ir::role_name(t.role)).c_str(), layer.c_str(), ratio(w.max_over_median).c_str(),
                    w.kurtosis, static_cast<long long>(w.above_k), ratio(a.max_over_median).c_str(), a.kurtosis,
                    static_cast<long long>(a.above_k), top3(w).c_str(), top3(a).c_str());
    } else {
      std::snprintf(line, sizeof line, "%-44s %-7s %5s %9s %8.2f %6lld %9s %8s %6s  %-32s %s\n", t.module.c_str(),
                    std::string(ir::role_name(t.role)).c_str(), layer.c_str(), ratio(w.max_over_median).c_str(),
                    w.kurtosis, static_cast<long long>(w.above_k), "-", "-", "-", top3(w).c_str(), "-");
    }
    text += line;
  }
  if (!header) text = "outliers: no Linear analysed\n";
  return text;
}

}  // namespace fp4c::passes
