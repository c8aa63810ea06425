// NVFP4 (NVFP4.md §3): golden vectors from the spec, the policies for zero, tiny, NaN and Inf blocks,
// and the fast quantizer against the reference, byte for byte, on exhaustive sweeps and on random
// data with a fresh seed each run (printed on failure), with 1 and 2 OpenMP threads.
#include "formats/nvfp4.h"

#include <gtest/gtest.h>
#include <omp.h>

#include <algorithm>
#include <bit>
#include <cmath>
#include <cstdint>
#include <functional>
#include <iomanip>
#include <limits>
#include <random>
#include <string>
#include <vector>

#include "formats/bf16.h"
#include "formats/fp4.h"
#include "formats/fp8_e4m3.h"

namespace fp4c {
namespace {

using nvfp4::ErrorStats;
using nvfp4::ZeroScale;

constexpr float kInf = std::numeric_limits<float>::infinity();
constexpr float kNaN = std::numeric_limits<float>::quiet_NaN();
constexpr uint8_t kGuard = 0xA5;
constexpr size_t kGuardBytes = 64;

enum class Impl { RefBf16, RefF32, Fast, Portable };
const char* name(Impl impl) {
  switch (impl) {
    case Impl::RefBf16: return "quantize_bf16_ref";
    case Impl::RefF32: return "quantize_f32_ref";
    case Impl::Fast: return "quantize_bf16";
    case Impl::Portable: return "quantize_bf16_portable";
  }
  return "?";
}
constexpr Impl kAllImpls[] = {Impl::RefBf16, Impl::RefF32, Impl::Fast, Impl::Portable};

struct Quantized {
  std::vector<uint8_t> packed, scales;
  ErrorStats err;
};

std::vector<uint16_t> to_bf16(const std::vector<float>& v) {
  std::vector<uint16_t> out(v.size());
  for (size_t i = 0; i < v.size(); ++i) out[i] = bf16::from_float(v[i]);
  return out;
}

// Runs `fn` with `n` OpenMP threads, then restores the previous setting.
void with_threads(int n, const std::function<void()>& fn) {
  const int before = omp_get_max_threads();
  omp_set_num_threads(n);
  fn();
  omp_set_num_threads(before);
}

// Quantizes into buffers followed by guard bytes, and checks that the guards survive.
Quantized quantize(Impl impl, const std::vector<uint16_t>& x, int64_t rows, int64_t cols, float G,
                   ZeroScale zero = ZeroScale::CompressedTensors) {
  const size_t np = size_t(rows * cols / 2), ns = size_t(rows * cols / nvfp4::kBlock);
  Quantized q;
  q.packed.assign(np + kGuardBytes, kGuard);
  q.scales.assign(ns + kGuardBytes, kGuard);
  switch (impl) {
    case Impl::RefBf16:
      nvfp4::quantize_bf16_ref(x.data(), rows, cols, G, q.packed.data(), q.scales.data(), zero, &q.err);
      break;
    case Impl::RefF32: {
      std::vector<float> xf(x.size());
      for (size_t i = 0; i < x.size(); ++i) xf[i] = bf16::to_float(x[i]);
      nvfp4::quantize_f32_ref(xf.data(), rows, cols, G, q.packed.data(), q.scales.data(), zero, &q.err);
      break;
    }
    case Impl::Fast:
      nvfp4::quantize_bf16(x.data(), rows, cols, G, q.packed.data(), q.scales.data(), zero, &q.err);
      break;
    case Impl::Portable:
      nvfp4::quantize_bf16_portable(x.data(), rows, cols, G, q.packed.data(), q.scales.data(), zero,
                                    &q.err);
      break;
  }
  for (size_t i = np; i < q.packed.size(); ++i) EXPECT_EQ(q.packed[i], kGuard) << name(impl) << " wrote past packed";
  for (size_t i = ns; i < q.scales.size(); ++i) EXPECT_EQ(q.scales[i], kGuard) << name(impl) << " wrote past scales";
  q.packed.resize(np);
  q.scales.resize(ns);
  return q;
}

testing::AssertionResult same_bytes(const char* what, const std::vector<uint8_t>& want,
                                    const std::vector<uint8_t>& got, int64_t per_row) {
  if (want.size() != got.size()) return testing::AssertionFailure() << what << ": sizes differ";
  for (size_t i = 0; i < want.size(); ++i) {
    if (want[i] != got[i]) {
      return testing::AssertionFailure()
             << what << " differ first at byte " << i << " (row " << int64_t(i) / per_row
             << ", byte " << int64_t(i) % per_row << "): want 0x" << std::hex << int(want[i])
             << ", got 0x" << int(got[i]);
    }
  }
  return testing::AssertionSuccess();
}

bool close(double a, double b, double rel) {
  if (std::isnan(a) || std::isnan(b)) return std::isnan(a) && std::isnan(b);
  if (a == b) return true;  // Inf included
  return std::fabs(a - b) <= rel * std::max(std::fabs(a), std::fabs(b));
}

testing::AssertionResult close_stats(const ErrorStats& want, const ErrorStats& got, double rel) {
  const bool max_same = want.max_abs_err == got.max_abs_err ||
                        (std::isnan(want.max_abs_err) && std::isnan(got.max_abs_err));
  if (close(want.sum_sq_err, got.sum_sq_err, rel) && close(want.sum_sq_ref, got.sum_sq_ref, rel) &&
      max_same && want.count == got.count) {
    return testing::AssertionSuccess();
  }
  return testing::AssertionFailure()
         << std::setprecision(17) << "want {err " << want.sum_sq_err << ", ref " << want.sum_sq_ref
         << ", max " << want.max_abs_err << ", n " << want.count << "}, got {err " << got.sum_sq_err
         << ", ref " << got.sum_sq_ref << ", max " << got.max_abs_err << ", n " << got.count << "}";
}

// The same bits, except that any NaN equals any NaN (payloads depend on the order of operations).
bool bitwise_equal(const ErrorStats& a, const ErrorStats& b) {
  auto same = [](double x, double y) {
    return (std::isnan(x) && std::isnan(y)) || std::bit_cast<uint64_t>(x) == std::bit_cast<uint64_t>(y);
  };
  return same(a.sum_sq_err, b.sum_sq_err) && same(a.sum_sq_ref, b.sum_sq_ref) &&
         same(a.max_abs_err, b.max_abs_err) && a.count == b.count;
}

// Every implementation, with 1 and 2 threads for the fast one, gives the reference's bytes; the
// fast one's error figures match within double rounding and do not depend on the thread count.
void expect_all_agree(const std::vector<uint16_t>& x, int64_t rows, int64_t cols, float G,
                      ZeroScale zero = ZeroScale::CompressedTensors) {
  SCOPED_TRACE(testing::Message() << rows << "x" << cols << ", G " << std::setprecision(9) << G);
  const Quantized ref = quantize(Impl::RefBf16, x, rows, cols, G, zero);
  const Quantized ref32 = quantize(Impl::RefF32, x, rows, cols, G, zero);
  EXPECT_TRUE(same_bytes("f32 ref packed", ref.packed, ref32.packed, cols / 2));
  EXPECT_TRUE(same_bytes("f32 ref scales", ref.scales, ref32.scales, cols / 16));
  EXPECT_TRUE(bitwise_equal(ref.err, ref32.err));
  for (Impl impl : {Impl::Fast, Impl::Portable}) {
    SCOPED_TRACE(name(impl));
    Quantized fast[2];
    for (int t = 1; t <= 2; ++t) {
      SCOPED_TRACE(testing::Message() << t << " thread(s)");
      with_threads(t, [&] { fast[t - 1] = quantize(impl, x, rows, cols, G, zero); });
      EXPECT_TRUE(same_bytes("packed", ref.packed, fast[t - 1].packed, cols / 2));
      EXPECT_TRUE(same_bytes("scales", ref.scales, fast[t - 1].scales, cols / 16));
      EXPECT_TRUE(close_stats(ref.err, fast[t - 1].err, 1e-9));
    }
    EXPECT_TRUE(bitwise_equal(fast[0].err, fast[1].err)) << "error figures depend on the thread count";
    if (impl == Impl::Portable) {
      // Same arithmetic in the same order (within a row, then rows in order): the same bits.
      EXPECT_TRUE(bitwise_equal(ref.err, fast[1].err)) << close_stats(ref.err, fast[1].err, 0.0).message();
    }
  }
}

void expect_all_agree_f(const std::vector<float>& x, int64_t rows, int64_t cols, float G,
                        ZeroScale zero = ZeroScale::CompressedTensors) {
  expect_all_agree(to_bf16(x), rows, cols, G, zero);
}

// ---------------------------------------------------------------------------------------------
// Global scale, amax, non-finite count, SQNR.

TEST(Nvfp4GlobalScale, FollowsTheSpec) {
  EXPECT_EQ(nvfp4::global_scale(6.0f), 448.0f);
  EXPECT_EQ(nvfp4::global_scale(2688.0f), 1.0f);
  EXPECT_EQ(nvfp4::global_scale(0.0f), 1.0f);
  EXPECT_EQ(nvfp4::global_scale(-0.0f), 1.0f);
  EXPECT_EQ(nvfp4::global_scale(kInf), 1.0f);
  EXPECT_EQ(nvfp4::global_scale(kNaN), 1.0f);
  EXPECT_EQ(nvfp4::global_scale(-3.0f), 1.0f);
  EXPECT_EQ(nvfp4::global_scale(1e-38f), std::numeric_limits<float>::max()) << "overflow stays finite";
  for (float a : {0.37f, 1.0f, 3.3e-3f, 17.25f, 1e4f}) {
    const float want = 2688.0f / a;  // float32, one rounding
    EXPECT_EQ(nvfp4::global_scale(a), want) << a;
  }
}

TEST(Nvfp4Amax, SmallCases) {
  const std::vector<float> v = {0.5f, -3.0f, 2.0f, -0.0f};
  EXPECT_EQ(nvfp4::amax_bf16(to_bf16(v)), 3.0f);
  EXPECT_EQ(nvfp4::amax_f32(v), 3.0f);
  EXPECT_EQ(nvfp4::amax_bf16({}), 0.0f);
  EXPECT_EQ(nvfp4::amax_f32({}), 0.0f);
  EXPECT_EQ(nvfp4::amax_f32(std::vector<float>{-0.0f}), 0.0f);
  EXPECT_FALSE(std::signbit(nvfp4::amax_f32(std::vector<float>{-0.0f})));
  const std::vector<float> with_inf = {1.0f, -kInf, 2.0f};
  EXPECT_EQ(nvfp4::amax_bf16(to_bf16(with_inf)), kInf);
  EXPECT_EQ(nvfp4::amax_f32(with_inf), kInf);
  for (float nan : {kNaN, -kNaN}) {
    const std::vector<float> with_nan = {1.0f, nan, -kInf, 2.0f};
    EXPECT_TRUE(std::isnan(nvfp4::amax_bf16(to_bf16(with_nan))));
    EXPECT_TRUE(std::isnan(nvfp4::amax_f32(with_nan)));
  }
}

TEST(Nvfp4Amax, LargeInputsWithPlantedValues) {
  const uint32_t seed = std::random_device{}();
  SCOPED_TRACE(testing::Message() << "seed " << seed);
  std::mt19937_64 rng(seed);
  const size_t n = (size_t(1) << 21) + 77;  // above the size where it goes parallel
  std::vector<float> f(n);
  std::normal_distribution<float> normal(0.0f, 1.0f);
  for (float& v : f) v = bf16::to_float(bf16::from_float(normal(rng)));
  const size_t at = rng() % n;
  f[at] = -1000.0f;
  std::vector<uint16_t> b = to_bf16(f);
  for (int t = 1; t <= 2; ++t) {
    with_threads(t, [&] {
      EXPECT_EQ(nvfp4::amax_bf16(b), 1000.0f);
      EXPECT_EQ(nvfp4::amax_f32(f), 1000.0f);
      EXPECT_EQ(nvfp4::count_nonfinite_bf16(b), 0);
    });
  }
  f[rng() % n] = kInf;
  f[rng() % n] = kNaN;
  b = to_bf16(f);
  with_threads(2, [&] {
    EXPECT_TRUE(std::isnan(nvfp4::amax_bf16(b)));
    EXPECT_TRUE(std::isnan(nvfp4::amax_f32(f)));
  });
}

// The vectorized amax and non-finite count against the obvious loop, on every length up to 200 (each
// tail of the 64- and 16-lane loops) and at random offsets, with random specials planted.
TEST(Nvfp4Amax, AgreesWithTheLoopOnEveryTail) {
  const uint32_t seed = std::random_device{}();
  SCOPED_TRACE(testing::Message() << "seed " << seed);
  std::mt19937_64 rng(seed);
  std::normal_distribution<float> normal(0.0f, 3.0f);
  std::vector<float> base(4096 + 16);
  for (float& v : base) v = normal(rng);
  const float specials[] = {kInf, -kInf, kNaN, -kNaN, 1e-40f, -3e38f};
  for (int64_t n = 0; n <= 200; ++n) {
    for (int trial = 0; trial < 3; ++trial) {
      std::vector<float> x(base.begin() + long(rng() % 16), base.begin() + long(rng() % 16) + n + 16);
      x.resize(size_t(n));
      if (n > 0 && trial > 0) x[rng() % size_t(n)] = specials[rng() % std::size(specials)];
      uint32_t want_bits = 0;
      int64_t want_count = 0;
      for (float v : x) {
        want_bits = std::max(want_bits, std::bit_cast<uint32_t>(v) & 0x7FFFFFFFu);
        want_count += !std::isfinite(v);
      }
      EXPECT_EQ(std::bit_cast<uint32_t>(nvfp4::amax_f32(x)), want_bits) << "n " << n;
      EXPECT_EQ(nvfp4::count_nonfinite_f32(x), want_count) << "n " << n;
    }
  }
}

TEST(Nvfp4Amax, CountNonfinite) {
  const std::vector<float> v = {1.0f, kNaN, -kInf, kInf, -kNaN, 3e38f, -0.0f, 1e-40f};
  EXPECT_EQ(nvfp4::count_nonfinite_bf16(to_bf16(v)), 4);
  // Every BF16 pattern: the count equals the number of non-finite values.
  std::vector<uint16_t> all(0x10000);
  int64_t want = 0;
  for (uint32_t i = 0; i < all.size(); ++i) {
    all[i] = uint16_t(i);
    want += !std::isfinite(bf16::to_float(uint16_t(i)));
  }
  EXPECT_EQ(nvfp4::count_nonfinite_bf16(all), want);
  EXPECT_EQ(want, 2 * 128);
}

TEST(Nvfp4ErrorStats, SqnrAndRelativeMse) {
  ErrorStats e;
  e.sum_sq_err = 1.0;
  e.sum_sq_ref = 100.0;
  EXPECT_DOUBLE_EQ(e.sqnr_db(), 20.0);
  EXPECT_DOUBLE_EQ(e.relative_mse(), 0.01);
  e.sum_sq_err = 0.0;
  EXPECT_EQ(e.sqnr_db(), std::numeric_limits<double>::infinity());
  e.sum_sq_ref = 0.0;
  EXPECT_EQ(e.relative_mse(), 0.0);
  EXPECT_EQ(e.sqnr_db(), std::numeric_limits<double>::infinity());
}

// ---------------------------------------------------------------------------------------------
// Golden vectors and block policies.

TEST(Nvfp4Golden, TorchaoPackingVector) {
  // [[0, 0.5, 4, -0], [-0, 1, -6, 3]] -> [[0x10, 0x86], [0x28, 0x5F]]; padded to a block with a 6 so
  // that G = 448 gives s = 448 and s / G = 1 (the values are quantized as they are).
  std::vector<float> x(32, 0.0f);
  const float r0[4] = {0.0f, 0.5f, 4.0f, -0.0f}, r1[4] = {-0.0f, 1.0f, -6.0f, 3.0f};
  std::copy(r0, r0 + 4, x.begin());
  x[15] = 6.0f;
  std::copy(r1, r1 + 4, x.begin() + 16);
  const float G = nvfp4::global_scale(nvfp4::amax_f32(x));
  ASSERT_EQ(G, 448.0f);
  const std::vector<uint8_t> want_packed = {0x10, 0x86, 0, 0, 0, 0, 0, 0x70,
                                            0x28, 0x5F, 0, 0, 0, 0, 0, 0};
  for (Impl impl : kAllImpls) {
    SCOPED_TRACE(name(impl));
    const Quantized q = quantize(impl, to_bf16(x), 2, 16, G);
    EXPECT_TRUE(same_bytes("packed", want_packed, q.packed, 8));
    EXPECT_TRUE(same_bytes("scales", {0x7E, 0x7E}, q.scales, 1));
  }
}

TEST(Nvfp4Golden, WorkedExampleOfTheSpec) {
  const std::vector<float> x = {0, .25, .5, .75, 1, 1.25, 1.5, 1.75, 2, 2.5, 3, 3.5, 4, 5, 6, -6,
                                -3, -.1, .3, .6, .9, 1.1, 1.3, 1.8, -2.2, 2.7, -1.5, 0, .2, -.2, 1, 2};
  const std::vector<uint8_t> want_packed = {0x00, 0x21, 0x22, 0x43, 0x44, 0x65, 0x66, 0xF7,
                                            0x8F, 0x21, 0x44, 0x65, 0x7E, 0x0D, 0x91, 0x64};
  const std::vector<uint8_t> want_scales = {0x7E, 0x76};
  const float G = nvfp4::global_scale(nvfp4::amax_f32(x));
  ASSERT_EQ(G, 448.0f);
  // The float32 reference on the exact inputs...
  Quantized q;
  q.packed.resize(16);
  q.scales.resize(2);
  nvfp4::quantize_f32_ref(x.data(), 1, 32, G, q.packed.data(), q.scales.data());
  EXPECT_TRUE(same_bytes("packed", want_packed, q.packed, 16));
  EXPECT_TRUE(same_bytes("scales", want_scales, q.scales, 2));
  // ...and every implementation on their BF16 roundings (none of them is near a threshold).
  for (Impl impl : kAllImpls) {
    SCOPED_TRACE(name(impl));
    q = quantize(impl, to_bf16(x), 1, 32, G);
    EXPECT_TRUE(same_bytes("packed", want_packed, q.packed, 16));
    EXPECT_TRUE(same_bytes("scales", want_scales, q.scales, 2));
  }
}

TEST(Nvfp4Blocks, ZeroBlocksGetThePolicyScale) {
  // Block 0 all +0, block 1 all -0, block 2 ordinary.
  std::vector<float> x(48, 0.0f);
  for (int i = 16; i < 32; ++i) x[i] = -0.0f;
  for (int i = 32; i < 48; ++i) x[i] = float(i - 40) / 2;
  const float G = nvfp4::global_scale(nvfp4::amax_f32(x));
  for (auto [zero, code] : {std::pair{ZeroScale::CompressedTensors, uint8_t(0x20)},
                            std::pair{ZeroScale::ModelOpt, uint8_t(0x38)}}) {
    for (Impl impl : kAllImpls) {
      SCOPED_TRACE(name(impl));
      const Quantized q = quantize(impl, to_bf16(x), 1, 48, G, zero);
      EXPECT_EQ(q.scales[0], code);
      EXPECT_EQ(q.scales[1], code);
      EXPECT_EQ(q.scales[2], 0x7E);
      for (int i = 0; i < 8; ++i) EXPECT_EQ(q.packed[i], 0x00);
      for (int i = 8; i < 16; ++i) EXPECT_EQ(q.packed[i], 0x88) << "negative zero keeps its sign";
      EXPECT_TRUE(std::isfinite(q.err.sum_sq_err));
    }
    expect_all_agree_f(x, 1, 48, G, zero);
  }
  // An all-zero tensor: G = 1, every scale the policy's.
  const std::vector<float> zeros(64, 0.0f);
  EXPECT_EQ(nvfp4::global_scale(nvfp4::amax_f32(zeros)), 1.0f);
  const Quantized q = quantize(Impl::Fast, to_bf16(zeros), 2, 32, 1.0f);
  EXPECT_EQ(q.scales, std::vector<uint8_t>(4, 0x20));
  EXPECT_EQ(q.packed, std::vector<uint8_t>(32, 0x00));
  EXPECT_EQ(q.err.sum_sq_err, 0.0);
  EXPECT_EQ(q.err.count, 64);
}

TEST(Nvfp4Blocks, TinyBlocksUnderflowTheScale) {
  // Tensor amax 1000 -> G = 2.688. A block of amax 1e-3 wants s = 4.5e-4 < 2^-10: FP8 zero, so it
  // gets the policy scale and all its codes round to (signed) zero. A block of amax 2.5e-3 wants
  // 1.1e-3: the smallest subnormal, 0x01.
  std::vector<float> x(48);
  for (int i = 0; i < 16; ++i) x[i] = (i % 2 ? -1e-3f : 1e-3f) * float(i) / 15;
  for (int i = 16; i < 32; ++i) x[i] = 2.5e-3f * float(i - 16) / 15;
  for (int i = 32; i < 48; ++i) x[i] = i == 40 ? 1000.0f : 1.0f;
  const std::vector<uint16_t> b = to_bf16(x);
  const float G = nvfp4::global_scale(nvfp4::amax_bf16(b));
  ASSERT_EQ(G, 2.688f);
  for (auto [zero, code] : {std::pair{ZeroScale::CompressedTensors, uint8_t(0x20)},
                            std::pair{ZeroScale::ModelOpt, uint8_t(0x38)}}) {
    const Quantized q = quantize(Impl::RefBf16, b, 1, 48, G, zero);
    EXPECT_EQ(q.scales[0], code);
    EXPECT_EQ(q.scales[1], 0x01);
    EXPECT_EQ(q.scales[2], 0x7E);
    for (int i = 0; i < 8; ++i) EXPECT_EQ(q.packed[i] & 0x77, 0) << "all codes are +-0";
    expect_all_agree(b, 1, 48, G, zero);
  }
}

TEST(Nvfp4Blocks, NaNAndInfInputs) {
  // Blocks: NaN, -NaN, Inf, -Inf, Inf next to a NaN, denormals, tiny negatives, ordinary.
  std::vector<float> x(8 * 16);
  std::mt19937 rng(1);
  std::uniform_real_distribution<float> u(-3.0f, 3.0f);
  for (float& v : x) v = u(rng);
  x[5] = kNaN;
  x[16 + 9] = -kNaN;
  x[32 + 0] = kInf;
  x[48 + 15] = -kInf;
  x[64 + 1] = kInf;
  x[64 + 2] = kNaN;
  for (int i = 80; i < 96; ++i) x[i] = std::ldexp(float(i - 88), -135);  // BF16 denormals
  for (int i = 96; i < 112; ++i) x[i] = -1e-30f * float(i - 95);
  const std::vector<uint16_t> b = to_bf16(x);
  EXPECT_EQ(nvfp4::count_nonfinite_bf16(b), 6);
  for (float G : {1.0f, 448.0f, nvfp4::global_scale(nvfp4::amax_bf16(b)), 1e30f}) {
    const Quantized q = quantize(Impl::RefBf16, b, 1, 128, G);
    // A NaN block: NaN scale, every code 0.
    for (int blk : {0, 1, 4}) {
      EXPECT_EQ(q.scales[blk], 0x7F) << blk;
      for (int i = 0; i < 8; ++i) EXPECT_EQ(q.packed[blk * 8 + i], 0x00) << blk;
    }
    // An Inf block: its scale saturates at 448; Inf codes as +-6.
    EXPECT_EQ(q.scales[2], 0x7E);
    EXPECT_EQ(q.scales[3], 0x7E);
    EXPECT_EQ(q.packed[16] & 0xF, 0x7);
    EXPECT_EQ(q.packed[24 + 7] >> 4, 0xF);
    EXPECT_TRUE(std::isnan(q.err.sum_sq_err));
    expect_all_agree(b, 1, 128, G);
    expect_all_agree(b, 2, 64, G);
  }
}

// Every non-negative BF16 pattern (Inf and NaN included) as a block amax, with the other 15
// elements random below it: exercises the fast FP8 scale encoder over its whole domain.
TEST(Nvfp4Exhaustive, EveryBlockAmax) {
  const uint32_t seed = std::random_device{}();
  SCOPED_TRACE(testing::Message() << "seed " << seed);
  std::mt19937_64 rng(seed);
  const int64_t cols = 2048, rows = 0x8000 * 16 / cols;
  std::vector<uint16_t> x(size_t(rows * cols));
  for (uint32_t a = 0; a < 0x8000; ++a) {
    uint16_t* blk = &x[a * 16];
    for (int i = 0; i < 16; ++i) {
      const uint16_t mag = a >= 0x7F80 ? uint16_t(rng() % 0x7F80) : uint16_t(rng() % (a + 1));
      blk[i] = uint16_t(mag | ((rng() & 1) << 15));
    }
    blk[rng() % 16] = uint16_t(a | ((rng() & 1) << 15));
  }
  std::uniform_real_distribution<float> log10_g(-6.0f, 8.0f);
  for (float G : {1.0f, 448.0f, 2.688f, std::pow(10.0f, log10_g(rng)), std::pow(10.0f, log10_g(rng)),
                  1e-30f, std::numeric_limits<float>::max()}) {
    expect_all_agree(x, rows, cols, G);
  }
  expect_all_agree(x, rows, cols, 3.0f, ZeroScale::ModelOpt);
}

// Every BF16 pattern as an element next to a few fixed block maxima: exercises the fast FP4 encoder
// (thresholds, ties, signs, clamps, NaN) over its whole domain.
TEST(Nvfp4Exhaustive, EveryElement) {
  for (float carrier : {6.0f, 24.0f, 7.0f, 0.01f, 300.0f, 2688.0f}) {
    std::vector<uint16_t> x;
    for (uint32_t v = 0; v < 0x10000; v += 15) {
      x.push_back(bf16::from_float(carrier));
      for (uint32_t k = v; k < v + 15; ++k) x.push_back(uint16_t(k & 0xFFFF));
    }
    while (x.size() % 256) x.push_back(bf16::from_float(-carrier));
    const int64_t cols = 256, rows = int64_t(x.size()) / cols;
    expect_all_agree(x, rows, cols, 1.0f);
    expect_all_agree(x, rows, cols, nvfp4::global_scale(carrier * 4));
  }
}

TEST(Nvfp4Exhaustive, ElementTiesGoToTheEvenCode) {
  // G = 1 and a block amax of 24 give s = 4 and s / G = 4 exactly, so 4 t is a tie when t is.
  const float ties[] = {0.25f, 0.75f, 1.25f, 1.75f, 2.5f, 3.5f, 5.0f};
  std::vector<float> x;
  auto push = [&x](float v) {
    if (x.size() % 16 == 0) x.push_back(24.0f);  // every block holds the amax
    x.push_back(v);
  };
  for (float t : ties) {
    const float v = 4 * t;
    // The tie and its BF16 neighbours (rounded to BF16 so that the expectation is on the exact input).
    for (float e : {v, std::nextafter(v, 0.0f), std::nextafter(v, kInf), v * (1 - 1.0f / 256),
                    v * (1 + 1.0f / 128)}) {
      const float eb = bf16::to_float(bf16::from_float(e));
      push(eb);
      push(-eb);
    }
  }
  while (x.size() % 16) x.push_back(0.0f);
  const int64_t cols = int64_t(x.size());
  for (Impl impl : kAllImpls) {
    SCOPED_TRACE(name(impl));
    const Quantized q = quantize(impl, to_bf16(x), 1, cols, 1.0f);
    for (uint8_t s : q.scales) EXPECT_EQ(s, fp8_e4m3::encode(4.0f));
    for (int64_t i = 0; i < cols; ++i) {
      const uint8_t code = (i % 2) ? q.packed[i / 2] >> 4 : q.packed[i / 2] & 0xF;
      const float scaled = x[i] / 4;
      EXPECT_EQ(code, fp4::encode(scaled)) << x[i];
      for (int c = 0; c < 7; ++c) {
        if (std::fabs(scaled) == ties[c]) {
          EXPECT_EQ((code & 7) % 2, 0) << "tie " << x[i] << " not even";
        }
      }
    }
  }
  expect_all_agree_f(x, 1, cols, 1.0f);
}

// ---------------------------------------------------------------------------------------------
// Random data: the fast quantizer against the reference.

struct RandomCase {
  std::vector<uint16_t> x;
  int64_t rows, cols;
  float G;
  std::string what;
};

RandomCase random_case(std::mt19937_64& rng, bool allow_specials) {
  RandomCase c;
  c.rows = 1 + int64_t(rng() % 67);
  c.cols = 16 * (1 + int64_t(rng() % 64));
  const float scale = std::pow(10.0f, std::uniform_real_distribution<float>(-6.0f, 4.0f)(rng));
  const int kind = int(rng() % 6);
  std::normal_distribution<float> normal(0.0f, 1.0f);
  std::uniform_real_distribution<float> unit(0.0f, 1.0f);
  std::chi_squared_distribution<float> chi2(2.0f);
  std::vector<float> row_scale(size_t(c.rows), 1.0f);
  if (kind == 4) {  // rows of very different magnitude: underflowing and saturating block scales
    for (float& s : row_scale) s = std::pow(10.0f, std::uniform_real_distribution<float>(-5.0f, 2.0f)(rng));
  }
  c.x.resize(size_t(c.rows * c.cols));
  for (int64_t r = 0; r < c.rows; ++r) {
    for (int64_t k = 0; k < c.cols; ++k) {
      float v;
      switch (kind) {
        case 0: v = normal(rng); break;
        case 1: v = normal(rng) / std::sqrt(chi2(rng) / 2.0f); break;  // Student t, 2 dof
        case 2: v = normal(rng) * (unit(rng) < 0.005f ? 100.0f * (1 + 9 * unit(rng)) : 1.0f); break;
        case 3: v = std::log(unit(rng) + 1e-12f) * (rng() & 1 ? 1.0f : -1.0f); break;  // Laplace
        case 4: v = normal(rng); break;
        default: v = unit(rng) < 0.7f ? ((rng() & 1) ? 0.0f : -0.0f) : normal(rng); break;  // sparse
      }
      c.x[size_t(r * c.cols + k)] = bf16::from_float(v * scale * row_scale[size_t(r)]);
    }
  }
  // Now and then: zero blocks, negative zeros, denormals, NaN and Inf.
  if (rng() % 4 == 0) {
    const size_t blk = size_t(rng() % (c.x.size() / 16));
    for (size_t i = 0; i < 16; ++i) c.x[blk * 16 + i] = (rng() & 1) ? 0x8000 : 0x0000;
  }
  if (rng() % 4 == 0) c.x[rng() % c.x.size()] = uint16_t(0x0001 + rng() % 0x7F) | ((rng() & 1) << 15);
  if (allow_specials && rng() % 4 == 0) {
    const uint16_t specials[] = {0x7F80, 0xFF80, 0x7FC0, 0xFFC1, 0x7F81};
    c.x[rng() % c.x.size()] = specials[rng() % 5];
  }
  // Never all zeros (that case has its own test).
  if (nvfp4::amax_bf16(c.x) == 0.0f) c.x[rng() % c.x.size()] = bf16::from_float(scale);

  c.G = nvfp4::global_scale(nvfp4::amax_bf16(c.x));
  if (rng() % 4 == 0) c.G *= std::pow(10.0f, std::uniform_real_distribution<float>(-2.0f, 2.0f)(rng));
  c.what = testing::PrintToString(c.rows) + "x" + testing::PrintToString(c.cols) + ", kind " +
           testing::PrintToString(kind) + ", scale " + testing::PrintToString(scale);
  return c;
}

TEST(Nvfp4Random, FastMatchesReference) {
  const uint32_t seed = std::random_device{}();
  SCOPED_TRACE(testing::Message() << "seed " << seed);
  std::mt19937_64 rng(seed);
  for (int iter = 0; iter < 150; ++iter) {
    const RandomCase c = random_case(rng, /*allow_specials=*/true);
    SCOPED_TRACE(testing::Message() << "case " << iter << ": " << c.what);
    expect_all_agree(c.x, c.rows, c.cols, c.G, rng() % 4 ? ZeroScale::CompressedTensors : ZeroScale::ModelOpt);
    if (testing::Test::HasFailure()) return;
  }
}

// quantize_f32 (AVX-512 where the CPU has it, OpenMP over rows) on float32 values with full mantissas (not
// BF16-representable), specials included: the reference's bytes, its figures within double rounding, and
// the same figures for 1 and 2 threads; odd global scales take the reference's own row quantizer.
TEST(Nvfp4Random, F32FastMatchesReference) {
  const uint32_t seed = std::random_device{}();
  SCOPED_TRACE(testing::Message() << "seed " << seed);
  std::mt19937_64 rng(seed);
  for (int iter = 0; iter < 120; ++iter) {
    RandomCase c = random_case(rng, /*allow_specials=*/true);
    std::vector<float> x(c.x.size());
    std::uniform_real_distribution<float> jitter(0.9f, 1.1f);
    for (size_t i = 0; i < x.size(); ++i) {
      x[i] = bf16::to_float(c.x[i]);
      if (std::isfinite(x[i])) x[i] *= jitter(rng);  // mantissa bits below BF16's
    }
    if (iter % 8 == 0) x[rng() % x.size()] = std::numeric_limits<float>::denorm_min() * float(1 + rng() % 1000);
    float G = nvfp4::global_scale(nvfp4::amax_f32(x));
    if (iter % 10 == 9) {
      const float odd[] = {0.0f, -1.0f, kNaN, kInf, 1e-40f};
      G = odd[rng() % 5];
    }
    SCOPED_TRACE(testing::Message() << "case " << iter << ": " << c.what << ", G " << G);
    const ZeroScale zero = rng() % 4 ? ZeroScale::CompressedTensors : ZeroScale::ModelOpt;
    Quantized ref;
    ref.packed.resize(x.size() / 2);
    ref.scales.resize(x.size() / 16);
    nvfp4::quantize_f32_ref(x.data(), c.rows, c.cols, G, ref.packed.data(), ref.scales.data(), zero, &ref.err);
    Quantized fast[2];
    for (int t = 1; t <= 2; ++t) {
      Quantized& q = fast[t - 1];
      q.packed.resize(x.size() / 2);
      q.scales.resize(x.size() / 16);
      with_threads(t, [&] {
        nvfp4::quantize_f32(x.data(), c.rows, c.cols, G, q.packed.data(), q.scales.data(), zero, &q.err);
      });
      EXPECT_TRUE(same_bytes("packed", ref.packed, q.packed, c.cols / 2));
      EXPECT_TRUE(same_bytes("scales", ref.scales, q.scales, c.cols / 16));
      EXPECT_TRUE(close_stats(ref.err, q.err, 1e-9));
    }
    EXPECT_TRUE(bitwise_equal(fast[0].err, fast[1].err)) << "error figures depend on the thread count";
    if (testing::Test::HasFailure()) return;
  }
}

TEST(Nvfp4Random, OddGlobalScalesGiveTheReferenceBytes) {
  // Not what global_scale() returns, but the fast path must still give the reference's bytes.
  const uint32_t seed = std::random_device{}();
  SCOPED_TRACE(testing::Message() << "seed " << seed);
  std::mt19937_64 rng(seed);
  for (float G : {0.0f, -0.0f, -1.0f, -448.0f, kNaN, kInf, -kInf, std::numeric_limits<float>::denorm_min(),
                  1e-40f, 1e-30f, std::numeric_limits<float>::max()}) {
    const RandomCase c = random_case(rng, /*allow_specials=*/true);
    SCOPED_TRACE(testing::Message() << c.what);
    expect_all_agree(c.x, c.rows, c.cols, G);
  }
}

TEST(Nvfp4Random, DequantizeErrorIsBoundedAndErrorStatsAreExact) {
  const uint32_t seed = std::random_device{}();
  SCOPED_TRACE(testing::Message() << "seed " << seed);
  std::mt19937_64 rng(seed);
  for (int iter = 0; iter < 40; ++iter) {
    const RandomCase c = random_case(rng, /*allow_specials=*/false);
    SCOPED_TRACE(testing::Message() << "case " << iter << ": " << c.what);
    const float G = nvfp4::global_scale(nvfp4::amax_bf16(c.x));  // the real one: no saturation
    const Quantized q = quantize(Impl::RefBf16, c.x, c.rows, c.cols, G);
    std::vector<float> out(c.x.size());
    nvfp4::dequantize(q.packed.data(), q.scales.data(), c.rows, c.cols, G, out.data());

    ErrorStats direct;
    for (int64_t r = 0; r < c.rows; ++r) {
      double sq_err = 0, sq_ref = 0;
      for (int64_t k = 0; k < c.cols; ++k) {
        const size_t i = size_t(r * c.cols + k);
        const float x = bf16::to_float(c.x[i]);
        const uint8_t code = (i % 2) ? q.packed[i / 2] >> 4 : q.packed[i / 2] & 0xF;
        const float d = fp8_e4m3::decode(q.scales[i / 16]) / G;
        ASSERT_EQ(out[i], fp4::decode(code) * d) << "dequantize at " << i;
        // Round to nearest on the FP4 grid: half the widest gap (4..6) is 1 in units of d; beyond 6
        // (a scale rounded down), the clamp error.
        const double e = std::fabs(double(x) - double(out[i]));
        const double bound = std::max(1.0 * d, std::fabs(x) - 6.0 * d) * (1 + 1e-6) + 1e-45;
        ASSERT_LE(e, bound) << "x " << x << ", x' " << out[i] << ", d " << d << " at " << i;
        sq_err += e * e;
        sq_ref += double(x) * double(x);
        direct.max_abs_err = std::max(direct.max_abs_err, e);
      }
      direct.sum_sq_err += sq_err;
      direct.sum_sq_ref += sq_ref;
    }
    direct.count = c.rows * c.cols;
    EXPECT_TRUE(close_stats(direct, q.err, 1e-12));
    const Quantized fast = quantize(Impl::Fast, c.x, c.rows, c.cols, G);
    EXPECT_TRUE(close_stats(direct, fast.err, 1e-9));
  }
}

TEST(Nvfp4Random, GaussianSqnrIsPlausible) {
  // Round-to-nearest NVFP4 on Gaussian weights is about 20 dB; a broken scale or packing is far off.
  std::mt19937_64 rng(std::random_device{}());
  std::normal_distribution<float> normal(0.0f, 0.02f);
  std::vector<float> x(256 * 512);
  for (float& v : x) v = normal(rng);
  const std::vector<uint16_t> b = to_bf16(x);
  const Quantized q = quantize(Impl::Fast, b, 256, 512, nvfp4::global_scale(nvfp4::amax_bf16(b)));
  EXPECT_GT(q.err.sqnr_db(), 17.0);
  EXPECT_LT(q.err.sqnr_db(), 23.0);
}

TEST(Nvfp4Api, ErrorFiguresAccumulateAndEmptyInputsWriteNothing) {
  std::vector<float> x(64);
  for (size_t i = 0; i < x.size(); ++i) x[i] = float(i) / 7 - 4;
  const std::vector<uint16_t> b = to_bf16(x);
  const float G = nvfp4::global_scale(nvfp4::amax_bf16(b));
  const Quantized once = quantize(Impl::Fast, b, 2, 32, G);
  std::vector<uint8_t> packed(32), scales(4);
  ErrorStats twice;
  nvfp4::quantize_bf16(b.data(), 2, 32, G, packed.data(), scales.data(), ZeroScale::CompressedTensors, &twice);
  nvfp4::quantize_bf16(b.data(), 2, 32, G, packed.data(), scales.data(), ZeroScale::CompressedTensors, &twice);
  EXPECT_EQ(twice.count, 2 * once.err.count);
  EXPECT_DOUBLE_EQ(twice.sum_sq_err, 2 * once.err.sum_sq_err);
  EXPECT_EQ(twice.max_abs_err, once.err.max_abs_err);
  for (Impl impl : kAllImpls) {
    const Quantized q = quantize(impl, {}, 0, 32, 1.0f);  // checks the guards
    EXPECT_EQ(q.err.count, 0);
  }
  // Without error figures the bytes are the same.
  nvfp4::quantize_bf16(b.data(), 2, 32, G, packed.data(), scales.data());
  EXPECT_EQ(packed, once.packed);
  EXPECT_EQ(scales, once.scales);
}

TEST(Nvfp4Api, KernelName) {
  const std::string kernel = nvfp4::quantize_bf16_kernel();
  EXPECT_TRUE(kernel == "avx512" || kernel == "portable") << kernel;
  RecordProperty("kernel", kernel);
}

}  // namespace
}  // namespace fp4c

namespace fp4c {
namespace {

// Rows supplied by a callback (a rewrite done row by row) give the bytes and figures of the matrix.
TEST(Nvfp4RowSource, EqualsQuantizingTheMatrix) {
  const uint64_t seed = std::random_device{}();
  SCOPED_TRACE("seed " + std::to_string(seed));
  std::mt19937_64 rng(seed);
  std::student_t_distribution<float> t(4.0f);
  for (const auto& shape : {std::pair<int64_t, int64_t>{1, 16}, {37, 48}, {300, 896}}) {
    const int64_t rows = shape.first, cols = shape.second;   // not a structured binding: the lambda
    std::vector<uint16_t> x(size_t(rows * cols));           // below captures it (clang < 16 cannot)
    for (auto& v : x) v = bf16::from_float(0.05f * t(rng));
    const float G = nvfp4::global_scale(nvfp4::amax_bf16(x));
    std::vector<uint8_t> p1(x.size() / 2), s1(x.size() / 16), p2(p1.size()), s2(s1.size());
    nvfp4::ErrorStats e1, e2;
    const int saved = omp_get_max_threads();
    for (int threads : {1, 2}) {
      omp_set_num_threads(threads);
      nvfp4::quantize_bf16(x.data(), rows, cols, G, p1.data(), s1.data(), nvfp4::ZeroScale::CompressedTensors, &e1);
      nvfp4::quantize_bf16_rows(
          [&](int64_t r, uint16_t* out) { std::copy(x.begin() + r * cols, x.begin() + (r + 1) * cols, out); }, rows,
          cols, G, p2.data(), s2.data(), nvfp4::ZeroScale::CompressedTensors, &e2);
      EXPECT_EQ(p1, p2) << rows << "x" << cols << ", " << threads << " threads";
      EXPECT_EQ(s1, s2);
      EXPECT_EQ(e1.sum_sq_err, e2.sum_sq_err);
      EXPECT_EQ(e1.sum_sq_ref, e2.sum_sq_ref);
      EXPECT_EQ(e1.max_abs_err, e2.max_abs_err);
      e1 = e2 = {};
    }
    omp_set_num_threads(saved);
  }
}

}  // namespace
}  // namespace fp4c
