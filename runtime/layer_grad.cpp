#include "runtime/layer_grad.h"

#include <algorithm>
#include <cmath>
#include <cstring>
#include <string>

#include "runtime/activation_quant.h"
#include "runtime/attention.h"
#include "runtime/elementwise.h"
#include "runtime/matmul.h"
#include "runtime/thread_scope.h"

namespace fp4c::runtime {
namespace {

// A Linear's input as its GEMM takes it: fake-quantized with its input global scale (W4A4), else as is.
void linear_input(const LinearParams& p, const float* x, int64_t rows, std::vector<float>& out) {
  out.resize(size_t(rows * p.in));
  if (p.input_global_scale) fake_quantize_nvfp4(x, rows, p.in, *p.input_global_scale, out.data());
  else std::copy(x, x + rows * p.in, out.data());
}

// y[rows, out] = x W^T + b.
Status linear(const LinearParams& p, const float* x, int64_t rows, float* y) {
  FP4C_TRY(gemm_f32(rows, p.out, p.in, x, false, p.weight.data(), true, y));
  if (!p.bias.empty())
#pragma omp parallel for schedule(static) if (rows * p.out >= (1 << 16))
    for (int64_t r = 0; r < rows; ++r)
      for (int64_t o = 0; o < p.out; ++o) y[r * p.out + o] += p.bias[size_t(o)];
  return {};
}

// dW[out, in] = dy^T x (dy [rows, out], x [rows, in]).
Status weight_grad(const LinearParams& p, const float* dy, const float* x, int64_t rows, std::vector<float>& dw) {
  dw.resize(size_t(p.out * p.in));
  return gemm_f32(p.out, p.in, rows, dy, true, x, false, dw.data());
}

// dx[rows, in] = dy W (dy [rows, out]).
Status input_grad(const LinearParams& p, const float* dy, int64_t rows, float* dx) {
  return gemm_f32(rows, p.in, p.out, dy, false, p.weight.data(), false, dx);
}

// dx of y = w * x * r, r = 1 / sqrt(mean(x^2) + eps), per row: r (w dy) - x r^3 / n * sum(w dy x).
void rms_norm_backward(const float* x, const float* w, const float* dy, int64_t rows, int64_t cols, double eps,
                       float* dx) {
#pragma omp parallel for schedule(static) if (rows * cols >= (1 << 16))
  for (int64_t r = 0; r < rows; ++r) {
    const float* xr = x + r * cols;
    const float* dyr = dy + r * cols;
    double ss = 0, dot = 0;
    for (int64_t i = 0; i < cols; ++i) {
      ss += double(xr[i]) * double(xr[i]);
      dot += double(w[i]) * double(dyr[i]) * double(xr[i]);
    }
    const double rr = 1.0 / std::sqrt(ss / double(cols) + eps);
    const double c = dot * rr * rr * rr / double(cols);
    for (int64_t i = 0; i < cols; ++i) dx[r * cols + i] = float(rr * double(w[i]) * double(dyr[i]) - double(xr[i]) * c);
  }
}

}  // namespace

LayerTape::LayerTape(const ir::ModelConfig& config, int layer, int threads)
    : config_(config), layer_(layer), threads_(threads) {}

Status LayerTape::check(const ir::ModelConfig& c, int layer, const LayerParams& p) {
  const std::string where = "layer " + std::to_string(layer) + ": block-output reconstruction does not implement ";
  if (c.moe_layer(layer)) return make_error(where + "mixture-of-experts layers");
  if (!p.q_norm.empty() || !p.k_norm.empty()) return make_error(where + "q/k norms (Qwen3, Gemma 3)");
  if (!p.attn_out_norm.empty() || !p.mlp_out_norm.empty()) return make_error(where + "attention/MLP output norms (Gemma 3)");
  if (c.norm_plus_one) return make_error(where + "(1 + w) norms (Gemma)");
  if (c.hidden_act != "silu") return make_error(where + "the MLP activation '" + c.hidden_act + "' (only silu)");
  const AttentionShape shape = attention_shape(c, layer);
  if (shape.window > 0) return make_error(where + "sliding-window attention");
  if (shape.rotary_dim > 0 && shape.rotary_dim != shape.head_dim) return make_error(where + "partial rotary embeddings");
  if (shape.rope_factor != 1.0) return make_error(where + "a RoPE attention factor (yarn, longrope)");
  if (c.rope_scaling.type == "longrope") return make_error(where + "longrope");
  FP4C_TRY(check_rope_type(c));
  for (const LinearParams* l : {&p.q, &p.k, &p.v, &p.o, &p.gate, &p.up, &p.down}) {
    if (l->input_mxfp4) return make_error(where + "MXFP4 activations");
    if (l->out <= 0 || l->in <= 0 || int64_t(l->weight.size()) != l->out * l->in)
      return make_error("layer " + std::to_string(layer) + ": a Linear's weight does not match its shape");
  }
  const int64_t H = c.hidden_size, Dq = c.num_attention_heads * c.head_dim, Dkv = c.num_key_value_heads * c.head_dim;
  if (p.q.out != Dq || p.q.in != H || p.k.out != Dkv || p.v.out != Dkv || p.k.in != H || p.v.in != H || p.o.out != H ||
      p.o.in != Dq || p.gate.in != H || p.up.in != H || p.up.out != p.gate.out || p.down.in != p.gate.out ||
      p.down.out != H || int64_t(p.input_norm.size()) != H || int64_t(p.post_norm.size()) != H)
    return make_error("layer " + std::to_string(layer) + ": parameters do not match the config's shapes");
  return {};
}

Status LayerTape::forward(const LayerParams& p, const float* x, std::span<const int64_t> offsets, float* out) {
  FP4C_TRY(check(config_, layer_, p));
  ThreadScope threads(threads_);
  const ir::ModelConfig& c = config_;
  const int64_t H = c.hidden_size, nH = c.num_attention_heads, nKV = c.num_key_value_heads, hd = c.head_dim;
  const int64_t Dq = nH * hd, Dkv = nKV * hd, I = p.gate.out, half = hd / 2, grp = nH / nKV;
  params_ = &p;
  offsets_.assign(offsets.begin(), offsets.end());
  const int64_t T = offsets_.empty() ? 0 : offsets_.back();
  T_ = T;
  if (T == 0) return {};
  const int64_t nseq = int64_t(offsets_.size()) - 1;

  std::vector<float> xn(size_t(T * H));
  rms_norm(x, p.input_norm.data(), T, H, c.rms_norm_eps, xn.data());
  linear_input(p.q, xn.data(), T, xq_);
  linear_input(p.k, xn.data(), T, xk_);
  linear_input(p.v, xn.data(), T, xv_);
  std::vector<float> q(size_t(T * Dq)), k(size_t(T * Dkv));
  v_.resize(size_t(T * Dkv));
  FP4C_TRY(linear(p.q, xq_.data(), T, q.data()));
  FP4C_TRY(linear(p.k, xk_.data(), T, k.data()));
  FP4C_TRY(linear(p.v, xv_.data(), T, v_.data()));

  // RoPE tables as the runtime's attention computes them (double angles, float32 cos and sin).
  int64_t max_len = 0;
  for (int64_t s = 0; s < nseq; ++s) max_len = std::max(max_len, offsets_[size_t(s + 1)] - offsets_[size_t(s)]);
  const std::vector<double> inv_freq = rope_inv_freq(c, layer_);
  cos_.resize(size_t(max_len * half));
  sin_.resize(size_t(max_len * half));
  for (int64_t pos = 0; pos < max_len; ++pos)
    for (int64_t i = 0; i < half; ++i) {
      const double a = double(pos) * inv_freq[size_t(i)];
      cos_[size_t(pos * half + i)] = float(std::cos(a));
      sin_[size_t(pos * half + i)] = float(std::sin(a));
    }
  qr_.resize(size_t(T * Dq));
  kr_.resize(size_t(T * Dkv));
  const auto rotate = [&](const float* src, int64_t pos, float* dst) {
    const float* cs = cos_.data() + pos * half;
    const float* sn = sin_.data() + pos * half;
    for (int64_t i = 0; i < half; ++i) {
      const float x1 = src[i], x2 = src[i + half];
      dst[i] = x1 * cs[i] - x2 * sn[i];
      dst[i + half] = x2 * cs[i] + x1 * sn[i];
    }
  };
  for (int64_t s = 0; s < nseq; ++s)
#pragma omp parallel for schedule(static)
    for (int64_t t = offsets_[size_t(s)]; t < offsets_[size_t(s + 1)]; ++t) {
      const int64_t pos = t - offsets_[size_t(s)];
      for (int64_t h = 0; h < nH; ++h) rotate(&q[size_t(t * Dq + h * hd)], pos, &qr_[size_t(t * Dq + h * hd)]);
      for (int64_t h = 0; h < nKV; ++h) rotate(&k[size_t(t * Dkv + h * hd)], pos, &kr_[size_t(t * Dkv + h * hd)]);
    }

  // Causal attention per (sequence, head): probabilities kept, [len, len] (the upper triangle zero).
  prob_base_.assign(size_t(nseq * nH + 1), 0);
  for (int64_t s = 0; s < nseq; ++s) {
    const int64_t len = offsets_[size_t(s + 1)] - offsets_[size_t(s)];
    for (int64_t h = 0; h < nH; ++h) prob_base_[size_t(s * nH + h + 1)] = prob_base_[size_t(s * nH + h)] + len * len;
  }
  probs_.resize(size_t(prob_base_.back()));
  attn_.assign(size_t(T * Dq), 0.0f);
  const AttentionShape shape = attention_shape(c, layer_);
  const float scale = float(shape.scale > 0 ? shape.scale : 1.0 / std::sqrt(double(hd)));
#pragma omp parallel for schedule(dynamic, 1)
  for (int64_t task = 0; task < nseq * nH; ++task) {
    const int64_t s = task / nH, h = task % nH, j = h / grp;
    const int64_t o0 = offsets_[size_t(s)], len = offsets_[size_t(s + 1)] - o0;
    float* P = &probs_[size_t(prob_base_[size_t(task)])];
    std::vector<float> kt(size_t(hd * len));   // rotated keys transposed, [hd, len]
    for (int64_t t = 0; t < len; ++t)
      for (int64_t d = 0; d < hd; ++d) kt[size_t(d * len + t)] = kr_[size_t((o0 + t) * Dkv + j * hd + d)];
    for (int64_t i = 0; i < len; ++i) {
      float* row = P + i * len;
      std::fill(row, row + len, 0.0f);
      const float* qi = &qr_[size_t((o0 + i) * Dq + h * hd)];
      for (int64_t d = 0; d < hd; ++d) {
        const float qd = qi[d];
        const float* kd = &kt[size_t(d * len)];
#pragma omp simd
        for (int64_t t = 0; t <= i; ++t) row[t] += qd * kd[t];
      }
      float mx = -INFINITY;
      for (int64_t t = 0; t <= i; ++t) mx = std::max(mx, row[t] * scale);
      double sum = 0;
      for (int64_t t = 0; t <= i; ++t) {
        row[t] = std::exp(row[t] * scale - mx);
        sum += row[t];
      }
      const float inv = float(1.0 / sum);
      for (int64_t t = 0; t <= i; ++t) row[t] *= inv;
      float* ai = &attn_[size_t((o0 + i) * Dq + h * hd)];
      for (int64_t t = 0; t <= i; ++t) {
        const float pt = row[t];
        const float* vt = &v_[size_t((o0 + t) * Dkv + j * hd)];
#pragma omp simd
        for (int64_t d = 0; d < hd; ++d) ai[d] += pt * vt[d];
      }
    }
  }

  linear_input(p.o, attn_.data(), T, xo_);
  h1_.resize(size_t(T * H));
  FP4C_TRY(linear(p.o, xo_.data(), T, h1_.data()));
  add_inplace(h1_.data(), x, T * H);
  rms_norm(h1_.data(), p.post_norm.data(), T, H, c.rms_norm_eps, xn.data());
  linear_input(p.gate, xn.data(), T, xg_);
  linear_input(p.up, xn.data(), T, xu_);
  g_.resize(size_t(T * I));
  u_.resize(size_t(T * I));
  FP4C_TRY(linear(p.gate, xg_.data(), T, g_.data()));
  FP4C_TRY(linear(p.up, xu_.data(), T, u_.data()));
  std::vector<float> m(size_t(T * I));
#pragma omp parallel for simd schedule(static)
  for (int64_t i = 0; i < T * I; ++i) m[size_t(i)] = g_[size_t(i)] / (1.0f + std::exp(-g_[size_t(i)])) * u_[size_t(i)];
  linear_input(p.down, m.data(), T, xd_);
  FP4C_TRY(linear(p.down, xd_.data(), T, out));
  add_inplace(out, h1_.data(), T * H);
  return {};
}

Status LayerTape::backward(const float* dout, LayerGradients& grads) {
  if (!params_) return make_error("layer tape: backward before forward");
  ThreadScope threads(threads_);
  const LayerParams& p = *params_;
  const ir::ModelConfig& c = config_;
  const int64_t T = T_;
  const int64_t H = c.hidden_size, nH = c.num_attention_heads, nKV = c.num_key_value_heads, hd = c.head_dim;
  const int64_t Dq = nH * hd, Dkv = nKV * hd, I = p.gate.out, half = hd / 2, grp = nH / nKV;
  const int64_t nseq = int64_t(offsets_.size()) - 1;
  if (T == 0) {
    for (auto [w, l] : {std::pair{&grads.q, &p.q}, {&grads.k, &p.k}, {&grads.v, &p.v}, {&grads.o, &p.o},
                        {&grads.gate, &p.gate}, {&grads.up, &p.up}, {&grads.down, &p.down}})
      w->assign(size_t(l->out * l->in), 0.0f);
    return {};
  }

  // MLP: down, the SiLU gate, gate and up, the post-attention norm.
  FP4C_TRY(weight_grad(p.down, dout, xd_.data(), T, grads.down));
  std::vector<float> dm(size_t(T * I));
  FP4C_TRY(input_grad(p.down, dout, T, dm.data()));
  std::vector<float> dg(size_t(T * I)), du(size_t(T * I));
#pragma omp parallel for simd schedule(static)
  for (int64_t i = 0; i < T * I; ++i) {
    const float g = g_[size_t(i)];
    const float sg = 1.0f / (1.0f + std::exp(-g));
    dg[size_t(i)] = dm[size_t(i)] * u_[size_t(i)] * (sg * (1.0f + g * (1.0f - sg)));
    du[size_t(i)] = dm[size_t(i)] * g * sg;
  }
  std::vector<float>().swap(dm);
  FP4C_TRY(weight_grad(p.gate, dg.data(), xg_.data(), T, grads.gate));
  FP4C_TRY(weight_grad(p.up, du.data(), xu_.data(), T, grads.up));
  std::vector<float> dxn(size_t(T * H)), tmp(size_t(T * H));
  FP4C_TRY(input_grad(p.gate, dg.data(), T, dxn.data()));
  FP4C_TRY(input_grad(p.up, du.data(), T, tmp.data()));
  add_inplace(dxn.data(), tmp.data(), T * H);
  std::vector<float> dh1(size_t(T * H));
  rms_norm_backward(h1_.data(), p.post_norm.data(), dxn.data(), T, H, c.rms_norm_eps, dh1.data());
  add_inplace(dh1.data(), dout, T * H);

  // o and the attention.
  FP4C_TRY(weight_grad(p.o, dh1.data(), xo_.data(), T, grads.o));
  std::vector<float> da(size_t(T * Dq));
  FP4C_TRY(input_grad(p.o, dh1.data(), T, da.data()));
  std::vector<float> dqr(size_t(T * Dq), 0.0f), dkr(size_t(T * Dkv), 0.0f), dv(size_t(T * Dkv), 0.0f);
  const AttentionShape shape = attention_shape(c, layer_);
  const float scale = float(shape.scale > 0 ? shape.scale : 1.0 / std::sqrt(double(hd)));
  // Per (sequence, KV head): its query heads in order, each adding to the shared dK and dV.
#pragma omp parallel for schedule(dynamic, 1)
  for (int64_t task = 0; task < nseq * nKV; ++task) {
    const int64_t s = task / nKV, j = task % nKV;
    const int64_t o0 = offsets_[size_t(s)], len = offsets_[size_t(s + 1)] - o0;
    std::vector<float> vt(size_t(hd * len)), dS(static_cast<size_t>(len));
    for (int64_t t = 0; t < len; ++t)
      for (int64_t d = 0; d < hd; ++d) vt[size_t(d * len + t)] = v_[size_t((o0 + t) * Dkv + j * hd + d)];
    for (int64_t h = j * grp; h < (j + 1) * grp; ++h) {
      const float* P = &probs_[size_t(prob_base_[size_t(s * nH + h)])];
      for (int64_t i = 0; i < len; ++i) {
        const float* row = P + i * len;
        const float* dai = &da[size_t((o0 + i) * Dq + h * hd)];
        // dP[t] = da_i . v_t, dS = P (dP - sum(P dP)).
        std::fill(dS.begin(), dS.begin() + i + 1, 0.0f);
        for (int64_t d = 0; d < hd; ++d) {
          const float a = dai[d];
          const float* vd = &vt[size_t(d * len)];
#pragma omp simd
          for (int64_t t = 0; t <= i; ++t) dS[size_t(t)] += a * vd[t];
        }
        double dot = 0;
        for (int64_t t = 0; t <= i; ++t) dot += double(row[t]) * double(dS[size_t(t)]);
        const float fdot = float(dot);
        for (int64_t t = 0; t <= i; ++t) dS[size_t(t)] = row[t] * (dS[size_t(t)] - fdot) * scale;
        float* dqi = &dqr[size_t((o0 + i) * Dq + h * hd)];
        const float* qi = &qr_[size_t((o0 + i) * Dq + h * hd)];
        for (int64_t t = 0; t <= i; ++t) {
          const float ds = dS[size_t(t)], pt = row[t];
          const float* kt = &kr_[size_t((o0 + t) * Dkv + j * hd)];
          float* dkt = &dkr[size_t((o0 + t) * Dkv + j * hd)];
          float* dvt = &dv[size_t((o0 + t) * Dkv + j * hd)];
#pragma omp simd
          for (int64_t d = 0; d < hd; ++d) {
            dqi[d] += ds * kt[d];
            dkt[d] += ds * qi[d];
            dvt[d] += pt * dai[d];
          }
        }
      }
    }
  }
  std::vector<float>().swap(da);
  // RoPE backward: the transposed rotation.
  const auto unrotate = [&](float* g, int64_t pos) {
    const float* cs = cos_.data() + pos * half;
    const float* sn = sin_.data() + pos * half;
    for (int64_t i = 0; i < half; ++i) {
      const float g1 = g[i], g2 = g[i + half];
      g[i] = g1 * cs[i] + g2 * sn[i];
      g[i + half] = g2 * cs[i] - g1 * sn[i];
    }
  };
  for (int64_t s = 0; s < nseq; ++s)
#pragma omp parallel for schedule(static)
    for (int64_t t = offsets_[size_t(s)]; t < offsets_[size_t(s + 1)]; ++t) {
      const int64_t pos = t - offsets_[size_t(s)];
      for (int64_t h = 0; h < nH; ++h) unrotate(&dqr[size_t(t * Dq + h * hd)], pos);
      for (int64_t h = 0; h < nKV; ++h) unrotate(&dkr[size_t(t * Dkv + h * hd)], pos);
    }
  FP4C_TRY(weight_grad(p.q, dqr.data(), xq_.data(), T, grads.q));
  FP4C_TRY(weight_grad(p.k, dkr.data(), xk_.data(), T, grads.k));
  FP4C_TRY(weight_grad(p.v, dv.data(), xv_.data(), T, grads.v));
  return {};
}

}  // namespace fp4c::runtime
