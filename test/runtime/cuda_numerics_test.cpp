// The CUDA runtime's per-element arithmetic (runtime/cuda/numerics.h), compiled here by the host
// compiler, against formats/ and the CPU runtime bit for bit: the kernels call these same functions,
// so this is what CI can check of them without a GPU. Runs in every build, with or without CUDA.
#include <gtest/gtest.h>

#include <bit>
#include <cmath>
#include <limits>
#include <random>
#include <set>
#include <vector>

#include "formats/bf16.h"
#include "formats/fp4.h"
#include "formats/fp8_e4m3.h"
#include "formats/nvfp4.h"
#include "runtime/activation_quant.h"
#include "runtime/cuda/numerics.h"

namespace fp4c::runtime::cuda {
namespace {

uint32_t bits(float f) { return std::bit_cast<uint32_t>(f); }

std::mt19937_64 fresh_rng() {
  const uint64_t seed = std::random_device{}();
  std::printf("seed %llu\n", static_cast<unsigned long long>(seed));
  return std::mt19937_64(seed);
}

// Floats over many binades, both signs, plus the awkward ones.
std::vector<float> probe_floats(std::mt19937_64& rng, size_t n) {
  std::vector<float> v = {0.0f, -0.0f, 1e-45f, -1e-45f, std::numeric_limits<float>::min(), 448.0f, 464.0f, 463.99f,
                          480.0f, 1e30f, -1e30f, std::numeric_limits<float>::infinity(),
                          -std::numeric_limits<float>::infinity(), std::numeric_limits<float>::quiet_NaN()};
  std::uniform_real_distribution<float> exponent(-40.0f, 12.0f);
  for (size_t i = 0; i < n; ++i) {
    float x = std::exp2(exponent(rng)) * ((rng() & 1) ? -1.0f : 1.0f);
    v.push_back(x);
  }
  return v;
}

TEST(CudaNumerics, E2M1DecodeEqualsFormatsForAll16Codes) {
  for (int c = 0; c < 16; ++c) EXPECT_EQ(bits(num::e2m1_decode(uint8_t(c))), bits(fp4::decode(uint8_t(c)))) << c;
}

TEST(CudaNumerics, E4M3DecodeEqualsFormatsForAll256Codes) {
  for (int c = 0; c < 256; ++c) {
    const float got = num::e4m3_decode(uint8_t(c)), want = fp8_e4m3::decode(uint8_t(c));
    if (std::isnan(want))
      EXPECT_TRUE(std::isnan(got)) << c;
    else
      EXPECT_EQ(bits(got), bits(want)) << c;
  }
}

TEST(CudaNumerics, E4M3EncodeEqualsFormats) {
  auto rng = fresh_rng();
  std::vector<float> xs = probe_floats(rng, 200000);
  // Every code's value and the midpoints between neighbours (the ties), each nudged by one ulp.
  for (int c = 0; c < 0x7E; ++c) {
    const float a = fp8_e4m3::decode(uint8_t(c)), b = fp8_e4m3::decode(uint8_t(c + 1)), mid = 0.5f * (a + b);
    for (float x : {a, mid, std::nextafter(mid, 0.0f), std::nextafter(mid, 1e9f)}) {
      xs.push_back(x);
      xs.push_back(-x);
    }
  }
  for (float x : xs) ASSERT_EQ(num::e4m3_encode(x), fp8_e4m3::encode(x)) << x;
}

TEST(CudaNumerics, E2M1EncodeEqualsFormats) {
  auto rng = fresh_rng();
  std::vector<float> xs = probe_floats(rng, 100000);
  std::uniform_real_distribution<float> small(-7.0f, 7.0f);
  for (int i = 0; i < 100000; ++i) xs.push_back(small(rng));
  for (float t : {0.25f, 0.75f, 1.25f, 1.75f, 2.5f, 3.5f, 5.0f})
    for (float x : {t, std::nextafter(t, 0.0f), std::nextafter(t, 9.0f)}) {
      xs.push_back(x);
      xs.push_back(-x);
    }
  for (float x : xs) ASSERT_EQ(num::e2m1_encode(x), fp4::encode(x)) << x;
}

TEST(CudaNumerics, Bf16RoundingEqualsFormats) {
  auto rng = fresh_rng();
  for (float x : probe_floats(rng, 100000)) {
    ASSERT_EQ(num::bf16_bits(x), bf16::from_float(x)) << x;
    ASSERT_EQ(bits(num::round_bf16(x)), bits(bf16::to_float(bf16::from_float(x)))) << x;
  }
  // Ties to even: 1 + 2^-8 is halfway between two BF16 values.
  EXPECT_EQ(num::bf16_bits(1.0f + 0x1p-8f), bf16::from_float(1.0f + 0x1p-8f));
}

// A packed NVFP4 weight from random values through the formats' quantizer.
struct Packed {
  int64_t rows, cols;
  std::vector<uint8_t> codes, scales;
  float G;
};
Packed random_weight(std::mt19937_64& rng, int64_t rows, int64_t cols) {
  std::normal_distribution<float> d(0.0f, 0.05f);
  std::vector<float> w(size_t(rows * cols));
  for (float& x : w) x = d(rng);
  for (int64_t c = 0; c < 16; ++c) w[size_t(c)] = 0.0f;  // an all-zero block (scale 0x20)
  Packed p{rows, cols, std::vector<uint8_t>(w.size() / 2), std::vector<uint8_t>(w.size() / 16),
           nvfp4::global_scale(nvfp4::amax_f32(w))};
  nvfp4::quantize_f32_ref(w.data(), rows, cols, p.G, p.codes.data(), p.scales.data());
  return p;
}

TEST(CudaNumerics, WeightDequantizeEqualsTheArtifactReadersExpression) {
  auto rng = fresh_rng();
  const Packed p = random_weight(rng, 24, 96);
  std::vector<float> want(size_t(p.rows * p.cols)), want_ws2(want.size());
  nvfp4::dequantize(p.codes.data(), p.scales.data(), p.rows, p.cols, p.G, want.data());
  // ModelOpt layout: dequantize with G = 1, then times weight_scale_2 (backends/compressed_tensors/reader.cpp).
  const float ws2 = 1.0f / p.G;
  nvfp4::dequantize(p.codes.data(), p.scales.data(), p.rows, p.cols, 1.0f, want_ws2.data());
  for (float& v : want_ws2) v *= ws2;
  for (int64_t r = 0; r < p.rows; ++r)
    for (int64_t c = 0; c < p.cols; ++c) {
      const uint8_t byte = p.codes[size_t(r * p.cols / 2 + c / 2)];
      const uint8_t code = (c % 2) ? uint8_t(byte >> 4) : uint8_t(byte & 0xF);
      const uint8_t scale = p.scales[size_t(r * p.cols / 16 + c / 16)];
      const size_t i = size_t(r * p.cols + c);
      ASSERT_EQ(bits(num::nvfp4_weight(code, scale, p.G, false, 0.0f)), bits(want[i])) << r << "," << c;
      ASSERT_EQ(bits(num::nvfp4_weight(code, scale, p.G, true, ws2)), bits(want_ws2[i])) << r << "," << c;
    }
}

// Rows of activations with what makes blocks awkward: zeros, tiny values (scale underflow), huge
// values (scale clamps at 448), exact ties, a NaN block.
std::vector<float> awkward_activations(std::mt19937_64& rng, int64_t rows, int64_t cols) {
  std::normal_distribution<float> d(0.0f, 1.0f);
  std::vector<float> x(size_t(rows * cols));
  for (float& v : x) v = d(rng) * std::exp2(float(int(rng() % 9) - 4));
  for (int64_t c = 0; c < 16; ++c) {
    x[size_t(c)] = 0.0f;                          // row 0, block 0: zeros
    x[size_t(cols + c)] = 1e-30f * float(c - 8);  // row 1, block 0: tiny
    x[size_t(2 * cols + c)] = 1e6f * float(c - 8);  // row 2, block 0: huge
    x[size_t(3 * cols + c)] = 0.25f * float(c) - 2.0f;  // row 3, block 0: ties at several scales
  }
  x[size_t(4 * cols + 5)] = std::numeric_limits<float>::quiet_NaN();  // row 4, block 0: NaN
  return x;
}

TEST(CudaNumerics, ActivationBlockEqualsTheCpuW4A4QuantizationBitForBit) {
  auto rng = fresh_rng();
  const int64_t rows = 37, cols = 128;
  const std::vector<float> x = awkward_activations(rng, rows, cols);
  for (float G : {nvfp4::global_scale(8.0f), nvfp4::global_scale(0.01f), 1.0f, 3000.0f}) {
    std::vector<float> want(x.size());
    fake_quantize_nvfp4(x.data(), rows, cols, G, want.data());
    std::vector<uint8_t> want_codes(x.size() / 2), want_scales(x.size() / 16);
    nvfp4::quantize_f32_ref(x.data(), rows, cols, G, want_codes.data(), want_scales.data());
    for (int64_t b = 0; b < rows * cols / 16; ++b) {
      float out[16];
      uint8_t packed[8], scale = 0;
      num::quantize_activation_block(&x[size_t(b * 16)], G, out, packed, &scale);
      for (int i = 0; i < 16; ++i) {
        const float w = want[size_t(b * 16 + i)];
        if (std::isnan(w))
          ASSERT_TRUE(std::isnan(out[i])) << "block " << b;
        else
          ASSERT_EQ(bits(out[i]), bits(w)) << "G " << G << " block " << b << " element " << i;
      }
      ASSERT_EQ(scale, want_scales[size_t(b)]) << "G " << G << " block " << b;
      for (int i = 0; i < 8; ++i) ASSERT_EQ(packed[i], want_codes[size_t(b * 8 + i)]) << "G " << G << " block " << b;
      // The codes and scale decode to the fake-quantized values (what the native GEMM multiplies).
      if (scale != 0x7F)
        for (int i = 0; i < 16; ++i) {
          const uint8_t code = (i % 2) ? uint8_t(packed[i / 2] >> 4) : uint8_t(packed[i / 2] & 0xF);
          ASSERT_EQ(bits(num::e2m1_decode(code) * (num::e4m3_decode(scale) / G)), bits(out[i]));
        }
    }
  }
}

// torchao's to_blocked, written as the tensor operations it performs: pad to [128 * R, 4 * C], view
// [R, 128, C, 4], permute to [R, C, 128, 4], reshape [-1, 4, 32, 4], transpose(1, 2) -> [-1, 32, 4, 4].
std::vector<int64_t> to_blocked_offsets(int64_t rows, int64_t cols) {
  const int64_t R = (rows + 127) / 128, C = (cols + 3) / 4;
  std::vector<int64_t> off(size_t(rows * cols), -1);
  int64_t flat = 0;
  for (int64_t rb = 0; rb < R; ++rb)
    for (int64_t cb = 0; cb < C; ++cb)
      for (int64_t b = 0; b < 32; ++b)      // after the transpose: [32][4][4] = (b, a, j)
        for (int64_t a = 0; a < 4; ++a)
          for (int64_t j = 0; j < 4; ++j, ++flat) {
            const int64_t r = rb * 128 + a * 32 + b, c = cb * 4 + j;
            if (r < rows && c < cols) off[size_t(r * cols + c)] = flat;
          }
  return off;
}

TEST(CudaNumerics, ScaleSwizzleIsCublasLtsTiledLayout) {
  for (auto [rows, cols] : {std::pair<int64_t, int64_t>{128, 4}, {1, 1}, {300, 7}, {256, 12}, {129, 5}}) {
    const std::vector<int64_t> want = to_blocked_offsets(rows, cols);
    std::set<int64_t> seen;
    for (int64_t r = 0; r < rows; ++r)
      for (int64_t c = 0; c < cols; ++c) {
        const int64_t o = num::scale_swizzle_offset(r, c, cols);
        ASSERT_EQ(o, want[size_t(r * cols + c)]) << rows << "x" << cols << " at " << r << "," << c;
        ASSERT_LT(o, num::scale_swizzle_bytes(rows, cols));
        seen.insert(o);
      }
    EXPECT_EQ(int64_t(seen.size()), rows * cols);  // one byte each
  }
  EXPECT_EQ(num::scale_swizzle_bytes(300, 7), 3 * 2 * 512);
}

}  // namespace
}  // namespace fp4c::runtime::cuda
