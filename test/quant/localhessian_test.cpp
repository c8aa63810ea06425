// Local-Hessian NVFP4 block scales (passes/localhessian.h): equal to a slow reference search written
// here, never worse than the Max rule on sum over blocks of e^T H_b e (block by block), the Mse rule's
// bytes when H = I, the Max rule's bytes for NaN and all-zero blocks, the same bytes at any thread count.
// Random data with a fresh seed each run (printed on failure).
#include "quant/localhessian.h"

#include <gtest/gtest.h>
#include <omp.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <limits>
#include <random>
#include <stdexcept>
#include <string>
#include <vector>

#include "formats/fp4.h"
#include "formats/fp8_e4m3.h"
#include "formats/nvfp4.h"
#include "formats/nvfp4_rules.h"

namespace fp4c::quant {
namespace {

using nvfp4::ErrorStats;
using nvfp4::kBlock;
using nvfp4::ZeroScale;

uint64_t fresh_seed() { return std::random_device{}() ^ (uint64_t(std::random_device{}()) << 32); }

// Heavy-tailed weights with outliers, all-zero blocks and some tiny blocks.
std::vector<float> random_weights(std::mt19937_64& rng, int64_t rows, int64_t cols) {
  std::student_t_distribution<float> t(3.0f);
  std::lognormal_distribution<float> row_scale(0.0f, 0.5f);
  std::uniform_real_distribution<float> u(0.0f, 1.0f);
  std::vector<float> w(static_cast<size_t>(rows * cols));
  for (int64_t r = 0; r < rows; ++r) {
    const float rs = 0.02f * row_scale(rng);
    for (int64_t c = 0; c < cols; ++c) w[size_t(r * cols + c)] = rs * t(rng);
    for (int64_t b = 0; b < cols / kBlock; ++b) {
      float* wb = w.data() + r * cols + b * kBlock;
      const float p = u(rng);
      if (p < 0.03f) {
        std::fill(wb, wb + kBlock, 0.0f);
      } else if (p < 0.05f) {
        for (int i = 0; i < kBlock; ++i) wb[i] *= 1e-6f;  // tiny: the Max scale may round to zero
      } else if (p < 0.12f) {
        wb[int(u(rng) * kBlock) % kBlock] *= 30.0f;
      }
    }
  }
  return w;
}

// H = X^T X / n from correlated, heavy-tailed inputs with outlier channels.
std::vector<double> random_hessian(std::mt19937_64& rng, int64_t cols, int64_t n) {
  std::student_t_distribution<double> t(4.0);
  std::normal_distribution<double> g(0.0, 1.0);
  std::uniform_real_distribution<double> u(0.0, 1.0);
  const int factors = 6;
  std::vector<double> load(static_cast<size_t>(factors * cols)), chan(static_cast<size_t>(cols));
  for (double& v : load) v = g(rng);
  for (double& c : chan) c = u(rng) < 0.03 ? 10.0 + 30.0 * u(rng) : 0.5 + u(rng);
  std::vector<double> h(static_cast<size_t>(cols * cols), 0.0), x(static_cast<size_t>(cols)), f(factors);
  for (int64_t s = 0; s < n; ++s) {
    for (double& v : f) v = t(rng);
    for (int64_t c = 0; c < cols; ++c) {
      double v = t(rng);
      for (int k = 0; k < factors; ++k) v += 0.5 * f[size_t(k)] * load[size_t(k * cols + c)];
      x[size_t(c)] = v * chan[size_t(c)];
    }
    for (int64_t i = 0; i < cols; ++i) {
      for (int64_t j = 0; j < cols; ++j) h[size_t(i * cols + j)] += x[size_t(i)] * x[size_t(j)];
    }
  }
  for (double& v : h) v /= double(n);
  return h;
}

struct Quantized {
  std::vector<uint8_t> packed, scales;
  std::vector<float> deq;
  ErrorStats err;
};

Quantized run_lh(const std::vector<float>& w, int64_t rows, int64_t cols, float G, const std::vector<double>& h,
                 ZeroScale zero = ZeroScale::CompressedTensors) {
  Quantized q;
  q.packed.assign(size_t(rows * cols / 2), 0xA5);
  q.scales.assign(size_t(rows * cols / kBlock), 0xA5);
  quantize_rows_localhessian(w.data(), rows, cols, G, h.data(), q.packed.data(), q.scales.data(), zero, &q.err);
  q.deq.resize(size_t(rows * cols));
  nvfp4::dequantize(q.packed.data(), q.scales.data(), rows, cols, G, q.deq.data());
  return q;
}

Quantized run_rule(const std::vector<float>& w, int64_t rows, int64_t cols, float G, nvfp4::ScaleRule rule,
                   ZeroScale zero = ZeroScale::CompressedTensors) {
  Quantized q;
  q.packed.assign(size_t(rows * cols / 2), 0xA5);
  q.scales.assign(size_t(rows * cols / kBlock), 0xA5);
  nvfp4::quantize_rows_with_rule(w.data(), rows, cols, G, rule, nullptr, q.packed.data(), q.scales.data(), zero,
                                 &q.err);
  q.deq.resize(size_t(rows * cols));
  nvfp4::dequantize(q.packed.data(), q.scales.data(), rows, cols, G, q.deq.data());
  return q;
}

// e^T H_b e of block (r, b) for dequantized values deq: t = H_b e, then sum e_i t_i.
double block_error(const std::vector<float>& w, const std::vector<float>& deq, const std::vector<double>& h,
                   int64_t cols, int64_t r, int64_t b) {
  double e[kBlock];
  for (int i = 0; i < kBlock; ++i) {
    e[i] = double(w[size_t(r * cols + b * kBlock + i)]) - double(deq[size_t(r * cols + b * kBlock + i)]);
  }
  double total = 0;
  for (int i = 0; i < kBlock; ++i) {
    double t = 0;
    for (int j = 0; j < kBlock; ++j) t += h[size_t((b * kBlock + i) * cols + b * kBlock + j)] * e[j];
    total += e[i] * t;
  }
  return total;
}

// Full output error sum_r d_r^T H d_r (cross-block terms included).
double output_error(const std::vector<float>& w, const std::vector<float>& deq, const std::vector<double>& h,
                    int64_t rows, int64_t cols) {
  double total = 0;
  std::vector<double> d(static_cast<size_t>(cols));
  for (int64_t r = 0; r < rows; ++r) {
    for (int64_t c = 0; c < cols; ++c) d[size_t(c)] = double(deq[size_t(r * cols + c)]) - double(w[size_t(r * cols + c)]);
    for (int64_t i = 0; i < cols; ++i) {
      double s = 0;
      for (int64_t j = 0; j < cols; ++j) s += h[size_t(i * cols + j)] * d[size_t(j)];
      total += d[size_t(i)] * s;
    }
  }
  return total;
}

// The slow reference: every candidate of the window encoded with fp4::encode and scored by
// dequantizing and evaluating e^T H_b e, strictly-better replacement, Max code first.
Quantized slow_reference(const std::vector<float>& w, int64_t rows, int64_t cols, float G,
                         const std::vector<double>& h, ZeroScale zero) {
  const uint8_t zc = zero == ZeroScale::ModelOpt ? 0x38 : 0x20;
  Quantized out;
  out.packed.assign(size_t(rows * cols / 2), 0);
  out.scales.assign(size_t(rows * cols / kBlock), 0);
  std::vector<uint8_t> codes(static_cast<size_t>(rows * cols));
  for (int64_t r = 0; r < rows; ++r) {
    for (int64_t b = 0; b < cols / kBlock; ++b) {
      const float* x = w.data() + r * cols + b * kBlock;
      float a = 0;
      bool has_nan = false;
      for (int i = 0; i < kBlock; ++i) {
        has_nan |= std::isnan(x[i]);
        a = std::max(a, std::fabs(x[i]));
      }
      uint8_t m = fp8_e4m3::encode(std::min(G * (a / 6.0f), 448.0f));
      const bool was_zero = (m & 0x7F) == 0;
      if (was_zero) m = zc;
      auto encode = [&](uint8_t s, uint8_t* q) {
        const float d = fp8_e4m3::decode(s) / G;
        for (int i = 0; i < kBlock; ++i) q[i] = fp4::encode(std::clamp(x[i] / d, -6.0f, 6.0f));
      };
      auto score = [&](uint8_t s, const uint8_t* q) {
        const float d = fp8_e4m3::decode(s) / G;
        double e[kBlock];
        for (int i = 0; i < kBlock; ++i) e[i] = double(x[i]) - double(fp4::decode(q[i]) * d);
        double total = 0;
        for (int i = 0; i < kBlock; ++i) {
          double t = 0;
          for (int j = 0; j < kBlock; ++j) t += h[size_t((b * kBlock + i) * cols + b * kBlock + j)] * e[j];
          total += e[i] * t;
        }
        return total;
      };
      uint8_t best_q[kBlock], q[kBlock];
      uint8_t best_s = m;
      if (has_nan) {
        best_s = m;
        for (uint8_t& c : best_q) c = 0;
      } else {
        encode(m, best_q);
        double best = score(m, best_q);
        if (a > 0) {
          const int lo = was_zero ? 1 : std::max(1, int(m) - nvfp4::kSearchBelow);
          for (int c = lo; c <= std::min(0x7E, int(m) + nvfp4::kSearchAbove); ++c) {
            if (c == m) continue;
            encode(uint8_t(c), q);
            const double e = score(uint8_t(c), q);
            if (e < best) {
              best = e;
              best_s = uint8_t(c);
              std::copy(q, q + kBlock, best_q);
            }
          }
        }
      }
      out.scales[size_t(r * cols / kBlock + b)] = best_s;
      for (int i = 0; i < kBlock; ++i) codes[size_t(r * cols + b * kBlock + i)] = best_q[i];
    }
  }
  for (int64_t i = 0; i < rows * cols; i += 2) out.packed[size_t(i / 2)] = fp4::pack(codes[size_t(i)], codes[size_t(i + 1)]);
  return out;
}

TEST(LocalHessian, EqualsSlowReference) {
  const uint64_t seed = fresh_seed();
  SCOPED_TRACE("seed " + std::to_string(seed));
  std::mt19937_64 rng(seed);
  for (auto [rows, cols] : {std::pair<int64_t, int64_t>{1, 16}, {13, 64}, {40, 208}}) {
    const std::vector<float> w = random_weights(rng, rows, cols);
    const std::vector<double> h = random_hessian(rng, cols, 2 * cols);
    const float G = nvfp4::global_scale(nvfp4::amax_f32(w));
    for (ZeroScale zero : {ZeroScale::CompressedTensors, ZeroScale::ModelOpt}) {
      SCOPED_TRACE(std::to_string(rows) + "x" + std::to_string(cols));
      const Quantized fast = run_lh(w, rows, cols, G, h, zero);
      const Quantized ref = slow_reference(w, rows, cols, G, h, zero);
      EXPECT_EQ(fast.packed, ref.packed);
      EXPECT_EQ(fast.scales, ref.scales);
      // The error figures are quantize_f32_ref's, computed on the chosen bytes.
      ErrorStats e;
      for (int64_t i = 0; i < rows * cols; ++i) {
        const double d = double(w[size_t(i)]) - double(fast.deq[size_t(i)]);
        e.sum_sq_err += d * d;
        e.sum_sq_ref += double(w[size_t(i)]) * double(w[size_t(i)]);
      }
      EXPECT_NEAR(fast.err.sum_sq_err, e.sum_sq_err, 1e-12 * e.sum_sq_err);
      EXPECT_NEAR(fast.err.sum_sq_ref, e.sum_sq_ref, 1e-12 * e.sum_sq_ref);
      EXPECT_EQ(fast.err.count, rows * cols);
      // The one-block entry point gives the same choice.
      const uint8_t zc = zero == ZeroScale::ModelOpt ? 0x38 : 0x20;
      for (int64_t r = 0; r < rows; ++r) {
        for (int64_t b = 0; b < cols / kBlock; ++b) {
          double hb[kBlock * kBlock];
          for (int i = 0; i < kBlock; ++i) {
            for (int j = 0; j < kBlock; ++j) hb[i * kBlock + j] = h[size_t((b * kBlock + i) * cols + b * kBlock + j)];
          }
          uint8_t q[kBlock];
          ASSERT_EQ(localhessian_block(w.data() + r * cols + b * kBlock, G, hb, zc, q),
                    fast.scales[size_t(r * cols / kBlock + b)]);
          for (int i = 0; i < kBlock; i += 2) {
            ASSERT_EQ(fp4::pack(q[i], q[i + 1]), fast.packed[size_t((r * cols + b * kBlock + i) / 2)]);
          }
        }
      }
    }
  }
}

TEST(LocalHessian, NeverWorseThanMaxOnWhatItMinimizes) {
  const uint64_t seed = fresh_seed();
  SCOPED_TRACE("seed " + std::to_string(seed));
  std::mt19937_64 rng(seed);
  for (auto [rows, cols] : {std::pair<int64_t, int64_t>{64, 128}, {96, 256}, {32, 512}}) {
    SCOPED_TRACE(std::to_string(rows) + "x" + std::to_string(cols));
    const std::vector<float> w = random_weights(rng, rows, cols);
    const std::vector<double> h = random_hessian(rng, cols, 2 * cols);
    const float G = nvfp4::global_scale(nvfp4::amax_f32(w));
    const Quantized lh = run_lh(w, rows, cols, G, h);
    const Quantized mx = run_rule(w, rows, cols, G, nvfp4::ScaleRule::Max);
    const Quantized mse = run_rule(w, rows, cols, G, nvfp4::ScaleRule::Mse);
    double sum_lh = 0, sum_max = 0, sum_mse = 0;
    for (int64_t r = 0; r < rows; ++r) {
      for (int64_t b = 0; b < cols / kBlock; ++b) {
        const double el = block_error(w, lh.deq, h, cols, r, b), em = block_error(w, mx.deq, h, cols, r, b);
        ASSERT_LE(el, em) << "block " << r << ", " << b;
        sum_lh += el;
        sum_max += em;
        sum_mse += block_error(w, mse.deq, h, cols, r, b);
      }
    }
    const double out_lh = output_error(w, lh.deq, h, rows, cols), out_max = output_error(w, mx.deq, h, rows, cols),
                 out_mse = output_error(w, mse.deq, h, rows, cols);
    std::printf("[ localhessian ] %lldx%lld: sum e^T H_b e local-Hessian / max = %.4f (mse / max %.4f); "
                "output error (all of H) local-Hessian / max = %.4f (mse / max %.4f)\n",
                (long long)rows, (long long)cols, sum_lh / sum_max, sum_mse / sum_max, out_lh / out_max,
                out_mse / out_max);
    EXPECT_LT(sum_lh, sum_max);
    EXPECT_LE(sum_lh, sum_mse);
  }
}

TEST(LocalHessian, IdentityHessianIsTheMseRule) {
  const uint64_t seed = fresh_seed();
  SCOPED_TRACE("seed " + std::to_string(seed));
  std::mt19937_64 rng(seed);
  for (auto [rows, cols] : {std::pair<int64_t, int64_t>{7, 32}, {50, 320}}) {
    const std::vector<float> w = random_weights(rng, rows, cols);
    std::vector<double> h(static_cast<size_t>(cols * cols), 0.0);
    for (int64_t j = 0; j < cols; ++j) h[size_t(j * cols + j)] = 1.0;
    const float G = nvfp4::global_scale(nvfp4::amax_f32(w));
    for (ZeroScale zero : {ZeroScale::CompressedTensors, ZeroScale::ModelOpt}) {
      const Quantized lh = run_lh(w, rows, cols, G, h, zero);
      const Quantized mse = run_rule(w, rows, cols, G, nvfp4::ScaleRule::Mse, zero);
      EXPECT_EQ(lh.packed, mse.packed);
      EXPECT_EQ(lh.scales, mse.scales);
      EXPECT_EQ(lh.err.sum_sq_err, mse.err.sum_sq_err);
      EXPECT_EQ(lh.err.sum_sq_ref, mse.err.sum_sq_ref);
      EXPECT_EQ(lh.err.max_abs_err, mse.err.max_abs_err);
    }
  }
}

TEST(LocalHessian, NanAndZeroBlocksGetTheMaxRulesBytes) {
  const int64_t rows = 3, cols = 48;
  std::mt19937_64 rng(fresh_seed());
  std::vector<float> w = random_weights(rng, rows, cols);
  std::fill(w.begin(), w.begin() + 16, 0.0f);
  w[16] = -0.0f;
  w[size_t(cols + 20)] = std::numeric_limits<float>::quiet_NaN();
  const std::vector<double> h = random_hessian(rng, cols, 100);
  const float G = 448.0f * 6.0f / 0.5f;
  const Quantized lh = run_lh(w, rows, cols, G, h);
  const Quantized mx = run_rule(w, rows, cols, G, nvfp4::ScaleRule::Max);
  EXPECT_EQ(lh.scales[0], mx.scales[0]);       // all-zero block
  EXPECT_EQ(lh.scales[4], 0x7F);               // the NaN block: NaN scale, codes 0
  EXPECT_EQ(lh.scales[4], mx.scales[4]);
  for (int i = 0; i < 8; ++i) {
    EXPECT_EQ(lh.packed[size_t(i)], mx.packed[size_t(i)]);
    EXPECT_EQ(lh.packed[size_t((cols + 16) / 2 + i)], mx.packed[size_t((cols + 16) / 2 + i)]);
  }
  // A non-finite G: the Max rule's bytes everywhere.
  std::vector<float> finite = w;
  finite[size_t(cols + 20)] = 0.01f;
  const float inf = std::numeric_limits<float>::infinity();
  EXPECT_EQ(run_lh(finite, rows, cols, inf, h).packed, run_rule(finite, rows, cols, inf, nvfp4::ScaleRule::Max).packed);
  EXPECT_THROW(quantize_rows_localhessian(w.data(), rows, 40, G, h.data(), nullptr, nullptr,
                                          ZeroScale::CompressedTensors, nullptr),
               std::invalid_argument);
}

TEST(LocalHessian, ResultDoesNotDependOnThreadCount) {
  const uint64_t seed = fresh_seed();
  SCOPED_TRACE("seed " + std::to_string(seed));
  std::mt19937_64 rng(seed);
  const int64_t rows = 300, cols = 256;
  const std::vector<float> w = random_weights(rng, rows, cols);
  const std::vector<double> h = random_hessian(rng, cols, 300);
  const float G = nvfp4::global_scale(nvfp4::amax_f32(w));
  const int saved = omp_get_max_threads();
  omp_set_num_threads(1);
  const Quantized one = run_lh(w, rows, cols, G, h);
  omp_set_num_threads(2);
  const Quantized two = run_lh(w, rows, cols, G, h);
  omp_set_num_threads(3);
  const Quantized three = run_lh(w, rows, cols, G, h);
  omp_set_num_threads(saved);
  EXPECT_EQ(one.packed, two.packed);
  EXPECT_EQ(one.scales, two.scales);
  EXPECT_EQ(one.packed, three.packed);
  EXPECT_EQ(one.scales, three.scales);
  EXPECT_EQ(one.err.sum_sq_err, two.err.sum_sq_err);
  EXPECT_EQ(one.err.sum_sq_err, three.err.sum_sq_err);
}

}  // namespace
}  // namespace fp4c::quant
