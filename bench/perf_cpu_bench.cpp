// BF16 (oneDNN) against NVFP4 (the fused-dequant kernels of runtime/nvfp4_matmul.h) on the CPU, for the
// NVFP4 Linear shapes of stories260K and two of Qwen2.5-0.5B.
//
//   perf_cpu_bench --table     the ceilings, then BF16 vs NVFP4 time at M = 1, 32, 512 and their ratio,
//                              through the PerfDevice that fp4c-verify uses (its default kernel choice)
//   perf_cpu_bench [gbench flags]   every NVFP4 kernel forced in turn, against BF16, per shape and M
//                                   (what chose nvfp4_tiled_min_rows)
#include <benchmark/benchmark.h>

#include <cmath>
#include <cstdio>
#include <cstring>
#include <random>
#include <string>
#include <vector>

#include "formats/bf16.h"
#include "formats/nvfp4.h"
#include "runtime/elementwise.h"
#include "runtime/matmul.h"
#include "runtime/nvfp4_matmul.h"
#include "runtime/perf.h"

namespace {

using namespace fp4c;
using namespace fp4c::runtime;

struct Shape {
  const char* name;
  int64_t n, k;
};
const Shape kShapes[] = {
    {"stories260K q/o 64x64", 64, 64},
    {"stories260K k/v 32x64", 32, 64},
    {"stories260K gate/up 172x64", 172, 64},
    {"qwen2.5-0.5b q/o 896x896", 896, 896},
    {"qwen2.5-0.5b gate/up 4864x896", 4864, 896},
};
const int64_t kRows[] = {1, 8, 32, 64, 128, 512};

struct Data {
  LinearParams w;
  std::vector<float> x;
  std::vector<uint16_t> xb;
  PackedNvfp4 packed;
};

Data make_data(int64_t m, int64_t n, int64_t k) {
  std::mt19937_64 rng(std::random_device{}());
  std::normal_distribution<float> normal(0.0f, 1.0f);
  Data d;
  d.w.out = n;
  d.w.in = k;
  d.w.weight.resize(size_t(n * k));
  std::vector<uint16_t> wb(d.w.weight.size());
  for (size_t i = 0; i < wb.size(); ++i) {
    wb[i] = bf16::from_float(normal(rng) / std::sqrt(float(k)));
    d.w.weight[i] = bf16::to_float(wb[i]);
  }
  d.x.resize(size_t(m * k));
  for (float& v : d.x) v = normal(rng);
  d.xb.resize(d.x.size());
  round_to_bf16(d.x.data(), d.xb.data(), int64_t(d.x.size()));
  d.packed.global_scale = nvfp4::global_scale(nvfp4::amax_bf16(wb));
  d.packed.codes.resize(size_t(n * k / 2));
  d.packed.block_scales.resize(size_t(n * k / 16));
  nvfp4::quantize_bf16(wb.data(), n, k, d.packed.global_scale, d.packed.codes.data(), d.packed.block_scales.data());
  return d;
}

void BM_bf16(benchmark::State& state) {
  const Shape& s = kShapes[state.range(0)];
  const int64_t m = state.range(1);
  Data d = make_data(m, s.n, s.k);
  auto lin = PreparedLinear::create(d.w, m, Precision::BF16);
  if (!lin.ok()) return state.SkipWithError(lin.error().message.c_str());
  std::vector<float> y(size_t(m * s.n));
  for (auto _ : state) {
    (void)lin->run(d.xb.data(), y.data());
    benchmark::DoNotOptimize(y.data());
  }
  state.SetLabel(s.name);
  state.counters["GFLOP/s"] =
      benchmark::Counter(2.0 * double(m * s.n * s.k) / 1e9 * double(state.iterations()), benchmark::Counter::kIsRate);
}

template <Nvfp4Kernel kKernel>
void BM_nvfp4(benchmark::State& state) {
  const Shape& s = kShapes[state.range(0)];
  const int64_t m = state.range(1);
  if (!nvfp4_kernel_available(kKernel)) return state.SkipWithError("kernel not available on this CPU");
  Data d = make_data(m, s.n, s.k);
  auto lin = Nvfp4Matmul::create(std::move(d.packed), s.n, s.k);
  if (!lin.ok()) return state.SkipWithError(lin.error().message.c_str());
  std::vector<float> y(size_t(m * s.n));
  for (auto _ : state) {
    (void)lin->run(d.x.data(), m, y.data(), kKernel);
    benchmark::DoNotOptimize(y.data());
  }
  state.SetLabel(s.name);
  state.counters["GFLOP/s"] =
      benchmark::Counter(2.0 * double(m * s.n * s.k) / 1e9 * double(state.iterations()), benchmark::Counter::kIsRate);
}

void args(benchmark::internal::Benchmark* b) {
  for (int64_t s = 0; s < int64_t(std::size(kShapes)); ++s)
    for (int64_t m : kRows) b->Args({s, m});
}

BENCHMARK(BM_bf16)->Apply(args)->UseRealTime();
BENCHMARK(BM_nvfp4<Nvfp4Kernel::Avx512>)->Apply(args)->UseRealTime();
BENCHMARK(BM_nvfp4<Nvfp4Kernel::Avx2>)->Apply(args)->UseRealTime();
BENCHMARK(BM_nvfp4<Nvfp4Kernel::Tiled>)->Apply(args)->UseRealTime();

int table() {
  auto dev = make_perf_device("cpu", 0);
  if (!dev.ok()) {
    std::fprintf(stderr, "%s\n", dev.error().message.c_str());
    return 1;
  }
  const DeviceInfo info = (*dev)->info();
  std::printf("device: %s, %d threads, NVFP4 %s\n", info.name.c_str(), info.threads, info.fp4_path.c_str());
  auto c = (*dev)->ceilings();
  if (!c.ok()) {
    std::fprintf(stderr, "%s\n", c.error().message.c_str());
    return 1;
  }
  std::printf("ceilings: %.1f GB/s read, %.3f TFLOP/s BF16 (%s)\n", c->bandwidth_gbs, c->bf16_tflops, c->how.c_str());
  std::printf("%-32s %5s %12s %12s %8s  %s\n", "shape [n x k]", "M", "bf16 us", "nvfp4 us", "bf16/fp4", "nvfp4 path");
  for (const Shape& s : kShapes)
    for (int64_t m : {1, 32, 512}) {
      auto f = (*dev)->matmul(MatmulCase{m, s.n, s.k, false}, 21);
      if (!f.ok()) {
        std::fprintf(stderr, "%s\n", f.error().message.c_str());
        return 1;
      }
      std::printf("%-32s %5lld %12.2f %12.2f %8.2f  %s\n", s.name, (long long)m, f->bf16_seconds * 1e6,
                  f->fp4_seconds * 1e6, f->bf16_seconds / f->fp4_seconds, f->fp4_path.c_str());
    }
  return 0;
}

}  // namespace

int main(int argc, char** argv) {
  for (int i = 1; i < argc; ++i)
    if (std::strcmp(argv[i], "--table") == 0) return table();
  benchmark::Initialize(&argc, argv);
  if (benchmark::ReportUnrecognizedArguments(argc, argv)) return 1;
  benchmark::RunSpecifiedBenchmarks();
  benchmark::Shutdown();
  return 0;
}
