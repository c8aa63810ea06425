// The CPU PerfDevice (runtime/perf.h) and make_perf_device: ceilings measured in the run (a streaming
// read of a large buffer with every thread; a large square BF16 GEMM through oneDNN), BF16 against
// NVFP4 matrix multiplies (oneDNN BF16 vs the fused-dequant kernel of runtime/nvfp4_matmul.h), and the
// serving cases through the KV-cache decoder (runtime/decoder.h).
#include <omp.h>
#include <sys/resource.h>

#include <algorithm>
#include <charconv>
#include <chrono>
#include <cmath>
#include <fstream>
#include <random>
#include <sstream>
#include <string>
#include <vector>

#include "formats/bf16.h"
#include "formats/nvfp4.h"
#include "runtime/activation_quant.h"
#include "runtime/cuda/cuda_api.h"
#include "runtime/decoder.h"
#include "runtime/elementwise.h"
#include "runtime/matmul.h"
#include "runtime/nvfp4_matmul.h"
#include "runtime/perf.h"
#include "runtime/perf_cpu.h"
#include "runtime/thread_scope.h"

namespace fp4c::runtime {

namespace {

using Clock = std::chrono::steady_clock;

double seconds_since(Clock::time_point t0) { return std::chrono::duration<double>(Clock::now() - t0).count(); }

double median(std::vector<double> v) {
  if (v.empty()) return 0;
  std::sort(v.begin(), v.end());
  const size_t n = v.size();
  return n % 2 ? v[n / 2] : 0.5 * (v[n / 2 - 1] + v[n / 2]);
}


uint64_t fresh_seed() {
  std::random_device rd;
  return (uint64_t(rd()) << 32) ^ rd() ^ uint64_t(Clock::now().time_since_epoch().count());
}

// Random values of about unit size, rounded to BF16 (so the BF16 and NVFP4 products start from the same
// weights), as floats.
std::vector<float> random_bf16_values(size_t n, float scale, std::mt19937_64& rng) {
  std::normal_distribution<float> normal(0.0f, scale);
  std::vector<float> v(n);
  for (float& x : v) x = bf16::to_float(bf16::from_float(normal(rng)));
  return v;
}

}  // namespace

std::string cpu_model_name() {
  std::ifstream in("/proc/cpuinfo");
  std::string line;
  while (std::getline(in, line)) {
    if (line.rfind("model name", 0) == 0) {
      const size_t colon = line.find(':');
      if (colon != std::string::npos) {
        size_t b = line.find_first_not_of(" \t", colon + 1);
        return b == std::string::npos ? std::string() : line.substr(b);
      }
    }
  }
  return "unknown CPU";
}

namespace {
// A "Key:   123 kB" line of a /proc file, in bytes (0 when absent).
uint64_t proc_kb(const char* file, const std::string& key) {
  std::ifstream in(file);
  std::string line;
  while (std::getline(in, line)) {
    if (line.rfind(key + ":", 0) == 0) {
      std::istringstream s(line.substr(key.size() + 1));
      uint64_t kb = 0;
      s >> kb;
      return kb * 1024;
    }
  }
  return 0;
}
}  // namespace

MemoryInfo memory_info() { return {proc_kb("/proc/meminfo", "MemTotal"), proc_kb("/proc/meminfo", "MemAvailable")}; }

uint64_t current_rss_bytes() { return proc_kb("/proc/self/status", "VmRSS"); }

uint64_t peak_rss_bytes() {
  const uint64_t hwm = proc_kb("/proc/self/status", "VmHWM");
  if (hwm) return hwm;
  rusage u{};
  getrusage(RUSAGE_SELF, &u);
  return uint64_t(u.ru_maxrss) * 1024;
}

namespace {

class CpuPerfDevice final : public PerfDevice {
 public:
  explicit CpuPerfDevice(int threads) : threads_(threads > 0 ? threads : omp_get_max_threads()) {}

  DeviceInfo info() const override {
    DeviceInfo d;
    d.kind = "cpu";
    d.name = cpu_model_name();
    d.threads = threads_;
    d.fp4_path = "fused-dequant";
    const MemoryInfo m = memory_info();
    d.memory_total = m.total;
    d.memory_free = m.available;
    return d;
  }

  Expected<Ceilings> ceilings() override {
    ThreadScope scope(threads_);
    Ceilings c;
    // Streaming read: a buffer far beyond the caches (512 MiB, or an eighth of the free memory when
    // that is less), summed by every thread; the median of 5 passes after one that faults it in.
    const MemoryInfo mem = memory_info();
    uint64_t bytes = uint64_t(512) << 20;
    if (mem.available > 0) bytes = std::min(bytes, std::max<uint64_t>(uint64_t(64) << 20, mem.available / 8));
    const int64_t n = int64_t(bytes / sizeof(float));
    std::vector<float> buf;
    try {
      buf.resize(size_t(n));
    } catch (const std::bad_alloc&) {
      return make_error("ceilings: cannot allocate " + std::to_string(bytes) + " bytes for the bandwidth test");
    }
    float* p = buf.data();
#pragma omp parallel for schedule(static)
    for (int64_t i = 0; i < n; ++i) p[i] = float(i & 1023) * 1e-3f;
    std::vector<double> times;
    volatile float sink = 0;
    for (int rep = 0; rep < 6; ++rep) {
      const auto t0 = Clock::now();
      float sum = 0;
#pragma omp parallel for simd schedule(static) reduction(+ : sum)
      for (int64_t i = 0; i < n; ++i) sum += p[i];
      const double t = seconds_since(t0);
      sink = sink + sum;
      if (rep > 0) times.push_back(t);
    }
    c.bandwidth_gbs = double(n) * sizeof(float) / median(times) / 1e9;
    buf = {};

    // BF16 GEMM: 2048^3 through PreparedLinear (oneDNN matmul, BF16 inputs, FP32 accumulation), the
    // median of 3 after a warm-up.
    constexpr int64_t kSide = 2048;
    std::mt19937_64 rng(fresh_seed());
    LinearParams w;
    w.out = w.in = kSide;
    w.weight = random_bf16_values(size_t(kSide * kSide), 1.0f / std::sqrt(float(kSide)), rng);
    FP4C_ASSIGN(PreparedLinear lin, PreparedLinear::create(w, kSide, Precision::BF16));
    w.weight = {};
    const std::vector<float> xf = random_bf16_values(size_t(kSide * kSide), 1.0f, rng);
    std::vector<uint16_t> x(xf.size());
    round_to_bf16(xf.data(), x.data(), int64_t(x.size()));
    std::vector<float> y(size_t(kSide * kSide));
    times.clear();
    for (int rep = 0; rep < 4; ++rep) {
      const auto t0 = Clock::now();
      FP4C_TRY(lin.run(x.data(), y.data()));
      if (rep > 0) times.push_back(seconds_since(t0));
    }
    c.bf16_tflops = 2.0 * double(kSide) * kSide * kSide / median(times) / 1e12;
    c.fp4_tflops = 0;
    c.how = "bandwidth: sum of a " + std::to_string(bytes >> 20) + " MiB float buffer with " +
            std::to_string(threads_) + " OpenMP threads, median of 5; bf16: oneDNN matmul " + std::to_string(kSide) +
            "x" + std::to_string(kSide) + "x" + std::to_string(kSide) +
            " (BF16 inputs, FP32 accumulation), median of 3; fp4: none (no FP4 hardware on the CPU)";
    return c;
  }

  Expected<MatmulFigures> matmul(const MatmulCase& shape, int repetitions) override {
    const int64_t M = shape.m, N = shape.n, K = shape.k;
    if (M <= 0 || N <= 0 || K <= 0 || K % 16 != 0)
      return make_error("matmul [" + std::to_string(M) + ", " + std::to_string(N) + ", " + std::to_string(K) +
                        "]: sizes must be positive and k a multiple of 16");
    if (repetitions < 1) return make_error("matmul: repetitions must be >= 1, got " + std::to_string(repetitions));
    ThreadScope scope(threads_);
    std::mt19937_64 rng(fresh_seed());
    MatmulFigures f;
    f.shape = shape;
    f.repetitions = repetitions;

    LinearParams w;
    w.out = N;
    w.in = K;
    w.weight = random_bf16_values(size_t(N * K), 1.0f / std::sqrt(float(K)), rng);
    const std::vector<float> x = random_bf16_values(size_t(M * K), 1.0f, rng);
    std::vector<float> y(size_t(M * N));

    // BF16: x and W in BF16 through oneDNN.
    {
      FP4C_ASSIGN(PreparedLinear lin, PreparedLinear::create(w, M, Precision::BF16));
      std::vector<uint16_t> xb(x.size());
      round_to_bf16(x.data(), xb.data(), int64_t(xb.size()));
      std::vector<double> times;
      for (int rep = 0; rep <= repetitions; ++rep) {
        const auto t0 = Clock::now();
        FP4C_TRY(lin.run(xb.data(), y.data()));
        if (rep > 0) times.push_back(seconds_since(t0));
      }
      f.bf16_seconds = median(times);
      const double bytes = 2.0 * N * K + 2.0 * M * K + 4.0 * M * N;
      f.bf16_gbs = bytes / f.bf16_seconds / 1e9;
      f.bf16_tflops = 2.0 * M * N * K / f.bf16_seconds / 1e12;
    }

    // NVFP4: W quantized as fp4c packs it; x float (W4A4: fake-quantized per block of 16 inside the
    // timed region, as a serving engine quantizes activations per call).
    {
      std::vector<uint16_t> wb(w.weight.size());
      round_to_bf16(w.weight.data(), wb.data(), int64_t(wb.size()));
      w.weight = {};
      PackedNvfp4 packed;
      packed.global_scale = nvfp4::global_scale(nvfp4::amax_bf16(wb));
      packed.codes.resize(size_t(N * K / 2));
      packed.block_scales.resize(size_t(N * K / 16));
      nvfp4::quantize_bf16(wb.data(), N, K, packed.global_scale, packed.codes.data(), packed.block_scales.data());
      wb = {};
      FP4C_ASSIGN(Nvfp4Matmul lin, Nvfp4Matmul::create(std::move(packed), N, K));
      const float gx = nvfp4::global_scale(nvfp4::amax_f32(x));
      std::vector<float> xq(shape.w4a4 ? x.size() : 0);
      std::vector<double> times;
      for (int rep = 0; rep <= repetitions; ++rep) {
        const auto t0 = Clock::now();
        const float* in = x.data();
        if (shape.w4a4) {
          fake_quantize_nvfp4(x.data(), M, K, gx, xq.data());
          in = xq.data();
        }
        FP4C_TRY(lin.run(in, M, y.data()));
        if (rep > 0) times.push_back(seconds_since(t0));
      }
      f.fp4_seconds = median(times);
      const double bytes = 0.5 * N * K + N * K / 16.0 + 4.0 + 4.0 * M * K + 4.0 * M * N;
      f.fp4_gbs = bytes / f.fp4_seconds / 1e9;
      f.fp4_tflops = 2.0 * M * N * K / f.fp4_seconds / 1e12;
      const Nvfp4Kernel k = M >= nvfp4_tiled_min_rows() ? Nvfp4Kernel::Tiled : nvfp4_best_gemv_kernel();
      f.fp4_path = std::string("fused-dequant (") + to_string(k) + (shape.w4a4 ? ", W4A4 activations fake-quantized" : "") + ")";
    }
    return f;
  }

  Expected<ServingFigures> serve(WeightSource& weights, const ir::ModelConfig& config, const ServingSpec& spec) override {
    ThreadScope scope(threads_);
    return serve_cpu(weights, config, spec, threads_);
  }

 private:
  int threads_;
};

// "cuda" -> 0, "cuda:N" -> N; anything else is not a device.
Expected<int> cuda_index(const std::string& device) {
  if (device == "cuda") return 0;
  if (device.size() > 5 && device.compare(0, 5, "cuda:") == 0) {
    int n = -1;
    const char* b = device.data() + 5;
    const char* e = device.data() + device.size();
    auto [p, ec] = std::from_chars(b, e, n);
    if (ec == std::errc() && p == e && n >= 0) return n;
  }
  return make_error("unknown device '" + device + "' (expected cpu, cuda or cuda:N)");
}

}  // namespace

Expected<std::unique_ptr<PerfDevice>> make_perf_device(const std::string& device, int threads) {
  if (device == "cpu") {
    if (threads < 0) return make_error("cpu: threads must be >= 0 (0: OpenMP's default), got " + std::to_string(threads));
    return std::unique_ptr<PerfDevice>(std::make_unique<CpuPerfDevice>(threads));
  }
  FP4C_ASSIGN(const int index, cuda_index(device));
  FP4C_ASSIGN(const int count, cuda::device_count());
  if (index >= count)
    return make_error("device " + device + ": " + std::to_string(count) + " CUDA device" + (count == 1 ? "" : "s") +
                      " visible");
  return cuda::make_perf_device(index);
}

}  // namespace fp4c::runtime
