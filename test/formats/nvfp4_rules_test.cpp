// NVFP4 block-scale rules (nvfp4_rules.h): Max gives quantize_f32_ref's bytes; Mse, Weighted and
// FourOverSix are never worse than Max, block by block, on the quantity each minimizes; Mse strictly
// improves the aggregate SQNR on heavy-tailed data. Random data with a fresh seed each run (printed on
// failure), several shapes, outlier blocks and all-zero blocks; 1 and 3 OpenMP threads.
#include "formats/nvfp4_rules.h"

#include <gtest/gtest.h>
#include <omp.h>

#include <cmath>
#include <cstdint>
#include <iostream>
#include <limits>
#include <random>
#include <stdexcept>
#include <string>
#include <vector>

#include "formats/fp4.h"
#include "formats/fp8_e4m3.h"
#include "formats/nvfp4.h"

namespace fp4c::nvfp4 {
namespace {

constexpr ScaleRule kAllRules[] = {ScaleRule::Max, ScaleRule::Mse, ScaleRule::Weighted,
                                   ScaleRule::FourOverSix};

struct Quantized {
  std::vector<uint8_t> packed, scales;
  std::vector<float> deq;
  ErrorStats err;
};

Quantized run_rule(const std::vector<float>& x, int64_t rows, int64_t cols, float G, ScaleRule rule,
                   const float* w, ZeroScale zero = ZeroScale::CompressedTensors) {
  Quantized q;
  q.packed.assign(size_t(rows * cols / 2), 0xA5);
  q.scales.assign(size_t(rows * cols / kBlock), 0xA5);
  quantize_rows_with_rule(x.data(), rows, cols, G, rule, w, q.packed.data(), q.scales.data(), zero,
                          &q.err);
  q.deq.resize(size_t(rows * cols));
  dequantize(q.packed.data(), q.scales.data(), rows, cols, G, q.deq.data());
  return q;
}

// sum over a block of w_j (x_j - x'_j)^2 (w null: unweighted), as the rules compute it.
double block_error(const std::vector<float>& x, const std::vector<float>& deq, int64_t start,
                   const float* w) {
  double s = 0;
  for (int i = 0; i < kBlock; ++i) {
    const double e = double(x[size_t(start + i)]) - double(deq[size_t(start + i)]);
    s += w ? double(w[i]) * e * e : e * e;
  }
  return s;
}

// Heavy-tailed weights: Student-t (3 dof) times a per-row lognormal scale, with some outliers and
// some all-zero blocks.
std::vector<float> heavy_tailed(std::mt19937_64& rng, int64_t rows, int64_t cols) {
  std::student_t_distribution<float> t(3.0f);
  std::lognormal_distribution<float> row_scale(0.0f, 0.5f);
  std::uniform_real_distribution<float> u(0.0f, 1.0f);
  std::vector<float> x(size_t(rows * cols));
  for (int64_t r = 0; r < rows; ++r) {
    const float rs = 0.02f * row_scale(rng);
    for (int64_t c = 0; c < cols; ++c) x[size_t(r * cols + c)] = rs * t(rng);
    for (int64_t b = 0; b < cols / kBlock; ++b) {
      const float p = u(rng);
      float* xb = x.data() + r * cols + b * kBlock;
      if (p < 0.03f) {
        for (int i = 0; i < kBlock; ++i) xb[i] = 0.0f;  // all-zero block
      } else if (p < 0.10f) {
        xb[int(u(rng) * kBlock) % kBlock] *= 30.0f;  // one outlier
      }
    }
  }
  return x;
}

// Input channels' mean squares: lognormal, a few channels much larger (activation outliers).
std::vector<float> channel_weights(std::mt19937_64& rng, int64_t cols) {
  std::lognormal_distribution<float> ln(0.0f, 1.0f);
  std::uniform_real_distribution<float> u(0.0f, 1.0f);
  std::vector<float> w(static_cast<size_t>(cols));
  for (auto& v : w) v = ln(rng) * (u(rng) < 0.02f ? 100.0f : 1.0f);
  return w;
}

double weighted_sqnr_db(const std::vector<float>& x, const std::vector<float>& deq,
                        const std::vector<float>& w, int64_t cols) {
  double num = 0, den = 0;
  for (size_t i = 0; i < x.size(); ++i) {
    const double wi = w[i % size_t(cols)], e = double(x[i]) - double(deq[i]);
    num += wi * double(x[i]) * double(x[i]);
    den += wi * e * e;
  }
  return 10.0 * std::log10(num / den);
}

uint64_t fresh_seed() { return std::random_device{}() ^ (uint64_t(std::random_device{}()) << 32); }

TEST(ScaleRuleNames, RoundTrip) {
  for (ScaleRule r : kAllRules) {
    auto p = parse_scale_rule(scale_rule_name(r));
    ASSERT_TRUE(p.has_value()) << scale_rule_name(r);
    EXPECT_EQ(*p, r);
  }
  EXPECT_STREQ(scale_rule_name(ScaleRule::FourOverSix), "4over6");
  EXPECT_STREQ(scale_rule_name(ScaleRule::Weighted), "weighted");
  EXPECT_FALSE(parse_scale_rule("MSE").has_value());
  EXPECT_FALSE(parse_scale_rule("").has_value());
  EXPECT_FALSE(parse_scale_rule("four_over_six").has_value());
}

TEST(ScaleRules, WeightedNeedsWeights) {
  std::vector<float> x(16, 1.0f);
  std::vector<uint8_t> p(8), s(1);
  EXPECT_THROW(quantize_rows_with_rule(x.data(), 1, 16, 448.0f, ScaleRule::Weighted, nullptr,
                                       p.data(), s.data()),
               std::invalid_argument);
  EXPECT_NO_THROW(quantize_rows_with_rule(x.data(), 1, 16, 448.0f, ScaleRule::Mse, nullptr,
                                          p.data(), s.data()));
}

// The worked example of NVFP4.md §3 under the Max rule.
TEST(ScaleRules, MaxGoldenVector) {
  const std::vector<float> x = {0, .25, .5, .75, 1, 1.25, 1.5, 1.75, 2, 2.5, 3, 3.5, 4, 5, 6, -6,
                                -3, -.1, .3, .6, .9, 1.1, 1.3, 1.8, -2.2, 2.7, -1.5, 0, .2, -.2, 1, 2};
  Quantized q = run_rule(x, 1, 32, global_scale(6.0f), ScaleRule::Max, nullptr);
  EXPECT_EQ(q.scales, (std::vector<uint8_t>{0x7E, 0x76}));
  EXPECT_EQ(q.packed, (std::vector<uint8_t>{0x00, 0x21, 0x22, 0x43, 0x44, 0x65, 0x66, 0xF7, 0x8F,
                                            0x21, 0x44, 0x65, 0x7E, 0x0D, 0x91, 0x64}));
}

TEST(ScaleRules, NeverWorseThanMaxAndMaxIsReference) {
  const uint64_t seed = fresh_seed();
  SCOPED_TRACE("seed " + std::to_string(seed));
  std::mt19937_64 rng(seed);
  struct Shape { int64_t rows, cols; };
  const Shape shapes[] = {{1, 16}, {3, 48}, {17, 128}, {64, 512}, {256, 1024}};
  double gain_db[4] = {0, 0, 0, 0};
  double weighted_gain_db = 0;
  int n_shapes = 0;
  for (const Shape& sh : shapes) {
    for (ZeroScale zero : {ZeroScale::CompressedTensors, ZeroScale::ModelOpt}) {
      SCOPED_TRACE("shape " + std::to_string(sh.rows) + "x" + std::to_string(sh.cols) +
                   (zero == ZeroScale::ModelOpt ? " modelopt" : " compressed-tensors"));
      const std::vector<float> x = heavy_tailed(rng, sh.rows, sh.cols);
      const std::vector<float> w = channel_weights(rng, sh.cols);
      const float G = global_scale(amax_f32(x));

      // Max == the reference, byte for byte, and the same error figures.
      std::vector<uint8_t> ref_p(size_t(sh.rows * sh.cols / 2)), ref_s(size_t(sh.rows * sh.cols / 16));
      ErrorStats ref_err;
      quantize_f32_ref(x.data(), sh.rows, sh.cols, G, ref_p.data(), ref_s.data(), zero, &ref_err);
      Quantized qr[4];
      for (ScaleRule r : kAllRules) qr[int(r)] = run_rule(x, sh.rows, sh.cols, G, r, w.data(), zero);
      const Quantized& mx = qr[int(ScaleRule::Max)];
      ASSERT_EQ(mx.packed, ref_p);
      ASSERT_EQ(mx.scales, ref_s);
      EXPECT_EQ(mx.err.sum_sq_err, ref_err.sum_sq_err);
      EXPECT_EQ(mx.err.sum_sq_ref, ref_err.sum_sq_ref);
      EXPECT_EQ(mx.err.max_abs_err, ref_err.max_abs_err);
      EXPECT_EQ(mx.err.count, ref_err.count);

      for (ScaleRule r : kAllRules) {
        const Quantized& q = qr[int(r)];
        // The reported error equals the dequantized one.
        double sse = 0;
        for (size_t i = 0; i < x.size(); ++i) {
          const double e = double(x[i]) - double(q.deq[i]);
          sse += e * e;
        }
        EXPECT_NEAR(q.err.sum_sq_err, sse, 1e-9 * (sse + 1e-30)) << scale_rule_name(r);
      }

      // Block by block: never worse than Max on the quantity minimized; the scale stays in the window.
      for (int64_t r = 0; r < sh.rows; ++r) {
        for (int64_t b = 0; b < sh.cols / kBlock; ++b) {
          const int64_t start = r * sh.cols + b * kBlock;
          const size_t bi = size_t(start / kBlock);
          const float* wb = w.data() + b * kBlock;
          SCOPED_TRACE("row " + std::to_string(r) + " block " + std::to_string(b));
          const double max_sse = block_error(x, mx.deq, start, nullptr);
          const double max_wse = block_error(x, mx.deq, start, wb);
          EXPECT_LE(block_error(x, qr[int(ScaleRule::Mse)].deq, start, nullptr), max_sse);
          EXPECT_LE(block_error(x, qr[int(ScaleRule::Weighted)].deq, start, wb), max_wse);
          EXPECT_LE(block_error(x, qr[int(ScaleRule::FourOverSix)].deq, start, nullptr), max_sse);
          const int m = mx.scales[bi];
          for (ScaleRule rule : {ScaleRule::Mse, ScaleRule::Weighted}) {
            const int c = qr[int(rule)].scales[bi];
            EXPECT_GE(c, std::max(1, m - kSearchBelow)) << scale_rule_name(rule);
            EXPECT_LE(c, std::min(0x7E, m + kSearchAbove)) << scale_rule_name(rule);
          }
          bool all_zero = true;
          for (int i = 0; i < kBlock; ++i) all_zero = all_zero && x[size_t(start + i)] == 0.0f;
          if (all_zero) {  // every rule keeps the zero-scale byte and zero codes
            for (ScaleRule rule : kAllRules) {
              EXPECT_EQ(qr[int(rule)].scales[bi], zero == ZeroScale::ModelOpt ? 0x38 : 0x20);
              for (int i = 0; i < kBlock / 2; ++i) {
                EXPECT_EQ(qr[int(rule)].packed[size_t(start / 2 + i)], 0);
              }
            }
          }
        }
      }

      // An all-zero tensor (a 1x16 shape whose only block drew zero) has no SQNR: the per-block
      // checks above covered it.
      if (mx.err.sum_sq_ref == 0) continue;

      // Aggregate: Mse strictly better than Max once there are enough blocks (a lone block may have
      // nothing better than its Max scale); the others no worse. Weighted is scored by its weighted
      // SQNR, 10 log10(sum w x^2 / sum w (x - x')^2).
      const double max_db = mx.err.sqnr_db();
      const double max_wdb = weighted_sqnr_db(x, mx.deq, w, sh.cols);
      if (sh.rows * sh.cols / kBlock >= 64) {
        EXPECT_GT(qr[int(ScaleRule::Mse)].err.sqnr_db(), max_db);
      }
      EXPECT_GE(qr[int(ScaleRule::Mse)].err.sqnr_db(), max_db);
      EXPECT_GE(qr[int(ScaleRule::FourOverSix)].err.sqnr_db(), max_db);
      const double wdb = weighted_sqnr_db(x, qr[int(ScaleRule::Weighted)].deq, w, sh.cols);
      EXPECT_GE(wdb, max_wdb);
      for (ScaleRule rule : kAllRules) gain_db[int(rule)] += qr[int(rule)].err.sqnr_db() - max_db;
      weighted_gain_db += wdb - max_wdb;
      ++n_shapes;
    }
  }
  std::cout << "average SQNR gain over max (dB), heavy-tailed data, " << n_shapes << " cases:";
  for (ScaleRule rule : kAllRules)
    std::cout << " " << scale_rule_name(rule) << " " << gain_db[int(rule)] / n_shapes;
  std::cout << "; weighted SQNR gain of weighted " << weighted_gain_db / n_shapes << "\n";
}

// Outlier blocks: one huge element among small ones; Mse may pick a smaller scale and clamp less
// precisely, but never does worse.
TEST(ScaleRules, OutlierBlocks) {
  const uint64_t seed = fresh_seed();
  SCOPED_TRACE("seed " + std::to_string(seed));
  std::mt19937_64 rng(seed);
  std::normal_distribution<float> n(0.0f, 1.0f);
  const int64_t rows = 32, cols = 64;
  std::vector<float> x(size_t(rows * cols));
  for (auto& v : x) v = n(rng);
  for (int64_t r = 0; r < rows; ++r) x[size_t(r * cols + (r % cols))] = 50.0f * (r % 2 ? -1 : 1);
  std::vector<float> w(size_t(cols), 1.0f);
  const float G = global_scale(amax_f32(x));
  const Quantized mx = run_rule(x, rows, cols, G, ScaleRule::Max, nullptr);
  for (ScaleRule rule : {ScaleRule::Mse, ScaleRule::Weighted, ScaleRule::FourOverSix}) {
    const Quantized q = run_rule(x, rows, cols, G, rule, w.data());
    for (int64_t s = 0; s < rows * cols; s += kBlock) {
      EXPECT_LE(block_error(x, q.deq, s, nullptr), block_error(x, mx.deq, s, nullptr))
          << scale_rule_name(rule) << " block at " << s;
    }
  }
  // With unit weights, Weighted is Mse.
  const Quantized a = run_rule(x, rows, cols, G, ScaleRule::Mse, nullptr);
  const Quantized b = run_rule(x, rows, cols, G, ScaleRule::Weighted, w.data());
  EXPECT_EQ(a.packed, b.packed);
  EXPECT_EQ(a.scales, b.scales);
}

// A NaN block keeps the reference's bytes (scale 0x7F, codes 0) under every rule; Inf clamps.
TEST(ScaleRules, NonFiniteBlocksFollowReference) {
  std::vector<float> x(64, 0.5f);
  x[3] = std::numeric_limits<float>::quiet_NaN();
  x[20] = std::numeric_limits<float>::infinity();
  for (int i = 32; i < 48; ++i) x[size_t(i)] = 0.0f;
  std::vector<float> w(64, 1.0f);
  std::vector<uint8_t> ref_p(32), ref_s(4);
  quantize_f32_ref(x.data(), 1, 64, 448.0f, ref_p.data(), ref_s.data());
  for (ScaleRule rule : kAllRules) {
    const Quantized q = run_rule(x, 1, 64, 448.0f, rule, w.data());
    EXPECT_EQ(q.scales[0], ref_s[0]) << scale_rule_name(rule);
    EXPECT_EQ(q.scales[0], 0x7F);
    for (int i = 0; i < 8; ++i) EXPECT_EQ(q.packed[size_t(i)], ref_p[size_t(i)]);
    EXPECT_EQ(q.scales[2], ref_s[2]);  // all-zero block
  }
}

// Tiny blocks under a large G (the Max scale rounds to FP8 zero): the search may go below the zero
// code, and is still never worse.
TEST(ScaleRules, TinyBlocks) {
  std::vector<float> x(32);
  for (int i = 0; i < 32; ++i) x[size_t(i)] = (i < 16 ? 1e-6f : 1.0f) * float(i % 7 - 3);
  const float G = global_scale(1000.0f);  // far larger amax elsewhere in the tensor
  const Quantized mx = run_rule(x, 1, 32, G, ScaleRule::Max, nullptr);
  const Quantized ms = run_rule(x, 1, 32, G, ScaleRule::Mse, nullptr);
  EXPECT_EQ(mx.scales[0], 0x20);
  EXPECT_LE(block_error(x, ms.deq, 0, nullptr), block_error(x, mx.deq, 0, nullptr));
  EXPECT_LE(block_error(x, ms.deq, 16, nullptr), block_error(x, mx.deq, 16, nullptr));
}

TEST(ScaleRules, ThreadCountDoesNotMatter) {
  const uint64_t seed = fresh_seed();
  SCOPED_TRACE("seed " + std::to_string(seed));
  std::mt19937_64 rng(seed);
  const int64_t rows = 97, cols = 256;
  const std::vector<float> x = heavy_tailed(rng, rows, cols);
  const std::vector<float> w = channel_weights(rng, cols);
  const float G = global_scale(amax_f32(x));
  const int saved = omp_get_max_threads();
  for (ScaleRule rule : kAllRules) {
    omp_set_num_threads(1);
    const Quantized a = run_rule(x, rows, cols, G, rule, w.data());
    omp_set_num_threads(3);
    const Quantized b = run_rule(x, rows, cols, G, rule, w.data());
    EXPECT_EQ(a.packed, b.packed) << scale_rule_name(rule);
    EXPECT_EQ(a.scales, b.scales) << scale_rule_name(rule);
    EXPECT_EQ(a.err.sum_sq_err, b.err.sum_sq_err) << scale_rule_name(rule);
  }
  omp_set_num_threads(saved);
}

}  // namespace
}  // namespace fp4c::nvfp4

namespace fp4c::nvfp4 {
namespace {

// The search written the slow obvious way (fp4::encode per element, every candidate in order, strictly
// smaller error wins, the Max code first): the rules' bytes equal it exactly, on heavy-tailed data and
// on values placed exactly on rounding ties of some candidate's grid.
void reference_rule(const float* x, int64_t cols, float G, ScaleRule rule, const float* weights, uint8_t* packed,
                    uint8_t* scales) {
  auto code_for = [](float wanted, bool* was_zero) {
    uint8_t c = fp8_e4m3::encode(std::isnan(wanted) ? wanted : std::clamp(wanted, -448.0f, 448.0f));
    *was_zero = (c & 0x7F) == 0;
    return *was_zero ? uint8_t(0x20) : c;
  };
  auto encode = [&](const float* xb, uint8_t s, const float* w, uint8_t* q) {
    const float d = fp8_e4m3::decode(s) / G;
    double sum = 0;
    for (int i = 0; i < kBlock; ++i) {
      const float y = xb[i] / d;
      q[i] = fp4::encode(std::isnan(y) ? y : std::clamp(y, -6.0f, 6.0f));
      const double e = double(xb[i]) - double(fp4::decode(q[i]) * d);
      sum += w ? double(w[i]) * e * e : e * e;
    }
    return sum;
  };
  for (int64_t b = 0; b < cols / kBlock; ++b) {
    const float* xb = x + b * kBlock;
    float a = 0;
    for (int i = 0; i < kBlock; ++i) a = std::isnan(xb[i]) || std::fabs(xb[i]) > a ? std::fabs(xb[i]) : a;
    bool zero = false;
    const uint8_t m = code_for(G * (a / 6.0f), &zero);
    const float* w = rule == ScaleRule::Weighted ? weights + b * kBlock : nullptr;
    uint8_t best_q[kBlock], q[kBlock];
    uint8_t best_s = m;
    double best = encode(xb, m, w, best_q);
    std::vector<int> cands;
    if (rule == ScaleRule::FourOverSix) {
      bool z = false;
      cands.push_back(code_for(G * (a / 4.0f), &z));
    } else if (rule != ScaleRule::Max) {
      for (int c = zero ? 1 : std::max(1, int(m) - kSearchBelow); c <= std::min(0x7E, int(m) + kSearchAbove); ++c)
        cands.push_back(c);
    }
    if (!(a > 0) || std::isnan(a)) cands.clear();
    for (int c : cands) {
      if (c == best_s) continue;
      const double e = encode(xb, uint8_t(c), w, q);
      if (e < best) {
        best = e;
        best_s = uint8_t(c);
        std::copy(q, q + kBlock, best_q);
      }
    }
    scales[b] = best_s;
    for (int i = 0; i < kBlock; i += 2) packed[(b * kBlock + i) / 2] = fp4::pack(best_q[i], best_q[i + 1]);
  }
}

TEST(ScaleRules, EqualTheSlowObviousSearchByteForByte) {
  const uint64_t seed = std::random_device{}();
  SCOPED_TRACE("seed " + std::to_string(seed));
  std::mt19937_64 rng(seed);
  std::uniform_real_distribution<float> u(0.5f, 2.0f);
  for (int trial = 0; trial < 6; ++trial) {
    const int64_t rows = 1 + int64_t(rng() % 40), cols = kBlock * (1 + int64_t(rng() % 24));
    std::vector<float> x = heavy_tailed(rng, rows, cols);
    const float G = 448.0f * 6.0f / (1.0f + float(rng() % 1000));
    // Some elements exactly on a tie of a candidate's grid: (k + 1/2)-steps of the FP4 values times s / G.
    for (int64_t i = 0; i < rows * cols; i += 7) {
      const uint8_t s = uint8_t(0x28 + rng() % 40);
      const float d = fp8_e4m3::decode(s) / G;
      const float ties[] = {0.25f, 0.75f, 1.25f, 1.75f, 2.5f, 3.5f, 5.0f};
      x[size_t(i)] = ties[rng() % 7] * d * ((rng() & 1) ? -1.0f : 1.0f);
    }
    std::vector<float> w(static_cast<size_t>(cols));
    for (auto& v : w) v = u(rng);
    for (ScaleRule rule : kAllRules) {
      SCOPED_TRACE(std::string(scale_rule_name(rule)) + " " + std::to_string(rows) + "x" + std::to_string(cols));
      std::vector<uint8_t> p(size_t(rows * cols / 2)), s(size_t(rows * cols / kBlock));
      std::vector<uint8_t> rp(p.size()), rs(s.size());
      quantize_rows_with_rule(x.data(), rows, cols, G, rule, w.data(), p.data(), s.data(), ZeroScale::CompressedTensors,
                              nullptr);
      for (int64_t r = 0; r < rows; ++r)
        reference_rule(x.data() + r * cols, cols, G, rule, w.data(), rp.data() + r * cols / 2,
                       rs.data() + r * cols / kBlock);
      ASSERT_EQ(s, rs);
      ASSERT_EQ(p, rp);
    }
  }
}

}  // namespace
}  // namespace fp4c::nvfp4
