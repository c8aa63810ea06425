#include "runtime/elementwise.h"

#include <algorithm>
#include <cmath>

#include "base/profile.h"
#include "runtime/vectorize.h"

namespace fp4c::runtime {
namespace detail {

FP4C_VECTOR_CLONES void rms_norm_row(const float* x, const float* w, int64_t cols, double eps,
                                     float* out) {
  double ss = 0;
#pragma omp simd reduction(+ : ss)
  for (int64_t i = 0; i < cols; ++i) ss += double(x[i]) * double(x[i]);
  const float r = float(1.0 / std::sqrt(ss / double(cols) + eps));
#pragma omp simd
  for (int64_t i = 0; i < cols; ++i) out[i] = w[i] * (x[i] * r);
}

FP4C_VECTOR_CLONES void silu_mul_chunk(float* g, const float* u, int64_t n) {
#pragma omp simd
  for (int64_t i = 0; i < n; ++i) g[i] = g[i] / (1.0f + exp_approx(-g[i])) * u[i];
}

// tanh(u) = 1 - 2 / (exp(2u) + 1), through exp_approx (which clamps, so large |u| give exactly +-1).
FP4C_VECTOR_CLONES void gelu_tanh_mul_chunk(float* g, const float* u, int64_t n) {
#pragma omp simd
  for (int64_t i = 0; i < n; ++i) {
    const float x = g[i];
    const float inner = 0.7978845608028654f * (x + 0.044715f * x * x * x);
    const float t = 1.0f - 2.0f / (exp_approx(2.0f * inner) + 1.0f);
    g[i] = 0.5f * x * (1.0f + t) * u[i];
  }
}

FP4C_VECTOR_CLONES void add_chunk(float* y, const float* x, int64_t n) {
#pragma omp simd
  for (int64_t i = 0; i < n; ++i) y[i] += x[i];
}

FP4C_VECTOR_CLONES void bf16_chunk(const float* x, uint16_t* out, int64_t n) {
#pragma omp simd
  for (int64_t i = 0; i < n; ++i) {
    const uint32_t u = std::bit_cast<uint32_t>(x[i]);
    const uint32_t rounded = (u + 0x7fffu + ((u >> 16) & 1u)) >> 16;
    const bool nan = (u & 0x7fffffffu) > 0x7f800000u;
    out[i] = uint16_t(nan ? ((u >> 16) | 0x40u) : rounded);
  }
}

}  // namespace detail

namespace {

// Elementwise work is cut into chunks that fit in L1/L2; threads take whole chunks.
constexpr int64_t kChunk = 8192;
// Below this many elements a parallel region costs more than it saves.
constexpr int64_t kParallelMin = 1 << 15;

template <typename F>
void for_chunks(int64_t n, F&& f) {
  const int64_t chunks = (n + kChunk - 1) / kChunk;
#pragma omp parallel for schedule(static) if (n >= kParallelMin)
  for (int64_t c = 0; c < chunks; ++c) {
    const int64_t begin = c * kChunk;
    f(begin, std::min(kChunk, n - begin));
  }
}

}  // namespace

void rms_norm(const float* x, const float* w, int64_t rows, int64_t cols, double eps, float* out) {
  profile::Scope timed(profile::Stage::Norm);
#pragma omp parallel for schedule(static) if (rows * cols >= kParallelMin)
  for (int64_t r = 0; r < rows; ++r) detail::rms_norm_row(x + r * cols, w, cols, eps, out + r * cols);
}

void silu_mul(float* gate, const float* up, int64_t n) {
  profile::Scope timed(profile::Stage::Elementwise);
  for_chunks(n, [&](int64_t b, int64_t len) { detail::silu_mul_chunk(gate + b, up + b, len); });
}

void gelu_tanh_mul(float* gate, const float* up, int64_t n) {
  for_chunks(n, [&](int64_t b, int64_t len) { detail::gelu_tanh_mul_chunk(gate + b, up + b, len); });
}

void softcap_logits(float* x, int64_t n, double cap) {
  if (!(cap > 0)) return;
  const float c = float(cap);
#pragma omp parallel for schedule(static) if (n >= 65536)
  for (int64_t i = 0; i < n; ++i) x[i] = std::tanh(x[i] / c) * c;
}

void activation_mul(const std::string& act, float* gate, const float* up, int64_t n) {
  if (act == "gelu_pytorch_tanh")
    gelu_tanh_mul(gate, up, n);
  else
    silu_mul(gate, up, n);
}

void add_inplace(float* y, const float* x, int64_t n) {
  profile::Scope timed(profile::Stage::Elementwise);
  for_chunks(n, [&](int64_t b, int64_t len) { detail::add_chunk(y + b, x + b, len); });
}

void round_to_bf16(const float* x, uint16_t* out, int64_t n) {
  profile::Scope timed(profile::Stage::Convert);
  for_chunks(n, [&](int64_t b, int64_t len) { detail::bf16_chunk(x + b, out + b, len); });
}

}  // namespace fp4c::runtime
