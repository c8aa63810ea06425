#include "passes/sensitivity.h"

#include <algorithm>
#include <array>
#include <cmath>
#include <cstdio>
#include <limits>
#include <map>
#include <optional>

#include "formats/nvfp4.h"
#include "quant/eval_metrics.h"
#include "quant/output_error.h"

namespace fp4c::passes {
namespace {

constexpr std::array<ir::Role, 7> kRoles{ir::Role::Q,    ir::Role::K,  ir::Role::V,   ir::Role::O,
                                         ir::Role::Gate, ir::Role::Up, ir::Role::Down};

// A layer's Linear slots: the seven of kRoles, then (MoE) each expert's gate, up and down: 7 + 3 e + {0, 1, 2}.
size_t slot_count(const ir::ModelConfig& c) { return 7 + 3 * size_t(std::max<int64_t>(c.num_experts, 0)); }

int role_slot(ir::Role r, std::optional<int> expert = std::nullopt) {
  if (expert) {
    const int base = 7 + 3 * *expert;
    if (r == ir::Role::Gate) return base;
    if (r == ir::Role::Up) return base + 1;
    if (r == ir::Role::Down) return base + 2;
    return -1;
  }
  for (size_t k = 0; k < kRoles.size(); ++k)
    if (kRoles[k] == r) return int(k);
  return -1;
}

runtime::LinearParams& member(runtime::LayerParams& p, size_t k) {
  if (k >= 7) {
    auto& e = p.experts.at((k - 7) / 3);
    runtime::LinearParams* m[3] = {&e.gate, &e.up, &e.down};
    return *m[(k - 7) % 3];
  }
  runtime::LinearParams* m[7] = {&p.q, &p.k, &p.v, &p.o, &p.gate, &p.up, &p.down};
  return *m[k];
}

int64_t elements(const ir::TensorInfo& t) {
  int64_t n = 1;
  for (int64_t d : t.shape) n *= d;
  return n;
}

std::string fmt(const char* f, double v) {
  char buf[64];
  std::snprintf(buf, sizeof buf, f, v);
  return buf;
}

// Where each layer's seven Linear weights are in the IR.
struct LinearIndex {
  std::vector<std::vector<std::optional<ir::TensorId>>> ids;     // [layer][slot]
  std::vector<std::pair<int, int>> where;                        // per tensor: (layer, slot) or (-1, -1)

  explicit LinearIndex(const ir::Model& model, int layers)
      : ids(size_t(layers), std::vector<std::optional<ir::TensorId>>(slot_count(model.config))),
        where(model.tensors.size(), {-1, -1}) {
    for (ir::TensorId id = 0; id < model.tensors.size(); ++id) {
      const ir::TensorInfo& t = model.tensors[id];
      const int slot = role_slot(t.role, t.expert);
      if (slot >= int(slot_count(model.config))) continue;
      if (t.kind != ir::ParamKind::Weight || slot < 0 || !t.layer || *t.layer < 0 || *t.layer >= layers) continue;
      ids[size_t(*t.layer)][size_t(slot)] = id;
      where[id] = {*t.layer, slot};
    }
  }
};

// The weights of one layer as NVFP4 would make them: each chosen Linear's weight replaced by its
// round trip (global scale from the max |W| over its fused group, max rule) and, for W4A4, its input
// global scale set. `chosen[slot]`.
void quantize_members(const ir::Model& model, const LinearIndex& index, int layer, const std::vector<bool>& chosen,
                      runtime::LayerParams& p) {
  const auto& ids = index.ids[size_t(layer)];
  for (size_t k = 0; k < ids.size(); ++k) {
    if (!chosen[k] || !ids[k]) continue;
    runtime::LinearParams& lin = member(p, k);
    float amax = nvfp4::amax_f32(lin.weight);
    if (const ir::FusedGroup* g = model.group_of(*ids[k]))
      for (ir::TensorId m : g->members) {
        const auto [l, slot] = index.where[m];
        if (l == layer && slot >= 0 && size_t(slot) != k) amax = std::max(amax, nvfp4::amax_f32(member(p, size_t(slot)).weight));
      }
    lin.weight = quant::nvfp4_round_trip(lin.weight.data(), lin.out, lin.in, nvfp4::global_scale(amax));
    const auto& d = model.annotations.decision[*ids[k]];
    if (d.input_amax) lin.input_global_scale = nvfp4::global_scale(*d.input_amax);
  }
}

// Another source with only one unit's Linears quantized.
class OneUnitQuantized : public runtime::WeightSource {
 public:
  OneUnitQuantized(runtime::WeightSource& inner, const ir::Model& model, const LinearIndex& index,
                   const SensitivityUnit& unit)
      : inner_(inner), model_(model), index_(index) {
    for (ir::TensorId m : unit.members) {
      const auto [l, slot] = index.where[m];
      if (l < 0) continue;
      auto& c = chosen_[l];
      c.resize(slot_count(model.config));
      c[size_t(slot)] = true;
    }
  }
  Expected<std::vector<float>> embedding() override { return inner_.embedding(); }
  Expected<std::vector<float>> embedding_rows(std::span<const int32_t> ids, int64_t hidden) override {
    return inner_.embedding_rows(ids, hidden);
  }
  Expected<runtime::LayerParams> layer(int i) override {
    FP4C_ASSIGN(runtime::LayerParams p, inner_.layer(i));
    if (auto it = chosen_.find(i); it != chosen_.end()) quantize_members(model_, index_, i, it->second, p);
    return p;
  }
  Expected<std::vector<float>> final_norm() override { return inner_.final_norm(); }
  Expected<runtime::LinearParams> lm_head() override { return inner_.lm_head(); }

 private:
  runtime::WeightSource& inner_;
  const ir::Model& model_;
  const LinearIndex& index_;
  std::map<int, std::vector<bool>> chosen_;
};

}  // namespace

UnitSelection select_units(const std::vector<SensitivityUnit>& units, int64_t total_parameters,
                           double budget_percent, int max_layers) {
  UnitSelection s;
  s.order.resize(units.size());
  for (size_t u = 0; u < units.size(); ++u) s.order[u] = u;
  auto key = [&](size_t u) {
    const double v = units[u].score;
    return std::isnan(v) ? std::numeric_limits<double>::infinity() : v;
  };
  std::stable_sort(s.order.begin(), s.order.end(), [&](size_t a, size_t b) {
    const double ka = key(a), kb = key(b);
    if (ka != kb) return ka > kb;
    return std::isnan(units[a].score) && !std::isnan(units[b].score);
  });
  s.rank.resize(units.size());
  for (size_t r = 0; r < s.order.size(); ++r) s.rank[s.order[r]] = r + 1;
  s.kept.assign(units.size(), false);
  const double budget = std::max(0.0, double(total_parameters) * budget_percent / 100.0);
  s.budget_parameters = int64_t(std::floor(budget));
  int kept_units = 0;
  for (size_t u : s.order) {
    if (max_layers > 0 && kept_units >= max_layers) break;
    if (s.kept_parameters + units[u].parameters > s.budget_parameters) continue;
    s.kept[u] = true;
    s.kept_parameters += units[u].parameters;
    ++kept_units;
  }
  return s;
}

Expected<std::vector<std::pair<ir::TensorId, ir::SkipReason>>> run_sensitivity(
    ir::Model& model, const runtime::Forward& forward, runtime::WeightSource& weights,
    const std::vector<std::vector<int32_t>>& sequences, const SensitivityOptions& options,
    const std::function<void(int, int)>& progress) {
  const auto& decisions = model.annotations.decision;
  if (decisions.size() != model.tensors.size())
    return make_error("sensitivity: needs a weight plan (which Linears are NVFP4) first");
  if (sequences.empty()) return make_error("sensitivity: the calibration set has no sequences");
  if (!(options.budget_percent >= 0) || options.budget_percent > 100)
    return make_error("sensitivity: budget " + fmt("%g", options.budget_percent) + "% outside [0, 100]");
  const int layers = int(forward.config().num_hidden_layers);
  const LinearIndex index(model, layers);

  // The units, in tensor order of their first member.
  std::vector<SensitivityUnit> units;
  std::vector<bool> seen(model.tensors.size(), false);
  int64_t total = 0;
  for (ir::TensorId id : model.linear_weights()) {
    if (seen[id] || decisions[id].format != ir::Format::NVFP4) continue;
    SensitivityUnit u;
    if (const ir::FusedGroup* g = model.group_of(id)) {
      for (ir::TensorId m : g->members)
        if (decisions[m].format == ir::Format::NVFP4 && !seen[m]) u.members.push_back(m);
    } else {
      u.members.push_back(id);
    }
    std::sort(u.members.begin(), u.members.end());
    for (ir::TensorId m : u.members) {
      seen[m] = true;
      if (index.where[m].first < 0)
        return make_error("sensitivity: '" + model.tensors[m].name + "' is planned NVFP4 but is not a decoder layer's Linear");
      u.parameters += elements(model.tensors[m]);
    }
    total += u.parameters;
    units.push_back(std::move(u));
  }

  // Output error of each NVFP4 Linear on the unquantized model's stream.
  std::vector<quant::OutputError> error(model.tensors.size());
  {
    FP4C_ASSIGN(runtime::Activations acts, forward.embed(weights, sequences));
    for (int i = 0; i < layers; ++i) {
      FP4C_ASSIGN(runtime::LayerParams p, weights.layer(i));
      const size_t slots = index.ids[size_t(i)].size();
      std::vector<bool> chosen(slots, false);
      bool any = false;
      for (size_t k = 0; k < slots; ++k) {
        const auto& id = index.ids[size_t(i)][k];
        chosen[k] = id && decisions[*id].format == ir::Format::NVFP4;
        any |= chosen[k];
      }
      if (any) {
        for (size_t k = 0; k < slots; ++k) {
          if (!chosen[k]) continue;
          const runtime::LinearParams& lin = member(p, k);
          const ir::TensorInfo& t = model.tensors[*index.ids[size_t(i)][k]];
          if (t.shape.size() != 2 || t.shape[0] != lin.out || t.shape[1] != lin.in)
            return make_error("sensitivity: '" + t.name + "': the weights source gives [" + std::to_string(lin.out) +
                              ", " + std::to_string(lin.in) + "]");
          if (lin.in % nvfp4::kBlock != 0)
            return make_error("sensitivity: '" + t.name + "' is planned NVFP4 but in_features " +
                              std::to_string(lin.in) + " is not a multiple of 16");
        }
        runtime::LayerParams quantized = p;
        quantize_members(model, index, i, chosen, quantized);
        auto hook = [&](const runtime::LinearInput& in) {
          size_t first = 0, last = 0;   // the slots [first, last) fed by this input
          if (in.expert >= 0) {   // an expert's routed tokens: its gate and up, or its down
            first = 7 + 3 * size_t(in.expert) + (in.role == ir::Role::Down ? 2 : 0);
            last = in.role == ir::Role::Down ? first + 1 : first + 2;
          } else switch (in.role) {
            case ir::Role::Q: first = 0, last = 3; break;
            case ir::Role::O: first = 3, last = 4; break;
            case ir::Role::Gate: first = 4, last = 6; break;
            case ir::Role::Down: first = 6, last = 7; break;
            default: return;
          }
          for (size_t k = first; k < last; ++k) {
            if (!chosen[k]) continue;
            const runtime::LinearParams& r = member(const_cast<runtime::LayerParams&>(p), k);
            const runtime::LinearParams& c = member(quantized, k);
            error[*index.ids[size_t(i)][k]].merge(quant::linear_output_error(in.x, in.rows, in.cols, r.weight.data(),
                                                                      c.weight.data(), r.out, c.input_global_scale));
          }
        };
        FP4C_TRY(forward.layer(i, p, acts, hook));
      } else {
        FP4C_TRY(forward.layer(i, p, acts));
      }
      if (progress) progress(i + 1, layers);
    }
  }

  std::vector<double> unit_error(units.size(), 0);
  for (size_t u = 0; u < units.size(); ++u) {
    quant::OutputError e;
    for (ir::TensorId m : units[u].members) e.merge(error[m]);
    unit_error[u] = e.relative();
    units[u].score = unit_error[u];
  }
  std::vector<std::optional<double>> unit_kl(units.size());
  if (options.kl) {
    for (size_t u = 0; u < units.size(); ++u) {
      OneUnitQuantized candidate(weights, model, index, units[u]);
      FP4C_ASSIGN(quant::EvalResult r, quant::evaluate(forward, weights, &candidate, sequences));
      unit_kl[u] = r.kl_mean.value_or(0.0);
      units[u].score = *unit_kl[u];
      if (progress) progress(int(u + 1), int(units.size()));
    }
  }

  const UnitSelection sel = select_units(units, total, options.budget_percent, options.max_layers);
  auto& annotations = model.annotations.sensitivity;
  annotations.assign(model.tensors.size(), std::nullopt);
  std::vector<std::pair<ir::TensorId, ir::SkipReason>> keep;
  const std::string of = " of " + std::to_string(units.size()) + ", budget " + fmt("%g", options.budget_percent) + "%";
  for (size_t u = 0; u < units.size(); ++u) {
    for (ir::TensorId m : units[u].members)
      annotations[m] = ir::Sensitivity{error[m].relative(), unit_kl[u], int(sel.rank[u])};
    if (!sel.kept[u]) continue;
    std::string detail = options.kl ? "kl " + fmt("%.4g", *unit_kl[u]) + " (output error " + fmt("%.4g", unit_error[u]) + ")"
                                    : "output error " + fmt("%.4g", unit_error[u]);
    detail += ", rank " + std::to_string(sel.rank[u]) + of;
    for (ir::TensorId m : units[u].members) keep.emplace_back(m, ir::SkipReason{ir::SkipKind::Sensitivity, detail});
  }
  std::sort(keep.begin(), keep.end(), [](const auto& a, const auto& b) { return a.first < b.first; });
  return keep;
}

std::string format_sensitivity(const ir::Model& model) {
  const auto& s = model.annotations.sensitivity;
  std::vector<ir::TensorId> ids;
  for (ir::TensorId id = 0; id < s.size() && id < model.tensors.size(); ++id)
    if (s[id]) ids.push_back(id);
  std::stable_sort(ids.begin(), ids.end(), [&](ir::TensorId a, ir::TensorId b) { return s[a]->rank < s[b]->rank; });
  bool kl = false;
  for (ir::TensorId id : ids) kl |= s[id]->kl.has_value();
  std::string out = "sensitivity: " + std::to_string(ids.size()) + " NVFP4 Linears\n";
  char line[512];
  std::snprintf(line, sizeof line, "%5s  %12s  %12s  %10s  %-6s  %s\n", "rank", "output_error", kl ? "kl" : "",
                "params", "format", "module");
  out += line;
  for (ir::TensorId id : ids) {
    const ir::Sensitivity& e = *s[id];
    const ir::TensorInfo& t = model.tensors[id];
    std::string format = "nvfp4";
    if (id < model.annotations.decision.size()) {
      const ir::Decision& d = model.annotations.decision[id];
      format = std::string(ir::format_name(d.format));
      if (d.skip) format += " (" + std::string(ir::skip_kind_name(d.skip->kind)) + ")";
    }
    std::snprintf(line, sizeof line, "%5d  %12.4e  %12s  %10lld  %-6s  %s\n", e.rank, e.output_error,
                  e.kl ? fmt("%.4e", *e.kl).c_str() : "", static_cast<long long>(elements(t)), format.c_str(),
                  t.module.c_str());
    out += line;
  }
  return out;
}

}  // namespace fp4c::passes
