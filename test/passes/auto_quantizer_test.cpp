// The auto pass: every NVFP4 Linear gets a choice among all quantizers, fused groups share theirs, a lone
// Linear keeps its least-error candidate, the figures do not depend on the thread count, the candidate
// errors equal an independent output-error computation, and bad use is an error.
#include <gtest/gtest.h>
#include <omp.h>

#include <cmath>
#include <map>
#include <optional>
#include <set>
#include <random>

#include "formats/nvfp4.h"
#include "frontend/checkpoint.h"
#include "passes/auto_quantizer.h"
#include "passes/pack.h"
#include "quant/output_error.h"
#include "passes/quantizers.h"
#include "passes/smoothquant.h"
#include "passes/stats.h"
#include "passes/weight_plan.h"
#include "runtime/checkpoint_weights.h"
#include "test/support/tiny_checkpoint.h"
#include "test/support/tiny_runtime.h"

namespace fp4c::testing {
namespace {

struct Fixture {
  uint64_t seed = std::random_device{}();
  TinyShape shape;
  TempDir tmp;
  std::optional<frontend::LoadedCheckpoint> ckpt;
  std::vector<std::vector<int32_t>> fit, heldout;
  passes::ActivationStats stats;

  std::vector<passes::SiteStats> smoothed;   // the rescaled statistics of the sites run() smoothed

  explicit Fixture(bool w4a4, bool outliers = false, std::optional<uint64_t> with_seed = std::nullopt) {
    if (with_seed) seed = *with_seed;
    write_checkpoint(tmp.path / "m", shape, outliers ? planted_outliers(shape, seed, "layernorm") : tiny_tensors(shape, seed));
    auto c = frontend::open_checkpoint((tmp.path / "m").string());
    EXPECT_TRUE(c.ok()) << c.error().message;
    ckpt.emplace(std::move(c).value());
    fit = random_sequences(seed, shape.vocab);
    heldout = random_sequences(seed ^ 0x9E3779B97F4A7C15ull, shape.vocab);
    runtime::Forward forward(ckpt->model.config, {});
    runtime::CheckpointWeights w(ckpt->model, ckpt->refs, false);
    auto s = passes::collect_stats(forward, w, fit, {.second_moments = true});
    EXPECT_TRUE(s.ok());
    stats = std::move(*s);
    passes::WeightPlanOptions po;
    po.scheme = w4a4 ? passes::Scheme::W4A4 : passes::Scheme::W4A16;
    po.stats = &stats;
    EXPECT_TRUE(passes::plan_weights(ckpt->model, po).ok());
  }
  Status run(const passes::AutoOptions& options = {}) {
    runtime::Forward forward(ckpt->model.config, {});
    runtime::CheckpointWeights w(ckpt->model, ckpt->refs, false);
    smoothed.clear();
    return passes::choose_quantizers(ckpt->model, forward, w, stats, heldout, options, {}, &smoothed);
  }
  // The statistics as pack should see them after run(): the smoothed sites' rescaled ones over the rest.
  std::shared_ptr<const passes::ActivationStats> stats_after() const {
    return passes::overlay_stats(std::make_shared<passes::ActivationStats>(stats), smoothed);
  }
};

bool smoothable(ir::Role r) {  // a consumer of a norm -> Linears site
  return r == ir::Role::Q || r == ir::Role::K || r == ir::Role::V || r == ir::Role::Gate || r == ir::Role::Up;
}

TEST(AutoQuantizer, EveryLinearChosenGroupsTogetherLeastErrorKept) {
  for (bool w4a4 : {false, true}) {
    Fixture f(w4a4);
    SCOPED_TRACE(std::string(w4a4 ? "W4A4" : "W4A16") + ", seed " + std::to_string(f.seed));
    ASSERT_TRUE(f.run().ok());
    const auto& model = f.ckpt->model;
    std::vector<ir::AutoCandidate> base, with_smoothed;
    for (const auto& q : passes::auto_candidates()) base.push_back({q.name(), false});
    with_smoothed = base;
    for (const auto& q : passes::auto_candidates()) with_smoothed.push_back({q.name(), true});
    int lone = 0;
    for (ir::TensorId id : model.linear_weights()) {
      if (model.annotations.decision[id].format != ir::Format::NVFP4) continue;
      const auto& c = model.annotations.choice[id];
      ASSERT_TRUE(c.has_value()) << model.tensors[id].name;
      // A consumer of a norm is also measured with its site smoothed.
      const auto& names = smoothable(model.tensors[id].role) ? with_smoothed : base;
      ASSERT_EQ(c->candidates.size(), names.size()) << model.tensors[id].name;
      for (size_t k = 0; k < names.size(); ++k) {
        EXPECT_EQ(c->candidates[k].first, names[k]) << c->candidates[k].first.label() << " " << names[k].label();
        EXPECT_GT(c->candidates[k].second, 0.0);
      }
      if (const ir::FusedGroup* g = model.group_of(id)) {
        for (ir::TensorId m : g->members) EXPECT_EQ(model.annotations.choice[m]->chosen, c->chosen);
      } else {
        ++lone;
        const auto best = std::min_element(c->candidates.begin(), c->candidates.end(),
                                           [](const auto& a, const auto& b) { return a.second < b.second; });
        EXPECT_EQ(c->chosen, best->first) << model.tensors[id].name;
        // Error-compensating or error-minimizing choices beat round-to-nearest with max scales here.
        EXPECT_LE(best->second, c->candidates[0].second);
      }
    }
    EXPECT_GT(lone, 0);
  }
}

TEST(AutoQuantizer, CandidateErrorsEqualAnIndependentComputation) {
  Fixture f(true);
  SCOPED_TRACE("seed " + std::to_string(f.seed));
  const ir::Model original = f.ckpt->model;   // as auto measured it, before any site's smoothing is folded in
  ASSERT_TRUE(f.run().ok());
  auto& model = f.ckpt->model;
  // o_proj of layer 0: its input is the attention output; recompute it with a hook and check two candidates.
  ir::TensorId o0 = 0;
  for (ir::TensorId id : model.linear_weights())
    if (model.tensors[id].layer == 0 && model.tensors[id].role == ir::Role::O) o0 = id;
  runtime::Forward forward(model.config, {});
  runtime::CheckpointWeights w(original, f.ckpt->refs, false);
  auto acts = forward.embed(w, f.heldout);
  ASSERT_TRUE(acts.ok());
  auto p = w.layer(0);
  ASSERT_TRUE(p.ok());
  std::vector<float> x;
  int64_t rows = 0, cols = 0;
  ASSERT_TRUE(forward
                  .layer(0, *p, *acts,
                         [&](const runtime::LinearInput& in) {
                           if (in.role != ir::Role::O) return;
                           x.assign(in.x, in.x + in.rows * in.cols);
                           rows = in.rows;
                           cols = in.cols;
                         })
                  .ok());
  const auto& wo = p->o;
  const float G = nvfp4::global_scale(nvfp4::amax_f32(wo.weight));
  const float gx = nvfp4::global_scale(*model.annotations.decision[o0].input_amax);
  const auto* site = f.stats.find(0, ir::Role::O);
  for (size_t k : {size_t(0), size_t(6)}) {   // max and gptq+localhessian
    const auto q = passes::auto_candidates()[k];
    std::vector<uint8_t> packed(wo.weight.size() / 2), scales(wo.weight.size() / 16);
    std::vector<float> deq(wo.weight.size());
    ASSERT_TRUE(passes::quantize_weight(q, wo.weight.data(), wo.out, wo.in, G, site, "o", packed.data(), scales.data(),
                                        nvfp4::ZeroScale::CompressedTensors, nullptr, deq.data())
                    .ok());
    const double e = quant::linear_output_error(x.data(), rows, cols, wo.weight.data(), deq.data(), wo.out, gx).relative();
    EXPECT_DOUBLE_EQ(model.annotations.choice[o0]->candidates[k].second, e) << q.name();
  }
}

TEST(AutoQuantizer, SameChoicesAtOneAndTwoThreads) {
  for (const std::vector<float>& alphas : {std::vector<float>{}, std::vector<float>{0.3f, 0.5f, 0.7f}}) {
  Fixture f(true, /*outliers=*/true);   // some sites smoothed, some not
  Fixture g(true, /*outliers=*/true, f.seed);
  SCOPED_TRACE("seed " + std::to_string(f.seed) + ", " + std::to_string(alphas.size()) + " alphas");
  passes::AutoOptions options;
  options.alphas = alphas;
  const int saved = omp_get_max_threads();
  omp_set_num_threads(1);
  ASSERT_TRUE(f.run(options).ok());
  const auto one = f.ckpt->model.annotations.choice;
  omp_set_num_threads(2);
  ASSERT_TRUE(g.run(options).ok());
  omp_set_num_threads(saved);
  ASSERT_EQ(f.ckpt->model.annotations.smoothing.size(), g.ckpt->model.annotations.smoothing.size());
  for (size_t i = 0; i < f.ckpt->model.annotations.smoothing.size(); ++i)
    EXPECT_EQ(f.ckpt->model.annotations.smoothing[i].alpha, g.ckpt->model.annotations.smoothing[i].alpha);
  const auto& two = g.ckpt->model.annotations.choice;
  EXPECT_EQ(f.ckpt->model.annotations.channel_scale, g.ckpt->model.annotations.channel_scale);
  ASSERT_EQ(one.size(), two.size());
  for (size_t i = 0; i < one.size(); ++i) {
    ASSERT_EQ(one[i].has_value(), two[i].has_value());
    if (!one[i]) continue;
    EXPECT_EQ(one[i]->chosen, two[i]->chosen);
    EXPECT_EQ(one[i]->candidates, two[i]->candidates);
    EXPECT_EQ(one[i]->layer_error, two[i]->layer_error);
    EXPECT_EQ(one[i]->layer_error_by_alpha, two[i]->layer_error_by_alpha);
  }
  }
}

TEST(AutoQuantizer, Errors) {
  Fixture f(false);
  f.heldout.clear();
  auto st = f.run();
  ASSERT_FALSE(st.ok());
  EXPECT_NE(st.error().message.find("held-out"), std::string::npos) << st.error().message;
  Fixture g(false);
  for (auto& s : g.stats.sites) s.second_moment.clear();   // statistics without second moments
  st = g.run();
  ASSERT_FALSE(st.ok());
  EXPECT_NE(st.error().message.find("second moments"), std::string::npos) << st.error().message;
  // Bad SmoothQuant alphas are named (the pipeline parser refuses them first; a caller of the library may not).
  const std::vector<std::pair<std::vector<float>, std::string>> bad{
      {{0.3f, 1.5f}, "alpha must lie in [0, 1], got 1.5"},
      {{0.3f, -0.1f}, "alpha must lie in [0, 1], got -0.1"},
      {{0.3f, NAN}, "alpha must lie in [0, 1], got nan"},
      {{0.3f, 0.5f, 0.3f}, "alpha 0.3 given twice"},
      {{0.1f, 0.2f, 0.3f, 0.4f, 0.5f, 0.6f, 0.7f, 0.8f, 0.9f}, "at most 8 SmoothQuant alphas, got 9"}};
  for (const auto& [alphas, want] : bad) {
    Fixture h(true, /*outliers=*/true);
    passes::AutoOptions options;
    options.alphas = alphas;
    st = h.run(options);
    ASSERT_FALSE(st.ok()) << want;
    EXPECT_NE(st.error().message.find(want), std::string::npos) << st.error().message;
    EXPECT_TRUE(h.ckpt->model.annotations.smoothing.empty());
  }
}

// Every byte pack writes, by tensor and part.
class MemorySink : public ir::ArtifactSink {
 public:
  Status put(ir::TensorId id, ir::TensorPart part, std::span<const std::byte> bytes) override {
    auto& v = parts[{id, int(part)}];
    v.insert(v.end(), bytes.begin(), bytes.end());
    return {};
  }
  std::map<std::pair<ir::TensorId, int>, std::vector<std::byte>> parts;
};

// pack takes auto's bytes for the chosen GPTQ / local-Hessian results instead of computing them again:
// the artifact's bytes and weight errors are those of computing them; a result for another weight is
// not taken.
// Without smoothing (GPTQ or local-Hessian wins somewhere on these random layers), and with it (planted
// channels: smoothed sites, whose pack must see the rescaled statistics; what wins there varies).
// And with three alphas per site (2): the bytes of a site smoothed at any of them.
class AutoPack : public ::testing::TestWithParam<int> {};

TEST_P(AutoPack, PackReusesTheChosenResultsByteForByte) {
  const bool smooth = GetParam() > 0;
  passes::AutoOptions options;
  options.smoothquant = smooth;
  if (GetParam() == 2) options.alphas = {0.3f, 0.5f, 0.7f};
  // On a random model a rule now and then wins every Linear (about 1 seed in 20): then the next seed.
  std::optional<Fixture> fixture;
  int reused = 0;
  for (int attempt = 0; attempt < 5 && reused == 0; ++attempt) {
    fixture.emplace(true, /*outliers=*/smooth);
    ASSERT_TRUE(fixture->run(options).ok());
    for (const auto& p : fixture->ckpt->model.annotations.prequantized) reused += p.has_value();
  }
  Fixture& f = *fixture;
  SCOPED_TRACE("seed " + std::to_string(f.seed));
  auto& model = f.ckpt->model;
  ASSERT_GT(reused, 0) << "no Linear chose gptq or localhessian in 5 random models";
  if (smooth) ASSERT_FALSE(model.annotations.smoothing.empty());
  passes::PackOptions po;
  const auto stats = f.stats_after();   // a smoothed site's quantizer must see the smoothed input's statistics
  po.stats = stats.get();
  auto pack = [&](ir::Model& m) {
    MemorySink sink;
    auto r = passes::pack_weights(m, f.ckpt->files, f.ckpt->refs, sink, po);
    EXPECT_TRUE(r.ok()) << (r.ok() ? "" : r.error().message);
    return sink.parts;
  };
  const auto with = pack(model);
  const auto packed_with = model.annotations.packed;
  ir::Model fresh = model;
  fresh.annotations.prequantized.assign(fresh.tensors.size(), std::nullopt);
  const auto without = pack(fresh);
  EXPECT_EQ(with, without);
  ASSERT_EQ(packed_with.size(), fresh.annotations.packed.size());
  for (size_t i = 0; i < packed_with.size(); ++i) {
    ASSERT_EQ(packed_with[i].has_value(), fresh.annotations.packed[i].has_value());
    if (!packed_with[i]) continue;
    EXPECT_EQ(packed_with[i]->error.relative_mse, fresh.annotations.packed[i]->error.relative_mse);
    EXPECT_EQ(packed_with[i]->error.max_abs_error, fresh.annotations.packed[i]->error.max_abs_error);
  }
  // A result recorded for other bytes is not used.
  ir::Model tampered = model;
  for (auto& p : tampered.annotations.prequantized)
    if (p) std::fill(p->packed.begin(), p->packed.end(), uint8_t(0x77)), p->weight_hash_low ^= 1;
  EXPECT_EQ(pack(tampered), without);
}

INSTANTIATE_TEST_SUITE_P(Smoothing, AutoPack, ::testing::Values(0, 1, 2), [](const auto& info) {
  return info.param == 0 ? "Unsmoothed" : info.param == 1 ? "Smoothed" : "SmoothedThreeAlphas";
});

// Planted 30x channels in every norm: under W4A4 smoothing those sites is measured, wins somewhere, and is
// folded into the model so that it computes the same function; the statistics handed back are those of
// the smoothed input; without the option nothing is smoothed.
TEST(AutoQuantizer, SmoothsWhereTheLayerErrsLessAndFoldsItIn) {
  Fixture f(true, /*outliers=*/true);
  SCOPED_TRACE("seed " + std::to_string(f.seed));
  auto& model = f.ckpt->model;
  runtime::Forward forward(model.config, {});
  std::vector<float> before;
  {
    runtime::CheckpointWeights w(model, f.ckpt->refs, false);
    before = logits(forward, w, f.heldout, f.shape.layers);
  }
  ASSERT_TRUE(f.run().ok());
  const auto& smoothing = model.annotations.smoothing;
  ASSERT_FALSE(smoothing.empty()) << "no site smoothed despite 30x outlier channels";
  ASSERT_EQ(f.smoothed.size(), smoothing.size());
  std::set<ir::TensorId> smoothed_members;
  for (const auto& rec : smoothing) {
    EXPECT_TRUE(model.transformed(rec.smooth));
    for (ir::TensorId b : rec.balanced) {
      smoothed_members.insert(b);
      EXPECT_TRUE(model.transformed(b));
      ASSERT_TRUE(model.annotations.choice[b].has_value());
      EXPECT_TRUE(model.annotations.choice[b]->chosen.smoothed) << model.tensors[b].name;
    }
  }
  for (ir::TensorId id : model.linear_weights())
    if (!smoothed_members.count(id) && model.annotations.choice[id])
      EXPECT_FALSE(model.annotations.choice[id]->chosen.smoothed) << model.tensors[id].name;
  // The layer errors that decided are recorded for every consumer of a measured site: smoothed where less.
  for (ir::TensorId id : model.linear_weights()) {
    const auto& c = model.annotations.choice[id];
    if (!c) continue;
    const bool consumer = smoothable(model.tensors[id].role);
    ASSERT_EQ(c->layer_error.has_value(), consumer) << model.tensors[id].name;
    if (!consumer) continue;
    EXPECT_GT(c->layer_error->first, 0.0);
    EXPECT_EQ(c->layer_error->second < c->layer_error->first, bool(smoothed_members.count(id))) << model.tensors[id].name;
  }

  // Folded exactly: rewritten norm_j x rewritten W[i, j] equals norm_j x W[i, j] up to the two BF16
  // roundings (each at most 2^-8 relative); a factor folded on one side only would be off by s_j.
  runtime::CheckpointWeights rewritten(model, f.ckpt->refs, false);
  {
    ir::Model original = model;
    original.annotations.channel_scale.clear();
    original.annotations.row_scale.clear();
    runtime::CheckpointWeights plain(original, f.ckpt->refs, false);
    for (const auto& rec : smoothing) {
      auto a = plain.layer(rec.layer), b = rewritten.layer(rec.layer);
      ASSERT_TRUE(a.ok() && b.ok());
      const bool attn = rec.mapping == ir::SmoothingMapping::Attention;
      const auto& na = attn ? a->input_norm : a->post_norm;
      const auto& nb = attn ? b->input_norm : b->post_norm;
      for (ir::Role r : attn ? std::vector<ir::Role>{ir::Role::Q, ir::Role::K, ir::Role::V}
                             : std::vector<ir::Role>{ir::Role::Gate, ir::Role::Up}) {
        const auto pick = [&](runtime::LayerParams& p) -> runtime::LinearParams& {
          return r == ir::Role::Q ? p.q : r == ir::Role::K ? p.k : r == ir::Role::V ? p.v : r == ir::Role::Gate ? p.gate : p.up;
        };
        const auto& wa = pick(*a).weight;
        const auto& wb = pick(*b).weight;
        const int64_t in = pick(*a).in;
        for (size_t i = 0; i < wa.size(); ++i) {
          const size_t j = i % size_t(in);
          const double want = double(na[j]) * wa[i], got = double(nb[j]) * wb[i];
          ASSERT_NEAR(got, want, 1.01 * std::ldexp(std::fabs(want), -7) + 1e-30) << rec.layer << " " << ir::mapping_name(rec.mapping) << " " << i;
        }
      }
    }
  }
  // And the model computes the same logits, up to those roundings carried through the layers (a few %
  // with 30x channels: a coarse check; the one above is the exact one).
  const auto after = logits(forward, rewritten, f.heldout, f.shape.layers);
  ASSERT_EQ(after.size(), before.size());
  double diff = 0, ref = 0;
  for (size_t i = 0; i < before.size(); ++i) diff += double(after[i] - before[i]) * (after[i] - before[i]), ref += double(before[i]) * before[i];
  EXPECT_LT(std::sqrt(diff / ref), 0.1);

  // The statistics handed back equal those measured afresh on the rewritten model, up to the BF16 rounding
  // of the weights rewritten before the site (carried through the layers as above); a wrong factor would
  // be off by the factors themselves.
  auto fresh = passes::collect_stats(forward, rewritten, f.fit, {.second_moments = true});
  ASSERT_TRUE(fresh.ok());
  for (const auto& got : f.smoothed) {
    const auto* want = fresh->find(got.layer, got.role);
    ASSERT_TRUE(want);
    SCOPED_TRACE("layer " + std::to_string(got.layer) + " " + std::string(ir::role_name(got.role)));
    ASSERT_EQ(got.cols(), want->cols());
    for (int64_t j = 0; j < got.cols(); ++j) {
      EXPECT_NEAR(got.absmax[size_t(j)], want->absmax[size_t(j)], 0.1 * want->absmax[size_t(j)]);
      EXPECT_NEAR(got.mean_square[size_t(j)], want->mean_square[size_t(j)], 0.2 * want->mean_square[size_t(j)]);
    }
    ASSERT_EQ(got.second_moment.size(), want->second_moment.size());
    double worst = 0;
    for (int64_t j = 0; j < got.cols(); ++j) {
      const double scale = want->mean_square[size_t(j)];
      worst = std::max(worst, std::fabs(got.second_moment[size_t(j * got.cols() + j)] -
                                        want->second_moment[size_t(j * got.cols() + j)]) / scale);
    }
    EXPECT_LT(worst, 0.2);
  }

  Fixture g(true, /*outliers=*/true, f.seed);
  passes::AutoOptions off;
  off.smoothquant = false;
  ASSERT_TRUE(g.run(off).ok());
  EXPECT_TRUE(g.ckpt->model.annotations.smoothing.empty());
  EXPECT_TRUE(g.smoothed.empty());
  for (ir::TensorId id : g.ckpt->model.linear_weights())
    if (const auto& c = g.ckpt->model.annotations.choice[id])
      EXPECT_EQ(c->candidates.size(), passes::auto_candidates().size());
}

// A site an earlier smoothquant pass rewrote is not smoothed again: its consumers get the plain candidates.
TEST(AutoQuantizer, SitesAlreadySmoothedAreLeftAlone) {
  Fixture f(true, /*outliers=*/true);
  SCOPED_TRACE("seed " + std::to_string(f.seed));
  auto& model = f.ckpt->model;
  ASSERT_TRUE(passes::smooth_model(model, f.ckpt->refs, f.stats, {}).ok());
  const size_t records = model.annotations.smoothing.size();
  ASSERT_GT(records, 0u);
  ASSERT_TRUE(f.run().ok());
  EXPECT_EQ(model.annotations.smoothing.size(), records);
  EXPECT_TRUE(f.smoothed.empty());
  for (ir::TensorId id : model.linear_weights())
    if (const auto& c = model.annotations.choice[id]) {
      EXPECT_EQ(c->candidates.size(), passes::auto_candidates().size()) << model.tensors[id].name;
      EXPECT_FALSE(c->layer_error.has_value());
    }
}

// auto{alpha=0.3/0.5/0.7}: every consumer of a site is measured at each alpha (labelled with it), the layer
// error at each is recorded, the site keeps the alpha whose layer output errs least (none where unsmoothed
// errs no more), and what is folded in is exactly what the smoothquant pass at that alpha does to that site:
// the same factors on the norm and on every consumer's columns, so pack writes the same bytes for it.
TEST(AutoQuantizer, PerSiteAlphaChosenByLayerErrorFoldedAsSmoothquantAtIt) {
  const std::vector<float> alphas{0.3f, 0.5f, 0.7f};
  const std::vector<std::string> texts{"0.3", "0.5", "0.7"};
  std::optional<Fixture> fixture;
  std::set<float> chosen_alphas;
  // Planted outlier channels: some sites are smoothed; on a random model now and then only one alpha wins
  // everywhere, then the next seed (the checks below hold for every seed).
  for (int attempt = 0; attempt < 4 && chosen_alphas.size() < 2; ++attempt) {
    fixture.emplace(true, /*outliers=*/true);
    passes::AutoOptions options;
    options.alphas = alphas;
    ASSERT_TRUE(fixture->run(options).ok());
    chosen_alphas.clear();
    for (const auto& rec : fixture->ckpt->model.annotations.smoothing) chosen_alphas.insert(rec.alpha);
  }
  Fixture& f = *fixture;
  SCOPED_TRACE("seed " + std::to_string(f.seed));
  auto& model = f.ckpt->model;
  ASSERT_FALSE(model.annotations.smoothing.empty());
  const size_t n = passes::auto_candidates().size();
  std::map<ir::TensorId, float> alpha_of;   // smoothed consumer -> its site's alpha
  for (const auto& rec : model.annotations.smoothing)
    for (ir::TensorId b : rec.balanced) alpha_of[b] = rec.alpha;
  for (ir::TensorId id : model.linear_weights()) {
    const auto& c = model.annotations.choice[id];
    if (!c) continue;
    SCOPED_TRACE(model.tensors[id].name);
    if (!smoothable(model.tensors[id].role)) {
      EXPECT_EQ(c->candidates.size(), n);
      EXPECT_TRUE(c->layer_error_by_alpha.empty());
      continue;
    }
    ASSERT_EQ(c->candidates.size(), n * (1 + alphas.size()));
    for (size_t k = 0; k < c->candidates.size(); ++k) {
      const auto& cand = c->candidates[k].first;
      EXPECT_EQ(cand.quantizer, passes::auto_candidates()[k % n].name());
      EXPECT_EQ(cand.smoothed, k >= n);
      EXPECT_EQ(cand.alpha, k >= n ? texts[k / n - 1] : "");
      if (k >= n) {
        EXPECT_EQ(cand.label(), "smoothquant@" + texts[k / n - 1] + "+" + cand.quantizer);
      }
    }
    ASSERT_TRUE(c->layer_error.has_value());
    ASSERT_EQ(c->layer_error_by_alpha.size(), alphas.size());
    size_t least = 0;
    for (size_t v = 0; v < alphas.size(); ++v) {
      EXPECT_EQ(c->layer_error_by_alpha[v].first, alphas[v]);
      if (c->layer_error_by_alpha[v].second < c->layer_error_by_alpha[least].second) least = v;
    }
    EXPECT_EQ(c->layer_error->second, c->layer_error_by_alpha[least].second);
    const bool smoothed = c->layer_error->second < c->layer_error->first;
    EXPECT_EQ(c->chosen.smoothed, smoothed);
    EXPECT_EQ(alpha_of.count(id), size_t(smoothed));
    if (smoothed) {
      EXPECT_EQ(alpha_of[id], alphas[least]);
      EXPECT_EQ(c->chosen.alpha, texts[least]);
      // The chosen candidate is the least error among that alpha's (over the fused group).
      bool among = false;
      for (size_t k = n * (least + 1); k < n * (least + 2); ++k) among = among || c->candidates[k].first == c->chosen;
      EXPECT_TRUE(among);
    }
  }
  // Each site as the smoothquant pass at its alpha leaves it: the same factors on the norm and the consumers.
  for (const float a : chosen_alphas) {
    ir::Model fresh = Fixture(true, /*outliers=*/true, f.seed).ckpt->model;
    passes::SmoothQuantOptions so;
    so.alpha = a;
    ASSERT_TRUE(passes::smooth_model(fresh, f.ckpt->refs, f.stats, so).ok());
    for (const auto& rec : model.annotations.smoothing) {
      if (rec.alpha != a) continue;
      SCOPED_TRACE("layer " + std::to_string(rec.layer) + " " + std::string(ir::mapping_name(rec.mapping)) +
                   " alpha " + std::to_string(a));
      ASSERT_LT(rec.smooth, fresh.annotations.channel_scale.size());
      EXPECT_EQ(model.annotations.channel_scale[rec.smooth], fresh.annotations.channel_scale[rec.smooth]);
      for (ir::TensorId b : rec.balanced)
        EXPECT_EQ(model.annotations.channel_scale[b], fresh.annotations.channel_scale[b]) << model.tensors[b].name;
    }
  }
  // The single default alpha keeps the labels (and so the manifests) it always had: no '@'.
  Fixture g(true, /*outliers=*/true, f.seed);
  ASSERT_TRUE(g.run().ok());
  for (ir::TensorId id : g.ckpt->model.linear_weights())
    if (const auto& c = g.ckpt->model.annotations.choice[id]) {
      EXPECT_TRUE(c->layer_error_by_alpha.empty());
      for (const auto& [cand, e] : c->candidates) EXPECT_TRUE(cand.alpha.empty()) << cand.label();
    }
}

}  // namespace
}  // namespace fp4c::testing
