#include <cmath>

#include "runtime/cuda/linear.cuh"
#include "runtime/cuda/numerics.h"

namespace fp4c::runtime::cuda {

namespace {
std::string shape_str(int64_t rows, int64_t cols) {
  return "[" + std::to_string(rows) + ", " + std::to_string(cols) + "]";
}
constexpr size_t kLtWorkspace = size_t(32) << 20;
}  // namespace

Status check_linear_params(const LinearParams& p, int64_t out, int64_t in, const std::string& what) {
  if (p.out != out || p.in != in)
    return make_error(what + ": shape " + shape_str(p.out, p.in) + ", expected " + shape_str(out, in));
  if (!p.bias.empty() && int64_t(p.bias.size()) != out)
    return make_error(what + ": " + std::to_string(p.bias.size()) + " biases for " + std::to_string(out) + " outputs");
  if (p.packed) {
    if (in % num::kBlock != 0)
      return make_error(what + ": NVFP4 weights need in_features % 16 == 0, got " + std::to_string(in));
    if (int64_t(p.packed->codes.size()) != out * in / 2)
      return make_error(what + ": " + std::to_string(p.packed->codes.size()) + " packed bytes for shape " + shape_str(out, in));
    if (int64_t(p.packed->block_scales.size()) != out * in / num::kBlock)
      return make_error(what + ": " + std::to_string(p.packed->block_scales.size()) + " block scales for shape " +
                        shape_str(out, in));
    const float g = p.packed->weight_scale_2 ? *p.packed->weight_scale_2 : p.packed->global_scale;
    if (!(g > 0.0f) || !std::isfinite(g))
      return make_error(what + ": weight global scale must be finite and > 0, got " + std::to_string(g));
  } else if (int64_t(p.weight.size()) != out * in) {
    return make_error(what + ": " + std::to_string(p.weight.size()) + " weights for shape " + shape_str(out, in));
  }
  if (p.input_mxfp4)
    return make_error(what + ": MXFP4 W4A4 (activations quantized per block of 32) is not implemented on CUDA; "
                      "evaluate it with --device cpu");
  if (p.input_global_scale) {
    if (in % num::kBlock != 0)
      return make_error(what + ": W4A4 input quantization needs in_features % 16 == 0, got " + std::to_string(in));
    if (!(*p.input_global_scale > 0.0f) || !std::isfinite(*p.input_global_scale))
      return make_error(what + ": input global scale must be finite and > 0, got " + std::to_string(*p.input_global_scale));
  }
  return {};
}

LinearRunner::~LinearRunner() {
  if (f32_) api_->destroy(f32_);
  if (bf16_) api_->destroy(bf16_);
  if (lt_) api_->lt_destroy(lt_);
}

Status LinearRunner::init(int sm, cudaStream_t stream) {
  stream_ = stream;
  FP4C_ASSIGN(api_, cublas_api());
  FP4C_CUBLAS_TRY("cublasCreate", api_->create(&f32_));
  FP4C_CUBLAS_TRY("cublasSetStream", api_->set_stream(f32_, stream));
  // FP32 products in FP32: no TF32 or other reduced-precision shortcut.
  FP4C_CUBLAS_TRY("cublasSetMathMode", api_->set_math_mode(f32_, CUBLAS_PEDANTIC_MATH));
  FP4C_CUBLAS_TRY("cublasCreate", api_->create(&bf16_));
  FP4C_CUBLAS_TRY("cublasSetStream", api_->set_stream(bf16_, stream));
  FP4C_CUBLAS_TRY("cublasLtCreate", api_->lt_create(&lt_));
  native_ = has_native_fp4(sm);
  return {};
}

Expected<DeviceLinear> LinearRunner::upload(const LinearParams& p, bool bf16, const std::string& what) {
  DeviceLinear d;
  d.out = p.out;
  d.in = p.in;
  d.input_global_scale = p.input_global_scale;
  if (p.packed) {
    d.packed = true;
    FP4C_ASSIGN(d.codes, to_device(p.packed->codes.data(), p.packed->codes.size(), what + " packed weight"));
    FP4C_ASSIGN(d.scales, to_device(p.packed->block_scales.data(), p.packed->block_scales.size(), what + " block scales"));
    d.global_scale = p.packed->global_scale;
    d.use_ws2 = p.packed->weight_scale_2.has_value();
    d.ws2 = p.packed->weight_scale_2.value_or(1.0f);
    if (native_ && p.input_global_scale) {
      const int64_t cols = p.in / num::kBlock;
      FP4C_TRY(d.scales_swizzled.reserve(size_t(num::scale_swizzle_bytes(p.out, cols)), what + " swizzled scales"));
      FP4C_CUDA_TRY(what + ": scale swizzle",
                    kernels::swizzle_scales(d.scales.as<uint8_t>(), p.out, cols, d.scales_swizzled.as<uint8_t>(), stream_));
    }
  } else {
    FP4C_ASSIGN(DeviceBuffer f32, to_device(p.weight.data(), p.weight.size(), what + " weight"));
    if (bf16) {
      d.bf16 = true;
      FP4C_TRY(d.weight.reserve(p.weight.size() * sizeof(uint16_t), what + " BF16 weight"));
      FP4C_CUDA_TRY(what + ": BF16 conversion",
                    kernels::to_bf16(f32.as<float>(), d.weight.as<uint16_t>(), int64_t(p.weight.size()), stream_));
      FP4C_CUDA_TRY(what + ": BF16 conversion", cudaStreamSynchronize(stream_));
    } else {
      d.weight = std::move(f32);
    }
  }
  if (!p.bias.empty()) {
    d.has_bias = true;
    FP4C_ASSIGN(d.bias, to_device(p.bias.data(), p.bias.size(), what + " bias"));
  }
  return std::move(d);
}

Expected<bool> LinearRunner::fp4_gemm(const uint8_t* x_codes, const uint8_t* x_scales, int64_t m, const uint8_t* w_codes,
                                      const uint8_t* w_scales, int64_t n, int64_t k, float alpha, float* y,
                                      const std::string& what) {
  // Column-major view: D [n, m] = W [n, k] (A, stored [k, n], transposed) x X^T (B, stored [k, m]); D is
  // y [m, n] row-major. FP4 operands need this "TN" form.
  cublasLtMatmulDesc_t op = nullptr;
  cublasLtMatrixLayout_t a = nullptr, b = nullptr, c = nullptr;
  cublasLtMatmulPreference_t pref = nullptr;
  struct Cleanup {
    const CublasApi* api_;
    cublasLtMatmulDesc_t& op;
    cublasLtMatrixLayout_t &a, &b, &c;
    cublasLtMatmulPreference_t& pref;
    ~Cleanup() {
      if (pref) api_->lt_pref_destroy(pref);
      if (c) api_->lt_layout_destroy(c);
      if (b) api_->lt_layout_destroy(b);
      if (a) api_->lt_layout_destroy(a);
      if (op) api_->lt_desc_destroy(op);
    }
  } cleanup{api_, op, a, b, c, pref};
  const std::string w = what + ": cuBLASLt FP4 GEMM";
  FP4C_CUBLAS_TRY(w, api_->lt_desc_create(&op, CUBLAS_COMPUTE_32F, CUDA_R_32F));
  const cublasOperation_t ta = CUBLAS_OP_T, tb = CUBLAS_OP_N;
  FP4C_CUBLAS_TRY(w, api_->lt_desc_set(op, CUBLASLT_MATMUL_DESC_TRANSA, &ta, sizeof ta));
  FP4C_CUBLAS_TRY(w, api_->lt_desc_set(op, CUBLASLT_MATMUL_DESC_TRANSB, &tb, sizeof tb));
  const int32_t mode = CUBLASLT_MATMUL_MATRIX_SCALE_VEC16_UE4M3;
  FP4C_CUBLAS_TRY(w, api_->lt_desc_set(op, CUBLASLT_MATMUL_DESC_A_SCALE_MODE, &mode, sizeof mode));
  FP4C_CUBLAS_TRY(w, api_->lt_desc_set(op, CUBLASLT_MATMUL_DESC_B_SCALE_MODE, &mode, sizeof mode));
  const void* sa = w_scales;
  const void* sb = x_scales;
  FP4C_CUBLAS_TRY(w, api_->lt_desc_set(op, CUBLASLT_MATMUL_DESC_A_SCALE_POINTER, &sa, sizeof sa));
  FP4C_CUBLAS_TRY(w, api_->lt_desc_set(op, CUBLASLT_MATMUL_DESC_B_SCALE_POINTER, &sb, sizeof sb));
  FP4C_CUBLAS_TRY(w, api_->lt_layout_create(&a, CUDA_R_4F_E2M1, uint64_t(k), uint64_t(n), k));
  FP4C_CUBLAS_TRY(w, api_->lt_layout_create(&b, CUDA_R_4F_E2M1, uint64_t(k), uint64_t(m), k));
  FP4C_CUBLAS_TRY(w, api_->lt_layout_create(&c, CUDA_R_32F, uint64_t(n), uint64_t(m), n));
  FP4C_TRY(lt_workspace_.reserve(kLtWorkspace, "cuBLASLt workspace"));
  FP4C_CUBLAS_TRY(w, api_->lt_pref_create(&pref));
  const size_t ws_bytes = kLtWorkspace;
  FP4C_CUBLAS_TRY(w, api_->lt_pref_set(pref, CUBLASLT_MATMUL_PREF_MAX_WORKSPACE_BYTES, &ws_bytes,
                                                          sizeof ws_bytes));
  cublasLtMatmulHeuristicResult_t result{};
  int found = 0;
  const cublasStatus_t hs = api_->lt_heuristic(lt_, op, a, b, c, c, pref, 1, &result, &found);
  if (hs != CUBLAS_STATUS_SUCCESS || found == 0) return false;
  const float beta = 0.0f;
  const cublasStatus_t st = api_->lt_matmul(lt_, op, &alpha, w_codes, a, x_codes, b, &beta, y, c, y, c, &result.algo,
                                           lt_workspace_.as<void>(), kLtWorkspace, stream_);
  if (st == CUBLAS_STATUS_NOT_SUPPORTED) return false;
  FP4C_CUBLAS_TRY(w, st);
  return true;
}

Status LinearRunner::run(const DeviceLinear& w, const float* x, int64_t rows, bool round_bf16, float* y,
                         const std::string& what) {
  if (rows <= 0) return {};
  const int64_t n = w.out, k = w.in;
  const float* bias = w.has_bias ? w.bias.as<float>() : nullptr;
  if (w.packed && w.input_global_scale && native_) {
    const float gx = *w.input_global_scale;
    FP4C_TRY(x_codes_.reserve(size_t(rows * k / 2), "quantized activations"));
    FP4C_TRY(x_scales_.reserve(size_t(num::scale_swizzle_bytes(rows, k / num::kBlock)), "activation scales"));
    FP4C_CUDA_TRY(what + ": activation quantization",
                  kernels::quantize_fp4(x, rows, k, gx, x_codes_.as<uint8_t>(), x_scales_.as<uint8_t>(), stream_));
    // sum_k e2m1_x s_x e2m1_w s_w, times 1 / (G Gx) (or weight_scale_2 / Gx).
    const float alpha = w.use_ws2 ? float(double(w.ws2) / double(gx)) : float(1.0 / (double(w.global_scale) * double(gx)));
    FP4C_ASSIGN(const bool ran, fp4_gemm(x_codes_.as<uint8_t>(), x_scales_.as<uint8_t>(), rows, w.codes.as<uint8_t>(),
                                         w.scales_swizzled.as<uint8_t>(), n, k, alpha, y, what));
    if (ran) {
      if (bias) FP4C_CUDA_TRY(what + ": bias", kernels::add_bias(y, bias, rows, n, stream_));
      return {};
    }
    fell_back_ = true;  // no cuBLASLt kernel for this shape: the emulation below gives the same numbers
  }
  const float* in = x;
  if (w.input_global_scale) {
    FP4C_TRY(quantized_.reserve(size_t(rows * k) * sizeof(float), "quantized activations"));
    FP4C_CUDA_TRY(what + ": activation quantization",
                  kernels::fake_quantize(x, rows, k, *w.input_global_scale, quantized_.as<float>(), stream_));
    in = quantized_.as<float>();
  }
  if (w.packed) {
    FP4C_CUDA_TRY(what + ": NVFP4 GEMM", kernels::nvfp4_gemm(in, rows, w.nvfp4(), bias, round_bf16, y, stream_));
    return {};
  }
  const float one = 1.0f, zero = 0.0f;
  if (round_bf16) {
    if (!w.bf16) return make_error(what + ": BF16 product with an FP32 weight on the GPU");
    FP4C_TRY(x_bf16_.reserve(size_t(rows * k) * sizeof(uint16_t), "BF16 activations"));
    FP4C_CUDA_TRY(what + ": BF16 conversion", kernels::to_bf16(in, x_bf16_.as<uint16_t>(), rows * k, stream_));
    FP4C_CUBLAS_TRY(what + ": cublasGemmEx BF16",
                    api_->gemm_ex(bf16_, CUBLAS_OP_T, CUBLAS_OP_N, int(n), int(rows), int(k), &one, w.weight.as<void>(),
                                 CUDA_R_16BF, int(k), x_bf16_.as<void>(), CUDA_R_16BF, int(k), &zero, y, CUDA_R_32F,
                                 int(n), CUBLAS_COMPUTE_32F, CUBLAS_GEMM_DEFAULT));
  } else {
    if (w.bf16) return make_error(what + ": FP32 product with a BF16 weight on the GPU");
    FP4C_CUBLAS_TRY(what + ": cublasSgemm", api_->sgemm(f32_, CUBLAS_OP_T, CUBLAS_OP_N, int(n), int(rows), int(k), &one,
                                                        w.weight.as<float>(), int(k), in, int(k), &zero, y, int(n)));
  }
  if (bias) FP4C_CUDA_TRY(what + ": bias", kernels::add_bias(y, bias, rows, n, stream_));
  return {};
}

}  // namespace fp4c::runtime::cuda
