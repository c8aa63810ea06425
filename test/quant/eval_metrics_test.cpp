// evaluate's per-layer output error and per-sequence figures: the candidate equal to the reference has
// 0 error everywhere and the same NLLs; one perturbed Linear has error there only, equal to a plain
// double-precision computation (also for a W4A4-quantized one); a SmoothQuant rewrite without
// quantization has ~0 error; per-sequence NLLs and predictions sum to the totals.
#include <gtest/gtest.h>

#include <cmath>
#include <functional>
#include <random>

#include "formats/nvfp4.h"
#include "frontend/checkpoint.h"
#include "quant/eval_metrics.h"
#include "quant/output_error.h"
#include "passes/smoothquant.h"
#include "passes/stats.h"
#include "runtime/checkpoint_weights.h"
#include "test/support/tiny_checkpoint.h"
#include "test/support/tiny_runtime.h"

namespace fp4c::testing {
namespace {

std::vector<std::vector<int32_t>> random_sequences(std::mt19937_64& rng, int vocab) {
  std::vector<std::vector<int32_t>> seqs;
  for (int s = 0; s < 4; ++s) {
    std::vector<int32_t> ids(size_t(5 + 7 * s));
    for (auto& id : ids) id = int32_t(rng() % uint64_t(vocab));
    seqs.push_back(ids);
  }
  return seqs;
}

struct Fixture {
  uint64_t seed = std::random_device{}();
  TinyShape shape;
  TempDir tmp;
  std::optional<frontend::LoadedCheckpoint> ckpt;
  std::vector<std::vector<int32_t>> seqs;
  std::optional<runtime::Forward> forward;
  std::optional<runtime::CheckpointWeights> weights;

  explicit Fixture(const std::string& arch = "LlamaForCausalLM") {
    shape.architecture = arch;
    write_checkpoint(tmp.path / "m", shape, tiny_tensors(shape, seed));
    auto c = frontend::open_checkpoint((tmp.path / "m").string());
    EXPECT_TRUE(c.ok()) << c.error().message;
    ckpt.emplace(std::move(c).value());
    std::mt19937_64 rng(seed ^ 0x5bd1e995);
    seqs = random_sequences(rng, shape.vocab);
    forward.emplace(ckpt->model.config, runtime::ForwardOptions{.precision = runtime::Precision::F32});
    weights.emplace(ckpt->model, ckpt->refs, false);
  }

  // The reference's input of one Linear group at one layer, [tokens, cols].
  std::vector<float> site_input(int layer, ir::Role role) {
    std::vector<float> x;
    auto acts = forward->embed(*weights, seqs);
    EXPECT_TRUE(acts.ok());
    for (int i = 0; i <= layer; ++i) {
      auto p = weights->layer(i);
      EXPECT_TRUE(p.ok());
      EXPECT_TRUE(forward
                      ->layer(i, *p, *acts,
                              [&](const runtime::LinearInput& in) {
                                if (in.layer == layer && in.role == role) x.assign(in.x, in.x + in.rows * in.cols);
                              })
                      .ok());
    }
    return x;
  }
};

int role_index(ir::Role r) {
  const ir::Role order[] = {ir::Role::Q, ir::Role::K, ir::Role::V, ir::Role::O, ir::Role::Gate, ir::Role::Up, ir::Role::Down};
  for (int k = 0; k < 7; ++k)
    if (order[k] == r) return k;
  return -1;
}

void expect_layout(const quant::EvalResult& r, int layers) {
  ASSERT_EQ(r.layers.size(), size_t(7 * layers));
  for (size_t n = 0; n < r.layers.size(); ++n) {
    EXPECT_EQ(r.layers[n].layer, int(n / 7));
    EXPECT_EQ(role_index(r.layers[n].role), int(n % 7));
  }
}

// ||X (Wc)^T - X Wr^T||^2 / ||X Wr^T||^2 in double, X optionally fake-quantized for the candidate.
double plain_error(const std::vector<float>& x, int64_t in, const std::vector<float>& wr, const std::vector<float>& wc,
                   int64_t out, std::optional<float> gs) {
  const int64_t rows = int64_t(x.size()) / in;
  std::vector<float> xc = x;
  if (gs) {
    std::vector<uint8_t> packed(size_t(in / 2)), scales(size_t(in / 16));
    for (int64_t r = 0; r < rows; ++r) {
      nvfp4::quantize_f32_ref(x.data() + r * in, 1, in, *gs, packed.data(), scales.data());
      nvfp4::dequantize(packed.data(), scales.data(), 1, in, *gs, xc.data() + r * in);
    }
  }
  double err = 0, ref = 0;
  for (int64_t r = 0; r < rows; ++r)
    for (int64_t o = 0; o < out; ++o) {
      double a = 0, b = 0;
      for (int64_t j = 0; j < in; ++j) {
        a += double(x[size_t(r * in + j)]) * wr[size_t(o * in + j)];
        b += double(xc[size_t(r * in + j)]) * wc[size_t(o * in + j)];
      }
      err += (b - a) * (b - a);
      ref += a * a;
    }
  return err / ref;
}

TEST(EvaluateLayers, SameModelHasNoErrorAndTheSameNll) {
  Fixture f("Qwen2ForCausalLM");
  SCOPED_TRACE("seed " + std::to_string(f.seed));
  runtime::CheckpointWeights cand(f.ckpt->model, f.ckpt->refs, false);
  auto r = quant::evaluate(*f.forward, *f.weights, &cand, f.seqs, quant::EvalOptions{.per_layer = true});
  ASSERT_TRUE(r.ok()) << r.error().message;
  expect_layout(*r, f.shape.layers);
  for (const auto& l : r->layers) EXPECT_EQ(l.output_error, 0.0) << l.layer << " " << ir::role_name(l.role);
  EXPECT_EQ(*r->nll, r->reference_nll);
  EXPECT_EQ(r->sequence_nll, r->reference_sequence_nll);
  EXPECT_EQ(*r->kl_mean, 0.0);
}

TEST(EvaluateLayers, PerSequenceFiguresSumToTheTotals) {
  Fixture f;
  SCOPED_TRACE("seed " + std::to_string(f.seed));
  EditedWeights cand(*f.weights, [](int, runtime::LayerParams& p) {
    for (auto& w : p.up.weight) w *= 1.1f;
  });
  for (bool with_candidate : {false, true}) {
    auto r = quant::evaluate(*f.forward, *f.weights, with_candidate ? &cand : nullptr, f.seqs);
    ASSERT_TRUE(r.ok()) << r.error().message;
    EXPECT_TRUE(r->layers.empty());
    ASSERT_EQ(r->sequence_predictions.size(), f.seqs.size());
    ASSERT_EQ(r->reference_sequence_nll.size(), f.seqs.size());
    ASSERT_EQ(r->sequence_nll.size(), with_candidate ? f.seqs.size() : 0u);
    int64_t n = 0;
    double ref = 0, cnd = 0;
    for (size_t s = 0; s < f.seqs.size(); ++s) {
      EXPECT_EQ(r->sequence_predictions[s], int64_t(f.seqs[s].size()) - 1);
      EXPECT_GT(r->reference_sequence_nll[s], 0);
      n += r->sequence_predictions[s];
      ref += r->reference_sequence_nll[s];
      if (with_candidate) cnd += r->sequence_nll[s];
    }
    EXPECT_EQ(n, r->predictions);
    EXPECT_NEAR(ref, r->reference_nll, 1e-12 * r->reference_nll);
    if (with_candidate) {
      EXPECT_NEAR(cnd, *r->nll, 1e-12 * *r->nll);
      EXPECT_NE(*r->nll, r->reference_nll);
    }
  }
}

TEST(EvaluateLayers, OnePerturbedLinearHasErrorThereOnly) {
  Fixture f;
  SCOPED_TRACE("seed " + std::to_string(f.seed));
  std::mt19937_64 rng(f.seed);
  std::normal_distribution<float> noise(0, 0.01f);
  // Layer 0's gate gets noise (so every later Linear sees a different stream in the candidate's own
  // forward, but the same reference input here); layer 1's q is quantized W4A4.
  std::vector<float> gate_ref, gate_cand, q_ref, q_cand;
  float q_gs = 0;
  {
    auto p0 = f.weights->layer(0);
    auto p1 = f.weights->layer(1);
    ASSERT_TRUE(p0.ok() && p1.ok());
    gate_ref = p0->gate.weight;
    gate_cand = gate_ref;
    for (auto& w : gate_cand) w += noise(rng);
    q_ref = p1->q.weight;
    q_cand = quant::nvfp4_round_trip(q_ref.data(), p1->q.out, p1->q.in, nvfp4::global_scale(nvfp4::amax_f32(q_ref)));
  }
  const auto x_gate = f.site_input(0, ir::Role::Gate);
  const auto x_q = f.site_input(1, ir::Role::Q);
  q_gs = nvfp4::global_scale(0.8f * nvfp4::amax_f32(x_q));   // some inputs clip
  EditedWeights cand(*f.weights, [&](int layer, runtime::LayerParams& p) {
    if (layer == 0) p.gate.weight = gate_cand;
    if (layer == 1) {
      p.q.weight = q_cand;
      p.q.input_global_scale = q_gs;
    }
  });
  auto r = quant::evaluate(*f.forward, *f.weights, &cand, f.seqs, quant::EvalOptions{.per_layer = true});
  ASSERT_TRUE(r.ok()) << r.error().message;
  expect_layout(*r, f.shape.layers);
  const int64_t H = f.shape.hidden, I = f.shape.intermediate;
  const double want_gate = plain_error(x_gate, H, gate_ref, gate_cand, I, std::nullopt);
  const double want_q = plain_error(x_q, H, q_ref, q_cand, H, q_gs);
  ASSERT_GT(want_gate, 1e-6);
  ASSERT_GT(want_q, 1e-6);
  for (const auto& l : r->layers) {
    SCOPED_TRACE(std::to_string(l.layer) + " " + std::string(ir::role_name(l.role)));
    if (l.layer == 0 && l.role == ir::Role::Gate) {
      EXPECT_NEAR(l.output_error, want_gate, 1e-4 * want_gate);
    } else if (l.layer == 1 && l.role == ir::Role::Q) {
      EXPECT_NEAR(l.output_error, want_q, 1e-4 * want_q);
    } else {
      EXPECT_EQ(l.output_error, 0.0);
    }
  }
  EXPECT_GT(*r->kl_mean, 0);
}

TEST(EvaluateLayers, SmoothQuantRewriteWithoutQuantizationHasNoError) {
  Fixture f;
  SCOPED_TRACE("seed " + std::to_string(f.seed));
  auto stats = passes::collect_stats(*f.forward, *f.weights, f.seqs, {});
  ASSERT_TRUE(stats.ok()) << stats.error().message;
  auto factors = passes::compute_smoothquant(*stats, *f.weights, f.shape.layers, 0.5f);
  ASSERT_TRUE(factors.ok()) << factors.error().message;
  passes::SmoothedWeights smoothed(*f.weights, *factors);
  {  // The rewrite is not trivial: without the norm ratio the q/k/v and gate/up figures would be large.
    auto p = smoothed.layer(0);
    auto q = f.weights->layer(0);
    ASSERT_TRUE(p.ok() && q.ok());
    ASSERT_NE(p->input_norm, q->input_norm);
    ASSERT_NE(p->gate.weight, q->gate.weight);
  }
  auto r = quant::evaluate(*f.forward, *f.weights, &smoothed, f.seqs, quant::EvalOptions{.per_layer = true});
  ASSERT_TRUE(r.ok()) << r.error().message;
  expect_layout(*r, f.shape.layers);
  for (const auto& l : r->layers) EXPECT_LT(l.output_error, 1e-10) << l.layer << " " << ir::role_name(l.role);
  EXPECT_LT(*r->kl_mean, 1e-8);
}

}  // namespace
}  // namespace fp4c::testing
