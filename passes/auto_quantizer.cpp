#include "passes/auto_quantizer.h"

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <functional>
#include <string>
#include <map>
#include <tuple>
#include <memory>
#include <optional>
#include <set>
#include <span>
#include <utility>

#include "formats/convert.h"
#include "formats/hash.h"
#include "passes/layer_slots.h"
#include "formats/nvfp4.h"
#include "quant/output_error.h"
#include "passes/quantizers.h"
#include "passes/second_moments.h"
#include "passes/smoothquant.h"
#include "runtime/activation_quant.h"

namespace fp4c::passes {
namespace {

// At most this many bytes of chosen results are kept for pack; beyond, pack computes the rest again.
constexpr uint64_t kPrequantizedBytes = uint64_t(1) << 30;
// The layer-level smoothing decision runs the layer on the first held-out sequences up to this many tokens
// (at least one sequence): three copies of those hidden states and three layer forwards over them, whatever
// the calibration set's size (the decision compares two summed errors over 8192 x hidden values).
constexpr int64_t kLayerErrorTokens = 8192;

// The first sequences of `acts` up to `tokens` tokens (at least one), as their own activations.
runtime::Activations first_sequences(const runtime::Activations& acts, int64_t tokens) {
  runtime::Activations out;
  const int64_t hidden = acts.tokens() ? int64_t(acts.hidden.size()) / acts.tokens() : 0;
  size_t n = 1;
  while (n + 1 < acts.offsets.size() && acts.offsets[n + 1] <= tokens) ++n;
  out.offsets.assign(acts.offsets.begin(), acts.offsets.begin() + std::min(n + 1, acts.offsets.size()));
  out.hidden.assign(acts.hidden.begin(), acts.hidden.begin() + out.tokens() * hidden);
  return out;
}


// The statistics of a site whose input channels are multiplied by m (m_j >= 0): what the stats pass
// would measure on the smoothed model, up to float rounding.
SiteStats scaled_site(const SiteStats& site, const std::vector<float>& m) {
  SiteStats out = site;
  const int64_t n = site.cols();
  for (int64_t j = 0; j < n; ++j) {
    const float f = m[size_t(j)];
    out.absmax[size_t(j)] = site.absmax[size_t(j)] * f;
    if (j < int64_t(site.min.size())) out.min[size_t(j)] = site.min[size_t(j)] * f;
    if (j < int64_t(site.max.size())) out.max[size_t(j)] = site.max[size_t(j)] * f;
    if (j < int64_t(site.mean_square.size())) out.mean_square[size_t(j)] = site.mean_square[size_t(j)] * double(f) * f;
  }
  // GPTAQ's statistics alike: exact without activation quantization; under W4A4 an approximation (the
  // fake quantization of X m is not that of X times m), which the measured output error then judges.
  for (auto* v : {&out.second_moment, &out.asym_second_moment, &out.asym_cross})
    if (v->size() == size_t(n * n))
      for (int64_t i = 0; i < n; ++i)
        for (int64_t j = 0; j < n; ++j) (*v)[size_t(i * n + j)] *= double(m[size_t(i)]) * double(m[size_t(j)]);
  return out;
}

ir::AutoCandidate candidate_of(const Quantizer& q, bool smoothed, const std::string& alpha = {}) {
  return {q.name(), smoothed, smoothed ? alpha : std::string()};
}

// An alpha as the candidates' labels and the manifest write it: the shortest decimal form ("0.3").
std::string alpha_text(float a) {
  char buf[32];
  std::snprintf(buf, sizeof buf, "%g", double(a));
  return buf;
}

// The rank that quantizes each candidate of a [rows, cols] Linear: largest first (GPTQ ~ rows cols^2,
// local-Hessian and the searching rules ~ 16 rows cols, max ~ rows cols) to the least loaded rank.
std::vector<int> spread_candidates(const std::vector<Quantizer>& candidates, int64_t rows, int64_t cols, int ranks) {
  std::vector<int> owner(candidates.size(), 0);
  if (ranks <= 1) return owner;
  std::vector<std::pair<double, size_t>> cost;
  for (size_t c = 0; c < candidates.size(); ++c) {
    const Quantizer& q = candidates[c];
    const double rc = double(rows) * double(cols);
    cost.emplace_back(q.kind == Quantizer::Kind::Gptq ? rc * double(cols)
                      : (q.kind == Quantizer::Kind::Rule && q.rule == nvfp4::ScaleRule::Max) ? rc : 16 * rc, c);
  }
  std::stable_sort(cost.begin(), cost.end(), [](const auto& a, const auto& b) { return a.first > b.first; });
  std::vector<double> load(size_t(ranks), 0.0);
  for (const auto& [w, c] : cost) {
    const size_t r = size_t(std::min_element(load.begin(), load.end()) - load.begin());
    load[r] += w;
    owner[c] = int(r);
  }
  return owner;
}

template <typename T>
void put_raw(std::string& out, const T* p, size_t n) { out.append(reinterpret_cast<const char*>(p), n * sizeof(T)); }

// A candidate's results as a rank sends them: index, codes, scales, error figures, dequantized weight.
void put_candidate(std::string& out, size_t c, const std::vector<uint8_t>& packed, const std::vector<uint8_t>& scales,
                   const nvfp4::ErrorStats& err, const std::vector<float>& deq) {
  const uint64_t index = c;
  put_raw(out, &index, 1);
  put_raw(out, packed.data(), packed.size());
  put_raw(out, scales.data(), scales.size());
  put_raw(out, &err.sum_sq_err, 1);
  put_raw(out, &err.sum_sq_ref, 1);
  put_raw(out, &err.max_abs_err, 1);
  put_raw(out, &err.count, 1);
  put_raw(out, deq.data(), deq.size());
}

// Reads what put_candidate wrote into packed, scales and deq[c], calling done(c, err) for each.
// Reads what put_candidate wrote: each record's codes and scales into `packed` and `scales` (sized for
// the Linear), its dequantized weight into deq[c], then done(c, err).
Status take_candidates(const std::string& in, size_t n, std::vector<uint8_t>& packed, std::vector<uint8_t>& scales,
                       std::vector<std::vector<float>>& deq,
                       const std::function<void(size_t, const nvfp4::ErrorStats&)>& done) {
  size_t pos = 0;
  auto get = [&](void* dst, size_t bytes) {
    if (bytes > in.size() - pos) return false;
    std::memcpy(dst, in.data() + pos, bytes);
    pos += bytes;
    return true;
  };
  while (pos < in.size()) {
    uint64_t c = 0;
    nvfp4::ErrorStats err;
    if (!get(&c, 8) || c >= n || !get(packed.data(), packed.size()) || !get(scales.data(), scales.size()) ||
        !get(&err.sum_sq_err, 8) || !get(&err.sum_sq_ref, 8) || !get(&err.max_abs_err, 8) || !get(&err.count, 8) ||
        !get(deq[c].data(), deq[c].size() * sizeof(float)))
      return make_error("a rank sent malformed candidates");
    done(size_t(c), err);
  }
  return {};
}

}  // namespace

Status choose_quantizers(ir::Model& model, const runtime::Forward& forward, runtime::WeightSource& weights,
                         const ActivationStats& fit, const std::vector<std::vector<int32_t>>& heldout,
                         const AutoOptions& options, const std::function<void(int layer, int layers)>& progress,
                         std::vector<SiteStats>* smoothed_stats, runtime::Comm& comm) {
  if (options.sequential && options.sequential->empty())
    return make_error("auto: sequential calibration without calibration sequences");
  const auto& decisions = model.annotations.decision;
  if (decisions.size() != model.tensors.size()) return make_error("auto: the weight plan has not run");
  if (heldout.empty()) return make_error("auto: no held-out calibration sequences to measure on");
  // The SmoothQuant strengths measured at each site: variant v >= 1 of a smoothed site is alphas[v - 1].
  const std::vector<float> alphas = options.alphas.empty() ? std::vector<float>{options.alpha} : options.alphas;
  if (alphas.size() > kMaxAlphas)
    return make_error("auto: at most " + std::to_string(kMaxAlphas) + " SmoothQuant alphas, got " +
                      std::to_string(alphas.size()));
  for (size_t i = 0; i < alphas.size(); ++i) {
    if (!(alphas[i] >= 0.0f && alphas[i] <= 1.0f))
      return make_error("auto: alpha must lie in [0, 1], got " + std::to_string(alphas[i]));
    for (size_t j = 0; j < i; ++j)
      if (alphas[j] == alphas[i]) return make_error("auto: alpha " + alpha_text(alphas[i]) + " given twice");
  }
  // Labels carry the alpha only where several are measured (one alpha keeps the labels it always had).
  const auto label_alpha = [&](size_t variant) {
    return alphas.size() > 1 && variant >= 1 ? alpha_text(alphas[variant - 1]) : std::string();
  };
  const std::vector<Quantizer> candidates = options.candidates.empty() ? auto_candidates(options.gptq) : options.candidates;
  bool asymmetric = false;
  for (const Quantizer& q : candidates) asymmetric = asymmetric || q.asymmetric;
  if (asymmetric && !options.sequential)
    return make_error("auto: the GPTAQ candidates need sequential calibration (their statistics come from it)");

  // NVFP4 Linear weights by (layer, role, expert or -1).
  std::map<std::tuple<int, ir::Role, int>, ir::TensorId> linear;
  for (ir::TensorId id = 0; id < model.tensors.size(); ++id) {
    const auto& t = model.tensors[id];
    if (t.layer && t.kind == ir::ParamKind::Weight && ir::is_linear(t.role) && decisions[id].format == ir::Format::NVFP4)
      linear[{*t.layer, t.role, t.expert.value_or(-1)}] = id;
  }
  std::vector<std::vector<quant::OutputError>> errors(model.tensors.size());
  // The bytes of the current layer's Linears' candidates until the layer's units are decided: every one while
  // a group is measured, then each unit's best per variant (multiplied in the layer forwards that decide a
  // site's smoothing; the chosen GPTQ and local-Hessian ones are handed to pack).
  struct Result {
    std::vector<uint8_t> packed, scales;
    nvfp4::ErrorStats err;
    hash::Digest weight;
    float G = 0;
    std::optional<float> gx;   // the input global scale it was measured with (W4A4)
  };
  std::map<ir::TensorId, std::vector<std::optional<Result>>> layer_results;
  auto& prequantized = model.annotations.prequantized;
  prequantized.assign(model.tensors.size(), std::nullopt);
  uint64_t kept_bytes = 0;
  const uint8_t zero_code = uint8_t(nvfp4::ZeroScale::CompressedTensors);
  auto& choice = model.annotations.choice;
  choice.assign(model.tensors.size(), std::nullopt);
  // A site of the current layer whose smoothed candidates were measured too, with the Linears that decide
  // together (every consumer), and per alpha: its factors, what they do to the input, its statistics after
  // smoothing.
  struct SmoothedVariant {
    float alpha = 0.5f;
    std::vector<float> s, m;
    std::vector<float> norm;                            // the rewritten norm weight
    std::map<ir::Role, std::vector<float>> weight;      // each consumer's rewritten weight
    float G = 0;                                        // the consumers' group scale after smoothing
    SiteStats stats;
    SiteStats asym_stats;   // GPTAQ's, rescaled, where they come from the quantized stream alone
  };
  struct SmoothedSite {
    int layer = 0;
    ir::Role role = ir::Role::Q;
    ir::TensorId norm_id = 0;
    std::vector<ir::TensorId> consumers;
    std::vector<SmoothedVariant> variants;              // one per alpha, in the option's order
  };
  std::map<ir::TensorId, const SmoothedSite*> smoothed_site_of;  // NVFP4 consumer -> its site
  std::vector<std::unique_ptr<SmoothedSite>> layer_sites;
  const size_t n = candidates.size();
  // Units (fused groups, or a smoothed site's consumers, decided together) of the current layer's Linears.
  // errors[m] holds n candidates, then n smoothed ones per alpha where the site was smoothed. Each unit's best
  // candidate per variant is the least summed output error over its members. Whether a site is smoothed is
  // decided on the whole layer: its output (the residual stream after it) on the first held-out sequences (up
  // to kLayerErrorTokens) with every unit at its best unsmoothed candidate, against the same with this site's
  // unit at its best smoothed one, each against the BF16 layer's output; smoothing is kept where it errs less.
  // (A site's own output error can improve while q.k products or the MLP's product of gate and up get worse.)
  // The Linears that decide together with `id`: its smoothed site's consumers, else its fused group.
  const auto unit_of = [&](ir::TensorId id, const SmoothedSite* site) -> std::vector<ir::TensorId> {
    if (site) return site->consumers;
    if (const ir::FusedGroup* g = model.group_of(id)) return g->members;
    return {id};
  };
  // The unit's best candidate of variant v (0: as is, v >= 1: smoothed at alphas[v - 1]): the least summed relative output error
  // over its measured members (ties: the earlier, cheaper one).
  const auto unit_best = [&](const std::vector<ir::TensorId>& members, size_t v, size_t total) {
    size_t best = 0;
    double best_err = INFINITY;
    for (size_t c = 0; c < n; ++c) {
      double e = 0, ref = 0;
      for (ir::TensorId m : members)
        if (errors[m].size() == total) e += errors[m][v * n + c].error_sq, ref += errors[m][v * n + c].reference_sq;
      const double rel = ref > 0 ? e / ref : e;
      if (rel < best_err) best_err = rel, best = c;
    }
    return best;
  };
  struct Unit {
    std::vector<ir::TensorId> members;
    const SmoothedSite* site = nullptr;
    std::vector<size_t> best;   // per variant
    size_t variant = 0;         // the one kept: 0 unsmoothed, v smoothed at alphas[v - 1]
    std::optional<std::pair<double, double>> layer_error;   // (unsmoothed, least smoothed), where measured
    std::vector<std::pair<float, double>> by_alpha;         // with several alphas: each one's layer error
  };
  // `quantized` (may be null) receives the layer as decided: every unit at its chosen candidate's
  // dequantized weights (input global scale set under W4A4), smoothed sites' norms and consumers rewritten.
  const auto decide = [&](int l, const runtime::LayerParams& p, const runtime::Activations* layer_in,
                          const runtime::Activations& reference, runtime::LayerParams* quantized) -> Status {
    std::vector<Unit> units;
    std::set<ir::TensorId> seen;
    for (const auto& [key, id] : linear) {
      if (std::get<0>(key) != l || errors[id].empty() || seen.count(id)) continue;
      Unit u;
      if (auto it = smoothed_site_of.find(id); it != smoothed_site_of.end()) u.site = it->second;
      u.members = unit_of(id, u.site);
      const size_t total = errors[id].size();
      for (size_t v = 0; v * n < total; ++v) u.best.push_back(unit_best(u.members, v, total));
      for (ir::TensorId m : u.members) seen.insert(m);
      units.push_back(std::move(u));
    }
    // The layer with every unit at its best candidate of the variant `variant_of(unit)` says.
    const auto params_with = [&](const std::function<size_t(const Unit&)>& variant_of) {
      runtime::LayerParams q = p;
      for (const Unit& u : units) {
        const size_t v = variant_of(u);
        const bool sm = v > 0;
        const SmoothedVariant* sv = sm ? &u.site->variants[v - 1] : nullptr;
        const size_t c = v * n + u.best[v];
        for (ir::TensorId m : u.members) {
          runtime::LinearParams* lp = linear_slot(q, model.tensors[m].role, model.tensors[m].expert.value_or(-1));
          if (!lp) continue;
          auto it = layer_results.find(m);
          if (it == layer_results.end() || c >= it->second.size() || !it->second[c]) {
            if (sm) lp->weight = sv->weight.at(model.tensors[m].role);  // a BF16 consumer, rewritten
            continue;
          }
          const Result& r = *it->second[c];
          nvfp4::dequantize(r.packed.data(), r.scales.data(), lp->out, lp->in, r.G, lp->weight.data());
          lp->input_global_scale = r.gx;
        }
        if (sm) (u.site->role == ir::Role::Q ? q.input_norm : q.post_norm) = sv->norm;
      }
      return q;
    };
    // The layer's output error with every unit at its best unsmoothed candidate, `smoothed` at its best of
    // variant `variant`.
    const auto layer_error = [&](const Unit* smoothed, size_t variant) -> Expected<double> {
      const runtime::LayerParams q = params_with([&](const Unit& u) { return &u == smoothed ? variant : size_t(0); });
      runtime::Activations a = *layer_in;
      FP4C_TRY(forward.layer(l, q, a));
      double e = 0;  // over the sequences layer_in holds: the first of `reference`'s
      for (int64_t i = 0; i < int64_t(a.hidden.size()); ++i) {
        const double d = double(a.hidden[size_t(i)]) - double(reference.hidden[size_t(i)]);
        e += d * d;
      }
      return e;
    };
    bool any_site = false;
    for (const Unit& u : units) any_site = any_site || u.site;
    // Each site keeps the variant whose layer errs least: smoothed at an alpha only where that errs strictly
    // less than unsmoothed (ties: unsmoothed, then the earlier alpha).
    if (any_site && layer_in) {
      FP4C_ASSIGN(const double base, layer_error(nullptr, 0));
      for (Unit& u : units) {
        if (!u.site) continue;
        double least = INFINITY;
        size_t least_v = 1;
        for (size_t v = 1; v < u.best.size(); ++v) {
          FP4C_ASSIGN(const double e, layer_error(&u, v));
          if (alphas.size() > 1) u.by_alpha.emplace_back(alphas[v - 1], e);
          if (e < least) least = e, least_v = v;
        }
        u.variant = least < base ? least_v : 0;
        u.layer_error = std::pair(base, least);
      }
    }
    if (quantized) *quantized = params_with([](const Unit& u) { return u.variant; });
    for (const Unit& u : units) {
      const size_t best = u.variant * n + u.best[u.variant];
      if (u.variant > 0) {
        // Every consumer's columns (NVFP4 or not) and the norm; the statistics become the smoothed input's.
        const SmoothedVariant& sv = u.site->variants[u.variant - 1];
        fold_norm_smoothing(model, u.site->layer, u.site->role == ir::Role::Q ? ir::SmoothingMapping::Attention : ir::SmoothingMapping::Mlp, u.site->norm_id,
                            u.site->consumers, sv.alpha, sv.s);
        if (smoothed_stats) smoothed_stats->push_back(sv.stats);
      }
      for (ir::TensorId m : u.members) {
        if (errors[m].empty()) continue;
        ir::QuantizerChoice qc;
        qc.chosen = candidate_of(candidates[best % n], u.variant > 0, label_alpha(u.variant));
        qc.layer_error = u.layer_error;
        qc.layer_error_by_alpha = u.by_alpha;
        for (size_t c = 0; c < errors[m].size(); ++c)
          qc.candidates.emplace_back(candidate_of(candidates[c % n], c >= n, label_alpha(c / n)), errors[m][c].relative());
        choice[m] = std::move(qc);
        auto it = layer_results.find(m);
        // (GPTAQ's choices are always kept: pack has not their asymmetric statistics to compute them again.)
        if (it == layer_results.end() || !it->second[best] || candidates[best % n].kind == Quantizer::Kind::Rule ||
            (kept_bytes > kPrequantizedBytes && !candidates[best % n].asymmetric))
          continue;
        Result& r = *it->second[best];
        ir::Prequantized pq;
        pq.quantizer = candidates[best % n].name();
        pq.weight_hash_high = r.weight.high;
        pq.weight_hash_low = r.weight.low;
        pq.global_scale = r.G;
        pq.zero_scale = zero_code;
        pq.sum_sq_err = r.err.sum_sq_err;
        pq.sum_sq_ref = r.err.sum_sq_ref;
        pq.max_abs_err = r.err.max_abs_err;
        pq.count = r.err.count;
        kept_bytes += r.packed.size() + r.scales.size();
        pq.packed = std::move(r.packed);
        pq.scales = std::move(r.scales);
        prequantized[m] = std::move(pq);
      }
    }
    layer_results.clear();
    smoothed_site_of.clear();
    layer_sites.clear();
    return {};
  };

  const int layers = int(model.config.num_hidden_layers);
  FP4C_ASSIGN(runtime::Activations acts, forward.embed(weights, heldout));
  // Sequential calibration: the calibration sequences' hidden states through the layers as quantized, and
  // the current layer's statistics from them.
  std::optional<runtime::Activations> calibration, unquantized;   // unquantized: GPTAQ's X, through the BF16 layers
  if (options.sequential) {
    FP4C_ASSIGN(runtime::Activations a, forward.embed(weights, *options.sequential));
    if (asymmetric) unquantized = a;
    calibration = std::move(a);
  }
  // The input global scale of a site's Linears under W4A4 (the first NVFP4 member's), for GPTAQ's Xq.
  const auto site_input_scale = [&](int layer, ir::Role role) -> std::optional<float> {
    for (ir::Role r : {role, ir::Role::K, ir::Role::V, ir::Role::Up}) {
      if (input_site_role(r) != role) continue;
      auto it = linear.find({layer, r, -1});   // dense sites; at a sparse layer's MLP site none is found and Xq = X (GPTAQ is GPTQ there)
      if (it != linear.end() && decisions[it->second].input_amax)
        return nvfp4::global_scale(*decisions[it->second].input_amax);
    }
    return std::nullopt;
  };
  ActivationStats layer_fit;
  for (int l = 0; l < layers; ++l) {
    FP4C_ASSIGN(runtime::LayerParams p, weights.layer(l));
    std::optional<runtime::Activations> heldout_in;   // sequential: the layer's held-out input, kept
    if (calibration) {
      std::map<ir::Role, SiteStats> sites;
      // GPTAQ: each site's input on the unquantized model (the same tokens in the same order).
      std::map<ir::Role, std::vector<float>> x_unquantized;
      if (unquantized)
        FP4C_TRY(forward.layer(l, p, *unquantized, [&](const runtime::LinearInput& in) {
          x_unquantized[in.role].assign(in.x, in.x + in.rows * in.cols);
        }));
      std::optional<Error> collect_failure;
      runtime::Activations a = *calibration;
      FP4C_TRY(forward.layer(l, p, a, [&](const runtime::LinearInput& in) {
        SiteStats& st = sites[in.role];
        st.layer = in.layer;
        st.role = in.role;
        accumulate_site(st, in.x, in.rows, in.cols, /*second_moments=*/true);
        if (!unquantized) return;
        const auto& x = x_unquantized[in.role];
        if (int64_t(x.size()) != in.rows * in.cols) {
          collect_failure = Error{"auto: the unquantized and quantized calibration forwards disagree at layer " +
                                  std::to_string(in.layer) + " " + std::string(ir::role_name(in.role))};
          return;
        }
        // Xq: the input as the quantized Linear sees it (fake-quantized under W4A4).
        std::vector<float> xq(in.x, in.x + in.rows * in.cols);
        if (const auto gx = site_input_scale(in.layer, in.role))
          runtime::fake_quantize_nvfp4(in.x, in.rows, in.cols, *gx, xq.data());
        const size_t nn = size_t(in.cols * in.cols);
        if (st.asym_second_moment.empty()) st.asym_second_moment.assign(nn, 0.0), st.asym_cross.assign(nn, 0.0);
        accumulate_second_moments(st.asym_second_moment.data(), xq.data(), in.rows, in.cols);
        accumulate_cross_moments(st.asym_cross.data(), x.data(), xq.data(), in.rows, in.cols);
      }));
      if (collect_failure) return *collect_failure;
      layer_fit.sites.clear();
      for (auto& [role, st] : sites) {
        finish_site(st);
        if (!st.asym_cross.empty()) {
          const double tokens = double(std::max<int64_t>(st.tokens, 1));
          const int64_t c = st.cols();
          for (int64_t i = 0; i < c; ++i)
            for (int64_t j = 0; j < c; ++j) {
              st.asym_cross[size_t(i * c + j)] /= tokens;
              if (j >= i) {
                const double v = st.asym_second_moment[size_t(i * c + j)] / tokens;
                st.asym_second_moment[size_t(i * c + j)] = v;
                st.asym_second_moment[size_t(j * c + i)] = v;
              }
            }
        }
        layer_fit.sites.push_back(std::move(st));
      }
      if (options.sequential_all) heldout_in = acts;
    }
    const ActivationStats& fit_now = calibration && options.sequential_all ? layer_fit : fit;
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
        if (const auto* w = linear_slot(p, r, in.expert)) group_amax = std::max(group_amax, nvfp4::amax_f32(w->weight));
      const float G = nvfp4::global_scale(group_amax);
      // An expert's own routed tokens' statistics, or its layer's below kMinExpertTokens (weight_input_stats).
      const auto find_site = [&](const ActivationStats& stats) {
        const SiteStats* s = stats.find(in.layer, in.role, in.expert);
        if (in.expert >= 0 && (!s || s->tokens < kMinExpertTokens)) s = stats.find(in.layer, in.role);
        return s;
      };
      const SiteStats* site = find_site(fit_now);
      // GPTAQ's statistics, where only its candidates use the quantized stream.
      const SiteStats* asym_site = calibration && !options.sequential_all ? find_site(layer_fit) : nullptr;

      // SmoothQuant at this site too, where it may apply: a norm -> {q,k,v} or {gate,up} site none of whose
      // tensors an earlier pass rewrote.
      std::unique_ptr<SmoothedSite> smoothed;
      // Not where the norms compute x * (1 + w) (Gemma): the smoothing cannot be folded into them as a scale.
      // Nor at a sparse MoE layer's MLP site (the smoothquant pass smooths it, router included; auto does not).
      if (options.smoothquant && site && !model.config.norm_plus_one && !model.config.moe_layer(in.layer) &&
          (in.role == ir::Role::Q || in.role == ir::Role::Gate)) {
        for (const ir::ActivationSite& as : model.sites) {
          if (as.consumers.empty()) continue;
          const auto& first = model.tensors[as.consumers.front()];
          if (!first.layer || *first.layer != in.layer || first.role != in.role) continue;
          bool untouched = !model.transformed(as.producer);
          for (ir::TensorId c : as.consumers) untouched = untouched && !model.transformed(c);
          if (!untouched) break;
          const std::vector<float>& norm = in.role == ir::Role::Q ? p.input_norm : p.post_norm;
          if (int64_t(norm.size()) != in.cols || site->cols() != in.cols) break;
          std::vector<const runtime::LinearParams*> balanced;
          for (ir::Role r : members)
            if (const auto* w = linear_slot(p, r); w && w->in == in.cols) balanced.push_back(w);
          smoothed = std::make_unique<SmoothedSite>();
          smoothed->layer = in.layer;
          smoothed->role = in.role;
          smoothed->norm_id = as.producer;
          smoothed->consumers = as.consumers;
          for (const float alpha : alphas) {
            SmoothedVariant sv;
            sv.alpha = alpha;
            sv.s = smoothing_factors(*site, balanced, alpha, options.min_scale);
            sv.norm = rewritten_norm(model, as.producer, norm, sv.s);
            sv.m = smoothed_input_scale(norm, sv.norm);
            sv.stats = scaled_site(*site, sv.m);
            if (asym_site) sv.asym_stats = scaled_site(*asym_site, sv.m);
            smoothed->variants.push_back(std::move(sv));
          }
          break;
        }
      }
      // The smoothed members' weights as pack will read them: W[:, j] * s_j rounded to the tensor's dtype
      // (apply_transform), and their group scale, per alpha.
      if (smoothed)
        for (SmoothedVariant& sv : smoothed->variants) {
          float amax = 0;
          for (ir::TensorId c : smoothed->consumers) {
            const ir::Role r = model.tensors[c].role;
            const auto* w = linear_slot(p, r);
            if (!w) continue;
            auto& ws = sv.weight[r];
            ws.resize(w->weight.size());
            for (int64_t i = 0; i < w->out; ++i)
              for (int64_t j = 0; j < w->in; ++j)
                ws[size_t(i * w->in + j)] = w->weight[size_t(i * w->in + j)] * sv.s[size_t(j)];
            round_to_dtype(ws.data(), int64_t(ws.size()), model.tensors[c].dtype);
            amax = std::max(amax, nvfp4::amax_f32(ws));
          }
          sv.G = nvfp4::global_scale(amax);
        }

      bool any = false;
      for (ir::Role r : members) {
        auto it = linear.find({in.layer, r, in.expert});
        const runtime::LinearParams* w = linear_slot(p, r, in.expert);
        if (it == linear.end() || !w) continue;
        any = true;
        const ir::TensorId id = it->second;
        const auto& t = model.tensors[id];
        std::optional<float> gx;
        if (decisions[id].input_amax) gx = nvfp4::global_scale(*decisions[id].input_amax);
        std::vector<uint8_t> packed(size_t(w->out * w->in / 2)), scales(size_t(w->out * w->in / 16));
        // Every candidate's dequantized weight, so that their output errors share the input's transform and
        // the reference output (quant::linear_output_errors).
        std::vector<std::vector<float>> deq(n, std::vector<float>(w->weight.size()));
        std::vector<const float*> deq_ptrs(n);
        for (size_t c = 0; c < n; ++c) deq_ptrs[c] = deq[c].data();
        const size_t variants = smoothed ? 1 + smoothed->variants.size() : 1;
        errors[id].resize(n * variants);
        auto& results = layer_results[id];
        results.assign(n * variants, std::nullopt);
        for (size_t v = 0; v < variants; ++v) {
          const bool sm = v >= 1;
          SmoothedVariant* sv = sm ? &smoothed->variants[v - 1] : nullptr;
          const std::vector<float>& weight = sm ? sv->weight[r] : w->weight;
          const SiteStats* st = sm ? &sv->stats : site;
          const float g = sm ? sv->G : G;
          std::optional<float> gxv = gx;
          if (sm && gx) gxv = nvfp4::global_scale(sv->stats.tensor_absmax());
          const hash::Digest weight_hash = hash::xxh3_128(std::as_bytes(std::span(weight)));
          // Each candidate on one rank (all on one process's), then every candidate on every rank.
          const std::vector<int> owner = spread_candidates(candidates, w->out, w->in, comm.size());
          std::string mine;
          for (size_t c = 0; c < n; ++c) {
            if (owner[c] != comm.rank()) continue;
            nvfp4::ErrorStats err;
            const SiteStats* stc = asym_site && candidates[c].asymmetric ? (sm ? &sv->asym_stats : asym_site) : st;
            if (auto q = quantize_weight(candidates[c], weight.data(), w->out, w->in, g, stc, t.module, packed.data(),
                                         scales.data(), nvfp4::ZeroScale::CompressedTensors, &err, deq[c].data());
                !q) {
              failure = q.error();
              return;
            }
            results[v * n + c] = Result{packed, scales, err, weight_hash, g, gxv};
            if (comm.distributed()) put_candidate(mine, c, packed, scales, err, deq[c]);
          }
          if (comm.distributed()) {
            auto all = comm.allgather(mine);
            if (!all) {
              failure = all.error();
              return;
            }
            for (int r = 0; r < comm.size(); ++r) {
              if (r == comm.rank()) continue;
              if (auto got = take_candidates((*all)[size_t(r)], n, packed, scales, deq,
                                             [&](size_t c, const nvfp4::ErrorStats& err) {
                                               results[v * n + c] = Result{packed, scales, err, weight_hash, g, gxv};
                                             });
                  !got) {
                failure = got.error();
                return;
              }
            }
          }
          const auto errs = quant::linear_output_errors(in.x, in.rows, in.cols, w->weight.data(), deq_ptrs, w->out, gxv,
                                                 sm ? sv->m.data() : nullptr);
          for (size_t c = 0; c < n; ++c) errors[id][v * n + c] = errs[c];
        }
      }
      // Only each unit's best bytes per variant are kept (a layer forward and pack may need them): the
      // units of this group's members were all measured just now.
      for (ir::Role r : members) {
        auto it = linear.find({in.layer, r, in.expert});
        if (it == linear.end() || errors[it->second].empty()) continue;
        const ir::TensorId id = it->second;
        const auto unit = unit_of(id, smoothed && any ? smoothed.get() : nullptr);
        bool complete = true;  // a unit some of whose NVFP4 members are still to come keeps everything
        for (ir::TensorId m : unit)
          if (decisions[m].format == ir::Format::NVFP4 && errors[m].size() != errors[id].size()) complete = false;
        if (!complete) continue;
        auto& results = layer_results[id];
        for (size_t v = 0; v * n < results.size(); ++v) {
          const size_t keep = unit_best(unit, v, errors[id].size());
          for (size_t c = 0; c < n; ++c)
            if (c != keep) results[v * n + c].reset();
        }
      }
      if (smoothed && any) {
        for (ir::TensorId c : smoothed->consumers)
          if (!errors[c].empty()) smoothed_site_of[c] = smoothed.get();
        layer_sites.push_back(std::move(smoothed));
      }
    };
    std::optional<runtime::Activations> layer_in;
    if (options.smoothquant) layer_in = first_sequences(acts, kLayerErrorTokens);
    FP4C_TRY(forward.layer(l, p, acts, hook));
    if (failure) return make_error("auto: " + failure->message);
    const size_t overlaid = smoothed_stats ? smoothed_stats->size() : 0;
    runtime::LayerParams quantized;
    FP4C_TRY(decide(l, p, layer_in ? &*layer_in : nullptr, acts, calibration ? &quantized : nullptr));
    if (calibration && options.sequential_all) {
      // The statistics the choices were made from (a smoothed site's rescaled ones are already there), and
      // both streams through the layer as quantized.
      if (smoothed_stats)
        for (const SiteStats& st : layer_fit.sites) {
          bool smoothed = false;
          for (size_t i = overlaid; i < smoothed_stats->size(); ++i)
            smoothed = smoothed || ((*smoothed_stats)[i].layer == st.layer && (*smoothed_stats)[i].role == st.role);
          if (!smoothed) smoothed_stats->push_back(st);
        }
      if (smoothed_stats)   // GPTAQ's statistics stay here (their choices are all prequantized)
        for (size_t i = overlaid; i < smoothed_stats->size(); ++i) {
          (*smoothed_stats)[i].asym_second_moment = {};
          (*smoothed_stats)[i].asym_cross = {};
        }
      acts = std::move(*heldout_in);
      FP4C_TRY(forward.layer(l, quantized, acts));
    }
    if (calibration) FP4C_TRY(forward.layer(l, quantized, *calibration));
    if (progress) progress(l + 1, layers);
  }
  return {};
}

std::string format_choices(const ir::Model& model) {
  std::string out;
  char buf[160];
  // Columns: every candidate name in the order first seen (a smoothed site adds the smoothquant+ ones).
  std::vector<std::string> names;
  for (const auto& c : model.annotations.choice)
    if (c)
      for (const auto& [cand, e] : c->candidates)
        if (std::find(names.begin(), names.end(), cand.label()) == names.end()) names.push_back(cand.label());
  if (names.empty()) return "(no Linear measured)\n";
  std::snprintf(buf, sizeof buf, "%-58s %-30s", "tensor", "chosen");
  out += buf;
  for (const auto& name : names) {
    std::snprintf(buf, sizeof buf, " %*s", int(std::max<size_t>(12, name.size())), name.c_str());
    out += buf;
  }
  out += "  layer error unsmoothed / smoothed\n";
  for (ir::TensorId id = 0; id < model.tensors.size() && id < model.annotations.choice.size(); ++id) {
    const auto& c = model.annotations.choice[id];
    if (!c) continue;
    std::snprintf(buf, sizeof buf, "%-58s %-30s", model.tensors[id].name.c_str(), c->chosen.label().c_str());
    out += buf;
    for (const auto& name : names) {
      const int width = int(std::max<size_t>(12, name.size()));
      auto it = std::find_if(c->candidates.begin(), c->candidates.end(), [&](const auto& p) { return p.first.label() == name; });
      if (it == c->candidates.end()) std::snprintf(buf, sizeof buf, " %*s", width, "-");
      else std::snprintf(buf, sizeof buf, " %*.4e", width, it->second);
      out += buf;
    }
    if (c->layer_error) {
      std::snprintf(buf, sizeof buf, "  %.4e / %.4e", c->layer_error->first, c->layer_error->second);
      out += buf;
    }
    out += "\n";
  }
  return out;
}

}  // namespace fp4c::passes
