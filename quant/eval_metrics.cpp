#include "quant/eval_metrics.h"

#include <algorithm>
#include <array>
#include <cmath>

#include "base/profile.h"
#include "quant/log_sum_exp.h"
#include "quant/output_error.h"

namespace fp4c::quant {
namespace {

// log-softmax of one row into `out` (double), returning nothing; out[v] = logit[v] - logsumexp.
void log_softmax(const float* logits, int64_t vocab, std::vector<double>& out) {
  out.resize(size_t(vocab));
  double m = -INFINITY;
  for (int64_t v = 0; v < vocab; ++v) m = std::max(m, double(logits[v]));
  double sum = 0;
  for (int64_t v = 0; v < vocab; ++v) sum += std::exp(double(logits[v]) - m);
  const double lse = m + std::log(sum);
  for (int64_t v = 0; v < vocab; ++v) out[size_t(v)] = double(logits[v]) - lse;
}

runtime::Activations slice(const runtime::Activations& a, int64_t first, int64_t rows, int64_t hidden) {
  runtime::Activations s;
  s.hidden.assign(a.hidden.begin() + first * hidden, a.hidden.begin() + (first + rows) * hidden);
  s.offsets = {0, rows};
  return s;
}

constexpr std::array<ir::Role, 7> kRoles{ir::Role::Q,    ir::Role::K,  ir::Role::V,   ir::Role::O,
                                         ir::Role::Gate, ir::Role::Up, ir::Role::Down};

// Input channel multipliers that turn the reference's normed input into the candidate's: cand / ref
// (1 where the reference weight is 0); empty when the two norms are equal.
std::vector<float> norm_ratio(const std::vector<float>& ref, const std::vector<float>& cand) {
  if (ref == cand) return {};
  std::vector<float> s(ref.size(), 1.0f);
  for (size_t j = 0; j < ref.size() && j < cand.size(); ++j)
    if (ref[j] != 0) s[j] = cand[j] / ref[j];
  return s;
}

// One layer's per-Linear output errors, filled by the reference forward's hook.
class LayerErrorHook {
 public:
  LayerErrorHook(const runtime::LayerParams& ref, const runtime::LayerParams& cand)
      : ref_(ref), cand_(cand), attn_scale_(norm_ratio(ref.input_norm, cand.input_norm)),
        mlp_scale_(norm_ratio(ref.post_norm, cand.post_norm)) {}

  static Status check(int layer, const runtime::LayerParams& ref, const runtime::LayerParams& cand) {
    if (ref.input_norm.size() != cand.input_norm.size() || ref.post_norm.size() != cand.post_norm.size())
      return make_error("eval: layer " + std::to_string(layer) + ": the candidate's norms differ in size from the reference's");
    for (size_t k = 0; k < kRoles.size(); ++k) {
      const runtime::LinearParams& r = member(ref, k);
      const runtime::LinearParams& c = member(cand, k);
      if (r.out != c.out || r.in != c.in || r.weight.size() != c.weight.size())
        return make_error("eval: layer " + std::to_string(layer) + " " + std::string(ir::role_name(kRoles[k])) +
                          ": candidate shape [" + std::to_string(c.out) + ", " + std::to_string(c.in) +
                          "] differs from the reference's [" + std::to_string(r.out) + ", " + std::to_string(r.in) + "]");
    }
    return {};
  }

  void operator()(const runtime::LinearInput& in) {
    // A sparse MoE layer's MLP: its experts' output errors are not measured per layer (the slots are the dense
    // MLP's, empty here).
    if (!ref_.experts.empty() && (in.role == ir::Role::Gate || in.role == ir::Role::Down)) return;
    switch (in.role) {
      case ir::Role::Q: run(in, {0, 1, 2}, attn_scale_); break;
      case ir::Role::O: run(in, {3}, {}); break;
      case ir::Role::Gate: run(in, {4, 5}, mlp_scale_); break;
      case ir::Role::Down: run(in, {6}, {}); break;
      default: break;
    }
  }

  const std::array<quant::OutputError, 7>& errors() const { return errors_; }

 private:
  static const runtime::LinearParams& member(const runtime::LayerParams& p, size_t k) {
    const runtime::LinearParams* m[7] = {&p.q, &p.k, &p.v, &p.o, &p.gate, &p.up, &p.down};
    return *m[k];
  }
  void run(const runtime::LinearInput& in, std::initializer_list<size_t> members, const std::vector<float>& scale) {
    for (size_t k : members) {
      const runtime::LinearParams& r = member(ref_, k);
      const runtime::LinearParams& c = member(cand_, k);
      errors_[k].merge(quant::linear_output_error(in.x, in.rows, in.cols, r.weight.data(), c.weight.data(), r.out,
                                           c.input_global_scale, scale.empty() ? nullptr : scale.data(),
                                           c.input_mxfp4));
    }
  }

  const runtime::LayerParams& ref_;
  const runtime::LayerParams& cand_;
  std::vector<float> attn_scale_, mlp_scale_;
  std::array<quant::OutputError, 7> errors_{};
};

}  // namespace

Expected<EvalResult> evaluate(const runtime::Engine& forward, runtime::WeightSource& reference,
                              runtime::WeightSource* candidate,
                              const std::vector<std::vector<int32_t>>& sequences,
                              const std::function<void(int, int)>& progress) {
  return evaluate(forward, reference, candidate, sequences, EvalOptions{}, progress);
}

Expected<EvalResult> evaluate(const runtime::Engine& forward, runtime::WeightSource& reference,
                              runtime::WeightSource* candidate,
                              const std::vector<std::vector<int32_t>>& sequences, const EvalOptions& options,
                              const std::function<void(int, int)>& progress) {
  if (sequences.empty()) return make_error("eval: the evaluation set has no sequences");
  const auto& config = forward.config();
  const int layers = int(config.num_hidden_layers);
  const int64_t hidden = config.hidden_size;

  runtime::Activations ref_acts, cand_acts;
  FP4C_ASSIGN(ref_acts, forward.embed(reference, sequences));
  if (candidate) {
    FP4C_ASSIGN(cand_acts, forward.embed(*candidate, sequences));
  }
  EvalResult r;
  const bool per_layer = options.per_layer && candidate;
  for (int i = 0; i < layers; ++i) {
    runtime::LayerParams ref_params, cand_params;
    FP4C_ASSIGN(ref_params, reference.layer(i));
    if (candidate) {
      FP4C_ASSIGN(cand_params, candidate->layer(i));
    }
    if (per_layer) {
      FP4C_TRY(LayerErrorHook::check(i, ref_params, cand_params));
      LayerErrorHook errors(ref_params, cand_params);
      FP4C_TRY(forward.layer(i, ref_params, ref_acts, [&errors](const runtime::LinearInput& in) { errors(in); }));
      for (size_t k = 0; k < kRoles.size(); ++k)
        r.layers.push_back(LayerOutputError{i, kRoles[k], errors.errors()[k].relative()});
    } else {
      FP4C_TRY(forward.layer(i, ref_params, ref_acts));
    }
    ref_params = {};
    if (candidate) FP4C_TRY(forward.layer(i, cand_params, cand_acts));
    if (progress) progress(i + 1, layers);
  }

  // The id each row predicts, or -1 for the last row of a sequence; the sequence of each row.
  std::vector<int32_t> target(size_t(ref_acts.tokens()), -1);
  std::vector<int32_t> sequence_of(size_t(ref_acts.tokens()), 0);
  for (size_t s = 0; s < sequences.size(); ++s) {
    for (size_t p = 0; p < sequences[s].size(); ++p) sequence_of[size_t(ref_acts.offsets[s]) + p] = int32_t(s);
    for (size_t p = 0; p + 1 < sequences[s].size(); ++p) target[size_t(ref_acts.offsets[s]) + p] = sequences[s][p + 1];
  }
  r.sequence_predictions.assign(sequences.size(), 0);
  r.reference_sequence_nll.assign(sequences.size(), 0.0);
  if (candidate) r.sequence_nll.assign(sequences.size(), 0.0);

  // The layers' temporaries, before lm_head is read: the head needs other ones. (With a candidate, whose
  // head runs chunk by chunk alternately with the reference's, they are kept as they were.)
  if (!candidate) forward.release_memory();
  FP4C_ASSIGN(auto ref_norm, reference.final_norm());
  FP4C_ASSIGN(auto ref_head, reference.lm_head());
  std::vector<float> cand_norm;
  runtime::LinearParams cand_head;
  if (candidate) {
    FP4C_ASSIGN(cand_norm, candidate->final_norm());
    FP4C_ASSIGN(cand_head, candidate->lm_head());
  }

  double nll_ref = 0, nll_cand = 0;
  int64_t agree = 0;
  std::vector<double> kls;
  const int64_t vocab = ref_head.out;
  if (!candidate) {
    // The reference alone: one pass of the head over every row, lm_head converted once (and its float
    // copy freed), each chunk's logits reduced where they lie to the target's NLL (log-sum-exp minus
    // its logit): memory bounded by one chunk of logits, about 128 MB.
    const int64_t chunk_rows = std::clamp<int64_t>((int64_t(1) << 25) / std::max<int64_t>(vocab, 1), 64, 1024);
    std::vector<double> row_nll(size_t(ref_acts.tokens()), 0);
    auto reduce = [&](int64_t row0, const float* logits, int64_t n) {
      profile::Scope timed(profile::Stage::LogSoftmax);
#pragma omp parallel for schedule(static)
      for (int64_t k = 0; k < n; ++k) {
        const int32_t t = target[size_t(row0 + k)];
        if (t < 0) continue;
        const float* row = logits + k * vocab;
        row_nll[size_t(row0 + k)] = -(double(row[t]) - log_sum_exp(row, vocab));
      }
    };
    FP4C_TRY(forward.head_consuming(ref_norm, std::move(ref_head), ref_acts, reduce, chunk_rows));
    for (int64_t k = 0; k < ref_acts.tokens(); ++k) {
      if (target[size_t(k)] < 0) continue;
      ++r.predictions;
      nll_ref += row_nll[size_t(k)];
      const size_t seq = size_t(sequence_of[size_t(k)]);
      ++r.sequence_predictions[seq];
      r.reference_sequence_nll[seq] += row_nll[size_t(k)];
    }
  }
  // Rows per head() call: each call converts lm_head once, so large slices, bounded to about 64M
  // logits per model.
  const int64_t kChunk = std::clamp<int64_t>((int64_t(1) << 26) / std::max<int64_t>(vocab, 1), 128, 4096);
  std::vector<float> ref_logits, cand_logits;
  // Each lm_head converted once for the full slices and once for the last, not once per slice.
  std::shared_ptr<void> ref_held, cand_held;
  if (candidate) {
    ref_held = forward.hold_converted_head(ref_head);
    cand_held = forward.hold_converted_head(cand_head);
  }
  for (int64_t first = 0; candidate && first < ref_acts.tokens(); first += kChunk) {
    const int64_t rows = std::min(kChunk, ref_acts.tokens() - first);
    auto keep = [](std::vector<float>& dst, int64_t vocab_) {
      return [&dst, vocab_](int64_t row0, const float* logits, int64_t n) {
        dst.resize(size_t((row0 + n) * vocab_));
        std::copy(logits, logits + n * vocab_, dst.begin() + row0 * vocab_);
      };
    };
    FP4C_TRY(forward.head(ref_norm, ref_head, slice(ref_acts, first, rows, hidden), keep(ref_logits, vocab), rows));
    if (candidate)
      FP4C_TRY(forward.head(cand_norm, cand_head, slice(cand_acts, first, rows, hidden), keep(cand_logits, vocab), rows));
    // Per row in parallel, then summed in row order (figures independent of the thread count).
    std::vector<double> row_nll_ref(size_t(rows), 0), row_nll_cand(size_t(rows), 0), row_kl(size_t(rows), 0);
    std::vector<char> row_agree(size_t(rows), 0);
    profile::Scope timed(profile::Stage::LogSoftmax);
#pragma omp parallel
    {
      std::vector<double> lp_ref, lp_cand;
#pragma omp for schedule(static)
      for (int64_t k = 0; k < rows; ++k) {
        const int32_t t = target[size_t(first + k)];
        if (t < 0) continue;
        log_softmax(ref_logits.data() + k * vocab, vocab, lp_ref);
        row_nll_ref[size_t(k)] = -lp_ref[size_t(t)];
        if (!candidate) continue;
        log_softmax(cand_logits.data() + k * vocab, vocab, lp_cand);
        row_nll_cand[size_t(k)] = -lp_cand[size_t(t)];
        double kl = 0;
        for (int64_t v = 0; v < vocab; ++v) kl += std::exp(lp_ref[size_t(v)]) * (lp_ref[size_t(v)] - lp_cand[size_t(v)]);
        row_kl[size_t(k)] = std::max(kl, 0.0);
        const auto a = std::max_element(lp_ref.begin(), lp_ref.end()) - lp_ref.begin();
        const auto b = std::max_element(lp_cand.begin(), lp_cand.end()) - lp_cand.begin();
        row_agree[size_t(k)] = a == b;
      }
    }
    for (int64_t k = 0; k < rows; ++k) {
      if (target[size_t(first + k)] < 0) continue;
      ++r.predictions;
      nll_ref += row_nll_ref[size_t(k)];
      const size_t seq = size_t(sequence_of[size_t(first + k)]);
      ++r.sequence_predictions[seq];
      r.reference_sequence_nll[seq] += row_nll_ref[size_t(k)];
      if (!candidate) continue;
      nll_cand += row_nll_cand[size_t(k)];
      r.sequence_nll[seq] += row_nll_cand[size_t(k)];
      kls.push_back(row_kl[size_t(k)]);
      agree += row_agree[size_t(k)];
    }
  }
  if (r.predictions == 0) return make_error("eval: no predictions (every sequence has a single token)");
  const double n = double(r.predictions);
  r.reference_nll = nll_ref;
  r.reference_perplexity = std::exp(nll_ref / n);
  if (candidate) {
    r.nll = nll_cand;
    r.perplexity = std::exp(nll_cand / n);
    r.recovery = r.reference_perplexity / *r.perplexity;
    double sum = 0;
    for (double k : kls) sum += k;
    r.kl_mean = sum / n;
    std::sort(kls.begin(), kls.end());
    auto quantile = [&](double q) { return kls[size_t(std::min<double>(double(kls.size() - 1), std::floor(q * double(kls.size() - 1) + 0.5)))]; };
    r.kl_median = quantile(0.5);
    r.kl_p99 = quantile(0.99);
    r.top1_agreement = double(agree) / n;
  }
  return r;
}

}  // namespace fp4c::quant
