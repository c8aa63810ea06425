// The decoder forward on one GPU behind runtime::Engine: the same steps as runtime::Forward
// (runtime/forward.cpp), kernel for kernel. Hidden states stay on the host between calls: each layer
// copies them in, runs, and copies them back, and uploads its weights as it runs (correctness before
// speed; the perf device keeps weights resident instead).
#include <algorithm>
#include <atomic>
#include <cmath>
#include <cstring>
#include <mutex>

#include "runtime/attention.h"
#include "runtime/cuda/common.cuh"
#include "runtime/cuda/cuda_api.h"
#include "runtime/cuda/kernels.cuh"
#include "runtime/cuda/linear.cuh"

namespace fp4c::runtime::cuda {
namespace {

Status check_vector(const std::vector<float>& v, int64_t n, const std::string& what) {
  if (int64_t(v.size()) != n)
    return make_error(what + ": " + std::to_string(v.size()) + " elements, expected " + std::to_string(n));
  return {};
}

Status check_activations(const Activations& acts, int64_t hidden, const std::string& what) {
  if (!acts.offsets.empty() && acts.offsets.front() != 0) return make_error(what + ": sequence offsets must start at 0");
  for (size_t s = 1; s < acts.offsets.size(); ++s)
    if (acts.offsets[s] < acts.offsets[s - 1])
      return make_error(what + ": sequence offsets decrease at sequence " + std::to_string(s - 1));
  if (int64_t(acts.hidden.size()) != acts.tokens() * hidden)
    return make_error(what + ": hidden states hold " + std::to_string(acts.hidden.size()) + " floats, expected [" +
                      std::to_string(acts.tokens()) + ", " + std::to_string(hidden) + "]");
  return {};
}

class CudaEngine final : public Engine {
 public:
  CudaEngine(int device, DeviceDescription desc, const ir::ModelConfig& config, const ForwardOptions& options)
      : device_(device), desc_(std::move(desc)), config_(config), options_(options), host_(config, options) {}
  ~CudaEngine() override {
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

  const ir::ModelConfig& config() const override { return config_; }
  std::string device() const override { return device_label(device_, desc_); }
  std::string fp4_path() const override {
    if (!linear_.native()) return "emulated";
    return linear_.fell_back() ? "native (emulated where cuBLASLt had no FP4 kernel for a shape)" : "native";
  }
  // The lookup runs on the host, as the CPU engine's (the activations live there).
  Expected<Activations> embed(WeightSource& weights, const std::vector<std::vector<int32_t>>& sequences) const override {
    return host_.embed(weights, sequences);
  }
  Status layer(int index, const LayerParams& params, Activations& acts, const LinearHook& hook) const override;
  Status head(const std::vector<float>& final_norm, const LinearParams& lm_head, const Activations& acts,
              const std::function<void(int64_t, const float*, int64_t)>& sink, int64_t chunk_rows) const override;
  void release_memory() const override {
    std::lock_guard lock(mutex_);
    cudaSetDevice(device_);
    ws_ = {};
  }

 private:
  struct Workspace {
    DeviceBuffer x, xn, q, k, v, attn, gate, up, out, pos, key_first, n_keys, rope_cos, rope_sin, norm, logits;
  };
  Status sync(const std::string& what) const {
    FP4C_CUDA_TRY(what, cudaStreamSynchronize(stream_));
    return {};
  }
  Status hook_input(const LinearHook& hook, int layer, ir::Role role, const float* x, int64_t rows, int64_t cols,
                    std::vector<float>& host) const {
    if (!hook) return {};
    host.resize(size_t(rows * cols));
    FP4C_CUDA_TRY("copy of a Linear input to the host",
                  cudaMemcpyAsync(host.data(), x, host.size() * sizeof(float), cudaMemcpyDeviceToHost, stream_));
    FP4C_TRY(sync("copy of a Linear input to the host"));
    hook(LinearInput{layer, role, host.data(), rows, cols});
    return {};
  }

  int device_;
  DeviceDescription desc_;
  ir::ModelConfig config_;
  ForwardOptions options_;
  Forward host_;
  cudaStream_t stream_ = nullptr;
  mutable std::mutex mutex_;
  mutable Workspace ws_;
  mutable LinearRunner linear_;
};

Status CudaEngine::layer(int index, const LayerParams& params, Activations& acts, const LinearHook& hook) const {
  const ir::ModelConfig& c = config_;
  const int64_t H = c.hidden_size, I = c.intermediate_size, nH = c.num_attention_heads, nKV = c.num_key_value_heads,
                hd = c.head_dim;
  const int64_t Dq = nH * hd, Dkv = nKV * hd;
  const std::string where = "layer " + std::to_string(index);
  FP4C_TRY(check_rope_type(c));
  if (nH <= 0 || nKV <= 0 || nH % nKV != 0 || hd <= 0 || hd % 2 != 0)
    return make_error("attention: unsupported shape: " + std::to_string(nH) + " heads, " + std::to_string(nKV) +
                      " KV heads, head_dim " + std::to_string(hd));
  FP4C_TRY(check_vector(params.input_norm, H, where + " input norm"));
  FP4C_TRY(check_vector(params.post_norm, H, where + " post-attention norm"));
  FP4C_TRY(check_implemented(c));
  if (!params.q_norm.empty() || !params.k_norm.empty())
    return make_error(where + ": per-head query/key norms (Qwen3's q_norm/k_norm) are not implemented in the CUDA "
                      "engine; use --device cpu");
  FP4C_TRY(check_linear_params(params.q, Dq, H, where + " q"));
  FP4C_TRY(check_linear_params(params.k, Dkv, H, where + " k"));
  FP4C_TRY(check_linear_params(params.v, Dkv, H, where + " v"));
  FP4C_TRY(check_linear_params(params.o, H, Dq, where + " o"));
  FP4C_TRY(check_linear_params(params.gate, I, H, where + " gate"));
  FP4C_TRY(check_linear_params(params.up, I, H, where + " up"));
  FP4C_TRY(check_linear_params(params.down, H, I, where + " down"));
  FP4C_TRY(check_activations(acts, H, where));
  for (size_t s = 1; s < acts.offsets.size(); ++s)
    if (uses_long_rope(c, acts.offsets[s] - acts.offsets[s - 1]))
      return make_error(where + ": sequence " + std::to_string(s - 1) +
                        " is longer than longrope's original_max_position_embeddings; its long factors are not "
                        "implemented in the CUDA engine (use --device cpu)");
  if (c.sliding_window && size_t(index) < c.sliding_layers.size() && c.sliding_layers[size_t(index)])
    for (size_t s = 1; s < acts.offsets.size(); ++s)
      if (acts.offsets[s] - acts.offsets[s - 1] > *c.sliding_window)
        return make_error(where + ": sequence " + std::to_string(s - 1) + " is longer than the sliding window of " +
                          std::to_string(*c.sliding_window) +
                          "; sliding-window attention is not implemented in the CUDA engine (use --device cpu)");
  const int64_t T = acts.tokens();
  if (T == 0) return {};
  std::lock_guard lock(mutex_);
  FP4C_CUDA_TRY("cudaSetDevice", cudaSetDevice(device_));
  const bool bf16 = options_.precision == Precision::BF16;
  Workspace& ws = ws_;
  auto reserve = [&](DeviceBuffer& b, size_t bytes, const char* what) { return b.reserve(bytes, where + " " + what); };
  FP4C_TRY(reserve(ws.x, size_t(T * H) * 4, "hidden states"));
  FP4C_TRY(reserve(ws.xn, size_t(T * H) * 4, "normed"));
  FP4C_TRY(reserve(ws.q, size_t(T * Dq) * 4, "q"));
  FP4C_TRY(reserve(ws.k, size_t(T * Dkv) * 4, "k"));
  FP4C_TRY(reserve(ws.v, size_t(T * Dkv) * 4, "v"));
  FP4C_TRY(reserve(ws.attn, size_t(T * Dq) * 4, "attention output"));
  FP4C_TRY(reserve(ws.gate, size_t(T * I) * 4, "gate"));
  FP4C_TRY(reserve(ws.up, size_t(T * I) * 4, "up"));
  FP4C_TRY(reserve(ws.out, size_t(T * H) * 4, "Linear output"));

  // Positions and key ranges: token t of sequence s at position p attends rows offsets[s] .. t.
  std::vector<int32_t> pos(static_cast<size_t>(T)), n_keys(static_cast<size_t>(T));
  std::vector<int64_t> key_first(static_cast<size_t>(T));
  int64_t max_len = 0;
  for (size_t s = 0; s + 1 < acts.offsets.size(); ++s) {
    max_len = std::max(max_len, acts.offsets[s + 1] - acts.offsets[s]);
    for (int64_t t = acts.offsets[s]; t < acts.offsets[s + 1]; ++t) {
      pos[size_t(t)] = int32_t(t - acts.offsets[s]);
      n_keys[size_t(t)] = pos[size_t(t)] + 1;
      key_first[size_t(t)] = acts.offsets[s];
    }
  }
  // RoPE tables as the CPU computes them: cos/sin in double of p * inv_freq, rounded to float.
  const std::vector<double> inv_freq = rope_inv_freq(c);
  const double rope_factor = rope_attention_factor(c);
  const int64_t half = hd / 2;
  std::vector<float> cos_t(static_cast<size_t>(max_len * half)), sin_t(static_cast<size_t>(max_len * half));
  for (int64_t p = 0; p < max_len; ++p)
    for (int64_t i = 0; i < half; ++i) {
      const double a = double(p) * inv_freq[size_t(i)];
      cos_t[size_t(p * half + i)] = float(std::cos(a) * rope_factor);
      sin_t[size_t(p * half + i)] = float(std::sin(a) * rope_factor);
    }
  FP4C_ASSIGN(ws.pos, to_device(pos.data(), pos.size(), "positions"));
  FP4C_ASSIGN(ws.n_keys, to_device(n_keys.data(), n_keys.size(), "key counts"));
  FP4C_ASSIGN(ws.key_first, to_device(key_first.data(), key_first.size(), "key rows"));
  FP4C_ASSIGN(ws.rope_cos, to_device(cos_t.data(), cos_t.size(), "RoPE table"));
  FP4C_ASSIGN(ws.rope_sin, to_device(sin_t.data(), sin_t.size(), "RoPE table"));
  FP4C_ASSIGN(DeviceBuffer in_norm, to_device(params.input_norm.data(), params.input_norm.size(), where + " input norm"));
  FP4C_ASSIGN(DeviceBuffer post_norm, to_device(params.post_norm.data(), params.post_norm.size(), where + " post norm"));
  FP4C_CUDA_TRY(where + ": copy of hidden states to the GPU",
                cudaMemcpyAsync(ws.x.as<float>(), acts.hidden.data(), size_t(T * H) * 4, cudaMemcpyHostToDevice, stream_));
  float* x = ws.x.as<float>();
  float* xn = ws.xn.as<float>();
  std::vector<float> host_copy;
  auto run = [&](const LinearParams& p, const float* in, float* out, const char* name) -> Status {
    const std::string what = where + " " + name;
    FP4C_ASSIGN(const DeviceLinear w, linear_.upload(p, bf16, what));
    FP4C_TRY(linear_.run(w, in, T, bf16, out, what));
    return sync(what);  // the weight's buffers are freed on return
  };

  // Attention block.
  FP4C_CUDA_TRY(where + ": rms_norm", kernels::rms_norm(x, in_norm.as<float>(), T, H, c.rms_norm_eps, xn, stream_));
  FP4C_TRY(hook_input(hook, index, ir::Role::Q, xn, T, H, host_copy));
  FP4C_TRY(run(params.q, xn, ws.q.as<float>(), "q"));
  FP4C_TRY(run(params.k, xn, ws.k.as<float>(), "k"));
  FP4C_TRY(run(params.v, xn, ws.v.as<float>(), "v"));
  FP4C_CUDA_TRY(where + ": rope", kernels::rope(ws.q.as<float>(), ws.pos.as<int32_t>(), ws.rope_cos.as<float>(),
                                                ws.rope_sin.as<float>(), T, nH, hd, stream_));
  FP4C_CUDA_TRY(where + ": rope", kernels::rope(ws.k.as<float>(), ws.pos.as<int32_t>(), ws.rope_cos.as<float>(),
                                                ws.rope_sin.as<float>(), T, nKV, hd, stream_));
  kernels::AttentionArgs args{ws.q.as<float>(), ws.k.as<float>(), ws.v.as<float>(), ws.key_first.as<int64_t>(),
                              ws.n_keys.as<int32_t>(), T, nH, nKV, hd, max_len, bf16, ws.attn.as<float>()};
  FP4C_CUDA_TRY(where + ": attention", kernels::attention(args, stream_));
  FP4C_TRY(hook_input(hook, index, ir::Role::O, ws.attn.as<float>(), T, Dq, host_copy));
  FP4C_TRY(run(params.o, ws.attn.as<float>(), ws.out.as<float>(), "o"));
  FP4C_CUDA_TRY(where + ": residual", kernels::add_inplace(x, ws.out.as<float>(), T * H, stream_));

  // MLP block.
  FP4C_CUDA_TRY(where + ": rms_norm", kernels::rms_norm(x, post_norm.as<float>(), T, H, c.rms_norm_eps, xn, stream_));
  FP4C_TRY(hook_input(hook, index, ir::Role::Gate, xn, T, H, host_copy));
  FP4C_TRY(run(params.gate, xn, ws.gate.as<float>(), "gate"));
  FP4C_TRY(run(params.up, xn, ws.up.as<float>(), "up"));
  FP4C_CUDA_TRY(where + ": silu_mul", kernels::silu_mul(ws.gate.as<float>(), ws.up.as<float>(), T * I, stream_));
  FP4C_TRY(hook_input(hook, index, ir::Role::Down, ws.gate.as<float>(), T, I, host_copy));
  FP4C_TRY(run(params.down, ws.gate.as<float>(), ws.out.as<float>(), "down"));
  FP4C_CUDA_TRY(where + ": residual", kernels::add_inplace(x, ws.out.as<float>(), T * H, stream_));
  FP4C_CUDA_TRY(where + ": copy of hidden states to the host",
                cudaMemcpyAsync(acts.hidden.data(), x, size_t(T * H) * 4, cudaMemcpyDeviceToHost, stream_));
  return sync(where);
}

Status CudaEngine::head(const std::vector<float>& final_norm, const LinearParams& lm_head, const Activations& acts,
                        const std::function<void(int64_t, const float*, int64_t)>& sink, int64_t chunk_rows) const {
  const int64_t H = config_.hidden_size, V = config_.vocab_size;
  FP4C_TRY(check_vector(final_norm, H, "final norm"));
  FP4C_TRY(check_linear_params(lm_head, V, H, "lm_head"));
  if (chunk_rows <= 0) return make_error("head: chunk_rows must be positive, got " + std::to_string(chunk_rows));
  FP4C_TRY(check_implemented(config_));
  FP4C_TRY(check_activations(acts, H, "head"));
  const int64_t T = acts.tokens();
  if (T == 0) return {};
  std::lock_guard lock(mutex_);
  FP4C_CUDA_TRY("cudaSetDevice", cudaSetDevice(device_));
  const bool bf16 = options_.precision == Precision::BF16;
  const int64_t chunk = std::min(chunk_rows, T);
  Workspace& ws = ws_;
  FP4C_TRY(ws.x.reserve(size_t(chunk * H) * 4, "head hidden states"));
  FP4C_TRY(ws.xn.reserve(size_t(chunk * H) * 4, "head normed"));
  FP4C_TRY(ws.logits.reserve(size_t(chunk * V) * 4, "logits"));
  FP4C_ASSIGN(DeviceBuffer norm, to_device(final_norm.data(), final_norm.size(), "final norm"));
  FP4C_ASSIGN(const DeviceLinear w, linear_.upload(lm_head, bf16, "lm_head"));
  std::vector<float> logits(static_cast<size_t>(chunk * V));
  for (int64_t r = 0; r < T; r += chunk) {
    const int64_t n = std::min(chunk, T - r);
    FP4C_CUDA_TRY("head: copy of hidden states to the GPU",
                  cudaMemcpyAsync(ws.x.as<float>(), &acts.hidden[size_t(r * H)], size_t(n * H) * 4, cudaMemcpyHostToDevice,
                                  stream_));
    FP4C_CUDA_TRY("head: rms_norm",
                  kernels::rms_norm(ws.x.as<float>(), norm.as<float>(), n, H, config_.rms_norm_eps, ws.xn.as<float>(), stream_));
    FP4C_TRY(linear_.run(w, ws.xn.as<float>(), n, bf16, ws.logits.as<float>(), "lm_head"));
    FP4C_CUDA_TRY("head: copy of logits to the host",
                  cudaMemcpyAsync(logits.data(), ws.logits.as<float>(), size_t(n * V) * 4, cudaMemcpyDeviceToHost, stream_));
    FP4C_TRY(sync("head"));
    sink(r, logits.data(), n);
  }
  return {};
}

}  // namespace

Expected<std::unique_ptr<Engine>> make_engine(int device, const ir::ModelConfig& config, const ForwardOptions& options) {
  FP4C_ASSIGN(DeviceDescription desc, select_device(device));
  auto engine = std::make_unique<CudaEngine>(device, std::move(desc), config, options);
  FP4C_TRY(engine->init());
  return std::unique_ptr<Engine>(std::move(engine));
}

}  // namespace fp4c::runtime::cuda
