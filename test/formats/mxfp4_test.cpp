// MXFP4 (NVFP4.md §6): the E8M0 codec exhaustively, each scale rule's defining property and golden
// values, the fast scale and quantizer against the reference on every E8M0-relevant amax and on random
// heavy-tailed data (fresh seed each run, printed on failure) with 1 and 2 threads, zero, tiny and
// NaN/Inf blocks, and dequantization.
#include "formats/mxfp4.h"

#include <gtest/gtest.h>
#include <omp.h>

#include <bit>
#include <cmath>
#include <functional>
#include <limits>
#include <random>
#include <vector>

#include "formats/bf16.h"
#include "formats/fp4.h"

namespace fp4c {
namespace {

using mxfp4::ScaleRule;
constexpr ScaleRule kRules[] = {ScaleRule::Ocp, ScaleRule::CompressedTensors, ScaleRule::ModelOpt};
constexpr float kInf = std::numeric_limits<float>::infinity();
constexpr float kNaN = std::numeric_limits<float>::quiet_NaN();

int exponent_of(uint8_t code) { return int(code) - 127; }

void with_threads(int n, const std::function<void()>& fn) {
  const int before = omp_get_max_threads();
  omp_set_num_threads(n);
  fn();
  omp_set_num_threads(before);
}

TEST(E8m0, DecodeEveryCode) {
  for (int c = 0; c < 255; ++c) EXPECT_EQ(mxfp4::e8m0::decode(uint8_t(c)), std::ldexp(1.0f, c - 127)) << c;
  EXPECT_TRUE(std::isnan(mxfp4::e8m0::decode(0xFF)));
  EXPECT_EQ(mxfp4::e8m0::decode(127), 1.0f);
  EXPECT_GT(mxfp4::e8m0::decode(0), 0.0f);  // 2^-127: a float32 subnormal, not 0
}

TEST(E8m0, EncodeExponentRoundTripsAndClamps) {
  for (int e = -127; e <= 127; ++e) {
    const uint8_t c = mxfp4::e8m0::encode_exponent(e);
    EXPECT_EQ(exponent_of(c), e);
    EXPECT_EQ(mxfp4::e8m0::decode(c), std::ldexp(1.0f, e));
  }
  EXPECT_EQ(mxfp4::e8m0::encode_exponent(-500), 0x00);
  EXPECT_EQ(mxfp4::e8m0::encode_exponent(500), 0xFE);  // never the NaN byte
}

TEST(ScaleRules, GoldenValues) {
  // amax 6: OCP floor(log2 6) - 2 = 0; compressed-tensors rounds 6 = 1.5 * 4 to 8: 3 - 2 = 1;
  // ModelOpt ceil(log2 1) = 0.
  EXPECT_EQ(exponent_of(mxfp4::scale_code_ref(6.0f, ScaleRule::Ocp)), 0);
  EXPECT_EQ(exponent_of(mxfp4::scale_code_ref(6.0f, ScaleRule::CompressedTensors)), 0);
  EXPECT_EQ(exponent_of(mxfp4::scale_code_ref(6.0f, ScaleRule::ModelOpt)), 0);
  // amax 7 = 1.75 * 4: OCP 0 (7 saturates to 6); compressed-tensors 8 -> 1; ModelOpt ceil(log2 7/6) = 1.
  EXPECT_EQ(exponent_of(mxfp4::scale_code_ref(7.0f, ScaleRule::Ocp)), 0);
  EXPECT_EQ(exponent_of(mxfp4::scale_code_ref(7.0f, ScaleRule::CompressedTensors)), 1);
  EXPECT_EQ(exponent_of(mxfp4::scale_code_ref(7.0f, ScaleRule::ModelOpt)), 1);
  // amax 6.5: OCP 0, compressed-tensors 0 (1.625 rounds down), ModelOpt 1.
  EXPECT_EQ(exponent_of(mxfp4::scale_code_ref(6.5f, ScaleRule::Ocp)), 0);
  EXPECT_EQ(exponent_of(mxfp4::scale_code_ref(6.5f, ScaleRule::CompressedTensors)), 0);
  EXPECT_EQ(exponent_of(mxfp4::scale_code_ref(6.5f, ScaleRule::ModelOpt)), 1);
  // amax 4: all 0... ModelOpt ceil(log2 0.667) = 0; amax 3: OCP -1, CT -1, ModelOpt -1.
  EXPECT_EQ(exponent_of(mxfp4::scale_code_ref(4.0f, ScaleRule::ModelOpt)), 0);
  EXPECT_EQ(exponent_of(mxfp4::scale_code_ref(3.0f, ScaleRule::Ocp)), -1);
  EXPECT_EQ(exponent_of(mxfp4::scale_code_ref(3.0f, ScaleRule::CompressedTensors)), -1);
  EXPECT_EQ(exponent_of(mxfp4::scale_code_ref(3.0f, ScaleRule::ModelOpt)), -1);
  // A weight-sized amax: 0.0825 = 1.32 * 2^-4 (compressed-tensors' docstring example) -> 2^-4 -> -6.
  EXPECT_EQ(exponent_of(mxfp4::scale_code_ref(0.0825f, ScaleRule::CompressedTensors)), -6);
  EXPECT_EQ(exponent_of(mxfp4::scale_code_ref(0.0825f, ScaleRule::Ocp)), -6);
  EXPECT_EQ(exponent_of(mxfp4::scale_code_ref(0.0825f, ScaleRule::ModelOpt)), -6);  // ceil(log2 .01375) = -6
  for (ScaleRule r : kRules) {
    EXPECT_EQ(mxfp4::scale_code_ref(0.0f, r), 0x00) << mxfp4::scale_rule_name(r);   // zero block: 2^-127
    EXPECT_EQ(mxfp4::scale_code_ref(1e-45f, r), 0x00) << mxfp4::scale_rule_name(r); // smallest subnormal
    EXPECT_EQ(mxfp4::scale_code_ref(kNaN, r), 0xFF) << mxfp4::scale_rule_name(r);
    EXPECT_EQ(mxfp4::scale_code(kNaN, r), 0xFF) << mxfp4::scale_rule_name(r);
    EXPECT_EQ(mxfp4::scale_code(kInf, r), mxfp4::scale_code_ref(std::numeric_limits<float>::max(), r));
  }
}

// Every rule's defining property, for amax over the whole float range where the exponent is not
// clamped: OCP a / s in [4, 8); compressed-tensors in [3.5, 7); ModelOpt in (3, 6] (never clips, up to
// the float rounding of a / 6).
TEST(ScaleRules, PropertiesOnASweepOfAmax) {
  const uint32_t seed = std::random_device{}();
  SCOPED_TRACE(testing::Message() << "seed " << seed);
  std::mt19937 rng(seed);
  std::uniform_int_distribution<int> exp(-120, 120);
  std::uniform_real_distribution<double> mant(1.0, 2.0);
  for (int i = 0; i < 200000; ++i) {
    const float a = float(std::ldexp(mant(rng), exp(rng)));
    const double ocp = a / mxfp4::e8m0::decode(mxfp4::scale_code_ref(a, ScaleRule::Ocp));
    EXPECT_TRUE(ocp >= 4.0 && ocp < 8.0) << a;
    const double ct = a / mxfp4::e8m0::decode(mxfp4::scale_code_ref(a, ScaleRule::CompressedTensors));
    EXPECT_TRUE(ct >= 3.5 && ct < 7.0) << a;
    const double mo = a / mxfp4::e8m0::decode(mxfp4::scale_code_ref(a, ScaleRule::ModelOpt));
    EXPECT_TRUE(mo > 3.0 && mo <= 6.0 * (1 + std::ldexp(1.0, -22))) << a;
    // The rules' orders: ModelOpt's scale >= compressed-tensors' >= OCP's.
    EXPECT_GE(mxfp4::scale_code_ref(a, ScaleRule::ModelOpt), mxfp4::scale_code_ref(a, ScaleRule::CompressedTensors));
    EXPECT_GE(mxfp4::scale_code_ref(a, ScaleRule::CompressedTensors), mxfp4::scale_code_ref(a, ScaleRule::Ocp));
    if (HasFailure()) break;
  }
}

// The fast scale (exponent bits) equals the reference (log2) on every float32 whose 16 low mantissa
// bits are a fixed random pattern (all exponents, all high mantissas, subnormals, 0, Inf), and around
// every rounding boundary of every exponent.
TEST(ScaleRules, FastEqualsReference) {
  const uint32_t seed = std::random_device{}();
  SCOPED_TRACE(testing::Message() << "seed " << seed);
  std::mt19937 rng(seed);
  const uint32_t low = rng() & 0xFFFF;
  for (ScaleRule r : kRules) {
    for (uint32_t hi = 0; hi < 0x7F80; ++hi) {
      for (uint32_t lo : {0u, low, 0xFFFFu}) {
        const float a = std::bit_cast<float>((hi << 16) | lo);
        ASSERT_EQ(mxfp4::scale_code(a, r), mxfp4::scale_code_ref(a, r)) << mxfp4::scale_rule_name(r) << " " << a;
      }
    }
    for (int e = -149; e <= 127; ++e)
      for (double m : {1.0, 1.5, 1.75, 2.0 - 1e-7, 1.5 * (1 + 1e-7), 1.5 * (1 - 1e-7), 1.75 * (1 - 1e-7)}) {
        const float a = float(std::ldexp(m, e));
        for (float v : {a, std::nextafter(a, 0.0f), std::nextafter(a, kInf)}) {
          if (std::isfinite(v)) {
            ASSERT_EQ(mxfp4::scale_code(v, r), mxfp4::scale_code_ref(v, r)) << mxfp4::scale_rule_name(r) << " " << v;
          }
        }
      }
  }
}

// compressed-tensors' round_to_power_2 ported literally (float32 view: add 1 << (23 - 1 - 1), keep sign
// and exponent), then 127 + floor(log2) - 2 clamped to [0, 255] as its calculate_qparams does.
uint8_t compressed_tensors_port(float amax) {
  const uint32_t bits = std::bit_cast<uint32_t>(amax);
  const float p2 = std::bit_cast<float>((bits + (1u << 21)) & 0xFF800000u);
  const double e = 127.0 + std::floor(std::log2(double(p2))) - 2.0;
  return uint8_t(std::round(std::clamp(e, 0.0, 255.0)));
}

TEST(ScaleRules, CompressedTensorsRuleMatchesTheirCode) {
  const uint32_t seed = std::random_device{}();
  SCOPED_TRACE(testing::Message() << "seed " << seed);
  std::mt19937 rng(seed);
  std::uniform_int_distribution<uint32_t> bits(0, 0x7F5FFFFFu);  // below 1.75 * 2^127 (they overflow past it)
  for (int i = 0; i < 100000; ++i) {
    const float a = std::bit_cast<float>(bits(rng));
    ASSERT_EQ(mxfp4::scale_code(a, ScaleRule::CompressedTensors), compressed_tensors_port(a)) << a;
  }
}

std::vector<float> heavy_tailed(std::mt19937_64& rng, size_t n) {
  std::student_t_distribution<float> t(3.0f);
  std::uniform_real_distribution<float> scale_exp(-12.0f, 4.0f);
  std::vector<float> v(n);
  const float s = std::exp2(scale_exp(rng));
  for (auto& x : v) x = bf16::to_float(bf16::from_float(t(rng) * s));  // BF16-representable
  return v;
}

struct Out {
  std::vector<uint8_t> packed, scales;
  nvfp4::ErrorStats err;
};

Out run_ref(const std::vector<float>& x, int64_t rows, int64_t cols, ScaleRule r) {
  Out o{std::vector<uint8_t>(size_t(rows * cols / 2)), std::vector<uint8_t>(size_t(rows * cols / 32)), {}};
  mxfp4::quantize_f32_ref(x.data(), rows, cols, o.packed.data(), o.scales.data(), r, &o.err);
  return o;
}

TEST(Mxfp4Quantize, FastEqualsReferenceOnRandomData) {
  const uint32_t seed = std::random_device{}();
  SCOPED_TRACE(testing::Message() << "seed " << seed);
  std::mt19937_64 rng(seed);
  for (int trial = 0; trial < 6; ++trial) {
    const int64_t rows = 1 + int64_t(rng() % 70), cols = 32 * (1 + int64_t(rng() % 12));
    auto x = heavy_tailed(rng, size_t(rows * cols));
    // Some zero blocks and some tiny (subnormal-scale) blocks, BF16-representable like the rest: the BF16 path's
    // error is taken against its own input, and a float subnormal BF16 cannot hold would make the two sums differ.
    for (int64_t k = 0; k < 32; ++k) x[size_t(k)] = 0.0f;
    if (rows > 1)
      for (int64_t k = 0; k < 32; ++k) x[size_t(cols + k)] = bf16::to_float(bf16::from_float(float(int(rng() % 7) - 3) * 1e-39f));
    std::vector<uint16_t> xb(x.size());
    for (size_t i = 0; i < x.size(); ++i) xb[i] = bf16::from_float(x[i]);
    for (ScaleRule r : kRules) {
      SCOPED_TRACE(mxfp4::scale_rule_name(r));
      const Out ref = run_ref(x, rows, cols, r);
      Out bref = ref;
      mxfp4::quantize_bf16_ref(xb.data(), rows, cols, bref.packed.data(), bref.scales.data(), r, nullptr);
      EXPECT_EQ(bref.packed, ref.packed);
      EXPECT_EQ(bref.scales, ref.scales);
      for (int threads : {1, 2}) {
        with_threads(threads, [&] {
          Out f = ref, g = ref;
          f.err = g.err = {};
          mxfp4::quantize_bf16(xb.data(), rows, cols, f.packed.data(), f.scales.data(), r, &f.err);
          mxfp4::quantize_f32(x.data(), rows, cols, g.packed.data(), g.scales.data(), r, &g.err);
          EXPECT_EQ(f.packed, ref.packed);
          EXPECT_EQ(f.scales, ref.scales);
          EXPECT_EQ(g.packed, ref.packed);
          EXPECT_EQ(g.scales, ref.scales);
          EXPECT_EQ(f.err.sum_sq_err, ref.err.sum_sq_err);  // same per-row order
          EXPECT_EQ(f.err.count, rows * cols);
        });
      }
      // Dequantization is fp4 * 2^e, and within each block the error is what the rule allows.
      std::vector<float> deq(x.size());
      mxfp4::dequantize(ref.packed.data(), ref.scales.data(), rows, cols, deq.data());
      double sq = 0;
      for (int64_t i = 0; i < rows * cols; ++i) {
        const float s = mxfp4::e8m0::decode(ref.scales[size_t(i / 32)]);
        const uint8_t byte = ref.packed[size_t(i / 2)];
        const uint8_t q = (i % 2) ? uint8_t(byte >> 4) : uint8_t(byte & 0xF);
        ASSERT_EQ(deq[size_t(i)], fp4::decode(q) * s);
        const double e = double(x[size_t(i)]) - double(deq[size_t(i)]);
        sq += e * e;
        if (r == ScaleRule::ModelOpt) {  // never clips: error at most half the largest FP4 gap (1) * s
          ASSERT_LE(std::fabs(e), 1.0 * s * (1 + 1e-6)) << i;
        }
      }
      EXPECT_NEAR(sq, ref.err.sum_sq_err, 1e-9 * (1 + sq));
    }
  }
}

TEST(Mxfp4Quantize, ZeroBlockIsScaleZeroByteAndZeroCodes) {
  std::vector<float> x(64, 0.0f);
  x[33] = -0.0f;
  for (ScaleRule r : kRules) {
    const Out o = run_ref(x, 1, 64, r);
    EXPECT_EQ(o.scales[0], 0x00);
    for (uint8_t b : o.packed) EXPECT_EQ(b & 0x77, 0);
    std::vector<float> deq(64);
    mxfp4::dequantize(o.packed.data(), o.scales.data(), 1, 64, deq.data());
    for (float v : deq) EXPECT_EQ(v, 0.0f);
  }
}

TEST(Mxfp4Quantize, GoldenBlockUnderEachRule) {
  // One block: 0, 0.25, 0.5, ..., with amax 6.5 at element 31.
  std::vector<float> x(32);
  for (int i = 0; i < 31; ++i) x[size_t(i)] = 0.25f * float(i) * (i % 2 ? -1.0f : 1.0f) / 4.0f;
  x[31] = 6.5f;
  // OCP and compressed-tensors: s = 1: 6.5 saturates to 6 (code 7, high nibble of byte 15).
  for (ScaleRule r : {ScaleRule::Ocp, ScaleRule::CompressedTensors}) {
    const Out o = run_ref(x, 1, 32, r);
    EXPECT_EQ(o.scales[0], 127);
    EXPECT_EQ(o.packed[15] >> 4, 0x7);
  }
  // ModelOpt: s = 2: 6.5 / 2 = 3.25 -> 3 (code 5).
  const Out m = run_ref(x, 1, 32, ScaleRule::ModelOpt);
  EXPECT_EQ(m.scales[0], 128);
  EXPECT_EQ(m.packed[15] >> 4, 0x5);
  // Packing as NVFP4: element 0 low nibble, element 1 high. x[1] = -0.0625 / s=1 -> -0 (0x8).
  const Out o = run_ref(x, 1, 32, ScaleRule::CompressedTensors);
  EXPECT_EQ(o.packed[0], 0x80);
}

TEST(Mxfp4Quantize, NanBlockGetsNanScaleInfSaturates) {
  std::vector<float> x(64, 1.0f);
  x[3] = kNaN;
  x[40] = -kInf;
  std::vector<uint16_t> xb(64);
  for (size_t i = 0; i < 64; ++i) xb[i] = bf16::from_float(x[i]);
  for (ScaleRule r : kRules) {
    const Out o = run_ref(x, 1, 64, r);
    EXPECT_EQ(o.scales[0], 0xFF);
    for (int i = 0; i < 16; ++i) EXPECT_EQ(o.packed[size_t(i)], 0);
    EXPECT_EQ(o.scales[1], mxfp4::scale_code_ref(std::numeric_limits<float>::max(), r));
    EXPECT_EQ(o.packed[20] & 0xF, 0xF);  // -Inf -> -6
    Out f = o;
    mxfp4::quantize_bf16(xb.data(), 1, 64, f.packed.data(), f.scales.data(), r);
    EXPECT_EQ(f.packed, o.packed);
    EXPECT_EQ(f.scales, o.scales);
  }
}

TEST(Mxfp4Quantize, ParseRuleNames) {
  for (ScaleRule r : kRules) EXPECT_EQ(mxfp4::parse_scale_rule(mxfp4::scale_rule_name(r)), r);
  EXPECT_FALSE(mxfp4::parse_scale_rule("mse"));
}

}  // namespace
}  // namespace fp4c
