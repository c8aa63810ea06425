// The signround pass's algorithm (passes::signround) on a tiny checkpoint: never worse than round-to-nearest on
// the calibration sequences (each layer's kept loss <= its RTN loss, checked here by running the layers as
// chosen), tuning lowers some layer's error, iters=0 is round-to-nearest, the same bytes at one and two
// threads, pack writes the tuned bytes (and refuses by name to make them itself), and the pipeline's checks.
#include <gtest/gtest.h>
#include <omp.h>

#include <cstring>
#include <map>
#include <optional>
#include <random>

#include "formats/nvfp4.h"
#include "frontend/checkpoint.h"
#include "passes/pack.h"
#include "passes/quantizers.h"
#include "passes/signround.h"
#include "passes/stats.h"
#include "passes/weight_plan.h"
#include "pipeline/pass.h"
#include "pipeline/pipeline_text.h"
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
  std::vector<std::vector<int32_t>> calib;
  passes::ActivationStats stats;

  explicit Fixture(bool w4a4, std::optional<uint64_t> with_seed = std::nullopt) {
    if (with_seed) seed = *with_seed;
    write_checkpoint(tmp.path / "m", shape, tiny_tensors(shape, seed));
    auto c = frontend::open_checkpoint((tmp.path / "m").string());
    EXPECT_TRUE(c.ok()) << c.error().message;
    ckpt.emplace(std::move(c).value());
    calib = random_sequences(seed, shape.vocab);
    for (auto& s : random_sequences(seed + 1, shape.vocab)) calib.push_back(s);
    runtime::Forward forward(ckpt->model.config, {});
    runtime::CheckpointWeights w(ckpt->model, ckpt->refs, false);
    auto s = passes::collect_stats(forward, w, calib, {});
    EXPECT_TRUE(s.ok());
    stats = std::move(*s);
    passes::WeightPlanOptions po;
    po.scheme = w4a4 ? passes::Scheme::W4A4 : passes::Scheme::W4A16;
    po.stats = &stats;
    EXPECT_TRUE(passes::plan_weights(ckpt->model, po).ok());
  }
  Expected<std::vector<passes::SignRoundLayer>> run(passes::SignRoundOptions options) {
    runtime::Forward forward(ckpt->model.config, {});
    runtime::CheckpointWeights w(ckpt->model, ckpt->refs, false);
    return passes::signround(ckpt->model, forward, w, calib, options);
  }
};

class MemorySink : public ir::ArtifactSink {
 public:
  Status put(ir::TensorId id, ir::TensorPart part, std::span<const std::byte> bytes) override {
    auto& v = parts[{id, int(part)}];
    v.insert(v.end(), bytes.begin(), bytes.end());
    return {};
  }
  std::map<std::pair<ir::TensorId, int>, std::vector<std::byte>> parts;
};

// The layers as the pass chose them, run here: each layer's output error against the unquantized model's,
// layer by layer (the quantized stream through the chosen layers, the target through the unquantized ones).
std::vector<double> chosen_layer_errors(Fixture& f, const std::map<std::pair<ir::TensorId, int>, std::vector<std::byte>>& art,
                                        const std::vector<std::vector<int32_t>>* sequences = nullptr) {
  auto& model = f.ckpt->model;
  runtime::Forward forward(model.config, {});
  runtime::CheckpointWeights w(model, f.ckpt->refs, false);
  auto fp = forward.embed(w, sequences ? *sequences : f.calib);
  EXPECT_TRUE(fp.ok());
  runtime::Activations q = *fp;
  std::vector<double> out;
  for (int l = 0; l < model.config.num_hidden_layers; ++l) {
    auto p = w.layer(l);
    EXPECT_TRUE(p.ok());
    runtime::LayerParams qp = *p;
    for (ir::TensorId id : model.linear_weights()) {
      const auto& t = model.tensors[id];
      if (t.layer != l || model.annotations.decision[id].format != ir::Format::NVFP4) continue;
      runtime::LinearParams* lp = nullptr;
      switch (t.role) {
        case ir::Role::Q: lp = &qp.q; break;
        case ir::Role::K: lp = &qp.k; break;
        case ir::Role::V: lp = &qp.v; break;
        case ir::Role::O: lp = &qp.o; break;
        case ir::Role::Gate: lp = &qp.gate; break;
        case ir::Role::Up: lp = &qp.up; break;
        case ir::Role::Down: lp = &qp.down; break;
        default: break;
      }
      const auto& packed = art.at({id, int(ir::TensorPart::PackedWeight)});
      const auto& scales = art.at({id, int(ir::TensorPart::BlockScales)});
      float G;
      std::memcpy(&G, art.at({id, int(ir::TensorPart::WeightGlobalScale)}).data(), 4);
      nvfp4::dequantize(reinterpret_cast<const uint8_t*>(packed.data()), reinterpret_cast<const uint8_t*>(scales.data()),
                        lp->out, lp->in, G, lp->weight.data());
      if (model.annotations.decision[id].input_amax)
        lp->input_global_scale = nvfp4::global_scale(*model.annotations.decision[id].input_amax);
    }
    EXPECT_TRUE(forward.layer(l, *p, *fp).ok());
    EXPECT_TRUE(forward.layer(l, qp, q).ok());
    double e = 0;
    for (size_t i = 0; i < q.hidden.size(); ++i) e += (double(q.hidden[i]) - fp->hidden[i]) * (double(q.hidden[i]) - fp->hidden[i]);
    out.push_back(e / double(q.hidden.size()));
  }
  return out;
}

std::map<std::pair<ir::TensorId, int>, std::vector<std::byte>> pack(Fixture& f, ir::Model& model) {
  MemorySink sink;
  passes::PackOptions po;
  po.stats = &f.stats;
  auto r = passes::pack_weights(model, f.ckpt->files, f.ckpt->refs, sink, po);
  EXPECT_TRUE(r.ok()) << (r.ok() ? "" : r.error().message);
  return sink.parts;
}

TEST(SignRound, NeverWorseThanRoundToNearestAndPackWritesTheTunedBytes) {
  for (bool w4a4 : {true, false}) {
    Fixture f(w4a4);
    SCOPED_TRACE(std::string(w4a4 ? "W4A4" : "W4A16") + ", seed " + std::to_string(f.seed));
    passes::SignRoundOptions o;
    o.iters = 30;
    o.batch = 2;
    auto layers = f.run(o);
    ASSERT_TRUE(layers.ok()) << layers.error().message;
    ASSERT_EQ(layers->size(), 2u);
    auto& model = f.ckpt->model;
    int tuned = 0;
    for (const auto& r : *layers) {
      EXPECT_LE(r.tuned_loss, r.rtn_loss);
      EXPECT_EQ(r.tuned, r.tuned_loss < r.rtn_loss);
      EXPECT_LT(r.best_iter, o.iters);   // iterates 0 .. iters - 1 are the candidates (as AutoRound)
      tuned += r.tuned;
    }
    EXPECT_GT(tuned, 0) << "tuning lowered no layer's error";
    // Every NVFP4 Linear has a choice; the tuned ones' bytes are handed to pack.
    for (ir::TensorId id : model.linear_weights()) {
      if (model.annotations.decision[id].format != ir::Format::NVFP4) continue;
      const auto& c = model.annotations.choice[id];
      ASSERT_TRUE(c.has_value()) << model.tensors[id].name;
      EXPECT_EQ(c->chosen.quantizer == "signround", model.annotations.prequantized[id].has_value());
      EXPECT_EQ(c->chosen.quantizer == "signround", (*layers)[size_t(*model.tensors[id].layer)].tuned);
    }
    const auto art = pack(f, model);
    for (ir::TensorId id : model.linear_weights())
      if (const auto& pq = model.annotations.prequantized[id]) {
        const auto& bytes = art.at({id, int(ir::TensorPart::PackedWeight)});
        ASSERT_EQ(bytes.size(), pq->packed.size());
        EXPECT_EQ(0, std::memcmp(bytes.data(), pq->packed.data(), bytes.size()));
      }
    // The artifact's layers, run here, give the errors the pass recorded (the stream through the chosen
    // layers), and round-to-nearest's artifact errs more at some layer and less at none.
    const auto errs = chosen_layer_errors(f, art);
    ir::Model rtn_model = model;
    rtn_model.annotations.choice.assign(rtn_model.tensors.size(), std::nullopt);
    rtn_model.annotations.prequantized.assign(rtn_model.tensors.size(), std::nullopt);
    const auto rtn_art = pack(f, rtn_model);
    EXPECT_NE(art, rtn_art);
    for (size_t l = 0; l < errs.size(); ++l) {
      EXPECT_NEAR(errs[l], (*layers)[l].tuned_loss, 1e-6 * (1 + (*layers)[l].tuned_loss)) << "layer " << l;
    }
    const auto rtn_errs = chosen_layer_errors(f, rtn_art);
    EXPECT_NEAR(rtn_errs[0], (*layers)[0].rtn_loss, 1e-6 * (1 + (*layers)[0].rtn_loss));
    if ((*layers)[0].tuned) EXPECT_LT(errs[0], rtn_errs[0]);
    else EXPECT_EQ(errs[0], rtn_errs[0]);
    // Without its bytes pack refuses the signround choice by name, rather than writing something else.
    ir::Model fresh = model;
    fresh.annotations.prequantized.assign(fresh.tensors.size(), std::nullopt);
    MemorySink sink;
    passes::PackOptions po;
    po.stats = &f.stats;
    auto r = passes::pack_weights(fresh, f.ckpt->files, f.ckpt->refs, sink, po);
    ASSERT_FALSE(r.ok());
    EXPECT_NE(r.error().message.find("signround"), std::string::npos) << r.error().message;
  }
}

TEST(SignRound, NoIterationsIsRoundToNearest) {
  Fixture f(true);
  SCOPED_TRACE("seed " + std::to_string(f.seed));
  passes::SignRoundOptions o;
  o.iters = 0;
  auto layers = f.run(o);
  ASSERT_TRUE(layers.ok()) << layers.error().message;
  for (const auto& r : *layers) {
    EXPECT_FALSE(r.tuned);
    EXPECT_EQ(r.best_iter, 0);
    EXPECT_GT(r.rtn_loss, 0.0);
  }
  auto& model = f.ckpt->model;
  for (const auto& p : model.annotations.prequantized) EXPECT_FALSE(p.has_value());
  ir::Model plain = model;
  plain.annotations.choice.assign(plain.tensors.size(), std::nullopt);
  EXPECT_EQ(pack(f, model), pack(f, plain));
}

TEST(SignRound, SameChoicesAndBytesAtOneAndTwoThreads) {
  Fixture f(true);
  Fixture g(true, f.seed);
  SCOPED_TRACE("seed " + std::to_string(f.seed));
  passes::SignRoundOptions o;
  o.iters = 12;
  o.batch = 3;
  o.threads = 1;
  auto a = f.run(o);
  o.threads = 2;
  auto b = g.run(o);
  ASSERT_TRUE(a.ok() && b.ok());
  for (size_t l = 0; l < a->size(); ++l) {
    EXPECT_EQ((*a)[l].best_iter, (*b)[l].best_iter);
    EXPECT_EQ((*a)[l].tuned_loss, (*b)[l].tuned_loss);
  }
  const auto& x = f.ckpt->model.annotations;
  const auto& y = g.ckpt->model.annotations;
  for (size_t i = 0; i < x.prequantized.size(); ++i) {
    ASSERT_EQ(x.prequantized[i].has_value(), y.prequantized[i].has_value());
    if (x.prequantized[i]) {
      EXPECT_EQ(x.prequantized[i]->packed, y.prequantized[i]->packed);
      EXPECT_EQ(x.prequantized[i]->scales, y.prequantized[i]->scales);
    }
  }
}

// Starting from another quantizer's choice (as signround{start=auto} does from auto's): with no steps the
// artifact is that choice's; with steps, never worse than it per layer, the tuned layers' Linears marked
// signround with the start's figure kept among the candidates, the others left as chosen.
TEST(SignRound, StartsFromAnotherChoice) {
  for (int iters : {0, 20}) {
    Fixture f(true);
    SCOPED_TRACE("iters " + std::to_string(iters) + ", seed " + std::to_string(f.seed));
    auto& model = f.ckpt->model;
    const auto mse = passes::parse_quantizer("mse");
    ASSERT_TRUE(mse.has_value());
    model.annotations.choice.assign(model.tensors.size(), std::nullopt);
    for (ir::TensorId id : model.linear_weights())
      if (model.annotations.decision[id].format == ir::Format::NVFP4)
        model.annotations.choice[id] = ir::QuantizerChoice{{"mse", false}, {{{"mse", false}, 0.5}}, std::nullopt};
    const ir::Model chosen = model;
    int started = 0;
    passes::SignRoundOptions o;
    o.iters = iters;
    o.batch = 2;
    o.start = [&](ir::TensorId id, const std::vector<float>& w, float G, std::vector<uint8_t>& packed,
                  std::vector<uint8_t>& scales) -> Expected<bool> {
      ++started;
      const auto& t = model.tensors[id];
      FP4C_TRY(passes::quantize_weight(*mse, w.data(), t.shape[0], t.shape[1], G, nullptr, t.module, packed.data(),
                                       scales.data(), nvfp4::ZeroScale::CompressedTensors, nullptr));
      return true;
    };
    auto layers = f.run(o);
    ASSERT_TRUE(layers.ok()) << layers.error().message;
    EXPECT_EQ(started, 14);
    ir::Model start_model = chosen;
    const auto start_art = pack(f, start_model);
    if (iters == 0) {
      EXPECT_EQ(pack(f, model), start_art);
      continue;
    }
    int tuned = 0;
    for (const auto& r : *layers) {
      EXPECT_LE(r.tuned_loss, r.rtn_loss);
      tuned += r.tuned;
    }
    EXPECT_GT(tuned, 0);
    for (ir::TensorId id : model.linear_weights()) {
      const auto& c = model.annotations.choice[id];
      if (!c) continue;
      const bool layer_tuned = (*layers)[size_t(*model.tensors[id].layer)].tuned;
      EXPECT_EQ(c->chosen.quantizer, layer_tuned ? "signround" : "mse");
      ASSERT_EQ(c->candidates.size(), 2u);
      EXPECT_EQ(c->candidates[0].first.quantizer, "mse");
      EXPECT_EQ(c->candidates[1].first.quantizer, "signround");
    }
    // The start's layer 0 error, from its artifact, is the pass's figure for it.
    const auto errs = chosen_layer_errors(f, start_art);
    EXPECT_NEAR(errs[0], (*layers)[0].rtn_loss, 1e-6 * (1 + (*layers)[0].rtn_loss));
  }
}

// A rival (as signround{rival=auto} has auto's choice): each layer is tuned from round-to-nearest, then the
// rival and the tuned layer are measured on other sequences through the layers as kept, the lesser kept (ties:
// the rival). The artifact run here on those sequences gives each layer the kept figure; the choices follow the
// verdicts. Rivals: mse (either may win), round-to-nearest itself with no steps (a tie everywhere: the rival),
// and a spoiled one (the weight times 1.5, quantized: tuning wins everywhere).
TEST(SignRound, CompetesWithARival) {
  enum class Rival { Mse, Same, Spoiled };
  for (Rival kind : {Rival::Mse, Rival::Same, Rival::Spoiled}) {
    Fixture f(true);
    SCOPED_TRACE("rival " + std::to_string(int(kind)) + ", seed " + std::to_string(f.seed));
    auto& model = f.ckpt->model;
    const auto q = passes::parse_quantizer(kind == Rival::Mse ? "mse" : "max");
    ASSERT_TRUE(q.has_value());
    model.annotations.choice.assign(model.tensors.size(), std::nullopt);
    model.annotations.prequantized.assign(model.tensors.size(), std::nullopt);
    for (ir::TensorId id : model.linear_weights())
      if (model.annotations.decision[id].format == ir::Format::NVFP4)
        model.annotations.choice[id] = ir::QuantizerChoice{{q->name(), true}, {{{q->name(), true}, 0.5}}, std::nullopt};
    const ir::Model rival_model = model;
    const auto judge = random_sequences(f.seed + 7, f.shape.vocab);
    passes::SignRoundOptions o;
    o.iters = kind == Rival::Same ? 0 : 20;
    o.batch = 2;
    o.rival_judge = &judge;
    o.start = [&](ir::TensorId id, const std::vector<float>& w, float G, std::vector<uint8_t>& packed,
                  std::vector<uint8_t>& scales) -> Expected<bool> {
      const auto& t = model.tensors[id];
      std::vector<float> x = w;
      if (kind == Rival::Spoiled)
        for (float& v : x) v *= 1.5f;
      FP4C_TRY(passes::quantize_weight(*q, x.data(), t.shape[0], t.shape[1], G, nullptr, t.module, packed.data(),
                                       scales.data(), nvfp4::ZeroScale::CompressedTensors, nullptr));
      return true;
    };
    auto layers = f.run(o);
    ASSERT_TRUE(layers.ok()) << layers.error().message;
    for (const auto& r : *layers) {
      EXPECT_GT(r.own_judged, 0.0);
      EXPECT_GT(r.rival_judged, 0.0);
      EXPECT_EQ(r.rival_kept, !(r.own_judged < r.rival_judged));
      EXPECT_LE(r.tuned_loss, r.rtn_loss);
      if (kind == Rival::Same) EXPECT_TRUE(r.rival_kept);
      if (kind == Rival::Spoiled) EXPECT_FALSE(r.rival_kept);
    }
    for (ir::TensorId id : model.linear_weights()) {
      const auto& c = model.annotations.choice[id];
      if (!c) continue;
      const auto& r = (*layers)[size_t(*model.tensors[id].layer)];
      const std::string own = r.tuned ? "signround" : "max";
      EXPECT_EQ(c->chosen.quantizer, r.rival_kept ? q->name() : own) << model.tensors[id].name;
      EXPECT_TRUE(c->chosen.smoothed);   // the site's smoothing stays whoever wins
      EXPECT_EQ(model.annotations.prequantized[id].has_value(), !r.rival_kept && r.tuned);
    }
    if (kind == Rival::Spoiled) continue;   // pack makes the rival from the unspoiled weight
    const auto art = pack(f, model);
    const auto errs = chosen_layer_errors(f, art, &judge);
    for (size_t l = 0; l < errs.size(); ++l) {
      const auto& r = (*layers)[l];
      const double kept = r.rival_kept ? r.rival_judged : r.own_judged;
      EXPECT_NEAR(errs[l], kept, 1e-6 * (1 + kept)) << "layer " << l;
    }
    // The rival alone (its artifact) gives layer 0 the rival's figure.
    ir::Model only_rival = rival_model;
    const auto rival_errs = chosen_layer_errors(f, pack(f, only_rival), &judge);
    EXPECT_NEAR(rival_errs[0], (*layers)[0].rival_judged, 1e-6 * (1 + (*layers)[0].rival_judged));
    EXPECT_LE(errs[0], rival_errs[0]);
  }
}

TEST(SignRound, Errors) {
  Fixture f(true);
  passes::SignRoundOptions o;
  o.batch = 0;
  auto r = f.run(o);
  ASSERT_FALSE(r.ok());
  EXPECT_NE(r.error().message.find("batch"), std::string::npos);
  o = {};
  {
    runtime::Forward forward(f.ckpt->model.config, {});
    runtime::CheckpointWeights w(f.ckpt->model, f.ckpt->refs, false);
    r = passes::signround(f.ckpt->model, forward, w, {}, o);
    ASSERT_FALSE(r.ok());
    EXPECT_NE(r.error().message.find("no calibration"), std::string::npos);
  }
  // The pipeline: a calibration set needed; one pass chooses the quantizers.
  struct Case {
    const char* text;
    bool calib;
    const char* error;
  };
  for (const Case& c : {Case{"stats,signround,blockscale,pack", false, "needs a calibration set"},
                        Case{"stats{second_moments=true},auto,signround,blockscale,pack", true, "after 'auto'"},
                        Case{"stats{second_moments=true},signround,auto,blockscale,pack", true, "after 'signround'"},
                        Case{"stats{second_moments=true},signround,gptq,blockscale,pack", true, "after 'signround'"},
                        Case{"stats,signround,blockscale{rule=mse},pack", true, "signround"},
                        Case{"stats,signround{start=auto},blockscale,pack", true, "needs an 'auto' pass before it"},
                        Case{"stats,signround{rival=auto},blockscale,pack", true, "needs an 'auto' pass before it"},
                        Case{"stats{second_moments=true},auto,signround{start=auto,rival=auto},blockscale,pack", true,
                             "exclude each other"}}) {
    auto p = pipeline::parse_pipeline(c.text);
    ASSERT_TRUE(p.ok()) << p.error().message;
    auto st = pipeline::check_pipeline(*p, passes::Scheme::W4A4, c.calib);
    ASSERT_FALSE(st.ok()) << c.text;
    EXPECT_NE(st.error().message.find(c.error), std::string::npos) << st.error().message;
  }
  for (const char* text : {"stats,signround{iters=20,batch=8},blockscale,pack",
                           "stats{second_moments=true},auto,signround{start=auto},blockscale,pack",
                           "stats{second_moments=true},auto,signround{rival=auto},blockscale,pack"}) {
    auto p = pipeline::parse_pipeline(text);
    ASSERT_TRUE(p.ok()) << p.error().message;
    EXPECT_TRUE(pipeline::check_pipeline(*p, passes::Scheme::W4A4, true).ok()) << text;
  }
}

}  // namespace
}  // namespace fp4c::testing
