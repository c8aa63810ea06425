#include "formats/convert.h"

#include <bit>
#include <cstring>

#include "formats/bf16.h"
#include "formats/f16.h"

namespace fp4c {

void convert_to_f32(const std::byte* src, DType dtype, int64_t n, float* out) {
  if (dtype == DType::F32) {
    std::memcpy(out, src, size_t(n) * 4);
    return;
  }
#pragma omp parallel for schedule(static) if (n >= (1 << 18))
  for (int64_t i = 0; i < n; ++i) {
    uint16_t h;
    std::memcpy(&h, src + i * 2, 2);
    out[i] = dtype == DType::BF16 ? bf16::to_float(h) : f16::to_float(h);
  }
}

std::vector<float> to_f32(std::span<const std::byte> bytes, DType dtype) {
  const int64_t n = int64_t(bytes.size() / dtype_size(dtype));
  std::vector<float> out(static_cast<size_t>(n));
  convert_to_f32(bytes.data(), dtype, n, out.data());
  return out;
}

namespace {
#ifdef __FLT16_MAX__   // the compiler has _Float16 (GCC; clang from 15)
uint16_t half_bits(float f) { return std::bit_cast<uint16_t>(static_cast<_Float16>(f)); }
float round_to_half(float f) { return float(static_cast<_Float16>(f)); }
#else
uint16_t half_bits(float f) { return f16::from_float(f); }
float round_to_half(float f) { return f16::to_float(f16::from_float(f)); }
#endif
}  // namespace

void convert_from_f32(const float* src, DType dtype, int64_t n, std::byte* out) {
  if (dtype == DType::F32) {
    std::memcpy(out, src, size_t(n) * 4);
    return;
  }
  if (dtype == DType::BF16) {
#pragma omp parallel for simd schedule(static) if (n >= (1 << 18))
    for (int64_t i = 0; i < n; ++i) {
      const uint16_t h = bf16::from_float(src[i]);
      std::memcpy(out + i * 2, &h, 2);
    }
    return;
  }
  for (int64_t i = 0; i < n; ++i) {
    const uint16_t h = half_bits(src[i]);
    std::memcpy(out + i * 2, &h, 2);
  }
}

void round_to_dtype(float* v, int64_t n, DType dtype) {
  if (dtype == DType::BF16)
    for (int64_t i = 0; i < n; ++i) v[i] = bf16::to_float(bf16::from_float(v[i]));
  else if (dtype == DType::F16)
    for (int64_t i = 0; i < n; ++i) v[i] = round_to_half(v[i]);
}

}  // namespace fp4c
