// One Linear on the GPU, y[rows, out] = x[rows, in] W^T + b, for every kind of weight the runtime
// meets: dense FP32 (cuBLAS SGEMM, pedantic math: no TF32), dense BF16 (cublasGemmEx, BF16 inputs,
// FP32 accumulation), NVFP4 W4A16 (the fused dequantize-and-multiply kernel on the packed bytes) and
// NVFP4 W4A4 (activations quantized per block of 16 with the input global scale, then cuBLASLt's
// block-scaled FP4 GEMM on sm_100+, else the same numbers emulated: the quantized activations times
// the dequantized weights in FP32). Shared by the engine and the perf device.
#pragma once

#include <cstdint>
#include <string>

#include "runtime/cuda/common.cuh"
#include "runtime/cuda/kernels.cuh"
#include "runtime/weights.h"

namespace fp4c::runtime::cuda {

// A Linear's weight as held on the GPU.
struct DeviceLinear {
  int64_t out = 0, in = 0;
  DeviceBuffer weight;          // dense: FP32 [out, in], or BF16 bits when bf16 is set
  bool bf16 = false;
  bool packed = false;          // NVFP4: codes and scales below, weight unused
  DeviceBuffer codes;           // [out, in/2]
  DeviceBuffer scales;          // [out, in/16] row-major
  DeviceBuffer scales_swizzled; // the same in cuBLASLt's layout (native W4A4 only)
  float global_scale = 1;
  bool use_ws2 = false;
  float ws2 = 1;
  DeviceBuffer bias;            // [out] or empty
  bool has_bias = false;
  std::optional<float> input_global_scale;
  kernels::Nvfp4Weight nvfp4() const {
    return {codes.as<uint8_t>(), scales.as<uint8_t>(), out, in, global_scale, use_ws2, ws2};
  }
  uint64_t weight_bytes() const { return packed ? codes.bytes() + scales.bytes() : weight.bytes(); }
};

// Checks a LinearParams (shapes, packed sizes, scales) naming `what`.
Status check_linear_params(const LinearParams& p, int64_t out, int64_t in, const std::string& what);

// Per-device handles and scratch for Linears. Not thread-safe: one user at a time.
class LinearRunner {
 public:
  LinearRunner() = default;
  LinearRunner(const LinearRunner&) = delete;
  LinearRunner& operator=(const LinearRunner&) = delete;
  ~LinearRunner();
  Status init(int sm, cudaStream_t stream);
  // Uploads p (BF16 weights when bf16 and the Linear is dense; the swizzled scales for a native W4A4
  // Linear).
  Expected<DeviceLinear> upload(const LinearParams& p, bool bf16, const std::string& what);
  // y = linear(x); x is not modified. round_bf16: Precision::BF16 (dense weights must then be BF16).
  Status run(const DeviceLinear& w, const float* x, int64_t rows, bool round_bf16, float* y, const std::string& what);
  // Whether W4A4 products run natively here, and whether one had to fall back to the emulation
  // (cuBLASLt found no kernel for its shape).
  bool native() const { return native_; }
  bool fell_back() const { return fell_back_; }
  cublasHandle_t default_handle() const { return bf16_; }
  const CublasApi& api() const { return *api_; }
  // The native block-scaled FP4 product on already quantized operands (codes, swizzled scales):
  // y[m, n] = alpha * sum_k ... ; false when cuBLASLt has no kernel for it.
  Expected<bool> fp4_gemm(const uint8_t* x_codes, const uint8_t* x_scales, int64_t m, const uint8_t* w_codes,
                          const uint8_t* w_scales, int64_t n, int64_t k, float alpha, float* y, const std::string& what);

 private:
  const CublasApi* api_ = nullptr;
  cudaStream_t stream_ = nullptr;
  cublasHandle_t f32_ = nullptr, bf16_ = nullptr;
  cublasLtHandle_t lt_ = nullptr;
  bool native_ = false, fell_back_ = false;
  DeviceBuffer quantized_, x_bf16_, x_codes_, x_scales_, lt_workspace_;
};

}  // namespace fp4c::runtime::cuda
