// NVFP4 quantization throughput: the fast quantizer (with and without error figures), its portable
// fallback, the reference, and amax_bf16, on Qwen2.5-7B-like weight shapes, with 1 and 2 OpenMP threads.
// Bytes are BF16 input bytes; "bytes_per_thread" divides the wall-clock rate by the thread count.
// Run with --benchmark_repetitions=5 --benchmark_report_aggregates_only=true for medians.
#include <benchmark/benchmark.h>
#include <omp.h>

#include <cstdint>
#include <map>
#include <utility>
#include <vector>

#include "formats/bf16.h"
#include "formats/nvfp4.h"

namespace {

using fp4c::nvfp4::ErrorStats;

// Weight-like data: roughly normal (sum of four uniforms), std 0.02, one outlier in 1000. Cached per
// shape, deterministic.
const std::vector<uint16_t>& weights(int64_t rows, int64_t cols) {
  static std::map<std::pair<int64_t, int64_t>, std::vector<uint16_t>> cache;
  auto [it, fresh] = cache.try_emplace({rows, cols});
  if (fresh) {
    std::vector<uint16_t>& x = it->second;
    x.resize(size_t(rows * cols));
    uint64_t s = 0x9E3779B97F4A7C15ull ^ uint64_t(rows * 131 + cols);
    auto next = [&s] {  // xorshift64*
      s ^= s >> 12;
      s ^= s << 25;
      s ^= s >> 27;
      return uint32_t((s * 0x2545F4914F6CDD1Dull) >> 32);
    };
    for (uint16_t& v : x) {
      float u = 0;
      for (int k = 0; k < 4; ++k) u += float(next()) * 0x1p-32f;
      float w = (u - 2.0f) * 0.02f * 1.7320508f;
      if (next() % 1000 == 0) w *= 50.0f;
      v = fp4c::bf16::from_float(w);
    }
  }
  return it->second;
}

void set_counters(benchmark::State& state, int64_t rows, int64_t cols, int threads) {
  const double bytes = double(rows * cols) * 2;
  state.SetBytesProcessed(int64_t(state.iterations()) * rows * cols * 2);
  state.counters["bytes_per_thread"] =
      benchmark::Counter(bytes / threads, benchmark::Counter::kIsIterationInvariantRate);
  state.counters["threads"] = threads;
}

enum class Kind { Fast, FastNoError, Portable, Reference };

template <Kind kKind>
void BM_Quantize(benchmark::State& state) {
  const int64_t rows = state.range(0), cols = state.range(1);
  const int threads = kKind == Kind::Reference ? 1 : int(state.range(2));
  omp_set_num_threads(threads);
  const std::vector<uint16_t>& x = weights(rows, cols);
  const float G = fp4c::nvfp4::global_scale(fp4c::nvfp4::amax_bf16(x));
  std::vector<uint8_t> packed(size_t(rows * cols / 2)), scales(size_t(rows * cols / 16));
  ErrorStats err;
  for (auto _ : state) {
    err = ErrorStats{};
    ErrorStats* e = kKind == Kind::FastNoError ? nullptr : &err;
    if (kKind == Kind::Reference) {
      fp4c::nvfp4::quantize_bf16_ref(x.data(), rows, cols, G, packed.data(), scales.data(),
                                     fp4c::nvfp4::ZeroScale::CompressedTensors, e);
    } else if (kKind == Kind::Portable) {
      fp4c::nvfp4::quantize_bf16_portable(x.data(), rows, cols, G, packed.data(), scales.data(),
                                          fp4c::nvfp4::ZeroScale::CompressedTensors, e);
    } else {
      fp4c::nvfp4::quantize_bf16(x.data(), rows, cols, G, packed.data(), scales.data(),
                                 fp4c::nvfp4::ZeroScale::CompressedTensors, e);
    }
    benchmark::DoNotOptimize(packed.data());
    benchmark::DoNotOptimize(scales.data());
    benchmark::ClobberMemory();
  }
  set_counters(state, rows, cols, threads);
  if (kKind != Kind::FastNoError) state.counters["sqnr_db"] = err.sqnr_db();
  state.SetLabel(kKind == Kind::Reference  ? "reference"
                 : kKind == Kind::Portable ? "portable"
                                           : fp4c::nvfp4::quantize_bf16_kernel());
}

void BM_AmaxBf16(benchmark::State& state) {
  const int64_t rows = state.range(0), cols = state.range(1);
  const int threads = int(state.range(2));
  omp_set_num_threads(threads);
  const std::vector<uint16_t>& x = weights(rows, cols);
  for (auto _ : state) benchmark::DoNotOptimize(fp4c::nvfp4::amax_bf16(x));
  set_counters(state, rows, cols, threads);
}

// Qwen2.5-7B: q/o 3584x3584, gate/up 18944x3584, down 3584x18944; Qwen2.5-0.5B: gate/up 4864x896,
// down 896x4864.
void shapes_and_threads(benchmark::internal::Benchmark* b) {
  for (auto [rows, cols] : {std::pair<int64_t, int64_t>{4864, 896}, {896, 4864}, {18944, 3584}}) {
    for (int threads : {1, 2}) b->Args({rows, cols, threads});
  }
  b->ArgNames({"rows", "cols", "threads"})->UseRealTime()->Unit(benchmark::kMillisecond);
}

void shapes_only(benchmark::internal::Benchmark* b) {
  for (auto [rows, cols] : {std::pair<int64_t, int64_t>{4864, 896}, {896, 4864}, {18944, 3584}}) {
    b->Args({rows, cols});
  }
  b->ArgNames({"rows", "cols"})->UseRealTime()->Unit(benchmark::kMillisecond);
}

BENCHMARK(BM_Quantize<Kind::Fast>)->Name("quantize_bf16")->Apply(shapes_and_threads);
BENCHMARK(BM_Quantize<Kind::FastNoError>)->Name("quantize_bf16_no_error")->Apply(shapes_and_threads);
BENCHMARK(BM_Quantize<Kind::Portable>)->Name("quantize_bf16_portable")->Apply(shapes_and_threads);
BENCHMARK(BM_Quantize<Kind::Reference>)->Name("quantize_bf16_ref")->Apply(shapes_only);
BENCHMARK(BM_AmaxBf16)->Name("amax_bf16")->Apply(shapes_and_threads);

}  // namespace

BENCHMARK_MAIN();
