#include "passes/auto_quantizer.h"

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <map>
#include <optional>
#include <span>

#include "formats/hash.h"
#include "formats/nvfp4.h"
#include "passes/output_error.h"
#include "passes/quantizers.h"

namespace fp4c::passes {
namespace {

// At most this many bytes of chosen results are kept for pack; beyond, pack computes the rest again.
constexpr uint64_t kPrequantizedBytes = uint64_t(1) << 30;

const runtime::LinearParams* slot(const runtime::LayerParams& p, ir::Role role) {
  switch (role) {
    case ir::Role::Q: return &p.q;
    case ir::Role::K: return &p.k;
    case ir::Role::V: return &p.v;
    case ir::Role::O: return &p.o;
    case ir::Role::Gate: return &p.gate;
    case ir::Role::Up: return &p.up;
    case ir::Role::Down: return &p.down;
    default: return nullptr;
  }
}

}  // namespace

Status choose_quantizers(ir::Model& model, const runtime::Forward& forward, runtime::WeightSource& weights,
                         const ActivationStats& fit, const std::vector<std::vector<int32_t>>& heldout,
                         const AutoOptions& options, const std::function<void(int layer, int layers)>& progress) {
  const auto& decisions = model.annotations.decision;
  if (decisions.size() != model.tensors.size()) return make_error("auto: the weight plan has not run");
  if (heldout.empty()) return make_error("auto: no held-out calibration sequences to measure on");
  const std::vector<Quantizer> candidates = auto_candidates(options.gptq);

  // NVFP4 Linear weights by (layer, role).
  std::map<std::pair<int, ir::Role>, ir::TensorId> linear;
  for (ir::TensorId id = 0; id < model.tensors.size(); ++id) {
    const auto& t = model.tensors[id];
    if (t.layer && t.kind == ir::ParamKind::Weight && ir::is_linear(t.role) && decisions[id].format == ir::Format::NVFP4)
      linear[{*t.layer, t.role}] = id;
  }
  std::vector<std::vector<OutputError>> errors(model.tensors.size());
  // The bytes of every candidate of the current layer's Linears (those pack would have to recompute:
  // GPTQ and local-Hessian), until the layer's units are decided.
  struct Result {
    std::vector<uint8_t> packed, scales;
    nvfp4::ErrorStats err;
    hash::Digest weight;
    float G = 0;
  };
  std::map<ir::TensorId, std::vector<std::optional<Result>>> layer_results;
  auto& prequantized = model.annotations.prequantized;
  prequantized.assign(model.tensors.size(), std::nullopt);
  uint64_t kept_bytes = 0;
  const uint8_t zero_code = uint8_t(nvfp4::ZeroScale::CompressedTensors);
  auto& choice = model.annotations.choice;
  choice.assign(model.tensors.size(), std::nullopt);
  // Units (fused groups decided together) of the Linears measured so far that have no choice yet.
  const auto decide = [&] {
    for (const auto& [key, id] : linear) {
      if (choice[id] || errors[id].empty()) continue;
      std::vector<ir::TensorId> unit{id};
      if (const ir::FusedGroup* g = model.group_of(id)) unit = g->members;
      size_t best = 0;
      double best_err = INFINITY;
      for (size_t c = 0; c < candidates.size(); ++c) {
        double e = 0, ref = 0;
        for (ir::TensorId m : unit)
          if (!errors[m].empty()) e += errors[m][c].error_sq, ref += errors[m][c].reference_sq;
        const double rel = ref > 0 ? e / ref : e;
        if (rel < best_err) best_err = rel, best = c;
      }
      for (ir::TensorId m : unit) {
        if (errors[m].empty()) continue;
        ir::QuantizerChoice qc;
        qc.chosen = candidates[best].name();
        for (size_t c = 0; c < candidates.size(); ++c) qc.candidates.emplace_back(candidates[c].name(), errors[m][c].relative());
        choice[m] = std::move(qc);
        auto it = layer_results.find(m);
        if (it == layer_results.end() || !it->second[best] || kept_bytes > kPrequantizedBytes) continue;
        Result& r = *it->second[best];
        ir::Prequantized p;
        p.quantizer = candidates[best].name();
        p.weight_hash_high = r.weight.high;
        p.weight_hash_low = r.weight.low;
        p.global_scale = r.G;
        p.zero_scale = zero_code;
        p.sum_sq_err = r.err.sum_sq_err;
        p.sum_sq_ref = r.err.sum_sq_ref;
        p.max_abs_err = r.err.max_abs_err;
        p.count = r.err.count;
        kept_bytes += r.packed.size() + r.scales.size();
        p.packed = std::move(r.packed);
        p.scales = std::move(r.scales);
        prequantized[m] = std::move(p);
      }
    }
    layer_results.clear();
  };

  const int layers = int(model.config.num_hidden_layers);
  FP4C_ASSIGN(runtime::Activations acts, forward.embed(weights, heldout));
  for (int l = 0; l < layers; ++l) {
    FP4C_ASSIGN(runtime::LayerParams p, weights.layer(l));
    std::optional<Error> failure;
    const auto hook = [&](const runtime::LinearInput& in) {
      if (failure) return;
      std::vector<ir::Role> members;
      switch (in.role) {
        case ir::Role::Q: members = {ir::Role::Q, ir::Role::K, ir::Role::V}; break;
        case ir::Role::Gate: members = {ir::Role::Gate, ir::Role::Up}; break;
        default: members = {in.role};
      }
      // The fused group's global scale, as pack computes it (max |W| over the members).
      float group_amax = 0;
      for (ir::Role r : members)
        if (const auto* w = slot(p, r)) group_amax = std::max(group_amax, nvfp4::amax_f32(w->weight));
      const float G = nvfp4::global_scale(group_amax);
      for (ir::Role r : members) {
        auto it = linear.find({in.layer, r});
        const runtime::LinearParams* w = slot(p, r);
        if (it == linear.end() || !w) continue;
        const ir::TensorId id = it->second;
        const auto& t = model.tensors[id];
        const SiteStats* site = fit.find(in.layer, in.role);
        std::optional<float> gx;
        if (decisions[id].input_amax) gx = nvfp4::global_scale(*decisions[id].input_amax);
        std::vector<uint8_t> packed(size_t(w->out * w->in / 2)), scales(size_t(w->out * w->in / 16));
        std::vector<float> deq(w->weight.size());
        errors[id].resize(candidates.size());
        auto& results = layer_results[id];
        results.assign(candidates.size(), std::nullopt);
        const hash::Digest weight_hash = hash::xxh3_128(std::as_bytes(std::span(w->weight)));
        for (size_t c = 0; c < candidates.size(); ++c) {
          nvfp4::ErrorStats err;
          if (auto st = quantize_weight(candidates[c], w->weight.data(), w->out, w->in, G, site, t.module, packed.data(),
                                        scales.data(), nvfp4::ZeroScale::CompressedTensors, &err, deq.data());
              !st) {
            failure = st.error();
            return;
          }
          errors[id][c] = linear_output_error(in.x, in.rows, in.cols, w->weight.data(), deq.data(), w->out, gx);
          if (candidates[c].kind != Quantizer::Kind::Rule)
            results[c] = Result{packed, scales, err, weight_hash, G};
        }
      }
    };
    FP4C_TRY(forward.layer(l, p, acts, hook));
    if (failure) return make_error("auto: " + failure->message);
    decide();
    if (progress) progress(l + 1, layers);
  }
  return {};
}

std::string format_choices(const ir::Model& model) {
  std::string out;
  char buf[128];
  bool header = false;
  for (ir::TensorId id = 0; id < model.tensors.size() && id < model.annotations.choice.size(); ++id) {
    const auto& c = model.annotations.choice[id];
    if (!c) continue;
    if (!header) {
      out += "tensor                                                     chosen              ";
      for (const auto& [name, e] : c->candidates) {
        std::snprintf(buf, sizeof buf, " %12s", name.c_str());
        out += buf;
      }
      out += "\n";
      header = true;
    }
    std::snprintf(buf, sizeof buf, "%-58s %-19s", model.tensors[id].name.c_str(), c->chosen.c_str());
    out += buf;
    for (const auto& [name, e] : c->candidates) {
      std::snprintf(buf, sizeof buf, " %12.4e", e);
      out += buf;
    }
    out += "\n";
  }
  if (!header) out += "(no Linear measured)\n";
  return out;
}

}  // namespace fp4c::passes
