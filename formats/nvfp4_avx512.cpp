// The AVX-512 row kernels behind nvfp4::quantize_bf16 and quantize_f32. They must give the reference's bytes exactly
// (nvfp4.cpp, quantize_row_ref), so every rounding below is the reference's rounding, done on 16
// lanes: the same float32 divisions and products, FP8 and FP4 round-to-nearest-even written as
// integer and comparison steps that give the same result as the scalar encoders for every input.
//
// Compiled for any x86-64: only the functions marked FP4C_AVX512 use AVX-512, and they run only
// after avx512_kernel_available() said yes.
#include <cstdint>

#include "formats/nvfp4.h"

#if defined(__x86_64__) && defined(__GNUC__)
// GCC 12 reports the _mm512_undefined_* inside its own intrinsics as uninitialized once inlined.
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"
#pragma GCC diagnostic ignored "-Wuninitialized"
#include <immintrin.h>
#define FP4C_HAVE_AVX512_KERNEL 1
#define FP4C_AVX512 __attribute__((target("avx512f,avx512bw,avx512vl,avx512dq")))
#else
#define FP4C_HAVE_AVX512_KERNEL 0
#endif

namespace fp4c::nvfp4::detail {

#if FP4C_HAVE_AVX512_KERNEL

bool avx512_kernel_available() {
  __builtin_cpu_init();
  return __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw") &&
         __builtin_cpu_supports("avx512vl") && __builtin_cpu_supports("avx512dq");
}

namespace {

// 16 BF16 values (one block) widened to float32.
FP4C_AVX512 inline __m512 load_block(const uint16_t* p) {
  const __m256i h = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(p));
  return _mm512_castsi512_ps(_mm512_slli_epi32(_mm512_cvtepu16_epi32(h), 16));
}

// 16 float32 values (one block).
FP4C_AVX512 inline __m512 load_block(const float* p) { return _mm512_loadu_ps(p); }

// max |x| of one block as float32 bits: an integer max of the magnitudes' bit patterns (NaN patterns sort
// above Inf: a NaN sticks, as in the reference's block_amax_bits).
FP4C_AVX512 inline uint32_t block_amax_f32_bits(const float* p) {
  const __m512i m = _mm512_and_si512(_mm512_loadu_si512(p), _mm512_set1_epi32(0x7FFFFFFF));
  return uint32_t(_mm512_reduce_max_epi32(m));
}
FP4C_AVX512 inline uint32_t block_amax_f32_bits(const uint16_t* p);

// max |x| of one block as BF16 bits. Magnitude bit patterns order like the magnitudes and NaN
// patterns sort above Inf, so this is the reference's NaN-sticky max.
FP4C_AVX512 inline uint32_t block_amax_bits(const uint16_t* p) {
  const __m256i h = _mm256_and_si256(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(p)),
                                     _mm256_set1_epi16(0x7FFF));
  __m128i m = _mm_max_epu16(_mm256_castsi256_si128(h), _mm256_extracti128_si256(h, 1));
  m = _mm_minpos_epu16(_mm_xor_si128(m, _mm_set1_epi32(-1)));  // max(x) = ~min(~x)
  return ~uint32_t(_mm_cvtsi128_si32(m)) & 0xFFFFu;
}

// Scales of up to 16 blocks at once from their amax (float32 bits): writes the FP8 codes of the
// first `n` blocks to `scales` and returns s / G per block.
FP4C_AVX512 inline __m512 block_scales(const uint32_t* amax_bits, int n, __m512 G,
                                       uint8_t zero_code, uint8_t* scales) {
  const __m512 a = _mm512_castsi512_ps(_mm512_loadu_si512(amax_bits));
  // G * (a / 6); a >= 0 and G > 0, so only the upper clamp can bite. min_ps returns its second
  // operand when either is NaN: a NaN stays NaN, as in the reference.
  const __m512 v = _mm512_min_ps(_mm512_set1_ps(448.0f),
                                 _mm512_mul_ps(G, _mm512_div_ps(a, _mm512_set1_ps(6.0f))));
  const __mmask16 nan = _mm512_cmp_ps_mask(v, v, _CMP_UNORD_Q);
  const __mmask16 subnormal = _mm512_cmp_ps_mask(v, _mm512_set1_ps(0x1p-6f), _CMP_LT_OQ);

  // Normal range [2^-6, 448]: round the float32 mantissa to 3 bits, ties to even (a carry moves into
  // the exponent, as it should), then rebias the exponent from 127 to 7: code = bits - (120 << 3).
  const __m512i u = _mm512_castps_si512(v);
  const __m512i lsb = _mm512_and_si512(_mm512_srli_epi32(u, 20), _mm512_set1_epi32(1));
  const __m512i rounded =
      _mm512_srli_epi32(_mm512_add_epi32(_mm512_add_epi32(u, _mm512_set1_epi32(0x7FFFF)), lsb), 20);
  const __m512i normal_code = _mm512_sub_epi32(rounded, _mm512_set1_epi32(120 << 3));
  // Subnormal range: code = round_even(v * 2^9), 0..8 (8 is the smallest normal, 0x08).
  const __m512i subnormal_code = _mm512_cvt_roundps_epi32(
      _mm512_mul_ps(v, _mm512_set1_ps(512.0f)), _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
  __m512i code = _mm512_mask_blend_epi32(subnormal, normal_code, subnormal_code);
  code = _mm512_mask_mov_epi32(code, _mm512_cmpeq_epi32_mask(code, _mm512_setzero_si512()),
                               _mm512_set1_epi32(zero_code));
  code = _mm512_mask_mov_epi32(code, nan, _mm512_set1_epi32(0x7F));
  _mm512_mask_cvtepi32_storeu_epi8(scales, __mmask16((1u << n) - 1u), code);

  // Decode the code back (exactly), then s / G in float32 like the reference.
  const __m512 s_normal = _mm512_castsi512_ps(
      _mm512_slli_epi32(_mm512_add_epi32(code, _mm512_set1_epi32(120 << 3)), 20));
  const __m512 s_subnormal = _mm512_mul_ps(_mm512_cvtepi32_ps(code), _mm512_set1_ps(0x1p-9f));
  __m512 s = _mm512_mask_blend_ps(_mm512_cmplt_epi32_mask(code, _mm512_set1_epi32(8)), s_normal,
                                  s_subnormal);
  s = _mm512_mask_mov_ps(s, nan, v);
  return _mm512_div_ps(s, G);
}

// FP4 codes of x / d: the threshold table of NVFP4.md §1 applied to |x / d|, counting thresholds
// passed, with > and >= alternating so that ties go to the even code. NaN passes none (code 0, and
// no sign); |x / d| > 5 includes the clamp to 6.
FP4C_AVX512 inline __m512i fp4_codes(__m512 x, __m512 d) {
  const __m512 y = _mm512_div_ps(x, d);  // a true division, as in the reference
  const __m512 ay = _mm512_abs_ps(y);
  const __m512i one = _mm512_set1_epi32(1);
  __m512i q = _mm512_setzero_si512();
  q = _mm512_mask_add_epi32(q, _mm512_cmp_ps_mask(ay, _mm512_set1_ps(0.25f), _CMP_GT_OQ), q, one);
  q = _mm512_mask_add_epi32(q, _mm512_cmp_ps_mask(ay, _mm512_set1_ps(0.75f), _CMP_GE_OQ), q, one);
  q = _mm512_mask_add_epi32(q, _mm512_cmp_ps_mask(ay, _mm512_set1_ps(1.25f), _CMP_GT_OQ), q, one);
  q = _mm512_mask_add_epi32(q, _mm512_cmp_ps_mask(ay, _mm512_set1_ps(1.75f), _CMP_GE_OQ), q, one);
  q = _mm512_mask_add_epi32(q, _mm512_cmp_ps_mask(ay, _mm512_set1_ps(2.5f), _CMP_GT_OQ), q, one);
  q = _mm512_mask_add_epi32(q, _mm512_cmp_ps_mask(ay, _mm512_set1_ps(3.5f), _CMP_GE_OQ), q, one);
  q = _mm512_mask_add_epi32(q, _mm512_cmp_ps_mask(ay, _mm512_set1_ps(5.0f), _CMP_GT_OQ), q, one);
  const __mmask16 negative =
      _mm512_movepi32_mask(_mm512_castps_si512(y)) & _mm512_cmp_ps_mask(y, y, _CMP_ORD_Q);
  return _mm512_mask_or_epi32(q, negative, q, _mm512_set1_epi32(0x8));
}

// Eight bytes from 16 codes: element 2k in the low nibble, 2k+1 in the high one.
FP4C_AVX512 inline void store_packed(uint8_t* out, __m512i q) {
  const __m512i pairs = _mm512_or_si512(q, _mm512_srli_epi64(q, 32 - 4));
  _mm_storel_epi64(reinterpret_cast<__m128i*>(out), _mm512_cvtepi64_epi8(pairs));
}

// Running error figures of one row, 16 lanes in double.
struct ErrorAcc {
  __m512d sq_err[2], sq_ref[2], max_err[2];
};

FP4C_AVX512 inline void acc_init(ErrorAcc& acc) {
  for (int h = 0; h < 2; ++h) {
    acc.sq_err[h] = acc.sq_ref[h] = acc.max_err[h] = _mm512_setzero_pd();
  }
}

FP4C_AVX512 inline void acc_add(ErrorAcc& acc, __m512 x, __m512i q, __m512 d) {
  const __m512 table = _mm512_setr_ps(0.0f, 0.5f, 1.0f, 1.5f, 2.0f, 3.0f, 4.0f, 6.0f, -0.0f, -0.5f,
                                      -1.0f, -1.5f, -2.0f, -3.0f, -4.0f, -6.0f);
  const __m512 xq = _mm512_mul_ps(_mm512_permutexvar_ps(q, table), d);  // fp4_value(q) * (s / G)
  const __m256 xs[2] = {_mm512_castps512_ps256(x), _mm512_extractf32x8_ps(x, 1)};
  const __m256 xqs[2] = {_mm512_castps512_ps256(xq), _mm512_extractf32x8_ps(xq, 1)};
  for (int h = 0; h < 2; ++h) {
    const __m512d xd = _mm512_cvtps_pd(xs[h]);
    const __m512d e = _mm512_sub_pd(xd, _mm512_cvtps_pd(xqs[h]));
    acc.sq_err[h] = _mm512_fmadd_pd(e, e, acc.sq_err[h]);
    acc.sq_ref[h] = _mm512_fmadd_pd(xd, xd, acc.sq_ref[h]);
    // max_pd returns its second operand when either is NaN: a NaN error is skipped, as in the
    // reference.
    acc.max_err[h] = _mm512_max_pd(_mm512_abs_pd(e), acc.max_err[h]);
  }
}

FP4C_AVX512 inline void acc_finish(const ErrorAcc& acc, int64_t cols, ErrorStats* out) {
  out->sum_sq_err += _mm512_reduce_add_pd(_mm512_add_pd(acc.sq_err[0], acc.sq_err[1]));
  out->sum_sq_ref += _mm512_reduce_add_pd(_mm512_add_pd(acc.sq_ref[0], acc.sq_ref[1]));
  const double m = _mm512_reduce_max_pd(_mm512_max_pd(acc.max_err[0], acc.max_err[1]));
  if (m > out->max_abs_err) out->max_abs_err = m;
  out->count += cols;
}

// The block amax of either input as float32 bits (BF16 bits shifted into place: exact).
FP4C_AVX512 inline uint32_t block_amax_f32_bits(const uint16_t* p) { return block_amax_bits(p) << 16; }

template <bool kWithError, typename T>
FP4C_AVX512 void quantize_row(const T* x, int64_t cols, float global_scale, uint8_t* packed,
                              uint8_t* scales, uint8_t zero_code, ErrorStats* row_err) {
  const __m512 G = _mm512_set1_ps(global_scale);
  const int64_t blocks = cols / kBlock;
  ErrorAcc acc;
  if constexpr (kWithError) acc_init(acc);

  // Chunks of 16 blocks: their 16 scales are computed in one vector.
  for (int64_t b0 = 0; b0 < blocks; b0 += 16) {
    const int n = blocks - b0 < 16 ? int(blocks - b0) : 16;
    alignas(64) uint32_t amax_bits[16] = {};
    for (int b = 0; b < n; ++b) amax_bits[b] = block_amax_f32_bits(x + (b0 + b) * kBlock);
    alignas(64) float d[16];
    _mm512_store_ps(d, block_scales(amax_bits, n, G, zero_code, scales + b0));

    for (int b = 0; b < n; ++b) {
      const int64_t k = (b0 + b) * kBlock;
      const __m512 xv = load_block(x + k);
      const __m512 dv = _mm512_set1_ps(d[b]);
      const __m512i q = fp4_codes(xv, dv);
      store_packed(packed + k / 2, q);
      if constexpr (kWithError) acc_add(acc, xv, q, dv);
    }
  }
  if constexpr (kWithError) acc_finish(acc, cols, row_err);
}

}  // namespace

// max of |x| as bit patterns over n float32 values (NaN patterns sort above Inf: a NaN sticks), four
// independent accumulators so the loop runs at load speed.
FP4C_AVX512 uint32_t amax_f32_bits_avx512(const float* x, int64_t n) {
  const __m512i mask = _mm512_set1_epi32(0x7FFFFFFF);
  __m512i m0 = _mm512_setzero_si512(), m1 = m0, m2 = m0, m3 = m0;
  int64_t i = 0;
  for (; i + 64 <= n; i += 64) {
    m0 = _mm512_max_epi32(m0, _mm512_and_si512(_mm512_loadu_si512(x + i), mask));
    m1 = _mm512_max_epi32(m1, _mm512_and_si512(_mm512_loadu_si512(x + i + 16), mask));
    m2 = _mm512_max_epi32(m2, _mm512_and_si512(_mm512_loadu_si512(x + i + 32), mask));
    m3 = _mm512_max_epi32(m3, _mm512_and_si512(_mm512_loadu_si512(x + i + 48), mask));
  }
  for (; i + 16 <= n; i += 16) m0 = _mm512_max_epi32(m0, _mm512_and_si512(_mm512_loadu_si512(x + i), mask));
  if (i < n) {
    const __mmask16 tail = __mmask16((1u << (n - i)) - 1u);
    m1 = _mm512_max_epi32(m1, _mm512_and_si512(_mm512_maskz_loadu_epi32(tail, x + i), mask));
  }
  return uint32_t(_mm512_reduce_max_epi32(_mm512_max_epi32(_mm512_max_epi32(m0, m1), _mm512_max_epi32(m2, m3))));
}

void quantize_row_bf16_avx512(const uint16_t* x, int64_t cols, float global_scale, uint8_t* packed,
                              uint8_t* scales, uint8_t zero_scale_code, ErrorStats* row_err) {
  if (row_err) {
    quantize_row<true>(x, cols, global_scale, packed, scales, zero_scale_code, row_err);
  } else {
    quantize_row<false>(x, cols, global_scale, packed, scales, zero_scale_code, nullptr);
  }
}

void quantize_row_f32_avx512(const float* x, int64_t cols, float global_scale, uint8_t* packed, uint8_t* scales,
                             uint8_t zero_scale_code, ErrorStats* row_err) {
  if (row_err) {
    quantize_row<true>(x, cols, global_scale, packed, scales, zero_scale_code, row_err);
  } else {
    quantize_row<false>(x, cols, global_scale, packed, scales, zero_scale_code, nullptr);
  }
}

#else  // no AVX-512 kernel on this compiler or architecture

bool avx512_kernel_available() { return false; }
uint32_t amax_f32_bits_avx512(const float*, int64_t) { return 0; }

void quantize_row_bf16_avx512(const uint16_t*, int64_t, float, uint8_t*, uint8_t*, uint8_t,
                              ErrorStats*) {}
void quantize_row_f32_avx512(const float*, int64_t, float, uint8_t*, uint8_t*, uint8_t, ErrorStats*) {}

#endif

}  // namespace fp4c::nvfp4::detail
