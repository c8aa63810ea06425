// The KV-cache decoder (decoder.h). Prefill runs every prompt token of the batch through a layer at
// once (Linears as one product over all tokens, causal attention by runtime/attention.h) and stores
// each position's rotated key and its value in the cache; a step runs one token per sequence, its
// query rotated at its position and attending over the sequence's cache.
#include "runtime/decoder.h"

#include <omp.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstring>
#include <optional>
#include <random>

#include "formats/bf16.h"
#include "runtime/activation_quant.h"
#include "runtime/attention.h"
#include "runtime/elementwise.h"
#include "runtime/matmul.h"
#include "runtime/moe.h"
#include "runtime/nvfp4_matmul.h"
#include "runtime/perf_cpu.h"
#include "runtime/thread_scope.h"
#include "runtime/workspace.h"

namespace fp4c::runtime {

namespace {

bool bf16_representable(const std::vector<float>& v) {
  for (float x : v)
    if (bf16::to_float(bf16::from_float(x)) != x && !std::isnan(x)) return false;
  return true;
}

// One Linear as the decoder holds it.
class HeldLinear {
 public:
  enum class Kind { Nvfp4, Bf16, F32 };

  static Expected<HeldLinear> create(LinearParams p, int64_t out, int64_t in, Precision precision,
                                     const std::string& what) {
    if (p.out != out || p.in != in)
      return make_error(what + ": shape " + shape_str(p.out, p.in) + ", expected " + shape_str(out, in));
    if (!p.bias.empty() && int64_t(p.bias.size()) != out)
      return make_error(what + ": " + std::to_string(p.bias.size()) + " biases for " + std::to_string(out) + " outputs");
    if (p.input_global_scale) {
      if (in % 16 != 0)
        return make_error(what + ": W4A4 input quantization needs in_features % 16 == 0, got " + std::to_string(in));
      if (!(*p.input_global_scale > 0.0f) || !std::isfinite(*p.input_global_scale))
        return make_error(what + ": input global scale must be finite and > 0, got " +
                          std::to_string(*p.input_global_scale));
    }
    HeldLinear h;
    h.out_ = out;
    h.in_ = in;
    h.input_global_scale_ = p.input_global_scale;
    h.input_mxfp4_ = p.input_mxfp4;
    if (p.input_mxfp4 && in % 32 != 0)
      return make_error(what + ": MXFP4 input quantization needs in_features % 32 == 0, got " + std::to_string(in));
    if (p.packed) {
      h.kind_ = Kind::Nvfp4;
      FP4C_ASSIGN(Nvfp4Matmul m, Nvfp4Matmul::create(std::move(*p.packed), out, in, std::move(p.bias), what));
      h.bytes_ = m.bytes();
      h.nvfp4_.emplace(std::move(m));
      return h;
    }
    if (int64_t(p.weight.size()) != out * in)
      return make_error(what + ": " + std::to_string(p.weight.size()) + " weights for shape " + shape_str(out, in));
    h.kind_ = precision == Precision::BF16 && bf16_representable(p.weight) ? Kind::Bf16 : Kind::F32;
    auto prepared = PreparedLinear::create(p, 1, h.kind_ == Kind::Bf16 ? Precision::BF16 : Precision::F32);
    if (!prepared) return make_error(what + ": " + prepared.error().message);
    h.dense_.emplace(std::move(*prepared));
    h.bytes_ = uint64_t(out * in) * (h.kind_ == Kind::Bf16 ? 2 : 4) + p.bias.size() * sizeof(float);
    return h;
  }

  // y[rows, out] = the Linear of x[rows, in].
  Status run(const float* x, int64_t rows, float* y, std::vector<float>& quantized, std::vector<uint16_t>& bf16) const {
    if (rows == 0) return {};
    const float* in = x;
    if (input_global_scale_) {
      quantized.resize(size_t(rows * in_));
      fake_quantize_nvfp4(x, rows, in_, *input_global_scale_, quantized.data());
      in = quantized.data();
    } else if (input_mxfp4_) {  // MXFP4 W4A4: block scales from the input itself
      quantized.resize(size_t(rows * in_));
      fake_quantize_mxfp4(x, rows, in_, quantized.data());
      in = quantized.data();
    }
    switch (kind_) {
      case Kind::Nvfp4: return nvfp4_->run(in, rows, y);
      case Kind::Bf16:
        bf16.resize(size_t(rows * in_));
        round_to_bf16(in, bf16.data(), rows * in_);
        return dense_->run(bf16.data(), rows, y);
      case Kind::F32: return dense_->run(in, rows, y);
    }
    return {};
  }

  Kind kind() const { return kind_; }
  uint64_t bytes() const { return bytes_; }

 private:
  Kind kind_ = Kind::F32;
  int64_t out_ = 0, in_ = 0;
  std::optional<float> input_global_scale_;
  bool input_mxfp4_ = false;
  std::optional<Nvfp4Matmul> nvfp4_;
  std::optional<PreparedLinear> dense_;
  uint64_t bytes_ = 0;
};

struct HeldLayer {
  std::vector<float> input_norm, post_norm, q_norm, k_norm, attn_out_norm, mlp_out_norm;
  std::optional<HeldLinear> q, k, v, o, gate, up, down;
  // A sparse MoE layer: the router and each expert's gate, up, down (empty on a dense layer).
  std::optional<HeldLinear> router;
  std::vector<std::array<std::optional<HeldLinear>, 3>> experts;
};

}  // namespace

struct Decoder::Impl {
  ir::ModelConfig config;
  DecoderOptions options;
  std::vector<float> embedding;     // [vocab, hidden]
  std::vector<HeldLayer> layers;
  std::vector<float> final_norm;
  std::optional<HeldLinear> lm_head;
  // RoPE per layer: rope_table[l] indexes inv_freq / rope_cos / rope_sin (one table per distinct RoPE,
  // two for Gemma 3's local and global layers).
  std::vector<std::vector<double>> inv_freq;
  std::vector<size_t> rope_table;
  uint64_t weight_bytes = 0;

  // The cache: per layer [batch][capacity][kv_heads * head_dim], keys rotated; FP32 or BF16 bits.
  int batch = 0;
  int64_t capacity = 0;
  std::vector<int64_t> lengths;
  std::vector<std::vector<float>> k_f32, v_f32;
  std::vector<std::vector<uint16_t>> k_bf16, v_bf16;

  // Temporaries kept between calls.
  std::vector<float> hidden, xn, q, k, v, attn, gate, up, tmp, quantized, scores;
  std::vector<uint16_t> bf16;
  AttentionWorkspace attention;
  MoeWorkspace moe;

  bool bf16_cache() const { return options.precision == Precision::BF16; }
  int64_t kv_dim() const { return config.num_key_value_heads * config.head_dim; }

  // cos and sin of position * inv_freq, [capacity, head_dim / 2], in double rounded to float (as
  // runtime/attention.cpp computes them); made by start().
  std::vector<std::vector<float>> rope_cos, rope_sin;

  // Rotates one head vector (rotate-half layout) at position `pos` < capacity with layer `layer`'s RoPE, as
  // runtime/attention.cpp does.
  void rotate(float* x, int64_t pos, size_t layer) const {
    const int64_t half = config.rope_dim() / 2;   // partial rotary: the dimensions past rotary_dim stay
    const float* cs = &rope_cos[rope_table[layer]][size_t(pos * half)];
    const float* sn = &rope_sin[rope_table[layer]][size_t(pos * half)];
    for (int64_t i = 0; i < half; ++i) {
      const float c = cs[i], s = sn[i];
      const float x1 = x[i], x2 = x[i + half];
      x[i] = x1 * c - x2 * s;
      x[i + half] = x2 * c + x1 * s;
    }
  }

  // Key (rotated) and value rows of `rows` tokens into the cache of `layer`: token t is sequence
  // seq[t] at position pos[t].
  void store_kv(int layer, const float* k_rot, const float* vals, const std::vector<int64_t>& seq,
                const std::vector<int64_t>& pos) {
    const int64_t D = kv_dim();
    for (size_t t = 0; t < seq.size(); ++t) {
      const size_t off = size_t((seq[t] * capacity + pos[t]) * D);
      if (bf16_cache()) {
        round_to_bf16(k_rot + int64_t(t) * D, &k_bf16[size_t(layer)][off], D);
        round_to_bf16(vals + int64_t(t) * D, &v_bf16[size_t(layer)][off], D);
      } else {
        std::memcpy(&k_f32[size_t(layer)][off], k_rot + int64_t(t) * D, size_t(D) * sizeof(float));
        std::memcpy(&v_f32[size_t(layer)][off], vals + int64_t(t) * D, size_t(D) * sizeof(float));
      }
    }
  }

  Status run_linear(const HeldLinear& l, const float* x, int64_t rows, float* y) {
    return l.run(x, rows, y, quantized, bf16);
  }

  // The MLP block and the attention output projection, shared by prefill and step: hidden += o(attn);
  // hidden += down(silu(gate(norm(hidden))) * up(...)).
  Status finish_layer(const HeldLayer& L, int64_t T) {
    const int64_t H = config.hidden_size, I = config.intermediate_size;
    tmp.resize(size_t(T * H));
    FP4C_TRY(run_linear(*L.o, attn.data(), T, tmp.data()));
    if (!L.attn_out_norm.empty()) rms_norm(tmp.data(), L.attn_out_norm.data(), T, H, config.rms_norm_eps, tmp.data());
    add_inplace(hidden.data(), tmp.data(), T * H);
    rms_norm(hidden.data(), L.post_norm.data(), T, H, config.rms_norm_eps, xn.data());
    if (L.router) {
      const MoeLinear run = [&](int e, MoePart part, const float* x, int64_t rows, float* y) -> Status {
        const HeldLinear& l = part == MoePart::Router ? *L.router : *L.experts[size_t(e)][size_t(part) - 1];
        return run_linear(l, x, rows, y);
      };
      FP4C_TRY(moe_mlp(config, -1, xn.data(), T, run, {}, false, moe, tmp.data()));
      if (!L.mlp_out_norm.empty()) rms_norm(tmp.data(), L.mlp_out_norm.data(), T, H, config.rms_norm_eps, tmp.data());
      add_inplace(hidden.data(), tmp.data(), T * H);
      return {};
    }
    gate.resize(size_t(T * I));
    up.resize(size_t(T * I));
    FP4C_TRY(run_linear(*L.gate, xn.data(), T, gate.data()));
    FP4C_TRY(run_linear(*L.up, xn.data(), T, up.data()));
    activation_mul(config.hidden_act, gate.data(), up.data(), T * I);
    FP4C_TRY(run_linear(*L.down, gate.data(), T, tmp.data()));
    if (!L.mlp_out_norm.empty()) rms_norm(tmp.data(), L.mlp_out_norm.data(), T, H, config.rms_norm_eps, tmp.data());
    add_inplace(hidden.data(), tmp.data(), T * H);
    return {};
  }

  // Logits [rows, vocab] of hidden rows `rows_idx`.
  Expected<std::vector<float>> logits(const std::vector<int64_t>& rows_idx) {
    const int64_t H = config.hidden_size, V = config.vocab_size, R = int64_t(rows_idx.size());
    std::vector<float> last(size_t(R * H));
    for (int64_t r = 0; r < R; ++r)
      std::memcpy(&last[size_t(r * H)], &hidden[size_t(rows_idx[size_t(r)] * H)], size_t(H) * sizeof(float));
    rms_norm(last.data(), final_norm.data(), R, H, config.rms_norm_eps, last.data());
    std::vector<float> out(size_t(R * V));
    FP4C_TRY(run_linear(*lm_head, last.data(), R, out.data()));
    softcap_logits(out.data(), R * V, config.final_logit_softcapping);
    return out;
  }

  Status embed(const std::vector<int32_t>& ids) {
    const int64_t H = config.hidden_size, V = config.vocab_size;
    hidden.resize(ids.size() * size_t(H));
    for (size_t t = 0; t < ids.size(); ++t) {
      if (ids[t] < 0 || ids[t] >= V)
        return make_error("token id " + std::to_string(ids[t]) + " outside the vocabulary (vocab_size " +
                          std::to_string(V) + ")");
      std::memcpy(&hidden[t * size_t(H)], &embedding[size_t(ids[t]) * size_t(H)], size_t(H) * sizeof(float));
    }
    if (config.embedding_scale != 0)
      for (float& x : hidden) x *= config.embedding_scale;   // Gemma: float32(sqrt(hidden_size))
    return {};
  }

  // Attention of one new query row per sequence over its cache (positions 0..lengths[b], the new one
  // included): q [batch, heads * head_dim], rotated; out [batch, heads * head_dim]. One task per
  // (sequence, KV head): each cached key and value row is read once for the g query heads sharing it.
  template <typename E>
  void cached_attention_impl(const E* kc, const E* vc, const float* q_rot, float* out, int64_t window, float scale) {
    const int64_t nH = config.num_attention_heads, nKV = config.num_key_value_heads, hd = config.head_dim;
    const int64_t g = nH / nKV, D = kv_dim(), B = batch;
    const int64_t longest = *std::max_element(lengths.begin(), lengths.end()) + 1;
    const int team = omp_get_max_threads();
    const size_t per_thread = size_t(g * longest + 2 * hd);
    scores.resize(size_t(team) * per_thread);
#pragma omp parallel for schedule(dynamic, 1) if (B * nH * longest * hd >= 32768)
    for (int64_t task = 0; task < B * nKV; ++task) {
      const int64_t b = task / nKV, j = task % nKV;
      const int64_t n = lengths[size_t(b)] + 1;
      const int64_t first = window > 0 ? std::max<int64_t>(0, n - window) : 0;  // sliding window
      float* s = scores.data() + size_t(omp_get_thread_num()) * per_thread;  // [g][n]
      float* row = s + g * longest;                                          // one K or V row as floats
      const E* kb = kc + b * capacity * D + j * hd;
      const E* vb = vc + b * capacity * D + j * hd;
      const float* q0 = q_rot + b * nH * hd + j * g * hd;  // the g heads of KV head j are contiguous
      for (int64_t p = first; p < n; ++p) {
        for (int64_t i = 0; i < hd; ++i) row[i] = to_f32(kb[p * D + i]);
        for (int64_t t = 0; t < g; ++t) {
          const float* qv = q0 + t * hd;
          float dot = 0;
          for (int64_t i = 0; i < hd; ++i) dot += qv[i] * row[i];
          s[t * longest + p] = dot * scale;
        }
      }
      for (int64_t t = 0; t < g; ++t) {
        float* st = s + t * longest;
        float m = st[first];
        for (int64_t p = first + 1; p < n; ++p) m = std::max(m, st[p]);
        float sum = 0;
#pragma omp simd reduction(+ : sum)
        for (int64_t p = first; p < n; ++p) {
          st[p] = exp_approx(st[p] - m);
          sum += st[p];
        }
        const float inv = 1.0f / sum;
#pragma omp simd
        for (int64_t p = first; p < n; ++p) st[p] *= inv;
        float* o = out + b * nH * hd + (j * g + t) * hd;
        for (int64_t i = 0; i < hd; ++i) o[i] = 0;
      }
      for (int64_t p = first; p < n; ++p) {
        for (int64_t i = 0; i < hd; ++i) row[i] = to_f32(vb[p * D + i]);
        for (int64_t t = 0; t < g; ++t) {
          const float w = s[t * longest + p];
          float* o = out + b * nH * hd + (j * g + t) * hd;
          for (int64_t i = 0; i < hd; ++i) o[i] += w * row[i];
        }
      }
    }
  }

  static float to_f32(float x) { return x; }
  static float to_f32(uint16_t x) { return bf16::to_float(x); }

  void cached_attention(int layer, const float* q_rot, float* out) {
    const AttentionShape a = attention_shape(config, layer);
    const float scale = float(a.scale);
    if (bf16_cache())
      cached_attention_impl(k_bf16[size_t(layer)].data(), v_bf16[size_t(layer)].data(), q_rot, out, a.window, scale);
    else
      cached_attention_impl(k_f32[size_t(layer)].data(), v_f32[size_t(layer)].data(), q_rot, out, a.window, scale);
  }
};

Decoder::Decoder(std::unique_ptr<Impl> impl) : impl_(std::move(impl)) {}
Decoder::Decoder(Decoder&&) noexcept = default;
Decoder& Decoder::operator=(Decoder&&) noexcept = default;
Decoder::~Decoder() = default;

const ir::ModelConfig& Decoder::config() const { return impl_->config; }
uint64_t Decoder::weight_bytes() const { return impl_->weight_bytes; }

uint64_t Decoder::kv_cache_bytes() const {
  uint64_t n = 0;
  for (const auto& v : impl_->k_f32) n += v.size() * sizeof(float);
  for (const auto& v : impl_->v_f32) n += v.size() * sizeof(float);
  for (const auto& v : impl_->k_bf16) n += v.size() * sizeof(uint16_t);
  for (const auto& v : impl_->v_bf16) n += v.size() * sizeof(uint16_t);
  return n;
}

DecoderLinearCounts Decoder::linear_counts() const {
  DecoderLinearCounts c;
  auto count = [&](const std::optional<HeldLinear>& l) {
    if (!l) return;
    switch (l->kind()) {
      case HeldLinear::Kind::Nvfp4: ++c.nvfp4; break;
      case HeldLinear::Kind::Bf16: ++c.bf16; break;
      case HeldLinear::Kind::F32: ++c.f32; break;
    }
  };
  for (const HeldLayer& L : impl_->layers) {
    for (const auto* l : {&L.q, &L.k, &L.v, &L.o, &L.gate, &L.up, &L.down, &L.router}) count(*l);
    for (const auto& e : L.experts)
      for (const auto& l : e) count(l);
  }
  count(impl_->lm_head);
  return c;
}

Expected<Decoder> Decoder::load(WeightSource& weights, const ir::ModelConfig& config, const DecoderOptions& options) {
  const ir::ModelConfig& c = config;
  const int64_t H = c.hidden_size, I = c.intermediate_size, nH = c.num_attention_heads, nKV = c.num_key_value_heads,
                hd = c.head_dim, V = c.vocab_size;
  if (H <= 0 || I <= 0 || nH <= 0 || nKV <= 0 || hd <= 0 || V <= 0 || nH % nKV != 0 || hd % 2 != 0)
    return make_error("decoder: unsupported shape: hidden " + std::to_string(H) + ", " + std::to_string(nH) +
                      " heads, " + std::to_string(nKV) + " KV heads, head_dim " + std::to_string(hd));
  FP4C_TRY(check_rope_type(c));
  ThreadScope threads(options.threads);
  auto impl = std::make_unique<Impl>();
  impl->config = config;
  impl->options = options;
  for (int l = 0; l < c.num_hidden_layers; ++l) {
    std::vector<double> f = rope_inv_freq(config, l);
    auto it = std::find(impl->inv_freq.begin(), impl->inv_freq.end(), f);
    impl->rope_table.push_back(size_t(it - impl->inv_freq.begin()));
    if (it == impl->inv_freq.end()) impl->inv_freq.push_back(std::move(f));
  }
  FP4C_ASSIGN(impl->embedding, weights.embedding());
  if (int64_t(impl->embedding.size()) != V * H)
    return make_error("embedding: " + std::to_string(impl->embedding.size()) + " elements, expected " + shape_str(V, H));
  uint64_t bytes = impl->embedding.size() * sizeof(float);
  const Precision prec = options.precision;
  for (int i = 0; i < c.num_hidden_layers; ++i) {
    const std::string where = "layer " + std::to_string(i);
    FP4C_ASSIGN(LayerParams p, weights.layer(i));
    HeldLayer L;
    if (int64_t(p.input_norm.size()) != H || int64_t(p.post_norm.size()) != H)
      return make_error(where + ": norms of " + std::to_string(p.input_norm.size()) + " and " +
                        std::to_string(p.post_norm.size()) + " elements, expected " + std::to_string(H));
    FP4C_TRY(check_head_norms(p, hd, where));
    L.input_norm = std::move(p.input_norm);
    L.post_norm = std::move(p.post_norm);
    L.q_norm = std::move(p.q_norm);
    L.k_norm = std::move(p.k_norm);
    for (const auto* n : {&p.attn_out_norm, &p.mlp_out_norm})
      if (!n->empty() && int64_t(n->size()) != H)
        return make_error(where + ": an output norm of " + std::to_string(n->size()) + " elements, expected " +
                          std::to_string(H));
    L.attn_out_norm = std::move(p.attn_out_norm);
    L.mlp_out_norm = std::move(p.mlp_out_norm);
    bytes += uint64_t(L.q_norm.size() + L.k_norm.size() + L.attn_out_norm.size() + L.mlp_out_norm.size()) * sizeof(float);
    const int64_t Dq = nH * hd, Dkv = nKV * hd;
    FP4C_ASSIGN(HeldLinear q, HeldLinear::create(std::move(p.q), Dq, H, prec, where + " q"));
    FP4C_ASSIGN(HeldLinear k, HeldLinear::create(std::move(p.k), Dkv, H, prec, where + " k"));
    FP4C_ASSIGN(HeldLinear v, HeldLinear::create(std::move(p.v), Dkv, H, prec, where + " v"));
    FP4C_ASSIGN(HeldLinear o, HeldLinear::create(std::move(p.o), H, Dq, prec, where + " o"));
    for (const HeldLinear* l : {&q, &k, &v, &o}) bytes += l->bytes();
    bytes += uint64_t(2 * H) * sizeof(float);
    L.q.emplace(std::move(q));
    L.k.emplace(std::move(k));
    L.v.emplace(std::move(v));
    L.o.emplace(std::move(o));
    if (c.moe_layer(i)) {
      FP4C_TRY(check_moe_params(c, p, where));
      const int64_t E = c.num_experts, Im = c.moe_intermediate_size;
      FP4C_ASSIGN(HeldLinear router, HeldLinear::create(std::move(p.router), E, H, prec, where + " router"));
      bytes += router.bytes();
      L.router.emplace(std::move(router));
      L.experts.resize(size_t(E));
      for (int64_t e = 0; e < E; ++e) {
        const std::string x = where + " expert " + std::to_string(e);
        LayerParams::Expert& pe = p.experts[size_t(e)];
        FP4C_ASSIGN(HeldLinear g, HeldLinear::create(std::move(pe.gate), Im, H, prec, x + " gate"));
        FP4C_ASSIGN(HeldLinear u, HeldLinear::create(std::move(pe.up), Im, H, prec, x + " up"));
        FP4C_ASSIGN(HeldLinear d, HeldLinear::create(std::move(pe.down), H, Im, prec, x + " down"));
        bytes += g.bytes() + u.bytes() + d.bytes();
        L.experts[size_t(e)][0].emplace(std::move(g));
        L.experts[size_t(e)][1].emplace(std::move(u));
        L.experts[size_t(e)][2].emplace(std::move(d));
      }
      impl->layers.push_back(std::move(L));
      continue;
    }
    FP4C_ASSIGN(HeldLinear gate, HeldLinear::create(std::move(p.gate), I, H, prec, where + " gate"));
    FP4C_ASSIGN(HeldLinear up, HeldLinear::create(std::move(p.up), I, H, prec, where + " up"));
    FP4C_ASSIGN(HeldLinear down, HeldLinear::create(std::move(p.down), H, I, prec, where + " down"));
    for (const HeldLinear* l : {&gate, &up, &down}) bytes += l->bytes();
    L.gate.emplace(std::move(gate));
    L.up.emplace(std::move(up));
    L.down.emplace(std::move(down));
    impl->layers.push_back(std::move(L));
  }
  FP4C_ASSIGN(impl->final_norm, weights.final_norm());
  if (int64_t(impl->final_norm.size()) != H)
    return make_error("final norm: " + std::to_string(impl->final_norm.size()) + " elements, expected " +
                      std::to_string(H));
  FP4C_ASSIGN(LinearParams head, weights.lm_head());
  FP4C_ASSIGN(HeldLinear lm, HeldLinear::create(std::move(head), V, H, prec, "lm_head"));
  bytes += lm.bytes() + uint64_t(H) * sizeof(float);
  impl->lm_head.emplace(std::move(lm));
  impl->weight_bytes = bytes;
  return Decoder(std::move(impl));
}

Status Decoder::start(int batch, int64_t capacity) {
  Impl& d = *impl_;
  if (batch <= 0 || capacity <= 0)
    return make_error("decoder: batch and capacity must be positive, got " + std::to_string(batch) + " and " +
                      std::to_string(capacity));
  if (uses_long_rope(d.config, capacity))
    return make_error("decoder: " + std::to_string(capacity) + " positions exceed longrope's original_max_position_embeddings " +
                      std::to_string(d.config.rope_scaling.original_max_position_embeddings) +
                      ", past which its frequencies change for the whole sequence (not implemented in the KV-cache decoder)");
  d.batch = batch;
  d.capacity = capacity;
  d.lengths.assign(size_t(batch), 0);
  const int64_t half = d.config.rope_dim() / 2;
  d.rope_cos.assign(d.inv_freq.size(), std::vector<float>(size_t(capacity * half)));
  d.rope_sin.assign(d.inv_freq.size(), std::vector<float>(size_t(capacity * half)));
  for (size_t tbl = 0; tbl < d.inv_freq.size(); ++tbl) {
    // The factor of the first layer using this table (layers sharing frequencies share the factor).
    const size_t layer = size_t(std::find(d.rope_table.begin(), d.rope_table.end(), tbl) - d.rope_table.begin());
    const double factor = attention_shape(d.config, int(layer)).rope_factor;
    for (int64_t p = 0; p < capacity; ++p)
      for (int64_t i = 0; i < half; ++i) {
        const double a = double(p) * d.inv_freq[tbl][size_t(i)];
        d.rope_cos[tbl][size_t(p * half + i)] = float(std::cos(a) * factor);
        d.rope_sin[tbl][size_t(p * half + i)] = float(std::sin(a) * factor);
      }
  }
  const size_t n = size_t(batch) * size_t(capacity) * size_t(d.kv_dim());
  const size_t layers = d.layers.size();
  d.k_f32.assign(d.bf16_cache() ? 0 : layers, {});
  d.v_f32.assign(d.bf16_cache() ? 0 : layers, {});
  d.k_bf16.assign(d.bf16_cache() ? layers : 0, {});
  d.v_bf16.assign(d.bf16_cache() ? layers : 0, {});
  try {
    for (auto& v : d.k_f32) v.assign(n, 0.0f);
    for (auto& v : d.v_f32) v.assign(n, 0.0f);
    for (auto& v : d.k_bf16) v.assign(n, 0);
    for (auto& v : d.v_bf16) v.assign(n, 0);
  } catch (const std::bad_alloc&) {
    return make_error("decoder: cannot allocate a KV cache of " + std::to_string(batch) + " x " +
                      std::to_string(capacity) + " positions");
  }
  return {};
}

Expected<std::vector<float>> Decoder::prefill(const std::vector<std::vector<int32_t>>& prompts) {
  Impl& d = *impl_;
  const ir::ModelConfig& c = d.config;
  if (int64_t(prompts.size()) != d.batch)
    return make_error("prefill: " + std::to_string(prompts.size()) + " prompts for a batch of " +
                      std::to_string(d.batch) + " (call start first)");
  std::vector<int64_t> offsets{0}, seq, pos;
  std::vector<int32_t> ids;
  for (int b = 0; b < d.batch; ++b) {
    const auto& p = prompts[size_t(b)];
    if (p.empty()) return make_error("prefill: prompt " + std::to_string(b) + " is empty");
    if (d.lengths[size_t(b)] != 0) return make_error("prefill: sequence " + std::to_string(b) + " already holds tokens");
    if (int64_t(p.size()) > d.capacity)
      return make_error("prefill: prompt " + std::to_string(b) + " of " + std::to_string(p.size()) +
                        " tokens exceeds the capacity " + std::to_string(d.capacity));
    for (size_t t = 0; t < p.size(); ++t) {
      seq.push_back(b);
      pos.push_back(int64_t(t));
    }
    ids.insert(ids.end(), p.begin(), p.end());
    offsets.push_back(offsets.back() + int64_t(p.size()));
  }
  ThreadScope threads(d.options.threads);
  if (Status st = d.embed(ids); !st.ok()) return make_error("prefill: " + st.error().message);
  const int64_t T = int64_t(ids.size()), H = c.hidden_size, nH = c.num_attention_heads, hd = c.head_dim;
  const int64_t Dq = nH * hd, Dkv = d.kv_dim();
  d.xn.resize(size_t(T * H));
  d.q.resize(size_t(T * Dq));
  d.k.resize(size_t(T * Dkv));
  d.v.resize(size_t(T * Dkv));
  d.attn.resize(size_t(T * Dq));
  std::vector<float> k_rot(size_t(T * Dkv));
  for (size_t l = 0; l < d.layers.size(); ++l) {
    const HeldLayer& L = d.layers[l];
    rms_norm(d.hidden.data(), L.input_norm.data(), T, H, c.rms_norm_eps, d.xn.data());
    FP4C_TRY(d.run_linear(*L.q, d.xn.data(), T, d.q.data()));
    FP4C_TRY(d.run_linear(*L.k, d.xn.data(), T, d.k.data()));
    FP4C_TRY(d.run_linear(*L.v, d.xn.data(), T, d.v.data()));
    apply_head_norms(L.q_norm, L.k_norm, d.q.data(), d.k.data(), T, nH, c.num_key_value_heads, hd, c.rms_norm_eps);
    FP4C_TRY(causal_attention(d.q.data(), d.k.data(), d.v.data(), offsets,
                              attention_shape(c, int(l)), d.inv_freq[d.rope_table[l]], d.options.precision,
                              d.attn.data(), &d.attention));
    std::memcpy(k_rot.data(), d.k.data(), k_rot.size() * sizeof(float));
#pragma omp parallel for schedule(static) if (T * Dkv >= 32768)
    for (int64_t t = 0; t < T; ++t)
      for (int64_t j = 0; j < c.num_key_value_heads; ++j) d.rotate(&k_rot[size_t(t * Dkv + j * hd)], pos[size_t(t)], l);
    d.store_kv(int(l), k_rot.data(), d.v.data(), seq, pos);
    FP4C_TRY(d.finish_layer(L, T));
  }
  for (int b = 0; b < d.batch; ++b) d.lengths[size_t(b)] = int64_t(prompts[size_t(b)].size());
  std::vector<int64_t> last;
  for (int b = 0; b < d.batch; ++b) last.push_back(offsets[size_t(b) + 1] - 1);
  return d.logits(last);
}

Expected<std::vector<float>> Decoder::step(const std::vector<int32_t>& tokens) {
  Impl& d = *impl_;
  const ir::ModelConfig& c = d.config;
  if (int64_t(tokens.size()) != d.batch)
    return make_error("step: " + std::to_string(tokens.size()) + " tokens for a batch of " + std::to_string(d.batch));
  for (int b = 0; b < d.batch; ++b)
    if (d.lengths[size_t(b)] >= d.capacity)
      return make_error("step: sequence " + std::to_string(b) + " is full (capacity " + std::to_string(d.capacity) + ")");
  ThreadScope threads(d.options.threads);
  if (Status st = d.embed(tokens); !st.ok()) return make_error("step: " + st.error().message);
  const int64_t B = d.batch, H = c.hidden_size, nH = c.num_attention_heads, hd = c.head_dim;
  const int64_t Dq = nH * hd, Dkv = d.kv_dim();
  d.xn.resize(size_t(B * H));
  d.q.resize(size_t(B * Dq));
  d.k.resize(size_t(B * Dkv));
  d.v.resize(size_t(B * Dkv));
  d.attn.resize(size_t(B * Dq));
  std::vector<int64_t> seq(static_cast<size_t>(B)), pos(d.lengths);
  for (int64_t b = 0; b < B; ++b) seq[size_t(b)] = b;
  for (size_t l = 0; l < d.layers.size(); ++l) {
    const HeldLayer& L = d.layers[l];
    rms_norm(d.hidden.data(), L.input_norm.data(), B, H, c.rms_norm_eps, d.xn.data());
    FP4C_TRY(d.run_linear(*L.q, d.xn.data(), B, d.q.data()));
    FP4C_TRY(d.run_linear(*L.k, d.xn.data(), B, d.k.data()));
    FP4C_TRY(d.run_linear(*L.v, d.xn.data(), B, d.v.data()));
    apply_head_norms(L.q_norm, L.k_norm, d.q.data(), d.k.data(), B, nH, c.num_key_value_heads, hd, c.rms_norm_eps);
    for (int64_t b = 0; b < B; ++b) {
      for (int64_t h = 0; h < nH; ++h) d.rotate(&d.q[size_t(b * Dq + h * hd)], pos[size_t(b)], l);
      for (int64_t j = 0; j < c.num_key_value_heads; ++j) d.rotate(&d.k[size_t(b * Dkv + j * hd)], pos[size_t(b)], l);
    }
    d.store_kv(int(l), d.k.data(), d.v.data(), seq, pos);
    d.cached_attention(int(l), d.q.data(), d.attn.data());
    FP4C_TRY(d.finish_layer(L, B));
  }
  for (int64_t b = 0; b < B; ++b) ++d.lengths[size_t(b)];
  return d.logits(seq);
}

std::vector<int32_t> greedy_tokens(const std::vector<float>& logits, int64_t vocab) {
  std::vector<int32_t> out;
  for (size_t r = 0; vocab > 0 && (r + 1) * size_t(vocab) <= logits.size(); ++r) {
    const float* l = &logits[r * size_t(vocab)];
    int64_t best = 0;
    for (int64_t i = 1; i < vocab; ++i)
      if (l[i] > l[best]) best = i;
    out.push_back(int32_t(best));
  }
  return out;
}

namespace {

// Nearest-rank percentile of sorted values.
double percentile(const std::vector<double>& sorted, double p) {
  if (sorted.empty()) return 0;
  const size_t rank = size_t(std::ceil(p / 100.0 * double(sorted.size())));
  return sorted[std::min(sorted.size() - 1, rank == 0 ? 0 : rank - 1)];
}

}  // namespace

Expected<ServingFigures> serve_cpu(WeightSource& weights, const ir::ModelConfig& config, const ServingSpec& spec,
                                   int threads) {
  using Clock = std::chrono::steady_clock;
  if (spec.prompt < 1 || spec.output < 1 || spec.batch < 1)
    return make_error("serve " + spec.name + ": prompt, output and batch must be >= 1, got " +
                      std::to_string(spec.prompt) + ", " + std::to_string(spec.output) + ", " +
                      std::to_string(spec.batch));
  FP4C_ASSIGN(Decoder dec, Decoder::load(weights, config, DecoderOptions{Precision::BF16, threads}));
  FP4C_TRY(dec.start(spec.batch, spec.prompt + spec.output));
  std::random_device rd;
  std::mt19937_64 rng((uint64_t(rd()) << 32) ^ rd());
  std::vector<std::vector<int32_t>> prompts(size_t(spec.batch));
  for (auto& p : prompts) {
    p.resize(size_t(spec.prompt));
    for (auto& id : p) id = int32_t(rng() % uint64_t(config.vocab_size));
  }
  const int64_t V = config.vocab_size;
  // An untimed warm-up of the same shapes (one prefill, one step): oneDNN makes its primitives for a
  // row count on first use, and a serving engine warms up before it takes requests.
  {
    FP4C_ASSIGN(std::vector<float> warm, dec.prefill(prompts));
    if (spec.output > 1) {
      auto step = dec.step(greedy_tokens(warm, V));
      if (!step.ok()) return step.error();
    }
    FP4C_TRY(dec.start(spec.batch, spec.prompt + spec.output));
  }
  const auto t0 = Clock::now();
  FP4C_ASSIGN(std::vector<float> logits, dec.prefill(prompts));
  std::vector<int32_t> next = greedy_tokens(logits, V);
  const double ttft = std::chrono::duration<double>(Clock::now() - t0).count();
  uint64_t rss = current_rss_bytes();  // outside the timed regions
  std::vector<double> steps;
  for (int64_t i = 1; i < spec.output; ++i) {
    const auto ts = Clock::now();
    FP4C_ASSIGN(logits, dec.step(next));
    next = greedy_tokens(logits, V);
    steps.push_back(std::chrono::duration<double>(Clock::now() - ts).count());
  }
  const double total = std::chrono::duration<double>(Clock::now() - t0).count();
  rss = std::max(rss, current_rss_bytes());
  ServingFigures f;
  f.spec = spec;
  f.ttft_seconds = ttft;
  std::sort(steps.begin(), steps.end());
  f.decode_p50_seconds = percentile(steps, 50);
  f.decode_p95_seconds = percentile(steps, 95);
  f.decode_p99_seconds = percentile(steps, 99);
  f.tokens_per_second = double(spec.batch) * double(spec.output) / total;
  f.requests_per_second = double(spec.batch) / total;
  f.memory_used = rss;
  f.memory_free = memory_info().available;
  f.weight_bytes = dec.weight_bytes();
  f.kv_cache_bytes = dec.kv_cache_bytes();
  return f;
}

}  // namespace fp4c::runtime
