#include <cuda_bf16.h>

#include <cfloat>

#include "runtime/cuda/kernels.cuh"
#include "runtime/cuda/numerics.h"

namespace fp4c::runtime::cuda::kernels {
namespace {

constexpr int kThreads = 256;

unsigned grid_for(int64_t n, int threads = kThreads) { return unsigned((n + threads - 1) / threads); }

__global__ void rms_norm_kernel(const float* x, const float* w, int64_t cols, double eps, float* out) {
  __shared__ double partial[kThreads];
  const int64_t r = blockIdx.x;
  const float* row = x + r * cols;
  double ss = 0;
  for (int64_t i = threadIdx.x; i < cols; i += blockDim.x) ss += double(row[i]) * double(row[i]);
  partial[threadIdx.x] = ss;
  __syncthreads();
  for (int stride = blockDim.x / 2; stride > 0; stride /= 2) {
    if (int(threadIdx.x) < stride) partial[threadIdx.x] += partial[threadIdx.x + stride];
    __syncthreads();
  }
  const float scale = float(1.0 / sqrt(partial[0] / double(cols) + eps));
  for (int64_t i = threadIdx.x; i < cols; i += blockDim.x) out[r * cols + i] = __fmul_rn(w[i], __fmul_rn(row[i], scale));
}

__global__ void add_kernel(float* y, const float* x, int64_t n) {
  const int64_t i = int64_t(blockIdx.x) * blockDim.x + threadIdx.x;
  if (i < n) y[i] += x[i];
}

__global__ void silu_mul_kernel(float* g, const float* u, int64_t n) {
  const int64_t i = int64_t(blockIdx.x) * blockDim.x + threadIdx.x;
  if (i < n) g[i] = __fmul_rn(g[i] / (1.0f + expf(-g[i])), u[i]);
}

__global__ void add_bias_kernel(float* y, const float* b, int64_t rows, int64_t cols) {
  const int64_t i = int64_t(blockIdx.x) * blockDim.x + threadIdx.x;
  if (i < rows * cols) y[i] += b[i % cols];
}

__global__ void to_bf16_kernel(const float* x, uint16_t* out, int64_t n) {
  const int64_t i = int64_t(blockIdx.x) * blockDim.x + threadIdx.x;
  if (i < n) out[i] = num::bf16_bits(x[i]);
}

__global__ void round_bf16_kernel(float* x, int64_t n) {
  const int64_t i = int64_t(blockIdx.x) * blockDim.x + threadIdx.x;
  if (i < n) x[i] = num::round_bf16(x[i]);
}

// One thread per block of 16.
__global__ void fake_quantize_kernel(const float* x, int64_t blocks, float G, float* out) {
  const int64_t b = int64_t(blockIdx.x) * blockDim.x + threadIdx.x;
  if (b >= blocks) return;
  float v[num::kBlock], q[num::kBlock];
  for (int i = 0; i < num::kBlock; ++i) v[i] = x[b * num::kBlock + i];
  num::quantize_activation_block(v, G, q, nullptr, nullptr);
  for (int i = 0; i < num::kBlock; ++i) out[b * num::kBlock + i] = q[i];
}

__global__ void quantize_fp4_kernel(const float* x, int64_t rows, int64_t cols, float G, uint8_t* codes, uint8_t* scales) {
  const int64_t per_row = cols / num::kBlock;
  const int64_t b = int64_t(blockIdx.x) * blockDim.x + threadIdx.x;
  if (b >= rows * per_row) return;
  const int64_t r = b / per_row, c = b % per_row;
  float v[num::kBlock];
  uint8_t packed[num::kBlock / 2];
  uint8_t scale = 0;
  for (int i = 0; i < num::kBlock; ++i) v[i] = x[b * num::kBlock + i];
  num::quantize_activation_block(v, G, nullptr, packed, &scale);
  for (int i = 0; i < num::kBlock / 2; ++i) codes[b * (num::kBlock / 2) + i] = packed[i];
  scales[num::scale_swizzle_offset(r, c, per_row)] = scale;
}

__global__ void swizzle_scales_kernel(const uint8_t* scales, int64_t rows, int64_t cols, uint8_t* out) {
  const int64_t i = int64_t(blockIdx.x) * blockDim.x + threadIdx.x;
  if (i < rows * cols) out[num::scale_swizzle_offset(i / cols, i % cols, cols)] = scales[i];
}

// Tiles of 32 rows x 64 columns of y per 256 threads (16 x 16), 32 of k at a time; thread (ty, tx)
// owns rows 2 ty, 2 ty + 1 and columns tx + 16 j.
constexpr int kBM = 32, kBN = 64, kBK = 32;

__global__ void __launch_bounds__(256) nvfp4_gemm_kernel(const float* x, int64_t M, Nvfp4Weight w, const float* bias,
                                                         bool rb, float* y) {
  __shared__ float xs[kBM][kBK + 1];
  __shared__ float ws[kBN][kBK + 1];
  const int tid = threadIdx.x, tx = tid % 16, ty = tid / 16;
  const int64_t m0 = int64_t(blockIdx.y) * kBM, n0 = int64_t(blockIdx.x) * kBN;
  const int64_t K = w.k, N = w.n;
  float acc[2][4] = {};
  for (int64_t k0 = 0; k0 < K; k0 += kBK) {
    for (int i = 0; i < 4; ++i) {
      const int idx = tid + 256 * i, r = idx / kBK, c = idx % kBK;
      const int64_t gm = m0 + r, gk = k0 + c;
      float v = (gm < M && gk < K) ? x[gm * K + gk] : 0.0f;
      xs[r][c] = rb ? num::round_bf16(v) : v;
    }
    {
      const int nn = tid / 4, kk = (tid % 4) * 8;
      const int64_t gn = n0 + nn, gk = k0 + kk;  // K % 16 == 0: the 8 elements lie in one block of 16
      if (gn < N && gk < K) {
        const uint8_t* codes = w.codes + gn * (K / 2) + gk / 2;
        const uint8_t scale = w.scales[gn * (K / num::kBlock) + gk / num::kBlock];
        for (int i = 0; i < 4; ++i) {
          const uint8_t byte = codes[i];
          float lo = num::nvfp4_weight(uint8_t(byte & 0xF), scale, w.global_scale, w.use_ws2, w.ws2);
          float hi = num::nvfp4_weight(uint8_t(byte >> 4), scale, w.global_scale, w.use_ws2, w.ws2);
          ws[nn][kk + 2 * i] = rb ? num::round_bf16(lo) : lo;
          ws[nn][kk + 2 * i + 1] = rb ? num::round_bf16(hi) : hi;
        }
      } else {
        for (int i = 0; i < 8; ++i) ws[nn][kk + i] = 0.0f;
      }
    }
    __syncthreads();
    for (int kk = 0; kk < kBK; ++kk)
      for (int i = 0; i < 2; ++i)
        for (int j = 0; j < 4; ++j) acc[i][j] = fmaf(xs[2 * ty + i][kk], ws[tx + 16 * j][kk], acc[i][j]);
    __syncthreads();
  }
  for (int i = 0; i < 2; ++i)
    for (int j = 0; j < 4; ++j) {
      const int64_t gm = m0 + 2 * ty + i, gn = n0 + tx + 16 * j;
      if (gm < M && gn < N) y[gm * N + gn] = acc[i][j] + (bias ? bias[gn] : 0.0f);
    }
}

// Few rows (decode): one warp per output column n, each lane a block of 16 weights at a time (8 code
// bytes, one scale), every row of x against them, then a fixed-order warp reduction. Each weight byte
// is read once for all rows.
constexpr int kGemvRows = 8, kGemvWarps = 4;

__global__ void __launch_bounds__(32 * kGemvWarps) nvfp4_gemv_kernel(const float* x, int64_t M, Nvfp4Weight w,
                                                                      const float* bias, bool rb, float* y) {
  const int lane = threadIdx.x % 32;
  const int64_t n = int64_t(blockIdx.x) * kGemvWarps + threadIdx.x / 32;
  if (n >= w.n) return;
  const int64_t K = w.k, blocks = K / num::kBlock;
  float acc[kGemvRows] = {};
  for (int64_t b = lane; b < blocks; b += 32) {
    const uint8_t* codes = w.codes + n * (K / 2) + b * (num::kBlock / 2);
    const uint8_t scale = w.scales[n * blocks + b];
    float wv[num::kBlock];
    for (int i = 0; i < num::kBlock / 2; ++i) {
      const uint8_t byte = codes[i];
      const float lo = num::nvfp4_weight(uint8_t(byte & 0xF), scale, w.global_scale, w.use_ws2, w.ws2);
      const float hi = num::nvfp4_weight(uint8_t(byte >> 4), scale, w.global_scale, w.use_ws2, w.ws2);
      wv[2 * i] = rb ? num::round_bf16(lo) : lo;
      wv[2 * i + 1] = rb ? num::round_bf16(hi) : hi;
    }
    for (int m = 0; m < kGemvRows; ++m) {
      if (m >= M) break;
      const float* xr = x + m * K + b * num::kBlock;
      float a = acc[m];
      for (int i = 0; i < num::kBlock; ++i) a = fmaf(rb ? num::round_bf16(xr[i]) : xr[i], wv[i], a);
      acc[m] = a;
    }
  }
  for (int m = 0; m < kGemvRows; ++m) {
    if (m >= M) break;
    float v = acc[m];
    for (int off = 16; off > 0; off /= 2) v += __shfl_xor_sync(0xffffffffu, v, off);
    if (lane == 0) y[m * w.n + n] = v + (bias ? bias[n] : 0.0f);
  }
}

__global__ void nvfp4_dequantize_kernel(Nvfp4Weight w, float* out) {
  const int64_t i = int64_t(blockIdx.x) * blockDim.x + threadIdx.x;
  if (i >= w.n * w.k) return;
  const int64_t n = i / w.k, k = i % w.k;
  const uint8_t byte = w.codes[n * (w.k / 2) + k / 2];
  const uint8_t code = (k % 2) ? uint8_t(byte >> 4) : uint8_t(byte & 0xF);
  out[i] = num::nvfp4_weight(code, w.scales[n * (w.k / num::kBlock) + k / num::kBlock], w.global_scale, w.use_ws2, w.ws2);
}

__global__ void rope_kernel(float* t, const int32_t* pos, const float* cos_t, const float* sin_t, int64_t rows,
                            int64_t heads, int64_t hd) {
  const int64_t half = hd / 2;
  const int64_t i = int64_t(blockIdx.x) * blockDim.x + threadIdx.x;
  if (i >= rows * heads * half) return;
  const int64_t r = i / (heads * half), h = (i / half) % heads, f = i % half;
  float* row = t + r * heads * hd + h * hd;
  const float c = cos_t[int64_t(pos[r]) * half + f], s = sin_t[int64_t(pos[r]) * half + f];
  const float x1 = row[f], x2 = row[f + half];
  // No fused multiply-add: the CPU's x1 * c - x2 * s, rounded the same way.
  row[f] = __fsub_rn(__fmul_rn(x1, c), __fmul_rn(x2, s));
  row[f + half] = __fadd_rn(__fmul_rn(x2, c), __fmul_rn(x1, s));
}

constexpr int kAttnThreads = 128;

__device__ float block_reduce(float v, float* red, bool is_max) {
  red[threadIdx.x] = v;
  __syncthreads();
  for (int stride = kAttnThreads / 2; stride > 0; stride /= 2) {
    if (int(threadIdx.x) < stride)
      red[threadIdx.x] = is_max ? fmaxf(red[threadIdx.x], red[threadIdx.x + stride]) : red[threadIdx.x] + red[threadIdx.x + stride];
    __syncthreads();
  }
  const float out = red[0];
  __syncthreads();
  return out;
}

__global__ void __launch_bounds__(kAttnThreads) attention_kernel(AttentionArgs a) {
  extern __shared__ float smem[];
  float* qs = smem;                       // [head_dim]
  float* red = qs + a.head_dim;           // [kAttnThreads]
  float* sc = red + kAttnThreads;         // [max_keys]
  const int64_t t = blockIdx.x, h = blockIdx.y;
  const int64_t hd = a.head_dim, kh = h / (a.heads / a.kv_heads), kv_stride = a.kv_heads * hd;
  const int64_t nk = a.n_keys[t], kf = a.key_first[t];
  const float* qrow = a.q + (t * a.heads + h) * hd;
  for (int64_t i = threadIdx.x; i < hd; i += blockDim.x) qs[i] = a.round_bf16 ? num::round_bf16(qrow[i]) : qrow[i];
  __syncthreads();
  float local_max = -FLT_MAX;
  for (int64_t j = threadIdx.x; j < nk; j += blockDim.x) {
    const float* krow = a.k + (kf + j) * kv_stride + kh * hd;
    float dot = 0;
    for (int64_t i = 0; i < hd; ++i) dot = fmaf(qs[i], a.round_bf16 ? num::round_bf16(krow[i]) : krow[i], dot);
    sc[j] = dot;
    local_max = fmaxf(local_max, dot);
  }
  const float mx = block_reduce(local_max, red, true);
  const float scale = float(1.0 / sqrt(double(hd)));
  float local_sum = 0;
  for (int64_t j = threadIdx.x; j < nk; j += blockDim.x) {
    const float e = expf((sc[j] - mx) * scale);
    sc[j] = e;
    local_sum += e;
  }
  const float inv = 1.0f / block_reduce(local_sum, red, false);
  for (int64_t j = threadIdx.x; j < nk; j += blockDim.x) {
    const float p = sc[j] * inv;
    sc[j] = a.round_bf16 ? num::round_bf16(p) : p;
  }
  __syncthreads();
  for (int64_t i = threadIdx.x; i < hd; i += blockDim.x) {
    float acc = 0;
    for (int64_t j = 0; j < nk; ++j) {
      const float vv = a.v[(kf + j) * kv_stride + kh * hd + i];
      acc = fmaf(sc[j], a.round_bf16 ? num::round_bf16(vv) : vv, acc);
    }
    a.out[(t * a.heads + h) * hd + i] = acc;
  }
}

__global__ void scatter_rows_kernel(const float* src, int64_t rows, int64_t d, const int64_t* dst_row, float* cache) {
  const int64_t i = int64_t(blockIdx.x) * blockDim.x + threadIdx.x;
  if (i < rows * d) cache[dst_row[i / d] * d + i % d] = src[i];
}

__global__ void argmax_kernel(const float* logits, int64_t vocab, int32_t* out) {
  __shared__ float best_v[kThreads];
  __shared__ int32_t best_i[kThreads];
  const float* row = logits + int64_t(blockIdx.x) * vocab;
  float bv = -FLT_MAX;
  int32_t bi = 0x7fffffff;
  for (int64_t i = threadIdx.x; i < vocab; i += blockDim.x)
    if (row[i] > bv) bv = row[i], bi = int32_t(i);
  best_v[threadIdx.x] = bv;
  best_i[threadIdx.x] = bi;
  __syncthreads();
  for (int stride = kThreads / 2; stride > 0; stride /= 2) {
    if (int(threadIdx.x) < stride) {
      const float ov = best_v[threadIdx.x + stride];
      const int32_t oi = best_i[threadIdx.x + stride];
      if (ov > best_v[threadIdx.x] || (ov == best_v[threadIdx.x] && oi < best_i[threadIdx.x]))
        best_v[threadIdx.x] = ov, best_i[threadIdx.x] = oi;
    }
    __syncthreads();
  }
  if (threadIdx.x == 0) out[blockIdx.x] = best_i[0] == 0x7fffffff ? 0 : best_i[0];
}

__global__ void gather_rows_kernel(const float* table, const int32_t* ids, int64_t rows, int64_t hidden, float* out) {
  const int64_t i = int64_t(blockIdx.x) * blockDim.x + threadIdx.x;
  if (i < rows * hidden) out[i] = table[int64_t(ids[i / hidden]) * hidden + i % hidden];
}

}  // namespace

#define FP4C_LAUNCH(n, kernel, ...)                                                  \
  do {                                                                               \
    if ((n) <= 0) return cudaSuccess;                                                \
    kernel<<<grid_for(n), kThreads, 0, s>>>(__VA_ARGS__);                            \
    return cudaGetLastError();                                                       \
  } while (0)

cudaError_t rms_norm(const float* x, const float* w, int64_t rows, int64_t cols, double eps, float* out, cudaStream_t s) {
  if (rows <= 0) return cudaSuccess;
  rms_norm_kernel<<<unsigned(rows), kThreads, 0, s>>>(x, w, cols, eps, out);
  return cudaGetLastError();
}
cudaError_t add_inplace(float* y, const float* x, int64_t n, cudaStream_t s) { FP4C_LAUNCH(n, add_kernel, y, x, n); }
cudaError_t silu_mul(float* g, const float* u, int64_t n, cudaStream_t s) { FP4C_LAUNCH(n, silu_mul_kernel, g, u, n); }
cudaError_t add_bias(float* y, const float* b, int64_t rows, int64_t cols, cudaStream_t s) {
  FP4C_LAUNCH(rows * cols, add_bias_kernel, y, b, rows, cols);
}
cudaError_t to_bf16(const float* x, uint16_t* out, int64_t n, cudaStream_t s) { FP4C_LAUNCH(n, to_bf16_kernel, x, out, n); }
cudaError_t round_bf16(float* x, int64_t n, cudaStream_t s) { FP4C_LAUNCH(n, round_bf16_kernel, x, n); }
cudaError_t fake_quantize(const float* x, int64_t rows, int64_t cols, float G, float* out, cudaStream_t s) {
  const int64_t blocks = rows * (cols / num::kBlock);
  FP4C_LAUNCH(blocks, fake_quantize_kernel, x, blocks, G, out);
}
cudaError_t quantize_fp4(const float* x, int64_t rows, int64_t cols, float G, uint8_t* codes, uint8_t* scales,
                         cudaStream_t s) {
  const cudaError_t e = cudaMemsetAsync(scales, 0, size_t(num::scale_swizzle_bytes(rows, cols / num::kBlock)), s);
  if (e != cudaSuccess) return e;
  FP4C_LAUNCH(rows * (cols / num::kBlock), quantize_fp4_kernel, x, rows, cols, G, codes, scales);
}
cudaError_t swizzle_scales(const uint8_t* scales, int64_t rows, int64_t cols, uint8_t* out, cudaStream_t s) {
  const cudaError_t e = cudaMemsetAsync(out, 0, size_t(num::scale_swizzle_bytes(rows, cols)), s);
  if (e != cudaSuccess) return e;
  FP4C_LAUNCH(rows * cols, swizzle_scales_kernel, scales, rows, cols, out);
}

cudaError_t nvfp4_gemm(const float* x, int64_t m, const Nvfp4Weight& w, const float* bias, bool rb, float* y,
                       cudaStream_t s) {
  if (m <= 0 || w.n <= 0) return cudaSuccess;
  if (w.k % num::kBlock != 0) return cudaErrorInvalidValue;
  if (m <= kGemvRows) {
    nvfp4_gemv_kernel<<<unsigned((w.n + kGemvWarps - 1) / kGemvWarps), 32 * kGemvWarps, 0, s>>>(x, m, w, bias, rb, y);
    return cudaGetLastError();
  }
  const dim3 grid(unsigned((w.n + kBN - 1) / kBN), unsigned((m + kBM - 1) / kBM));
  nvfp4_gemm_kernel<<<grid, 256, 0, s>>>(x, m, w, bias, rb, y);
  return cudaGetLastError();
}
cudaError_t nvfp4_dequantize(const Nvfp4Weight& w, float* out, cudaStream_t s) {
  FP4C_LAUNCH(w.n * w.k, nvfp4_dequantize_kernel, w, out);
}

cudaError_t rope(float* t, const int32_t* pos, const float* cos_t, const float* sin_t, int64_t rows, int64_t heads,
                 int64_t head_dim, cudaStream_t s) {
  FP4C_LAUNCH(rows * heads * (head_dim / 2), rope_kernel, t, pos, cos_t, sin_t, rows, heads, head_dim);
}

cudaError_t attention(const AttentionArgs& a, cudaStream_t s) {
  if (a.rows <= 0) return cudaSuccess;
  const size_t smem = size_t(a.head_dim + kAttnThreads + a.max_keys) * sizeof(float);
  if (smem > 48 * 1024) {
    const cudaError_t e = cudaFuncSetAttribute(attention_kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, int(smem));
    if (e != cudaSuccess) return e;
  }
  attention_kernel<<<dim3(unsigned(a.rows), unsigned(a.heads)), kAttnThreads, smem, s>>>(a);
  return cudaGetLastError();
}

cudaError_t scatter_rows(const float* src, int64_t rows, int64_t d, const int64_t* dst_row, float* cache, cudaStream_t s) {
  FP4C_LAUNCH(rows * d, scatter_rows_kernel, src, rows, d, dst_row, cache);
}
cudaError_t argmax_rows(const float* logits, int64_t rows, int64_t vocab, int32_t* out, cudaStream_t s) {
  if (rows <= 0) return cudaSuccess;
  argmax_kernel<<<unsigned(rows), kThreads, 0, s>>>(logits, vocab, out);
  return cudaGetLastError();
}
cudaError_t gather_rows(const float* table, const int32_t* ids, int64_t rows, int64_t hidden, float* out, cudaStream_t s) {
  FP4C_LAUNCH(rows * hidden, gather_rows_kernel, table, ids, rows, hidden, out);
}

}  // namespace fp4c::runtime::cuda::kernels
