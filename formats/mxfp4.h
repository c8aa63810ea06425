// MXFP4 (OCP microscaling, NVFP4.md §6): FP4 E2M1 elements in blocks of 32 along the input dimension,
// one E8M0 scale byte per block (a power of two 2^(byte - 127); 0xFF is NaN), no global scale.
// Packing as NVFP4: two codes per byte, element 2k in the low nibble.
//
// Sources disagree on how a block's exponent is chosen from its amax; the three rules are here (see
// ScaleRule). fp4c writes kDefaultRule (docs/DECISIONS.md says why). `*_ref` is the plain oracle
// written from the rules' text (std::log2, fp4::encode, a true division); the fast quantizer (exponent
// bits, OpenMP over rows) must give the same bytes.
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>

#include "formats/nvfp4.h"  // ErrorStats

namespace fp4c::mxfp4 {

inline constexpr int kBlock = 32;

// E8M0: an unbiased exponent e in [-127, 127] is the byte e + 127; 0xFF is NaN.
namespace e8m0 {
inline constexpr int kBias = 127;
inline constexpr uint8_t kNaN = 0xFF;
float decode(uint8_t code);               // 2^(code - 127) as float32 (2^-127 is a float32 subnormal); NaN for 0xFF
uint8_t encode_exponent(int exponent);    // clamps to [-127, 127]
}  // namespace e8m0

// How a block's scale exponent follows from its amax a (finite, >= 0). Each clamps to [-127, 127];
// a = 0 (and any amax too small for the range) gets 2^-127, byte 0x00.
enum class ScaleRule : uint8_t {
  // The OCP MX spec: e = floor(log2 a) - 2 (2 = emax of E2M1). a / 2^e lies in [4, 8): elements
  // beyond 6 * 2^e saturate to +-6.
  Ocp,
  // compressed-tensors (generate_mx_scales): a first rounded to one mantissa bit, round half up in
  // its bits (a >= 1.75 * 2^k becomes 2^(k+1)), then floor(log2) - 2. a / 2^e lies in [3.5, 7): only
  // elements in (6, 7) * 2^e saturate. (Where compressed-tensors' rounding overflows to Inf, for
  // a >= 1.75 * 2^127, it would store the NaN byte; here the exponent is 126.)
  CompressedTensors,
  // ModelOpt: e = ceil(log2(a / 6)), a / 6 in float32. a / 2^e lies in (3, 6]: never clips (up to
  // the float32 rounding of a / 6, one ulp).
  ModelOpt,
};
inline constexpr ScaleRule kDefaultRule = ScaleRule::CompressedTensors;
std::string_view scale_rule_name(ScaleRule r);    // "ocp", "compressed-tensors", "modelopt"
std::optional<ScaleRule> parse_scale_rule(std::string_view name);

// The block's scale byte under `rule`, from its amax: the reference (std::log2 / std::ceil on floats)
// and the fast one (exponent bits); equal for every finite a >= 0.
uint8_t scale_code_ref(float amax, ScaleRule rule);
uint8_t scale_code(float amax, ScaleRule rule);

// Quantize a row-major [rows, cols] matrix, cols % 32 == 0. packed: rows * cols / 2 bytes; scales:
// rows * cols / 32 E8M0 bytes. q = fp4(clamp(x / 2^e, -6, 6)) (division by a power of two: exact
// unless the quotient is subnormal). `err` as in nvfp4. Callers reject NaN/Inf first; what such input
// gives: a block holding a NaN gets the NaN scale 0xFF and codes 0; a block holding an Inf is scaled
// as if its amax were the largest finite float (the Inf saturates to +-6).
void quantize_f32_ref(const float* x, int64_t rows, int64_t cols, uint8_t* packed, uint8_t* scales,
                      ScaleRule rule = kDefaultRule, nvfp4::ErrorStats* err = nullptr);
void quantize_bf16_ref(const uint16_t* x, int64_t rows, int64_t cols, uint8_t* packed, uint8_t* scales,
                       ScaleRule rule = kDefaultRule, nvfp4::ErrorStats* err = nullptr);
// Fast: the reference's bytes; OpenMP over rows; error figures summed per row in row order, so they do
// not depend on the thread count.
void quantize_bf16(const uint16_t* x, int64_t rows, int64_t cols, uint8_t* packed, uint8_t* scales,
                   ScaleRule rule = kDefaultRule, nvfp4::ErrorStats* err = nullptr);
void quantize_f32(const float* x, int64_t rows, int64_t cols, uint8_t* packed, uint8_t* scales,
                  ScaleRule rule = kDefaultRule, nvfp4::ErrorStats* err = nullptr);

// x' = fp4_value(q) * 2^(scale - 127) (exact in float32 but for subnormal underflow); NaN for a 0xFF
// scale. Into out[rows * cols].
void dequantize(const uint8_t* packed, const uint8_t* scales, int64_t rows, int64_t cols, float* out);

}  // namespace fp4c::mxfp4
