// runtime::LayerTape: its forward against runtime::Forward::layer (plain and W4A4), its backward against
// central finite differences of a float64 reference layer (every Linear's weight gradient, GQA, RoPE, biases,
// causal softmax, SwiGLU, both norms), the same gradients at one and two threads, and what it refuses.
#include <gtest/gtest.h>
#include <omp.h>

#include <cmath>
#include <random>

#include "runtime/forward.h"
#include "runtime/layer_grad.h"
#include "test/support/forward_reference.h"

namespace fp4c::testing {
namespace {

using reference::Matrix;

// Three sequences of 5, 11 and 17 tokens of random hidden states [tokens, hidden].
struct Input {
  std::vector<float> x;
  std::vector<int64_t> offsets{0, 5, 16, 33};
};

Input random_input(uint64_t seed, int64_t hidden) {
  Input in;
  std::mt19937_64 rng(seed);
  std::normal_distribution<float> n(0.0f, 1.0f);
  in.x.resize(size_t(in.offsets.back() * hidden));
  for (auto& v : in.x) v = n(rng);
  return in;
}

// The layer in float64 with its Linears' weights given in double (so that they can be perturbed finely).
struct RefWeights {
  std::vector<double> q, k, v, o, gate, up, down;
};

RefWeights ref_weights(const runtime::LayerParams& p) {
  auto d = [](const std::vector<float>& w) { return std::vector<double>(w.begin(), w.end()); };
  return {d(p.q.weight), d(p.k.weight), d(p.v.weight), d(p.o.weight), d(p.gate.weight), d(p.up.weight), d(p.down.weight)};
}

Matrix ref_linear(const Matrix& x, const std::vector<double>& w, const std::vector<float>& bias, int64_t out) {
  const size_t in = x.empty() ? 0 : x[0].size();
  Matrix y(x.size(), std::vector<double>(size_t(out)));
  for (size_t r = 0; r < x.size(); ++r)
    for (int64_t o = 0; o < out; ++o) {
      double acc = bias.empty() ? 0.0 : double(bias[size_t(o)]);
      for (size_t i = 0; i < in; ++i) acc += x[r][i] * w[size_t(o) * in + i];
      y[r][size_t(o)] = acc;
    }
  return y;
}

// sum(out * R) over every token of every sequence, out the layer applied to `in`.
double ref_loss(const ir::ModelConfig& c, const runtime::LayerParams& p, const RefWeights& w, const Input& in,
                const std::vector<float>& R) {
  const int64_t H = c.hidden_size, nH = c.num_attention_heads, nKV = c.num_key_value_heads, hd = c.head_dim;
  const std::vector<double> inv_freq = reference::reference_inv_freq(c);
  const int64_t half = int64_t(inv_freq.size());
  double loss = 0;
  for (size_t s = 0; s + 1 < in.offsets.size(); ++s) {
    const int64_t o0 = in.offsets[s], L = in.offsets[s + 1] - o0;
    Matrix x(static_cast<size_t>(L), std::vector<double>(static_cast<size_t>(H)));
    for (int64_t t = 0; t < L; ++t)
      for (int64_t i = 0; i < H; ++i) x[size_t(t)][size_t(i)] = in.x[size_t((o0 + t) * H + i)];
    const Matrix xn = reference::rms_norm(x, p.input_norm, c.rms_norm_eps);
    Matrix q = ref_linear(xn, w.q, p.q.bias, p.q.out), k = ref_linear(xn, w.k, p.k.bias, p.k.out),
           v = ref_linear(xn, w.v, p.v.bias, p.v.out);
    auto rope = [&](Matrix& t, int64_t heads) {
      for (int64_t pos = 0; pos < L; ++pos)
        for (int64_t h = 0; h < heads; ++h)
          for (int64_t i = 0; i < half; ++i) {
            const double a = double(pos) * inv_freq[size_t(i)];
            double& x1 = t[size_t(pos)][size_t(h * hd + i)];
            double& x2 = t[size_t(pos)][size_t(h * hd + i + half)];
            const double r1 = x1 * std::cos(a) - x2 * std::sin(a), r2 = x2 * std::cos(a) + x1 * std::sin(a);
            x1 = r1;
            x2 = r2;
          }
    };
    rope(q, nH);
    rope(k, nKV);
    Matrix attn(size_t(L), std::vector<double>(size_t(nH * hd), 0.0));
    for (int64_t h = 0; h < nH; ++h) {
      const int64_t kh = h / (nH / nKV);
      for (int64_t i = 0; i < L; ++i) {
        std::vector<double> sc(size_t(i + 1));
        double mx = -INFINITY;
        for (int64_t t = 0; t <= i; ++t) {
          double dot = 0;
          for (int64_t d = 0; d < hd; ++d) dot += q[size_t(i)][size_t(h * hd + d)] * k[size_t(t)][size_t(kh * hd + d)];
          sc[size_t(t)] = dot / std::sqrt(double(hd));
          mx = std::max(mx, sc[size_t(t)]);
        }
        double sum = 0;
        for (double& e : sc) sum += (e = std::exp(e - mx));
        for (int64_t t = 0; t <= i; ++t)
          for (int64_t d = 0; d < hd; ++d)
            attn[size_t(i)][size_t(h * hd + d)] += sc[size_t(t)] / sum * v[size_t(t)][size_t(kh * hd + d)];
      }
    }
    const Matrix o = ref_linear(attn, w.o, p.o.bias, p.o.out);
    for (int64_t t = 0; t < L; ++t)
      for (int64_t i = 0; i < H; ++i) x[size_t(t)][size_t(i)] += o[size_t(t)][size_t(i)];
    const Matrix xn2 = reference::rms_norm(x, p.post_norm, c.rms_norm_eps);
    const Matrix g = ref_linear(xn2, w.gate, p.gate.bias, p.gate.out), u = ref_linear(xn2, w.up, p.up.bias, p.up.out);
    Matrix m = g;
    for (size_t t = 0; t < m.size(); ++t)
      for (size_t i = 0; i < m[t].size(); ++i) m[t][i] = g[t][i] / (1 + std::exp(-g[t][i])) * u[t][i];
    const Matrix d = ref_linear(m, w.down, p.down.bias, p.down.out);
    for (int64_t t = 0; t < L; ++t)
      for (int64_t i = 0; i < H; ++i)
        loss += (x[size_t(t)][size_t(i)] + d[size_t(t)][size_t(i)]) * double(R[size_t((o0 + t) * H + i)]);
  }
  return loss;
}

double rel_diff(const std::vector<float>& a, const std::vector<float>& b) {
  double e = 0, r = 0;
  for (size_t i = 0; i < a.size(); ++i) {
    e += (double(a[i]) - double(b[i])) * (double(a[i]) - double(b[i]));
    r += double(b[i]) * double(b[i]);
  }
  return std::sqrt(e / r);
}

TEST(LayerTape, ForwardMatchesTheRuntimeLayer) {
  const uint64_t seed = std::random_device{}();
  SCOPED_TRACE("seed " + std::to_string(seed));
  for (bool llama3 : {false, true})
    for (bool w4a4 : {false, true}) {
      SCOPED_TRACE(std::string(llama3 ? "llama3 RoPE" : "default RoPE") + (w4a4 ? ", W4A4" : ""));
      const auto m = reference::tiny_model(llama3, seed);
      runtime::LayerParams p = m.layers[1];
      if (w4a4)
        for (runtime::LinearParams* l : {&p.q, &p.k, &p.v, &p.o, &p.gate, &p.up, &p.down})
          l->input_global_scale = nvfp4::global_scale(4.0f);
      const Input in = random_input(seed + 1, m.config.hidden_size);
      runtime::LayerTape tape(m.config, 1);
      std::vector<float> out(in.x.size());
      ASSERT_TRUE(tape.forward(p, in.x.data(), in.offsets, out.data()).ok());
      runtime::Forward forward(m.config, {});
      runtime::Activations acts;
      acts.offsets = in.offsets;
      acts.hidden.assign(in.x.begin(), in.x.end());
      ASSERT_TRUE(forward.layer(1, p, acts).ok());
      const std::vector<float> want(acts.hidden.begin(), acts.hidden.end());
      // W4A4: a last-bit difference before a fake quantization can move a value to the next FP4 step.
      EXPECT_LT(rel_diff(out, want), w4a4 ? 2e-3 : 2e-6);
      EXPECT_GT(rel_diff(in.x, want), 1e-2);   // the layer did something
    }
}

TEST(LayerTape, BackwardMatchesFiniteDifferences) {
  const uint64_t seed = std::random_device{}();
  SCOPED_TRACE("seed " + std::to_string(seed));
  const auto m = reference::tiny_model(/*llama3_scaling=*/true, seed);   // q/k/v biases, GQA 4/2
  const runtime::LayerParams& p = m.layers[0];
  const ir::ModelConfig& c = m.config;
  const Input in = random_input(seed + 7, c.hidden_size);
  std::vector<float> R(in.x.size());
  std::mt19937_64 rng(seed + 11);
  std::normal_distribution<float> n(0.0f, 1.0f);
  for (auto& r : R) r = n(rng);

  runtime::LayerTape tape(c, 0);
  std::vector<float> out(in.x.size());
  ASSERT_TRUE(tape.forward(p, in.x.data(), in.offsets, out.data()).ok());
  runtime::LayerGradients g;
  ASSERT_TRUE(tape.backward(R.data(), g).ok());   // d(sum(out * R))/d(out) = R

  const RefWeights base = ref_weights(p);
  struct Case {
    const char* name;
    std::vector<double> RefWeights::*w;
    const std::vector<float>* grad;
  };
  const Case cases[] = {{"q", &RefWeights::q, &g.q},          {"k", &RefWeights::k, &g.k},
                        {"v", &RefWeights::v, &g.v},          {"o", &RefWeights::o, &g.o},
                        {"gate", &RefWeights::gate, &g.gate}, {"up", &RefWeights::up, &g.up},
                        {"down", &RefWeights::down, &g.down}};
  for (const Case& cs : cases) {
    SCOPED_TRACE(cs.name);
    const std::vector<float>& grad = *cs.grad;
    ASSERT_EQ(grad.size(), (base.*cs.w).size());
    double gmax = 0;
    for (float x : grad) gmax = std::max(gmax, double(std::fabs(x)));
    ASSERT_GT(gmax, 0.0);
    std::uniform_int_distribution<size_t> pick(0, grad.size() - 1);
    for (int trial = 0; trial < 6; ++trial) {
      const size_t i = pick(rng);
      const double h = 1e-5;
      RefWeights plus = base, minus = base;
      (plus.*cs.w)[i] += h;
      (minus.*cs.w)[i] -= h;
      const double fd = (ref_loss(c, p, plus, in, R) - ref_loss(c, p, minus, in, R)) / (2 * h);
      EXPECT_NEAR(grad[i], fd, 1e-4 * gmax + 1e-6) << "element " << i;
    }
  }
}

TEST(LayerTape, SameGradientsAtOneAndTwoThreads) {
  const auto m = reference::tiny_model(false, 5);
  runtime::LayerParams p = m.layers[0];
  for (runtime::LinearParams* l : {&p.q, &p.k, &p.v, &p.o, &p.gate, &p.up, &p.down})
    l->input_global_scale = nvfp4::global_scale(4.0f);
  const Input in = random_input(6, m.config.hidden_size);
  std::vector<float> R(in.x.size(), 0.5f);
  auto run = [&](int threads) {
    runtime::LayerTape tape(m.config, 0, threads);
    std::vector<float> out(in.x.size());
    EXPECT_TRUE(tape.forward(p, in.x.data(), in.offsets, out.data()).ok());
    runtime::LayerGradients g;
    EXPECT_TRUE(tape.backward(R.data(), g).ok());
    return std::pair(out, g);
  };
  const auto [o1, g1] = run(1);
  const auto [o2, g2] = run(2);
  EXPECT_EQ(o1, o2);
  for (auto f : {&runtime::LayerGradients::q, &runtime::LayerGradients::k, &runtime::LayerGradients::v,
                 &runtime::LayerGradients::o, &runtime::LayerGradients::gate, &runtime::LayerGradients::up,
                 &runtime::LayerGradients::down})
    EXPECT_EQ(g1.*f, g2.*f);
}

TEST(LayerTape, RefusesWhatItDoesNotImplementByName) {
  auto m = reference::tiny_model(false, 3, /*head_norms=*/true);
  auto st = runtime::LayerTape::check(m.config, 0, m.layers[0]);
  ASSERT_FALSE(st.ok());
  EXPECT_NE(st.error().message.find("q/k norms"), std::string::npos) << st.error().message;

  m = reference::tiny_model(false, 3);
  ir::ModelConfig c = m.config;
  c.sliding_window = 4;
  c.sliding_layers = {true, true};
  st = runtime::LayerTape::check(c, 0, m.layers[0]);
  ASSERT_FALSE(st.ok());
  EXPECT_NE(st.error().message.find("sliding-window"), std::string::npos) << st.error().message;

  c = m.config;
  c.hidden_act = "gelu_pytorch_tanh";
  st = runtime::LayerTape::check(c, 0, m.layers[0]);
  ASSERT_FALSE(st.ok());
  EXPECT_NE(st.error().message.find("gelu_pytorch_tanh"), std::string::npos) << st.error().message;

  runtime::LayerTape tape(m.config, 0);
  runtime::LayerGradients g;
  EXPECT_FALSE(tape.backward(nullptr, g).ok());   // before any forward
}

}  // namespace
}  // namespace fp4c::testing
