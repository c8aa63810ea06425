// The CUDA runtime's NVFP4 kernels one at a time on random data (fresh seeds) against the CPU: the W4A4
// activation quantization and the weight dequantization bit for bit, the FP4 codes and (unswizzled)
// block scales byte for byte, the fused dequantize-and-multiply GEMM (both its GEMV and tiled shapes)
// against a double-precision product. Labelled `gpu` (left out of CI); skips without a device.
#include <gtest/gtest.h>

#include <bit>
#include <cmath>
#include <random>

#include "formats/bf16.h"
#include "formats/nvfp4.h"
#include "runtime/activation_quant.h"
#include "runtime/cuda/cuda_api.h"
#include "runtime/cuda/kernel_checks.h"
#include "runtime/cuda/numerics.h"

namespace fp4c::runtime::cuda {
namespace {

#define SKIP_WITHOUT_GPU()                                                          \
  do {                                                                              \
    auto n = device_count();                                                        \
    if (!n.ok()) GTEST_SKIP() << "no GPU: " << n.error().message;                   \
  } while (0)

std::mt19937_64 fresh_rng() {
  const uint64_t seed = std::random_device{}();
  std::printf("seed %llu\n", static_cast<unsigned long long>(seed));
  return std::mt19937_64(seed);
}

std::vector<float> activations(std::mt19937_64& rng, int64_t rows, int64_t cols) {
  std::normal_distribution<float> d(0.0f, 1.0f);
  std::vector<float> x(size_t(rows * cols));
  for (float& v : x) v = d(rng) * std::exp2(float(int(rng() % 9) - 4));
  for (int c = 0; c < 16; ++c) x[size_t(c)] = 0.0f;  // an all-zero block
  return x;
}

PackedNvfp4 packed_weight(std::mt19937_64& rng, int64_t out, int64_t in, bool modelopt) {
  std::normal_distribution<float> d(0.0f, 0.05f);
  std::vector<float> w(size_t(out * in));
  for (float& v : w) v = d(rng);
  PackedNvfp4 p;
  p.codes.resize(w.size() / 2);
  p.block_scales.resize(w.size() / 16);
  p.global_scale = nvfp4::global_scale(nvfp4::amax_f32(w));
  nvfp4::quantize_f32_ref(w.data(), out, in, p.global_scale, p.codes.data(), p.block_scales.data());
  if (modelopt) p.weight_scale_2 = 1.0f / p.global_scale;
  return p;
}

std::vector<float> host_dequantize(const PackedNvfp4& p, int64_t out, int64_t in) {
  std::vector<float> w(size_t(out * in));
  nvfp4::dequantize(p.codes.data(), p.block_scales.data(), out, in, p.weight_scale_2 ? 1.0f : p.global_scale, w.data());
  if (p.weight_scale_2)
    for (float& v : w) v *= *p.weight_scale_2;
  return w;
}

TEST(CudaKernels, FakeQuantizeIsTheCpusBitForBit) {
  SKIP_WITHOUT_GPU();
  auto rng = fresh_rng();
  const int64_t rows = 67, cols = 320;
  const std::vector<float> x = activations(rng, rows, cols);
  for (float G : {nvfp4::global_scale(20.0f), 1.0f}) {
    auto got = check::fake_quantize(x, rows, cols, G);
    ASSERT_TRUE(got.ok()) << got.error().message;
    std::vector<float> want(x.size());
    fake_quantize_nvfp4(x.data(), rows, cols, G, want.data());
    for (size_t i = 0; i < x.size(); ++i)
      ASSERT_EQ(std::bit_cast<uint32_t>((*got)[i]), std::bit_cast<uint32_t>(want[i])) << "G " << G << " at " << i;
  }
}

TEST(CudaKernels, Fp4CodesAndSwizzledScalesAreTheFormatsBytes) {
  SKIP_WITHOUT_GPU();
  auto rng = fresh_rng();
  const int64_t rows = 131, cols = 96;  // rows and scale columns both need padding
  const std::vector<float> x = activations(rng, rows, cols);
  const float G = nvfp4::global_scale(nvfp4::amax_f32(x));
  auto got = check::quantize_fp4(x, rows, cols, G);
  ASSERT_TRUE(got.ok()) << got.error().message;
  std::vector<uint8_t> codes(x.size() / 2), scales(x.size() / 16);
  nvfp4::quantize_f32_ref(x.data(), rows, cols, G, codes.data(), scales.data());
  EXPECT_EQ(got->codes, codes);
  ASSERT_EQ(int64_t(got->scales_swizzled.size()), num::scale_swizzle_bytes(rows, cols / 16));
  std::vector<uint8_t> expected(got->scales_swizzled.size(), 0);  // padding zero
  for (int64_t r = 0; r < rows; ++r)
    for (int64_t c = 0; c < cols / 16; ++c)
      expected[size_t(num::scale_swizzle_offset(r, c, cols / 16))] = scales[size_t(r * (cols / 16) + c)];
  EXPECT_EQ(got->scales_swizzled, expected);
}

TEST(CudaKernels, DequantizeIsTheArtifactReadersBitForBit) {
  SKIP_WITHOUT_GPU();
  auto rng = fresh_rng();
  for (bool modelopt : {false, true}) {
    const PackedNvfp4 p = packed_weight(rng, 40, 144, modelopt);
    auto got = check::nvfp4_dequantize(p, 40, 144);
    ASSERT_TRUE(got.ok()) << got.error().message;
    const std::vector<float> want = host_dequantize(p, 40, 144);
    for (size_t i = 0; i < want.size(); ++i)
      ASSERT_EQ(std::bit_cast<uint32_t>((*got)[i]), std::bit_cast<uint32_t>(want[i])) << i;
  }
}

TEST(CudaKernels, FusedGemmMatchesADoubleProduct) {
  SKIP_WITHOUT_GPU();
  auto rng = fresh_rng();
  const int64_t out = 200, in = 272;  // not multiples of the tiles
  for (bool modelopt : {false, true})
    for (bool bf16 : {false, true})
      for (int64_t m : {1, 3, 8, 9, 70}) {  // <= 8: the GEMV kernel; more: the tiled one
        const PackedNvfp4 p = packed_weight(rng, out, in, modelopt);
        const std::vector<float> x = activations(rng, m, in);
        std::vector<float> bias(static_cast<size_t>(out));
        for (float& b : bias) b = float(rng() % 100) / 100.0f;
        auto got = check::nvfp4_gemm(x, m, p, out, in, bias, bf16);
        ASSERT_TRUE(got.ok()) << got.error().message;
        const std::vector<float> w = host_dequantize(p, out, in);
        auto r = [&](float v) { return bf16 ? double(bf16::to_float(bf16::from_float(v))) : double(v); };
        double diff = 0, scale = 0;
        for (int64_t i = 0; i < m; ++i)
          for (int64_t o = 0; o < out; ++o) {
            double acc = bias[size_t(o)];
            for (int64_t k = 0; k < in; ++k) acc += r(x[size_t(i * in + k)]) * r(w[size_t(o * in + k)]);
            diff = std::max(diff, std::fabs(double((*got)[size_t(i * out + o)]) - acc));
            scale = std::max(scale, std::fabs(acc));
          }
        EXPECT_LT(diff / scale, 1e-5) << "m " << m << " bf16 " << bf16 << " modelopt " << modelopt;
      }
}

TEST(CudaKernels, WithoutAGpuEveryCheckIsAnError) {
  if (device_count().ok()) GTEST_SKIP() << "a GPU is present";
  EXPECT_FALSE(check::fake_quantize(std::vector<float>(16), 1, 16, 1.0f).ok());
  EXPECT_FALSE(check::nvfp4_dequantize(PackedNvfp4{}, 0, 16).ok());
}

}  // namespace
}  // namespace fp4c::runtime::cuda
