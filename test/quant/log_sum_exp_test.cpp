// The vectorized log-sum-exp of eval's NLL against the slow obvious one (std::exp summed in order), on
// random rows with fresh seeds: spreads up to thousands (terms under e^-700), vocabulary-sized rows,
// masked (-inf) entries, and rows that are all equal.
#include <gtest/gtest.h>

#include <cmath>
#include <limits>
#include <random>
#include <vector>

#include "quant/log_sum_exp.h"

namespace fp4c::testing {
namespace {

TEST(LogSumExp, AgreesWithTheReference) {
  const uint64_t seed = std::random_device{}();
  SCOPED_TRACE("seed " + std::to_string(seed));
  std::mt19937_64 rng(seed);
  const int64_t sizes[] = {1, 2, 7, 16, 17, 100, 1000, 32000, 151936};
  const double spreads[] = {0.0, 1e-3, 1.0, 10.0, 60.0, 1000.0};
  double worst = 0;
  for (int64_t n : sizes)
    for (double spread : spreads) {
      std::normal_distribution<float> normal(float(rng() % 21) - 10.0f, float(spread));
      std::vector<float> x(static_cast<size_t>(n));
      for (auto& v : x) v = normal(rng);
      if (n > 4 && rng() % 2) x[size_t(rng() % uint64_t(n))] = -std::numeric_limits<float>::infinity();
      const double want = quant::log_sum_exp_reference(x.data(), n);
      const double got = quant::log_sum_exp(x.data(), n);
      const double err = std::fabs(got - want) / std::max(1.0, std::fabs(want));
      worst = std::max(worst, err);
      // The sum runs in another order than the reference's (vector lanes), over up to 151936 terms: a few ulps
      // per doubling of n. 1e-14 was exceeded by seed 231488778 (1.03e-14); any real mistake is beyond 1e-10.
      EXPECT_LE(err, 5e-14) << n << " logits, spread " << spread << ": " << got << " vs " << want;
    }
  std::printf("worst relative difference %.3g\n", worst);
}

TEST(LogSumExp, SpecialRowsAsTheReference) {
  const float inf = std::numeric_limits<float>::infinity();
  const std::vector<std::vector<float>> rows = {{-inf, -inf}, {inf, 1.0f}, {1.0f, std::nanf("")}, {3.0f, 3.0f, 3.0f}};
  for (const auto& r : rows) {
    const double want = quant::log_sum_exp_reference(r.data(), int64_t(r.size()));
    const double got = quant::log_sum_exp(r.data(), int64_t(r.size()));
    if (std::isnan(want)) {
      EXPECT_TRUE(std::isnan(got));
    } else {
      EXPECT_NEAR(got, want, 1e-15 * std::max(1.0, std::fabs(want)));
      if (std::isinf(want)) EXPECT_EQ(got, want);
    }
  }
}

}  // namespace
}  // namespace fp4c::testing
