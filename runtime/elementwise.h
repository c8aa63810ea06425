// The runtime's elementwise kernels (RMSNorm, SwiGLU, residual add, BF16 rounding): OpenMP over rows,
// vectorised for the CPU they run on. Everything here is per row, so results do not depend on the
// thread count.
#pragma once

#include <bit>
#include <cstdint>
#include <string>

namespace fp4c::runtime {

// out[r] = w * (x[r] * 1/sqrt(mean(x[r]^2) + eps)) for each row of x [rows, cols]; the mean is
// accumulated in double. out may equal x.
void rms_norm(const float* x, const float* w, int64_t rows, int64_t cols, double eps, float* out);

// gate[i] = silu(gate[i]) * up[i] = gate / (1 + exp(-gate)) * up, over n elements.
void silu_mul(float* gate, const float* up, int64_t n);

// gate[i] = gelu_tanh(gate[i]) * up[i], GELU with the tanh approximation (PyTorch's gelu(approximate="tanh"),
// transformers' gelu_pytorch_tanh): 0.5 g (1 + tanh(sqrt(2/pi) (g + 0.044715 g^3))).
void gelu_tanh_mul(float* gate, const float* up, int64_t n);

// The MLP's gated activation by its config name ("silu" or "gelu_pytorch_tanh").
void activation_mul(const std::string& act, float* gate, const float* up, int64_t n);

// Logit soft-capping (Gemma's final_logit_softcapping): x[i] = tanh(x[i] / cap) * cap in float32, as
// transformers computes it; cap <= 0 leaves x unchanged.
void softcap_logits(float* x, int64_t n, double cap);

// y[i] += x[i], over n elements.
void add_inplace(float* y, const float* x, int64_t n);

// BF16 bits of x, rounded to nearest even (NaN stays a quiet NaN): bf16::from_float, vectorised.
void round_to_bf16(const float* x, uint16_t* out, int64_t n);

// exp(x) in float within about 2 ulp (Cephes' expf polynomial), written so that loops calling it
// vectorise. Inputs are clamped to [-87.3, 88.3]: exp(-inf) gives about 1e-38, not 0, and large
// inputs a large finite value; callers mask what must be exactly zero. NaN gives an unspecified value.
inline float exp_approx(float x) {
  x = x < -87.3365f ? -87.3365f : (x > 88.3f ? 88.3f : x);
  // n = round(x / ln 2) by the 1.5 * 2^23 trick (vectorises on any ISA, unlike floor/nearbyint).
  const float n = (x * 1.44269504088896341f + 12582912.0f) - 12582912.0f;
  const float r = (x - n * 0.693359375f) - n * -2.12194440e-4f;
  float p = 1.9875691500e-4f;
  p = p * r + 1.3981999507e-3f;
  p = p * r + 8.3334519073e-3f;
  p = p * r + 4.1665795894e-2f;
  p = p * r + 1.6666665459e-1f;
  p = p * r + 5.0000001201e-1f;
  const float y = p * (r * r) + r + 1.0f;
  return y * std::bit_cast<float>(uint32_t(int32_t(n) + 127) << 23);
}

}  // namespace fp4c::runtime
