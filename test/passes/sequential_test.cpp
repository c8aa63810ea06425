// Sequential calibration in the auto machinery (AutoOptions::sequential; the gptq pass's sequential option
// runs it with GPTQ as the one candidate): layer 0's statistics are the unquantized model's; layer 1's are
// those of the calibration sequences through layer 0 as quantized (computed here independently, with
// W4A4's activation fake-quantization); pack reproduces the choices from the statistics handed back; GPTAQ
// candidates get their asymmetric statistics (Xq^T Xq, (X - Xq)^T Xq, checked against a direct
// computation) and their bytes are kept for pack; one and two threads give the same choices and bytes;
// errors.
#include <gtest/gtest.h>
#include <omp.h>

#include <cmath>
#include <map>
#include <optional>
#include <random>

#include "formats/nvfp4.h"
#include "frontend/checkpoint.h"
#include "passes/auto_quantizer.h"
#include "passes/pack.h"
#include "passes/quantizers.h"
#include "passes/second_moments.h"
#include "passes/stats.h"
#include "passes/weight_plan.h"
#include "quant/gptq.h"
#include "quant/output_error.h"
#include "pipeline/pass.h"
#include "pipeline/pipeline_text.h"
#include "runtime/activation_quant.h"
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
  std::vector<passes::SiteStats> overlay;

  explicit Fixture(bool w4a4, std::optional<uint64_t> with_seed = std::nullopt) {
    if (with_seed) seed = *with_seed;
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
  Status run(passes::AutoOptions options) {
    options.sequential = &fit;
    runtime::Forward forward(ckpt->model.config, {});
    runtime::CheckpointWeights w(ckpt->model, ckpt->refs, false);
    overlay.clear();
    return passes::choose_quantizers(ckpt->model, forward, w, stats, heldout, options, {}, &overlay);
  }
  const passes::SiteStats* overlaid(int layer, ir::Role role) const {
    for (const auto& s : overlay)
      if (s.layer == layer && s.role == role) return &s;
    return nullptr;
  }
};

void expect_close(const std::vector<double>& a, const std::vector<double>& b, const char* what) {
  ASSERT_EQ(a.size(), b.size()) << what;
  double scale = 0;
  for (double v : b) scale = std::max(scale, std::fabs(v));
  for (size_t i = 0; i < a.size(); ++i) ASSERT_NEAR(a[i], b[i], 1e-9 * (1 + scale)) << what << " [" << i << "]";
}

// Round-to-nearest (max rule) as the only candidate: layer 0 quantized is then known exactly, so layer 1's
// statistics can be computed here without the machinery.
TEST(Sequential, StatisticsComeFromTheQuantizedLayersBefore) {
  for (bool w4a4 : {false, true}) {
    Fixture f(w4a4);
    SCOPED_TRACE(std::string(w4a4 ? "W4A4" : "W4A16") + ", seed " + std::to_string(f.seed));
    passes::AutoOptions options;
    options.candidates = {passes::auto_candidates()[0]};
    options.smoothquant = false;
    ASSERT_TRUE(f.run(options).ok());
    auto& model = f.ckpt->model;
    // Layer 0: the unquantized model's statistics (up to the order of summation).
    for (ir::Role r : {ir::Role::Q, ir::Role::O, ir::Role::Gate, ir::Role::Down}) {
      const auto* a = f.overlaid(0, r);
      const auto* b = f.stats.find(0, r);
      ASSERT_TRUE(a && b);
      EXPECT_EQ(a->tokens, b->tokens);
      expect_close(a->second_moment, b->second_moment, "layer 0 second moments");
      expect_close(a->mean_square, b->mean_square, "layer 0 mean squares");
      EXPECT_TRUE(a->asym_cross.empty());
    }
    // Layer 1 here: the fit sequences through layer 0 with its Linears round-to-nearest (group scale from
    // the fused group's max), inputs fake-quantized under W4A4.
    runtime::Forward forward(model.config, {});
    runtime::CheckpointWeights w(model, f.ckpt->refs, false);
    auto acts = forward.embed(w, f.fit);
    ASSERT_TRUE(acts.ok());
    auto p0 = w.layer(0);
    ASSERT_TRUE(p0.ok());
    runtime::LayerParams q0 = *p0;
    const auto quantize = [&](std::vector<runtime::LinearParams*> group, std::vector<ir::Role> roles) {
      float amax = 0;
      for (auto* lp : group) amax = std::max(amax, nvfp4::amax_f32(lp->weight));
      const float G = nvfp4::global_scale(amax);
      for (size_t k = 0; k < group.size(); ++k) {
        auto* lp = group[k];
        std::vector<uint8_t> packed(lp->weight.size() / 2), scales(lp->weight.size() / 16);
        nvfp4::quantize_f32_ref(lp->weight.data(), lp->out, lp->in, G, packed.data(), scales.data(),
                                nvfp4::ZeroScale::CompressedTensors, nullptr);
        nvfp4::dequantize(packed.data(), scales.data(), lp->out, lp->in, G, lp->weight.data());
        for (ir::TensorId id : model.linear_weights())
          if (model.tensors[id].layer == 0 && model.tensors[id].role == roles[k] && model.annotations.decision[id].input_amax)
            lp->input_global_scale = nvfp4::global_scale(*model.annotations.decision[id].input_amax);
      }
    };
    quantize({&q0.q, &q0.k, &q0.v}, {ir::Role::Q, ir::Role::K, ir::Role::V});
    quantize({&q0.o}, {ir::Role::O});
    quantize({&q0.gate, &q0.up}, {ir::Role::Gate, ir::Role::Up});
    quantize({&q0.down}, {ir::Role::Down});
    ASSERT_TRUE(forward.layer(0, q0, *acts).ok());
    auto p1 = w.layer(1);
    ASSERT_TRUE(p1.ok());
    std::map<ir::Role, std::vector<double>> h;
    ASSERT_TRUE(forward
                    .layer(1, *p1, *acts,
                           [&](const runtime::LinearInput& in) {
                             auto& m = h[in.role];
                             m.assign(size_t(in.cols * in.cols), 0.0);
                             for (int64_t t = 0; t < in.rows; ++t)
                               for (int64_t i = 0; i < in.cols; ++i)
                                 for (int64_t j = 0; j < in.cols; ++j)
                                   m[size_t(i * in.cols + j)] +=
                                       double(in.x[t * in.cols + i]) * double(in.x[t * in.cols + j]) / double(in.rows);
                           })
                    .ok());
    bool differs = false;
    for (ir::Role r : {ir::Role::Q, ir::Role::O, ir::Role::Gate, ir::Role::Down}) {
      const auto* a = f.overlaid(1, r);
      ASSERT_TRUE(a);
      expect_close(a->second_moment, h[r], "layer 1 second moments");
      differs = differs || a->second_moment != f.stats.find(1, r)->second_moment;
    }
    EXPECT_TRUE(differs) << "layer 1's statistics are the unquantized model's";
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

// With the statistics handed back laid over the original ones, pack computes the same GPTQ bytes that the
// sequential choice kept (so they are the statistics the choice was made from).
TEST(Sequential, PackReproducesTheChoicesFromTheOverlaidStatistics) {
  Fixture f(true);
  SCOPED_TRACE("seed " + std::to_string(f.seed));
  passes::AutoOptions options;
  options.candidates = {passes::auto_candidates()[5]};   // gptq
  options.smoothquant = false;
  ASSERT_TRUE(f.run(options).ok());
  auto& model = f.ckpt->model;
  int kept = 0;
  for (const auto& p : model.annotations.prequantized) kept += p.has_value();
  ASSERT_GT(kept, 0);
  const auto stats = passes::overlay_stats(std::make_shared<passes::ActivationStats>(f.stats), f.overlay);
  passes::PackOptions po;
  po.stats = stats.get();
  po.quantizer = options.candidates[0];
  auto pack = [&](ir::Model& m) {
    MemorySink sink;
    auto r = passes::pack_weights(m, f.ckpt->files, f.ckpt->refs, sink, po);
    EXPECT_TRUE(r.ok()) << (r.ok() ? "" : r.error().message);
    return sink.parts;
  };
  const auto with = pack(model);
  ir::Model fresh = model;
  fresh.annotations.prequantized.assign(fresh.tensors.size(), std::nullopt);
  EXPECT_EQ(with, pack(fresh));
  // And the unsequential statistics give other bytes.
  po.stats = &f.stats;
  EXPECT_NE(with, pack(fresh));
}

// GPTAQ candidates: their statistics against a direct computation at layer 0 (X = Xq's unquantized input:
// the same at layer 0, but for W4A4's fake quantization), chosen somewhere, kept for pack, and the whole
// run the same at one and two threads.
TEST(Sequential, GptaqStatisticsChoicesAndThreads) {
  Fixture f(true);
  Fixture g(true, f.seed);
  SCOPED_TRACE("seed " + std::to_string(f.seed));
  passes::AutoOptions options = {};
  options.candidates = passes::auto_candidates();
  for (const auto& q : passes::gptaq_candidates()) options.candidates.push_back(q);
  const ir::Model original = f.ckpt->model;
  const int saved = omp_get_max_threads();
  omp_set_num_threads(1);
  ASSERT_TRUE(f.run(options).ok());
  omp_set_num_threads(2);
  ASSERT_TRUE(g.run(options).ok());
  omp_set_num_threads(saved);
  const auto& a = f.ckpt->model.annotations;
  const auto& b = g.ckpt->model.annotations;
  bool measured = false;
  for (size_t i = 0; i < a.choice.size(); ++i) {
    ASSERT_EQ(a.choice[i].has_value(), b.choice[i].has_value());
    if (!a.choice[i]) continue;
    EXPECT_EQ(a.choice[i]->chosen, b.choice[i]->chosen);
    EXPECT_EQ(a.choice[i]->candidates, b.choice[i]->candidates);
    for (const auto& [cand, e] : a.choice[i]->candidates) measured = measured || cand.quantizer == "gptaq";
    ASSERT_EQ(a.prequantized[i].has_value(), b.prequantized[i].has_value());
    if (a.prequantized[i]) {
      EXPECT_EQ(a.prequantized[i]->packed, b.prequantized[i]->packed);
      EXPECT_EQ(a.prequantized[i]->scales, b.prequantized[i]->scales);
    }
    // A GPTAQ choice is always handed to pack (pack has not its statistics).
    if (a.choice[i]->chosen.quantizer.rfind("gptaq", 0) == 0) EXPECT_TRUE(a.prequantized[i].has_value());
  }
  EXPECT_TRUE(measured);
  for (const auto& s : f.overlay) EXPECT_TRUE(s.asym_cross.empty() && s.asym_second_moment.empty());

  // o_proj of layer 0, its gptaq candidate's error computed here: X from the fit sequences through the
  // unquantized layer 0 (at layer 0 the quantized model's input is the same, fake-quantized as served),
  // H = Xq^T Xq / n and D = (X - Xq)^T Xq / n, the error on the held-out sequences' input.
  auto& model = f.ckpt->model;
  ir::TensorId o0 = 0;
  for (ir::TensorId id : model.linear_weights())
    if (model.tensors[id].layer == 0 && model.tensors[id].role == ir::Role::O) o0 = id;
  const float gx = nvfp4::global_scale(*model.annotations.decision[o0].input_amax);
  runtime::Forward forward(model.config, {});
  runtime::CheckpointWeights w(original, f.ckpt->refs, false);
  auto p = w.layer(0);
  ASSERT_TRUE(p.ok());
  const auto o_input = [&](const std::vector<std::vector<int32_t>>& seqs, int64_t& rows) {
    std::vector<float> x;
    auto acts = forward.embed(w, seqs);
    EXPECT_TRUE(acts.ok());
    EXPECT_TRUE(forward.layer(0, *p, *acts, [&](const runtime::LinearInput& in) {
      if (in.role == ir::Role::O) x.assign(in.x, in.x + in.rows * in.cols), rows = in.rows;
    }).ok());
    return x;
  };
  int64_t n = 0, nh = 0;
  const std::vector<float> x = o_input(f.fit, n), xh = o_input(f.heldout, nh);
  const int64_t cols = p->o.in;
  std::vector<float> xq(x.size());
  runtime::fake_quantize_nvfp4(x.data(), n, cols, gx, xq.data());
  std::vector<double> h(size_t(cols * cols), 0.0), d(size_t(cols * cols), 0.0);
  passes::accumulate_second_moments_reference(h.data(), xq.data(), n, cols);
  passes::accumulate_cross_moments_reference(d.data(), x.data(), xq.data(), n, cols);
  for (int64_t i = 0; i < cols; ++i)
    for (int64_t j = 0; j < cols; ++j) {
      d[size_t(i * cols + j)] /= double(n);
      if (j >= i) h[size_t(i * cols + j)] /= double(n), h[size_t(j * cols + i)] = h[size_t(i * cols + j)];
    }
  const auto& wo = p->o;
  const float G = nvfp4::global_scale(nvfp4::amax_f32(wo.weight));
  std::vector<uint8_t> packed(wo.weight.size() / 2), scales(wo.weight.size() / 16);
  std::vector<float> deq(wo.weight.size());
  ASSERT_TRUE(quant::gptaq_quantize(wo.weight.data(), wo.out, wo.in, h.data(), d.data(), G, {}, packed.data(),
                                    scales.data(), nvfp4::ZeroScale::CompressedTensors, deq.data(), nullptr)
                  .ok());
  const double e = quant::linear_output_error(xh.data(), nh, cols, wo.weight.data(), deq.data(), wo.out, gx).relative();
  double got = -1;
  for (const auto& [cand, err] : model.annotations.choice[o0]->candidates)
    if (cand.quantizer == "gptaq") got = err;
  EXPECT_DOUBLE_EQ(got, e);
}

// auto{both_orders}: the gptq candidates in the other column order carry it in their name, pack reads it
// back from there (not from the pass's act_order) and so computes the same bytes the choice kept.
TEST(AutoOrders, TheOrderTravelsInTheName) {
  Fixture f(true);
  SCOPED_TRACE("seed " + std::to_string(f.seed));
  quant::GptqOptions natural;
  natural.act_order = false;
  const auto other = passes::other_order_candidates(natural);
  ASSERT_EQ(other.size(), 2u);
  EXPECT_EQ(other[0].name(), "gptq+actorder");
  EXPECT_EQ(other[1].name(), "gptq+localhessian+actorder");
  for (const auto& q : other) {
    const auto back = passes::parse_quantizer(q.name());
    ASSERT_TRUE(back.has_value()) << q.name();
    EXPECT_TRUE(back->gptq.act_order && back->order_in_name);
  }
  EXPECT_FALSE(passes::parse_quantizer("gptq+natural")->gptq.act_order);
  passes::AutoOptions options;
  options.gptq = natural;
  options.candidates = {other[0]};
  options.smoothquant = false;
  runtime::Forward forward(f.ckpt->model.config, {});
  runtime::CheckpointWeights w(f.ckpt->model, f.ckpt->refs, false);
  ASSERT_TRUE(passes::choose_quantizers(f.ckpt->model, forward, w, f.stats, f.heldout, options).ok());
  auto& model = f.ckpt->model;
  int kept = 0;
  for (const auto& p : model.annotations.prequantized) kept += p.has_value();
  ASSERT_GT(kept, 0);
  passes::PackOptions po;
  po.stats = &f.stats;
  po.quantizer = passes::auto_candidates(natural)[5];   // the pass's own gptq: natural order
  auto pack = [&](ir::Model& m) {
    MemorySink sink;
    auto r = passes::pack_weights(m, f.ckpt->files, f.ckpt->refs, sink, po);
    EXPECT_TRUE(r.ok()) << (r.ok() ? "" : r.error().message);
    return sink.parts;
  };
  const auto with = pack(model);
  ir::Model fresh = model;
  fresh.annotations.prequantized.assign(fresh.tensors.size(), std::nullopt);
  EXPECT_EQ(with, pack(fresh));
}

// sequential_all = false (auto{gptaq=true} without sequential): the quantized stream serves GPTAQ alone,
// every other candidate measures what it measures without it, and nothing is laid over the statistics.
TEST(Sequential, GptaqAloneLeavesTheOtherCandidatesAsTheyWere) {
  Fixture f(true);
  Fixture g(true, f.seed);
  SCOPED_TRACE("seed " + std::to_string(f.seed));
  passes::AutoOptions plain;
  plain.smoothquant = false;
  runtime::Forward forward(f.ckpt->model.config, {});
  runtime::CheckpointWeights w(f.ckpt->model, f.ckpt->refs, false);
  ASSERT_TRUE(passes::choose_quantizers(f.ckpt->model, forward, w, f.stats, f.heldout, plain).ok());
  passes::AutoOptions with = plain;
  with.candidates = passes::auto_candidates();
  for (const auto& q : passes::gptaq_candidates()) with.candidates.push_back(q);
  with.sequential_all = false;
  ASSERT_TRUE(g.run(with).ok());
  EXPECT_TRUE(g.overlay.empty());
  const size_t n = passes::auto_candidates().size();
  int compared = 0;
  for (size_t i = 0; i < f.ckpt->model.annotations.choice.size(); ++i) {
    const auto& a = f.ckpt->model.annotations.choice[i];
    const auto& b = g.ckpt->model.annotations.choice[i];
    ASSERT_EQ(a.has_value(), b.has_value());
    if (!a) continue;
    ASSERT_EQ(b->candidates.size(), n + 2);
    for (size_t c = 0; c < n; ++c) EXPECT_EQ(a->candidates[c], b->candidates[c]);
    EXPECT_EQ(b->candidates[n].first.quantizer, "gptaq");
    ++compared;
  }
  EXPECT_GT(compared, 0);
}

TEST(Sequential, CrossMomentsEqualTheReferenceAtAnyThreadCount) {
  const uint64_t seed = std::random_device{}();
  SCOPED_TRACE("seed " + std::to_string(seed));
  std::mt19937_64 rng(seed);
  std::normal_distribution<float> g(0.0f, 1.0f);
  // (600 rows: two chunks of rows; 40 and 24 columns: a partial panel and a partial tile.)
  for (auto [rows, cols] : {std::pair<int64_t, int64_t>{7, 16}, {150, 80}, {70, 256}, {600, 40}, {3, 24}}) {
    std::vector<float> x(size_t(rows * cols)), xq(x.size());
    for (size_t i = 0; i < x.size(); ++i) x[i] = g(rng) * (i % 13 == 0 ? 30.0f : 1.0f), xq[i] = x[i] + 0.1f * g(rng);
    std::vector<double> ref(size_t(cols * cols), 0.5), one = ref, two = ref;
    passes::accumulate_cross_moments_reference(ref.data(), x.data(), xq.data(), rows, cols);
    const int saved = omp_get_max_threads();
    omp_set_num_threads(1);
    passes::accumulate_cross_moments(one.data(), x.data(), xq.data(), rows, cols);
    omp_set_num_threads(2);
    passes::accumulate_cross_moments(two.data(), x.data(), xq.data(), rows, cols);
    omp_set_num_threads(saved);
    EXPECT_EQ(ref, one);
    EXPECT_EQ(ref, two);
  }
}

TEST(Sequential, Errors) {
  Fixture f(true);
  passes::AutoOptions options;
  options.candidates = passes::gptaq_candidates();
  runtime::Forward forward(f.ckpt->model.config, {});
  runtime::CheckpointWeights w(f.ckpt->model, f.ckpt->refs, false);
  auto st = passes::choose_quantizers(f.ckpt->model, forward, w, f.stats, f.heldout, options);
  ASSERT_FALSE(st.ok());
  EXPECT_NE(st.error().message.find("sequential"), std::string::npos) << st.error().message;
  const std::vector<std::vector<int32_t>> none;
  options.sequential = &none;
  st = passes::choose_quantizers(f.ckpt->model, forward, w, f.stats, f.heldout, options);
  ASSERT_FALSE(st.ok());
  EXPECT_NE(st.error().message.find("without calibration sequences"), std::string::npos) << st.error().message;
  // GPTAQ without its statistics names them.
  std::vector<float> wt(32 * 16, 0.1f);
  std::vector<uint8_t> packed(wt.size() / 2), scales(wt.size() / 16);
  st = passes::quantize_weight(passes::gptaq_candidates()[0], wt.data(), 16, 32, 1.0f, f.stats.find(0, ir::Role::Q),
                               "q", packed.data(), scales.data(), nvfp4::ZeroScale::CompressedTensors, nullptr);
  // (the site has 64 columns, not 32: the plain statistics error comes first)
  ASSERT_FALSE(st.ok());
  std::vector<float> wq(size_t(16 * 64), 0.1f);
  std::vector<uint8_t> pq(wq.size() / 2), sq(wq.size() / 16);
  st = passes::quantize_weight(passes::gptaq_candidates()[0], wq.data(), 16, 64, 1.0f, f.stats.find(0, ir::Role::Q),
                               "q", pq.data(), sq.data(), nvfp4::ZeroScale::CompressedTensors, nullptr);
  ASSERT_FALSE(st.ok());
  EXPECT_NE(st.error().message.find("asymmetric input statistics for q"), std::string::npos) << st.error().message;
  // The passes refuse GPTAQ without sequential calibration by name.
  for (const char* text : {"stats{second_moments=true},gptq{asymmetric=true},blockscale,pack"}) {
    auto p = pipeline::parse_pipeline(text);
    ASSERT_TRUE(p.ok()) << p.error().message;
    auto c = pipeline::check_pipeline(*p, passes::Scheme::W4A4, true);
    ASSERT_FALSE(c.ok()) << text;
    EXPECT_NE(c.error().message.find("needs sequential=true"), std::string::npos) << c.error().message;
  }
  for (const char* text : {"stats{second_moments=true},gptq{sequential=true,asymmetric=true},blockscale,pack",
                           "stats{second_moments=true},auto{sequential=true,gptaq=true},blockscale,pack",
                           "stats{second_moments=true},auto{gptaq=true},blockscale,pack"}) {
    auto p = pipeline::parse_pipeline(text);
    ASSERT_TRUE(p.ok()) << p.error().message;
    EXPECT_TRUE(pipeline::check_pipeline(*p, passes::Scheme::W4A4, true).ok()) << text;
  }
}

}  // namespace
}  // namespace fp4c::testing
