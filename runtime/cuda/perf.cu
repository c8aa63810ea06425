// Speed and memory of one GPU (runtime/perf.h): ceilings measured in the same run, BF16 against NVFP4
// matrix multiplies, and greedy serving with all weights resident and a KV cache on the GPU. Every
// time is taken with cudaEvents on the stream that ran the work; figures are medians.
#include <algorithm>
#include <cmath>
#include <random>

#include "runtime/attention.h"
#include "runtime/cuda/common.cuh"
#include "runtime/cuda/cuda_api.h"
#include "runtime/cuda/kernels.cuh"
#include "runtime/cuda/linear.cuh"
#include "runtime/cuda/numerics.h"

namespace fp4c::runtime::cuda {
namespace {

__global__ void read_kernel(const float4* data, int64_t n, float* sink) {
  float acc = 0;
  for (int64_t i = int64_t(blockIdx.x) * blockDim.x + threadIdx.x; i < n; i += int64_t(gridDim.x) * blockDim.x) {
    const float4 v = data[i];
    acc += v.x + v.y + v.z + v.w;
  }
  if (acc == 12345.678f) sink[0] = acc;  // keeps the loads; practically never true
}

double median(std::vector<double> v) {
  if (v.empty()) return 0;
  std::sort(v.begin(), v.end());
  return v.size() % 2 ? v[v.size() / 2] : 0.5 * (v[v.size() / 2 - 1] + v[v.size() / 2]);
}
double percentile(std::vector<double> v, double p) {
  if (v.empty()) return 0;
  std::sort(v.begin(), v.end());
  const size_t i = size_t(std::ceil(p / 100.0 * double(v.size()))) - 1;
  return v[std::min(i, v.size() - 1)];
}

class Events {
 public:
  Events() {
    cudaEventCreate(&a_);
    cudaEventCreate(&b_);
  }
  ~Events() {
    cudaEventDestroy(a_);
    cudaEventDestroy(b_);
  }
  Events(const Events&) = delete;
  Events& operator=(const Events&) = delete;
  Status start(cudaStream_t s) {
    FP4C_CUDA_TRY("cudaEventRecord", cudaEventRecord(a_, s));
    return {};
  }
  Expected<double> stop(cudaStream_t s) {
    FP4C_CUDA_TRY("cudaEventRecord", cudaEventRecord(b_, s));
    FP4C_CUDA_TRY("cudaEventSynchronize", cudaEventSynchronize(b_));
    float ms = 0;
    FP4C_CUDA_TRY("cudaEventElapsedTime", cudaEventElapsedTime(&ms, a_, b_));
    return double(ms) * 1e-3;
  }

 private:
  cudaEvent_t a_ = nullptr, b_ = nullptr;
};

// Times `f` (enqueueing work on s) `reps` times after one warm-up; the median in seconds.
template <typename F>
Expected<double> time_median(cudaStream_t s, int reps, F&& f) {
  FP4C_TRY(f());
  FP4C_CUDA_TRY("warm-up", cudaStreamSynchronize(s));
  Events ev;
  std::vector<double> t;
  for (int r = 0; r < std::max(1, reps); ++r) {
    FP4C_TRY(ev.start(s));
    FP4C_TRY(f());
    FP4C_ASSIGN(const double sec, ev.stop(s));
    t.push_back(sec);
  }
  return median(t);
}

std::vector<float> random_floats(std::mt19937_64& rng, size_t n, float scale) {
  std::normal_distribution<float> d(0.0f, scale);
  std::vector<float> v(n);
  for (float& x : v) x = d(rng);
  return v;
}

// Random packed NVFP4 bytes: any codes, block scales around 1 (E4M3 0x30..0x40), G = 1.
LinearParams random_packed(std::mt19937_64& rng, int64_t n, int64_t k, std::optional<float> input_scale) {
  LinearParams p;
  p.out = n;
  p.in = k;
  PackedNvfp4 packed;
  packed.codes.resize(size_t(n * k / 2));
  packed.block_scales.resize(size_t(n * k / 16));
  for (auto& c : packed.codes) c = uint8_t(rng());
  for (auto& s : packed.block_scales) s = uint8_t(0x30 + rng() % 16);
  packed.global_scale = 1.0f;
  p.packed = std::move(packed);
  p.input_global_scale = input_scale;
  return p;
}

class CudaPerfDevice final : public PerfDevice {
 public:
  CudaPerfDevice(int device, DeviceDescription desc) : device_(device), desc_(std::move(desc)) {}
  ~CudaPerfDevice() override {
    if (stream_) {
      cudaSetDevice(device_);
      cudaStreamDestroy(stream_);
    }
  }
  Status init() {
    // A blocking stream: it waits for the legacy stream's host-to-device copies (to_device), whose
    // DMA may still run when cudaMemcpy returns.
    FP4C_CUDA_TRY("cudaStreamCreate", cudaStreamCreate(&stream_));
    return linear_.init(desc_.sm, stream_);
  }

  DeviceInfo info() const override {
    DeviceInfo d;
    d.kind = "cuda";
    d.name = desc_.name;
    d.compute_capability = desc_.sm;
    d.threads = desc_.multiprocessors;
    d.fp4_path = fp4_path();
    size_t free = 0, total = 0;
    cudaSetDevice(device_);
    if (cudaMemGetInfo(&free, &total) == cudaSuccess) {
      d.memory_free = free;
      d.memory_total = total;
    }
    return d;
  }
  Expected<Ceilings> ceilings() override;
  Expected<MatmulFigures> matmul(const MatmulCase& shape, int repetitions) override;
  Expected<ServingFigures> serve(WeightSource& weights, const ir::ModelConfig& config, const ServingSpec& spec) override;

 private:
  std::string fp4_path() const {
    if (!linear_.native()) return "emulated";
    return linear_.fell_back() ? "native (emulated where cuBLASLt had no FP4 kernel for a shape)" : "native";
  }
  int device_;
  DeviceDescription desc_;
  cudaStream_t stream_ = nullptr;
  LinearRunner linear_;
  std::mt19937_64 rng_{std::random_device{}()};
};

Expected<Ceilings> CudaPerfDevice::ceilings() {
  FP4C_CUDA_TRY("cudaSetDevice", cudaSetDevice(device_));
  Ceilings c;
  // Bandwidth: a read of 1 GiB (or a quarter of the free memory), float4 loads.
  size_t free = 0, total = 0;
  FP4C_CUDA_TRY("cudaMemGetInfo", cudaMemGetInfo(&free, &total));
  const size_t bytes = std::min<size_t>(size_t(1) << 30, free / 4) / 16 * 16;
  {
    DeviceBuffer buf, sink;
    FP4C_TRY(buf.reserve(bytes, "bandwidth buffer"));
    FP4C_TRY(sink.reserve(16, "bandwidth sink"));
    FP4C_CUDA_TRY("memset", cudaMemsetAsync(buf.as<void>(), 0, bytes, stream_));
    const unsigned blocks = unsigned(desc_.multiprocessors * 8);
    FP4C_ASSIGN(const double t, time_median(stream_, 10, [&]() -> Status {
      read_kernel<<<blocks, 512, 0, stream_>>>(buf.as<float4>(), int64_t(bytes / 16), sink.as<float>());
      FP4C_LAUNCH_TRY("read kernel");
      return {};
    }));
    c.bandwidth_gbs = double(bytes) / t / 1e9;
  }
  // BF16: a square 8192 GEMM through cublasGemmEx (BF16 in, FP32 accumulation and output).
  const int64_t n = 8192;
  {
    DeviceBuffer a, b, y;
    FP4C_TRY(a.reserve(size_t(n * n) * 2, "BF16 GEMM A"));
    FP4C_TRY(b.reserve(size_t(n * n) * 2, "BF16 GEMM B"));
    FP4C_TRY(y.reserve(size_t(n * n) * 4, "BF16 GEMM C"));
    FP4C_CUDA_TRY("memset", cudaMemsetAsync(a.as<void>(), 0, a.bytes(), stream_));
    FP4C_CUDA_TRY("memset", cudaMemsetAsync(b.as<void>(), 0, b.bytes(), stream_));
    const float one = 1, zero = 0;
    FP4C_ASSIGN(const double t, time_median(stream_, 5, [&]() -> Status {
      FP4C_CUBLAS_TRY("cublasGemmEx", linear_.api().gemm_ex(linear_.default_handle(), CUBLAS_OP_T, CUBLAS_OP_N, int(n), int(n), int(n),
                                                   &one, a.as<void>(), CUDA_R_16BF, int(n), b.as<void>(), CUDA_R_16BF,
                                                   int(n), &zero, y.as<void>(), CUDA_R_32F, int(n), CUBLAS_COMPUTE_32F,
                                                   CUBLAS_GEMM_DEFAULT));
      return {};
    }));
    c.bf16_tflops = 2.0 * double(n) * double(n) * double(n) / t / 1e12;
  }
  c.how = "read of " + std::to_string(bytes >> 20) + " MiB (float4 loads, " + std::to_string(desc_.multiprocessors * 8) +
          " blocks); cublasGemmEx BF16 8192^3, FP32 accumulation";
  if (linear_.native()) {
    DeviceBuffer a, b, sa, sb, y;
    FP4C_TRY(a.reserve(size_t(n * n / 2), "FP4 GEMM A"));
    FP4C_TRY(b.reserve(size_t(n * n / 2), "FP4 GEMM B"));
    const size_t sbytes = size_t(num::scale_swizzle_bytes(n, n / 16));
    FP4C_TRY(sa.reserve(sbytes, "FP4 GEMM scales"));
    FP4C_TRY(sb.reserve(sbytes, "FP4 GEMM scales"));
    FP4C_TRY(y.reserve(size_t(n * n) * 4, "FP4 GEMM C"));
    FP4C_CUDA_TRY("memset", cudaMemsetAsync(a.as<void>(), 0x22, a.bytes(), stream_));
    FP4C_CUDA_TRY("memset", cudaMemsetAsync(b.as<void>(), 0x22, b.bytes(), stream_));
    FP4C_CUDA_TRY("memset", cudaMemsetAsync(sa.as<void>(), 0x38, sbytes, stream_));
    FP4C_CUDA_TRY("memset", cudaMemsetAsync(sb.as<void>(), 0x38, sbytes, stream_));
    bool ran = true;
    FP4C_ASSIGN(const double t, time_median(stream_, 5, [&]() -> Status {
      FP4C_ASSIGN(ran, linear_.fp4_gemm(b.as<uint8_t>(), sb.as<uint8_t>(), n, a.as<uint8_t>(), sa.as<uint8_t>(), n, n,
                                        1.0f, y.as<float>(), "FP4 ceiling"));
      return {};
    }));
    if (ran) {
      c.fp4_tflops = 2.0 * double(n) * double(n) * double(n) / t / 1e12;
      c.how += "; cuBLASLt block-scaled FP4 (VEC16_UE4M3) 8192^3";
    }
  }
  return c;
}

Expected<MatmulFigures> CudaPerfDevice::matmul(const MatmulCase& shape, int repetitions) {
  const int64_t m = shape.m, n = shape.n, k = shape.k;
  if (m <= 0 || n <= 0 || k <= 0 || k % 16 != 0)
    return make_error("matmul: shape m " + std::to_string(m) + ", n " + std::to_string(n) + ", k " + std::to_string(k) +
                      " (k must be a positive multiple of 16)");
  FP4C_CUDA_TRY("cudaSetDevice", cudaSetDevice(device_));
  MatmulFigures f;
  f.shape = shape;
  f.repetitions = repetitions;
  const std::vector<float> x = random_floats(rng_, size_t(m * k), 1.0f);
  FP4C_ASSIGN(DeviceBuffer dx, to_device(x.data(), x.size(), "matmul input"));
  DeviceBuffer dy;
  FP4C_TRY(dy.reserve(size_t(m * n) * 4, "matmul output"));
  // BF16: weights and activations in BF16 (as a BF16 model runs), FP32 accumulation and output.
  {
    LinearParams p;
    p.out = n;
    p.in = k;
    p.weight = random_floats(rng_, size_t(n * k), 1.0f / std::sqrt(float(k)));
    FP4C_ASSIGN(const DeviceLinear w, linear_.upload(p, true, "matmul BF16 weight"));
    DeviceBuffer xb;
    FP4C_TRY(xb.reserve(size_t(m * k) * 2, "BF16 input"));
    FP4C_CUDA_TRY("BF16 conversion", kernels::to_bf16(dx.as<float>(), xb.as<uint16_t>(), m * k, stream_));
    const float one = 1, zero = 0;
    FP4C_ASSIGN(f.bf16_seconds, time_median(stream_, repetitions, [&]() -> Status {
      FP4C_CUBLAS_TRY("cublasGemmEx", linear_.api().gemm_ex(linear_.default_handle(), CUBLAS_OP_T, CUBLAS_OP_N, int(n), int(m), int(k),
                                                   &one, w.weight.as<void>(), CUDA_R_16BF, int(k), xb.as<void>(), CUDA_R_16BF,
                                                   int(k), &zero, dy.as<void>(), CUDA_R_32F, int(n), CUBLAS_COMPUTE_32F,
                                                   CUBLAS_GEMM_DEFAULT));
      return {};
    }));
    const double bytes = double(n * k) * 2 + double(m * k) * 2 + double(m * n) * 4;
    f.bf16_gbs = bytes / f.bf16_seconds / 1e9;
    f.bf16_tflops = 2.0 * double(m) * double(n) * double(k) / f.bf16_seconds / 1e12;
  }
  // NVFP4: W4A16 through the fused kernel (FP32 activations), or W4A4 with the activations quantized
  // inside the timed call (as a serving engine does), natively or emulated.
  {
    const LinearParams p = random_packed(rng_, n, k, shape.w4a4 ? std::optional<float>(448.0f * 6.0f / 4.0f) : std::nullopt);
    FP4C_ASSIGN(const DeviceLinear w, linear_.upload(p, false, "matmul NVFP4 weight"));
    FP4C_ASSIGN(f.fp4_seconds, time_median(stream_, repetitions, [&]() -> Status {
      return linear_.run(w, dx.as<float>(), m, false, dy.as<float>(), "matmul NVFP4");
    }));
    const double bytes = double(n * k) / 2 + double(n * k) / 16 + double(m * k) * 4 + double(m * n) * 4;
    f.fp4_gbs = bytes / f.fp4_seconds / 1e9;
    f.fp4_tflops = 2.0 * double(m) * double(n) * double(k) / f.fp4_seconds / 1e12;
    f.fp4_path = shape.w4a4 ? fp4_path() : "fused-dequant";
  }
  return f;
}

// All of a model's weights on the GPU, as serving holds them.
struct ResidentLayer {
  DeviceBuffer input_norm, post_norm;
  DeviceLinear q, k, v, o, gate, up, down;
};

Expected<ServingFigures> CudaPerfDevice::serve(WeightSource& weights, const ir::ModelConfig& c, const ServingSpec& spec) {
  if (spec.batch <= 0 || spec.prompt <= 0 || spec.output <= 0)
    return make_error("serve " + spec.name + ": batch, prompt and output must be positive");
  FP4C_CUDA_TRY("cudaSetDevice", cudaSetDevice(device_));
  const int64_t H = c.hidden_size, I = c.intermediate_size, nH = c.num_attention_heads, nKV = c.num_key_value_heads,
                hd = c.head_dim, V = c.vocab_size, L = c.num_hidden_layers;
  const int64_t Dq = nH * hd, Dkv = nKV * hd;
  const int64_t B = spec.batch, P = spec.prompt, cap = spec.prompt + spec.output;
  FP4C_TRY(check_implemented(c));
  if (uses_long_rope(c, cap))
    return make_error("serve " + spec.name + ": " + std::to_string(cap) +
                      " positions exceed longrope's original_max_position_embeddings (not implemented in the CUDA engine)");
  if (c.sliding_window && cap > *c.sliding_window &&
      std::find(c.sliding_layers.begin(), c.sliding_layers.end(), true) != c.sliding_layers.end())
    return make_error("serve " + spec.name + ": " + std::to_string(cap) + " positions exceed the sliding window of " +
                      std::to_string(*c.sliding_window) +
                      "; sliding-window attention is not implemented in the CUDA engine (use --device cpu)");
  ServingFigures f;
  f.spec = spec;
  // Weights, once: dense Linears in BF16, NVFP4 ones packed.
  std::vector<ResidentLayer> layers(static_cast<size_t>(L));
  for (int64_t l = 0; l < L; ++l) {
    const std::string where = "layer " + std::to_string(l);
    FP4C_ASSIGN(const LayerParams p, weights.layer(int(l)));
    ResidentLayer& r = layers[size_t(l)];
    if (!p.q_norm.empty() || !p.k_norm.empty())
      return make_error(where + ": per-head query/key norms (Qwen3's q_norm/k_norm) are not implemented in the CUDA "
                        "engine; use --device cpu");
    FP4C_ASSIGN(r.input_norm, to_device(p.input_norm.data(), p.input_norm.size(), where + " input norm"));
    FP4C_ASSIGN(r.post_norm, to_device(p.post_norm.data(), p.post_norm.size(), where + " post norm"));
    const std::pair<const LinearParams*, DeviceLinear*> all[] = {{&p.q, &r.q},       {&p.k, &r.k},   {&p.v, &r.v},
                                                                 {&p.o, &r.o},       {&p.gate, &r.gate},
                                                                 {&p.up, &r.up},     {&p.down, &r.down}};
    const int64_t shapes[7][2] = {{Dq, H}, {Dkv, H}, {Dkv, H}, {H, Dq}, {I, H}, {I, H}, {H, I}};
    for (int i = 0; i < 7; ++i) {
      FP4C_TRY(check_linear_params(*all[i].first, shapes[i][0], shapes[i][1], where));
      FP4C_ASSIGN(*all[i].second, linear_.upload(*all[i].first, true, where));
      f.weight_bytes += all[i].second->weight_bytes();
    }
    f.weight_bytes += 2 * uint64_t(H) * 4;
  }
  FP4C_ASSIGN(const std::vector<float> embedding, weights.embedding());
  if (int64_t(embedding.size()) != V * H) return make_error("serve: embedding has " + std::to_string(embedding.size()) + " elements");
  FP4C_ASSIGN(DeviceBuffer emb, to_device(embedding.data(), embedding.size(), "embedding"));
  FP4C_ASSIGN(const std::vector<float> final_norm_h, weights.final_norm());
  FP4C_ASSIGN(DeviceBuffer final_norm, to_device(final_norm_h.data(), final_norm_h.size(), "final norm"));
  FP4C_ASSIGN(const LinearParams head_p, weights.lm_head());
  FP4C_TRY(check_linear_params(head_p, V, H, "lm_head"));
  FP4C_ASSIGN(const DeviceLinear head, linear_.upload(head_p, true, "lm_head"));
  f.weight_bytes += emb.bytes() + head.weight_bytes() + final_norm.bytes();

  // KV cache [layer][B * cap, Dkv], FP32; activations for the prefill's B * P rows.
  std::vector<DeviceBuffer> kc(static_cast<size_t>(L)), vc(static_cast<size_t>(L));
  for (int64_t l = 0; l < L; ++l) {
    FP4C_TRY(kc[size_t(l)].reserve(size_t(B * cap * Dkv) * 4, "KV cache"));
    FP4C_TRY(vc[size_t(l)].reserve(size_t(B * cap * Dkv) * 4, "KV cache"));
  }
  f.kv_cache_bytes = uint64_t(2 * L * B * cap * Dkv) * 4;
  const int64_t R = B * P;
  DeviceBuffer x, xn, q, k, v, attn, gate, up, out, logits, ids, last, pos, dst, kf, nk, rc, rs;
  for (auto [buf, bytes] : {std::pair{&x, R * H * 4}, {&xn, R * H * 4}, {&q, R * Dq * 4}, {&k, R * Dkv * 4},
                            {&v, R * Dkv * 4}, {&attn, R * Dq * 4}, {&gate, R * I * 4}, {&up, R * I * 4},
                            {&out, R * H * 4}, {&logits, B * V * 4}, {&ids, R * 4}, {&last, B * H * 4}})
    FP4C_TRY(buf->reserve(size_t(bytes), "serving activations"));
  const std::vector<double> inv_freq = rope_inv_freq(c);
  const int64_t half = hd / 2;
  std::vector<float> cos_t(static_cast<size_t>(cap * half)), sin_t(static_cast<size_t>(cap * half));
  for (int64_t p = 0; p < cap; ++p)
    for (int64_t i = 0; i < half; ++i) {
      cos_t[size_t(p * half + i)] = float(std::cos(double(p) * inv_freq[size_t(i)]) * rope_attention_factor(c));
      sin_t[size_t(p * half + i)] = float(std::sin(double(p) * inv_freq[size_t(i)]) * rope_attention_factor(c));
    }
  FP4C_ASSIGN(rc, to_device(cos_t.data(), cos_t.size(), "RoPE table"));
  FP4C_ASSIGN(rs, to_device(sin_t.data(), sin_t.size(), "RoPE table"));
  std::vector<int32_t> prompt(static_cast<size_t>(R));
  for (auto& id : prompt) id = int32_t(rng_() % uint64_t(V));

  // Rows of this step: prefill (every prompt position) or decode (one per request, at position `at`).
  std::vector<int32_t> pos_h;
  std::vector<int64_t> dst_h, kf_h;
  std::vector<int32_t> nk_h;
  auto set_rows = [&](bool prefill, int64_t at) -> Status {
    pos_h.clear(), dst_h.clear(), kf_h.clear(), nk_h.clear();
    for (int64_t b = 0; b < B; ++b)
      for (int64_t p = prefill ? 0 : at; p < (prefill ? P : at + 1); ++p) {
        pos_h.push_back(int32_t(p));
        dst_h.push_back(b * cap + p);
        kf_h.push_back(b * cap);
        nk_h.push_back(int32_t(p + 1));
      }
    FP4C_ASSIGN(pos, to_device(pos_h.data(), pos_h.size(), "positions"));
    FP4C_ASSIGN(dst, to_device(dst_h.data(), dst_h.size(), "cache rows"));
    FP4C_ASSIGN(kf, to_device(kf_h.data(), kf_h.size(), "key rows"));
    FP4C_ASSIGN(nk, to_device(nk_h.data(), nk_h.size(), "key counts"));
    return {};
  };
  // One forward over `rows` rows whose ids are in `ids`, then the next token of each request into ids.
  auto step = [&](int64_t rows, bool prefill) -> Status {
    cudaStream_t s = stream_;
    FP4C_CUDA_TRY("embedding", kernels::gather_rows(emb.as<float>(), ids.as<int32_t>(), rows, H, x.as<float>(), s));
    for (int64_t l = 0; l < L; ++l) {
      const ResidentLayer& w = layers[size_t(l)];
      FP4C_CUDA_TRY("rms_norm", kernels::rms_norm(x.as<float>(), w.input_norm.as<float>(), rows, H, c.rms_norm_eps, xn.as<float>(), s));
      FP4C_TRY(linear_.run(w.q, xn.as<float>(), rows, true, q.as<float>(), "q"));
      FP4C_TRY(linear_.run(w.k, xn.as<float>(), rows, true, k.as<float>(), "k"));
      FP4C_TRY(linear_.run(w.v, xn.as<float>(), rows, true, v.as<float>(), "v"));
      FP4C_CUDA_TRY("rope", kernels::rope(q.as<float>(), pos.as<int32_t>(), rc.as<float>(), rs.as<float>(), rows, nH, hd, s));
      FP4C_CUDA_TRY("rope", kernels::rope(k.as<float>(), pos.as<int32_t>(), rc.as<float>(), rs.as<float>(), rows, nKV, hd, s));
      FP4C_CUDA_TRY("KV cache", kernels::scatter_rows(k.as<float>(), rows, Dkv, dst.as<int64_t>(), kc[size_t(l)].as<float>(), s));
      FP4C_CUDA_TRY("KV cache", kernels::scatter_rows(v.as<float>(), rows, Dkv, dst.as<int64_t>(), vc[size_t(l)].as<float>(), s));
      kernels::AttentionArgs a{q.as<float>(), kc[size_t(l)].as<float>(), vc[size_t(l)].as<float>(), kf.as<int64_t>(),
                               nk.as<int32_t>(), rows, nH, nKV, hd, cap, true, attn.as<float>()};
      FP4C_CUDA_TRY("attention", kernels::attention(a, s));
      FP4C_TRY(linear_.run(w.o, attn.as<float>(), rows, true, out.as<float>(), "o"));
      FP4C_CUDA_TRY("residual", kernels::add_inplace(x.as<float>(), out.as<float>(), rows * H, s));
      FP4C_CUDA_TRY("rms_norm", kernels::rms_norm(x.as<float>(), w.post_norm.as<float>(), rows, H, c.rms_norm_eps, xn.as<float>(), s));
      FP4C_TRY(linear_.run(w.gate, xn.as<float>(), rows, true, gate.as<float>(), "gate"));
      FP4C_TRY(linear_.run(w.up, xn.as<float>(), rows, true, up.as<float>(), "up"));
      FP4C_CUDA_TRY("silu_mul", kernels::silu_mul(gate.as<float>(), up.as<float>(), rows * I, s));
      FP4C_TRY(linear_.run(w.down, gate.as<float>(), rows, true, out.as<float>(), "down"));
      FP4C_CUDA_TRY("residual", kernels::add_inplace(x.as<float>(), out.as<float>(), rows * H, s));
    }
    // The last row of each request: rows b * P + P - 1 in prefill, row b when decoding.
    const float* final_rows = x.as<float>();
    if (prefill) {
      FP4C_CUDA_TRY("last rows", cudaMemcpy2DAsync(last.as<float>(), size_t(H) * 4, x.as<float>() + (P - 1) * H,
                                                   size_t(P * H) * 4, size_t(H) * 4, size_t(B), cudaMemcpyDeviceToDevice, s));
      final_rows = last.as<float>();
    }
    FP4C_CUDA_TRY("rms_norm", kernels::rms_norm(final_rows, final_norm.as<float>(), B, H, c.rms_norm_eps, xn.as<float>(), s));
    FP4C_TRY(linear_.run(head, xn.as<float>(), B, true, logits.as<float>(), "lm_head"));
    FP4C_CUDA_TRY("argmax", kernels::argmax_rows(logits.as<float>(), B, V, ids.as<int32_t>(), s));
    return {};
  };

  size_t free0 = 0, total = 0;
  FP4C_CUDA_TRY("cudaMemGetInfo", cudaMemGetInfo(&free0, &total));
  FP4C_CUDA_TRY("prompt upload", cudaMemcpy(ids.as<void>(), prompt.data(), prompt.size() * 4, cudaMemcpyHostToDevice));
  Events whole, one;
  FP4C_TRY(set_rows(true, 0));
  FP4C_TRY(whole.start(stream_));
  FP4C_TRY(step(R, true));
  FP4C_ASSIGN(f.ttft_seconds, whole.stop(stream_));
  std::vector<double> steps;
  for (int64_t t = 1; t < spec.output; ++t) {
    FP4C_TRY(set_rows(false, P + t - 1));
    FP4C_TRY(one.start(stream_));
    FP4C_TRY(step(B, false));
    FP4C_ASSIGN(const double sec, one.stop(stream_));
    steps.push_back(sec);
  }
  size_t free1 = 0;
  FP4C_CUDA_TRY("cudaMemGetInfo", cudaMemGetInfo(&free1, &total));
  double total_s = f.ttft_seconds;
  for (double s : steps) total_s += s;
  f.decode_p50_seconds = percentile(steps, 50);
  f.decode_p95_seconds = percentile(steps, 95);
  f.decode_p99_seconds = percentile(steps, 99);
  f.tokens_per_second = double(B * spec.output) / total_s;
  f.requests_per_second = double(B) / total_s;
  f.memory_free = std::min(free0, free1);
  f.memory_used = total - f.memory_free;
  return f;
}

}  // namespace

Expected<std::unique_ptr<PerfDevice>> make_perf_device(int device) {
  FP4C_ASSIGN(DeviceDescription desc, select_device(device));
  auto perf = std::make_unique<CudaPerfDevice>(device, std::move(desc));
  FP4C_TRY(perf->init());
  return std::unique_ptr<PerfDevice>(std::move(perf));
}

}  // namespace fp4c::runtime::cuda
