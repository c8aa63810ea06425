// The fused-dequant NVFP4 product (nvfp4_matmul.h). The GEMV-style kernels walk K one block of 16 at a
// time: decode the block's 16 codes of NB weight rows (a table lookup of the E2M1 value, times the
// block's scale from a 256-entry table made once per weight), then multiply-add them into MB x NB
// accumulators, one per (x row, weight row) pair, reduced at the end in a fixed order.
//
// The tiled kernel decodes 128 weight rows at a time into a float tile and hands the product to
// oneDNN's f32 matmul (the same weight values, FP32 accumulation, its own summation order).
//
// Where the tiled kernel starts (kTiledMinRows) was chosen by measurement (bench/perf_cpu_bench.cpp, one
// thread, Xeon Sapphire Rapids with AVX-512): the AVX-512 GEMV kernel against the tiled one crosses
// over at about M = 40 for the stories260K shapes (K = 64: 64x64 at M = 64 takes 13.6 vs 9.7 us) and at
// about M = 100..128 for Qwen2.5-0.5B's (896x896 at M = 64: 1.12 vs 1.41 ms; at 128: 2.11 vs 2.00 ms);
// 64 is within 40% of the better one on both sides.
#include "runtime/nvfp4_matmul.h"

#include <omp.h>
#include <oneapi/dnnl/dnnl.hpp>

#include <algorithm>
#include <cstring>
#include <mutex>
#include <utility>

#include "formats/fp4.h"
#include "formats/fp8_e4m3.h"
#include "runtime/dnnl_engine.h"

#if defined(__x86_64__) && defined(__GNUC__)
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"
#pragma GCC diagnostic ignored "-Wuninitialized"
#include <immintrin.h>
#define FP4C_NVFP4_X86 1
#define FP4C_AVX512 __attribute__((target("avx512f,avx512bw,avx512vl,avx512dq")))
#define FP4C_AVX2 __attribute__((target("avx2,fma")))
#else
#define FP4C_NVFP4_X86 0
#endif

namespace fp4c::runtime {

namespace {

constexpr int64_t kBlock = 16;
constexpr int64_t kTiledMinRows = 64;   // see the file comment
constexpr int64_t kTileRows = 128;      // weight rows per decoded tile (128 x 4864 floats: 2.4 MB)
constexpr int64_t kRowsPerPass = 48;    // rows of x per pass over W in the GEMV kernels (a multiple of each MB: 6, 4)

constexpr float kE2m1[16] = {0.0f,  0.5f,  1.0f,  1.5f,  2.0f,  3.0f,  4.0f,  6.0f,
                             -0.0f, -0.5f, -1.0f, -1.5f, -2.0f, -3.0f, -4.0f, -6.0f};

}  // namespace

struct Nvfp4Matmul::Impl {
  int64_t out = 0, in = 0;
  PackedNvfp4 w;
  std::vector<float> bias;
  // G mode: e4m3(s) / G (the block's factor, exactly as dequantize computes it); weight_scale_2 mode:
  // e4m3(s), multiplied by the element first and by weight_scale_2 after.
  float scale_table[256];
  bool ws2 = false;
  float ws2_value = 1;
  // The tiled kernel's oneDNN primitives by (rows, tile rows).
  mutable std::mutex mutex;
  mutable std::vector<std::pair<std::pair<int64_t, int64_t>, dnnl::matmul>> primitives;
};

namespace {

using Impl = Nvfp4Matmul::Impl;

// ---------------------------------------------------------------------------------------------
// Scalar: MB rows of x by one weight row; each block decoded once into 16 floats.

template <int MB>
void tile_scalar(const Impl& w, const float* x, int64_t n0, int nb, float* y, int64_t ldy) {
  const int64_t K = w.in, nblocks = K / kBlock;
  for (int j = 0; j < nb; ++j) {
    const int64_t n = n0 + j;
    const uint8_t* codes = w.w.codes.data() + n * (K / 2);
    const uint8_t* scales = w.w.block_scales.data() + n * nblocks;
    float acc[MB] = {};
    for (int64_t b = 0; b < nblocks; ++b) {
      const float s = w.scale_table[scales[b]];
      float wv[kBlock];
      for (int i = 0; i < kBlock; i += 2) {
        const uint8_t byte = codes[b * 8 + i / 2];
        wv[i] = kE2m1[byte & 0xF] * s;
        wv[i + 1] = kE2m1[byte >> 4] * s;
      }
      if (w.ws2)
        for (float& v : wv) v *= w.ws2_value;
      for (int m = 0; m < MB; ++m) {
        const float* xr = x + m * K + b * kBlock;
        float a = acc[m];
        for (int i = 0; i < kBlock; ++i) a += xr[i] * wv[i];
        acc[m] = a;
      }
    }
    for (int m = 0; m < MB; ++m) y[m * ldy + j] = acc[m];
  }
}

#if FP4C_NVFP4_X86

// The 16 codes of one block (8 bytes) as 16 bytes, element i in byte i.
FP4C_AVX2 inline __m128i block_codes_avx2(const uint8_t* p) {
  uint64_t bits;
  std::memcpy(&bits, p, 8);
  const __m128i v16 = _mm_cvtepu8_epi16(_mm_cvtsi64_si128(int64_t(bits)));
  return _mm_or_si128(_mm_and_si128(v16, _mm_set1_epi16(0x0F)),
                      _mm_and_si128(_mm_slli_epi16(v16, 4), _mm_set1_epi16(0x0F00)));
}

// ---------------------------------------------------------------------------------------------
// AVX-512: MB (<= 6) rows of x by NB (<= 4) weight rows; 16 lanes = one block. A block's 8 code bytes
// are broadcast to every 64-bit lane and each 32-bit lane shifted to its code (the table lookup reads
// the low 4 bits only): lane 2j holds element j, lane 2j + 1 element 8 + j. x is permuted into that
// order once per call (interleave_blocks), so a block costs a broadcast load, a shift, a lookup and a
// multiply per weight row, and one multiply-add per (x row, weight row).

// x [rows, K] with each block of 16 reordered as e0 e8 e1 e9 ... e7 e15.
void interleave_blocks(const float* x, int64_t rows, int64_t K, float* out) {
#pragma omp parallel for schedule(static) if (rows * K >= (1 << 16))
  for (int64_t r = 0; r < rows; ++r)
    for (int64_t b = 0; b < K; b += kBlock)
      for (int j = 0; j < 8; ++j) {
        out[r * K + b + 2 * j] = x[r * K + b + j];
        out[r * K + b + 2 * j + 1] = x[r * K + b + 8 + j];
      }
}

// The four horizontal sums of a0..a3 at once, in a fixed order: pairs of lanes within each 128-bit
// quarter, then the quarters.
FP4C_AVX512 inline __m128 reduce4_avx512(__m512 a0, __m512 a1, __m512 a2, __m512 a3) {
  const __m512 v01 = _mm512_add_ps(_mm512_unpacklo_ps(a0, a1), _mm512_unpackhi_ps(a0, a1));  // a0 a1 a0 a1
  const __m512 v23 = _mm512_add_ps(_mm512_unpacklo_ps(a2, a3), _mm512_unpackhi_ps(a2, a3));
  const __m512 w = _mm512_add_ps(_mm512_shuffle_ps(v01, v23, 0x44), _mm512_shuffle_ps(v01, v23, 0xEE));  // a0 a1 a2 a3
  const __m256 h = _mm256_add_ps(_mm512_castps512_ps256(w), _mm512_extractf32x8_ps(w, 1));
  return _mm_add_ps(_mm256_castps256_ps128(h), _mm256_extractf128_ps(h, 1));
}

template <int MB, int NB>
FP4C_AVX512 void tile_avx512(const Impl& w, const float* x, int64_t n0, float* y, int64_t ldy) {
  const int64_t K = w.in, nblocks = K / kBlock;
  const __m512 lut = _mm512_loadu_ps(kE2m1);
  const __m512 ws2 = _mm512_set1_ps(w.ws2_value);
  const __m512i shifts = _mm512_setr_epi32(0, 0, 4, 4, 8, 8, 12, 12, 16, 16, 20, 20, 24, 24, 28, 28);
  const uint8_t* codes[NB];
  const uint8_t* scales[NB];
  #pragma GCC unroll 8
  for (int j = 0; j < NB; ++j) {
    codes[j] = w.w.codes.data() + (n0 + j) * (K / 2);
    scales[j] = w.w.block_scales.data() + (n0 + j) * nblocks;
  }
  __m512 acc[MB][NB];
  #pragma GCC unroll 8
  for (int m = 0; m < MB; ++m)
    #pragma GCC unroll 8
    for (int j = 0; j < NB; ++j) acc[m][j] = _mm512_setzero_ps();
  for (int64_t b = 0; b < nblocks; ++b) {
    __m512 wv[NB];
    #pragma GCC unroll 8
    for (int j = 0; j < NB; ++j) {
      long long packed8;
      std::memcpy(&packed8, codes[j] + b * 8, 8);
      const __m512i bits = _mm512_set1_epi64(packed8);
      const __m512 e = _mm512_permutexvar_ps(_mm512_srlv_epi32(bits, shifts), lut);
      wv[j] = _mm512_mul_ps(e, _mm512_set1_ps(w.scale_table[scales[j][b]]));
      if (w.ws2) wv[j] = _mm512_mul_ps(wv[j], ws2);
    }
    #pragma GCC unroll 8
    for (int m = 0; m < MB; ++m) {
      const __m512 xv = _mm512_loadu_ps(x + m * K + b * kBlock);
      #pragma GCC unroll 8
      for (int j = 0; j < NB; ++j) acc[m][j] = _mm512_fmadd_ps(xv, wv[j], acc[m][j]);
    }
  }
  #pragma GCC unroll 8
  for (int m = 0; m < MB; ++m) {
    const __m512 zero = _mm512_setzero_ps();
    const __m128 sums = reduce4_avx512(acc[m][0], NB > 1 ? acc[m][NB > 1 ? 1 : 0] : zero,
                                       NB > 2 ? acc[m][NB > 2 ? 2 : 0] : zero, NB > 3 ? acc[m][NB > 3 ? 3 : 0] : zero);
    alignas(16) float out[4];
    _mm_store_ps(out, sums);
    #pragma GCC unroll 8
    for (int j = 0; j < NB; ++j) y[m * ldy + j] = out[j];
  }
}

// ---------------------------------------------------------------------------------------------
// AVX2: MB (<= 4) rows of x by NB (<= 2) weight rows; a block is two 8-lane halves.

FP4C_AVX2 inline __m256 decode8_avx2(__m128i codes8, __m256 lut_mag, __m256 scale) {
  const __m256i idx = _mm256_cvtepu8_epi32(codes8);
  const __m256 mag = _mm256_permutevar8x32_ps(lut_mag, idx);  // uses the low 3 bits
  const __m256i sign = _mm256_slli_epi32(_mm256_and_si256(idx, _mm256_set1_epi32(8)), 28);
  return _mm256_mul_ps(_mm256_xor_ps(mag, _mm256_castsi256_ps(sign)), scale);
}

// Horizontal sum of 8 lanes in a fixed order.
FP4C_AVX2 inline float reduce_add_avx2(__m256 v) {
  const __m128 s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
  const __m128 t = _mm_add_ps(s, _mm_movehl_ps(s, s));
  return _mm_cvtss_f32(_mm_add_ss(t, _mm_movehdup_ps(t)));
}

template <int MB, int NB>
FP4C_AVX2 void tile_avx2(const Impl& w, const float* x, int64_t n0, float* y, int64_t ldy) {
  const int64_t K = w.in, nblocks = K / kBlock;
  const __m256 lut = _mm256_loadu_ps(kE2m1);
  const __m256 ws2 = _mm256_set1_ps(w.ws2_value);
  const uint8_t* codes[NB];
  const uint8_t* scales[NB];
  #pragma GCC unroll 8
  for (int j = 0; j < NB; ++j) {
    codes[j] = w.w.codes.data() + (n0 + j) * (K / 2);
    scales[j] = w.w.block_scales.data() + (n0 + j) * nblocks;
  }
  __m256 acc[MB][NB];
  #pragma GCC unroll 8
  for (int m = 0; m < MB; ++m)
    #pragma GCC unroll 8
    for (int j = 0; j < NB; ++j) acc[m][j] = _mm256_setzero_ps();
  for (int64_t b = 0; b < nblocks; ++b) {
    __m128i c[NB];
    __m256 s[NB];
    #pragma GCC unroll 8
    for (int j = 0; j < NB; ++j) {
      c[j] = block_codes_avx2(codes[j] + b * 8);
      s[j] = _mm256_set1_ps(w.scale_table[scales[j][b]]);
    }
    #pragma GCC unroll 8
    for (int half = 0; half < 2; ++half) {
      __m256 wv[NB];
      #pragma GCC unroll 8
      for (int j = 0; j < NB; ++j) {
        wv[j] = decode8_avx2(half ? _mm_srli_si128(c[j], 8) : c[j], lut, s[j]);
        if (w.ws2) wv[j] = _mm256_mul_ps(wv[j], ws2);
      }
      #pragma GCC unroll 8
      for (int m = 0; m < MB; ++m) {
        const __m256 xv = _mm256_loadu_ps(x + m * K + b * kBlock + half * 8);
        #pragma GCC unroll 8
        for (int j = 0; j < NB; ++j) acc[m][j] = _mm256_fmadd_ps(xv, wv[j], acc[m][j]);
      }
    }
  }
  #pragma GCC unroll 8
  for (int m = 0; m < MB; ++m)
    #pragma GCC unroll 8
    for (int j = 0; j < NB; ++j) y[m * ldy + j] = reduce_add_avx2(acc[m][j]);
}

#endif  // FP4C_NVFP4_X86

// A tile function: rows of x at x (stride K), weight rows [n0, n0 + NB), outputs at y (stride ldy).
using TileFn = void (*)(const Impl&, const float*, int64_t, float*, int64_t);

template <template <int, int> class Table, int MB, int NB>
struct TileTable {
  // fns[mb - 1][nb - 1]
  static void fill(TileFn (&fns)[MB][NB]) {
    fill_m<MB>(fns);
  }
  template <int M>
  static void fill_m(TileFn (&fns)[MB][NB]) {
    if constexpr (M > 0) {
      fill_n<M, NB>(fns);
      fill_m<M - 1>(fns);
    }
  }
  template <int M, int N>
  static void fill_n(TileFn (&fns)[MB][NB]) {
    if constexpr (N > 0) {
      fns[M - 1][N - 1] = &Table<M, N>::run;
      fill_n<M, N - 1>(fns);
    }
  }
};

template <int M, int N>
struct ScalarTile {
  static void run(const Impl& w, const float* x, int64_t n0, float* y, int64_t ldy) {
    tile_scalar<M>(w, x, n0, N, y, ldy);
  }
};
#if FP4C_NVFP4_X86
template <int M, int N>
struct Avx512Tile {
  static void run(const Impl& w, const float* x, int64_t n0, float* y, int64_t ldy) {
    tile_avx512<M, N>(w, x, n0, y, ldy);
  }
};
template <int M, int N>
struct Avx2Tile {
  static void run(const Impl& w, const float* x, int64_t n0, float* y, int64_t ldy) { tile_avx2<M, N>(w, x, n0, y, ldy); }
};
#endif

// The GEMV driver: passes of kRowsPerPass rows of x (kept in cache), each split over threads by tiles
// of NB weight rows; each tile walks its rows of x MB at a time.
template <int MB, int NB>
void gemv(const Impl& w, const TileFn (&fns)[MB][NB], const float* x, int64_t M, float* y) {
  const int64_t N = w.out, K = w.in;
  const int64_t ntiles = (N + NB - 1) / NB;
  const bool parallel = M * N * K >= (int64_t(1) << 15);
  for (int64_t p0 = 0; p0 < M; p0 += kRowsPerPass) {
    const int64_t pm = std::min(kRowsPerPass, M - p0);
#pragma omp parallel for schedule(static) if (parallel)
    for (int64_t t = 0; t < ntiles; ++t) {
      const int64_t n0 = t * NB;
      const int nb = int(std::min<int64_t>(NB, N - n0));
      for (int64_t m0 = p0; m0 < p0 + pm; m0 += MB) {
        const int mb = int(std::min<int64_t>(MB, p0 + pm - m0));
        fns[mb - 1][nb - 1](w, x + m0 * K, n0, y + m0 * N + n0, N);
      }
    }
  }
}

void add_bias(const Impl& w, int64_t M, float* y) {
  if (w.bias.empty()) return;
  const int64_t N = w.out;
#pragma omp parallel for schedule(static) if (M * N >= (1 << 16))
  for (int64_t m = 0; m < M; ++m)
    for (int64_t n = 0; n < N; ++n) y[m * N + n] += w.bias[size_t(n)];
}

bool cpu_has_avx512() {
#if FP4C_NVFP4_X86
  static const bool yes = [] {
    __builtin_cpu_init();
    return __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw") &&
           __builtin_cpu_supports("avx512vl") && __builtin_cpu_supports("avx512dq");
  }();
  return yes;
#else
  return false;
#endif
}

bool cpu_has_avx2() {
#if FP4C_NVFP4_X86
  static const bool yes = [] {
    __builtin_cpu_init();
    return __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma");
  }();
  return yes;
#else
  return false;
#endif
}

// Row r of W as floats: e2m1 * (e4m3 / G), or (e2m1 * e4m3) * weight_scale_2, as ArtifactReader::dequantize.
void decode_row(const Impl& w, int64_t r, float* dst) {
  const int64_t K = w.in, nblocks = K / kBlock;
  const uint8_t* codes = w.w.codes.data() + r * (K / 2);
  const uint8_t* scales = w.w.block_scales.data() + r * nblocks;
  for (int64_t b = 0; b < nblocks; ++b) {
    const float s = w.scale_table[scales[b]];
    float* d = dst + b * kBlock;
    for (int i = 0; i < kBlock; i += 2) {
      const uint8_t byte = codes[b * 8 + i / 2];
      d[i] = kE2m1[byte & 0xF] * s;
      d[i + 1] = kE2m1[byte >> 4] * s;
    }
    if (w.ws2)
      for (int i = 0; i < kBlock; ++i) d[i] *= w.ws2_value;
  }
}

Status run_tiled(const Impl& w, const float* x, int64_t M, float* y) {
  using dnnl::memory;
  using dt = memory::data_type;
  using tag = memory::format_tag;
  const int64_t N = w.out, K = w.in;
  const int64_t tile_rows = std::min(kTileRows, N);
  std::vector<float> tile(size_t(tile_rows * K));
  try {
    const dnnl::engine& eng = cpu_engine();
    dnnl::stream strm(eng);
    for (int64_t n0 = 0; n0 < N; n0 += tile_rows) {
      const int64_t nt = std::min(tile_rows, N - n0);
#pragma omp parallel for schedule(static) if (nt * K >= (1 << 15))
      for (int64_t r = 0; r < nt; ++r) {
        decode_row(w, n0 + r, tile.data() + r * K);
      }
      const dnnl::matmul* prim = nullptr;
      {
        std::lock_guard lock(w.mutex);
        for (const auto& [key, p] : w.primitives)
          if (key == std::make_pair(M, nt)) prim = &p;
        if (!prim) {
          const memory::desc src({M, K}, dt::f32, tag::ab);
          const memory::desc wei({K, nt}, dt::f32, tag::ba);
          const memory::desc dst({M, nt}, dt::f32, memory::dims{N, 1});
          w.primitives.emplace_back(std::make_pair(M, nt),
                                    dnnl::matmul(dnnl::matmul::primitive_desc(dnnl::matmul::desc(src, wei, dst), eng)));
          prim = &w.primitives.back().second;
        }
      }
      memory src(memory::desc({M, K}, dt::f32, tag::ab), eng, const_cast<float*>(x));
      memory wei(memory::desc({K, nt}, dt::f32, tag::ba), eng, tile.data());
      memory dst(memory::desc({M, nt}, dt::f32, memory::dims{N, 1}), eng, y + n0);
      prim->execute(strm, {{DNNL_ARG_SRC, src}, {DNNL_ARG_WEIGHTS, wei}, {DNNL_ARG_DST, dst}});
      strm.wait();
    }
  } catch (const dnnl::error& e) {
    return make_error(std::string("nvfp4 matmul (tiled): oneDNN: ") + e.what());
  }
  return {};
}

}  // namespace

const char* to_string(Nvfp4Kernel kernel) {
  switch (kernel) {
    case Nvfp4Kernel::Auto: return "auto";
    case Nvfp4Kernel::Avx512: return "avx512";
    case Nvfp4Kernel::Avx2: return "avx2";
    case Nvfp4Kernel::Scalar: return "scalar";
    case Nvfp4Kernel::Tiled: return "tiled-onednn-f32";
  }
  return "?";
}

bool nvfp4_kernel_available(Nvfp4Kernel kernel) {
  switch (kernel) {
    case Nvfp4Kernel::Avx512: return cpu_has_avx512();
    case Nvfp4Kernel::Avx2: return cpu_has_avx2();
    default: return true;
  }
}

Nvfp4Kernel nvfp4_best_gemv_kernel() {
  if (cpu_has_avx512()) return Nvfp4Kernel::Avx512;
  if (cpu_has_avx2()) return Nvfp4Kernel::Avx2;
  return Nvfp4Kernel::Scalar;
}

int64_t nvfp4_tiled_min_rows() { return kTiledMinRows; }

Nvfp4Matmul::Nvfp4Matmul(std::unique_ptr<Impl> impl) : impl_(std::move(impl)) {}
Nvfp4Matmul::Nvfp4Matmul(Nvfp4Matmul&&) noexcept = default;
Nvfp4Matmul& Nvfp4Matmul::operator=(Nvfp4Matmul&&) noexcept = default;
Nvfp4Matmul::~Nvfp4Matmul() = default;

int64_t Nvfp4Matmul::out() const { return impl_->out; }
int64_t Nvfp4Matmul::in() const { return impl_->in; }
uint64_t Nvfp4Matmul::bytes() const {
  return impl_->w.codes.size() + impl_->w.block_scales.size() + sizeof(impl_->scale_table) +
         impl_->bias.size() * sizeof(float);
}

Expected<Nvfp4Matmul> Nvfp4Matmul::create(PackedNvfp4 weight, int64_t out, int64_t in, std::vector<float> bias,
                                          const std::string& what) {
  const std::string shape = "[" + std::to_string(out) + ", " + std::to_string(in) + "]";
  if (out <= 0 || in <= 0 || in % kBlock != 0)
    return make_error(what + ": NVFP4 weight shape " + shape + " needs positive sizes and in % 16 == 0");
  if (int64_t(weight.codes.size()) != out * in / 2)
    return make_error(what + ": " + std::to_string(weight.codes.size()) + " packed code bytes for shape " + shape +
                      ", expected " + std::to_string(out * in / 2));
  if (int64_t(weight.block_scales.size()) != out * in / kBlock)
    return make_error(what + ": " + std::to_string(weight.block_scales.size()) + " block scales for shape " + shape +
                      ", expected " + std::to_string(out * in / kBlock));
  if (!bias.empty() && int64_t(bias.size()) != out)
    return make_error(what + ": " + std::to_string(bias.size()) + " biases for " + std::to_string(out) + " outputs");
  auto impl = std::make_unique<Impl>();
  impl->out = out;
  impl->in = in;
  impl->ws2 = weight.weight_scale_2.has_value();
  impl->ws2_value = weight.weight_scale_2.value_or(1.0f);
  for (int s = 0; s < 256; ++s) {
    const float v = fp8_e4m3::decode(uint8_t(s));
    impl->scale_table[s] = impl->ws2 ? v : v / weight.global_scale;
  }
  impl->w = std::move(weight);
  impl->bias = std::move(bias);
  return Nvfp4Matmul(std::move(impl));
}

Status Nvfp4Matmul::run(const float* x, int64_t rows, float* y, Nvfp4Kernel kernel) const {
  if (rows <= 0) return {};
  const Impl& w = *impl_;
  if (kernel == Nvfp4Kernel::Auto)
    kernel = rows >= kTiledMinRows ? Nvfp4Kernel::Tiled : nvfp4_best_gemv_kernel();
  if (!nvfp4_kernel_available(kernel))
    return make_error(std::string("nvfp4 matmul: the ") + to_string(kernel) + " kernel needs CPU features this CPU lacks");
  switch (kernel) {
    case Nvfp4Kernel::Tiled: {
      FP4C_TRY(run_tiled(w, x, rows, y));
      break;
    }
#if FP4C_NVFP4_X86
    case Nvfp4Kernel::Avx512: {
      static const auto fns = [] {
        struct T { TileFn f[6][4]; } t;
        TileTable<Avx512Tile, 6, 4>::fill(t.f);
        return t;
      }();
      std::vector<float> xi(size_t(rows * w.in));
      interleave_blocks(x, rows, w.in, xi.data());
      gemv<6, 4>(w, fns.f, xi.data(), rows, y);
      break;
    }
    case Nvfp4Kernel::Avx2: {
      static const auto fns = [] {
        struct T { TileFn f[4][2]; } t;
        TileTable<Avx2Tile, 4, 2>::fill(t.f);
        return t;
      }();
      gemv<4, 2>(w, fns.f, x, rows, y);
      break;
    }
#endif
    default: {
      static const auto fns = [] {
        struct T { TileFn f[4][1]; } t;
        TileTable<ScalarTile, 4, 1>::fill(t.f);
        return t;
      }();
      gemv<4, 1>(w, fns.f, x, rows, y);
      break;
    }
  }
  add_bias(w, rows, y);
  return {};
}

}  // namespace fp4c::runtime
