// The calibration forward on a model of the qwen2.5-0.5b shape (hidden 896, FFN 4864, 14 heads,
// 2 KV heads, head_dim 64, q/k/v biases; random weights), 16 sequences of 512 tokens, per decoder
// layer, F32 and BF16, 1 and 2 threads. A hook that reads nothing stands in for the stats pass. One
// untimed call comes first (a model's first layer faults the forward's buffers in; the others reuse them).
// Counters: tokens_per_s_24_layers extrapolates one layer's time to the model's 24 layers (the
// calibration forward runs no head); the head benchmark (vocab 32000, as llama.cpp's figures) gives
// what `fp4c eval` adds on top.
// Run with --benchmark_repetitions=3 --benchmark_report_aggregates_only=true for medians.
#include <benchmark/benchmark.h>

#include <cmath>
#include <cstdint>
#include <vector>

#include "runtime/forward.h"

namespace {

using fp4c::runtime::Activations;
using fp4c::runtime::Forward;
using fp4c::runtime::ForwardOptions;
using fp4c::runtime::LayerParams;
using fp4c::runtime::LinearParams;
using fp4c::runtime::Precision;

constexpr int64_t kSequences = 16, kSeqLen = 512, kModelLayers = 24, kVocab = 32000;

fp4c::ir::ModelConfig qwen05b_config() {
  fp4c::ir::ModelConfig c;
  c.architecture = "Qwen2ForCausalLM";
  c.model_type = "qwen2";
  c.hidden_size = 896;
  c.intermediate_size = 4864;
  c.num_hidden_layers = kModelLayers;
  c.num_attention_heads = 14;
  c.num_key_value_heads = 2;
  c.head_dim = 64;
  c.vocab_size = kVocab;
  c.max_position_embeddings = 32768;
  c.rms_norm_eps = 1e-6;
  c.rope_theta = 1000000.0;
  c.attention_bias = true;
  return c;
}

// Deterministic roughly-normal values (sum of four uniforms), xorshift64*.
struct Random {
  uint64_t s;
  float next() {
    float u = 0;
    for (int k = 0; k < 4; ++k) {
      s ^= s >> 12;
      s ^= s << 25;
      s ^= s >> 27;
      u += float(uint32_t((s * 0x2545F4914F6CDD1Dull) >> 32)) * 0x1p-32f;
    }
    return (u - 2.0f) * 1.7320508f;
  }
  std::vector<float> fill(int64_t n, float scale, float offset = 0) {
    std::vector<float> v(static_cast<size_t>(n));
    for (float& x : v) x = offset + scale * next();
    return v;
  }
};

LinearParams linear(Random& r, int64_t out, int64_t in, bool bias) {
  LinearParams p;
  p.out = out;
  p.in = in;
  p.weight = r.fill(out * in, 1.0f / std::sqrt(float(in)));
  if (bias) p.bias = r.fill(out, 0.02f);
  return p;
}

const LayerParams& layer_params() {
  static const LayerParams params = [] {
    const auto c = qwen05b_config();
    Random r{42};
    const int64_t H = c.hidden_size, I = c.intermediate_size, Dq = c.num_attention_heads * c.head_dim,
                  Dkv = c.num_key_value_heads * c.head_dim;
    LayerParams p;
    p.input_norm = r.fill(H, 0.05f, 1);
    p.post_norm = r.fill(H, 0.05f, 1);
    p.q = linear(r, Dq, H, true);
    p.k = linear(r, Dkv, H, true);
    p.v = linear(r, Dkv, H, true);
    p.o = linear(r, H, Dq, false);
    p.gate = linear(r, I, H, false);
    p.up = linear(r, I, H, false);
    p.down = linear(r, H, I, false);
    return p;
  }();
  return params;
}

const Activations& input_activations() {
  static const Activations acts = [] {
    Activations a;
    Random r{7};
    const auto v = r.fill(kSequences * kSeqLen * 896, 1.0f);
    a.hidden.assign(v.begin(), v.end());
    for (int64_t s = 0; s <= kSequences; ++s) a.offsets.push_back(s * kSeqLen);
    return a;
  }();
  return acts;
}

Precision precision_of(int64_t arg) { return arg ? Precision::BF16 : Precision::F32; }

void BM_CalibrationLayer(benchmark::State& state) {
  const Precision precision = precision_of(state.range(0));
  const int threads = int(state.range(1));
  const Forward fwd(qwen05b_config(), ForwardOptions{precision, threads});
  const LayerParams& params = layer_params();
  Activations acts;
  int64_t hook_calls = 0;
  const fp4c::runtime::LinearHook hook = [&](const fp4c::runtime::LinearInput&) { ++hook_calls; };
  // One untimed layer first: the forward's buffers are faulted in once per model, not per layer.
  acts = input_activations();
  if (const fp4c::Status st = fwd.layer(0, params, acts, hook); !st.ok()) {
    state.SkipWithError(st.error().message.c_str());
    return;
  }
  for (auto _ : state) {
    state.PauseTiming();
    acts = input_activations();
    state.ResumeTiming();
    const fp4c::Status st = fwd.layer(0, params, acts, hook);
    if (!st.ok()) state.SkipWithError(st.error().message.c_str());
    benchmark::ClobberMemory();
  }
  const double tokens = double(kSequences * kSeqLen);
  state.counters["tokens_per_s_24_layers"] =
      benchmark::Counter(tokens / double(kModelLayers), benchmark::Counter::kIsIterationInvariantRate);
  state.counters["threads"] = threads;
  state.SetLabel(precision == Precision::BF16 ? "bf16" : "f32");
}
BENCHMARK(BM_CalibrationLayer)
    ->ArgNames({"bf16", "threads"})
    ->ArgsProduct({{0, 1}, {1, 2}})
    ->Unit(benchmark::kMillisecond)
    ->UseRealTime()
    ->MinTime(2.0);

void BM_Head(benchmark::State& state) {
  const Precision precision = precision_of(state.range(0));
  const int threads = int(state.range(1));
  const Forward fwd(qwen05b_config(), ForwardOptions{precision, threads});
  Random r{9};
  const std::vector<float> norm = r.fill(896, 0.05f, 1);
  const LinearParams head = linear(r, kVocab, 896, false);
  const Activations& acts = input_activations();
  double sink_sum = 0;
  const auto sink = [&](int64_t, const float* logits, int64_t) { sink_sum += logits[0]; };
  if (const fp4c::Status st = fwd.head(norm, head, acts, sink); !st.ok()) {  // untimed, as above
    state.SkipWithError(st.error().message.c_str());
    return;
  }
  for (auto _ : state) {
    const fp4c::Status st = fwd.head(norm, head, acts, sink);
    if (!st.ok()) state.SkipWithError(st.error().message.c_str());
  }
  benchmark::DoNotOptimize(sink_sum);
  state.counters["tokens_per_s"] =
      benchmark::Counter(double(kSequences * kSeqLen), benchmark::Counter::kIsIterationInvariantRate);
  state.SetLabel(precision == Precision::BF16 ? "bf16" : "f32");
}
BENCHMARK(BM_Head)
    ->ArgNames({"bf16", "threads"})
    ->ArgsProduct({{0, 1}, {1, 2}})
    ->Unit(benchmark::kMillisecond)
    ->UseRealTime()
    ->MinTime(1.0);

}  // namespace

BENCHMARK_MAIN();
