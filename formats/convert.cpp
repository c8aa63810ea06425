#include "formats/convert.h"

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

}  // namespace fp4c
