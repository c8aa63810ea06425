// linear_output_error against a slow obvious double-precision reference on random data (fresh seeds,
// printed on failure): W4A16 and W4A4, with and without input channel scales, row counts across the
// chunk boundary; nvfp4_round_trip against the reference encoder; figures independent of threads.
#include <gtest/gtest.h>
#include <omp.h>

#include <cmath>
#include <random>

#include "formats/nvfp4.h"
#include "quant/output_error.h"

namespace fp4c::testing {
namespace {

std::vector<float> heavy(std::mt19937_64& rng, size_t n, float scale) {
  std::student_t_distribution<float> t(4.0f);
  std::vector<float> v(n);
  for (auto& x : v) x = scale * t(rng);
  return v;
}

// The candidate input, fake-quantized row by row with the reference encoder.
std::vector<float> candidate_input_ref(const std::vector<float>& x, int64_t rows, int64_t in,
                                       std::optional<float> gs, const float* x_scale) {
  std::vector<float> xc(x);
  if (x_scale)
    for (int64_t r = 0; r < rows; ++r)
      for (int64_t j = 0; j < in; ++j) xc[size_t(r * in + j)] = x[size_t(r * in + j)] * x_scale[j];
  if (gs) {
    std::vector<uint8_t> packed(size_t(in / 2)), scales(size_t(in / 16));
    for (int64_t r = 0; r < rows; ++r) {
      nvfp4::quantize_f32_ref(xc.data() + r * in, 1, in, *gs, packed.data(), scales.data());
      nvfp4::dequantize(packed.data(), scales.data(), 1, in, *gs, xc.data() + r * in);
    }
  }
  return xc;
}

quant::OutputError reference(const std::vector<float>& x, int64_t rows, int64_t in, const std::vector<float>& wr,
                              const std::vector<float>& wc, int64_t out, std::optional<float> gs,
                              const float* x_scale) {
  const auto xc = candidate_input_ref(x, rows, in, gs, x_scale);
  quant::OutputError e;
  for (int64_t r = 0; r < rows; ++r)
    for (int64_t o = 0; o < out; ++o) {
      double a = 0, b = 0;
      for (int64_t j = 0; j < in; ++j) {
        a += double(x[size_t(r * in + j)]) * wr[size_t(o * in + j)];
        b += double(xc[size_t(r * in + j)]) * wc[size_t(o * in + j)];
      }
      e.error_sq += (b - a) * (b - a);
      e.reference_sq += a * a;
    }
  return e;
}

TEST(OutputError, RelativeAndMerge) {
  quant::OutputError a{1, 4}, b{2, 4};
  EXPECT_DOUBLE_EQ(a.relative(), 0.25);
  a.merge(b);
  EXPECT_DOUBLE_EQ(a.error_sq, 3);
  EXPECT_DOUBLE_EQ(a.reference_sq, 8);
  EXPECT_EQ(quant::OutputError{}.relative(), 0.0);
  EXPECT_TRUE(std::isinf((quant::OutputError{1, 0}).relative()));
}

TEST(OutputError, MatchesAPlainDoubleComputation) {
  const uint64_t seed = std::random_device{}();
  SCOPED_TRACE("seed " + std::to_string(seed));
  std::mt19937_64 rng(seed);
  struct Case { int64_t rows, in, out; bool w4a4, scaled; };
  // 1100 rows cross the 1024-row chunk.
  const Case cases[] = {{1, 16, 1, false, false}, {37, 64, 24, true, false}, {1100, 64, 48, true, true},
                        {1100, 32, 16, false, true}, {40, 256, 512, true, true}};
  for (const Case& c : cases) {
    SCOPED_TRACE("rows " + std::to_string(c.rows) + " in " + std::to_string(c.in) + " out " + std::to_string(c.out) +
                 (c.w4a4 ? " w4a4" : " w4a16") + (c.scaled ? " scaled" : ""));
    const auto x = heavy(rng, size_t(c.rows * c.in), 1.0f);
    const auto wr = heavy(rng, size_t(c.out * c.in), 0.05f);
    const float G = nvfp4::global_scale(nvfp4::amax_f32(wr));
    const auto wc = quant::nvfp4_round_trip(wr.data(), c.out, c.in, G);
    std::vector<float> s;
    if (c.scaled) {
      std::uniform_real_distribution<float> u(0.25f, 4.0f);
      s.resize(size_t(c.in));
      for (auto& v : s) v = u(rng);
    }
    const std::optional<float> gs =
        c.w4a4 ? std::optional<float>(nvfp4::global_scale(nvfp4::amax_f32(x) * (c.scaled ? 4.0f : 1.0f))) : std::nullopt;
    const float* sp = c.scaled ? s.data() : nullptr;
    const auto want = reference(x, c.rows, c.in, wr, wc, c.out, gs, sp);
    const auto got = quant::linear_output_error(x.data(), c.rows, c.in, wr.data(), wc.data(), c.out, gs, sp);
    ASSERT_GT(want.error_sq, 0);
    EXPECT_NEAR(got.reference_sq, want.reference_sq, 1e-5 * want.reference_sq);
    EXPECT_NEAR(got.error_sq, want.error_sq, 1e-3 * want.error_sq);
    EXPECT_NEAR(got.relative(), want.relative(), 1e-3 * want.relative());
  }
}

// Several candidates on the same rows (auto's case): each figure matches the plain double computation and
// is, to the bit, what the candidate measured alone gives; 1100 rows cross the 1024-row chunk.
TEST(OutputError, BatchOfCandidatesEqualsEachAlone) {
  const uint64_t seed = std::random_device{}();
  SCOPED_TRACE("seed " + std::to_string(seed));
  std::mt19937_64 rng(seed);
  const int64_t rows = 1100, in = 64, out = 48;
  const auto x = heavy(rng, size_t(rows * in), 1.0f);
  const auto wr = heavy(rng, size_t(out * in), 0.05f);
  const float G = nvfp4::global_scale(nvfp4::amax_f32(wr));
  std::vector<std::vector<float>> cands;
  for (auto rule : {nvfp4::ScaleRule::Max, nvfp4::ScaleRule::Mse, nvfp4::ScaleRule::FourOverSix})
    cands.push_back(quant::nvfp4_round_trip(wr.data(), out, in, G, rule));
  cands.push_back(heavy(rng, size_t(out * in), 0.05f));   // an unrelated weight
  std::vector<const float*> ptrs;
  for (const auto& c : cands) ptrs.push_back(c.data());
  std::vector<float> s(static_cast<size_t>(in));
  std::uniform_real_distribution<float> u(0.25f, 4.0f);
  for (auto& v : s) v = u(rng);
  for (bool w4a4 : {false, true})
    for (const float* sp : {static_cast<const float*>(nullptr), static_cast<const float*>(s.data())}) {
      SCOPED_TRACE(std::string(w4a4 ? "w4a4" : "w4a16") + (sp ? " scaled" : ""));
      const std::optional<float> gs =
          w4a4 ? std::optional<float>(nvfp4::global_scale(4.0f * nvfp4::amax_f32(x))) : std::nullopt;
      const auto all = quant::linear_output_errors(x.data(), rows, in, wr.data(), ptrs, out, gs, sp);
      ASSERT_EQ(all.size(), cands.size());
      // In passes of 3 and 1 candidates (what an 8B model's Linears get): the same figures.
      const auto grouped = quant::linear_output_errors(x.data(), rows, in, wr.data(), ptrs, out, gs, sp, false, 3);
      ASSERT_EQ(grouped.size(), cands.size());
      for (size_t c = 0; c < cands.size(); ++c) {
        SCOPED_TRACE("candidate " + std::to_string(c));
        const auto alone = quant::linear_output_errors(x.data(), rows, in, wr.data(),
                                                        std::span<const float* const>(&ptrs[c], 1), out, gs, sp);
        EXPECT_EQ(all[c].error_sq, alone[0].error_sq);
        EXPECT_EQ(all[c].reference_sq, alone[0].reference_sq);
        EXPECT_EQ(grouped[c].error_sq, alone[0].error_sq);
        EXPECT_EQ(grouped[c].reference_sq, alone[0].reference_sq);
        const auto want = reference(x, rows, in, wr, cands[c], out, gs, sp);
        ASSERT_GT(want.error_sq, 0);
        EXPECT_NEAR(all[c].error_sq, want.error_sq, 1e-3 * want.error_sq);
        EXPECT_NEAR(all[c].reference_sq, want.reference_sq, 1e-5 * want.reference_sq);
      }
      EXPECT_NE(all[3].error_sq, all[0].error_sq);   // distinct figures: a mix-up of candidates shows
    }
  EXPECT_TRUE(quant::linear_output_errors(x.data(), rows, in, wr.data(), {}, out, std::nullopt).empty());
}

TEST(OutputError, SameWeightsAndInputGiveZero) {
  const uint64_t seed = std::random_device{}();
  SCOPED_TRACE("seed " + std::to_string(seed));
  std::mt19937_64 rng(seed);
  const auto x = heavy(rng, 300 * 64, 1.0f);
  const auto w = heavy(rng, 40 * 64, 0.05f);
  const auto e = quant::linear_output_error(x.data(), 300, 64, w.data(), w.data(), 40, std::nullopt);
  EXPECT_EQ(e.error_sq, 0.0);
  EXPECT_GT(e.reference_sq, 0.0);
  EXPECT_EQ(e.relative(), 0.0);
}

TEST(OutputError, IndependentOfThreadCount) {
  const uint64_t seed = std::random_device{}();
  SCOPED_TRACE("seed " + std::to_string(seed));
  std::mt19937_64 rng(seed);
  const int64_t rows = 1500, in = 128, out = 96;
  const auto x = heavy(rng, size_t(rows * in), 1.0f);
  const auto w = heavy(rng, size_t(out * in), 0.05f);
  const auto wc = quant::nvfp4_round_trip(w.data(), out, in, nvfp4::global_scale(nvfp4::amax_f32(w)));
  const float gs = nvfp4::global_scale(nvfp4::amax_f32(x));
  const int saved = omp_get_max_threads();
  omp_set_num_threads(1);
  const auto one = quant::linear_output_error(x.data(), rows, in, w.data(), wc.data(), out, gs);
  omp_set_num_threads(2);
  const auto two = quant::linear_output_error(x.data(), rows, in, w.data(), wc.data(), out, gs);
  omp_set_num_threads(saved);
  EXPECT_EQ(one.error_sq, two.error_sq);
  EXPECT_EQ(one.reference_sq, two.reference_sq);
}

TEST(OutputError, RoundTripEqualsTheReferenceEncoder) {
  const uint64_t seed = std::random_device{}();
  SCOPED_TRACE("seed " + std::to_string(seed));
  std::mt19937_64 rng(seed);
  const int64_t rows = 33, cols = 96;
  const auto w = heavy(rng, size_t(rows * cols), 0.05f);
  const float G = nvfp4::global_scale(nvfp4::amax_f32(w));
  std::vector<uint8_t> packed(size_t(rows * cols / 2)), scales(size_t(rows * cols / 16));
  nvfp4::quantize_f32_ref(w.data(), rows, cols, G, packed.data(), scales.data());
  std::vector<float> want(w.size());
  nvfp4::dequantize(packed.data(), scales.data(), rows, cols, G, want.data());
  const auto got = quant::nvfp4_round_trip(w.data(), rows, cols, G);
  ASSERT_EQ(got.size(), want.size());
  bool differs = false;
  for (size_t i = 0; i < want.size(); ++i) {
    ASSERT_EQ(got[i], want[i]) << i;
    differs |= got[i] != w[i];
  }
  EXPECT_TRUE(differs);
  // Another rule is what quantize_rows_with_rule gives.
  nvfp4::quantize_rows_with_rule(w.data(), rows, cols, G, nvfp4::ScaleRule::Mse, nullptr, packed.data(), scales.data());
  nvfp4::dequantize(packed.data(), scales.data(), rows, cols, G, want.data());
  EXPECT_EQ(quant::nvfp4_round_trip(w.data(), rows, cols, G, nvfp4::ScaleRule::Mse), want);
}

}  // namespace
}  // namespace fp4c::testing
