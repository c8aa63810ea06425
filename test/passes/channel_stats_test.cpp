// The per-channel statistics kernel of the stats pass against its slow obvious reference: bit for bit
// on random data (fresh seeds) with zeros of both signs, infinities and NaNs, on shapes that are not
// multiples of the vector width, whatever the thread count, and folded in several calls.
#include <gtest/gtest.h>

#include <omp.h>

#include <cmath>
#include <cstring>
#include <limits>
#include <random>
#include <vector>

#include "passes/channel_stats.h"

namespace fp4c::testing {
namespace {

struct Acc {
  std::vector<float> absmax, min, max;
  std::vector<double> ss;
  explicit Acc(int64_t cols)
      : absmax(size_t(cols), 0.0f), min(size_t(cols), std::numeric_limits<float>::infinity()),
        max(size_t(cols), -std::numeric_limits<float>::infinity()), ss(size_t(cols), 0.0) {}
  passes::ChannelAccumulators view() { return {absmax.data(), min.data(), max.data(), ss.data()}; }
};

template <typename T>
bool same_bits(const std::vector<T>& a, const std::vector<T>& b) {
  return a.size() == b.size() && std::memcmp(a.data(), b.data(), a.size() * sizeof(T)) == 0;
}

void expect_same(const Acc& got, const Acc& want) {
  EXPECT_TRUE(same_bits(got.absmax, want.absmax)) << "absmax";
  EXPECT_TRUE(same_bits(got.min, want.min)) << "min";
  EXPECT_TRUE(same_bits(got.max, want.max)) << "max";
  EXPECT_TRUE(same_bits(got.ss, want.ss)) << "sum of squares";
}

std::vector<float> random_matrix(std::mt19937_64& rng, int64_t rows, int64_t cols, bool specials) {
  std::normal_distribution<float> normal(0.0f, 1.0f);
  std::uniform_real_distribution<float> scale(-6.0f, 6.0f);
  std::vector<float> x(size_t(rows * cols));
  for (auto& v : x) v = normal(rng) * std::exp2(scale(rng));
  if (specials) {
    const float special[] = {0.0f, -0.0f, std::numeric_limits<float>::infinity(),
                             -std::numeric_limits<float>::infinity(), std::numeric_limits<float>::quiet_NaN(),
                             std::numeric_limits<float>::denorm_min(), -1e-40f};
    for (size_t i = 0; i < x.size() / 50 + 1; ++i)
      x[size_t(rng() % x.size())] = special[rng() % (sizeof special / sizeof special[0])];
  }
  return x;
}

TEST(ChannelStats, EqualsTheReferenceBitForBit) {
  const uint64_t seed = std::random_device{}();
  SCOPED_TRACE("seed " + std::to_string(seed));
  std::mt19937_64 rng(seed);
  const int64_t shapes[][2] = {{1, 1}, {3, 17}, {65, 31}, {200, 256}, {129, 300}, {37, 1000}, {513, 896}, {70, 4864}};
  for (const auto& shape : shapes) {
    for (bool specials : {false, true}) {
      const int64_t rows = shape[0], cols = shape[1];
      SCOPED_TRACE(std::to_string(rows) + "x" + std::to_string(cols) + (specials ? " with specials" : ""));
      const auto x = random_matrix(rng, rows, cols, specials);
      Acc want(cols);
      accumulate_channel_stats_reference(x.data(), rows, cols, want.view());
      for (int threads : {1, 2, 3}) {
        SCOPED_TRACE(std::to_string(threads) + " threads");
        const int saved = omp_get_max_threads();
        omp_set_num_threads(threads);
        Acc got(cols);
        passes::accumulate_channel_stats(x.data(), rows, cols, got.view());
        omp_set_num_threads(saved);
        expect_same(got, want);
      }
    }
  }
}

TEST(ChannelStats, FoldingInSeveralCallsEqualsOneCall) {
  const uint64_t seed = std::random_device{}();
  SCOPED_TRACE("seed " + std::to_string(seed));
  std::mt19937_64 rng(seed);
  const int64_t rows = 300 + int64_t(rng() % 200), cols = 16 + int64_t(rng() % 600);
  const auto x = random_matrix(rng, rows, cols, true);
  Acc whole(cols), parts(cols);
  passes::accumulate_channel_stats(x.data(), rows, cols, whole.view());
  for (int64_t r = 0; r < rows;) {
    const int64_t n = std::min<int64_t>(rows - r, 1 + int64_t(rng() % 150));
    passes::accumulate_channel_stats(x.data() + r * cols, n, cols, parts.view());
    r += n;
  }
  expect_same(parts, whole);
}

}  // namespace
}  // namespace fp4c::testing
