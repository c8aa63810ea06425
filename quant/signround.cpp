#include "quant/signround.h"

#include <cmath>
#include <vector>

#include "formats/fp4.h"
#include "formats/fp8_e4m3.h"

namespace fp4c::quant {
namespace {

constexpr int kBlock = 16;

float clamp6(float x) { return x < -6.0f ? -6.0f : (x > 6.0f ? 6.0f : x); }

// Block (r, b)'s amax, scale code and d = s / G, as the max rule computes them with the multiplier.
struct BlockScale {
  float amax;
  uint8_t code;
  float d;
  bool zero;       // the scale rounded to zero (the zero code stands in)
  bool clamped;    // G * (alpha amax / 6) above 448
};

// amax: a / 6 of the max rule, or with a base scale code its value / G (what d(d)/d(alpha) is).
BlockScale block_scale(const float* wb, float G, float alpha, uint8_t zero_code, const uint8_t* base) {
  float a = 0.0f;
  float wanted;
  if (base) {
    const float b = fp8_e4m3::decode(*base);
    a = 6.0f * b / G;
    wanted = alpha * b;
  } else {
    for (int i = 0; i < kBlock; ++i) a = std::max(a, std::fabs(wb[i]));
    wanted = G * ((alpha * a) / 6.0f);
  }
  BlockScale s{a, 0, 0, false, wanted > 448.0f};
  s.code = fp8_e4m3::encode(wanted > 448.0f ? 448.0f : wanted);
  if ((s.code & 0x7F) == 0) {
    s.code = zero_code;
    s.zero = true;
  }
  s.d = fp8_e4m3::decode(s.code) / G;
  return s;
}

uint8_t zero_code_of(nvfp4::ZeroScale zero) { return zero == nvfp4::ZeroScale::ModelOpt ? 0x38 : 0x20; }

}  // namespace

void quantize_with_offsets(const float* w, int64_t rows, int64_t cols, float G, const float* v, const float* alpha,
                           uint8_t* packed, uint8_t* scales, nvfp4::ZeroScale zero, float* dequantized,
                           nvfp4::ErrorStats* err, const uint8_t* base_scales) {
  const uint8_t zc = zero_code_of(zero);
  const int64_t blocks = cols / kBlock;
  std::vector<nvfp4::ErrorStats> row_err(err ? size_t(rows) : 0);
#pragma omp parallel for schedule(static) if (rows * cols >= (1 << 15))
  for (int64_t r = 0; r < rows; ++r) {
    for (int64_t b = 0; b < blocks; ++b) {
      const int64_t base = r * cols + b * kBlock;
      const BlockScale s = block_scale(w + base, G, alpha ? alpha[r * blocks + b] : 1.0f, zc,
                                       base_scales ? base_scales + r * blocks + b : nullptr);
      scales[r * blocks + b] = s.code;
      uint8_t q[kBlock];
      for (int i = 0; i < kBlock; ++i) {
        const float x = w[base + i] / s.d;   // a true division, as the reference
        q[i] = fp4::encode(clamp6(v ? x + v[base + i] : x));
        const float deq = fp4::decode(q[i]) * s.d;
        if (dequantized) dequantized[base + i] = deq;
        if (err) {
          const double e = double(w[base + i]) - double(deq);
          auto& re = row_err[size_t(r)];
          re.sum_sq_err += e * e;
          re.sum_sq_ref += double(w[base + i]) * double(w[base + i]);
          if (std::fabs(e) > re.max_abs_err) re.max_abs_err = std::fabs(e);
        }
      }
      for (int i = 0; i < kBlock; i += 2) packed[(base + i) / 2] = fp4::pack(q[i], q[i + 1]);
    }
    if (err) row_err[size_t(r)].count += cols;
  }
  if (err)
    for (const auto& e : row_err) err->merge(e);
}

void offset_gradients(const float* w, int64_t rows, int64_t cols, float G, const float* v, const float* alpha,
                      const float* dq, float* dv, float* dalpha, const uint8_t* base_scales) {
  const int64_t blocks = cols / kBlock;
#pragma omp parallel for schedule(static) if (rows * cols >= (1 << 15))
  for (int64_t r = 0; r < rows; ++r) {
    for (int64_t b = 0; b < blocks; ++b) {
      const int64_t base = r * cols + b * kBlock;
      const BlockScale s = block_scale(w + base, G, alpha ? alpha[r * blocks + b] : 1.0f, 0x20,
                                       base_scales ? base_scales + r * blocks + b : nullptr);
      double da = 0;
      for (int i = 0; i < kBlock; ++i) {
        const float x = w[base + i] / s.d;
        const float y = v ? x + v[base + i] : x;
        const bool inside = y >= -6.0f && y <= 6.0f;
        const float q = fp4::decode(fp4::encode(clamp6(y)));
        dv[base + i] = inside ? dq[base + i] * s.d : 0.0f;
        // d(q d)/d(d) = q + d dq/dy dy/dd = q - [inside] w / d
        da += double(dq[base + i]) * double(q - (inside ? x : 0.0f));
      }
      dalpha[r * blocks + b] = (s.zero || s.clamped) ? 0.0f : float(da * double(s.amax) / 6.0);
    }
  }
}

}  // namespace fp4c::quant
