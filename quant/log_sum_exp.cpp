#include "quant/log_sum_exp.h"

#include <bit>
#include <cmath>
#include <limits>

#include "runtime/vectorize.h"

namespace fp4c::quant {
namespace {

FP4C_VECTOR_CLONES float row_max(const float* x, int64_t n) {
  float m = -std::numeric_limits<float>::infinity();
#pragma omp simd reduction(max : m)
  for (int64_t i = 0; i < n; ++i) m = x[i] > m ? x[i] : m;
  return m;
}

// sum over i of exp(double(x[i]) - m), m finite. exp(d) for d <= 0: d = n ln2 + r with |r| <= ln2/2,
// e^r by its Taylor series to r^13 (truncation < 5e-18 relative), 2^n put into the exponent bits.
FP4C_VECTOR_CLONES double sum_exp(const float* x, int64_t n, double m) {
  constexpr double kLog2e = 1.4426950408889634074, kLn2Hi = 6.93147180369123816490e-01,
                   kLn2Lo = 1.90821492927058770002e-10, kShifter = 0x1.8p52;
  double sum = 0;
#pragma omp simd reduction(+ : sum)
  for (int64_t i = 0; i < n; ++i) {
    double d = double(x[i]) - m;
    d = d < -700.0 ? -700.0 : d;
    const double t = d * kLog2e + kShifter;   // round(d / ln2) in the low mantissa bits
    const double k = t - kShifter;
    const double r = (d - k * kLn2Hi) - k * kLn2Lo;
    double p = 1.0 / 6227020800.0;            // 1/13!
    p = p * r + 1.0 / 479001600.0;
    p = p * r + 1.0 / 39916800.0;
    p = p * r + 1.0 / 3628800.0;
    p = p * r + 1.0 / 362880.0;
    p = p * r + 1.0 / 40320.0;
    p = p * r + 1.0 / 5040.0;
    p = p * r + 1.0 / 720.0;
    p = p * r + 1.0 / 120.0;
    p = p * r + 1.0 / 24.0;
    p = p * r + 1.0 / 6.0;
    p = p * r + 0.5;
    p = p * r + 1.0;
    p = p * r + 1.0;
    const double scale = std::bit_cast<double>((std::bit_cast<uint64_t>(t) + 1023) << 52);   // 2^k
    sum += p * scale;
  }
  return sum;
}

}  // namespace

double log_sum_exp(const float* logits, int64_t n) {
  const float m = row_max(logits, n);
  if (!std::isfinite(m)) return log_sum_exp_reference(logits, n);   // infinities, an empty row: as the reference
  return double(m) + std::log(sum_exp(logits, n, double(m)));
}

double log_sum_exp_reference(const float* logits, int64_t n) {
  double m = -INFINITY;
  for (int64_t v = 0; v < n; ++v) m = std::max(m, double(logits[v]));
  double sum = 0;
  for (int64_t v = 0; v < n; ++v) sum += std::exp(double(logits[v]) - m);
  return m + std::log(sum);
}

}  // namespace fp4c::quant
