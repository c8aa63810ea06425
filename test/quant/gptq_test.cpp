// GPTQ on the NVFP4 grid (passes/gptq.h): with H = I it is round-to-nearest byte for byte; the
// blocked, threaded kernel equals a plain unblocked GPTQ written here (same math) bit for bit, for
// every lazy-batch width and with act_order; its float64 factor U matches the textbook three-step
// computation (torch's cholesky(cholesky_inverse(cholesky(H)), upper=True)); on correlated,
// heavy-tailed inputs with outlier channels its output error is below RTN's; dead columns; errors.
// Random data with a fresh seed each run (printed on failure).
#include "quant/gptq.h"

#include <gtest/gtest.h>
#include <omp.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <limits>
#include <numeric>
#include <random>
#include <string>
#include <vector>

#include "formats/fp4.h"
#include "formats/fp8_e4m3.h"
#include "formats/nvfp4.h"
#include "formats/nvfp4_rules.h"
#include "quant/localhessian.h"

namespace fp4c::quant {
namespace {

using nvfp4::ErrorStats;
using nvfp4::kBlock;
using nvfp4::ZeroScale;

uint64_t fresh_seed() {
  return std::random_device{}() ^ (uint64_t(std::random_device{}()) << 32);
}

// ---- random layers ----------------------------------------------------------------------------

// Heavy-tailed weights (Student-t, 3 dof, per-row lognormal scale) with a few outliers.
std::vector<float> random_weights(std::mt19937_64& rng, int64_t rows, int64_t cols) {
  std::student_t_distribution<float> t(3.0f);
  std::lognormal_distribution<float> row_scale(0.0f, 0.4f);
  std::uniform_real_distribution<float> u(0.0f, 1.0f);
  std::vector<float> w(size_t(rows * cols));
  for (int64_t r = 0; r < rows; ++r) {
    const float rs = 0.02f * row_scale(rng);
    for (int64_t c = 0; c < cols; ++c) {
      float v = rs * t(rng);
      if (u(rng) < 0.002f) v *= 20.0f;
      w[size_t(r * cols + c)] = v;
    }
  }
  return w;
}

// Inputs X [n, cols]: correlated (a few shared latent factors plus a random mixing of neighbours),
// heavy-tailed (Student-t), with some outlier channels (x 10..40), as LLM activations are.
// `factors` scales the shared part: 1 strongly correlated, 0.2 mostly independent channels.
std::vector<double> random_inputs(std::mt19937_64& rng, int64_t n, int64_t cols, double factors_weight = 1.0) {
  std::student_t_distribution<double> t(4.0);
  std::normal_distribution<double> g(0.0, 1.0);
  std::uniform_real_distribution<double> u(0.0, 1.0);
  const int factors = 8;
  std::vector<double> load(size_t(factors * cols)), chan(static_cast<size_t>(cols));
  for (double& v : load) v = g(rng);
  for (int64_t c = 0; c < cols; ++c) chan[size_t(c)] = u(rng) < 0.02 ? 10.0 + 30.0 * u(rng) : 0.5 + u(rng);
  std::vector<double> x(size_t(n * cols));
  std::vector<double> f(factors), z(static_cast<size_t>(cols));
  for (int64_t s = 0; s < n; ++s) {
    for (double& v : f) v = t(rng);
    for (int64_t c = 0; c < cols; ++c) z[size_t(c)] = t(rng);
    for (int64_t c = 0; c < cols; ++c) {
      double v = 0.5 * z[size_t(c)] + 0.3 * z[size_t((c + 1) % cols)];
      for (int k = 0; k < factors; ++k) v += factors_weight * f[size_t(k)] * load[size_t(k * cols + c)];
      x[size_t(s * cols + c)] = v * chan[size_t(c)];
    }
  }
  return x;
}

// H = X^T X / n.
std::vector<double> second_moment(const std::vector<double>& x, int64_t n, int64_t cols) {
  std::vector<double> h(size_t(cols * cols), 0.0);
  for (int64_t s = 0; s < n; ++s) {
    const double* xs = x.data() + s * cols;
    for (int64_t i = 0; i < cols; ++i) {
      for (int64_t j = 0; j < cols; ++j) h[size_t(i * cols + j)] += xs[i] * xs[j];
    }
  }
  for (double& v : h) v /= double(n);
  return h;
}

// sum over rows of d^T H d, d = Q(W) - W: the output error ||X Q^T - X W^T||^2 / n.
double output_error(const std::vector<float>& w, const std::vector<float>& q, int64_t rows, int64_t cols,
                    const std::vector<double>& h) {
  double total = 0;
  std::vector<double> d(static_cast<size_t>(cols));
  for (int64_t r = 0; r < rows; ++r) {
    for (int64_t c = 0; c < cols; ++c) d[size_t(c)] = double(q[size_t(r * cols + c)]) - double(w[size_t(r * cols + c)]);
    for (int64_t i = 0; i < cols; ++i) {
      double s = 0;
      for (int64_t j = 0; j < cols; ++j) s += h[size_t(i * cols + j)] * d[size_t(j)];
      total += d[size_t(i)] * s;
    }
  }
  return total;
}

struct Quantized {
  std::vector<uint8_t> packed, scales;
  std::vector<float> deq;
  ErrorStats err;
};

Quantized rtn(const std::vector<float>& w, int64_t rows, int64_t cols, float G,
              ZeroScale zero = ZeroScale::CompressedTensors) {
  Quantized q;
  q.packed.resize(size_t(rows * cols / 2));
  q.scales.resize(size_t(rows * cols / kBlock));
  q.deq.resize(size_t(rows * cols));
  nvfp4::quantize_f32_ref(w.data(), rows, cols, G, q.packed.data(), q.scales.data(), zero, &q.err);
  nvfp4::dequantize(q.packed.data(), q.scales.data(), rows, cols, G, q.deq.data());
  return q;
}

Quantized run_gptq(const std::vector<float>& w, int64_t rows, int64_t cols, const std::vector<double>& h,
                   float G, const GptqOptions& opt, ZeroScale zero = ZeroScale::CompressedTensors) {
  Quantized q;
  q.packed.assign(size_t(rows * cols / 2), 0xA5);
  q.scales.assign(size_t(rows * cols / kBlock), 0xA5);
  q.deq.assign(size_t(rows * cols), -1.0f);
  const Status s = gptq_quantize(w.data(), rows, cols, h.data(), G, opt, q.packed.data(), q.scales.data(),
                                 zero, q.deq.data(), &q.err);
  EXPECT_TRUE(s.ok()) << (s.ok() ? "" : s.error().message);
  return q;
}

float global_scale_of(const std::vector<float>& w) {
  return nvfp4::global_scale(nvfp4::amax_f32(w));
}

// ---- the plain reference --------------------------------------------------------------------------

double h_sym(const std::vector<double>& h, int64_t n, int64_t a, int64_t b) {
  return a <= b ? h[size_t(a * n + b)] : h[size_t(b * n + a)];
}

std::vector<int64_t> plain_order(const std::vector<double>& h, int64_t cols, bool act_order) {
  std::vector<int64_t> order(static_cast<size_t>(cols));
  std::iota(order.begin(), order.end(), int64_t(0));
  if (!act_order) return order;
  const int64_t groups = cols / kBlock;
  std::vector<std::pair<double, int64_t>> key;
  for (int64_t g = 0; g < groups; ++g) {
    double s = 0;
    for (int t = 0; t < kBlock; ++t) {
      const double d = h[size_t((g * kBlock + t) * cols + g * kBlock + t)];
      s += d == 0.0 ? 1.0 : d;
    }
    key.push_back({s, g});
  }
  std::stable_sort(key.begin(), key.end(), [](auto& a, auto& b) { return a.first > b.first; });
  for (int64_t p = 0; p < groups; ++p) {
    for (int t = 0; t < kBlock; ++t) order[size_t(p * kBlock + t)] = key[size_t(p)].second * kBlock + t;
  }
  return order;
}

// Textbook lower Cholesky (returns false if not positive definite).
bool plain_cholesky(std::vector<double>& a, int64_t n) {
  for (int64_t j = 0; j < n; ++j) {
    double d = a[size_t(j * n + j)];
    for (int64_t k = 0; k < j; ++k) d -= a[size_t(j * n + k)] * a[size_t(j * n + k)];
    if (!(d > 0)) return false;
    a[size_t(j * n + j)] = std::sqrt(d);
    for (int64_t i = j + 1; i < n; ++i) {
      double s = a[size_t(i * n + j)];
      for (int64_t k = 0; k < j; ++k) s -= a[size_t(i * n + k)] * a[size_t(j * n + k)];
      a[size_t(i * n + j)] = s / a[size_t(j * n + j)];
    }
    for (int64_t i = 0; i < j; ++i) a[size_t(i * n + j)] = 0.0;
  }
  return true;
}

// torch.linalg.cholesky(torch.cholesky_inverse(torch.linalg.cholesky(H')), upper=True), H' = H
// permuted, dead diagonals 1, damped: three plain steps.
std::vector<double> plain_inverse_cholesky_upper(const std::vector<double>& h, int64_t n, double damp,
                                                 const std::vector<int64_t>& order) {
  double mean = 0;
  for (int64_t j = 0; j < n; ++j) mean += h[size_t(j * n + j)] == 0.0 ? 1.0 : h[size_t(j * n + j)];
  mean /= double(n);
  std::vector<double> a(size_t(n * n));
  for (int64_t i = 0; i < n; ++i) {
    for (int64_t j = 0; j < n; ++j) a[size_t(i * n + j)] = h_sym(h, n, order[size_t(i)], order[size_t(j)]);
    double& d = a[size_t(i * n + i)];
    if (d == 0.0) d = 1.0;
    d += damp * mean;
  }
  EXPECT_TRUE(plain_cholesky(a, n));
  // Inverse: solve L Y = I, then L^T Z = Y.
  std::vector<double> inv(size_t(n * n));
  for (int64_t c = 0; c < n; ++c) {
    std::vector<double> y(static_cast<size_t>(n));
    for (int64_t i = 0; i < n; ++i) {
      double s = i == c ? 1.0 : 0.0;
      for (int64_t k = 0; k < i; ++k) s -= a[size_t(i * n + k)] * y[size_t(k)];
      y[size_t(i)] = s / a[size_t(i * n + i)];
    }
    for (int64_t i = n - 1; i >= 0; --i) {
      double s = y[size_t(i)];
      for (int64_t k = i + 1; k < n; ++k) s -= a[size_t(k * n + i)] * inv[size_t(k * n + c)];
      inv[size_t(i * n + c)] = s / a[size_t(i * n + i)];
    }
  }
  for (int64_t i = 0; i < n; ++i) {  // symmetrize
    for (int64_t j = 0; j < i; ++j) inv[size_t(i * n + j)] = inv[size_t(j * n + i)];
  }
  EXPECT_TRUE(plain_cholesky(inv, n));
  std::vector<double> u(size_t(n * n), 0.0);
  for (int64_t i = 0; i < n; ++i) {
    for (int64_t j = i; j < n; ++j) u[size_t(i * n + j)] = inv[size_t(j * n + i)];
  }
  return u;
}

// Unblocked GPTQ, column by column, every update applied at once (GPTQ's Algorithm 1 with the
// group scale taken at each group's first column from the current weights).
Quantized plain_gptq(const std::vector<float>& w, int64_t rows, int64_t cols, const std::vector<double>& h,
                     float G, double damp, bool act_order, ZeroScale zero, const std::vector<double>* u_given,
                     bool localhessian = false) {
  const std::vector<int64_t> order = plain_order(h, cols, act_order);
  const std::vector<double> u64 = u_given ? *u_given : plain_inverse_cholesky_upper(h, cols, damp, order);
  std::vector<float> u(u64.size());
  for (size_t i = 0; i < u.size(); ++i) u[i] = float(u64[i]);
  const uint8_t zc = zero == ZeroScale::ModelOpt ? 0x38 : 0x20;
  const int64_t groups = cols / kBlock;

  Quantized out;
  out.packed.assign(size_t(rows * cols / 2), 0);
  out.scales.assign(size_t(rows * groups), 0);
  out.deq.assign(size_t(rows * cols), 0.0f);
  std::vector<uint8_t> codes(size_t(rows * cols));
  for (int64_t r = 0; r < rows; ++r) {
    std::vector<float> x(static_cast<size_t>(cols));
    for (int64_t c = 0; c < cols; ++c) x[size_t(c)] = w[size_t(r * cols + order[size_t(c)])];
    float d = 0;
    for (int64_t j = 0; j < cols; ++j) {
      if (j % kBlock == 0 && localhessian) {  // the local-Hessian rule on the current weights
        double hb[kBlock * kBlock];
        for (int i = 0; i < kBlock; ++i) {
          for (int t = 0; t < kBlock; ++t) hb[i * kBlock + t] = h_sym(h, cols, order[size_t(j + i)], order[size_t(j + t)]);
        }
        uint8_t unused[kBlock];
        const uint8_t s = localhessian_block(x.data() + j, G, hb, zc, unused);
        out.scales[size_t(r * groups + order[size_t(j)] / kBlock)] = s;
        d = fp8_e4m3::decode(s) / G;
      } else if (j % kBlock == 0) {
        float a = 0;
        for (int t = 0; t < kBlock; ++t) a = std::max(a, std::fabs(x[size_t(j + t)]));
        uint8_t s = fp8_e4m3::encode(std::min(G * (a / 6.0f), 448.0f));
        if ((s & 0x7F) == 0) s = zc;
        out.scales[size_t(r * groups + order[size_t(j)] / kBlock)] = s;
        d = fp8_e4m3::decode(s) / G;
      }
      const float v = x[size_t(j)];
      const uint8_t q = fp4::encode(std::clamp(v / d, -6.0f, 6.0f));
      codes[size_t(r * cols + order[size_t(j)])] = q;
      const float e = (v - fp4::decode(q) * d) / u[size_t(j * cols + j)];
      for (int64_t k = j + 1; k < cols; ++k) x[size_t(k)] -= e * u[size_t(j * cols + k)];
    }
  }
  for (int64_t i = 0; i < rows * cols; i += 2) out.packed[size_t(i / 2)] = fp4::pack(codes[size_t(i)], codes[size_t(i + 1)]);
  nvfp4::dequantize(out.packed.data(), out.scales.data(), rows, cols, G, out.deq.data());
  for (int64_t i = 0; i < rows * cols; ++i) {
    const double e = double(w[size_t(i)]) - double(out.deq[size_t(i)]);
    out.err.sum_sq_err += e * e;  // (summed over all elements in order; compared with tolerance)
    out.err.sum_sq_ref += double(w[size_t(i)]) * double(w[size_t(i)]);
  }
  return out;
}

// A random layer: W, and H from correlated heavy-tailed X with outlier channels.
struct Layer {
  std::vector<float> w;
  std::vector<double> h;
  float G;
};
Layer random_layer(std::mt19937_64& rng, int64_t rows, int64_t cols, int64_t samples,
                   double factors_weight = 1.0) {
  Layer l;
  l.w = random_weights(rng, rows, cols);
  l.h = second_moment(random_inputs(rng, samples, cols, factors_weight), samples, cols);
  l.G = global_scale_of(l.w);
  return l;
}

void expect_same(const Quantized& a, const Quantized& b, const char* what) {
  SCOPED_TRACE(what);
  EXPECT_EQ(a.packed, b.packed);
  EXPECT_EQ(a.scales, b.scales);
  ASSERT_EQ(a.deq.size(), b.deq.size());
  EXPECT_EQ(0, std::memcmp(a.deq.data(), b.deq.data(), a.deq.size() * sizeof(float)));
}

// ---- tests ----------------------------------------------------------------------------------------

TEST(Gptq, IdentityHessianIsRoundToNearest) {
  const uint64_t seed = fresh_seed();
  SCOPED_TRACE("seed " + std::to_string(seed));
  std::mt19937_64 rng(seed);
  for (auto [rows, cols] : {std::pair<int64_t, int64_t>{1, 16}, {7, 48}, {33, 160}, {64, 272}}) {
    std::vector<float> w = random_weights(rng, rows, cols);
    for (int64_t c = 0; c < kBlock; ++c) w[size_t(c)] = 0.0f;  // an all-zero block
    std::vector<double> h(size_t(cols * cols), 0.0);
    for (int64_t j = 0; j < cols; ++j) h[size_t(j * cols + j)] = 1.0;
    const float G = global_scale_of(w);
    for (ZeroScale zero : {ZeroScale::CompressedTensors, ZeroScale::ModelOpt}) {
      for (int block : {16, 64, 128}) {
        for (bool act : {false, true}) {
          SCOPED_TRACE(std::to_string(rows) + "x" + std::to_string(cols) + " block " + std::to_string(block) +
                       (act ? " act_order" : ""));
          GptqOptions opt;
          opt.damp = 0.0;
          opt.block = block;
          opt.act_order = act;
          const Quantized g = run_gptq(w, rows, cols, h, G, opt, zero);
          const Quantized r = rtn(w, rows, cols, G, zero);
          expect_same(g, r, "gptq vs rtn");
          EXPECT_EQ(g.err.sum_sq_err, r.err.sum_sq_err);
          EXPECT_EQ(g.err.sum_sq_ref, r.err.sum_sq_ref);
          EXPECT_EQ(g.err.max_abs_err, r.err.max_abs_err);
          EXPECT_EQ(g.err.count, r.err.count);
        }
      }
    }
  }
}

TEST(Gptq, InverseCholeskyMatchesTextbook) {
  const uint64_t seed = fresh_seed();
  SCOPED_TRACE("seed " + std::to_string(seed));
  std::mt19937_64 rng(seed);
  for (int64_t n : {16, 37, 80, 150, 208, 400}) {  // not all multiples of 4 or 16: the kernels' edges
    SCOPED_TRACE("n " + std::to_string(n));
    std::vector<double> h = second_moment(random_inputs(rng, 2 * n, n), 2 * n, n);
    for (bool act : {false, true}) {
      const std::vector<int64_t> order = gptq_detail::column_order(h.data(), n, act);
      EXPECT_EQ(order, plain_order(h, n, act));
      auto u = gptq_detail::inverse_cholesky_upper(h.data(), n, 0.01, order);
      ASSERT_TRUE(u.ok()) << u.error().message;
      const std::vector<double> ref = plain_inverse_cholesky_upper(h, n, 0.01, order);
      double max_rel = 0, scale = 0;
      for (double v : ref) scale = std::max(scale, std::fabs(v));
      for (int64_t i = 0; i < n; ++i) {
        for (int64_t j = 0; j < n; ++j) {
          const double a = (*u)[size_t(i * n + j)], b = ref[size_t(i * n + j)];
          if (j < i) {
            ASSERT_EQ(a, 0.0);
          }
          max_rel = std::max(max_rel, std::fabs(a - b) / scale);
        }
      }
      EXPECT_LT(max_rel, 1e-9);
    }
  }
}

// At n >= 2048 the factorization runs threaded: the same bits at 1 and 2 threads, and U^T U is the
// inverse of the damped H (checked on a few columns).
TEST(Gptq, LargeFactorIsThreadIndependentAndInverts) {
  const uint64_t seed = fresh_seed();
  SCOPED_TRACE("seed " + std::to_string(seed));
  std::mt19937_64 rng(seed);
  const int64_t n = 2050, k = 24;
  std::normal_distribution<double> g(0.0, 1.0);
  std::uniform_real_distribution<double> u01(0.0, 1.0);
  std::vector<double> f(static_cast<size_t>(n * k)), sc(static_cast<size_t>(n));
  for (double& v : f) v = g(rng);
  for (double& v : sc) v = u01(rng) < 0.02 ? 20.0 : 0.5 + u01(rng);
  std::vector<double> h(static_cast<size_t>(n * n));
  for (int64_t i = 0; i < n; ++i) {
    for (int64_t j = 0; j < n; ++j) {
      double s = 0;
      for (int64_t t = 0; t < k; ++t) s += f[size_t(i * k + t)] * f[size_t(j * k + t)];
      h[size_t(i * n + j)] = s * sc[size_t(i)] * sc[size_t(j)] / double(k);
    }
    h[size_t(i * n + i)] += 0.05 * sc[size_t(i)] * sc[size_t(i)];
  }
  const std::vector<int64_t> order = gptq_detail::column_order(h.data(), n, false);
  const int saved = omp_get_max_threads();
  omp_set_num_threads(1);
  auto one = gptq_detail::inverse_cholesky_upper(h.data(), n, 0.01, order);
  omp_set_num_threads(2);
  auto two = gptq_detail::inverse_cholesky_upper(h.data(), n, 0.01, order);
  omp_set_num_threads(saved);
  ASSERT_TRUE(one.ok() && two.ok());
  ASSERT_EQ(0, std::memcmp(one->data(), two->data(), one->size() * sizeof(double)));
  double mean = 0;
  for (int64_t j = 0; j < n; ++j) mean += h[size_t(j * n + j)];
  mean /= double(n);
  const std::vector<double>& uu = *one;
  for (int64_t c : {int64_t(0), int64_t(977), n - 1}) {
    std::vector<double> a(static_cast<size_t>(n)), v(static_cast<size_t>(n), 0.0), y(static_cast<size_t>(n), 0.0);
    for (int64_t i = 0; i < n; ++i) a[size_t(i)] = h[size_t(i * n + c)] + (i == c ? 0.01 * mean : 0.0);
    for (int64_t i = 0; i < n; ++i) {
      for (int64_t j = i; j < n; ++j) v[size_t(i)] += uu[size_t(i * n + j)] * a[size_t(j)];
    }
    for (int64_t i = 0; i < n; ++i) {
      for (int64_t j = i; j < n; ++j) y[size_t(j)] += uu[size_t(i * n + j)] * v[size_t(i)];
    }
    for (int64_t i = 0; i < n; ++i) ASSERT_NEAR(y[size_t(i)], i == c ? 1.0 : 0.0, 1e-8) << "column " << c << ", row " << i;
  }
}

TEST(Gptq, BlockedKernelEqualsPlainUnblockedReference) {
  const uint64_t seed = fresh_seed();
  SCOPED_TRACE("seed " + std::to_string(seed));
  std::mt19937_64 rng(seed);
  for (auto [rows, cols] : {std::pair<int64_t, int64_t>{5, 32}, {37, 96}, {70, 272}, {40, 400}}) {
    Layer l = random_layer(rng, rows, cols, 3 * cols);
    for (bool act : {false, true}) {
      const std::vector<int64_t> order = gptq_detail::column_order(l.h.data(), cols, act);
      auto u = gptq_detail::inverse_cholesky_upper(l.h.data(), cols, 0.01, order);
      ASSERT_TRUE(u.ok());
      const Quantized ref = plain_gptq(l.w, rows, cols, l.h, l.G, 0.01, act, ZeroScale::CompressedTensors, &*u);
      for (int block : {16, 32, 128, 512}) {
        SCOPED_TRACE(std::to_string(rows) + "x" + std::to_string(cols) + " block " + std::to_string(block) +
                     (act ? " act_order" : ""));
        GptqOptions opt;
        opt.block = block;
        opt.act_order = act;
        const Quantized g = run_gptq(l.w, rows, cols, l.h, l.G, opt);
        expect_same(g, ref, "blocked vs plain");
        EXPECT_NEAR(g.err.sum_sq_err, ref.err.sum_sq_err, 1e-12 * ref.err.sum_sq_err);
        EXPECT_NEAR(g.err.sum_sq_ref, ref.err.sum_sq_ref, 1e-12 * ref.err.sum_sq_ref);
      }
      // The whole plain path (textbook U in three steps): U differs from the fast one in the last
      // bits of float64, which can flip a float32 rounding of U and so, rarely, a code.
      const Quantized full = plain_gptq(l.w, rows, cols, l.h, l.G, 0.01, act, ZeroScale::CompressedTensors, nullptr);
      const Quantized g = run_gptq(l.w, rows, cols, l.h, l.G, GptqOptions{.damp = 0.01, .act_order = act});
      int64_t differ = 0;
      for (size_t i = 0; i < g.packed.size(); ++i) differ += g.packed[i] != full.packed[i];
      EXPECT_LE(differ, int64_t(g.packed.size() / 100)) << "bytes differing from the all-plain path";
      std::printf("[ gptq ] %lldx%lld%s: %lld of %zu code bytes differ from the all-plain path\n",
                  (long long)rows, (long long)cols, act ? " act_order" : "", (long long)differ, g.packed.size());
    }
  }
}

TEST(Gptq, OutputErrorBelowRoundToNearest) {
  const uint64_t seed = fresh_seed();
  SCOPED_TRACE("seed " + std::to_string(seed));
  std::mt19937_64 rng(seed);
  for (double factors : {1.0, 0.2}) {
    for (auto [rows, cols] : {std::pair<int64_t, int64_t>{64, 128}, {96, 256}, {48, 512}}) {
      Layer l = random_layer(rng, rows, cols, 2 * cols, factors);
      const Quantized r = rtn(l.w, rows, cols, l.G);
      const double e_rtn = output_error(l.w, r.deq, rows, cols, l.h);
      for (bool act : {false, true}) {
        SCOPED_TRACE(std::to_string(rows) + "x" + std::to_string(cols) + (act ? " act_order" : "") +
                     " factors " + std::to_string(factors));
        GptqOptions opt;
        opt.act_order = act;
        const Quantized g = run_gptq(l.w, rows, cols, l.h, l.G, opt);
        const double e_gptq = output_error(l.w, g.deq, rows, cols, l.h);
        std::printf("[ gptq ] %lldx%lld%s, %s inputs: output error GPTQ / RTN = %.4f (weight rel. MSE %.4g vs %.4g)\n",
                    (long long)rows, (long long)cols, act ? " act_order" : "",
                    factors == 1.0 ? "strongly correlated" : "weakly correlated", e_gptq / e_rtn,
                    g.err.relative_mse(), r.err.relative_mse());
        EXPECT_LT(e_gptq, e_rtn);
        EXPECT_GT(e_gptq, 0.0);
      }
    }
  }
}

TEST(Gptq, LocalHessianScales) {
  const uint64_t seed = fresh_seed();
  SCOPED_TRACE("seed " + std::to_string(seed));
  std::mt19937_64 rng(seed);
  // H = I, no damping: no error is propagated and the local-Hessian rule is the Mse rule.
  {
    const int64_t rows = 21, cols = 96;
    const std::vector<float> w = random_weights(rng, rows, cols);
    std::vector<double> h(static_cast<size_t>(cols * cols), 0.0);
    for (int64_t j = 0; j < cols; ++j) h[size_t(j * cols + j)] = 1.0;
    const float G = global_scale_of(w);
    const Quantized g = run_gptq(w, rows, cols, h, G, GptqOptions{.damp = 0.0, .localhessian_scales = true});
    Quantized mse;
    mse.packed.resize(size_t(rows * cols / 2));
    mse.scales.resize(size_t(rows * cols / 16));
    nvfp4::quantize_rows_with_rule(w.data(), rows, cols, G, nvfp4::ScaleRule::Mse, nullptr, mse.packed.data(),
                                   mse.scales.data(), ZeroScale::CompressedTensors, &mse.err);
    EXPECT_EQ(g.packed, mse.packed);
    EXPECT_EQ(g.scales, mse.scales);
    EXPECT_EQ(g.err.sum_sq_err, mse.err.sum_sq_err);
  }
  // The blocked kernel equals the plain loop with the same rule; the output error is below RTN's.
  for (double factors : {1.0, 0.2}) {
    for (auto [rows, cols] : {std::pair<int64_t, int64_t>{48, 128}, {64, 256}}) {
      Layer l = random_layer(rng, rows, cols, 2 * cols, factors);
      const Quantized r = rtn(l.w, rows, cols, l.G);
      const double e_rtn = output_error(l.w, r.deq, rows, cols, l.h);
      for (bool act : {false, true}) {
        SCOPED_TRACE(std::to_string(rows) + "x" + std::to_string(cols) + (act ? " act_order" : "") + " factors " +
                     std::to_string(factors));
        const std::vector<int64_t> order = gptq_detail::column_order(l.h.data(), cols, act);
        auto u = gptq_detail::inverse_cholesky_upper(l.h.data(), cols, 0.01, order);
        ASSERT_TRUE(u.ok());
        const Quantized ref =
            plain_gptq(l.w, rows, cols, l.h, l.G, 0.01, act, ZeroScale::CompressedTensors, &*u, /*localhessian=*/true);
        for (int block : {16, 128}) {
          const Quantized g = run_gptq(l.w, rows, cols, l.h, l.G,
                                       GptqOptions{.act_order = act, .block = block, .localhessian_scales = true});
          expect_same(g, ref, "blocked vs plain, local-Hessian scales");
        }
        const Quantized g_max = run_gptq(l.w, rows, cols, l.h, l.G, GptqOptions{.act_order = act});
        Quantized lh;
        lh.packed.resize(size_t(rows * cols / 2));
        lh.scales.resize(size_t(rows * cols / 16));
        lh.deq.resize(size_t(rows * cols));
        quantize_rows_localhessian(l.w.data(), rows, cols, l.G, l.h.data(), lh.packed.data(), lh.scales.data(),
                                   ZeroScale::CompressedTensors, nullptr);
        nvfp4::dequantize(lh.packed.data(), lh.scales.data(), rows, cols, l.G, lh.deq.data());
        const double e = output_error(l.w, ref.deq, rows, cols, l.h);
        std::printf("[ gptq ] %lldx%lld%s, %s inputs: output error / RTN: GPTQ+local-Hessian scales %.4f, "
                    "GPTQ (max scales) %.4f, local-Hessian RTN %.4f\n",
                    (long long)rows, (long long)cols, act ? " act_order" : "",
                    factors == 1.0 ? "strongly correlated" : "weakly correlated", e / e_rtn,
                    output_error(l.w, g_max.deq, rows, cols, l.h) / e_rtn,
                    output_error(l.w, lh.deq, rows, cols, l.h) / e_rtn);
        EXPECT_LT(e, e_rtn);
      }
    }
  }
}

TEST(Gptq, ResultDoesNotDependOnThreadCount) {
  const uint64_t seed = fresh_seed();
  SCOPED_TRACE("seed " + std::to_string(seed));
  std::mt19937_64 rng(seed);
  Layer l = random_layer(rng, 150, 320, 640);
  const int saved = omp_get_max_threads();
  for (auto [act, lh] : {std::pair{false, false}, {true, false}, {false, true}}) {
    GptqOptions opt;
    opt.act_order = act;
    opt.block = 64;
    opt.localhessian_scales = lh;
    omp_set_num_threads(1);
    gptq_detail::clear_factor_cache();
    const Quantized one = run_gptq(l.w, 150, 320, l.h, l.G, opt);
    omp_set_num_threads(2);
    gptq_detail::clear_factor_cache();
    const Quantized two = run_gptq(l.w, 150, 320, l.h, l.G, opt);
    omp_set_num_threads(3);
    gptq_detail::clear_factor_cache();
    const Quantized three = run_gptq(l.w, 150, 320, l.h, l.G, opt);
    expect_same(one, two, "1 vs 2 threads");
    expect_same(one, three, "1 vs 3 threads");
    EXPECT_EQ(one.err.sum_sq_err, two.err.sum_sq_err);
    EXPECT_EQ(one.err.sum_sq_err, three.err.sum_sq_err);
  }
  omp_set_num_threads(saved);
}

// The factor cache is keyed by H's contents: H changed in place (same address) gets its own factor, a
// copy of it elsewhere reuses that one, and every result equals the one computed with an empty cache.
TEST(Gptq, FactorCacheFollowsTheContentsOfH) {
  const uint64_t seed = fresh_seed();
  SCOPED_TRACE("seed " + std::to_string(seed));
  std::mt19937_64 rng(seed);
  Layer l = random_layer(rng, 40, 128, 256);
  GptqOptions opt;
  gptq_detail::clear_factor_cache();
  const Quantized first = run_gptq(l.w, 40, 128, l.h, l.G, opt);
  const Quantized again = run_gptq(l.w, 40, 128, l.h, l.G, opt);
  expect_same(first, again, "cached");
  std::vector<double> h = l.h;
  const Quantized same_h = run_gptq(l.w, 40, 128, h, l.G, opt);
  expect_same(first, same_h, "a copy of H");
  std::vector<double> changed = random_layer(rng, 1, 128, 256).h;
  h = changed;  // in place
  const Quantized in_place = run_gptq(l.w, 40, 128, h, l.G, opt);
  gptq_detail::clear_factor_cache();
  const Quantized fresh = run_gptq(l.w, 40, 128, changed, l.G, opt);
  expect_same(in_place, fresh, "H changed in place");
  EXPECT_NE(in_place.packed, first.packed);
  opt.damp = 0.1;
  const Quantized damped = run_gptq(l.w, 40, 128, changed, l.G, opt);
  gptq_detail::clear_factor_cache();
  expect_same(damped, run_gptq(l.w, 40, 128, changed, l.G, opt), "another damp");
}

TEST(Gptq, DeadColumnsKeepTheirWeights) {
  const uint64_t seed = fresh_seed();
  SCOPED_TRACE("seed " + std::to_string(seed));
  std::mt19937_64 rng(seed);
  const int64_t rows = 40, cols = 128, n = 300;
  std::vector<double> x = random_inputs(rng, n, cols);
  // Channels 16..31 (a whole group) and 50, 77 never fire.
  std::vector<int64_t> dead = {50, 77};
  for (int64_t c = 16; c < 32; ++c) dead.push_back(c);
  for (int64_t s = 0; s < n; ++s) {
    for (int64_t c : dead) x[size_t(s * cols + c)] = 0.0;
  }
  const std::vector<double> h = second_moment(x, n, cols);
  const std::vector<float> w = random_weights(rng, rows, cols);
  const float G = global_scale_of(w);
  for (bool act : {false, true}) {
    SCOPED_TRACE(act ? "act_order" : "in order");
    GptqOptions opt;
    opt.act_order = act;
    const Quantized g = run_gptq(w, rows, cols, h, G, opt);
    const Quantized r = rtn(w, rows, cols, G);
    // The all-dead group neither sends nor receives error: exactly RTN there.
    for (int64_t row = 0; row < rows; ++row) {
      EXPECT_EQ(g.scales[size_t(row * cols / 16 + 1)], r.scales[size_t(row * cols / 16 + 1)]);
      for (int64_t c = 16; c < 32; c += 2) {
        EXPECT_EQ(g.packed[size_t((row * cols + c) / 2)], r.packed[size_t((row * cols + c) / 2)]);
      }
    }
    // Weights kept, not zeroed: the dead columns dequantize to what RTN-like rounding gives, not 0.
    int64_t nonzero = 0;
    for (int64_t row = 0; row < rows; ++row) nonzero += g.deq[size_t(row * cols + 50)] != 0.0f;
    EXPECT_GT(nonzero, 0);
    EXPECT_LT(output_error(w, g.deq, rows, cols, h), output_error(w, r.deq, rows, cols, h));
  }
}

TEST(Gptq, ErrorsNameTheProblem) {
  const int64_t rows = 4, cols = 32;
  std::vector<float> w(size_t(rows * cols), 0.5f);
  std::vector<double> h(size_t(cols * cols), 0.0);
  for (int64_t j = 0; j < cols; ++j) h[size_t(j * cols + j)] = 1.0;
  std::vector<uint8_t> packed(size_t(rows * cols / 2)), scales(size_t(rows * cols / 16));
  auto run = [&](const float* wp, int64_t c, const double* hp, float G, GptqOptions opt) {
    return gptq_quantize(wp, rows, c, hp, G, opt, packed.data(), scales.data(), ZeroScale::CompressedTensors,
                         nullptr, nullptr);
  };
  auto message = [](const Status& s) { return s.ok() ? std::string("(ok)") : s.error().message; };

  Status s = run(w.data(), 24, h.data(), 1.0f, {});
  EXPECT_NE(message(s).find("multiple of 16"), std::string::npos) << message(s);

  std::vector<float> wn = w;
  wn[size_t(2 * cols + 5)] = std::numeric_limits<float>::quiet_NaN();
  s = run(wn.data(), cols, h.data(), 1.0f, {});
  EXPECT_NE(message(s).find("W[2, 5] is NaN"), std::string::npos) << message(s);
  wn[size_t(2 * cols + 5)] = -std::numeric_limits<float>::infinity();
  s = run(wn.data(), cols, h.data(), 1.0f, {});
  EXPECT_NE(message(s).find("W[2, 5] is Inf"), std::string::npos) << message(s);

  std::vector<double> hn = h;
  hn[size_t(3 * cols + 1)] = std::numeric_limits<double>::quiet_NaN();
  s = run(w.data(), cols, hn.data(), 1.0f, {});
  EXPECT_NE(message(s).find("H[3, 1] is NaN"), std::string::npos) << message(s);

  hn = h;
  hn[size_t(7 * cols + 7)] = -1.0;
  s = run(w.data(), cols, hn.data(), 1.0f, {});
  EXPECT_NE(message(s).find("H[7, 7] is negative"), std::string::npos) << message(s);

  hn = h;  // indefinite: [[1, 2], [2, 1]] in channels 0 and 1
  hn[1] = hn[size_t(cols)] = 2.0;
  s = run(w.data(), cols, hn.data(), 1.0f, GptqOptions{.damp = 0.0});
  EXPECT_NE(message(s).find("not positive definite"), std::string::npos) << message(s);

  s = run(w.data(), cols, h.data(), std::numeric_limits<float>::infinity(), {});
  EXPECT_NE(message(s).find("global scale"), std::string::npos) << message(s);
  s = run(w.data(), cols, h.data(), 0.0f, {});
  EXPECT_NE(message(s).find("global scale"), std::string::npos) << message(s);
  s = run(w.data(), cols, h.data(), 1.0f, GptqOptions{.block = 24});
  EXPECT_NE(message(s).find("block must be"), std::string::npos) << message(s);
  s = run(w.data(), cols, h.data(), 1.0f, GptqOptions{.damp = -0.1});
  EXPECT_NE(message(s).find("damp"), std::string::npos) << message(s);
  s = run(w.data(), cols, nullptr, 1.0f, {});
  EXPECT_FALSE(s.ok());
  EXPECT_TRUE(run(w.data(), cols, h.data(), 1.0f, {}).ok());
}

}  // namespace
}  // namespace fp4c::quant
