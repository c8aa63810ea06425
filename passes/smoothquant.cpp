#include "passes/smoothquant.h"

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <string>

#include "formats/bf16.h"
#include "formats/convert.h"
#include "passes/outliers.h"
#include "runtime/checkpoint_weights.h"

namespace fp4c::passes {

std::vector<float> smoothing_factors(const SiteStats& site, const std::vector<float>& max_w, float alpha,
                                     float min_scale) {
  const int64_t cols = site.cols();
  std::vector<float> s(static_cast<size_t>(cols));
  for (int64_t j = 0; j < cols; ++j) {
    const double range = double(site.max[size_t(j)]) - double(site.min[size_t(j)]);
    const double w = j < int64_t(max_w.size()) ? max_w[size_t(j)] : 0.0;
    double v = w > 0 ? std::pow(range, double(alpha)) / std::pow(2.0 * w, 1.0 - double(alpha)) : range;
    if (!(v >= double(min_scale))) v = min_scale;  // also catches NaN
    s[size_t(j)] = float(v);
  }
  return s;
}

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
  return smoothing_factors(site, max_w, alpha, min_scale);
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

namespace {

std::optional<ir::TensorId> find_tensor(const ir::Model& model, int layer, ir::Role role, ir::ParamKind kind) {
  for (ir::TensorId id = 0; id < model.tensors.size(); ++id) {
    const auto& t = model.tensors[id];
    if (t.layer == layer && t.role == role && t.kind == kind) return id;
  }
  return std::nullopt;
}

// max |W[:, j]| of a [out, in] weight as the model now holds it; an untouched BF16 weight straight from its
// bytes.
// (The BF16 source's maxima are kept in model.annotations.source_column_absmax_bits for pack.)
Expected<std::vector<float>> weight_column_absmax(ir::Model& model, const safetensors::Checkpoint::Ref& ref,
                                                  ir::TensorId id) {
  const ir::TensorInfo& t = model.tensors[id];
  if (t.shape.size() != 2) return make_error("smoothquant: '" + t.name + "' is not a matrix");
  const int64_t rows = t.shape[0], cols = t.shape[1];
  if (!model.transformed(id) && ref.entry->dtype == DType::BF16 && ref.entry->nbytes() == uint64_t(rows * cols * 2)) {
    const auto bytes = ref.file->bytes(*ref.entry);
    auto bits = runtime::column_absmax_bits_bf16(reinterpret_cast<const uint16_t*>(bytes.data()), rows, cols);
    ref.file->release(*ref.entry);   // not kept resident until pack: a 7B model's balanced weights are ~10 GB
    std::vector<float> out(bits.size());
    for (size_t j = 0; j < bits.size(); ++j)
      out[j] = bits[j] > 0x7F80 ? 0.0f : bf16::to_float(bits[j]);   // a NaN column: pack reports it
    auto& cache = model.annotations.source_column_absmax_bits;
    cache.resize(model.tensors.size());
    cache[id] = std::move(bits);
    return out;
  }
  FP4C_ASSIGN(auto v, runtime::read_tensor(model, ref, id, false));
  return column_absmax(v, rows, cols);
}

void compose(std::vector<float>& slot, const std::vector<float>& s, bool inverse) {
  if (slot.empty()) slot.assign(s.size(), 1.0f);
  for (size_t j = 0; j < s.size(); ++j) slot[j] = inverse ? float(double(slot[j]) / double(s[j])) : slot[j] * s[j];
}

void record_smoothing(ir::Model& model, int layer, ir::SmoothingMapping mapping, ir::TensorId smooth,
                      const std::vector<ir::TensorId>& balanced, float alpha, const std::vector<float>& s) {
  ir::Smoothing rec;
  rec.layer = layer;
  rec.mapping = mapping;
  rec.smooth = smooth;
  rec.balanced = balanced;
  rec.alpha = alpha;
  std::vector<float> sorted = s;
  std::sort(sorted.begin(), sorted.end());
  if (!sorted.empty()) {
    rec.factor_min = sorted.front();
    rec.factor_max = sorted.back();
    rec.factor_median = sorted[(sorted.size() - 1) / 2];
  }
  model.annotations.smoothing.push_back(std::move(rec));
}

}  // namespace

void fold_norm_smoothing(ir::Model& model, int layer, ir::SmoothingMapping mapping, ir::TensorId norm,
                         const std::vector<ir::TensorId>& balanced, float alpha, const std::vector<float>& s) {
  auto& a = model.annotations;
  a.channel_scale.resize(model.tensors.size());
  a.row_scale.resize(model.tensors.size());
  compose(a.channel_scale[norm], s, /*inverse=*/true);
  for (ir::TensorId b : balanced) compose(a.channel_scale[b], s, false);
  record_smoothing(model, layer, mapping, norm, balanced, alpha, s);
}

std::vector<float> rewritten_norm(const ir::Model& model, ir::TensorId norm, const std::vector<float>& norm_weight,
                                  const std::vector<float>& s) {
  std::vector<float> v(norm_weight.size());
  for (size_t j = 0; j < v.size(); ++j) v[j] = norm_weight[j] * float(1.0 / double(s[j]));  // as compose + apply_transform
  round_to_dtype(v.data(), int64_t(v.size()), model.tensors[norm].dtype);
  return v;
}

std::vector<float> smoothed_input_scale(const std::vector<float>& norm_weight, const std::vector<float>& rewritten) {
  std::vector<float> m(norm_weight.size());
  for (size_t j = 0; j < m.size(); ++j) m[j] = norm_weight[j] != 0.0f ? rewritten[j] / norm_weight[j] : 1.0f;
  return m;
}

Status smooth_model(ir::Model& model, std::span<const safetensors::Checkpoint::Ref> refs,
                    const ActivationStats& stats, const SmoothQuantOptions& options) {
  if (!(options.alpha >= 0.0f && options.alpha <= 1.0f))
    return make_error("smoothquant: alpha must lie in [0, 1], got " + std::to_string(options.alpha));
  if (!(options.min_scale > 0.0f)) return make_error("smoothquant: min_scale must be positive");
  if (refs.size() != model.tensors.size()) return make_error("smoothquant: tensor refs do not match the model");
  if (model.config.norm_plus_one)
    return make_error("smoothquant: " + model.config.architecture +
                      "'s norms compute x * (1 + w), so a smoothing cannot be folded into the norm weight as a "
                      "per-channel scale; SmoothQuant on this architecture is not implemented (use a recipe "
                      "without it, e.g. plain or auto)");
  auto& a = model.annotations;
  a.channel_scale.resize(model.tensors.size());
  a.row_scale.resize(model.tensors.size());

  struct Mapping {
    int layer;
    ir::SmoothingMapping name;
    ir::Role site;                         // the statistics' site
    ir::TensorId smooth;                   // divided: a norm (elements) or a Linear (rows, and its bias)
    std::optional<ir::TensorId> smooth_bias;
    bool smooth_rows;
    std::vector<ir::TensorId> balanced;    // columns multiplied
    // Columns multiplied too, not counted in the factors (a sparse MoE layer's BF16 router, which reads the MLP
    // norm's output with its experts).
    std::vector<ir::TensorId> also_scaled;
  };
  std::vector<Mapping> mappings;
  for (const ir::ActivationSite& site : model.sites) {
    if (site.consumers.empty()) continue;
    const auto& first = model.tensors[site.consumers.front()];
    if (!first.layer || (first.role != ir::Role::Q && first.role != ir::Role::Gate)) continue;
    mappings.push_back({*first.layer, first.role == ir::Role::Q ? ir::SmoothingMapping::Attention : ir::SmoothingMapping::Mlp, first.role, site.producer,
                        std::nullopt, false, site.consumers, {}});
    // A sparse MoE layer's MLP site: every expert's gate and up balanced together (one factor per channel, the
    // statistics of the norm's output over every token), and the router's columns multiplied by the same factors
    // so that its logits do not change.
    if (first.role == ir::Role::Gate && model.config.moe_layer(*first.layer)) {
      auto router = find_tensor(model, *first.layer, ir::Role::Router, ir::ParamKind::Weight);
      if (!router) return make_error("smoothquant: layer " + std::to_string(*first.layer) + " has no router");
      mappings.back().also_scaled.push_back(*router);
    }
  }
  if (options.extra) {
    const auto& c = model.config;
    for (int l = 0; l < int(c.num_hidden_layers); ++l) {
      // up -> down per expert is not implemented: a sparse layer's experts keep their up and down as they are.
      auto up = c.moe_layer(l) ? std::nullopt : find_tensor(model, l, ir::Role::Up, ir::ParamKind::Weight);
      auto down = find_tensor(model, l, ir::Role::Down, ir::ParamKind::Weight);
      if (up && down)
        mappings.push_back({l, ir::SmoothingMapping::UpDown, ir::Role::Down, *up,
                            find_tensor(model, l, ir::Role::Up, ir::ParamKind::Bias), true, {*down}});
      auto v = find_tensor(model, l, ir::Role::V, ir::ParamKind::Weight);
      auto o = find_tensor(model, l, ir::Role::O, ir::ParamKind::Weight);
      if (v && o && c.num_key_value_heads == c.num_attention_heads)
        mappings.push_back({l, ir::SmoothingMapping::VO, ir::Role::O, *v, find_tensor(model, l, ir::Role::V, ir::ParamKind::Bias), true,
                            {*o}});
    }
  }
  std::stable_sort(mappings.begin(), mappings.end(), [](const Mapping& x, const Mapping& y) { return x.layer < y.layer; });

  for (const Mapping& m : mappings) {
    const std::string where = "smoothquant: layer " + std::to_string(m.layer) + " " + std::string(ir::mapping_name(m.name));
    const SiteStats* site = stats.find(m.layer, m.site);
    if (!site) return make_error(where + ": no activation statistics for this site (run 'stats' first)");
    const int64_t cols = site->cols();
    if (int64_t(site->min.size()) != cols || int64_t(site->max.size()) != cols)
      return make_error(where + ": statistics lack per-channel min/max");
    const auto& smooth = model.tensors[m.smooth];
    const int64_t smooth_width = m.smooth_rows ? (smooth.shape.empty() ? 0 : smooth.shape[0])
                                               : (smooth.shape.empty() ? 0 : smooth.shape.back());
    if (smooth_width != cols)
      return make_error(where + ": '" + smooth.name + "' has " + std::to_string(smooth_width) + " channels, statistics " +
                        std::to_string(cols));
    std::vector<float> max_w(size_t(cols), 0.0f);
    for (ir::TensorId b : m.balanced) {
      const auto& t = model.tensors[b];
      if (t.shape.size() != 2 || t.shape[1] != cols)
        return make_error(where + ": '" + t.name + "' has " + std::to_string(t.shape.size() == 2 ? t.shape[1] : 0) +
                          " inputs, statistics " + std::to_string(cols) + " channels");
      FP4C_ASSIGN(auto cm, weight_column_absmax(model, refs[b], b));
      for (int64_t j = 0; j < cols; ++j) max_w[size_t(j)] = std::max(max_w[size_t(j)], cm[size_t(j)]);
    }
    const std::vector<float> s = smoothing_factors(*site, max_w, options.alpha, options.min_scale);
    if (m.smooth_rows) {
      compose(a.row_scale[m.smooth], s, /*inverse=*/true);
      if (m.smooth_bias) compose(a.channel_scale[*m.smooth_bias], s, true);
      for (ir::TensorId b : m.balanced) compose(a.channel_scale[b], s, false);
      record_smoothing(model, m.layer, m.name, m.smooth, m.balanced, options.alpha, s);
    } else {
      std::vector<ir::TensorId> scaled = m.balanced;
      scaled.insert(scaled.end(), m.also_scaled.begin(), m.also_scaled.end());
      fold_norm_smoothing(model, m.layer, m.name, m.smooth, scaled, options.alpha, s);
    }
  }
  return {};
}

std::string format_smoothing(const ir::Model& model) {
  std::string out;
  char line[256];
  std::snprintf(line, sizeof line, "%-6s %-9s %-48s %6s %12s %12s %12s\n", "layer", "mapping", "smoothed", "alpha",
                "s min", "s median", "s max");
  out += line;
  for (const auto& r : model.annotations.smoothing) {
    std::snprintf(line, sizeof line, "%-6d %-9s %-48s %6.2f %12.5g %12.5g %12.5g\n", r.layer, std::string(ir::mapping_name(r.mapping)).c_str(),
                  model.tensors[r.smooth].name.c_str(), r.alpha, r.factor_min, r.factor_median, r.factor_max);
    out += line;
  }
  if (model.annotations.smoothing.empty()) out += "(no site smoothed)\n";
  return out;
}

}  // namespace fp4c::passes
