// The fused-dequant NVFP4 product (runtime/nvfp4_matmul.h) against a slow reference (nvfp4::dequantize,
// then a double-precision product), every kernel forced in turn, on random shapes and data with fresh
// seeds; and the CPU PerfDevice (runtime/perf.h): make_perf_device, info, ceilings, matmul figures.
#include <gtest/gtest.h>
#include <omp.h>

#include <cmath>
#include <cstring>
#include <limits>
#include <random>
#include <vector>

#include "formats/fp4.h"
#include "formats/fp8_e4m3.h"
#include "formats/nvfp4.h"
#include "runtime/nvfp4_matmul.h"
#include "runtime/perf.h"

namespace fp4c::runtime {
namespace {

uint64_t fresh_seed() {
  std::random_device rd;
  return (uint64_t(rd()) << 32) ^ rd();
}

struct Problem {
  int64_t m, n, k;
  std::vector<float> x, w, bias;   // w: the source weights, quantized below
  PackedNvfp4 packed;
  std::vector<float> wq;           // the dequantized weights the product must use
};

Problem make_problem(int64_t m, int64_t n, int64_t k, bool with_bias, bool ws2, std::mt19937_64& rng) {
  Problem p{m, n, k, {}, {}, {}, {}, {}};
  std::student_t_distribution<float> t(4.0f);
  p.x.resize(size_t(m * k));
  for (float& v : p.x) v = t(rng);
  p.w.resize(size_t(n * k));
  const float scale = std::exp(std::uniform_real_distribution<float>(-6.0f, 2.0f)(rng));
  for (float& v : p.w) v = scale * t(rng);
  if (with_bias) {
    p.bias.resize(size_t(n));
    for (float& v : p.bias) v = t(rng);
  }
  float amax = 0;
  for (float v : p.w) amax = std::max(amax, std::fabs(v));
  p.packed.global_scale = nvfp4::global_scale(amax);
  p.packed.codes.resize(size_t(n * k / 2));
  p.packed.block_scales.resize(size_t(n * k / 16));
  nvfp4::quantize_f32_ref(p.w.data(), n, k, p.packed.global_scale, p.packed.codes.data(), p.packed.block_scales.data());
  p.wq.resize(size_t(n * k));
  if (!ws2) {
    nvfp4::dequantize(p.packed.codes.data(), p.packed.block_scales.data(), n, k, p.packed.global_scale, p.wq.data());
  } else {
    // ModelOpt's expression: (e2m1 * e4m3) * weight_scale_2, with weight_scale_2 = 1/G as stored.
    p.packed.weight_scale_2 = 1.0f / p.packed.global_scale;
    for (int64_t r = 0; r < n; ++r)
      for (int64_t c = 0; c < k; ++c) {
        const uint8_t byte = p.packed.codes[size_t((r * k + c) / 2)];
        const float e = fp4::decode(c % 2 ? uint8_t(byte >> 4) : uint8_t(byte & 0xF));
        const float s = fp8_e4m3::decode(p.packed.block_scales[size_t(r * k / 16 + c / 16)]);
        p.wq[size_t(r * k + c)] = (e * s) * *p.packed.weight_scale_2;
      }
  }
  return p;
}

// y within FP32 accumulation bounds of the double product of x and the dequantized weights:
// |y - ref| <= 2 * (k + 2) * eps * (sum |x w| + |bias|).
void expect_close(const Problem& p, const std::vector<float>& y, const std::string& what) {
  const double eps = std::numeric_limits<float>::epsilon();
  int bad = 0;
  for (int64_t i = 0; i < p.m; ++i)
    for (int64_t j = 0; j < p.n; ++j) {
      double ref = 0, mag = 0;
      for (int64_t c = 0; c < p.k; ++c) {
        const double prod = double(p.x[size_t(i * p.k + c)]) * double(p.wq[size_t(j * p.k + c)]);
        ref += prod;
        mag += std::fabs(prod);
      }
      if (!p.bias.empty()) {
        ref += p.bias[size_t(j)];
        mag += std::fabs(p.bias[size_t(j)]);
      }
      const double err = std::fabs(double(y[size_t(i * p.n + j)]) - ref);
      const double bound = 2.0 * double(p.k + 2) * eps * mag + 1e-30;
      if (!(err <= bound) && bad++ < 5)
        ADD_FAILURE() << what << " m=" << p.m << " n=" << p.n << " k=" << p.k << " at (" << i << ", " << j
                      << "): " << y[size_t(i * p.n + j)] << " vs " << ref << ", error " << err << " > bound " << bound;
    }
}

const Nvfp4Kernel kKernels[] = {Nvfp4Kernel::Scalar, Nvfp4Kernel::Avx2, Nvfp4Kernel::Avx512, Nvfp4Kernel::Tiled,
                                Nvfp4Kernel::Auto};

TEST(Nvfp4Matmul, EveryKernelMatchesTheReferenceOnRandomShapes) {
  const uint64_t seed = fresh_seed();
  SCOPED_TRACE("seed " + std::to_string(seed));
  std::mt19937_64 rng(seed);
  int ran = 0;
  for (int trial = 0; trial < 14; ++trial) {
    // Row and column counts off the kernels' tile sizes (6 x 4, 4 x 2, 128-row tiles), and past 48
    // rows (a second pass over W) and 64 (Auto's switch to the tiled kernel).
    const int64_t m = std::vector<int64_t>{1, 2, 5, 6, 7, 13, 49, 70, 130}[rng() % 9];
    const int64_t n = 1 + int64_t(rng() % 150);
    const int64_t k = 16 * (1 + int64_t(rng() % 24));
    const bool bias = rng() % 2, ws2 = trial % 3 == 2;
    const Problem p = make_problem(m, n, k, bias, ws2, rng);
    for (Nvfp4Kernel kernel : kKernels) {
      if (!nvfp4_kernel_available(kernel)) continue;
      auto lin = Nvfp4Matmul::create(p.packed, n, k, p.bias);
      ASSERT_TRUE(lin.ok()) << lin.error().message;
      std::vector<float> y(size_t(m * n), std::numeric_limits<float>::quiet_NaN());
      auto st = lin->run(p.x.data(), m, y.data(), kernel);
      ASSERT_TRUE(st.ok()) << st.error().message;
      expect_close(p, y, std::string(to_string(kernel)) + (ws2 ? " (weight_scale_2)" : ""));
      ++ran;
    }
  }
  EXPECT_GE(ran, 14 * 3);  // scalar, tiled and auto run everywhere
}

TEST(Nvfp4Matmul, UnavailableKernelIsAnErrorAndAvailabilityIsReported) {
  EXPECT_TRUE(nvfp4_kernel_available(Nvfp4Kernel::Scalar));
  EXPECT_TRUE(nvfp4_kernel_available(Nvfp4Kernel::Tiled));
  EXPECT_TRUE(nvfp4_kernel_available(nvfp4_best_gemv_kernel()));
  std::mt19937_64 rng(fresh_seed());
  const Problem p = make_problem(2, 8, 32, false, false, rng);
  auto lin = Nvfp4Matmul::create(p.packed, 8, 32);
  ASSERT_TRUE(lin.ok());
  std::vector<float> y(16);
  for (Nvfp4Kernel kernel : {Nvfp4Kernel::Avx512, Nvfp4Kernel::Avx2}) {
    auto st = lin->run(p.x.data(), 2, y.data(), kernel);
    if (nvfp4_kernel_available(kernel)) {
      EXPECT_TRUE(st.ok());
    } else {
      ASSERT_FALSE(st.ok());
      EXPECT_NE(st.error().message.find("CPU features"), std::string::npos) << st.error().message;
    }
  }
}

TEST(Nvfp4Matmul, SameBytesWhateverTheThreadCount) {
  std::mt19937_64 rng(fresh_seed());
  const Problem p = make_problem(70, 203, 320, true, false, rng);
  for (Nvfp4Kernel kernel : kKernels) {
    if (!nvfp4_kernel_available(kernel) || kernel == Nvfp4Kernel::Tiled) continue;  // oneDNN's order is its own
    auto lin = Nvfp4Matmul::create(p.packed, p.n, p.k, p.bias);
    ASSERT_TRUE(lin.ok());
    std::vector<float> y1(size_t(p.m * p.n)), y2(y1.size()), y3(y1.size());
    const int saved = omp_get_max_threads();
    omp_set_num_threads(1);
    ASSERT_TRUE(lin->run(p.x.data(), p.m, y1.data(), kernel == Nvfp4Kernel::Auto ? nvfp4_best_gemv_kernel() : kernel).ok());
    omp_set_num_threads(2);
    ASSERT_TRUE(lin->run(p.x.data(), p.m, y2.data(), kernel == Nvfp4Kernel::Auto ? nvfp4_best_gemv_kernel() : kernel).ok());
    omp_set_num_threads(3);
    ASSERT_TRUE(lin->run(p.x.data(), p.m, y3.data(), kernel == Nvfp4Kernel::Auto ? nvfp4_best_gemv_kernel() : kernel).ok());
    omp_set_num_threads(saved);
    EXPECT_EQ(std::memcmp(y1.data(), y2.data(), y1.size() * 4), 0) << to_string(kernel);
    EXPECT_EQ(std::memcmp(y1.data(), y3.data(), y1.size() * 4), 0) << to_string(kernel);
  }
}

TEST(Nvfp4Matmul, BadSizesAreErrorsNamingTheLinear) {
  PackedNvfp4 w;
  w.codes.resize(8 * 32 / 2);
  w.block_scales.resize(8 * 32 / 16);
  auto a = Nvfp4Matmul::create(w, 8, 30, {}, "layer 3 q");
  ASSERT_FALSE(a.ok());
  EXPECT_NE(a.error().message.find("layer 3 q"), std::string::npos);
  EXPECT_NE(a.error().message.find("in % 16"), std::string::npos);
  auto b = Nvfp4Matmul::create(w, 9, 32, {}, "layer 3 q");
  ASSERT_FALSE(b.ok());
  EXPECT_NE(b.error().message.find("packed code bytes"), std::string::npos) << b.error().message;
  auto c = Nvfp4Matmul::create(w, 8, 32, std::vector<float>(7), "layer 3 q");
  ASSERT_FALSE(c.ok());
  EXPECT_NE(c.error().message.find("7 biases"), std::string::npos) << c.error().message;
  auto d = Nvfp4Matmul::create(w, 8, 32);
  ASSERT_TRUE(d.ok());
  EXPECT_EQ(d->bytes(), 8u * 16 + 8u * 2 + 256u * 4);
}

// ---------------------------------------------------------------------------------------------
// The device.

TEST(PerfCpu, MakePerfDevice) {
  auto cpu = make_perf_device("cpu", 2);
  ASSERT_TRUE(cpu.ok()) << cpu.error().message;
  const DeviceInfo info = (*cpu)->info();
  EXPECT_EQ(info.kind, "cpu");
  EXPECT_FALSE(info.name.empty());
  EXPECT_EQ(info.threads, 2);
  EXPECT_EQ(info.fp4_path, "fused-dequant");
  EXPECT_GT(info.memory_total, 0u);
  EXPECT_GT(info.memory_free, 0u);
  EXPECT_LE(info.memory_free, info.memory_total);

  auto bad = make_perf_device("tpu", 1);
  ASSERT_FALSE(bad.ok());
  EXPECT_NE(bad.error().message.find("unknown device 'tpu'"), std::string::npos) << bad.error().message;
  auto bad2 = make_perf_device("cuda:x", 1);
  ASSERT_FALSE(bad2.ok());
  EXPECT_NE(bad2.error().message.find("unknown device"), std::string::npos);
  // Without a GPU (or CUDA in the build) asking for one is an error, never a crash.
  auto cuda = make_perf_device("cuda", 1);
  if (!cuda.ok()) {
    EXPECT_FALSE(cuda.error().message.empty());
  }
  auto neg = make_perf_device("cpu", -1);
  EXPECT_FALSE(neg.ok());
}

TEST(PerfCpu, CeilingsAreMeasured) {
  auto dev = make_perf_device("cpu", 0);
  ASSERT_TRUE(dev.ok());
  auto c = (*dev)->ceilings();
  ASSERT_TRUE(c.ok()) << c.error().message;
  EXPECT_GT(c->bandwidth_gbs, 0.1);
  EXPECT_LT(c->bandwidth_gbs, 10000);
  EXPECT_GT(c->bf16_tflops, 0.001);
  EXPECT_LT(c->bf16_tflops, 1000);
  EXPECT_EQ(c->fp4_tflops, 0);
  EXPECT_NE(c->how.find("oneDNN"), std::string::npos);
}

TEST(PerfCpu, MatmulFigures) {
  auto dev = make_perf_device("cpu", 0);
  ASSERT_TRUE(dev.ok());
  for (const MatmulCase shape : {MatmulCase{1, 96, 64, false}, MatmulCase{100, 96, 64, false}, MatmulCase{8, 96, 64, true}}) {
    auto f = (*dev)->matmul(shape, 3);
    ASSERT_TRUE(f.ok()) << f.error().message;
    EXPECT_EQ(f->repetitions, 3);
    EXPECT_EQ(f->shape.m, shape.m);
    EXPECT_GT(f->bf16_seconds, 0);
    EXPECT_GT(f->fp4_seconds, 0);
    const double flop = 2.0 * shape.m * shape.n * shape.k;
    EXPECT_NEAR(f->bf16_tflops, flop / f->bf16_seconds / 1e12, 1e-9 * f->bf16_tflops);
    EXPECT_NEAR(f->fp4_tflops, flop / f->fp4_seconds / 1e12, 1e-9 * f->fp4_tflops);
    const double fp4_bytes = 0.5 * 96 * 64 + 96 * 64 / 16.0 + 4 + 4.0 * shape.m * 64 + 4.0 * shape.m * 96;
    EXPECT_NEAR(f->fp4_gbs, fp4_bytes / f->fp4_seconds / 1e9, 1e-9 * f->fp4_gbs);
    EXPECT_NE(f->fp4_path.find("fused-dequant"), std::string::npos);
    EXPECT_EQ(f->fp4_path.find("W4A4") != std::string::npos, shape.w4a4) << f->fp4_path;
  }
  EXPECT_FALSE((*dev)->matmul(MatmulCase{1, 8, 24, false}, 1).ok());  // k % 16
  EXPECT_FALSE((*dev)->matmul(MatmulCase{1, 8, 32, false}, 0).ok());
}

}  // namespace
}  // namespace fp4c::runtime
