// MXFP4 (NVFP4.md §6): the E8M0 codec, the three scale rules (reference and fast), the reference and
// fast quantizers, and dequantization.
#include "formats/mxfp4.h"

#include <array>
#include <bit>
#include <cassert>
#include <cmath>
#include <limits>
#include <vector>

#include "formats/bf16.h"
#include "formats/fp4.h"

namespace fp4c::mxfp4 {

namespace e8m0 {

float decode(uint8_t code) {
  if (code == kNaN) return std::numeric_limits<float>::quiet_NaN();
  return std::ldexp(1.0f, int(code) - kBias);
}

uint8_t encode_exponent(int exponent) {
  if (exponent < -kBias) exponent = -kBias;
  if (exponent > kBias) exponent = kBias;
  return uint8_t(exponent + kBias);
}

}  // namespace e8m0

std::string_view scale_rule_name(ScaleRule r) {
  switch (r) {
    case ScaleRule::Ocp: return "ocp";
    case ScaleRule::CompressedTensors: return "compressed-tensors";
    case ScaleRule::ModelOpt: return "modelopt";
  }
  return "?";
}

std::optional<ScaleRule> parse_scale_rule(std::string_view name) {
  for (ScaleRule r : {ScaleRule::Ocp, ScaleRule::CompressedTensors, ScaleRule::ModelOpt})
    if (scale_rule_name(r) == name) return r;
  return std::nullopt;
}

namespace {

constexpr float kMaxFloat = std::numeric_limits<float>::max();
// Below these element counts, waking threads costs more than it saves.
constexpr int64_t kParallelMin = int64_t(1) << 14;

}  // namespace

uint8_t scale_code_ref(float a, ScaleRule rule) {
  if (std::isnan(a)) return e8m0::kNaN;
  a = std::fabs(a);
  if (std::isinf(a)) a = kMaxFloat;
  if (a == 0.0f) return e8m0::encode_exponent(-e8m0::kBias);
  const double l = std::log2(double(a));  // exact enough: distinct from an integer unless a is a power of two
  switch (rule) {
    case ScaleRule::Ocp:
      return e8m0::encode_exponent(int(std::floor(l)) - 2);
    case ScaleRule::CompressedTensors: {
      int k = int(std::floor(l));
      const double m = double(a) / std::ldexp(1.0, k);  // mantissa in [1, 2)
      if (m >= 1.75) ++k;                                // rounded to one mantissa bit, half up
      return e8m0::encode_exponent(k - 2);
    }
    case ScaleRule::ModelOpt: {
      const float d = a / 6.0f;  // float32, as ModelOpt computes it
      if (d == 0.0f) return e8m0::encode_exponent(-e8m0::kBias);
      return e8m0::encode_exponent(int(std::ceil(std::log2(double(d)))));
    }
  }
  return e8m0::kNaN;
}

uint8_t scale_code(float a, ScaleRule rule) {
  uint32_t bits = std::bit_cast<uint32_t>(a) & 0x7fffffffu;
  if (bits > 0x7f800000u) return e8m0::kNaN;
  if (bits == 0x7f800000u) bits = std::bit_cast<uint32_t>(kMaxFloat);
  switch (rule) {
    case ScaleRule::Ocp: {
      const int E = int(bits >> 23);  // 0: zero or subnormal, floor(log2 a) <= -127
      return E == 0 ? uint8_t(0) : e8m0::encode_exponent(E - 127 - 2);
    }
    case ScaleRule::CompressedTensors: {
      // compressed-tensors' round_to_power_2: add half of the second mantissa bit, keep the exponent.
      const int E = int((bits + (1u << 21)) >> 23);  // 255 only past FLT_MAX: 2^128
      return E == 0 ? uint8_t(0) : e8m0::encode_exponent(E - 127 - 2);
    }
    case ScaleRule::ModelOpt: {
      const uint32_t d = std::bit_cast<uint32_t>(std::bit_cast<float>(bits) / 6.0f);
      if (d == 0) return 0;
      const int E = int(d >> 23);
      const uint32_t mant = d & 0x7fffffu;
      // ceil(log2 d): normal 2^(E-127) * 1.m; subnormal mant * 2^-149.
      const int e = E ? E - 127 + (mant != 0) : -149 + int(std::bit_width(mant - 1));
      return e8m0::encode_exponent(e);
    }
  }
  return e8m0::kNaN;
}

namespace {


// One row of the reference, straight from the rules: block amax (a NaN sticks), the scale byte, then
// q = fp4(clamp(x / s)) with a true division.
void quantize_row_ref(const float* x, int64_t cols, ScaleRule rule, uint8_t* packed, uint8_t* scales,
                      nvfp4::ErrorStats* row_err) {
  for (int64_t b = 0; b < cols / kBlock; ++b) {
    const float* xb = x + b * kBlock;
    float a = 0.0f;
    for (int i = 0; i < kBlock; ++i) {
      const float ax = std::fabs(xb[i]);
      if (std::isnan(ax) || ax > a) a = ax;
    }
    const uint8_t code = scale_code_ref(a, rule);
    scales[b] = code;
    const float s = e8m0::decode(code);
    for (int i = 0; i < kBlock; i += 2) {
      uint8_t q[2];
      for (int j = 0; j < 2; ++j) {
        const float v = xb[i + j];
        float y = v / s;
        if (y < -6.0f) y = -6.0f;
        if (y > 6.0f) y = 6.0f;
        q[j] = fp4::encode(y);
        if (row_err) {
          const double e = double(v) - double(fp4::decode(q[j]) * s);
          row_err->sum_sq_err += e * e;
          row_err->sum_sq_ref += double(v) * double(v);
          if (std::fabs(e) > row_err->max_abs_err) row_err->max_abs_err = std::fabs(e);
        }
      }
      packed[(b * kBlock + i) / 2] = fp4::pack(q[0], q[1]);
    }
  }
  if (row_err) row_err->count += cols;
}

// 1 / 2^(code - 127), exact (2^-127 is a float32 subnormal); NaN for 0xFF.
const std::array<float, 256>& reciprocals() {
  static const std::array<float, 256> t = [] {
    std::array<float, 256> r{};
    for (int c = 0; c < 255; ++c) r[size_t(c)] = std::ldexp(1.0f, e8m0::kBias - c);
    r[255] = std::numeric_limits<float>::quiet_NaN();
    return r;
  }();
  return t;
}

const std::array<float, 256>& scales_table() {
  static const std::array<float, 256> t = [] {
    std::array<float, 256> r{};
    for (int c = 0; c < 256; ++c) r[size_t(c)] = e8m0::decode(uint8_t(c));
    return r;
  }();
  return t;
}

inline float load(const float* x, int64_t i) { return x[i]; }
inline float load(const uint16_t* x, int64_t i) { return bf16::to_float(x[i]); }

// The fast row: amax as an integer max of |x| bit patterns (NaN sorts above Inf and sticks), the scale
// byte from exponent bits, x * (1 / s) (the same real number as x / s, so the same rounding), and the
// FP4 code by counting the rounding thresholds of NVFP4.md §1 (> and >= alternate: ties to even).
template <typename T>
void quantize_row_fast(const T* x, int64_t cols, ScaleRule rule, uint8_t* packed, uint8_t* scales,
                       nvfp4::ErrorStats* row_err) {
  static constexpr float kFp4Value[16] = {0.0f,  0.5f,  1.0f,  1.5f,  2.0f,  3.0f,  4.0f,  6.0f,
                                          -0.0f, -0.5f, -1.0f, -1.5f, -2.0f, -3.0f, -4.0f, -6.0f};
  const float* inv_table = reciprocals().data();
  const float* s_table = scales_table().data();
  for (int64_t b = 0; b < cols / kBlock; ++b) {
    float xf[kBlock];
    for (int i = 0; i < kBlock; ++i) xf[i] = load(x, b * kBlock + i);
    const uint8_t code = scale_code(std::bit_cast<float>(nvfp4::block_amax_bits(xf, kBlock)), rule);
    scales[b] = code;
    const float inv = inv_table[code];
    uint8_t q[kBlock];
    for (int i = 0; i < kBlock; ++i) {
      const float y = xf[i] * inv;
      const float ay = std::fabs(y);
      const int m = (ay > 0.25f) + (ay >= 0.75f) + (ay > 1.25f) + (ay >= 1.75f) + (ay > 2.5f) + (ay >= 3.5f) +
                    (ay > 5.0f);
      q[i] = uint8_t(m | ((std::signbit(y) && !std::isnan(y)) ? 8 : 0));
    }
    for (int i = 0; i < kBlock; i += 2) packed[(b * kBlock + i) / 2] = fp4::pack(q[i], q[i + 1]);
    if (row_err) {
      const float s = s_table[code];
      for (int i = 0; i < kBlock; ++i) {
        const double e = double(xf[i]) - double(kFp4Value[q[i]] * s);
        row_err->sum_sq_err += e * e;
        row_err->sum_sq_ref += double(xf[i]) * double(xf[i]);
        if (std::fabs(e) > row_err->max_abs_err) row_err->max_abs_err = std::fabs(e);
      }
    }
  }
  if (row_err) row_err->count += cols;
}

template <typename T>
void quantize_fast(const T* x, int64_t rows, int64_t cols, uint8_t* packed, uint8_t* scales, ScaleRule rule,
                   nvfp4::ErrorStats* err) {
  assert(cols % kBlock == 0);
  std::vector<nvfp4::ErrorStats> row_err(err ? size_t(rows) : 0);
#pragma omp parallel for schedule(static) if (rows * cols >= kParallelMin)
  for (int64_t r = 0; r < rows; ++r)
    quantize_row_fast(x + r * cols, cols, rule, packed + r * cols / 2, scales + r * cols / kBlock,
                      err ? &row_err[size_t(r)] : nullptr);
  if (err)
    for (const auto& e : row_err) err->merge(e);
}

}  // namespace

void quantize_f32_ref(const float* x, int64_t rows, int64_t cols, uint8_t* packed, uint8_t* scales, ScaleRule rule,
                      nvfp4::ErrorStats* err) {
  assert(cols % kBlock == 0);
  for (int64_t r = 0; r < rows; ++r) {
    nvfp4::ErrorStats row;
    quantize_row_ref(x + r * cols, cols, rule, packed + r * cols / 2, scales + r * cols / kBlock,
                     err ? &row : nullptr);
    if (err) err->merge(row);
  }
}

void quantize_bf16_ref(const uint16_t* x, int64_t rows, int64_t cols, uint8_t* packed, uint8_t* scales,
                       ScaleRule rule, nvfp4::ErrorStats* err) {
  std::vector<float> row(static_cast<size_t>(cols));
  for (int64_t r = 0; r < rows; ++r) {
    for (int64_t k = 0; k < cols; ++k) row[size_t(k)] = bf16::to_float(x[r * cols + k]);
    quantize_f32_ref(row.data(), 1, cols, packed + r * cols / 2, scales + r * cols / kBlock, rule, err);
  }
}

void quantize_bf16(const uint16_t* x, int64_t rows, int64_t cols, uint8_t* packed, uint8_t* scales, ScaleRule rule,
                   nvfp4::ErrorStats* err) {
  quantize_fast(x, rows, cols, packed, scales, rule, err);
}

void quantize_f32(const float* x, int64_t rows, int64_t cols, uint8_t* packed, uint8_t* scales, ScaleRule rule,
                  nvfp4::ErrorStats* err) {
  quantize_fast(x, rows, cols, packed, scales, rule, err);
}

void dequantize(const uint8_t* packed, const uint8_t* scales, int64_t rows, int64_t cols, float* out) {
  assert(cols % kBlock == 0);
  const float* s_table = scales_table().data();
#pragma omp parallel for schedule(static) if (rows * cols >= kParallelMin)
  for (int64_t r = 0; r < rows; ++r) {
    for (int64_t b = 0; b < cols / kBlock; ++b) {
      const float s = s_table[scales[r * cols / kBlock + b]];
      for (int i = 0; i < kBlock; ++i) {
        const int64_t k = r * cols + b * kBlock + i;
        const uint8_t byte = packed[k / 2];
        out[k] = fp4::decode((k % 2) ? uint8_t(byte >> 4) : uint8_t(byte & 0xF)) * s;
      }
    }
  }
}

}  // namespace fp4c::mxfp4
