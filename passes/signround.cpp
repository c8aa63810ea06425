#include "passes/signround.h"

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <map>
#include <optional>
#include <random>
#include <span>

#include "formats/hash.h"
#include "formats/nvfp4.h"
#include "passes/layer_slots.h"
#include "quant/signround.h"
#include "runtime/layer_grad.h"

namespace fp4c::passes {
namespace {

constexpr ir::Role kRoles[] = {ir::Role::Q, ir::Role::K, ir::Role::V, ir::Role::O,
                               ir::Role::Gate, ir::Role::Up, ir::Role::Down};


std::vector<float>* grad_slot(runtime::LayerGradients& g, ir::Role role) {
  switch (role) {
    case ir::Role::Q: return &g.q;
    case ir::Role::K: return &g.k;
    case ir::Role::V: return &g.v;
    case ir::Role::O: return &g.o;
    case ir::Role::Gate: return &g.gate;
    case ir::Role::Up: return &g.up;
    case ir::Role::Down: return &g.down;
    default: return nullptr;
  }
}

// One NVFP4 Linear being tuned.
struct Tuned {
  ir::TensorId id = 0;
  ir::Role role = ir::Role::Q;
  int64_t out = 0, in = 0;
  float G = 1;
  std::optional<float> gx;   // W4A4: its input global scale
  std::vector<float> v, alpha;
  // Where it starts from another quantizer's result (SignRoundOptions::start): that result dequantized, which
  // takes the weight's place, and its block scales, which take the max rule's. Empty: round-to-nearest.
  std::vector<float> base;
  std::vector<uint8_t> base_scales;
  // With a rival: its dequantized weight (empty: it has none, round-to-nearest stands in).
  std::vector<float> rival;
  const float* values(const runtime::LinearParams& w) const { return base.empty() ? w.weight.data() : base.data(); }
  const uint8_t* scales() const { return base_scales.empty() ? nullptr : base_scales.data(); }
};

struct State {
  std::vector<std::vector<float>> v, alpha;
};

State state_of(const std::vector<Tuned>& t) {
  State s;
  for (const Tuned& x : t) {
    s.v.push_back(x.v);
    s.alpha.push_back(x.alpha);
  }
  return s;
}

// The layer with every tuned Linear quantized at `s` (dequantized, input global scale set).
runtime::LayerParams quantized_layer(const runtime::LayerParams& p, const std::vector<Tuned>& tuned, const State& s) {
  runtime::LayerParams q = p;
  for (size_t i = 0; i < tuned.size(); ++i) {
    const Tuned& t = tuned[i];
    runtime::LinearParams* lp = linear_slot(q, t.role);
    const runtime::LinearParams* src = linear_slot(p, t.role);
    std::vector<uint8_t> packed(size_t(t.out * t.in / 2)), scales(size_t(t.out * t.in / 16));
    quant::quantize_with_offsets(t.values(*src), t.out, t.in, t.G, s.v[i].data(),
                                 s.alpha[i].empty() ? nullptr : s.alpha[i].data(), packed.data(), scales.data(),
                                 nvfp4::ZeroScale::CompressedTensors, lp->weight.data(), nullptr, t.scales());
    lp->input_global_scale = t.gx;
  }
  return q;
}

// The layer with every tuned Linear at its rival (round-to-nearest where it has none).
runtime::LayerParams rival_layer(const runtime::LayerParams& p, const std::vector<Tuned>& tuned, const State& rtn) {
  runtime::LayerParams q = quantized_layer(p, tuned, rtn);
  for (const Tuned& t : tuned)
    if (!t.rival.empty()) linear_slot(q, t.role)->weight = t.rival;
  return q;
}

// Sum of squared differences, in double, in order.
double sum_sq_diff(const float* a, const float* b, int64_t n) {
  double s = 0;
  for (int64_t i = 0; i < n; ++i) {
    const double d = double(a[i]) - double(b[i]);
    s += d * d;
  }
  return s;
}

// Mean squared difference of two streams' hidden states (0 without tokens).
double mean_sq_diff(const runtime::Activations& a, const runtime::Activations& b, int64_t H) {
  const int64_t n = a.tokens() * H;
  return n > 0 ? sum_sq_diff(a.hidden.data(), b.hidden.data(), n) / double(n) : 0.0;
}

}  // namespace

Expected<std::vector<SignRoundLayer>> signround(ir::Model& model, const runtime::Forward& forward,
                                                runtime::WeightSource& weights,
                                                const std::vector<std::vector<int32_t>>& calibration,
                                                const SignRoundOptions& options,
                                                const std::function<void(int, int)>& progress) {
  const auto& decisions = model.annotations.decision;
  if (decisions.size() != model.tensors.size()) return make_error("signround: the weight plan has not run");
  if (calibration.empty()) return make_error("signround: no calibration sequences");
  if (options.iters < 0) return make_error("signround: iters must be >= 0");
  if (options.batch < 1) return make_error("signround: batch must be >= 1");
  if (!(options.scale_min > 0.0f && options.scale_min <= 1.0f))
    return make_error("signround: scale_min must lie in (0, 1]");
  const ir::ModelConfig& c = model.config;
  const int64_t H = c.hidden_size;
  std::map<std::pair<int, ir::Role>, ir::TensorId> linear;
  for (ir::TensorId id = 0; id < model.tensors.size(); ++id) {
    const auto& t = model.tensors[id];
    if (t.layer && t.kind == ir::ParamKind::Weight && ir::is_linear(t.role) && !t.expert)
      linear[{*t.layer, t.role}] = id;
  }
  auto& choice = model.annotations.choice;
  auto& prequantized = model.annotations.prequantized;
  const bool rival = options.rival_judge != nullptr;
  if (rival && !options.start) return make_error("signround: a rival needs the quantizer that makes it");
  if (rival && options.rival_judge->empty()) return make_error("signround: no sequences to judge the rival on");
  if (!options.start) {
    choice.assign(model.tensors.size(), std::nullopt);
    prequantized.assign(model.tensors.size(), std::nullopt);
  }
  choice.resize(model.tensors.size());
  prequantized.resize(model.tensors.size());

  // The order the steps take the sequences in: a fixed shuffle (Fisher-Yates on mt19937_64, the same everywhere).
  const int64_t nseq = int64_t(calibration.size());
  std::vector<int64_t> order(static_cast<size_t>(nseq));
  for (int64_t i = 0; i < nseq; ++i) order[size_t(i)] = i;
  std::mt19937_64 rng(options.seed);
  for (int64_t i = nseq - 1; i > 0; --i) std::swap(order[size_t(i)], order[size_t(rng() % uint64_t(i + 1))]);
  const int64_t batch = std::min<int64_t>(options.batch, nseq);
  const int64_t select = std::min<int64_t>(options.select > 0 ? options.select : options.batch, nseq);
  const double lr0 = options.lr > 0 ? options.lr : (options.iters > 0 ? 1.0 / options.iters : 0.0);

  // The two streams: through the unquantized layers (the targets) and through the layers as quantized.
  FP4C_ASSIGN(runtime::Activations fp_acts, forward.embed(weights, calibration));
  runtime::Activations q_acts = fp_acts;
  // With a rival: the judging sequences through the unquantized layers and through the layers as kept.
  runtime::Activations judge_fp, judge_q;
  if (rival) {
    FP4C_ASSIGN(judge_fp, forward.embed(weights, *options.rival_judge));
    judge_q = judge_fp;
  }
  std::vector<SignRoundLayer> report;
  const int layers = int(c.num_hidden_layers);
  for (int l = 0; l < layers; ++l) {
    const auto start = std::chrono::steady_clock::now();
    FP4C_ASSIGN(runtime::LayerParams p, weights.layer(l));
    FP4C_TRY(runtime::LayerTape::check(c, l, p));
    // The layer's NVFP4 Linears, each fused group's global scale as pack computes it (max |W| over its members).
    std::vector<Tuned> tuned;
    for (ir::Role role : kRoles) {
      auto it = linear.find({l, role});
      if (it == linear.end() || decisions[it->second].format != ir::Format::NVFP4) continue;
      const ir::TensorId id = it->second;
      const runtime::LinearParams* w = linear_slot(p, role);
      for (float x : w->weight)
        if (!std::isfinite(x)) return make_error("signround: " + model.tensors[id].name + ": a non-finite weight");
      if (w->in % 16 != 0) return make_error("signround: " + model.tensors[id].name + ": in_features % 16 != 0");
      float amax = nvfp4::amax_f32(w->weight);
      if (const ir::FusedGroup* g = model.group_of(id))
        for (ir::TensorId m : g->members)
          if (m != id && model.tensors[m].layer == l)
            if (const runtime::LinearParams* o = linear_slot(p, model.tensors[m].role)) amax = std::max(amax, nvfp4::amax_f32(o->weight));
      Tuned t;
      t.id = id;
      t.role = role;
      t.out = w->out;
      t.in = w->in;
      t.G = nvfp4::global_scale(amax);
      if (decisions[id].input_amax) t.gx = nvfp4::global_scale(*decisions[id].input_amax);
      t.v.assign(w->weight.size(), 0.0f);
      if (options.tune_scales) t.alpha.assign(w->weight.size() / 16, 1.0f);
      if (options.start) {
        std::vector<uint8_t> packed(w->weight.size() / 2), scales(w->weight.size() / 16);
        FP4C_ASSIGN(const bool from, options.start(id, w->weight, t.G, packed, scales));
        if (from && rival) {
          t.rival.resize(w->weight.size());
          nvfp4::dequantize(packed.data(), scales.data(), t.out, t.in, t.G, t.rival.data());
        } else if (from) {
          t.base.resize(w->weight.size());
          nvfp4::dequantize(packed.data(), scales.data(), t.out, t.in, t.G, t.base.data());
          t.base_scales = std::move(scales);
        }
      }
      tuned.push_back(std::move(t));
    }

    // Targets: the unquantized layer on the unquantized stream (which then moves on).
    FP4C_TRY(forward.layer(l, p, fp_acts));
    const int64_t T = fp_acts.tokens();
    SignRoundLayer rec;
    rec.layer = l;
    rec.reference = T > 0 ? [&] {
      double s = 0;
      for (int64_t i = 0; i < T * H; ++i) s += double(fp_acts.hidden[size_t(i)]) * double(fp_acts.hidden[size_t(i)]);
      return s / double(T * H);
    }() : 0.0;

    const State rtn = state_of(tuned);
    State best = rtn;
    double best_loss = INFINITY;
    if (!tuned.empty() && options.iters > 0) {
      runtime::LayerTape tape(c, l, options.threads);
      runtime::LayerGradients grads;
      std::vector<float> x, target, out, dout, dv, dalpha;
      std::vector<int64_t> offs;
      State cur = rtn;
      // The selection set: the last `select` sequences of the order, on which every iterate is measured (as
      // served, forward only), so that the kept iterate is the best on the same data rather than on the
      // easiest minibatch.
      runtime::Activations sel_in, sel_target;
      sel_in.offsets.assign(1, 0);
      sel_target.offsets.assign(1, 0);
      for (int64_t b = 0; b < select; ++b) {
        const int64_t s = order[size_t(nseq - 1 - b)];
        const int64_t r0 = q_acts.offsets[size_t(s)], r1 = q_acts.offsets[size_t(s + 1)];
        sel_in.hidden.insert(sel_in.hidden.end(), q_acts.hidden.begin() + r0 * H, q_acts.hidden.begin() + r1 * H);
        sel_target.hidden.insert(sel_target.hidden.end(), fp_acts.hidden.begin() + r0 * H, fp_acts.hidden.begin() + r1 * H);
        sel_in.offsets.push_back(sel_in.offsets.back() + (r1 - r0));
      }
      const int64_t sel_n = int64_t(sel_in.hidden.size());
      for (int it = 0; it < options.iters; ++it) {
        // The step's sequences, in order, from both streams.
        x.clear();
        target.clear();
        offs.assign(1, 0);
        for (int64_t b = 0; b < batch; ++b) {
          const int64_t s = order[size_t((int64_t(it) * batch + b) % nseq)];
          const int64_t r0 = q_acts.offsets[size_t(s)], r1 = q_acts.offsets[size_t(s + 1)];
          x.insert(x.end(), q_acts.hidden.begin() + r0 * H, q_acts.hidden.begin() + r1 * H);
          target.insert(target.end(), fp_acts.hidden.begin() + r0 * H, fp_acts.hidden.begin() + r1 * H);
          offs.push_back(offs.back() + (r1 - r0));
        }
        const int64_t n = int64_t(x.size());
        if (n == 0) break;
        const runtime::LayerParams qp = quantized_layer(p, tuned, cur);
        {
          runtime::Activations sel = sel_in;
          FP4C_TRY(forward.layer(l, qp, sel));
          const double sel_loss = sum_sq_diff(sel.hidden.data(), sel_target.hidden.data(), sel_n) / double(sel_n);
          if (sel_loss < best_loss) {
            best_loss = sel_loss;
            best = cur;
            rec.best_iter = it;
          }
        }
        out.resize(size_t(n));
        FP4C_TRY(tape.forward(qp, x.data(), offs, out.data()));
        dout.resize(size_t(n));
        const float k = float(2.0 / double(n));
        for (int64_t i = 0; i < n; ++i) dout[size_t(i)] = k * (out[size_t(i)] - target[size_t(i)]);
        FP4C_TRY(tape.backward(dout.data(), grads));
        const float lr = float(lr0 * (1.0 - double(it) / double(options.iters)));
        for (size_t i = 0; i < tuned.size(); ++i) {
          const Tuned& t = tuned[i];
          const runtime::LinearParams* w = linear_slot(p, t.role);
          dv.resize(size_t(t.out * t.in));
          dalpha.resize(size_t(t.out * t.in / 16));
          quant::offset_gradients(t.values(*w), t.out, t.in, t.G, cur.v[i].data(),
                                  cur.alpha[i].empty() ? nullptr : cur.alpha[i].data(), grad_slot(grads, t.role)->data(),
                                  dv.data(), dalpha.data(), t.scales());
          auto& v = cur.v[i];
          for (size_t j = 0; j < v.size(); ++j) {
            const float g = dv[j];
            const float step = g > 0 ? -lr : (g < 0 ? lr : 0.0f);
            v[j] = std::clamp(v[j] + step, -0.5f, 0.5f);
          }
          auto& a = cur.alpha[i];
          for (size_t j = 0; j < a.size(); ++j) {
            const float g = dalpha[j];
            const float step = g > 0 ? -lr : (g < 0 ? lr : 0.0f);
            a[j] = std::clamp(a[j] + step, options.scale_min, 1.0f);
          }
        }
      }
    }

    // Round-to-nearest and the kept iterate over every calibration sequence, as the runtime serves them; the
    // better one (ties: round-to-nearest) is the layer's choice and gives the next layer its input.
    runtime::Activations rtn_out = q_acts;
    FP4C_TRY(forward.layer(l, quantized_layer(p, tuned, rtn), rtn_out));
    rec.rtn_loss = mean_sq_diff(rtn_out, fp_acts, H);
    rec.tuned_loss = rec.rtn_loss;
    std::optional<runtime::Activations> tuned_out;
    if (rec.best_iter > 0) {
      tuned_out = q_acts;
      FP4C_TRY(forward.layer(l, quantized_layer(p, tuned, best), *tuned_out));
      rec.tuned_loss = mean_sq_diff(*tuned_out, fp_acts, H);
      rec.tuned = rec.tuned_loss < rec.rtn_loss;
    }
    if (rival) {
      // The layer as tuned (or round-to-nearest) against its rival, on the judging sequences; the winner gives
      // both streams their next input.
      FP4C_TRY(forward.layer(l, p, judge_fp));
      runtime::Activations own_out = judge_q, rival_out = judge_q;
      FP4C_TRY(forward.layer(l, quantized_layer(p, tuned, rec.tuned ? best : rtn), own_out));
      const runtime::LayerParams rp = rival_layer(p, tuned, rtn);
      FP4C_TRY(forward.layer(l, rp, rival_out));
      rec.own_judged = mean_sq_diff(own_out, judge_fp, H);
      rec.rival_judged = mean_sq_diff(rival_out, judge_fp, H);
      rec.rival_kept = !(rec.own_judged < rec.rival_judged);
      judge_q = rec.rival_kept ? std::move(rival_out) : std::move(own_out);
      if (rec.rival_kept) FP4C_TRY(forward.layer(l, rp, q_acts));   // the calibration sequences through the rival
    }
    if (!rec.rival_kept) q_acts = rec.tuned ? std::move(*tuned_out) : std::move(rtn_out);

    // The choices, and the tuned bytes for pack.
    const double ref = rec.reference > 0 ? rec.reference : 1.0;
    for (size_t i = 0; i < tuned.size(); ++i) {
      const Tuned& t = tuned[i];
      if (rival && rec.rival_kept) {
        // The rival's choice and bytes stay (round-to-nearest where it had none); tuning's figure joins them.
        if (t.rival.empty()) {
          ir::QuantizerChoice qc;
          qc.chosen = {"max", false};
          qc.candidates = {{{"max", false}, rec.rival_judged / ref}, {{"signround", false}, rec.own_judged / ref}};
          choice[t.id] = std::move(qc);
          prequantized[t.id].reset();
        } else if (choice[t.id]) {
          choice[t.id]->candidates.emplace_back(ir::AutoCandidate{"signround", false}, rec.own_judged / ref);
        }
        continue;
      }
      if (rival) {
        // Tuned (or round-to-nearest) won over the rival: a choice of its own, the rival's figure beside it.
        ir::QuantizerChoice qc;
        const bool smoothed = choice[t.id] && choice[t.id]->chosen.smoothed;
        qc.chosen = {rec.tuned ? "signround" : "max", smoothed};
        qc.candidates = {{{"max", false}, rec.rtn_loss / ref}, {{"signround", false}, rec.tuned_loss / ref}};
        if (choice[t.id]) qc.candidates.emplace_back(choice[t.id]->chosen, rec.rival_judged / ref);
        choice[t.id] = std::move(qc);
        prequantized[t.id].reset();
        if (!rec.tuned) continue;
      } else if (!t.base.empty()) {
        // Started from another pass's choice: it stays unless tuning won; its figure joins the candidates.
        if (!choice[t.id]) return make_error("signround: " + model.tensors[t.id].name + ": a start without a choice");
        choice[t.id]->candidates.emplace_back(ir::AutoCandidate{"signround", false}, rec.tuned_loss / ref);
        if (!rec.tuned) continue;
        choice[t.id]->chosen = {"signround", false};
      } else {
        ir::QuantizerChoice qc;
        qc.chosen = {rec.tuned ? "signround" : "max", false};
        qc.candidates = {{{"max", false}, rec.rtn_loss / ref}, {{"signround", false}, rec.tuned_loss / ref}};
        choice[t.id] = std::move(qc);
        prequantized[t.id].reset();
        if (!rec.tuned) continue;
      }
      const runtime::LinearParams* w = linear_slot(p, t.role);
      ir::Prequantized pq;
      pq.quantizer = "signround";
      const hash::Digest d = hash::xxh3_128(std::as_bytes(std::span(w->weight)));
      pq.weight_hash_high = d.high;
      pq.weight_hash_low = d.low;
      pq.global_scale = t.G;
      pq.zero_scale = uint8_t(nvfp4::ZeroScale::CompressedTensors);
      pq.packed.resize(size_t(t.out * t.in / 2));
      pq.scales.resize(size_t(t.out * t.in / 16));
      nvfp4::ErrorStats err;
      quant::quantize_with_offsets(t.values(*w), t.out, t.in, t.G, best.v[i].data(),
                                   best.alpha[i].empty() ? nullptr : best.alpha[i].data(), pq.packed.data(),
                                   pq.scales.data(), nvfp4::ZeroScale::CompressedTensors, nullptr, nullptr, t.scales());
      // The weight error against the weight itself (not the start's values).
      std::vector<float> deq(w->weight.size());
      nvfp4::dequantize(pq.packed.data(), pq.scales.data(), t.out, t.in, t.G, deq.data());
      for (size_t j = 0; j < deq.size(); ++j) {
        const double e = double(w->weight[j]) - double(deq[j]);
        err.sum_sq_err += e * e;
        err.sum_sq_ref += double(w->weight[j]) * double(w->weight[j]);
        err.max_abs_err = std::max(err.max_abs_err, std::fabs(e));
      }
      err.count = int64_t(deq.size());
      pq.sum_sq_err = err.sum_sq_err;
      pq.sum_sq_ref = err.sum_sq_ref;
      pq.max_abs_err = err.max_abs_err;
      pq.count = err.count;
      prequantized[t.id] = std::move(pq);
    }
    rec.seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
    report.push_back(rec);
    if (progress) progress(l + 1, layers);
  }
  return report;
}

std::string format_signround(const std::vector<SignRoundLayer>& layers) {
  const bool rival = std::any_of(layers.begin(), layers.end(), [](const SignRoundLayer& r) { return r.rival_judged > 0 || r.rival_kept; });
  std::string out = "layer   start MSE / ref   tuned MSE / ref   best step   kept     seconds";
  out += rival ? "   held-out: own / ref   rival / ref   kept\n" : "\n";
  char line[200];
  for (const SignRoundLayer& r : layers) {
    const double ref = r.reference > 0 ? r.reference : 1.0;
    std::snprintf(line, sizeof line, "%5d   %15.4e   %15.4e   %9d   %-6s %9.2f", r.layer, r.rtn_loss / ref,
                  r.tuned_loss / ref, r.best_iter, r.tuned ? "tuned" : "start", r.seconds);
    out += line;
    if (rival) {
      std::snprintf(line, sizeof line, "   %19.4e   %11.4e   %s", r.own_judged / ref, r.rival_judged / ref,
                    r.rival_kept ? "rival" : "own");
      out += line;
    }
    out += "\n";
  }
  return out;
}

}  // namespace fp4c::passes
