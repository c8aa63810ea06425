// The CUDA runtime's kernels, each a plain loop over its output with the per-element arithmetic of
// runtime/cuda/numerics.h. Launchers enqueue on `stream` and return the launch's error; every size is
// in elements. Correctness first: each output element is computed by one thread in a fixed order, so
// results do not depend on the launch configuration or the run.
#pragma once

#include <cuda_runtime.h>

#include <cstdint>

namespace fp4c::runtime::cuda::kernels {

// out[r] = w * (x[r] * float(1 / sqrt(mean(x[r]^2) + eps))), the mean in double (runtime/elementwise.h).
cudaError_t rms_norm(const float* x, const float* w, int64_t rows, int64_t cols, double eps, float* out, cudaStream_t s);
// y += x.
cudaError_t add_inplace(float* y, const float* x, int64_t n, cudaStream_t s);
// g = g / (1 + exp(-g)) * u.
cudaError_t silu_mul(float* g, const float* u, int64_t n, cudaStream_t s);
// y[r, c] += b[c].
cudaError_t add_bias(float* y, const float* b, int64_t rows, int64_t cols, cudaStream_t s);
// BF16 bits of x (nearest even).
cudaError_t to_bf16(const float* x, uint16_t* out, int64_t n, cudaStream_t s);
// x rounded to BF16 and back, in place.
cudaError_t round_bf16(float* x, int64_t n, cudaStream_t s);
// W4A4 activation fake quantization (runtime/activation_quant.h), cols % 16 == 0; out may equal x.
cudaError_t fake_quantize(const float* x, int64_t rows, int64_t cols, float global_scale, float* out, cudaStream_t s);
// The same quantization as FP4 codes [rows, cols/2] and block scales in cuBLASLt's swizzled layout
// (num::scale_swizzle_offset; `scales` must hold num::scale_swizzle_bytes(rows, cols/16) bytes, padding
// zeroed here).
cudaError_t quantize_fp4(const float* x, int64_t rows, int64_t cols, float global_scale, uint8_t* codes,
                         uint8_t* scales, cudaStream_t s);
// Scales [rows, cols] row-major -> the swizzled layout (padding zeroed).
cudaError_t swizzle_scales(const uint8_t* scales, int64_t rows, int64_t cols, uint8_t* out, cudaStream_t s);

// y[m, n] = sum_k x[m, k] * w(n, k) (+ bias[n]), FP32 accumulation, with w(n, k) the NVFP4
// weight decoded from codes [N, K/2] and scales [N, K/16] (num::nvfp4_weight). round_bf16: x and the
// decoded weight are rounded to BF16 first (Precision::BF16, as a BF16 GEMM on dequantized weights).
// Up to 8 rows run a GEMV-shaped kernel (a warp per output, lanes over blocks of 16 of k, then a warp
// reduction), more rows a tiled one (FP32 accumulation in k order).
struct Nvfp4Weight {
  const uint8_t* codes;
  const uint8_t* scales;
  int64_t n, k;
  float global_scale;
  bool use_ws2;
  float ws2;
};
cudaError_t nvfp4_gemm(const float* x, int64_t m, const Nvfp4Weight& w, const float* bias, bool round_bf16, float* y,
                       cudaStream_t s);
// Dequantized weight [N, K] (float) of the same expression.
cudaError_t nvfp4_dequantize(const Nvfp4Weight& w, float* out, cudaStream_t s);

// Rotary embedding in place on rows of t [rows, heads * head_dim] (rotate-half layout): row r at
// position pos[r], with tables cos/sin [max_pos, head_dim / 2].
cudaError_t rope(float* t, const int32_t* pos, const float* cos_t, const float* sin_t, int64_t rows, int64_t heads,
                 int64_t head_dim, cudaStream_t s);

// Causal GQA attention, one thread block per (query row, head): query row t attends keys
// key_first[t] .. key_first[t] + n_keys[t] - 1 (rows of k and v, [*, kv_heads * head_dim]);
// out[t, h * head_dim + i] = sum_j softmax(q.k_j / sqrt(head_dim))_j v_j[i]. round_bf16: q, k, v and
// the probabilities are rounded to BF16 before their products (runtime/attention.h). max_keys bounds
// n_keys (shared memory).
struct AttentionArgs {
  const float* q;
  const float* k;
  const float* v;
  const int64_t* key_first;
  const int32_t* n_keys;
  int64_t rows, heads, kv_heads, head_dim, max_keys;
  bool round_bf16;
  float* out;
};
cudaError_t attention(const AttentionArgs& a, cudaStream_t s);

// Serving: rows [B, D] written to row (b * capacity + pos[b]) of cache [B * capacity, D].
cudaError_t scatter_rows(const float* src, int64_t rows, int64_t d, const int64_t* dst_row, float* cache, cudaStream_t s);
// Serving: index of the largest value of each row of logits [rows, vocab] (first on ties).
cudaError_t argmax_rows(const float* logits, int64_t rows, int64_t vocab, int32_t* out, cudaStream_t s);
// Serving: rows of an embedding table [vocab, hidden] gathered by id.
cudaError_t gather_rows(const float* table, const int32_t* ids, int64_t rows, int64_t hidden, float* out, cudaStream_t s);

}  // namespace fp4c::runtime::cuda::kernels
