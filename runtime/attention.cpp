#include "runtime/attention.h"

#include <omp.h>
#include <oneapi/dnnl/dnnl.hpp>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <numbers>
#include <optional>
#include <string>
#include <unordered_map>

#include "base/profile.h"
#include "formats/bf16.h"
#include "runtime/dnnl_engine.h"
#include "runtime/elementwise.h"
#include "runtime/vectorize.h"

namespace fp4c::runtime {

std::vector<double> rope_inv_freq(const ir::ModelConfig& config) {
  const int64_t dim = config.rope_dim();   // partial rotary: the frequencies span rotary_dim, as transformers'
  std::vector<double> inv(size_t(dim / 2));
  for (int64_t i = 0; i < dim / 2; ++i)
    inv[size_t(i)] = 1.0 / std::pow(config.rope_theta, double(2 * i) / double(dim));
  const ir::RopeScaling& rs = config.rope_scaling;
  if (rs.type == "linear") {
    for (double& f : inv) f /= rs.factor;
    return inv;
  }
  if (rs.type == "longrope") {   // the short factors; rope_inv_freq_long gives the long ones
    for (int64_t i = 0; i < dim / 2; ++i) inv[size_t(i)] /= rs.short_factor.at(size_t(i));
    return inv;
  }
  if (rs.type == "yarn") {
    // transformers' _compute_yarn_parameters: interpolated (f / factor) below the correction range,
    // extrapolated (f) above it, a linear ramp between.
    const double base = config.rope_theta, d = double(dim);
    const auto correction_dim = [&](double rotations) {
      return d * std::log(double(rs.original_max_position_embeddings) / (rotations * 2 * std::numbers::pi)) /
             (2 * std::log(base));
    };
    double low = correction_dim(rs.beta_fast), high = correction_dim(rs.beta_slow);
    if (rs.truncate) {
      low = std::floor(low);
      high = std::ceil(high);
    }
    low = std::max(low, 0.0);
    high = std::min(high, d - 1);
    if (low == high) high += 0.001;
    for (int64_t i = 0; i < dim / 2; ++i) {
      const double ramp = std::clamp((double(i) - low) / (high - low), 0.0, 1.0);
      const double extrapolation = 1 - ramp;
      const double f = inv[size_t(i)];
      inv[size_t(i)] = f / rs.factor * (1 - extrapolation) + f * extrapolation;
    }
    return inv;
  }
  if (rs.type != "llama3") return inv;   // default, and dynamic within max_position_embeddings
  const double old_len = double(rs.original_max_position_embeddings);
  const double low_wavelen = old_len / rs.low_freq_factor;
  const double high_wavelen = old_len / rs.high_freq_factor;
  for (double& f : inv) {
    const double wavelen = 2 * std::numbers::pi / f;
    const double scaled = wavelen > low_wavelen ? f / rs.factor : f;
    const double smooth = (old_len / wavelen - rs.low_freq_factor) / (rs.high_freq_factor - rs.low_freq_factor);
    const double smoothed = (1 - smooth) * scaled / rs.factor + smooth * scaled;
    const bool medium = !(wavelen < high_wavelen) && !(wavelen > low_wavelen);
    f = medium ? smoothed : scaled;
  }
  return inv;
}

std::vector<double> rope_inv_freq_long(const ir::ModelConfig& config) {
  ir::ModelConfig c = config;
  c.rope_scaling.short_factor = config.rope_scaling.long_factor;
  return rope_inv_freq(c);
}

bool uses_long_rope(const ir::ModelConfig& c, int64_t sequence_length) {
  return c.rope_scaling.type == "longrope" && sequence_length > c.rope_scaling.original_max_position_embeddings;
}

Status check_rope_type(const ir::ModelConfig& c) {
  const std::string& t = c.rope_scaling.type;
  if (t.empty() || t == "linear" || t == "dynamic" || t == "llama3" || t == "yarn") return {};
  if (t == "longrope") {
    const size_t half = size_t(c.rope_dim() / 2);
    if (c.rope_scaling.short_factor.size() != half || c.rope_scaling.long_factor.size() != half)
      return make_error("longrope: short_factor and long_factor must hold rotary_dim / 2 = " + std::to_string(half) +
                        " entries each");
    return {};
  }
  return make_error("unsupported rope_scaling type '" + t + "' (supported: linear, dynamic, llama3, yarn, longrope)");
}

double rope_attention_factor(const ir::ModelConfig& config) {
  const std::string& t = config.rope_scaling.type;
  return t == "yarn" || t == "longrope" ? config.rope_scaling.attention_factor : 1.0;
}

bool layer_slides(const ir::ModelConfig& c, int layer) {
  return c.sliding_window && layer >= 0 && size_t(layer) < c.sliding_layers.size() && c.sliding_layers[size_t(layer)];
}

namespace {
bool local_rope(const ir::ModelConfig& c, int layer) { return c.sliding_rope_theta && layer_slides(c, layer); }
}  // namespace

std::vector<double> rope_inv_freq(const ir::ModelConfig& config, int layer) {
  if (!local_rope(config, layer)) return rope_inv_freq(config);
  ir::ModelConfig local = config;
  local.rope_theta = *config.sliding_rope_theta;
  local.rope_scaling = {};
  return rope_inv_freq(local);
}

AttentionShape attention_shape(const ir::ModelConfig& c, int layer) {
  AttentionShape a;
  a.heads = c.num_attention_heads;
  a.kv_heads = c.num_key_value_heads;
  a.head_dim = c.head_dim;
  a.rotary_dim = c.rope_dim();
  a.window = layer_slides(c, layer) ? *c.sliding_window : 0;
  a.rope_factor = local_rope(c, layer) ? 1.0 : rope_attention_factor(c);
  a.scale = 1.0 / std::sqrt(c.query_pre_attn_scalar > 0 ? c.query_pre_attn_scalar : double(c.head_dim));
  return a;
}

namespace detail {

// Softmax of one score row: keys [first, valid) are visible, the rest of the n columns get probability 0.
// p[k] = exp((s[k] - max) * scale) / sum; s is overwritten.
FP4C_VECTOR_CLONES void softmax_row_f32(float* s, int64_t first, int64_t valid, int64_t n, float scale) {
  for (int64_t k = 0; k < first; ++k) s[k] = 0.0f;
  float m = s[first];
#pragma omp simd reduction(max : m)
  for (int64_t k = first; k < valid; ++k) m = s[k] > m ? s[k] : m;
  float sum = 0;
#pragma omp simd reduction(+ : sum)
  for (int64_t k = first; k < valid; ++k) {
    s[k] = exp_approx((s[k] - m) * scale);
    sum += s[k];
  }
  const float inv = 1.0f / sum;
#pragma omp simd
  for (int64_t k = first; k < valid; ++k) s[k] *= inv;
  for (int64_t k = valid; k < n; ++k) s[k] = 0.0f;
}

FP4C_VECTOR_CLONES void softmax_row_bf16(float* s, int64_t first, int64_t valid, int64_t n, float scale,
                                         uint16_t* p) {
  softmax_row_f32(s, first, valid, n, scale);
  for (int64_t k = 0; k < first; ++k) p[k] = 0;
#pragma omp simd
  for (int64_t k = first; k < valid; ++k) {
    const uint32_t u = std::bit_cast<uint32_t>(s[k]);  // finite and >= 0: no NaN case
    p[k] = uint16_t((u + 0x7fffu + ((u >> 16) & 1u)) >> 16);
  }
  for (int64_t k = valid; k < n; ++k) p[k] = 0;
}

}  // namespace detail

namespace {

using dnnl::memory;
using dt = memory::data_type;
using tag = memory::format_tag;

inline float to_elem(float x, float*) { return x; }
inline uint16_t to_elem(float x, uint16_t*) { return bf16::from_float(x); }

// Query positions per block; blocks of keys are the same size, so a block of queries attends to the
// key blocks up to and including its own.
constexpr int64_t kMaxBlock = 64;

// The QK^T and PV primitives for one block size and each number of key blocks, created for one
// thread (they run inside the OpenMP team, one task per thread) with a user-provided scratchpad.
struct BlockPrimitives {
  std::vector<dnnl::matmul> qk, pv;  // index: key blocks - 1
  size_t scratch_bytes = 0;
};

BlockPrimitives make_primitives(int64_t rows, int64_t block, int64_t max_blocks, int64_t head_dim, dt type) {
  BlockPrimitives out;
  const dnnl::engine& eng = cpu_engine();
  dnnl::primitive_attr attr;
  attr.set_scratchpad_mode(dnnl::scratchpad_mode::user);
  // oneDNN reads the thread count when a primitive is created; these must run on one thread.
  const int saved = omp_get_max_threads();
  omp_set_num_threads(1);
  for (int64_t nb = 1; nb <= max_blocks; ++nb) {
    const int64_t keys = nb * block;
    // S [rows, keys] = Q [rows, hd] K^T, K stored [keys, hd]: the [hd, keys] matrix in "ba".
    const dnnl::matmul::primitive_desc qk(
        dnnl::matmul::desc(memory::desc({rows, head_dim}, type, tag::ab), memory::desc({head_dim, keys}, type, tag::ba),
                           memory::desc({rows, keys}, dt::f32, tag::ab)),
        attr, eng);
    // O [rows, hd] = P [rows, keys] V [keys, hd].
    const dnnl::matmul::primitive_desc pv(
        dnnl::matmul::desc(memory::desc({rows, keys}, type, tag::ab), memory::desc({keys, head_dim}, type, tag::ab),
                           memory::desc({rows, head_dim}, dt::f32, tag::ab)),
        attr, eng);
    out.scratch_bytes = std::max({out.scratch_bytes, qk.scratchpad_desc().get_size(), pv.scratchpad_desc().get_size()});
    out.qk.emplace_back(qk);
    out.pv.emplace_back(pv);
  }
  omp_set_num_threads(saved);
  return out;
}

template <typename E>
void run_attention(const float* q, const float* k, const float* v, std::span<const int64_t> offsets,
                   const AttentionShape& shape, std::span<const double> inv_freq, float* out,
                   AttentionWorkspace& ws) {
  const int64_t nseq = int64_t(offsets.size()) - 1;
  const int64_t H = shape.heads, KV = shape.kv_heads, hd = shape.head_dim;
  const int64_t rd = shape.rotary_dim > 0 ? shape.rotary_dim : hd, half = rd / 2;
  const int64_t g = H / KV;
  const int64_t Dq = H * hd, Dkv = KV * hd;
  int64_t max_len = 0;
  for (int64_t s = 0; s < nseq; ++s) max_len = std::max(max_len, offsets[s + 1] - offsets[s]);
  if (max_len == 0) return;
  const int64_t block = std::min(kMaxBlock, (max_len + 7) / 8 * 8);
  const int64_t rows = block * g;  // a block of queries: `block` positions x the g heads of a KV head
  const dt type = sizeof(E) == 2 ? dt::bf16 : dt::f32;

  // RoPE tables, [max_len, half], computed in double.
  float* cos_t = ws.rope_cos.get<float>(size_t(max_len * half));
  float* sin_t = ws.rope_sin.get<float>(size_t(max_len * half));
#pragma omp parallel for schedule(static) if (max_len * half >= 4096)
  for (int64_t p = 0; p < max_len; ++p)
    for (int64_t i = 0; i < half; ++i) {
      const double a = double(p) * inv_freq[size_t(i)];
      cos_t[p * half + i] = float(std::cos(a) * shape.rope_factor);
      sin_t[p * half + i] = float(std::sin(a) * shape.rope_factor);
    }

  // Packed, rotated copies: for sequence s and KV head j, Q is [padded len][g][hd] (a block of
  // positions is then a contiguous [block * g, hd] matrix), K and V are [padded len][hd]. Padding
  // rows are zero.
  std::vector<int64_t> padded(static_cast<size_t>(nseq)), kbase(static_cast<size_t>(nseq) + 1, 0);
  for (int64_t s = 0; s < nseq; ++s) {
    const int64_t len = offsets[s + 1] - offsets[s];
    padded[size_t(s)] = (len + block - 1) / block * block;
    kbase[size_t(s) + 1] = kbase[size_t(s)] + padded[size_t(s)] * KV;  // rows of [.., hd] in K and V
  }
  E* qp = ws.q.get<E>(size_t(kbase.back() * g * hd));
  E* kp = ws.k.get<E>(size_t(kbase.back() * hd));
  E* vp = ws.v.get<E>(size_t(kbase.back() * hd));
  // Padding rows must be finite (a zero probability times V's padding must stay zero): zeros.
  for (int64_t s = 0; s < nseq; ++s) {
    const int64_t len = offsets[s + 1] - offsets[s], len_p = padded[size_t(s)];
    for (int64_t j = 0; j < KV; ++j) {
      const int64_t row = kbase[size_t(s)] + j * len_p + len;
      std::memset(static_cast<void*>(qp + row * g * hd), 0, size_t((len_p - len) * g * hd) * sizeof(E));
      std::memset(static_cast<void*>(kp + row * hd), 0, size_t((len_p - len) * hd) * sizeof(E));
      std::memset(static_cast<void*>(vp + row * hd), 0, size_t((len_p - len) * hd) * sizeof(E));
    }
  }
  auto rotate = [&](const float* x, int64_t pos, E* dst) {
    const float* c = cos_t + pos * half;
    const float* sn = sin_t + pos * half;
    for (int64_t i = 0; i < half; ++i) {
      const float x1 = x[i], x2 = x[i + half];
      dst[i] = to_elem(x1 * c[i] - x2 * sn[i], dst);
      dst[i + half] = to_elem(x2 * c[i] + x1 * sn[i], dst);
    }
    for (int64_t i = rd; i < hd; ++i) dst[i] = to_elem(x[i], dst);   // partial rotary: passed through
  };
  const int64_t tokens = offsets[nseq] - offsets[0];
#pragma omp parallel for schedule(static) if (tokens * Dq >= 32768)
  for (int64_t t = 0; t < tokens; ++t) {
    const int64_t tok = offsets[0] + t;
    const int64_t s = std::upper_bound(offsets.begin(), offsets.end(), tok) - offsets.begin() - 1;
    const int64_t pos = tok - offsets[s], len_p = padded[size_t(s)], base = kbase[size_t(s)];
    for (int64_t h = 0; h < H; ++h) {
      const int64_t j = h / g, th = h % g;
      rotate(q + tok * Dq + h * hd, pos, qp + (((base + j * len_p) + pos) * g + th) * hd);
    }
    for (int64_t j = 0; j < KV; ++j) {
      const int64_t row = (base + j * len_p + pos) * hd;
      rotate(k + tok * Dkv + j * hd, pos, kp + row);
      for (int64_t i = 0; i < hd; ++i) vp[row + i] = to_elem(v[tok * Dkv + j * hd + i], vp + row);
    }
  }

  // Tasks: (sequence, KV head, query block), largest first so the team finishes together.
  struct Task { int64_t s, j, b; };
  std::vector<Task> tasks;
  for (int64_t s = 0; s < nseq; ++s)
    for (int64_t b = 0; b < padded[size_t(s)] / block; ++b)
      for (int64_t j = 0; j < KV; ++j) tasks.push_back({s, j, b});
  std::stable_sort(tasks.begin(), tasks.end(), [](const Task& a, const Task& b) { return a.b > b.b; });
  const int64_t max_blocks = (max_len + block - 1) / block;
  const BlockPrimitives prims = make_primitives(rows, block, max_blocks, hd, type);
  const float scale = float(shape.scale > 0 ? shape.scale : 1.0 / std::sqrt(double(hd)));
  const dnnl::engine& eng = cpu_engine();
  // Streams and buffers per thread, made before the team starts: an exception must not leave a
  // worksharing loop, so the loop body catches and records the first one.
  const int team = omp_get_max_threads();
  if (ws.threads.size() < size_t(team)) ws.threads.resize(size_t(team));
  std::vector<dnnl::stream> streams;
  std::vector<memory> scratch_mem;
  const size_t score_elems = size_t(rows * max_blocks * block);
  for (int t = 0; t < team; ++t) {
    AttentionThreadBuffers& b = ws.threads[size_t(t)];
    b.scores.get<float>(score_elems);
    if (sizeof(E) == 2) b.probs.get<E>(score_elems);
    b.out.get<float>(size_t(rows * hd));
    streams.emplace_back(eng);
    scratch_mem.emplace_back(memory::desc({int64_t(prims.scratch_bytes)}, dt::u8, tag::a), eng,
                             b.scratchpad.get<uint8_t>(std::max<size_t>(prims.scratch_bytes, 1)));
  }
  std::string failure;
#pragma omp parallel num_threads(team)
  {
    const int me = omp_get_thread_num();
    dnnl::stream& strm = streams[size_t(me)];
    const memory& smem = scratch_mem[size_t(me)];
    AttentionThreadBuffers& mine = ws.threads[size_t(me)];
    float* scores = mine.scores.get<float>(score_elems);
    E* probs = sizeof(E) == 2 ? mine.probs.get<E>(score_elems) : nullptr;
    float* o = mine.out.get<float>(size_t(rows * hd));
#pragma omp for schedule(dynamic, 1)
    for (size_t ti = 0; ti < tasks.size(); ++ti) {
      try {
        const Task& task = tasks[ti];
        const int64_t len = offsets[task.s + 1] - offsets[task.s], len_p = padded[size_t(task.s)];
        const int64_t base = kbase[size_t(task.s)] + task.j * len_p;  // K/V row of position 0
        const int64_t r0 = task.b * block, keys = r0 + block;
        std::optional<profile::Scope> timed(std::in_place, profile::Stage::AttentionGemm);
        memory qm(memory::desc({rows, hd}, type, tag::ab), eng, qp + (base + r0) * g * hd);
        memory km(memory::desc({hd, keys}, type, tag::ba), eng, kp + base * hd);
        memory sm(memory::desc({rows, keys}, dt::f32, tag::ab), eng, scores);
        prims.qk[size_t(task.b)].execute(
            strm, {{DNNL_ARG_SRC, qm}, {DNNL_ARG_WEIGHTS, km}, {DNNL_ARG_DST, sm}, {DNNL_ARG_SCRATCHPAD, smem}});
        timed.reset();
        void* p_data = scores;
        for (int64_t r = 0; r < rows; ++r) {
          const int64_t last = std::min(r0 + r / g, len - 1);  // padding rows: anything finite
          const int64_t first = shape.window > 0 ? std::max<int64_t>(0, last - shape.window + 1) : 0;
          if constexpr (sizeof(E) == 2)
            detail::softmax_row_bf16(scores + r * keys, first, last + 1, keys, scale, probs + r * keys);
          else
            detail::softmax_row_f32(scores + r * keys, first, last + 1, keys, scale);
        }
        if constexpr (sizeof(E) == 2) p_data = probs;
        timed.emplace(profile::Stage::AttentionGemm);
        memory pm(memory::desc({rows, keys}, type, tag::ab), eng, p_data);
        memory vm(memory::desc({keys, hd}, type, tag::ab), eng, vp + base * hd);
        memory om(memory::desc({rows, hd}, dt::f32, tag::ab), eng, o);
        prims.pv[size_t(task.b)].execute(
            strm, {{DNNL_ARG_SRC, pm}, {DNNL_ARG_WEIGHTS, vm}, {DNNL_ARG_DST, om}, {DNNL_ARG_SCRATCHPAD, smem}});
        strm.wait();
        timed.reset();
        // Row (position p, head th) of the block goes to out[token, (j * g + th) * hd]: the g heads
        // of one position are contiguous in both.
        for (int64_t pl = 0; pl < block && r0 + pl < len; ++pl)
          std::memcpy(out + (offsets[task.s] + r0 + pl) * Dq + task.j * g * hd, o + pl * g * hd,
                      size_t(g * hd) * sizeof(float));
      } catch (const dnnl::error& e) {
#pragma omp critical(fp4c_attention_failure)
        if (failure.empty()) failure = e.what();
      }
    }
  }
  if (!failure.empty()) throw dnnl::error(dnnl_runtime_error, failure.c_str());
}

}  // namespace

Status causal_attention(const float* q, const float* k, const float* v, std::span<const int64_t> offsets,
                        const AttentionShape& shape, std::span<const double> inv_freq,
                        Precision precision, float* out, AttentionWorkspace* workspace) {
  const int64_t rd = shape.rotary_dim > 0 ? shape.rotary_dim : shape.head_dim;
  if (shape.heads <= 0 || shape.kv_heads <= 0 || shape.heads % shape.kv_heads != 0 || shape.head_dim <= 0 ||
      shape.head_dim % 2 != 0 || rd % 2 != 0 || rd > shape.head_dim || int64_t(inv_freq.size()) != rd / 2 ||
      shape.window < 0)
    return make_error("attention: unsupported shape: " + std::to_string(shape.heads) + " heads, " +
                      std::to_string(shape.kv_heads) + " KV heads, head_dim " + std::to_string(shape.head_dim) +
                      ", rotary_dim " + std::to_string(rd) + ", " + std::to_string(inv_freq.size()) + " frequencies");
  if (offsets.size() < 2) return {};
  for (size_t s = 1; s < offsets.size(); ++s)
    if (offsets[s] < offsets[s - 1]) return make_error("attention: sequence offsets decrease at " + std::to_string(s));
  profile::Scope timed(profile::Stage::Attention);
  AttentionWorkspace local;
  AttentionWorkspace& ws = workspace ? *workspace : local;
  try {
    if (precision == Precision::BF16)
      run_attention<uint16_t>(q, k, v, offsets, shape, inv_freq, out, ws);
    else
      run_attention<float>(q, k, v, offsets, shape, inv_freq, out, ws);
  } catch (const dnnl::error& e) {
    return make_error(std::string("attention: oneDNN: ") + e.what());
  }
  return {};
}

}  // namespace fp4c::runtime
