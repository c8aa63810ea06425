// GPTQ on the NVFP4 grid (passes/gptq.h): gptq_quantize end to end, and its two stages (the float64
// factor U of H^-1, the column loop with its lazy-batch updates), on Qwen2.5-0.5B MLP shapes
// (gate/up 4864x896, down 896x4864), with 1 and 2 OpenMP threads; and the local-Hessian block-scale
// rule (passes/localhessian.h) on the same layers.
// Run with --benchmark_repetitions=5 --benchmark_report_aggregates_only=true for medians.
#include <benchmark/benchmark.h>
#include <omp.h>

#include <cmath>
#include <cstdint>
#include <map>
#include <utility>
#include <vector>

#include "formats/nvfp4.h"
#include "quant/gptq.h"
#include "quant/localhessian.h"

namespace {

using fp4c::quant::GptqOptions;

struct Rng {  // xorshift64*, deterministic
  uint64_t s;
  double uniform() {
    s ^= s >> 12;
    s ^= s << 25;
    s ^= s >> 27;
    return double(uint32_t((s * 0x2545F4914F6CDD1Dull) >> 32)) * 0x1p-32;
  }
  double normal() {  // sum of four uniforms, unit variance
    double u = 0;
    for (int k = 0; k < 4; ++k) u += uniform();
    return (u - 2.0) * 1.7320508;
  }
};

struct Layer {
  std::vector<float> w;
  std::vector<double> h;
  float G = 1;
};

// W: roughly normal, std 0.02, one outlier in 1000. H: a random second-moment matrix, F F^T / k + D
// with F [cols, 32] normal (correlated channels), D lognormal-ish per channel, 2% outlier channels
// scaled by 20 (both sides). Cached per shape.
const Layer& layer(int64_t rows, int64_t cols) {
  static std::map<std::pair<int64_t, int64_t>, Layer> cache;
  auto [it, fresh] = cache.try_emplace({rows, cols});
  if (fresh) {
    Layer& l = it->second;
    Rng rng{0x9E3779B97F4A7C15ull ^ uint64_t(rows * 131 + cols)};
    l.w.resize(size_t(rows * cols));
    for (float& v : l.w) {
      v = float(rng.normal() * 0.02);
      if (rng.uniform() < 0.001) v *= 50.0f;
    }
    l.G = fp4c::nvfp4::global_scale(fp4c::nvfp4::amax_f32(l.w));
    constexpr int k = 32;
    std::vector<double> f(size_t(cols * k)), scale(static_cast<size_t>(cols));
    for (double& v : f) v = rng.normal();
    for (double& s : scale) s = rng.uniform() < 0.02 ? 20.0 : std::exp(0.5 * rng.normal());
    l.h.assign(size_t(cols * cols), 0.0);
#pragma omp parallel for schedule(static)
    for (int64_t i = 0; i < cols; ++i) {
      for (int64_t j = 0; j < cols; ++j) {
        double s = 0;
        for (int t = 0; t < k; ++t) s += f[size_t(i * k + t)] * f[size_t(j * k + t)];
        l.h[size_t(i * cols + j)] = s / k * scale[size_t(i)] * scale[size_t(j)];
      }
      l.h[size_t(i * cols + i)] += 0.1 * scale[size_t(i)] * scale[size_t(i)];
    }
  }
  return it->second;
}

void BM_Gptq(benchmark::State& state) {
  const int64_t rows = state.range(0), cols = state.range(1);
  const int threads = int(state.range(2));
  const Layer& l = layer(rows, cols);
  omp_set_num_threads(threads);
  std::vector<uint8_t> packed(size_t(rows * cols / 2)), scales(size_t(rows * cols / 16));
  fp4c::nvfp4::ErrorStats err;
  for (auto _ : state) {
    err = {};
    const fp4c::Status s = fp4c::quant::gptq_quantize(l.w.data(), rows, cols, l.h.data(), l.G, GptqOptions{},
                                                       packed.data(), scales.data(),
                                                       fp4c::nvfp4::ZeroScale::CompressedTensors, nullptr, &err);
    if (!s.ok()) state.SkipWithError(s.error().message.c_str());
    benchmark::DoNotOptimize(packed.data());
    benchmark::ClobberMemory();
  }
  state.counters["threads"] = threads;
  state.counters["sqnr_db"] = err.sqnr_db();
}

void BM_InverseCholesky(benchmark::State& state) {
  const int64_t rows = state.range(0), cols = state.range(1);
  const int threads = int(state.range(2));
  const Layer& l = layer(rows, cols);
  omp_set_num_threads(threads);
  const std::vector<int64_t> order = fp4c::quant::gptq_detail::column_order(l.h.data(), cols, false);
  for (auto _ : state) {
    auto u = fp4c::quant::gptq_detail::inverse_cholesky_upper(l.h.data(), cols, 0.01, order);
    if (!u.ok()) state.SkipWithError(u.error().message.c_str());
    benchmark::DoNotOptimize(u->data());
  }
  state.counters["threads"] = threads;
}

void BM_QuantizeColumns(benchmark::State& state) {
  const int64_t rows = state.range(0), cols = state.range(1);
  const int threads = int(state.range(2));
  const Layer& l = layer(rows, cols);
  omp_set_num_threads(threads);
  const std::vector<int64_t> order = fp4c::quant::gptq_detail::column_order(l.h.data(), cols, false);
  auto u64 = fp4c::quant::gptq_detail::inverse_cholesky_upper(l.h.data(), cols, 0.01, order);
  std::vector<float> u(u64->begin(), u64->end()), w;
  std::vector<uint8_t> codes(size_t(rows * cols)), sc(size_t(rows * cols / 16));
  for (auto _ : state) {
    state.PauseTiming();
    w = l.w;
    state.ResumeTiming();
    fp4c::quant::gptq_detail::quantize_columns(w.data(), rows, cols, u.data(), l.G, 128,
                                                fp4c::nvfp4::ZeroScale::CompressedTensors, codes.data(),
                                                sc.data());
    benchmark::DoNotOptimize(codes.data());
  }
  state.counters["threads"] = threads;
}

void BM_LocalHessian(benchmark::State& state) {
  const int64_t rows = state.range(0), cols = state.range(1);
  const int threads = int(state.range(2));
  const Layer& l = layer(rows, cols);
  omp_set_num_threads(threads);
  std::vector<uint8_t> packed(size_t(rows * cols / 2)), scales(size_t(rows * cols / 16));
  for (auto _ : state) {
    fp4c::quant::quantize_rows_localhessian(l.w.data(), rows, cols, l.G, l.h.data(), packed.data(), scales.data(),
                                             fp4c::nvfp4::ZeroScale::CompressedTensors, nullptr);
    benchmark::DoNotOptimize(packed.data());
  }
  state.counters["threads"] = threads;
}

void shapes_and_threads(benchmark::internal::Benchmark* b) {
  for (auto [rows, cols] : {std::pair<int64_t, int64_t>{4864, 896}, {896, 4864}}) {
    for (int threads : {1, 2}) b->Args({rows, cols, threads});
  }
  b->ArgNames({"rows", "cols", "threads"})->UseRealTime()->Unit(benchmark::kMillisecond);
}

BENCHMARK(BM_Gptq)->Name("gptq_quantize")->Apply(shapes_and_threads);
BENCHMARK(BM_InverseCholesky)->Name("gptq_inverse_cholesky")->Apply(shapes_and_threads);
BENCHMARK(BM_LocalHessian)->Name("quantize_rows_localhessian")->Apply(shapes_and_threads);
BENCHMARK(BM_QuantizeColumns)->Name("gptq_quantize_columns")->Apply(shapes_and_threads);

}  // namespace

BENCHMARK_MAIN();
