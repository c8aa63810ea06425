// Single kernels of the CUDA runtime run on host data, for the GPU tests to compare them with the CPU
// bit for bit (test/runtime/cuda_kernels_test.cpp): the engine's results depend on every one. Each
// runs on device 0 and returns the host copy of its output; errors when there is no GPU (and in a
// build without CUDA, from runtime/cuda_absent.cpp).
#pragma once

#include <cstdint>
#include <vector>

#include "base/expected.h"
#include "runtime/weights.h"

namespace fp4c::runtime::cuda::check {

// kernels::fake_quantize (W4A4 activation quantization).
Expected<std::vector<float>> fake_quantize(const std::vector<float>& x, int64_t rows, int64_t cols, float global_scale);

// kernels::quantize_fp4: codes [rows, cols/2] and the block scales in cuBLASLt's swizzled layout.
struct Fp4Activations {
  std::vector<uint8_t> codes, scales_swizzled;
};
Expected<Fp4Activations> quantize_fp4(const std::vector<float>& x, int64_t rows, int64_t cols, float global_scale);

// kernels::nvfp4_dequantize: the weight [out, in] as floats.
Expected<std::vector<float>> nvfp4_dequantize(const PackedNvfp4& w, int64_t out, int64_t in);

// kernels::nvfp4_gemm: y [m, out] = x [m, in] . W^T (+ bias).
Expected<std::vector<float>> nvfp4_gemm(const std::vector<float>& x, int64_t m, const PackedNvfp4& w, int64_t out,
                                        int64_t in, const std::vector<float>& bias, bool round_bf16);

}  // namespace fp4c::runtime::cuda::check
