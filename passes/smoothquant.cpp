#include "passes/smoothquant.h"

#include <algorithm>
#include <cmath>
#include <string>

namespace fp4c::passes {

std::vector<float> smoothing_factors(const SiteStats& site, const std::vector<const runtime::LinearParams*>& balanced,
                                     float alpha, float min_scale) {
  const int64_t cols = site.cols();
  std::vector<float> max_w(static_cast<size_t>(cols), 0.0f);
  for (const runtime::LinearParams* p : balanced) {
    const int64_t in = std::min(p->in, cols);
    for (int64_t r = 0; r < p->out; ++r) {
      const float* row = p->weight.data() + r * p->in;
      for (int64_t j = 0; j < in; ++j) max_w[size_t(j)] = std::max(max_w[size_t(j)], std::fabs(row[j]));
    }
  }
  std::vector<float> s(static_cast<size_t>(cols));
  for (int64_t j = 0; j < cols; ++j) {
    const double range = double(site.max[size_t(j)]) - double(site.min[size_t(j)]);
    const double w = max_w[size_t(j)];
    double v = w > 0 ? std::pow(range, double(alpha)) / std::pow(2.0 * w, 1.0 - double(alpha)) : range;
    if (!(v >= double(min_scale))) v = min_scale;  // also catches NaN
    s[size_t(j)] = float(v);
  }
  return s;
}

void apply_smoothing(std::vector<float>& norm_weight, const std::vector<runtime::LinearParams*>& balanced,
                     const std::vector<float>& s) {
  const size_t n = std::min(norm_weight.size(), s.size());
  for (size_t j = 0; j < n; ++j) norm_weight[j] /= s[j];
  for (runtime::LinearParams* p : balanced) {
    const int64_t in = std::min(p->in, int64_t(s.size()));
    for (int64_t r = 0; r < p->out; ++r) {
      float* row = p->weight.data() + r * p->in;
      for (int64_t j = 0; j < in; ++j) row[j] *= s[size_t(j)];
    }
  }
}

namespace {

Status check_widths(const SiteStats* site, int layer, const char* site_name,
                    const std::vector<const runtime::LinearParams*>& balanced, size_t norm_size) {
  const std::string where = "smoothquant: layer " + std::to_string(layer) + " " + site_name;
  if (!site) return make_error(where + ": no activation statistics for this site");
  const int64_t cols = site->cols();
  if (int64_t(site->min.size()) != cols || int64_t(site->max.size()) != cols)
    return make_error(where + ": statistics lack per-channel min/max");
  if (int64_t(norm_size) != cols)
    return make_error(where + ": norm has " + std::to_string(norm_size) + " channels, statistics " +
                      std::to_string(cols));
  for (const auto* p : balanced)
    if (p->in != cols || int64_t(p->weight.size()) != p->in * p->out)
      return make_error(where + ": a balanced Linear has " + std::to_string(p->in) + " inputs, statistics " +
                        std::to_string(cols) + " channels");
  return {};
}

}  // namespace

Expected<std::vector<LayerFactors>> compute_smoothquant(const ActivationStats& stats, runtime::WeightSource& weights,
                                                        int layers, float alpha, float min_scale) {
  if (!(alpha >= 0.0f && alpha <= 1.0f))
    return make_error("smoothquant: alpha must lie in [0, 1], got " + std::to_string(alpha));
  std::vector<LayerFactors> out(size_t(std::max(layers, 0)));
  for (int i = 0; i < layers; ++i) {
    FP4C_ASSIGN(runtime::LayerParams p, weights.layer(i));
    const SiteStats* q = stats.find(i, ir::Role::Q);
    const SiteStats* g = stats.find(i, ir::Role::Gate);
    const std::vector<const runtime::LinearParams*> attn{&p.q, &p.k, &p.v}, mlp{&p.gate, &p.up};
    FP4C_TRY(check_widths(q, i, "input_layernorm -> q/k/v", attn, p.input_norm.size()));
    FP4C_TRY(check_widths(g, i, "post_attention_layernorm -> gate/up", mlp, p.post_norm.size()));
    out[size_t(i)].attn = smoothing_factors(*q, attn, alpha, min_scale);
    out[size_t(i)].mlp = smoothing_factors(*g, mlp, alpha, min_scale);
  }
  return out;
}

Expected<runtime::LayerParams> SmoothedWeights::layer(int index) {
  FP4C_ASSIGN(runtime::LayerParams p, inner_.layer(index));
  if (index < 0 || size_t(index) >= factors_.size()) return p;
  const LayerFactors& f = factors_[size_t(index)];
  auto fold = [&](std::vector<float>& norm, std::vector<runtime::LinearParams*> balanced, const std::vector<float>& s,
                  const char* name) -> Status {
    if (s.empty()) return {};
    if (s.size() != norm.size())
      return make_error("smoothquant: layer " + std::to_string(index) + " " + name + ": " + std::to_string(s.size()) +
                        " factors for a norm of " + std::to_string(norm.size()));
    for (const auto* b : balanced)
      if (b->in != int64_t(s.size()))
        return make_error("smoothquant: layer " + std::to_string(index) + " " + name + ": " +
                          std::to_string(s.size()) + " factors for a Linear of " + std::to_string(b->in) + " inputs");
    apply_smoothing(norm, balanced, s);
    return {};
  };
  FP4C_TRY(fold(p.input_norm, {&p.q, &p.k, &p.v}, f.attn, "input_layernorm -> q/k/v"));
  FP4C_TRY(fold(p.post_norm, {&p.gate, &p.up}, f.mlp, "post_attention_layernorm -> gate/up"));
  return p;
}

}  // namespace fp4c::passes
