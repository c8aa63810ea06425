// MXFP4 W4A4 activation fake quantization (runtime::fake_quantize_mxfp4) against the formats'
// reference quantizer followed by dequantization, bit for bit, on random heavy-tailed rows (fresh seed
// each run), in place and not, with 1 and 2 threads; NaN blocks come out NaN.
#include "runtime/activation_quant.h"

#include <gtest/gtest.h>
#include <omp.h>

#include <bit>
#include <cmath>
#include <limits>
#include <random>
#include <vector>

#include "formats/mxfp4.h"
#include "quant/output_error.h"

namespace fp4c {
namespace {

std::vector<float> reference(const std::vector<float>& x, int64_t rows, int64_t cols) {
  std::vector<uint8_t> p(size_t(rows * cols / 2)), s(size_t(rows * cols / 32));
  mxfp4::quantize_f32_ref(x.data(), rows, cols, p.data(), s.data(), mxfp4::kDefaultRule);
  std::vector<float> out(x.size());
  mxfp4::dequantize(p.data(), s.data(), rows, cols, out.data());
  return out;
}

bool same_bits(const std::vector<float>& a, const std::vector<float>& b, size_t* where) {
  for (size_t i = 0; i < a.size(); ++i)
    if (std::bit_cast<uint32_t>(a[i]) != std::bit_cast<uint32_t>(b[i]) && !(std::isnan(a[i]) && std::isnan(b[i]))) {
      *where = i;
      return false;
    }
  return true;
}

TEST(FakeQuantizeMxfp4, EqualsReferenceBitForBit) {
  const uint32_t seed = std::random_device{}();
  SCOPED_TRACE(testing::Message() << "seed " << seed);
  std::mt19937_64 rng(seed);
  std::student_t_distribution<float> t(2.5f);
  std::uniform_real_distribution<float> e(-20.0f, 20.0f);
  for (int trial = 0; trial < 8; ++trial) {
    const int64_t rows = 1 + int64_t(rng() % 300), cols = 32 * (1 + int64_t(rng() % 10));
    std::vector<float> x(size_t(rows * cols));
    const float scale = std::exp2(e(rng));
    for (auto& v : x) v = t(rng) * scale;
    for (int k = 0; k < 32; ++k) x[size_t(k)] = 0.0f;                       // a zero block
    if (rows > 2) x[size_t(2 * cols + 3)] = std::numeric_limits<float>::quiet_NaN();  // a NaN block
    const auto ref = reference(x, rows, cols);
    for (int threads : {1, 2}) {
      omp_set_num_threads(threads);
      std::vector<float> out(x.size());
      runtime::fake_quantize_mxfp4(x.data(), rows, cols, out.data());
      size_t at = 0;
      EXPECT_TRUE(same_bits(out, ref, &at)) << "element " << at << ": " << out[at] << " vs " << ref[at];
      std::vector<float> in_place = x;
      runtime::fake_quantize_mxfp4(in_place.data(), rows, cols, in_place.data());
      EXPECT_TRUE(same_bits(in_place, ref, &at)) << "in place, element " << at;
      if (rows > 2) {
        for (int k = 0; k < 32; ++k) EXPECT_TRUE(std::isnan(out[size_t(2 * cols + k)]));
      }
    }
  }
}

// The per-Linear output error of `fp4c eval --per-layer` under MXFP4 W4A4: the candidate's input is
// fake-quantized to MXFP4; checked against the sums in double over a plain product.
TEST(FakeQuantizeMxfp4, LinearOutputErrorQuantizesTheCandidateInput) {
  const uint32_t seed = std::random_device{}();
  SCOPED_TRACE(testing::Message() << "seed " << seed);
  std::mt19937_64 rng(seed);
  std::normal_distribution<float> n(0.0f, 1.0f);
  const int64_t rows = 37, in = 96, out = 20;
  std::vector<float> x(size_t(rows * in)), w(size_t(out * in)), wc(size_t(out * in));
  for (auto& v : x) v = n(rng);
  for (size_t i = 0; i < w.size(); ++i) {
    w[i] = n(rng);
    wc[i] = w[i] + 0.01f * n(rng);
  }
  std::vector<float> xq(x.size());
  runtime::fake_quantize_mxfp4(x.data(), rows, in, xq.data());
  double se = 0, sr = 0;
  for (int64_t r = 0; r < rows; ++r)
    for (int64_t o = 0; o < out; ++o) {
      double a = 0, b = 0;
      for (int64_t k = 0; k < in; ++k) {
        a += double(x[size_t(r * in + k)]) * w[size_t(o * in + k)];
        b += double(xq[size_t(r * in + k)]) * wc[size_t(o * in + k)];
      }
      se += (b - a) * (b - a);
      sr += a * a;
    }
  const auto e = quant::linear_output_error(x.data(), rows, in, w.data(), wc.data(), out, std::nullopt, nullptr, true);
  EXPECT_NEAR(e.error_sq, se, 1e-4 * se);
  EXPECT_NEAR(e.reference_sq, sr, 1e-4 * sr);
  // Without input quantization the error is the weights' alone: smaller.
  const auto w_only = quant::linear_output_error(x.data(), rows, in, w.data(), wc.data(), out, std::nullopt);
  EXPECT_LT(w_only.error_sq, e.error_sq);
}

}  // namespace
}  // namespace fp4c
