// GPTAQ ("GPTQv2") asymmetric calibration (quant::gptaq_quantize): with no asymmetry (D = 0, or alpha 0)
// it is GPTQ byte for byte; its correction P equals the plain formula alpha * triu_1(D' U^T) U; the whole
// quantization equals a plain one-row-at-a-time loop written here (same math) bit for bit and does not
// depend on the thread count; on its own objective ||X W^T - Xq Q^T||^2 (X the unquantized model's input,
// Xq a perturbed copy standing for the quantized model's) it errs less than round-to-nearest; errors.
// Random data with a fresh seed each run (printed on failure).
#include <gtest/gtest.h>
#include <omp.h>

#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <limits>
#include <random>
#include <string>
#include <vector>

#include "formats/fp4.h"
#include "formats/fp8_e4m3.h"
#include "formats/nvfp4.h"
#include "quant/gptq.h"

namespace fp4c::quant {
namespace {

using nvfp4::kBlock;
using nvfp4::ZeroScale;

uint64_t fresh_seed() { return std::random_device{}() ^ (uint64_t(std::random_device{}()) << 32); }

struct Data {
  int64_t rows, cols, n;
  std::vector<float> w;
  std::vector<double> x, xq;   // [n, cols]
  std::vector<double> h, d;    // Xq^T Xq / n, (X - Xq)^T Xq / n
  float G;
};

// Heavy-tailed weights; correlated inputs with a few large channels; Xq = X with a relative and an absolute
// perturbation (what the quantized layers before and the activation rounding do to it).
Data random_data(std::mt19937_64& rng, int64_t rows, int64_t cols, int64_t n, double noise = 0.1) {
  Data s{rows, cols, n, {}, {}, {}, {}, {}, 1.0f};
  std::student_t_distribution<double> t(4.0);
  std::normal_distribution<double> g(0.0, 1.0);
  std::uniform_real_distribution<double> u(0.0, 1.0);
  s.w.resize(size_t(rows * cols));
  for (auto& v : s.w) v = float(0.02 * t(rng));
  std::vector<double> chan(static_cast<size_t>(cols)), load(size_t(4 * cols));
  for (auto& c : chan) c = u(rng) < 0.03 ? 10.0 + 20.0 * u(rng) : 0.5 + u(rng);
  for (auto& v : load) v = g(rng);
  s.x.resize(size_t(n * cols));
  s.xq.resize(size_t(n * cols));
  for (int64_t r = 0; r < n; ++r) {
    double f[4];
    for (double& v : f) v = t(rng);
    for (int64_t c = 0; c < cols; ++c) {
      double v = 0.6 * t(rng);
      for (int k = 0; k < 4; ++k) v += f[k] * load[size_t(k * cols + c)];
      v *= chan[size_t(c)];
      s.x[size_t(r * cols + c)] = v;
      s.xq[size_t(r * cols + c)] = v * (1.0 + noise * g(rng)) + noise * chan[size_t(c)] * g(rng);
    }
  }
  s.h.assign(size_t(cols * cols), 0.0);
  s.d.assign(size_t(cols * cols), 0.0);
  for (int64_t r = 0; r < n; ++r)
    for (int64_t i = 0; i < cols; ++i) {
      const double xi = s.xq[size_t(r * cols + i)], di = s.x[size_t(r * cols + i)] - xi;
      for (int64_t j = 0; j < cols; ++j) {
        s.h[size_t(i * cols + j)] += xi * s.xq[size_t(r * cols + j)];
        s.d[size_t(i * cols + j)] += di * s.xq[size_t(r * cols + j)];
      }
    }
  for (auto& v : s.h) v /= double(n);
  for (auto& v : s.d) v /= double(n);
  float amax = 0;
  for (float v : s.w) amax = std::max(amax, std::fabs(v));
  s.G = nvfp4::global_scale(amax);
  return s;
}

struct Result {
  std::vector<uint8_t> packed, scales;
  std::vector<float> deq;
};

Result run(const Data& s, const GptqOptions& opt, bool asym, const std::vector<double>* d = nullptr) {
  Result q;
  q.packed.assign(size_t(s.rows * s.cols / 2), 0xA5);
  q.scales.assign(size_t(s.rows * s.cols / kBlock), 0xA5);
  q.deq.assign(size_t(s.rows * s.cols), -1.0f);
  const Status st = asym ? gptaq_quantize(s.w.data(), s.rows, s.cols, s.h.data(), (d ? *d : s.d).data(), s.G, opt,
                                          q.packed.data(), q.scales.data(), ZeroScale::CompressedTensors, q.deq.data(),
                                          nullptr)
                         : gptq_quantize(s.w.data(), s.rows, s.cols, s.h.data(), s.G, opt, q.packed.data(),
                                         q.scales.data(), ZeroScale::CompressedTensors, q.deq.data(), nullptr);
  EXPECT_TRUE(st.ok()) << (st.ok() ? "" : st.error().message);
  return q;
}

// sum over tokens and rows of (x w^T - xq q^T)^2 / n: GPTAQ's objective.
double asym_error(const Data& s, const std::vector<float>& q) {
  double total = 0;
  for (int64_t t = 0; t < s.n; ++t)
    for (int64_t r = 0; r < s.rows; ++r) {
      double a = 0, b = 0;
      for (int64_t c = 0; c < s.cols; ++c) {
        a += s.x[size_t(t * s.cols + c)] * s.w[size_t(r * s.cols + c)];
        b += s.xq[size_t(t * s.cols + c)] * q[size_t(r * s.cols + c)];
      }
      total += (a - b) * (a - b);
    }
  return total / double(s.n);
}

// The plain version of gptaq_quantize (max-rule scales): per row, columns in processing order, the
// group's scale from the current weights, each column's code, then w_k -= e U_ik - w_i P_ik for k > i.
Result plain_gptaq(const Data& s, const GptqOptions& opt) {
  const int64_t rows = s.rows, cols = s.cols, groups = cols / kBlock;
  const auto order = gptq_detail::column_order(s.h.data(), cols, opt.act_order);
  auto u64 = gptq_detail::inverse_cholesky_upper(s.h.data(), cols, opt.damp, order);
  EXPECT_TRUE(u64.ok());
  std::vector<float> u(u64->begin(), u64->end());
  const std::vector<double> u_rounded(u.begin(), u.end());
  const auto p64 = gptq_detail::asymmetry_correction(s.d.data(), cols, u_rounded, order, opt.asym_alpha);
  const std::vector<float> p(p64.begin(), p64.end());
  Result q;
  q.packed.assign(size_t(rows * cols / 2), 0);
  q.scales.assign(size_t(rows * groups), 0);
  q.deq.assign(size_t(rows * cols), 0.0f);
  for (int64_t r = 0; r < rows; ++r) {
    std::vector<float> w(static_cast<size_t>(cols));
    std::vector<uint8_t> code(static_cast<size_t>(cols)), sc(static_cast<size_t>(groups));
    for (int64_t c = 0; c < cols; ++c) w[size_t(c)] = s.w[size_t(r * cols + order[size_t(c)])];
    float step = 1;
    for (int64_t i = 0; i < cols; ++i) {
      if (i % kBlock == 0) {
        float a = 0;
        for (int t = 0; t < kBlock; ++t) a = std::max(a, std::fabs(w[size_t(i + t)]));
        uint8_t sv = fp8_e4m3::encode(std::min(s.G * (a / 6.0f), 448.0f));
        if ((sv & 0x7F) == 0) sv = 0x20;
        sc[size_t(i / kBlock)] = sv;
        step = fp8_e4m3::decode(sv) / s.G;
      }
      const float x = w[size_t(i)];
      const uint8_t c = fp4::encode(std::clamp(x / step, -6.0f, 6.0f));
      code[size_t(i)] = c;
      const float e = (x - fp4::decode(c) * step) / u[size_t(i * cols + i)];
      for (int64_t k = i + 1; k < cols; ++k) {
        const float a = e * u[size_t(i * cols + k)];
        const float b = x * p[size_t(i * cols + k)];
        w[size_t(k)] -= a - b;
      }
    }
    std::vector<uint8_t> orig(static_cast<size_t>(cols));
    for (int64_t g = 0; g < groups; ++g) {
      const int64_t og = order[size_t(g * kBlock)] / kBlock;
      q.scales[size_t(r * groups + og)] = sc[size_t(g)];
      for (int t = 0; t < kBlock; ++t) orig[size_t(og * kBlock + t)] = code[size_t(g * kBlock + t)];
    }
    for (int64_t c = 0; c < cols; c += 2) q.packed[size_t((r * cols + c) / 2)] = fp4::pack(orig[size_t(c)], orig[size_t(c + 1)]);
  }
  nvfp4::dequantize(q.packed.data(), q.scales.data(), rows, cols, s.G, q.deq.data());
  return q;
}

TEST(Gptaq, WithoutAsymmetryItIsGptqByteForByte) {
  const uint64_t seed = fresh_seed();
  SCOPED_TRACE("seed " + std::to_string(seed));
  std::mt19937_64 rng(seed);
  const Data s = random_data(rng, 40, 128, 300);
  const std::vector<double> zero(s.d.size(), 0.0);
  for (bool act : {false, true})
    for (bool lh : {false, true}) {
      SCOPED_TRACE(std::string(act ? "act_order" : "natural order") + (lh ? ", local-Hessian scales" : ""));
      GptqOptions opt;
      opt.act_order = act;
      opt.localhessian_scales = lh;
      const Result g = run(s, opt, false);
      const Result a = run(s, opt, true, &zero);
      EXPECT_EQ(g.packed, a.packed);
      EXPECT_EQ(g.scales, a.scales);
      GptqOptions off = opt;
      off.asym_alpha = 0.0;
      const Result z = run(s, off, true);
      EXPECT_EQ(g.packed, z.packed);
      EXPECT_EQ(g.scales, z.scales);
      const Result full = run(s, opt, true);   // and with the correction, something else
      EXPECT_NE(g.packed, full.packed);
    }
}

TEST(Gptaq, CorrectionEqualsThePlainFormula) {
  const uint64_t seed = fresh_seed();
  SCOPED_TRACE("seed " + std::to_string(seed));
  std::mt19937_64 rng(seed);
  const Data s = random_data(rng, 8, 64, 200);
  for (bool act : {false, true}) {
    const auto order = gptq_detail::column_order(s.h.data(), s.cols, act);
    auto u = gptq_detail::inverse_cholesky_upper(s.h.data(), s.cols, 0.01, order);
    ASSERT_TRUE(u.ok());
    const int64_t n = s.cols;
    const auto p = gptq_detail::asymmetry_correction(s.d.data(), n, *u, order, 0.3);
    // A = D' U^T, its strictly upper part, times U, times alpha: every sum over the full index range.
    std::vector<double> a(size_t(n * n), 0.0);
    for (int64_t i = 0; i < n; ++i)
      for (int64_t j = 0; j < n; ++j) {
        double v = 0;
        for (int64_t k = 0; k < n; ++k) v += s.d[size_t(order[size_t(i)] * n + order[size_t(k)])] * (*u)[size_t(j * n + k)];
        a[size_t(i * n + j)] = j > i ? v : 0.0;
      }
    for (int64_t i = 0; i < n; ++i)
      for (int64_t k = 0; k < n; ++k) {
        double v = 0;
        for (int64_t j = 0; j < n; ++j) v += a[size_t(i * n + j)] * (*u)[size_t(j * n + k)];
        EXPECT_NEAR(p[size_t(i * n + k)], 0.3 * v, 1e-12 * (1.0 + std::fabs(v))) << i << "," << k;
        if (k <= i) EXPECT_EQ(p[size_t(i * n + k)], 0.0);
      }
  }
}

// The tiled P (rows as lanes for A, register tiles for A U) equals the entry-by-entry form bit for bit: both
// orders, several widths (one tile, tails of the column blocks, a width not a multiple of 16 that takes the
// plain path), 1 and 2 threads.
TEST(Gptaq, TiledCorrectionEqualsTheReferenceBitForBit) {
  const uint64_t seed = fresh_seed();
  SCOPED_TRACE("seed " + std::to_string(seed));
  std::mt19937_64 rng(seed);
  const int saved = omp_get_max_threads();
  for (int64_t cols : {16, 48, 40, 272, 320}) {
    const Data s = random_data(rng, 4, cols, 3 * cols);
    for (bool act : {false, true}) {
      const auto order = gptq_detail::column_order(s.h.data(), cols, act);
      auto u = gptq_detail::inverse_cholesky_upper(s.h.data(), cols, 0.01, order);
      ASSERT_TRUE(u.ok());
      const auto ref = gptq_detail::asymmetry_correction_reference(s.d.data(), cols, *u, order, 0.25);
      for (int threads : {1, 2}) {
        SCOPED_TRACE(std::to_string(cols) + " columns, " + (act ? "act_order" : "natural") + ", " +
                     std::to_string(threads) + " thread(s)");
        omp_set_num_threads(threads);
        const auto p = gptq_detail::asymmetry_correction(s.d.data(), cols, *u, order, 0.25);
        omp_set_num_threads(saved);
        ASSERT_EQ(p.size(), ref.size());
        EXPECT_EQ(0, std::memcmp(p.data(), ref.data(), p.size() * sizeof(double)));
      }
    }
  }
}

TEST(Gptaq, EqualsPlainLoopAndIgnoresThreadCount) {
  const uint64_t seed = fresh_seed();
  SCOPED_TRACE("seed " + std::to_string(seed));
  std::mt19937_64 rng(seed);
  const Data s = random_data(rng, 37, 96, 250);
  const int saved = omp_get_max_threads();
  for (bool act : {false, true}) {
    GptqOptions opt;
    opt.act_order = act;
    const Result ref = plain_gptaq(s, opt);
    omp_set_num_threads(1);
    const Result one = run(s, opt, true);
    omp_set_num_threads(2);
    const Result two = run(s, opt, true);
    omp_set_num_threads(saved);
    EXPECT_EQ(ref.packed, one.packed);
    EXPECT_EQ(ref.scales, one.scales);
    EXPECT_EQ(one.packed, two.packed);
    EXPECT_EQ(one.scales, two.scales);
  }
}

// The batched column loop (tiles of rows, lazy batches of `block` columns) equals the unbatched per-row one bit
// for bit: max and local-Hessian scales, several batch widths (wider than, equal to and narrower than cols,
// and one that does not divide it), rows not a multiple of the tile or of the register block, 1 and 2 threads.
TEST(Gptaq, BatchedLoopEqualsTheUnbatchedOne) {
  const uint64_t seed = fresh_seed();
  SCOPED_TRACE("seed " + std::to_string(seed));
  std::mt19937_64 rng(seed);
  const Data s = random_data(rng, 45, 320, 700);
  const int64_t rows = s.rows, cols = s.cols, groups = cols / kBlock;
  const int saved = omp_get_max_threads();
  for (bool act : {false, true}) {
    const auto order = gptq_detail::column_order(s.h.data(), cols, act);
    auto u64 = gptq_detail::inverse_cholesky_upper(s.h.data(), cols, 0.01, order);
    ASSERT_TRUE(u64.ok());
    const std::vector<float> u(u64->begin(), u64->end());
    const std::vector<double> u_rounded(u.begin(), u.end());
    const auto p64 = gptq_detail::asymmetry_correction(s.d.data(), cols, u_rounded, order, 0.25);
    const std::vector<float> p(p64.begin(), p64.end());
    std::vector<float> wp(size_t(rows * cols));
    for (int64_t r = 0; r < rows; ++r)
      for (int64_t c = 0; c < cols; ++c) wp[size_t(r * cols + c)] = s.w[size_t(r * cols + order[size_t(c)])];
    std::vector<double> gh(size_t(cols * kBlock));
    for (int64_t g = 0; g < groups; ++g)
      for (int i = 0; i < kBlock; ++i)
        for (int j = 0; j < kBlock; ++j)
          gh[size_t((g * kBlock + i) * kBlock + j)] =
              s.h[size_t(order[size_t(g * kBlock + i)] * cols + order[size_t(g * kBlock + j)])];
    for (bool lh : {false, true}) {
      const double* hp = lh ? gh.data() : nullptr;
      std::vector<float> w_ref = wp;
      std::vector<uint8_t> codes_ref(size_t(rows * cols)), sc_ref(size_t(rows * groups));
      gptq_detail::quantize_columns_asym_unbatched(w_ref.data(), rows, cols, u.data(), p.data(), s.G, 0x20, hp,
                                                   codes_ref.data(), sc_ref.data());
      for (int block : {16, 48, 128, 320, 512})
        for (int threads : {1, 2}) {
          SCOPED_TRACE(std::string(act ? "act_order" : "natural") + (lh ? ", local-Hessian" : ", max") + ", block " +
                       std::to_string(block) + ", " + std::to_string(threads) + " thread(s)");
          omp_set_num_threads(threads);
          std::vector<float> w = wp;
          std::vector<uint8_t> codes(size_t(rows * cols)), sc(size_t(rows * groups));
          gptq_detail::quantize_columns_asym(w.data(), rows, cols, u.data(), p.data(), s.G, block, 0x20, hp,
                                             codes.data(), sc.data());
          omp_set_num_threads(saved);
          EXPECT_EQ(codes, codes_ref);
          EXPECT_EQ(sc, sc_ref);
          EXPECT_EQ(0, std::memcmp(w.data(), w_ref.data(), w.size() * sizeof(float)));   // the updated weights too
        }
    }
  }
}

TEST(Gptaq, ErrsLessThanRoundToNearestOnItsObjective) {
  const uint64_t seed = fresh_seed();
  SCOPED_TRACE("seed " + std::to_string(seed));
  std::mt19937_64 rng(seed);
  for (auto [rows, cols] : {std::pair<int64_t, int64_t>{32, 64}, {48, 128}}) {
    const Data s = random_data(rng, rows, cols, 4 * cols);
    Result rtn;
    rtn.packed.resize(size_t(rows * cols / 2));
    rtn.scales.resize(size_t(rows * cols / kBlock));
    rtn.deq.resize(size_t(rows * cols));
    nvfp4::quantize_f32_ref(s.w.data(), rows, cols, s.G, rtn.packed.data(), rtn.scales.data(),
                            ZeroScale::CompressedTensors, nullptr);
    nvfp4::dequantize(rtn.packed.data(), rtn.scales.data(), rows, cols, s.G, rtn.deq.data());
    const double e_rtn = asym_error(s, rtn.deq);
    GptqOptions opt;
    const double e_gptq = asym_error(s, run(s, opt, false).deq);
    const double e_gptaq = asym_error(s, run(s, opt, true).deq);
    opt.asym_alpha = 1.0;
    const double e_gptaq1 = asym_error(s, run(s, opt, true).deq);
    std::printf("[ gptaq ] %lldx%lld: ||X W^T - Xq Q^T||^2 relative to RTN: GPTQ(Hq) %.4f, GPTAQ alpha 0.25 %.4f, "
                "alpha 1 %.4f\n", (long long)rows, (long long)cols, e_gptq / e_rtn, e_gptaq / e_rtn, e_gptaq1 / e_rtn);
    EXPECT_LT(e_gptaq, e_rtn);
    EXPECT_LT(e_gptaq1, e_rtn);
  }
}

TEST(Gptaq, ErrorsNameTheProblem) {
  std::mt19937_64 rng(7);
  Data s = random_data(rng, 4, 32, 64);
  std::vector<uint8_t> packed(64), scales(8);
  auto message = [&](const double* d, const GptqOptions& opt, int64_t cols = 32) {
    const Status st = gptaq_quantize(s.w.data(), 4, cols, s.h.data(), d, s.G, opt, packed.data(), scales.data(),
                                     ZeroScale::CompressedTensors, nullptr, nullptr);
    return st.ok() ? std::string() : st.error().message;
  };
  EXPECT_NE(message(nullptr, {}).find("null D"), std::string::npos);
  std::vector<double> bad = s.d;
  bad[33] = std::numeric_limits<double>::quiet_NaN();
  EXPECT_NE(message(bad.data(), {}).find("D[1, 1] is NaN"), std::string::npos) << message(bad.data(), {});
  GptqOptions neg;
  neg.asym_alpha = -1;
  EXPECT_NE(message(s.d.data(), neg).find("alpha"), std::string::npos);
  EXPECT_NE(message(s.d.data(), {}, 24).find("multiple of 16"), std::string::npos);
  EXPECT_TRUE(message(s.d.data(), {}).empty());
}

}  // namespace
}  // namespace fp4c::quant
