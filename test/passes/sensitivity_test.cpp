// The sensitivity pass and the weight plan's `keep`: the selection rule on hand-made and random
// errors (budget never exceeded, passed-over units, max_layers, budget 0, NaN first); on a tiny model:
// every NVFP4 Linear annotated, fused groups kept whole, planted weight and input outliers rank first,
// the KL metric (ranks follow it; one unit's KL equals an independent evaluation), the same result at
// 1 and 2 threads; plan_weights keeps what the pass returns.
#include <gtest/gtest.h>
#include <omp.h>

#include <cmath>
#include <functional>
#include <map>
#include <random>
#include <set>

#include "formats/nvfp4.h"
#include "frontend/checkpoint.h"
#include "quant/eval_metrics.h"
#include "quant/output_error.h"
#include "passes/sensitivity.h"
#include "passes/stats.h"
#include "passes/weight_plan.h"
#include "runtime/checkpoint_weights.h"
#include "test/support/tiny_checkpoint.h"
#include "test/support/tiny_runtime.h"

namespace fp4c::testing {
namespace {

passes::SensitivityUnit unit(int64_t params, double score) {
  passes::SensitivityUnit u;
  u.parameters = params;
  u.score = score;
  return u;
}

TEST(SelectUnits, HandMadeErrorsFollowTheRule) {
  // Budget 10% of 1000 = 100. Ranked: a (0.9, 60) kept; b (0.8, 50) does not fit, passed over;
  // c (0.5, 40) fits exactly; d (0.4, 1) does not fit; e (0.1, 0) would fit.
  const std::vector<passes::SensitivityUnit> units{unit(50, 0.8), unit(1, 0.4), unit(60, 0.9), unit(40, 0.5),
                                                   unit(0, 0.1)};
  auto s = passes::select_units(units, 1000, 10, 0);
  EXPECT_EQ(s.order, (std::vector<size_t>{2, 0, 3, 1, 4}));
  EXPECT_EQ(s.rank, (std::vector<size_t>{2, 4, 1, 3, 5}));
  EXPECT_EQ(s.kept, (std::vector<bool>{false, false, true, true, true}));
  EXPECT_EQ(s.budget_parameters, 100);
  EXPECT_EQ(s.kept_parameters, 100);
  // max_layers 1: only the first that fits.
  s = passes::select_units(units, 1000, 10, 1);
  EXPECT_EQ(s.kept, (std::vector<bool>{false, false, true, false, false}));
  // max_layers 2 with a budget for everything: the two most sensitive.
  s = passes::select_units(units, 1000, 100, 2);
  EXPECT_EQ(s.kept, (std::vector<bool>{true, false, true, false, false}));
  // Budget 0 keeps nothing that has parameters.
  s = passes::select_units(units, 1000, 0, 0);
  EXPECT_EQ(s.kept_parameters, 0);
  for (size_t u = 0; u < 4; ++u) EXPECT_FALSE(s.kept[u]);
  // The largest does not fit, the next does.
  s = passes::select_units({unit(200, 3), unit(90, 2), unit(20, 1)}, 1000, 10, 0);
  EXPECT_EQ(s.kept, (std::vector<bool>{false, true, false}));
  // NaN first; ties by index.
  s = passes::select_units({unit(1, 0.5), unit(1, NAN), unit(1, 0.5), unit(1, INFINITY)}, 100, 100, 0);
  EXPECT_EQ(s.order, (std::vector<size_t>{1, 3, 0, 2}));
}

TEST(SelectUnits, RandomUnitsNeverExceedTheBudgetAndFollowTheRule) {
  const uint64_t seed = std::random_device{}();
  SCOPED_TRACE("seed " + std::to_string(seed));
  std::mt19937_64 rng(seed);
  for (int trial = 0; trial < 200; ++trial) {
    std::vector<passes::SensitivityUnit> units(1 + rng() % 40);
    int64_t total = 0;
    for (auto& u : units) {
      u.parameters = 1 + int64_t(rng() % 1000);
      u.score = double(rng() % 50) / 7.0;   // ties happen
      total += u.parameters;
    }
    const double budget = double(rng() % 3000) / 100.0;
    const int max_layers = int(rng() % 4);
    const auto s = passes::select_units(units, total, budget, max_layers);
    const int64_t cap = int64_t(std::floor(double(total) * budget / 100.0));
    ASSERT_EQ(s.budget_parameters, cap);
    int64_t kept = 0;
    int kept_units = 0;
    for (size_t u = 0; u < units.size(); ++u)
      if (s.kept[u]) kept += units[u].parameters, ++kept_units;
    EXPECT_EQ(kept, s.kept_parameters);
    EXPECT_LE(kept, cap);
    if (max_layers > 0) { EXPECT_LE(kept_units, max_layers); }
    // The order is descending with ties by index; walking it, a unit is kept exactly when it fits and
    // the count allows.
    int64_t used = 0;
    int count = 0;
    for (size_t r = 0; r < s.order.size(); ++r) {
      const size_t u = s.order[r];
      EXPECT_EQ(s.rank[u], r + 1);
      if (r > 0) {
        const size_t p = s.order[r - 1];
        EXPECT_TRUE(units[p].score > units[u].score || (units[p].score == units[u].score && p < u));
      }
      const bool fits = used + units[u].parameters <= cap && (max_layers == 0 || count < max_layers);
      EXPECT_EQ(bool(s.kept[u]), fits) << "rank " << r + 1;
      if (fits) used += units[u].parameters, ++count;
    }
  }
}

// A weight outlier channel that does not change the function: input channel j of the gate/up input
// divided by s (the post-attention norm), the gate/up columns j multiplied by s. Every block holding
// column j then has one weight s times its neighbours, and those quantize to 0 (w/s of the block max).
void plant_weight_outlier_column(runtime::LayerParams& p, int64_t j, float s) {
  p.post_norm[size_t(j)] /= s;
  for (auto* lin : {&p.gate, &p.up})
    for (int64_t r = 0; r < lin->out; ++r) lin->weight[size_t(r * lin->in + j)] *= s;
}

struct Fixture {
  uint64_t seed = std::random_device{}();
  TinyShape shape;
  TempDir tmp;
  std::optional<frontend::LoadedCheckpoint> ckpt;
  std::vector<std::vector<int32_t>> seqs;
  std::optional<runtime::Forward> forward;
  std::optional<runtime::CheckpointWeights> weights;

  Fixture() {
    write_checkpoint(tmp.path / "m", shape, tiny_tensors(shape, seed));
    auto c = frontend::open_checkpoint((tmp.path / "m").string());
    EXPECT_TRUE(c.ok()) << c.error().message;
    ckpt.emplace(std::move(c).value());
    std::mt19937_64 rng(seed ^ 0x2545F4914F6CDD1Dull);
    for (int s = 0; s < 4; ++s) {
      std::vector<int32_t> ids(size_t(8 + 5 * s));
      for (auto& id : ids) id = int32_t(rng() % uint64_t(shape.vocab));
      seqs.push_back(ids);
    }
    forward.emplace(ckpt->model.config, runtime::ForwardOptions{});
    weights.emplace(ckpt->model, ckpt->refs, false);
  }
  ir::Model& model() { return ckpt->model; }
  ir::TensorId id(int layer, ir::Role role) {
    for (ir::TensorId i = 0; i < model().tensors.size(); ++i) {
      const auto& t = model().tensors[i];
      if (t.layer == layer && t.role == role && t.kind == ir::ParamKind::Weight) return i;
    }
    ADD_FAILURE() << "no tensor";
    return 0;
  }
  int64_t linear_parameters() {
    int64_t n = 0;
    for (ir::TensorId i : model().linear_weights())
      if (model().annotations.decision[i].format == ir::Format::NVFP4)
        n += model().tensors[i].shape[0] * model().tensors[i].shape[1];
    return n;
  }
};

TEST(WeightPlanKeep, KeptLinearsStayBf16WithTheirReasonAndTheirGroup) {
  Fixture f;
  const ir::TensorId q0 = f.id(0, ir::Role::Q), k0 = f.id(0, ir::Role::K), v0 = f.id(0, ir::Role::V),
                     down1 = f.id(1, ir::Role::Down), o1 = f.id(1, ir::Role::O);
  passes::WeightPlanOptions options;
  options.bf16_keep = {{k0, {ir::SkipKind::Sensitivity, "output error 0.5, rank 1 of 8, budget 2%"}},
                  {down1, {ir::SkipKind::Sensitivity, "rank 2"}},
                  {o1, {ir::SkipKind::Sensitivity, "rank 3"}}};
  options.ignore = {"layers\\.1\\.self_attn\\.o_proj$"};
  ASSERT_TRUE(passes::plan_weights(f.model(), options).ok());
  const auto& d = f.model().annotations.decision;
  for (ir::TensorId i : {q0, k0, v0, down1, o1}) EXPECT_EQ(d[i].format, ir::Format::BF16) << i;
  EXPECT_EQ(d[k0].skip->kind, ir::SkipKind::Sensitivity);
  EXPECT_EQ(d[k0].skip->detail, "output error 0.5, rank 1 of 8, budget 2%");
  EXPECT_EQ(d[q0].skip->kind, ir::SkipKind::FusedWithSkipped);
  EXPECT_EQ(d[v0].skip->kind, ir::SkipKind::FusedWithSkipped);
  EXPECT_EQ(d[down1].skip->kind, ir::SkipKind::Sensitivity);
  EXPECT_EQ(d[o1].skip->kind, ir::SkipKind::UserIgnore);   // --ignore's reason comes first
  int nvfp4 = 0;
  for (ir::TensorId i : f.model().linear_weights()) nvfp4 += d[i].format == ir::Format::NVFP4;
  EXPECT_EQ(nvfp4, 14 - 5);   // 2 layers x 7 Linears

  // Not a quantizable Linear, or no tensor at all.
  auto lm_head = f.model().find("lm_head.weight");
  ASSERT_TRUE(lm_head);
  options = {};
  options.bf16_keep = {{*lm_head, {ir::SkipKind::Sensitivity, ""}}};
  EXPECT_FALSE(passes::plan_weights(f.model(), options).ok());
  options.bf16_keep = {{ir::TensorId(f.model().tensors.size()), {ir::SkipKind::Sensitivity, ""}}};
  auto st = passes::plan_weights(f.model(), options);
  ASSERT_FALSE(st.ok());
  EXPECT_NE(st.error().message.find("outside"), std::string::npos) << st.error().message;
}

// Checks the invariants of a run: every NVFP4 Linear annotated; ranks shared within a fused group;
// kept members = whole units, within the budget and max_layers; the plan with `keep` honours them.
void check_run(Fixture& f, const std::vector<std::pair<ir::TensorId, ir::SkipReason>>& keep,
               const passes::SensitivityOptions& o) {
  ir::Model& m = f.model();
  const int64_t total = f.linear_parameters();
  std::set<ir::TensorId> kept;
  int64_t kept_params = 0;
  for (const auto& [id, reason] : keep) {
    EXPECT_TRUE(kept.insert(id).second);
    EXPECT_EQ(reason.kind, ir::SkipKind::Sensitivity);
    EXPECT_NE(reason.detail.find("rank "), std::string::npos) << reason.detail;
    EXPECT_NE(reason.detail.find(o.kl ? "kl " : "output error "), std::string::npos) << reason.detail;
    kept_params += m.tensors[id].shape[0] * m.tensors[id].shape[1];
  }
  EXPECT_LE(double(kept_params), double(total) * o.budget_percent / 100.0);
  std::set<int> ranks, kept_ranks;
  for (ir::TensorId id : m.linear_weights()) {
    if (m.annotations.decision[id].format != ir::Format::NVFP4) continue;
    ASSERT_TRUE(m.annotations.sensitivity[id]) << m.tensors[id].name;
    const auto& s = *m.annotations.sensitivity[id];
    EXPECT_GT(s.output_error, 0);
    EXPECT_TRUE(std::isfinite(s.output_error));
    EXPECT_EQ(s.kl.has_value(), o.kl);
    ranks.insert(s.rank);
    if (kept.count(id)) kept_ranks.insert(s.rank);
    if (const ir::FusedGroup* g = m.group_of(id))
      for (ir::TensorId other : g->members) {
        EXPECT_EQ(m.annotations.sensitivity[other]->rank, s.rank);
        EXPECT_EQ(kept.count(other), kept.count(id)) << "fused group split";
      }
  }
  EXPECT_EQ(int(ranks.size()), 8);   // qkv, o, gate/up, down per layer
  EXPECT_EQ(*ranks.begin(), 1);
  EXPECT_EQ(*ranks.rbegin(), 8);
  if (o.max_layers > 0) { EXPECT_LE(int(kept_ranks.size()), o.max_layers); }
}

TEST(Sensitivity, BudgetFusedGroupsMaxLayersAndPlan) {
  Fixture f;
  SCOPED_TRACE("seed " + std::to_string(f.seed));
  ASSERT_TRUE(passes::plan_weights(f.model(), {}).ok());
  const int64_t total = f.linear_parameters();
  ASSERT_EQ(total, 2 * (64 * 64 + 2 * 32 * 64 + 64 * 64 + 3 * 176 * 64));
  for (const passes::SensitivityOptions o : {passes::SensitivityOptions{.budget_percent = 2},
                                             passes::SensitivityOptions{.budget_percent = 0},
                                             passes::SensitivityOptions{.budget_percent = 30},
                                             passes::SensitivityOptions{.budget_percent = 100, .max_layers = 3},
                                             passes::SensitivityOptions{.budget_percent = 100}}) {
    SCOPED_TRACE("budget " + std::to_string(o.budget_percent) + " max_layers " + std::to_string(o.max_layers));
    int calls = 0;
    auto keep = passes::run_sensitivity(f.model(), *f.forward, *f.weights, f.seqs, o, [&](int, int) { ++calls; });
    ASSERT_TRUE(keep.ok()) << keep.error().message;
    EXPECT_EQ(calls, f.shape.layers);
    check_run(f, *keep, o);
    if (o.budget_percent <= 2) { EXPECT_TRUE(keep->empty()); }   // 2% of 92160 is less than any unit
    if (o.budget_percent == 30) { EXPECT_FALSE(keep->empty()); }
    if (o.max_layers == 3) {
      // The three most sensitive units, whatever their size.
      std::set<int> ranks;
      for (const auto& [id, r] : *keep) ranks.insert(f.model().annotations.sensitivity[id]->rank);
      EXPECT_EQ(ranks, (std::set<int>{1, 2, 3}));
    }
    if (o.budget_percent == 100 && o.max_layers == 0) { EXPECT_EQ(keep->size(), 14u); }
    // The plan with the list: the kept Linears stay BF16 for the sensitivity, the rest NVFP4.
    ir::Model planned = f.model();
    passes::WeightPlanOptions po;
    po.bf16_keep = *keep;
    ASSERT_TRUE(passes::plan_weights(planned, po).ok());
    std::set<ir::TensorId> kept;
    for (const auto& [id, r] : *keep) kept.insert(id);
    for (ir::TensorId id : planned.linear_weights()) {
      if (planned.tensors[id].role == ir::Role::LmHead) continue;
      const auto& d = planned.annotations.decision[id];
      EXPECT_EQ(d.format == ir::Format::BF16, kept.count(id) == 1);
      if (kept.count(id)) { EXPECT_EQ(d.skip->kind, ir::SkipKind::Sensitivity); }
    }
    const std::string table = passes::format_sensitivity(f.model());
    EXPECT_NE(table.find("model.layers.1.mlp.down_proj"), std::string::npos) << table;
  }
}

TEST(Sensitivity, NeedsAPlan) {
  Fixture f;
  auto r = passes::run_sensitivity(f.model(), *f.forward, *f.weights, f.seqs, {});
  ASSERT_FALSE(r.ok());
  EXPECT_NE(r.error().message.find("plan"), std::string::npos);
}

TEST(Sensitivity, PlantedWeightOutliersRankFirst) {
  Fixture f;
  SCOPED_TRACE("seed " + std::to_string(f.seed));
  // Layer 1's gate/up get an outlier column (W4A16).
  EditedWeights w(*f.weights, [](int layer, runtime::LayerParams& p) {
    if (layer == 1) plant_weight_outlier_column(p, 21, 1000.0f);
  });
  ASSERT_TRUE(passes::plan_weights(f.model(), {}).ok());
  auto keep = passes::run_sensitivity(f.model(), *f.forward, w, f.seqs, {.budget_percent = 25});
  ASSERT_TRUE(keep.ok()) << keep.error().message;
  const ir::TensorId gate1 = f.id(1, ir::Role::Gate), up1 = f.id(1, ir::Role::Up);
  const auto& s = f.model().annotations.sensitivity;
  EXPECT_EQ(s[gate1]->rank, 1) << passes::format_sensitivity(f.model());
  EXPECT_EQ(s[up1]->rank, 1);
  EXPECT_GT(s[gate1]->output_error, 0.05);
  // 22528 parameters fit in 25% of 92160 (23040); nothing else fits beside them.
  ASSERT_EQ(keep->size(), 2u);
  EXPECT_EQ(keep->front().first, std::min(gate1, up1));
  EXPECT_EQ(keep->back().first, std::max(gate1, up1));
  EXPECT_NE(keep->front().second.detail.find("rank 1 of 8, budget 25%"), std::string::npos) << keep->front().second.detail;
}

TEST(Sensitivity, PlantedInputOutliersRankFirstUnderW4A4) {
  Fixture f;
  SCOPED_TRACE("seed " + std::to_string(f.seed));
  // Layer 0's post-attention norm makes channel 9 of the gate/up input 1e7 times larger, and the
  // gate/up columns 9 are divided by as much: the function is the same, but under one input global
  // scale per tensor every other block's FP8 scale underflows (FP8 spans 448 / 2^-9, about 2e5).
  EditedWeights w(*f.weights, [](int layer, runtime::LayerParams& p) {
    if (layer != 0) return;
    const float s = 1e7f;
    p.post_norm[9] *= s;
    for (auto* lin : {&p.gate, &p.up})
      for (int64_t r = 0; r < lin->out; ++r) lin->weight[size_t(r * lin->in + 9)] /= s;
  });
  auto stats = passes::collect_stats(*f.forward, w, f.seqs, {});
  ASSERT_TRUE(stats.ok()) << stats.error().message;
  passes::WeightPlanOptions po;
  po.scheme = passes::Scheme::W4A4;
  po.stats = &*stats;
  ASSERT_TRUE(passes::plan_weights(f.model(), po).ok());
  auto keep = passes::run_sensitivity(f.model(), *f.forward, w, f.seqs, {});
  ASSERT_TRUE(keep.ok()) << keep.error().message;
  const auto& s = f.model().annotations.sensitivity;
  EXPECT_EQ(s[f.id(0, ir::Role::Gate)]->rank, 1) << passes::format_sensitivity(f.model());
  EXPECT_EQ(s[f.id(0, ir::Role::Up)]->rank, 1);
  EXPECT_GT(s[f.id(0, ir::Role::Gate)]->output_error, 0.5);
}

TEST(Sensitivity, KlMetric) {
  Fixture f;
  SCOPED_TRACE("seed " + std::to_string(f.seed));
  // (An outlier column too; on a random model it does not reliably give the largest KL, so the ranks
  // are only checked to follow the KL.)
  EditedWeights w(*f.weights, [](int layer, runtime::LayerParams& p) {
    if (layer == 0) plant_weight_outlier_column(p, 40, 1000.0f);
  });
  ASSERT_TRUE(passes::plan_weights(f.model(), {}).ok());
  int calls = 0;
  const passes::SensitivityOptions o{.budget_percent = 15, .kl = true};
  auto keep = passes::run_sensitivity(f.model(), *f.forward, w, f.seqs, o, [&](int, int) { ++calls; });
  ASSERT_TRUE(keep.ok()) << keep.error().message;
  EXPECT_EQ(calls, f.shape.layers + 8);
  check_run(f, *keep, o);
  // Ranks follow the KL, descending.
  std::map<int, double> kl_of_rank;
  for (ir::TensorId id : f.model().linear_weights())
    if (const auto& s = f.model().annotations.sensitivity[id]) {
      ASSERT_TRUE(s->kl);
      EXPECT_GE(*s->kl, 0);
      kl_of_rank[s->rank] = *s->kl;
    }
  double prev = INFINITY;
  for (const auto& [rank, kl] : kl_of_rank) {
    EXPECT_LE(kl, prev) << "rank " << rank;
    prev = kl;
  }
  // The KL of one unit is that of an independent evaluation with only it quantized: layer 1's down
  // (not fused: its own global scale; W4A16: no input quantization).
  EditedWeights only_down1(w, [](int layer, runtime::LayerParams& p) {
    if (layer == 1)
      p.down.weight = quant::nvfp4_round_trip(p.down.weight.data(), p.down.out, p.down.in,
                                               nvfp4::global_scale(nvfp4::amax_f32(p.down.weight)));
  });
  auto ev = quant::evaluate(*f.forward, w, &only_down1, f.seqs);
  ASSERT_TRUE(ev.ok()) << ev.error().message;
  EXPECT_GT(*ev->kl_mean, 0);
  EXPECT_EQ(*f.model().annotations.sensitivity[f.id(1, ir::Role::Down)]->kl, *ev->kl_mean);
  EXPECT_NE(passes::format_sensitivity(f.model()).find("kl"), std::string::npos);
}

TEST(Sensitivity, SameResultAtOneAndTwoThreads) {
  Fixture f;
  SCOPED_TRACE("seed " + std::to_string(f.seed));
  auto stats = passes::collect_stats(*f.forward, *f.weights, f.seqs, {});
  ASSERT_TRUE(stats.ok());
  passes::WeightPlanOptions po;
  po.scheme = passes::Scheme::W4A4;
  po.stats = &*stats;
  ASSERT_TRUE(passes::plan_weights(f.model(), po).ok());
  const int saved = omp_get_max_threads();
  std::vector<std::optional<ir::Sensitivity>> annotations[2];
  std::vector<std::pair<ir::TensorId, ir::SkipReason>> keeps[2];
  for (int t = 1; t <= 2; ++t) {
    omp_set_num_threads(t);
    auto keep = passes::run_sensitivity(f.model(), *f.forward, *f.weights, f.seqs, {.budget_percent = 30, .kl = true});
    ASSERT_TRUE(keep.ok()) << keep.error().message;
    keeps[t - 1] = *keep;
    annotations[t - 1] = f.model().annotations.sensitivity;
  }
  omp_set_num_threads(saved);
  ASSERT_EQ(keeps[0].size(), keeps[1].size());
  for (size_t i = 0; i < keeps[0].size(); ++i) {
    EXPECT_EQ(keeps[0][i].first, keeps[1][i].first);
    EXPECT_EQ(keeps[0][i].second.detail, keeps[1][i].second.detail);
  }
  ASSERT_EQ(annotations[0].size(), annotations[1].size());
  for (size_t i = 0; i < annotations[0].size(); ++i) {
    ASSERT_EQ(annotations[0][i].has_value(), annotations[1][i].has_value());
    if (!annotations[0][i]) continue;
    EXPECT_EQ(annotations[0][i]->output_error, annotations[1][i]->output_error);
    EXPECT_EQ(annotations[0][i]->kl, annotations[1][i]->kl);
    EXPECT_EQ(annotations[0][i]->rank, annotations[1][i]->rank);
  }
}

}  // namespace
}  // namespace fp4c::testing
