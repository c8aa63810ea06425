// The CUDA runtime's per-element arithmetic, written once for host and device (`__host__ __device__`
// under nvcc, plain inline functions under g++): FP4 E2M1 and FP8 E4M3 decode and encode, the NVFP4
// weight dequantize expression of runtime/weights.h, the W4A4 activation quantization of one block of 16
// (runtime/activation_quant.cpp's arithmetic) and BF16 rounding. The kernels call exactly these, and
// test/runtime/cuda_numerics_test.cpp checks them on the host, bit for bit, against formats/ and the
// CPU runtime, so that what cannot run without a GPU is at least the same arithmetic as what is tested.
//
// Only IEEE float operations whose result is fixed (+, *, / and rintf, no fused multiply-add is
// possible in these expressions) are used, so host and device give the same bits (nvcc's default
// -prec-div=true gives a correctly rounded division; nothing here is built with --use_fast_math).
#pragma once

#include <cstdint>
#include <cstring>
#include <math.h>

#ifdef __CUDACC__
#define FP4C_HD __host__ __device__ __forceinline__
#else
#define FP4C_HD inline
#endif

namespace fp4c::runtime::cuda::num {

inline constexpr int kBlock = 16;  // NVFP4 elements per block scale

FP4C_HD float bits_to_float(uint32_t u) {
#ifdef __CUDA_ARCH__
  return __uint_as_float(u);
#else
  float f;
  std::memcpy(&f, &u, sizeof f);
  return f;
#endif
}

FP4C_HD uint32_t float_to_bits(float f) {
#ifdef __CUDA_ARCH__
  return __float_as_uint(f);
#else
  uint32_t u;
  std::memcpy(&u, &f, sizeof u);
  return u;
#endif
}

// 2^k for k in [-126, 127], exactly.
FP4C_HD float pow2(int k) { return bits_to_float(uint32_t(k + 127) << 23); }

// FP4 E2M1 value of the low nibble: 0, 0.5, 1, 1.5, 2, 3, 4, 6 and their negatives (NVFP4.md §1).
FP4C_HD float e2m1_decode(uint8_t code) {
  const int e = (code >> 1) & 3, m = code & 1;
  const float mag = e == 0 ? 0.5f * float(m) : (1.0f + 0.5f * float(m)) * pow2(e - 1);
  return (code & 0x8) ? -mag : mag;
}

// FP8 E4M3 "fn" value: bias 7, subnormals m * 2^-9, NaN only for 0x7F / 0xFF (NVFP4.md §2).
FP4C_HD float e4m3_decode(uint8_t code) {
  const int e = (code >> 3) & 0xF, m = code & 0x7;
  float mag;
  if (e == 0xF && m == 0x7)
    mag = bits_to_float(0x7fc00000u);
  else if (e == 0)
    mag = float(m) * pow2(-9);
  else
    mag = float(8 + m) * pow2(e - 10);
  return (code & 0x80) ? -mag : mag;
}

// Saturating FP8 E4M3 cast, round to nearest even; NaN -> 0x7F (fp8_e4m3::encode's contract). The only
// rounding is rintf of |x| scaled by a power of two (exact) to units of the code spacing.
FP4C_HD uint8_t e4m3_encode(float x) {
  const uint32_t bits = float_to_bits(x);
  if ((bits & 0x7fffffffu) > 0x7f800000u) return 0x7F;
  const uint8_t sign = (bits >> 31) ? 0x80 : 0x00;
  float a = bits_to_float(bits & 0x7fffffffu);
  if (a > 448.0f) a = 448.0f;
  if (a < pow2(-6)) return uint8_t(sign | uint8_t(rintf(a * pow2(9))));  // 0..8; 8 is 0x08, the smallest normal
  const int exponent = int((float_to_bits(a) >> 23) & 0xff) - 127;  // a in [2^exponent, 2^(exponent+1))
  const float units = rintf(a * pow2(3 - exponent));                 // 8..16; 16 carries into the exponent
  return uint8_t(sign | uint8_t(((exponent + 7) << 3) + (int(units) - 8)));
}

// FP4 E2M1 code of y (clamp to +-6, nearest, ties to the even code; a negative value rounding to zero
// gives 0x8; NaN gives 0): fp4::encode's thresholds.
FP4C_HD uint8_t e2m1_encode(float y) {
  const uint32_t bits = float_to_bits(y);
  if ((bits & 0x7fffffffu) > 0x7f800000u) return 0;
  const uint8_t sign = (bits >> 31) ? 0x8 : 0x0;
  const float a = bits_to_float(bits & 0x7fffffffu);
  uint8_t m;
  if (a <= 0.25f) m = 0;
  else if (a < 0.75f) m = 1;
  else if (a <= 1.25f) m = 2;
  else if (a < 1.75f) m = 3;
  else if (a <= 2.5f) m = 4;
  else if (a < 3.5f) m = 5;
  else if (a <= 5.0f) m = 6;
  else m = 7;
  return uint8_t(sign | m);
}

// One NVFP4 weight element as every engine sees it (runtime/weights.h PackedNvfp4): e2m1(code) *
// (e4m3(scale) / G), or (e2m1(code) * e4m3(scale)) * weight_scale_2 in the ModelOpt layout
// (use_ws2 set).
FP4C_HD float nvfp4_weight(uint8_t code, uint8_t scale, float global_scale, bool use_ws2, float ws2) {
  return use_ws2 ? (e2m1_decode(code) * e4m3_decode(scale)) * ws2 : e2m1_decode(code) * (e4m3_decode(scale) / global_scale);
}

// Block scale byte of an activation block with amax bits `amax_bits` (the integer max of |x| bit
// patterns, so a NaN sticks) and input global scale G: fp8(min(G * (a / 6), 448)), 0 -> 0x20 (0.125).
FP4C_HD uint8_t activation_scale_code(uint32_t amax_bits, float G) {
  const float a = bits_to_float(amax_bits);
  const float wanted = G * (a / 6.0f);
  uint8_t code = e4m3_encode(wanted > 448.0f ? 448.0f : wanted);
  if ((code & 0x7f) == 0) code = 0x20;
  return code;
}

FP4C_HD uint32_t block_amax_bits(const float* x) {
  uint32_t amax = 0;
  for (int i = 0; i < kBlock; ++i) {
    const uint32_t m = float_to_bits(x[i]) & 0x7fffffffu;
    amax = m > amax ? m : amax;
  }
  return amax;
}

// W4A4 activation quantization of one block of 16 as runtime/activation_quant.cpp does it: out[i] =
// fp4_value(q_i) * d with d = e4m3(s) / G, q_i the FP4 rounding of x[i] / d (the sign kept, so that a
// NaN block stays NaN). Also gives the codes (packed two per byte, low nibble first) and the scale
// byte, which the native FP4 GEMM consumes. Any of out / packed / scale may be null.
FP4C_HD void quantize_activation_block(const float* x, float G, float* out, uint8_t* packed, uint8_t* scale) {
  const uint8_t code = activation_scale_code(block_amax_bits(x), G);
  const float d = e4m3_decode(code) / G;
  if (scale) *scale = code;
  for (int i = 0; i < kBlock; ++i) {
    const float y = x[i] / d;
    const float ay = y < 0 ? -y : y;
    const float v = (ay > 0.25f ? 0.5f : 0.0f) + (ay >= 0.75f ? 0.5f : 0.0f) + (ay > 1.25f ? 0.5f : 0.0f) +
                    (ay >= 1.75f ? 0.5f : 0.0f) + (ay > 2.5f ? 1.0f : 0.0f) + (ay >= 3.5f ? 1.0f : 0.0f) +
                    (ay > 5.0f ? 2.0f : 0.0f);
    const uint32_t sign = float_to_bits(y) & 0x80000000u;
    if (out) out[i] = bits_to_float(float_to_bits(v) | sign) * d;
    if (packed) {
      const uint8_t q = e2m1_encode(y);
      if (i % 2 == 0)
        packed[i / 2] = q;
      else
        packed[i / 2] = uint8_t(packed[i / 2] | (q << 4));
    }
  }
}

// BF16 bits of x, nearest even, NaN kept quiet (bf16::from_float).
FP4C_HD uint16_t bf16_bits(float x) {
  uint32_t u = float_to_bits(x);
  if ((u & 0x7fffffffu) > 0x7f800000u) return uint16_t((u >> 16) | 0x40);
  u += 0x7fffu + ((u >> 16) & 1u);
  return uint16_t(u >> 16);
}
FP4C_HD float round_bf16(float x) { return bits_to_float(uint32_t(bf16_bits(x)) << 16); }

// Byte offset of the scale of (row r, block column c) in cuBLASLt's VEC16_UE4M3 scale layout for a
// matrix whose scales are [rows, cols] (cols = K / 16): tiles of 128 rows x 4 block columns, row-major
// over tiles (cols padded to a multiple of 4, rows to 128), and within a tile row r' = 32 a + b at
// b * 16 + a * 4 + c' (cuBLAS's "1D block scaling factors layout", torchao's to_blocked).
FP4C_HD int64_t scale_swizzle_offset(int64_t r, int64_t c, int64_t cols) {
  const int64_t col_tiles = (cols + 3) / 4;
  const int64_t tile = (r / 128) * col_tiles + c / 4;
  const int64_t rr = r % 128;
  return tile * 512 + (rr % 32) * 16 + (rr / 32) * 4 + c % 4;
}
// Bytes of that layout for [rows, cols] scales.
FP4C_HD int64_t scale_swizzle_bytes(int64_t rows, int64_t cols) {
  return (rows + 127) / 128 * ((cols + 3) / 4) * 512;
}

}  // namespace fp4c::runtime::cuda::num
