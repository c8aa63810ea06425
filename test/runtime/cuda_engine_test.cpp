// The CUDA engine through the CPU forward's cases (test/runtime/forward_test.cpp; both use the float64
// reference of test/support/forward_reference.h): tiny Qwen2-shaped models with GQA and q/k/v
// bias, plain and Llama 3 RoPE, F32 and BF16, hooks, many tokens, NVFP4 W4A16 and W4A4 from packed
// weights against the CPU on the dequantized ones, bad input. Needs a GPU: labelled `gpu` in CTest
// (left out of CI), and every test skips when cuda::device_count() fails.
#include <gtest/gtest.h>

#include <nlohmann/json.hpp>

#include <cmath>
#include <filesystem>
#include <fstream>
#include <random>

#include "formats/nvfp4.h"
#include "frontend/checkpoint.h"
#include "runtime/checkpoint_weights.h"
#include "runtime/cuda/cuda_api.h"
#include "runtime/device.h"
#include "runtime/forward.h"
#include "test/support/forward_reference.h"

namespace fp4c::runtime {
namespace {

using namespace fp4c::testing::reference;

#define SKIP_WITHOUT_GPU()                                                          \
  do {                                                                              \
    auto n = cuda::device_count();                                                  \
    if (!n.ok()) GTEST_SKIP() << "no GPU: " << n.error().message;                   \
  } while (0)

class TinySource final : public WeightSource {
 public:
  explicit TinySource(const TinyModel& m) : m_(m) {}
  Expected<std::vector<float>> embedding() override { return m_.embedding; }
  Expected<LayerParams> layer(int index) override { return m_.layers.at(size_t(index)); }
  Expected<std::vector<float>> final_norm() override { return m_.final_norm; }
  Expected<LinearParams> lm_head() override { return m_.lm_head; }

 private:
  const TinyModel& m_;
};

struct HookCall {
  int layer;
  ir::Role role;
  int64_t rows, cols;
  std::vector<float> x;
};
struct EngineResult {
  std::vector<float> logits;  // [T, vocab]
  std::vector<HookCall> calls;
  std::vector<int64_t> offsets;
};

EngineResult run_engine(const Engine& engine, const TinyModel& m, const std::vector<std::vector<int32_t>>& seqs,
                        int64_t chunk_rows = 256) {
  TinySource source(m);
  EngineResult res;
  auto acts = engine.embed(source, seqs);
  EXPECT_TRUE(acts.ok()) << acts.error().message;
  if (!acts.ok()) return res;
  res.offsets = acts->offsets;
  for (int l = 0; l < m.config.num_hidden_layers; ++l) {
    Status st = engine.layer(l, m.layers[size_t(l)], *acts, [&](const LinearInput& in) {
      res.calls.push_back({in.layer, in.role, in.rows, in.cols, std::vector<float>(in.x, in.x + in.rows * in.cols)});
    });
    EXPECT_TRUE(st.ok()) << st.error().message;
  }
  const int64_t V = m.config.vocab_size;
  res.logits.assign(size_t(acts->tokens() * V), NAN);
  Status st = engine.head(m.final_norm, m.lm_head, *acts, [&](int64_t first, const float* logits, int64_t rows) {
    std::copy(logits, logits + rows * V, res.logits.begin() + first * V);
  }, chunk_rows);
  EXPECT_TRUE(st.ok()) << st.error().message;
  return res;
}

std::unique_ptr<Engine> cuda_engine(const ir::ModelConfig& c, Precision p) {
  auto e = make_engine("cuda", c, {p});
  EXPECT_TRUE(e.ok()) << e.error().message;
  return e.ok() ? std::move(*e) : nullptr;
}

// max |a - b| / max |b|.
double relative_to(const std::vector<float>& got, const std::vector<float>& want) {
  EXPECT_EQ(got.size(), want.size());
  double diff = 0, scale = 0;
  for (size_t i = 0; i < std::min(got.size(), want.size()); ++i) {
    diff = std::max(diff, std::fabs(double(got[i]) - double(want[i])));
    scale = std::max(scale, std::fabs(double(want[i])));
  }
  return diff / scale;
}

class CudaVsReference : public ::testing::TestWithParam<bool> {};

TEST_P(CudaVsReference, F32LogitsWithin1e4) {
  SKIP_WITHOUT_GPU();
  const TinyModel m = tiny_model(GetParam(), 1);
  const auto seqs = tiny_sequences(m.config.vocab_size);
  auto engine = cuda_engine(m.config, Precision::F32);
  ASSERT_TRUE(engine);
  std::printf("%s, fp4 path %s\n", engine->device().c_str(), engine->fp4_path().c_str());
  EXPECT_EQ(engine->device().rfind("cuda:0 ", 0), 0u);
  const EngineResult got = run_engine(*engine, m, seqs);
  const double err = relative_error(got.logits, reference_forward(m, seqs, {}).logits);
  RecordProperty("relative_error", sci(err));
  EXPECT_LT(err, 1e-4);
  const EngineResult cpu = run_engine(Forward(m.config, {Precision::F32}), m, seqs);
  EXPECT_LT(relative_to(got.logits, cpu.logits), 1e-4);
  // Small head chunks and a second run give the same logits, bit for bit.
  EXPECT_EQ(run_engine(*engine, m, seqs, 5).logits, got.logits);
  EXPECT_EQ(run_engine(*engine, m, seqs).logits, got.logits);
}

TEST_P(CudaVsReference, HooksSeeEachLinearGroupsInput) {
  SKIP_WITHOUT_GPU();
  const TinyModel m = tiny_model(GetParam(), 2);
  const auto seqs = tiny_sequences(m.config.vocab_size);
  const ReferenceResult ref = reference_forward(m, seqs, {});
  auto engine = cuda_engine(m.config, Precision::F32);
  ASSERT_TRUE(engine);
  const EngineResult got = run_engine(*engine, m, seqs);
  const int64_t T = got.offsets.back();
  const ir::Role order[] = {ir::Role::Q, ir::Role::O, ir::Role::Gate, ir::Role::Down};
  const int64_t cols[] = {64, 64, 64, 96};
  ASSERT_EQ(got.calls.size(), size_t(4 * m.config.num_hidden_layers));
  for (size_t i = 0; i < got.calls.size(); ++i) {
    const HookCall& call = got.calls[i];
    EXPECT_EQ(call.layer, int(i / 4));
    EXPECT_EQ(call.role, order[i % 4]);
    EXPECT_EQ(call.rows, T);
    EXPECT_EQ(call.cols, cols[i % 4]);
    EXPECT_LT(relative_error(call.x, ref.inputs.at({call.layer, call.role})), 2e-5);
  }
}

INSTANTIATE_TEST_SUITE_P(RopeScaling, CudaVsReference, ::testing::Values(false, true),
                         [](const auto& info) { return info.param ? "llama3" : "plain"; });

TEST(CudaEngine, ManyTokensWithinTolerance) {
  SKIP_WITHOUT_GPU();
  const TinyModel m = tiny_model(false, 8);
  std::mt19937_64 rng(std::random_device{}());
  std::vector<std::vector<int32_t>> seqs(33);
  for (auto& s : seqs) {
    s.resize(size_t(40 + rng() % 60));
    for (auto& id : s) id = int32_t(rng() % uint64_t(m.config.vocab_size));
  }
  auto engine = cuda_engine(m.config, Precision::F32);
  ASSERT_TRUE(engine);
  const EngineResult got = run_engine(*engine, m, seqs);
  ASSERT_GT(got.offsets.back(), 2048);
  EXPECT_LT(relative_error(got.logits, reference_forward(m, seqs, {}).logits), 1e-4);
}

TEST(CudaEngine, Bf16RoundsMatrixProductInputs) {
  SKIP_WITHOUT_GPU();
  const TinyModel m = tiny_model(true, 4);
  const auto seqs = tiny_sequences(m.config.vocab_size);
  auto engine = cuda_engine(m.config, Precision::BF16);
  ASSERT_TRUE(engine);
  const EngineResult got = run_engine(*engine, m, seqs);
  const double vs_bf16_ref = relative_error(got.logits, reference_forward(m, seqs, {.bf16 = true}).logits);
  const double vs_f64_ref = relative_error(got.logits, reference_forward(m, seqs, {}).logits);
  const double vs_cpu = relative_to(got.logits, run_engine(Forward(m.config, {Precision::BF16}), m, seqs).logits);
  RecordProperty("vs_bf16_reference", sci(vs_bf16_ref));
  RecordProperty("vs_cpu_bf16", sci(vs_cpu));
  EXPECT_LT(vs_bf16_ref, 2e-3);
  EXPECT_GT(vs_f64_ref, 1e-4);
  EXPECT_LT(vs_f64_ref, 5e-2);
  EXPECT_LT(vs_cpu, 2e-3);
}

// Every Linear of the model through NVFP4 (max block scales, G shared by q/k/v and by gate/up), as an
// artifact holds it: `packed` set and `weight` the dequantized values. The CUDA copy drops `weight`,
// so only the packed bytes can have been multiplied.
void pack_weights(TinyModel& m, bool modelopt) {
  auto group = [&](std::initializer_list<LinearParams*> ps) {
    float amax = 0;
    for (LinearParams* p : ps) amax = std::max(amax, nvfp4::amax_f32(p->weight));
    const float G = nvfp4::global_scale(amax);
    for (LinearParams* p : ps) {
      PackedNvfp4 packed;
      packed.codes.resize(p->weight.size() / 2);
      packed.block_scales.resize(p->weight.size() / 16);
      nvfp4::quantize_f32_ref(p->weight.data(), p->out, p->in, G, packed.codes.data(), packed.block_scales.data());
      packed.global_scale = G;
      if (modelopt) {
        packed.weight_scale_2 = 1.0f / G;
        nvfp4::dequantize(packed.codes.data(), packed.block_scales.data(), p->out, p->in, 1.0f, p->weight.data());
        for (float& v : p->weight) v *= *packed.weight_scale_2;
      } else {
        nvfp4::dequantize(packed.codes.data(), packed.block_scales.data(), p->out, p->in, G, p->weight.data());
      }
      p->packed = std::move(packed);
    }
  };
  for (LayerParams& l : m.layers) {
    group({&l.q, &l.k, &l.v});
    group({&l.o});
    group({&l.gate, &l.up});
    group({&l.down});
  }
}

TinyModel without_dense_weights(TinyModel m) {
  for (LayerParams& l : m.layers)
    for (LinearParams* p : {&l.q, &l.k, &l.v, &l.o, &l.gate, &l.up, &l.down}) p->weight.clear();
  return m;
}

void set_input_scales(TinyModel& m, const EngineResult& calib) {
  for (const HookCall& call : calib.calls) {
    float amax = 0;
    for (float v : call.x) amax = std::max(amax, std::fabs(v));
    const float G = nvfp4::global_scale(amax);
    LayerParams& p = m.layers[size_t(call.layer)];
    switch (call.role) {
      case ir::Role::Q: p.q.input_global_scale = p.k.input_global_scale = p.v.input_global_scale = G; break;
      case ir::Role::O: p.o.input_global_scale = G; break;
      case ir::Role::Gate: p.gate.input_global_scale = p.up.input_global_scale = G; break;
      case ir::Role::Down: p.down.input_global_scale = G; break;
      default: break;
    }
  }
}

struct Nvfp4Case {
  bool w4a4;
  bool modelopt;
  Precision precision;
};

class CudaNvfp4 : public ::testing::TestWithParam<Nvfp4Case> {};

TEST_P(CudaNvfp4, PackedWeightsMatchTheCpuOnTheDequantizedOnes) {
  SKIP_WITHOUT_GPU();
  const Nvfp4Case c = GetParam();
  TinyModel m = tiny_model(false, 11);
  const auto seqs = tiny_sequences(m.config.vocab_size);
  pack_weights(m, c.modelopt);
  if (c.w4a4) set_input_scales(m, run_engine(Forward(m.config, {Precision::F32}), m, seqs));
  const EngineResult cpu = run_engine(Forward(m.config, {c.precision}), m, seqs);
  auto engine = cuda_engine(m.config, c.precision);
  ASSERT_TRUE(engine);
  const EngineResult got = run_engine(*engine, without_dense_weights(m), seqs);
  const double err = relative_to(got.logits, cpu.logits);
  std::printf("%s vs CPU: %.3e (fp4 path %s)\n", c.w4a4 ? "W4A4" : "W4A16", err, engine->fp4_path().c_str());
  RecordProperty("relative_error_vs_cpu", sci(err));
  RecordProperty("fp4_path", engine->fp4_path());
  EXPECT_LT(err, 1e-3);
  // At most 8 tokens: the NVFP4 products take the GEMV-shaped kernel.
  const std::vector<std::vector<int32_t>> few = {{3, 1, 4, 1, 5}, {9, 2}};
  EXPECT_LT(relative_to(run_engine(*engine, without_dense_weights(m), few).logits,
                        run_engine(Forward(m.config, {c.precision}), m, few).logits),
            1e-3);
  if (c.w4a4) {
    const std::string dev = engine->device();
    const int sm = std::stoi(dev.substr(dev.rfind("sm_") + 3));
    if (sm >= 100)
      EXPECT_EQ(engine->fp4_path().rfind("native", 0), 0u);
    else
      EXPECT_EQ(engine->fp4_path(), "emulated");
    if (c.precision == Precision::F32 && !c.modelopt) {
      const ReferenceResult ref = reference_forward(m, seqs, {.w4a4 = true});
      EXPECT_LT(relative_error(got.logits, ref.logits), 1e-3);
      // The activation quantization is there: without it the logits are elsewhere.
      EXPECT_GT(relative_error(got.logits, reference_forward(m, seqs, {}).logits), 1e-3);
    }
  } else if (c.precision == Precision::F32) {
    EXPECT_LT(relative_error(got.logits, reference_forward(m, seqs, {}).logits), 1e-4);
  }
}

INSTANTIATE_TEST_SUITE_P(Cases, CudaNvfp4,
                         ::testing::Values(Nvfp4Case{false, false, Precision::F32}, Nvfp4Case{false, true, Precision::F32},
                                           Nvfp4Case{false, false, Precision::BF16}, Nvfp4Case{true, false, Precision::F32},
                                           Nvfp4Case{true, true, Precision::F32}, Nvfp4Case{true, false, Precision::BF16}),
                         [](const auto& info) {
                           const Nvfp4Case& c = info.param;
                           return std::string(c.w4a4 ? "W4A4" : "W4A16") + (c.modelopt ? "_ModelOpt" : "") +
                                  (c.precision == Precision::BF16 ? "_BF16" : "_F32");
                         });

TEST(CudaEngine, W4A4WithDifferentScalesPerLinear) {
  SKIP_WITHOUT_GPU();
  TinyModel m = tiny_model(false, 3);
  const auto seqs = tiny_sequences(m.config.vocab_size);
  set_input_scales(m, run_engine(Forward(m.config, {Precision::F32}), m, seqs));
  m.layers[0].k.input_global_scale = *m.layers[0].k.input_global_scale * 0.5f;
  m.layers[1].up.input_global_scale.reset();
  auto engine = cuda_engine(m.config, Precision::F32);
  ASSERT_TRUE(engine);
  // Dense weights with W4A4 inputs: the activation quantization alone.
  const EngineResult got = run_engine(*engine, m, seqs);
  EXPECT_LT(relative_error(got.logits, reference_forward(m, seqs, {.w4a4 = true}).logits), 1e-3);
}

TEST(CudaEngine, RejectsBadInput) {
  SKIP_WITHOUT_GPU();
  TinyModel m = tiny_model(false, 6);
  auto engine = cuda_engine(m.config, Precision::F32);
  ASSERT_TRUE(engine);
  TinySource source(m);
  auto bad = engine->embed(source, {{1, 2, 3}, {4, 5, 80}});
  ASSERT_FALSE(bad.ok());
  EXPECT_EQ(bad.error().message, "sequence 1, position 2: token id 80 outside the vocabulary (vocab_size 80)");
  auto acts = engine->embed(source, {{1, 2, 3}});
  ASSERT_TRUE(acts.ok());
  LayerParams broken = m.layers[0];
  broken.k.weight.pop_back();
  Status st = engine->layer(0, broken, *acts);
  ASSERT_FALSE(st.ok());
  EXPECT_EQ(st.error().message, "layer 0 k: 2047 weights for shape [32, 64]");
  broken = m.layers[0];
  broken.down.input_global_scale = 0.0f;
  EXPECT_FALSE(engine->layer(0, broken, *acts).ok());
  broken = m.layers[0];
  broken.o.packed = PackedNvfp4{};
  st = engine->layer(0, broken, *acts);
  ASSERT_FALSE(st.ok());
  EXPECT_EQ(st.error().message, "layer 0 o: 0 packed bytes for shape [64, 64]");
  auto empty = engine->embed(source, {{}, {5}});
  ASSERT_TRUE(empty.ok());
  EXPECT_TRUE(engine->layer(0, m.layers[0], *empty).ok());
  engine->release_memory();
  EXPECT_TRUE(engine->layer(0, m.layers[0], *acts).ok());
}

// ---------------------------------------------------------------------------------------------
// stories260K: the README's perplexity on the GPU, as test/runtime/forward_test.cpp checks the CPU.

const std::filesystem::path kStories = std::filesystem::path(FP4C_SHARED_DIR) / "models" / "stories260K";

using Nll = NextTokenNll;

Nll stories_nll(const Engine& engine, WeightSource& w, const ir::ModelConfig& config) {
  std::vector<std::vector<int32_t>> seqs;
  std::ifstream in(kStories / "eval.jsonl");
  for (std::string line; std::getline(in, line);)
    if (!line.empty()) seqs.push_back(nlohmann::json::parse(line).at("input_ids").get<std::vector<int32_t>>());
  auto acts = engine.embed(w, seqs);
  EXPECT_TRUE(acts.ok()) << acts.error().message;
  Nll out;
  if (!acts.ok()) return out;
  for (int l = 0; l < config.num_hidden_layers; ++l) {
    auto p = w.layer(l);
    EXPECT_TRUE(p.ok());
    Status st = engine.layer(l, *p, *acts);
    EXPECT_TRUE(st.ok()) << st.error().message;
  }
  auto fn = w.final_norm();
  auto head = w.lm_head();
  EXPECT_TRUE(fn.ok() && head.ok());
  if (!fn.ok() || !head.ok()) return out;
  return head_nll(engine, *fn, *head, *acts, seqs);
}

TEST(CudaStories260K, PerplexityMatchesTheReadmeAndTheCpu) {
  SKIP_WITHOUT_GPU();
  if (!std::filesystem::exists(kStories / "model.safetensors")) GTEST_SKIP() << kStories << " is absent";
  auto ckpt = frontend::open_checkpoint(kStories.string());
  ASSERT_TRUE(ckpt.ok()) << ckpt.error().message;
  CheckpointWeights w(ckpt->model, ckpt->refs);
  const ir::ModelConfig& config = ckpt->model.config;
  auto f32 = cuda_engine(config, Precision::F32);
  auto bf16 = cuda_engine(config, Precision::BF16);
  ASSERT_TRUE(f32 && bf16);
  const Nll gpu = stories_nll(*f32, w, config);
  EXPECT_EQ(gpu.predictions, 12409);
  EXPECT_NEAR(gpu.nll, 17519.6958, 0.5);
  EXPECT_NEAR(gpu.ppl() / 4.103556, 1.0, 1e-4);
  const Nll gpu_bf16 = stories_nll(*bf16, w, config);
  const Nll cpu_bf16 = stories_nll(Forward(config, {Precision::BF16}), w, config);
  EXPECT_NEAR(gpu_bf16.ppl() / cpu_bf16.ppl(), 1.0, 1e-3);
  std::printf("stories260K on %s: f32 NLL %.4f ppl %.6f (README 17519.6958, 4.103556); bf16 ppl %.6f (CPU %.6f)\n",
              f32->device().c_str(), gpu.nll, gpu.ppl(), gpu_bf16.ppl(), cpu_bf16.ppl());
  RecordProperty("f32_ppl", sci(gpu.ppl(), "%.7g"));
  RecordProperty("bf16_ppl", sci(gpu_bf16.ppl(), "%.7g"));
}

}  // namespace
}  // namespace fp4c::runtime
