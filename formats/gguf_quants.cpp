// ggml's block formats dequantized to float32, operation for operation as ggml-quants.c's reference
// dequantize_row_<type> (and gguf-py's numpy dequantizers, which agree with it bit for bit): the same
// products and sums in the same order, each rounded to float32 (no fused multiply-add).
#if defined(__clang__)
#pragma STDC FP_CONTRACT OFF
#elif defined(__GNUC__)
#pragma GCC optimize("fp-contract=off")
#endif

#include <cstring>
#include <string>

#if defined(__x86_64__) && defined(__GNUC__)
#include <immintrin.h>
#endif

#include "formats/bf16.h"
#include "formats/f16.h"
#include "formats/gguf.h"

#include <omp.h>

namespace fp4c::gguf {
namespace {

constexpr int kQK = 32;    // elements per block of the legacy formats
constexpr int kQKK = 256;  // elements per super-block of the K formats

uint8_t u8(const std::byte* p) { return uint8_t(*p); }
float half(const std::byte* p) {
  uint16_t h;
  std::memcpy(&h, p, 2);
  return f16::to_float(h);
}
uint32_t le32(const std::byte* p) {
  return uint32_t(u8(p)) | uint32_t(u8(p + 1)) << 8 | uint32_t(u8(p + 2)) << 16 | uint32_t(u8(p + 3)) << 24;
}

// Block layouts (ggml-common.h), sizes pinned.
constexpr size_t kQ4_0 = 2 + kQK / 2, kQ4_1 = 2 + 2 + kQK / 2, kQ5_0 = 2 + 4 + kQK / 2,
                 kQ5_1 = 2 + 2 + 4 + kQK / 2, kQ8_0 = 2 + kQK, kQ4_K = 2 + 2 + 12 + kQKK / 2,
                 kQ5_K = 2 + 2 + 12 + kQKK / 8 + kQKK / 2, kQ6_K = kQKK / 2 + kQKK / 4 + kQKK / 16 + 2;
static_assert(kQ4_0 == 18 && kQ4_1 == 20 && kQ5_0 == 22 && kQ5_1 == 24 && kQ8_0 == 34);
static_assert(kQ4_K == 144 && kQ5_K == 176 && kQ6_K == 210);

// d (f16), qs[16]: x = (q - 8) * d
void q4_0(const std::byte* b, float* y) {
  const float d = half(b);
  const std::byte* qs = b + 2;
  for (int j = 0; j < kQK / 2; ++j) {
    const int x0 = (u8(qs + j) & 0x0F) - 8;
    const int x1 = (u8(qs + j) >> 4) - 8;
    y[j] = float(x0) * d;
    y[j + kQK / 2] = float(x1) * d;
  }
}

// d, m (f16), qs[16]: x = q * d + m
void q4_1(const std::byte* b, float* y) {
  const float d = half(b), m = half(b + 2);
  const std::byte* qs = b + 4;
  for (int j = 0; j < kQK / 2; ++j) {
    const int x0 = u8(qs + j) & 0x0F;
    const int x1 = u8(qs + j) >> 4;
    y[j] = float(x0) * d + m;
    y[j + kQK / 2] = float(x1) * d + m;
  }
}

// d (f16), qh (u32: the fifth bit of each element), qs[16]: x = (q - 16) * d
void q5_0(const std::byte* b, float* y) {
  const float d = half(b);
  const uint32_t qh = le32(b + 2);
  const std::byte* qs = b + 6;
  for (int j = 0; j < kQK / 2; ++j) {
    const uint8_t xh0 = uint8_t(((qh >> j) << 4) & 0x10);
    const uint8_t xh1 = uint8_t((qh >> (j + 12)) & 0x10);
    const int x0 = ((u8(qs + j) & 0x0F) | xh0) - 16;
    const int x1 = ((u8(qs + j) >> 4) | xh1) - 16;
    y[j] = float(x0) * d;
    y[j + kQK / 2] = float(x1) * d;
  }
}

// d, m (f16), qh (u32), qs[16]: x = q * d + m
void q5_1(const std::byte* b, float* y) {
  const float d = half(b), m = half(b + 2);
  const uint32_t qh = le32(b + 4);
  const std::byte* qs = b + 8;
  for (int j = 0; j < kQK / 2; ++j) {
    const uint8_t xh0 = uint8_t(((qh >> j) << 4) & 0x10);
    const uint8_t xh1 = uint8_t((qh >> (j + 12)) & 0x10);
    const int x0 = (u8(qs + j) & 0x0F) | xh0;
    const int x1 = (u8(qs + j) >> 4) | xh1;
    y[j] = float(x0) * d + m;
    y[j + kQK / 2] = float(x1) * d + m;
  }
}

// d (f16), qs[32] (int8): x = q * d
void q8_0(const std::byte* b, float* y) {
  const float d = half(b);
  for (int j = 0; j < kQK; ++j) y[j] = float(int8_t(u8(b + 2 + j))) * d;
}

// The 6-bit scale and min of sub-block j of a Q4_K/Q5_K super-block (12 packed bytes).
void scale_min_k4(int j, const std::byte* q, uint8_t* d, uint8_t* m) {
  if (j < 4) {
    *d = u8(q + j) & 63;
    *m = u8(q + j + 4) & 63;
  } else {
    *d = uint8_t((u8(q + j + 4) & 0xF) | ((u8(q + j - 4) >> 6) << 4));
    *m = uint8_t((u8(q + j + 4) >> 4) | ((u8(q + j) >> 6) << 4));
  }
}

// d, dmin (f16), scales[12], qs[128]: eight sub-blocks of 32, x = (d * sc) * q - (dmin * m)
void q4_k(const std::byte* b, float* y) {
  const float d = half(b), min = half(b + 2);
  const std::byte* scales = b + 4;
  const std::byte* q = b + 16;
  int is = 0;
  uint8_t sc, m;
  for (int j = 0; j < kQKK; j += 64) {
    scale_min_k4(is + 0, scales, &sc, &m);
    const float d1 = d * float(sc), m1 = min * float(m);
    scale_min_k4(is + 1, scales, &sc, &m);
    const float d2 = d * float(sc), m2 = min * float(m);
    for (int l = 0; l < 32; ++l) *y++ = d1 * float(u8(q + l) & 0xF) - m1;
    for (int l = 0; l < 32; ++l) *y++ = d2 * float(u8(q + l) >> 4) - m2;
    q += 32;
    is += 2;
  }
}

// d, dmin (f16), scales[12], qh[32], qs[128]: as Q4_K with a fifth bit from qh
void q5_k(const std::byte* b, float* y) {
  const float d = half(b), min = half(b + 2);
  const std::byte* scales = b + 4;
  const std::byte* qh = b + 16;
  const std::byte* ql = b + 48;
  int is = 0;
  uint8_t sc, m;
  unsigned u1 = 1, u2 = 2;
  for (int j = 0; j < kQKK; j += 64) {
    scale_min_k4(is + 0, scales, &sc, &m);
    const float d1 = d * float(sc), m1 = min * float(m);
    scale_min_k4(is + 1, scales, &sc, &m);
    const float d2 = d * float(sc), m2 = min * float(m);
    for (int l = 0; l < 32; ++l) *y++ = d1 * float((u8(ql + l) & 0xF) + (u8(qh + l) & u1 ? 16 : 0)) - m1;
    for (int l = 0; l < 32; ++l) *y++ = d2 * float((u8(ql + l) >> 4) + (u8(qh + l) & u2 ? 16 : 0)) - m2;
    ql += 32;
    is += 2;
    u1 <<= 2;
    u2 <<= 2;
  }
}

// ql[128], qh[64], scales[16] (int8), d (f16): sixteen sub-blocks of 16, x = (d * sc) * (q - 32)
void q6_k(const std::byte* b, float* y) {
  const std::byte* ql = b;
  const std::byte* qh = b + kQKK / 2;
  const std::byte* sc = b + kQKK / 2 + kQKK / 4;
  const float d = half(b + kQKK / 2 + kQKK / 4 + kQKK / 16);
  for (int n = 0; n < kQKK; n += 128) {
    for (int l = 0; l < 32; ++l) {
      const int is = l / 16;
      const int q1 = int((u8(ql + l) & 0xF) | (((u8(qh + l) >> 0) & 3) << 4)) - 32;
      const int q2 = int((u8(ql + l + 32) & 0xF) | (((u8(qh + l) >> 2) & 3) << 4)) - 32;
      const int q3 = int((u8(ql + l) >> 4) | (((u8(qh + l) >> 4) & 3) << 4)) - 32;
      const int q4 = int((u8(ql + l + 32) >> 4) | (((u8(qh + l) >> 6) & 3) << 4)) - 32;
      y[l + 0] = d * float(int8_t(u8(sc + is + 0))) * float(q1);
      y[l + 32] = d * float(int8_t(u8(sc + is + 2))) * float(q2);
      y[l + 64] = d * float(int8_t(u8(sc + is + 4))) * float(q3);
      y[l + 96] = d * float(int8_t(u8(sc + is + 6))) * float(q4);
    }
    y += 128;
    ql += 64;
    qh += 32;
    sc += 8;
  }
}

using BlockFn = void (*)(const std::byte*, float*);

// Q4_1 and Q8_0 (the legacy formats llama.cpp's converters write most) on 16 lanes: the same float32
// conversion, product and sum as the per-block loops above (separate multiply and add, never fused), so
// the same bits. Only run after avx512_available() said yes.
#if defined(__x86_64__) && defined(__GNUC__)
#define FP4C_GGUF_AVX512 1
#define FP4C_AVX512_FN __attribute__((target("avx512f,avx512bw,avx512vl,avx512dq")))

bool avx512_available() {
  static const bool yes = [] {
    __builtin_cpu_init();
    return __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw") &&
           __builtin_cpu_supports("avx512vl") && __builtin_cpu_supports("avx512dq");
  }();
  return yes;
}

FP4C_AVX512_FN void q4_1_blocks_avx512(const std::byte* b, float* y, size_t blocks) {
  const __m512i low = _mm512_set1_epi32(0x0F);
  for (size_t i = 0; i < blocks; ++i, b += kQ4_1, y += kQK) {
    const __m512 d = _mm512_set1_ps(half(b)), m = _mm512_set1_ps(half(b + 2));
    const __m512i q = _mm512_cvtepu8_epi32(_mm_loadu_si128(reinterpret_cast<const __m128i*>(b + 4)));
    const __m512 x0 = _mm512_cvtepi32_ps(_mm512_and_si512(q, low));
    const __m512 x1 = _mm512_cvtepi32_ps(_mm512_srli_epi32(q, 4));
    _mm512_storeu_ps(y, _mm512_add_ps(_mm512_mul_ps(x0, d), m));
    _mm512_storeu_ps(y + kQK / 2, _mm512_add_ps(_mm512_mul_ps(x1, d), m));
  }
}

FP4C_AVX512_FN void q8_0_blocks_avx512(const std::byte* b, float* y, size_t blocks) {
  for (size_t i = 0; i < blocks; ++i, b += kQ8_0, y += kQK) {
    const __m512 d = _mm512_set1_ps(half(b));
    const __m512i q0 = _mm512_cvtepi8_epi32(_mm_loadu_si128(reinterpret_cast<const __m128i*>(b + 2)));
    const __m512i q1 = _mm512_cvtepi8_epi32(_mm_loadu_si128(reinterpret_cast<const __m128i*>(b + 18)));
    _mm512_storeu_ps(y, _mm512_mul_ps(_mm512_cvtepi32_ps(q0), d));
    _mm512_storeu_ps(y + kQK / 2, _mm512_mul_ps(_mm512_cvtepi32_ps(q1), d));
  }
}

// A run of blocks through the vectorized path, if this type and CPU have one.
bool blocks_avx512(TensorType t, const std::byte* b, float* y, size_t blocks) {
  if (!avx512_available()) return false;
  if (t == TensorType::Q4_1) q4_1_blocks_avx512(b, y, blocks);
  else if (t == TensorType::Q8_0) q8_0_blocks_avx512(b, y, blocks);
  else return false;
  return true;
}
#else
bool blocks_avx512(TensorType, const std::byte*, float*, size_t) { return false; }
#endif

BlockFn block_fn(TensorType t) {
  switch (t) {
    case TensorType::Q4_0: return q4_0;
    case TensorType::Q4_1: return q4_1;
    case TensorType::Q5_0: return q5_0;
    case TensorType::Q5_1: return q5_1;
    case TensorType::Q8_0: return q8_0;
    case TensorType::Q4_K: return q4_k;
    case TensorType::Q5_K: return q5_k;
    case TensorType::Q6_K: return q6_k;
    default: return nullptr;
  }
}

}  // namespace

bool is_block_quantized(TensorType t) { return block_fn(t) != nullptr; }

namespace {

Status dequantize_with(TensorType type, std::span<const std::byte> src, std::span<float> dst, bool vectorized) {
  const std::optional<TypeTraits> tr = type_traits(type);
  if (!tr || !tr->dequantizable)
    return make_error("GGUF tensor type " + (tr ? std::string(tr->name) : "id " + std::to_string(uint32_t(type))) +
                      " is not read by fp4c (it reads F32, F16, BF16, Q4_0, Q4_1, Q5_0, Q5_1, Q8_0, Q4_K, Q5_K, Q6_K)");
  if (dst.size() % tr->block_size != 0 || src.size() != dst.size() / tr->block_size * tr->type_size)
    return make_error("GGUF " + std::string(tr->name) + ": " + std::to_string(src.size()) + " bytes for " +
                      std::to_string(dst.size()) + " elements (blocks of " + std::to_string(tr->block_size) +
                      " elements take " + std::to_string(tr->type_size) + " bytes)");
  const size_t n = dst.size();
  switch (type) {
    case TensorType::F32:
      std::memcpy(dst.data(), src.data(), n * 4);
      return {};
    case TensorType::F16:
      for (size_t i = 0; i < n; ++i) dst[i] = half(src.data() + 2 * i);
      return {};
    case TensorType::BF16:
      for (size_t i = 0; i < n; ++i) {
        uint16_t b;
        std::memcpy(&b, src.data() + 2 * i, 2);
        dst[i] = bf16::to_float(b);
      }
      return {};
    default: break;
  }
  const BlockFn fn = block_fn(type);
  const size_t blocks = n / tr->block_size;
  if (vectorized) {  // each thread a contiguous run of blocks
    bool done = true;
#pragma omp parallel reduction(&& : done) if (blocks >= 4096)
    {
      const size_t parts = size_t(omp_get_num_threads()), part = size_t(omp_get_thread_num());
      const size_t begin = blocks * part / parts, end = blocks * (part + 1) / parts;
      done = blocks_avx512(type, src.data() + begin * tr->type_size, dst.data() + begin * tr->block_size,
                           end - begin);
    }
    if (done) return {};
  }
#pragma omp parallel for schedule(static) if (blocks >= 4096)
  for (size_t i = 0; i < blocks; ++i) fn(src.data() + i * tr->type_size, dst.data() + i * tr->block_size);
  return {};
}

}  // namespace

Status dequantize(TensorType type, std::span<const std::byte> src, std::span<float> dst) {
  return dequantize_with(type, src, dst, true);
}

Status dequantize_reference(TensorType type, std::span<const std::byte> src, std::span<float> dst) {
  return dequantize_with(type, src, dst, false);
}

}  // namespace fp4c::gguf
