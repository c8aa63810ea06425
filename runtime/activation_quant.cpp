#include "runtime/activation_quant.h"

#include <array>
#include <bit>
#include <cassert>

#include "formats/fp8_e4m3.h"
#include "formats/mxfp4.h"
#include "formats/nvfp4.h"
#include "runtime/vectorize.h"

namespace fp4c::runtime {
namespace detail {

namespace {

const std::array<float, 256>& fp8_values() {
  static const std::array<float, 256> table = [] {
    std::array<float, 256> t{};
    for (int c = 0; c < 256; ++c) t[size_t(c)] = fp8_e4m3::decode(uint8_t(c));
    return t;
  }();
  return table;
}

}  // namespace

// One row, the reference's arithmetic: block amax as an integer max of |x| bit patterns (NaN patterns
// sort above Inf, so a NaN sticks and makes the block's s / Gx NaN), the scale by the formats' FP8
// encoder, then per element the FP4 value of x / (s / Gx) by counting the rounding thresholds of
// NVFP4.md §1 that |x / d| passes (> and >= alternate so that ties go to the even code).
FP4C_VECTOR_CLONES void fake_quantize_row(const float* x, int64_t cols, float G, float* out,
                                          const float* fp8_value) {
  constexpr int kB = nvfp4::kBlock;
  for (int64_t b = 0; b < cols / kB; ++b) {
    const float* xb = x + b * kB;
    float* ob = out + b * kB;
    const uint32_t amax_bits = nvfp4::block_amax_bits(xb, kB);
    const float a = std::bit_cast<float>(amax_bits);
    const float wanted = G * (a / 6.0f);
    uint8_t code = fp8_e4m3::encode(wanted > 448.0f ? 448.0f : wanted);  // a >= 0: only the top clamps
    if ((code & 0x7f) == 0) code = 0x20;  // 0.125, as compressed-tensors writes it
    const float d = fp8_value[code] / G;
#pragma omp simd
    for (int i = 0; i < kB; ++i) {
      const float y = xb[i] / d;
      const float ay = y < 0 ? -y : y;
      const float v = (ay > 0.25f ? 0.5f : 0.0f) + (ay >= 0.75f ? 0.5f : 0.0f) +
                      (ay > 1.25f ? 0.5f : 0.0f) + (ay >= 1.75f ? 0.5f : 0.0f) +
                      (ay > 2.5f ? 1.0f : 0.0f) + (ay >= 3.5f ? 1.0f : 0.0f) + (ay > 5.0f ? 2.0f : 0.0f);
      // The sign of y (a negative value that rounds to 0 gives -0, as FP4 code 0x8 does); a NaN y
      // only comes from a NaN block, whose d is NaN, so the product is NaN whatever the sign.
      const uint32_t sign = std::bit_cast<uint32_t>(y) & 0x80000000u;
      ob[i] = std::bit_cast<float>(std::bit_cast<uint32_t>(v) | sign) * d;
    }
  }
}

// One row of MXFP4 fake quantization: the block amax's bits, the scale byte by mxfp4::scale_code,
// x * (1 / s) (the same real number as x / s: 1 / s is an exact power of two), then the FP4 value by
// counting thresholds as above, times s.
FP4C_VECTOR_CLONES void fake_quantize_row_mxfp4(const float* x, int64_t cols, float* out, const float* scale_value,
                                                const float* scale_reciprocal) {
  constexpr int kB = mxfp4::kBlock;
  for (int64_t b = 0; b < cols / kB; ++b) {
    const float* xb = x + b * kB;
    float* ob = out + b * kB;
    const uint32_t amax_bits = nvfp4::block_amax_bits(xb, kB);
    const uint8_t code = mxfp4::scale_code(std::bit_cast<float>(amax_bits), mxfp4::kDefaultRule);
    const float s = scale_value[code], inv = scale_reciprocal[code];
#pragma omp simd
    for (int i = 0; i < kB; ++i) {
      const float y = xb[i] * inv;
      const float ay = y < 0 ? -y : y;
      const float v = (ay > 0.25f ? 0.5f : 0.0f) + (ay >= 0.75f ? 0.5f : 0.0f) +
                      (ay > 1.25f ? 0.5f : 0.0f) + (ay >= 1.75f ? 0.5f : 0.0f) +
                      (ay > 2.5f ? 1.0f : 0.0f) + (ay >= 3.5f ? 1.0f : 0.0f) + (ay > 5.0f ? 2.0f : 0.0f);
      const uint32_t sign = std::bit_cast<uint32_t>(y) & 0x80000000u;
      ob[i] = std::bit_cast<float>(std::bit_cast<uint32_t>(v) | sign) * s;
    }
  }
}

}  // namespace detail

void fake_quantize_mxfp4(const float* x, int64_t rows, int64_t cols, float* out) {
  assert(cols % mxfp4::kBlock == 0);
  static const std::array<float, 256> values = [] {
    std::array<float, 256> t{};
    for (int c = 0; c < 256; ++c) t[size_t(c)] = mxfp4::e8m0::decode(uint8_t(c));
    return t;
  }();
  static const std::array<float, 256> reciprocals = [] {
    std::array<float, 256> t{};
    for (int c = 0; c < 256; ++c) t[size_t(c)] = c == 255 ? values[255] : 1.0f / values[size_t(c)];  // exact
    return t;
  }();
#pragma omp parallel for schedule(static) if (rows * cols >= (1 << 15))
  for (int64_t r = 0; r < rows; ++r)
    detail::fake_quantize_row_mxfp4(x + r * cols, cols, out + r * cols, values.data(), reciprocals.data());
}

void fake_quantize_nvfp4(const float* x, int64_t rows, int64_t cols, float global_scale, float* out) {
  assert(cols % nvfp4::kBlock == 0);
  const float* table = detail::fp8_values().data();
#pragma omp parallel for schedule(static) if (rows * cols >= (1 << 15))
  for (int64_t r = 0; r < rows; ++r)
    detail::fake_quantize_row(x + r * cols, cols, global_scale, out + r * cols, table);
}

}  // namespace fp4c::runtime
