// Shared by the CUDA runtime's translation units: CUDA and cuBLAS failures as fp4c errors, a device
// buffer that frees itself, and what a device is called in reports.
#pragma once

#include <cuda_runtime.h>

#include <cstdint>
#include <string>
#include <utility>

#include "base/expected.h"
#include "ir/model.h"
#include "runtime/cuda/cublas_loader.cuh"

namespace fp4c::runtime::cuda {

// The model features the CUDA engine and the serving measurement do not implement, refused by name (the CPU
// runtime has them): MoE layers, Gemma-style layers, partial rotary embeddings, final logit soft-capping.
inline Status check_implemented(const ir::ModelConfig& c) {
  if (c.is_moe())
    return make_error(c.architecture + ": mixture-of-experts layers (router, routed experts) are not implemented in "
                      "the CUDA engine; use --device cpu");
  if (c.hidden_act != "silu" || c.embedding_scale != 0 || c.query_pre_attn_scalar > 0 || c.sliding_rope_theta ||
      c.norm_plus_one)
    return make_error(c.architecture + ": Gemma-style layers (GeGLU, scaled embeddings, (1 + w) norms, "
                      "query_pre_attn_scalar, per-layer-type RoPE) are not implemented in the CUDA engine; use --device cpu");
  if (c.rope_dim() != c.head_dim)
    return make_error(c.architecture + ": partial rotary embeddings (partial_rotary_factor " +
                      std::to_string(c.partial_rotary_factor) + ") are not implemented in the CUDA engine; use --device cpu");
  if (c.final_logit_softcapping > 0)
    return make_error(c.architecture + ": final_logit_softcapping is not implemented in the CUDA engine; use --device cpu");
  return {};
}

inline Error cuda_error(const std::string& what, cudaError_t e) {
  return make_error(what + ": " + cudaGetErrorString(e) + " (" + cudaGetErrorName(e) + ")");
}
inline Error cublas_error(const std::string& what, cublasStatus_t s) {
  auto api = cublas_api();  // loaded: a status comes from a call through it
  if (!api.ok()) return make_error(what + ": cuBLAS status " + std::to_string(int(s)));
  return make_error(what + ": cuBLAS " + (*api)->status_name(s) + " (" + (*api)->status_string(s) + ")");
}

#define FP4C_CUDA_TRY(what, expr)                                                       \
  do {                                                                                  \
    const cudaError_t fp4c_cuda_e_ = (expr);                                            \
    if (fp4c_cuda_e_ != cudaSuccess) return ::fp4c::runtime::cuda::cuda_error(what, fp4c_cuda_e_); \
  } while (0)
#define FP4C_CUBLAS_TRY(what, expr)                                                       \
  do {                                                                                    \
    const cublasStatus_t fp4c_cublas_s_ = (expr);                                         \
    if (fp4c_cublas_s_ != CUBLAS_STATUS_SUCCESS)                                          \
      return ::fp4c::runtime::cuda::cublas_error(what, fp4c_cublas_s_);                   \
  } while (0)
// After a kernel launch: a bad configuration shows here, a fault at the next synchronisation.
#define FP4C_LAUNCH_TRY(what) FP4C_CUDA_TRY(what, cudaGetLastError())

// Device memory of `bytes`, freed with the object.
class DeviceBuffer {
 public:
  DeviceBuffer() = default;
  DeviceBuffer(const DeviceBuffer&) = delete;
  DeviceBuffer& operator=(const DeviceBuffer&) = delete;
  DeviceBuffer(DeviceBuffer&& o) noexcept : ptr_(std::exchange(o.ptr_, nullptr)), bytes_(std::exchange(o.bytes_, 0)) {}
  DeviceBuffer& operator=(DeviceBuffer&& o) noexcept {
    if (this != &o) {
      reset();
      ptr_ = std::exchange(o.ptr_, nullptr);
      bytes_ = std::exchange(o.bytes_, 0);
    }
    return *this;
  }
  ~DeviceBuffer() { reset(); }
  void reset() {
    if (ptr_) cudaFree(ptr_);
    ptr_ = nullptr;
    bytes_ = 0;
  }
  // Grows to at least `bytes` (contents not kept); a zero-byte request still gives a valid pointer.
  Status reserve(size_t bytes, const std::string& what) {
    if (bytes <= bytes_ && ptr_) return {};
    reset();
    const size_t n = bytes == 0 ? 1 : bytes;
    const cudaError_t e = cudaMalloc(&ptr_, n);
    if (e != cudaSuccess) {
      ptr_ = nullptr;
      return cuda_error("cudaMalloc of " + std::to_string(n) + " bytes for " + what, e);
    }
    bytes_ = n;
    return {};
  }
  template <typename T>
  T* as() const { return static_cast<T*>(ptr_); }
  size_t bytes() const { return bytes_; }

 private:
  void* ptr_ = nullptr;
  size_t bytes_ = 0;
};

// A new buffer holding a copy of host data.
template <typename T>
Expected<DeviceBuffer> to_device(const T* data, size_t count, const std::string& what) {
  DeviceBuffer b;
  FP4C_TRY(b.reserve(count * sizeof(T), what));
  if (count) FP4C_CUDA_TRY("copy of " + what + " to the GPU", cudaMemcpy(b.as<void>(), data, count * sizeof(T), cudaMemcpyHostToDevice));
  return std::move(b);
}

struct DeviceDescription {
  std::string name;
  int sm = 0;            // compute capability as major * 10 + minor
  int multiprocessors = 0;
};

// Selects `device` for the calling thread and describes it; an error when there is none.
Expected<DeviceDescription> select_device(int device);

// "cuda:0 NVIDIA H100 80GB HBM3 (sm_90)".
std::string device_label(int device, const DeviceDescription& d);

// Native block-scaled FP4 GEMM (cuBLASLt) needs Blackwell (sm_100) or newer.
inline bool has_native_fp4(int sm) { return sm >= 100; }

}  // namespace fp4c::runtime::cuda
