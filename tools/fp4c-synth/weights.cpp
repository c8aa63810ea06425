#include "weights.h"

#include <algorithm>
#include <array>
#include <cmath>
#include <cstring>
#include <numbers>
#include <numeric>

#include "formats/bf16.h"
#include "random.h"

namespace fp4c::synth {

namespace {

// Spread of the multiplicative scales (log-normal sigmas) and the planted outliers.
constexpr double kRowSigma = 0.25;          // per output row of a Linear
constexpr double kColSigma = 0.10;          // per input channel of a Linear
constexpr double kEmbeddingRowSigma = 0.30; // per token
constexpr double kEmbeddingColSigma = 0.05;
constexpr double kNormSigma = 0.20;
constexpr double kOutlierColumnFraction = 0.005;  // of a Linear's input channels
constexpr double kOutlierColumnMin = 5.0, kOutlierColumnMax = 20.0;
constexpr double kOutlierChannelFraction = 0.01;  // of the hidden channels, in every norm
constexpr double kOutlierChannelMin = 10.0, kOutlierChannelMax = 50.0;

// Streams of one tensor's key space.
enum Stream : uint64_t { kElements, kTail, kRows, kCols, kPick, kFactor };

// Elements are drawn 4 per 64-bit random word, a block at a time (its scratch fits in L1/L2).
constexpr uint64_t kBlock = 16384;

// Student's t with 5 degrees of freedom (kurtosis 9), divided by its std sqrt(5/3). With
// t = sqrt(5) tan(th), its CDF is 1/2 + (th + sin th cos th (1 + 2/3 cos^2 th)) / pi, whose
// derivative in th is 8/(3 pi) cos^4 th: solved for th by Newton's method inside a bisection bracket.
double t5_theta(double p, double guess) {
  constexpr double kPi = std::numbers::pi;
  const double target = kPi * (p - 0.5);
  double lo = -kPi / 2, hi = kPi / 2, th = guess;
  for (int it = 0; it < 200; ++it) {
    const double s = std::sin(th), c = std::cos(th);
    const double g = th + s * c * (1.0 + 2.0 / 3.0 * c * c) - target;
    if (g == 0) break;
    (g > 0 ? hi : lo) = th;
    double next = th - g / (8.0 / 3.0 * c * c * c * c);
    if (!(next > lo && next < hi)) next = 0.5 * (lo + hi);
    const bool done = std::abs(next - th) < 1e-15 || hi - lo < 1e-15;
    th = next;
    if (done) break;
  }
  return th;
}

// 2^16 equiprobable bins (the value at each bin's middle quantile); the two extreme bins are refined
// into 2^16 sub-bins each, so the tails reach probability 2^-33 (about 120 std) instead of 2^-17.
struct T5Table {
  std::array<float, 65536> body;
  std::array<float, 65536> tail;   // the lower extreme bin; the upper one is its mirror
  T5Table() {
    const double sqrt3 = std::sqrt(3.0);
    double th = 0;
    for (int k = 32767; k >= 0; --k) {
      th = t5_theta((k + 0.5) / 65536.0, th);
      body[k] = float(sqrt3 * std::tan(th));
      body[65535 - k] = -body[k];
    }
    for (int j = 65535; j >= 0; --j) {
      th = t5_theta((j + 0.5) * 0x1.0p-32, th);
      tail[j] = float(sqrt3 * std::tan(th));
    }
  }
};

const T5Table& t5_table() {
  static const T5Table table;
  return table;
}

// k distinct indices of [0, n), chosen by a partial Fisher-Yates shuffle, sorted.
std::vector<int64_t> choose(uint64_t key, int64_t n, int64_t k) {
  std::vector<int64_t> idx(static_cast<size_t>(n));
  std::iota(idx.begin(), idx.end(), 0);
  for (int64_t i = 0; i < k; ++i) {
    const auto j = i + int64_t(random_at(key, uint64_t(i)) % uint64_t(n - i));
    std::swap(idx[size_t(i)], idx[size_t(j)]);
  }
  idx.resize(size_t(k));
  std::sort(idx.begin(), idx.end());
  return idx;
}

// Whether one of the four 16-bit lanes of x is zero (the classic SWAR test, exact for "any").
constexpr bool has_zero_lane(uint64_t x) {
  return ((x - 0x0001000100010001ull) & ~x & 0x8000800080008000ull) != 0;
}

int64_t outlier_count(double fraction, int64_t n) {
  return std::min<int64_t>(n, std::max<int64_t>(1, std::llround(fraction * double(n))));
}

double between(double lo, double hi, double u) { return lo + (hi - lo) * u; }

}  // namespace

std::vector<int64_t> hidden_outlier_channels(const WeightOptions& opts, int64_t hidden_size) {
  if (!opts.outliers) return {};
  return choose(stream_key(opts.seed, opts.model, "hidden-outlier-channels", kPick), hidden_size,
                outlier_count(kOutlierChannelFraction, hidden_size));
}

TensorSource::TensorSource(const PlannedTensor& t, const WeightOptions& opts,
                           std::span<const int64_t> hidden_outliers) {
  auto key = [&](Stream s) { return stream_key(opts.seed, opts.model, t.name, s); };
  key_ = key(kElements);
  tail_key_ = key(kTail);
  const uint64_t row_key = key(kRows), col_key = key(kCols), pick_key = key(kPick), factor_key = key(kFactor);
  const int64_t rows = t.shape.size() == 2 ? t.shape[0] : 1;
  cols_ = t.shape.back();
  auto log_normal = [](uint64_t k, uint64_t i, double sigma) { return std::exp(sigma * normal_at(k, i)); };
  switch (t.kind) {
    case TensorKind::Linear:
    case TensorKind::Embedding: {
      const bool linear = t.kind == TensorKind::Linear;
      row_scale_.resize(size_t(rows));
      col_scale_.resize(size_t(cols_));
      for (int64_t r = 0; r < rows; ++r)
        row_scale_[size_t(r)] = float(t.scale * log_normal(row_key, uint64_t(r), linear ? kRowSigma : kEmbeddingRowSigma));
      for (int64_t c = 0; c < cols_; ++c)
        col_scale_[size_t(c)] = float(log_normal(col_key, uint64_t(c), linear ? kColSigma : kEmbeddingColSigma));
      if (linear && opts.outliers) {
        outlier_columns_ = choose(pick_key, cols_, outlier_count(kOutlierColumnFraction, cols_));
        for (int64_t c : outlier_columns_)
          col_scale_[size_t(c)] *= float(between(kOutlierColumnMin, kOutlierColumnMax, uniform_at(factor_key, uint64_t(c))));
      }
      break;
    }
    case TensorKind::Bias:
      row_scale_.assign(1, t.scale);
      col_scale_.assign(size_t(cols_), 1.0f);
      break;
    case TensorKind::Norm:
      small_.resize(size_t(cols_));
      for (int64_t c = 0; c < cols_; ++c) {
        double g = log_normal(row_key, uint64_t(c), kNormSigma);
        if (std::binary_search(hidden_outliers.begin(), hidden_outliers.end(), c))
          g *= between(kOutlierChannelMin, kOutlierChannelMax, uniform_at(factor_key, uint64_t(c)));
        small_[size_t(c)] = bf16::from_float(float(g));
      }
      break;
  }
}

void TensorSource::fill(uint64_t begin, uint64_t end, uint16_t* out) const {
  if (!small_.empty()) {
    std::memcpy(out, small_.data() + begin, (end - begin) * sizeof(uint16_t));
    return;
  }
  for (uint64_t lo = begin; lo < end; lo += kBlock) {
    const uint64_t hi = std::min(end, lo + kBlock);
    fill_block(lo, hi, out + (lo - begin));
  }
}

void TensorSource::fill_block(uint64_t begin, uint64_t end, uint16_t* out) const {
  const T5Table& table = t5_table();
  uint16_t draws[kBlock + 8];
  float v[kBlock];
  // The groups of 4 draws holding an extreme bin (0 or 65535): about one in 8192.
  uint64_t extreme[32];
  size_t n_extreme = 0;
  bool all_extreme = false;  // more than 32 of them: check every draw instead
  const uint64_t g0 = begin / 4, g1 = (end + 3) / 4;
  for (uint64_t g = g0; g < g1; ++g) {
    const uint64_t h = random_at(key_, g);
    for (int j = 0; j < 4; ++j) draws[4 * (g - g0) + j] = uint16_t(h >> (16 * j));
    if (has_zero_lane(h) || has_zero_lane(~h)) [[unlikely]] {
      if (n_extreme < std::size(extreme)) extreme[n_extreme++] = g - g0;
      else all_extreme = true;
    }
  }
  // In passes the compiler can vectorize: look up, refine the extreme bins, scale and round.
  const size_t skip = size_t(begin - 4 * g0);
  const uint16_t* d = draws + skip;
  const size_t n = size_t(end - begin);
  for (size_t k = 0; k < n; ++k) v[k] = table.body[d[k]];
  auto refine = [&](size_t k) {
    if (d[k] != 0 && d[k] != 0xffff) return;
    const float t = table.tail[random_at(tail_key_, begin + k) & 0xffff];
    v[k] = d[k] == 0 ? t : -t;
  };
  if (all_extreme) {
    for (size_t k = 0; k < n; ++k) refine(k);
  } else {
    for (size_t i = 0; i < n_extreme; ++i)
      for (size_t j = 0; j < 4; ++j) {
        const size_t at = 4 * extreme[i] + j;
        if (at >= skip && at - skip < n) refine(at - skip);
      }
  }
  uint64_t r = begin / uint64_t(cols_), c = begin % uint64_t(cols_);
  for (size_t k0 = 0; k0 < n; ++r, c = 0) {
    const size_t len = size_t(std::min<uint64_t>(n - k0, uint64_t(cols_) - c));
    const float rs = row_scale_[r];
    const float* cs = col_scale_.data() + c;
    const float* vk = v + k0;
    uint16_t* o = out + k0;
#pragma omp simd
    for (size_t k = 0; k < len; ++k) o[k] = bf16::from_float(vk[k] * rs * cs[k]);
    k0 += len;
  }
}

}  // namespace fp4c::synth
