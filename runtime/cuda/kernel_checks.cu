#include "runtime/cuda/common.cuh"
#include "runtime/cuda/kernel_checks.h"
#include "runtime/cuda/kernels.cuh"
#include "runtime/cuda/numerics.h"

namespace fp4c::runtime::cuda::check {
namespace {

template <typename T>
Expected<std::vector<T>> download(const DeviceBuffer& b, size_t count, const std::string& what) {
  std::vector<T> out(count);
  FP4C_CUDA_TRY(what, cudaDeviceSynchronize());
  if (count) FP4C_CUDA_TRY(what, cudaMemcpy(out.data(), b.as<void>(), count * sizeof(T), cudaMemcpyDeviceToHost));
  return out;
}

Status shape_ok(size_t n, int64_t rows, int64_t cols) {
  if (rows < 0 || cols % 16 != 0 || int64_t(n) != rows * cols)
    return make_error("kernel check: " + std::to_string(n) + " elements for [" + std::to_string(rows) + ", " +
                      std::to_string(cols) + "] (cols % 16 == 0)");
  return {};
}

}  // namespace

Expected<std::vector<float>> fake_quantize(const std::vector<float>& x, int64_t rows, int64_t cols, float G) {
  FP4C_TRY(shape_ok(x.size(), rows, cols));
  FP4C_TRY(select_device(0));
  FP4C_ASSIGN(DeviceBuffer in, to_device(x.data(), x.size(), "input"));
  DeviceBuffer out;
  FP4C_TRY(out.reserve(x.size() * 4, "output"));
  FP4C_CUDA_TRY("fake_quantize", kernels::fake_quantize(in.as<float>(), rows, cols, G, out.as<float>(), 0));
  return download<float>(out, x.size(), "fake_quantize");
}

Expected<Fp4Activations> quantize_fp4(const std::vector<float>& x, int64_t rows, int64_t cols, float G) {
  FP4C_TRY(shape_ok(x.size(), rows, cols));
  FP4C_TRY(select_device(0));
  FP4C_ASSIGN(DeviceBuffer in, to_device(x.data(), x.size(), "input"));
  const size_t sbytes = size_t(num::scale_swizzle_bytes(rows, cols / 16));
  DeviceBuffer codes, scales;
  FP4C_TRY(codes.reserve(x.size() / 2, "codes"));
  FP4C_TRY(scales.reserve(sbytes, "scales"));
  FP4C_CUDA_TRY("quantize_fp4", kernels::quantize_fp4(in.as<float>(), rows, cols, G, codes.as<uint8_t>(),
                                                      scales.as<uint8_t>(), 0));
  Fp4Activations out;
  FP4C_ASSIGN(out.codes, download<uint8_t>(codes, x.size() / 2, "quantize_fp4"));
  FP4C_ASSIGN(out.scales_swizzled, download<uint8_t>(scales, sbytes, "quantize_fp4"));
  return out;
}

namespace {
struct DeviceWeight {
  DeviceBuffer codes, scales;
  kernels::Nvfp4Weight view;
};
Expected<DeviceWeight> upload_weight(const PackedNvfp4& w, int64_t out, int64_t in) {
  if (in % 16 != 0 || int64_t(w.codes.size()) != out * in / 2 || int64_t(w.block_scales.size()) != out * in / 16)
    return make_error("kernel check: packed weight does not match [" + std::to_string(out) + ", " + std::to_string(in) + "]");
  DeviceWeight d;
  FP4C_ASSIGN(d.codes, to_device(w.codes.data(), w.codes.size(), "codes"));
  FP4C_ASSIGN(d.scales, to_device(w.block_scales.data(), w.block_scales.size(), "scales"));
  d.view = {d.codes.as<uint8_t>(), d.scales.as<uint8_t>(), out, in, w.global_scale, w.weight_scale_2.has_value(),
            w.weight_scale_2.value_or(1.0f)};
  return std::move(d);
}
}  // namespace

Expected<std::vector<float>> nvfp4_dequantize(const PackedNvfp4& w, int64_t out, int64_t in) {
  FP4C_TRY(select_device(0));
  FP4C_ASSIGN(DeviceWeight d, upload_weight(w, out, in));
  DeviceBuffer y;
  FP4C_TRY(y.reserve(size_t(out * in) * 4, "output"));
  FP4C_CUDA_TRY("nvfp4_dequantize", kernels::nvfp4_dequantize(d.view, y.as<float>(), 0));
  return download<float>(y, size_t(out * in), "nvfp4_dequantize");
}

Expected<std::vector<float>> nvfp4_gemm(const std::vector<float>& x, int64_t m, const PackedNvfp4& w, int64_t out,
                                        int64_t in, const std::vector<float>& bias, bool round_bf16) {
  if (int64_t(x.size()) != m * in) return make_error("kernel check: x does not match [m, in]");
  if (!bias.empty() && int64_t(bias.size()) != out) return make_error("kernel check: bias does not match out");
  FP4C_TRY(select_device(0));
  FP4C_ASSIGN(DeviceWeight d, upload_weight(w, out, in));
  FP4C_ASSIGN(DeviceBuffer dx, to_device(x.data(), x.size(), "input"));
  FP4C_ASSIGN(DeviceBuffer db, to_device(bias.data(), bias.size(), "bias"));
  DeviceBuffer y;
  FP4C_TRY(y.reserve(size_t(m * out) * 4, "output"));
  FP4C_CUDA_TRY("nvfp4_gemm", kernels::nvfp4_gemm(dx.as<float>(), m, d.view, bias.empty() ? nullptr : db.as<float>(),
                                                  round_bf16, y.as<float>(), 0));
  return download<float>(y, size_t(m * out), "nvfp4_gemm");
}

}  // namespace fp4c::runtime::cuda::check
