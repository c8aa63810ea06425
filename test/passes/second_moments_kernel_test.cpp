// The stats pass's X^T X kernel against its slow obvious reference, bit for bit: random data with fresh
// seeds (magnitudes over 2^-40..2^40, signed zeros, infinities, NaNs), column counts that are not
// multiples of the register tile, row counts that are not multiples of the row tile, at 1-3 threads,
// folded in several calls, and only the upper triangle written.
#include <gtest/gtest.h>

#include <omp.h>

#include <cmath>
#include <cstring>
#include <limits>
#include <random>
#include <vector>

#include "passes/second_moments.h"

namespace fp4c::testing {
namespace {

std::vector<float> random_matrix(std::mt19937_64& rng, int64_t rows, int64_t cols, bool specials) {
  std::normal_distribution<float> normal(0.0f, 1.0f);
  std::uniform_real_distribution<float> scale(-40.0f, 40.0f);
  std::vector<float> x(static_cast<size_t>(rows * cols));
  for (auto& v : x) v = normal(rng) * std::exp2(scale(rng));
  if (specials) {
    const float special[] = {0.0f, -0.0f, std::numeric_limits<float>::infinity(), std::numeric_limits<float>::quiet_NaN(),
                             std::numeric_limits<float>::denorm_min()};
    for (size_t i = 0; i < x.size() / 200 + 1; ++i) x[size_t(rng() % x.size())] = special[rng() % 5];
  }
  return x;
}

// Bit for bit, except that a NaN equals any NaN (which NaN an operation on two of them yields, sign
// and payload, depends on the operand order the compiler picked).
bool same_bits(const std::vector<double>& a, const std::vector<double>& b) {
  if (a.size() != b.size()) return false;
  for (size_t i = 0; i < a.size(); ++i) {
    if (std::isnan(a[i]) && std::isnan(b[i])) continue;
    if (std::memcmp(&a[i], &b[i], sizeof(double)) != 0) {
      ADD_FAILURE() << "entry " << i << ": " << a[i] << " vs " << b[i];
      return false;
    }
  }
  return true;
}

TEST(SecondMomentsKernel, EqualsTheReferenceBitForBit) {
  const uint64_t seed = std::random_device{}();
  SCOPED_TRACE("seed " + std::to_string(seed));
  std::mt19937_64 rng(seed);
  const int64_t shapes[][2] = {{1, 1}, {5, 3}, {17, 8}, {33, 16}, {100, 37}, {513, 64}, {700, 131}, {1100, 200}};
  for (const auto& shape : shapes)
    for (bool specials : {false, true}) {
      const int64_t rows = shape[0], cols = shape[1];
      SCOPED_TRACE(std::to_string(rows) + "x" + std::to_string(cols) + (specials ? " with specials" : ""));
      const auto x = random_matrix(rng, rows, cols, specials);
      // A start that is not zero, with a marker below the diagonal that must survive.
      std::vector<double> start(size_t(cols * cols));
      for (int64_t i = 0; i < cols; ++i)
        for (int64_t j = 0; j < cols; ++j) start[size_t(i * cols + j)] = j >= i ? double(rng() % 1000) * 0.125 : -7.0;
      std::vector<double> want = start;
      passes::accumulate_second_moments_reference(want.data(), x.data(), rows, cols);
      for (int threads : {1, 2, 3}) {
        SCOPED_TRACE(std::to_string(threads) + " threads");
        const int saved = omp_get_max_threads();
        omp_set_num_threads(threads);
        std::vector<double> got = start;
        passes::accumulate_second_moments(got.data(), x.data(), rows, cols);
        omp_set_num_threads(saved);
        EXPECT_TRUE(same_bits(got, want));
      }
    }
}

TEST(SecondMomentsKernel, FoldingInSeveralCallsEqualsOneCall) {
  const uint64_t seed = std::random_device{}();
  SCOPED_TRACE("seed " + std::to_string(seed));
  std::mt19937_64 rng(seed);
  const int64_t rows = 600 + int64_t(rng() % 600), cols = 1 + int64_t(rng() % 90);
  const auto x = random_matrix(rng, rows, cols, false);
  std::vector<double> whole(size_t(cols * cols), 0.0), parts = whole;
  passes::accumulate_second_moments(whole.data(), x.data(), rows, cols);
  for (int64_t r = 0; r < rows;) {
    const int64_t n = std::min<int64_t>(rows - r, 1 + int64_t(rng() % 700));
    passes::accumulate_second_moments(parts.data(), x.data() + r * cols, n, cols);
    r += n;
  }
  EXPECT_TRUE(same_bits(parts, whole));
}

}  // namespace
}  // namespace fp4c::testing
