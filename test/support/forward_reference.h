// The float64 reference decoder forward of test/runtime/forward_test.cpp (naive loops, one sequence
// and one head at a time) and its tiny random model, for the tests of other engines (the CUDA engine's
// cuda_engine_test) to run the same cases; forward_test.cpp uses it too.
#pragma once

#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <map>
#include <numbers>
#include <random>
#include <string>
#include <vector>

#include "formats/bf16.h"
#include "formats/nvfp4.h"
#include "runtime/forward.h"

namespace fp4c::testing::reference {

using namespace fp4c::runtime;

using Matrix = std::vector<std::vector<double>>;  // [rows][cols]

// ---------------------------------------------------------------------------------------------
// A tiny random model.

struct TinyModel {
  ir::ModelConfig config;
  std::vector<float> embedding, final_norm;
  std::vector<LayerParams> layers;
  LinearParams lm_head;
};

inline ir::ModelConfig tiny_config(bool llama3_scaling) {
  ir::ModelConfig c;
  c.architecture = "Qwen2ForCausalLM";
  c.model_type = "qwen2";
  c.hidden_size = 64;
  c.intermediate_size = 96;
  c.num_hidden_layers = 2;
  c.num_attention_heads = 4;
  c.num_key_value_heads = 2;
  c.head_dim = 16;
  c.vocab_size = 80;
  c.max_position_embeddings = 256;
  c.rms_norm_eps = 1e-6;
  c.rope_theta = 10000.0;
  c.attention_bias = true;
  if (llama3_scaling) {
    // With head_dim 16 the wavelengths are 6.3, 20, 63, 199, ...: one high, two medium (smoothed)
    // and five low frequencies against original_max_position_embeddings 64.
    c.rope_scaling.type = "llama3";
    c.rope_scaling.factor = 8.0;
    c.rope_scaling.low_freq_factor = 1.0;
    c.rope_scaling.high_freq_factor = 4.0;
    c.rope_scaling.original_max_position_embeddings = 64;
  }
  return c;
}

// head_norms: Qwen3-style per-head RMSNorm weights of q and k (far from 1, so leaving them out shows).
inline TinyModel tiny_model(bool llama3_scaling, uint64_t seed, bool head_norms = false) {
  TinyModel m;
  m.config = tiny_config(llama3_scaling);
  const ir::ModelConfig& c = m.config;
  std::mt19937_64 rng(seed);
  std::normal_distribution<float> normal(0.0f, 1.0f);
  auto fill = [&](size_t n, float scale, float offset) {
    std::vector<float> v(n);
    for (auto& x : v) x = offset + scale * normal(rng);
    return v;
  };
  auto linear = [&](int64_t out, int64_t in, bool bias) {
    LinearParams p;
    p.out = out;
    p.in = in;
    p.weight = fill(size_t(out * in), 1.0f / std::sqrt(float(in)), 0);
    if (bias) p.bias = fill(size_t(out), 0.1f, 0);
    return p;
  };
  const int64_t H = c.hidden_size, I = c.intermediate_size, Dq = c.num_attention_heads * c.head_dim,
                Dkv = c.num_key_value_heads * c.head_dim;
  m.embedding = fill(size_t(c.vocab_size * H), 1.0f, 0);
  for (int l = 0; l < c.num_hidden_layers; ++l) {
    LayerParams p;
    p.input_norm = fill(size_t(H), 0.1f, 1);
    p.post_norm = fill(size_t(H), 0.1f, 1);
    p.q = linear(Dq, H, true);
    p.k = linear(Dkv, H, true);
    p.v = linear(Dkv, H, true);
    p.o = linear(H, Dq, false);
    p.gate = linear(I, H, false);
    p.up = linear(I, H, false);
    p.down = linear(H, I, false);
    if (head_norms) {
      p.q_norm = fill(size_t(c.head_dim), 0.5f, 1);
      p.k_norm = fill(size_t(c.head_dim), 0.5f, 1);
    }
    m.layers.push_back(std::move(p));
  }
  m.final_norm = fill(size_t(H), 0.1f, 1);
  m.lm_head = linear(c.vocab_size, H, false);
  return m;
}

// A tiny mixture of experts: tiny_model with layer 0 sparse (6 experts, top 2, experts of 32) and layer 1 dense
// (as Qwen3-MoE's mlp_only_layers); the router's rows scaled by `router_scale` (large: confident routing).
inline TinyModel tiny_moe_model(uint64_t seed, bool norm_topk_prob, float router_scale = 1.0f) {
  TinyModel m = tiny_model(false, seed, true);
  ir::ModelConfig& c = m.config;
  c.architecture = "Qwen3MoeForCausalLM";
  c.model_type = "qwen3_moe";
  c.attention_bias = false;
  c.num_experts = 6;
  c.num_experts_per_tok = 2;
  c.moe_intermediate_size = 32;
  c.norm_topk_prob = norm_topk_prob;
  c.moe_layers = {true, false};
  std::mt19937_64 rng(seed + 1000);
  std::normal_distribution<float> normal(0.0f, 1.0f);
  auto linear = [&](int64_t out, int64_t in, float scale) {
    LinearParams p;
    p.out = out;
    p.in = in;
    p.weight.resize(size_t(out * in));
    for (auto& x : p.weight) x = scale * normal(rng) / std::sqrt(float(in));
    return p;
  };
  const int64_t H = c.hidden_size, I = c.moe_intermediate_size;
  LayerParams& p = m.layers[0];
  p.gate = p.up = p.down = LinearParams{};
  p.router = linear(c.num_experts, H, router_scale);
  for (int64_t e = 0; e < c.num_experts; ++e)
    p.experts.push_back({linear(I, H, 1.0f), linear(I, H, 1.0f), linear(H, I, 1.0f)});
  return m;
}

inline std::vector<std::vector<int32_t>> tiny_sequences(int64_t vocab) {
  std::mt19937_64 rng(99);
  std::vector<std::vector<int32_t>> out;
  for (int len : {1, 7, 70, 33}) {  // 70: two blocks of query positions
    std::vector<int32_t> s(static_cast<size_t>(len));
    for (auto& id : s) id = int32_t(rng() % uint64_t(vocab));
    out.push_back(std::move(s));
  }
  return out;
}

// ---------------------------------------------------------------------------------------------
// The float64 reference.

struct ReferenceOptions {
  bool w4a4 = false;  // fake-quantize Linear inputs with their input global scales, as NVFP4.md §3
  bool bf16 = false;  // round every matrix product's inputs to BF16
};

struct ReferenceResult {
  std::vector<Matrix> logits;  // per sequence [len][vocab]
  // Linear inputs per (layer, role), per sequence [len][cols], before any quantization.
  std::map<std::pair<int, ir::Role>, std::vector<Matrix>> inputs;
};

inline double round_bf16(double x) { return bf16::to_float(bf16::from_float(float(x))); }

// x' of each row with NVFP4 block scales and global scale G, through the formats' reference.
inline Matrix fake_quantize(const Matrix& x, float G) {
  Matrix out = x;
  for (auto& row : out) {
    std::vector<float> f(row.begin(), row.end());
    std::vector<uint8_t> packed(f.size() / 2), scales(f.size() / 16);
    nvfp4::quantize_f32_ref(f.data(), 1, int64_t(f.size()), G, packed.data(), scales.data());
    nvfp4::dequantize(packed.data(), scales.data(), 1, int64_t(f.size()), G, f.data());
    row.assign(f.begin(), f.end());
  }
  return out;
}

inline Matrix rms_norm(const Matrix& x, const std::vector<float>& w, double eps) {
  Matrix out = x;
  for (auto& row : out) {
    double ss = 0;
    for (double v : row) ss += v * v;
    const double r = 1.0 / std::sqrt(ss / double(row.size()) + eps);
    for (size_t i = 0; i < row.size(); ++i) row[i] = double(w[i]) * row[i] * r;
  }
  return out;
}

inline Matrix apply_linear(const Matrix& x_in, const LinearParams& p, const ReferenceOptions& opt) {
  Matrix x = x_in;
  if (opt.w4a4 && p.input_global_scale) x = fake_quantize(x, *p.input_global_scale);
  Matrix y(x.size(), std::vector<double>(size_t(p.out)));
  for (size_t r = 0; r < x.size(); ++r)
    for (int64_t o = 0; o < p.out; ++o) {
      double acc = p.bias.empty() ? 0.0 : double(p.bias[size_t(o)]);
      for (int64_t i = 0; i < p.in; ++i) {
        double a = x[r][size_t(i)], w = p.weight[size_t(o * p.in + i)];
        if (opt.bf16) a = round_bf16(a), w = round_bf16(w);
        acc += a * w;
      }
      y[r][size_t(o)] = acc;
    }
  return y;
}

inline std::vector<double> reference_inv_freq(const ir::ModelConfig& c) {
  // transformers: _compute_default_rope_parameters, then _compute_llama3_parameters.
  // Partial rotary (Phi-3's partial_rotary_factor): the frequencies span rotary_dim.
  const int64_t dim = c.rotary_dim > 0 ? c.rotary_dim : c.head_dim;
  std::vector<double> inv;
  for (int64_t i = 0; i < dim; i += 2) inv.push_back(1.0 / std::pow(c.rope_theta, double(i) / double(dim)));
  if (c.rope_scaling.type != "llama3") return inv;
  const auto& rs = c.rope_scaling;
  const double old_len = double(rs.original_max_position_embeddings);
  for (double& f : inv) {
    const double wavelen = 2 * std::numbers::pi / f;
    if (wavelen < old_len / rs.high_freq_factor) continue;  // high frequency: unchanged
    if (wavelen > old_len / rs.low_freq_factor) {
      f = f / rs.factor;  // low frequency
      continue;
    }
    const double smooth = (old_len / wavelen - rs.low_freq_factor) / (rs.high_freq_factor - rs.low_freq_factor);
    f = (1 - smooth) * f / rs.factor + smooth * f;
  }
  return inv;
}

inline ReferenceResult reference_forward(const TinyModel& m, const std::vector<std::vector<int32_t>>& seqs,
                                  const ReferenceOptions& opt) {
  const ir::ModelConfig& c = m.config;
  const int64_t H = c.hidden_size, nH = c.num_attention_heads, nKV = c.num_key_value_heads, hd = c.head_dim;
  const std::vector<double> inv_freq = reference_inv_freq(c);
  auto mm_in = [&](double v) { return opt.bf16 ? round_bf16(v) : v; };
  ReferenceResult res;
  for (const auto& ids : seqs) {
    const size_t L = ids.size();
    Matrix x(L, std::vector<double>(size_t(H)));
    for (size_t p = 0; p < L; ++p)
      for (int64_t i = 0; i < H; ++i) x[p][size_t(i)] = m.embedding[size_t(ids[p] * H + i)];
    for (int l = 0; l < c.num_hidden_layers; ++l) {
      const LayerParams& w = m.layers[size_t(l)];
      const Matrix xn = rms_norm(x, w.input_norm, c.rms_norm_eps);
      res.inputs[{l, ir::Role::Q}].push_back(xn);
      Matrix q = apply_linear(xn, w.q, opt), k = apply_linear(xn, w.k, opt), v = apply_linear(xn, w.v, opt);
      auto head_norm = [&](Matrix& t, int64_t heads, const std::vector<float>& wn) {
        if (wn.empty()) return;
        for (size_t p = 0; p < L; ++p)
          for (int64_t h = 0; h < heads; ++h) {
            double ss = 0;
            for (int64_t i = 0; i < hd; ++i) ss += t[p][size_t(h * hd + i)] * t[p][size_t(h * hd + i)];
            const double r = 1.0 / std::sqrt(ss / double(hd) + c.rms_norm_eps);
            for (int64_t i = 0; i < hd; ++i) t[p][size_t(h * hd + i)] *= r * wn[size_t(i)];
          }
      };
      head_norm(q, nH, w.q_norm);
      head_norm(k, nKV, w.k_norm);
      auto rope = [&](Matrix& t, int64_t heads) {
        for (size_t p = 0; p < L; ++p)
          for (int64_t h = 0; h < heads; ++h)
            for (int64_t i = 0; i < int64_t(inv_freq.size()); ++i) {   // dims past rotary_dim: unchanged
              const int64_t half = int64_t(inv_freq.size());
              const double a = double(p) * inv_freq[size_t(i)];
              double& x1 = t[p][size_t(h * hd + i)];
              double& x2 = t[p][size_t(h * hd + i + half)];
              const double r1 = x1 * std::cos(a) - x2 * std::sin(a), r2 = x2 * std::cos(a) + x1 * std::sin(a);
              x1 = r1;
              x2 = r2;
            }
      };
      rope(q, nH);
      rope(k, nKV);
      Matrix attn(L, std::vector<double>(size_t(nH * hd), 0.0));
      for (int64_t h = 0; h < nH; ++h) {
        const int64_t kh = h / (nH / nKV);
        const bool sliding = c.sliding_window && size_t(l) < c.sliding_layers.size() && c.sliding_layers[size_t(l)];
        for (size_t p = 0; p < L; ++p) {
          std::vector<double> s(p + 1);
          double mx = -INFINITY;
          // transformers' sliding-window mask: key t is visible from query p when p - t < window.
          const size_t first = sliding && p + 1 > size_t(*c.sliding_window) ? p + 1 - size_t(*c.sliding_window) : 0;
          for (size_t t = 0; t <= p; ++t) {
            if (t < first) {
              s[t] = -INFINITY;
              continue;
            }
            double dot = 0;
            for (int64_t i = 0; i < hd; ++i) dot += mm_in(q[p][size_t(h * hd + i)]) * mm_in(k[t][size_t(kh * hd + i)]);
            s[t] = dot / std::sqrt(double(hd));
            mx = std::max(mx, s[t]);
          }
          double sum = 0;
          for (double& e : s) sum += (e = std::exp(e - mx));
          for (size_t t = 0; t <= p; ++t)
            for (int64_t i = 0; i < hd; ++i)
              attn[p][size_t(h * hd + i)] += mm_in(s[t] / sum) * mm_in(v[t][size_t(kh * hd + i)]);
        }
      }
      res.inputs[{l, ir::Role::O}].push_back(attn);
      const Matrix o = apply_linear(attn, w.o, opt);
      for (size_t p = 0; p < L; ++p)
        for (int64_t i = 0; i < H; ++i) x[p][size_t(i)] += o[p][size_t(i)];
      const Matrix xn2 = rms_norm(x, w.post_norm, c.rms_norm_eps);
      res.inputs[{l, ir::Role::Gate}].push_back(xn2);
      if (c.moe_layer(l)) {
        // Router softmax over every expert, top k (ties to the lower index), renormalized when norm_topk_prob,
        // each chosen expert's SwiGLU weighted.
        const int64_t E = c.num_experts, K = c.num_experts_per_tok;
        const Matrix logits = apply_linear(xn2, w.router, opt);
        for (size_t p = 0; p < L; ++p) {
          double mx = -INFINITY, sum = 0;
          for (int64_t e = 0; e < E; ++e) mx = std::max(mx, logits[p][size_t(e)]);
          std::vector<double> prob(static_cast<size_t>(E));
          for (int64_t e = 0; e < E; ++e) sum += (prob[size_t(e)] = std::exp(logits[p][size_t(e)] - mx));
          for (double& v : prob) v /= sum;
          std::vector<int64_t> order(static_cast<size_t>(E));
          for (int64_t e = 0; e < E; ++e) order[size_t(e)] = e;
          std::stable_sort(order.begin(), order.end(), [&](int64_t a, int64_t b) { return prob[size_t(a)] > prob[size_t(b)]; });
          double chosen = 0;
          for (int64_t j = 0; j < K; ++j) chosen += prob[size_t(order[size_t(j)])];
          const Matrix row(1, xn2[p]);
          for (int64_t j = 0; j < K; ++j) {
            const int64_t e = order[size_t(j)];
            const double weight = c.norm_topk_prob ? prob[size_t(e)] / chosen : prob[size_t(e)];
            const auto& ex = w.experts[size_t(e)];
            const Matrix g = apply_linear(row, ex.gate, opt), u = apply_linear(row, ex.up, opt);
            Matrix act = g;
            for (size_t i = 0; i < act[0].size(); ++i) act[0][i] = g[0][i] / (1 + std::exp(-g[0][i])) * u[0][i];
            const Matrix d = apply_linear(act, ex.down, opt);
            for (int64_t i = 0; i < H; ++i) x[p][size_t(i)] += weight * d[0][size_t(i)];
          }
        }
        continue;
      }
      const Matrix g = apply_linear(xn2, w.gate, opt), u = apply_linear(xn2, w.up, opt);
      Matrix act = g;
      for (size_t p = 0; p < L; ++p)
        for (size_t i = 0; i < act[p].size(); ++i) act[p][i] = g[p][i] / (1 + std::exp(-g[p][i])) * u[p][i];
      res.inputs[{l, ir::Role::Down}].push_back(act);
      const Matrix d = apply_linear(act, w.down, opt);
      for (size_t p = 0; p < L; ++p)
        for (int64_t i = 0; i < H; ++i) x[p][size_t(i)] += d[p][size_t(i)];
    }
    res.logits.push_back(apply_linear(rms_norm(x, m.final_norm, c.rms_norm_eps), m.lm_head, opt));
    if (c.final_logit_softcapping > 0)   // Gemma's soft-capping: tanh(x / c) * c
      for (auto& row : res.logits.back())
        for (double& v : row) v = std::tanh(v / c.final_logit_softcapping) * c.final_logit_softcapping;
  }
  return res;
}

inline std::string sci(double v, const char* format = "%.3e") {
  char buf[32];
  std::snprintf(buf, sizeof buf, format, v);
  return buf;
}

// max |a - b| / max |b| over all sequences' rows.
inline double relative_error(const std::vector<float>& got, const std::vector<Matrix>& want) {
  double diff = 0, scale = 0;
  size_t k = 0;
  for (const Matrix& m : want)
    for (const auto& row : m)
      for (double w : row) {
        diff = std::max(diff, std::fabs(double(got[k++]) - w));
        scale = std::max(scale, std::fabs(w));
      }
  EXPECT_EQ(k, got.size());
  return diff / scale;
}

// Next-token NLL of every sequence from an engine's head: row p of a sequence predicts its id p + 1.
struct NextTokenNll {
  double nll = 0;
  int64_t predictions = 0;
  double ppl() const { return std::exp(nll / double(predictions)); }
};

inline NextTokenNll head_nll(const Engine& engine, const std::vector<float>& final_norm, const LinearParams& lm_head,
                             const Activations& acts, const std::vector<std::vector<int32_t>>& seqs) {
  std::vector<int32_t> next(size_t(acts.tokens()), -1);
  for (size_t s = 0; s < seqs.size(); ++s)
    for (size_t p = 0; p + 1 < seqs[s].size(); ++p) next[size_t(acts.offsets[s]) + p] = seqs[s][p + 1];
  const int64_t V = engine.config().vocab_size;
  NextTokenNll out;
  Status st = engine.head(final_norm, lm_head, acts, [&](int64_t first, const float* logits, int64_t rows) {
    for (int64_t r = 0; r < rows; ++r) {
      const int32_t target = next[size_t(first + r)];
      if (target < 0) continue;
      const float* row = logits + r * V;
      const double mx = *std::max_element(row, row + V);
      double sum = 0;
      for (int64_t i = 0; i < V; ++i) sum += std::exp(double(row[i]) - mx);
      out.nll += std::log(sum) + mx - double(row[target]);
      ++out.predictions;
    }
  });
  EXPECT_TRUE(st.ok()) << st.error().message;
  return out;
}

}  // namespace fp4c::testing::reference
