// The auto pass: every NVFP4 Linear gets a choice among all quantizers, fused groups share theirs, a lone
// Linear keeps its least-error candidate, the figures do not depend on the thread count, the candidate
// errors equal an independent output-error computation, and bad use is an error.
#include <gtest/gtest.h>
#include <omp.h>

#include <map>
#include <random>

#include "formats/nvfp4.h"
#include "frontend/checkpoint.h"
#include "passes/auto_quantizer.h"
#include "passes/pack.h"
#include "passes/output_error.h"
#include "passes/quantizers.h"
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

  explicit Fixture(bool w4a4) {
    write_checkpoint(tmp.path / "m", shape, tiny_tensors(shape, seed));
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
  Status run() {
    runtime::Forward forward(ckpt->model.config, {});
    runtime::CheckpointWeights w(ckpt->model, ckpt->refs, false);
    return passes::choose_quantizers(ckpt->model, forward, w, stats, heldout, {});
  }
};

TEST(AutoQuantizer, EveryLinearChosenGroupsTogetherLeastErrorKept) {
  for (bool w4a4 : {false, true}) {
    Fixture f(w4a4);
    SCOPED_TRACE(std::string(w4a4 ? "W4A4" : "W4A16") + ", seed " + std::to_string(f.seed));
    ASSERT_TRUE(f.run().ok());
    const auto& model = f.ckpt->model;
    const auto names = [] {
      std::vector<std::string> n;
      for (const auto& q : passes::auto_candidates()) n.push_back(q.name());
      return n;
    }();
    int lone = 0;
    for (ir::TensorId id : model.linear_weights()) {
      if (model.annotations.decision[id].format != ir::Format::NVFP4) continue;
      const auto& c = model.annotations.choice[id];
      ASSERT_TRUE(c.has_value()) << model.tensors[id].name;
      ASSERT_EQ(c->candidates.size(), names.size());
      for (size_t k = 0; k < names.size(); ++k) {
        EXPECT_EQ(c->candidates[k].first, names[k]);
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
  ASSERT_TRUE(f.run().ok());
  auto& model = f.ckpt->model;
  // o_proj of layer 0: its input is the attention output; recompute it with a hook and check two candidates.
  ir::TensorId o0 = 0;
  for (ir::TensorId id : model.linear_weights())
    if (model.tensors[id].layer == 0 && model.tensors[id].role == ir::Role::O) o0 = id;
  runtime::Forward forward(model.config, {});
  runtime::CheckpointWeights w(model, f.ckpt->refs, false);
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
    const double e = passes::linear_output_error(x.data(), rows, cols, wo.weight.data(), deq.data(), wo.out, gx).relative();
    EXPECT_DOUBLE_EQ(model.annotations.choice[o0]->candidates[k].second, e) << q.name();
  }
}

TEST(AutoQuantizer, SameChoicesAtOneAndTwoThreads) {
  Fixture f(true);
  SCOPED_TRACE("seed " + std::to_string(f.seed));
  const int saved = omp_get_max_threads();
  omp_set_num_threads(1);
  ASSERT_TRUE(f.run().ok());
  const auto one = f.ckpt->model.annotations.choice;
  omp_set_num_threads(2);
  ASSERT_TRUE(f.run().ok());
  omp_set_num_threads(saved);
  const auto& two = f.ckpt->model.annotations.choice;
  ASSERT_EQ(one.size(), two.size());
  for (size_t i = 0; i < one.size(); ++i) {
    ASSERT_EQ(one[i].has_value(), two[i].has_value());
    if (!one[i]) continue;
    EXPECT_EQ(one[i]->chosen, two[i]->chosen);
    EXPECT_EQ(one[i]->candidates, two[i]->candidates);
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
TEST(AutoQuantizer, PackReusesTheChosenResultsByteForByte) {
  Fixture f(true);
  SCOPED_TRACE("seed " + std::to_string(f.seed));
  ASSERT_TRUE(f.run().ok());
  auto& model = f.ckpt->model;
  int reused = 0;
  for (const auto& p : model.annotations.prequantized) reused += p.has_value();
  ASSERT_GT(reused, 0) << "no Linear chose gptq or localhessian";
  passes::PackOptions po;
  po.stats = &f.stats;
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

}  // namespace
}  // namespace fp4c::testing
