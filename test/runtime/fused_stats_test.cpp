// The producers of Linear inputs that fold per-channel statistics in as they write (RMSNorm, the gated
// activation; runtime/channel_stats.h) against the unfused kernel followed by the statistics kernel (bit
// for bit: output and statistics) and by the slow obvious reference (value for value), on random data
// (fresh seeds) with specials, odd shapes, folded in several calls, at 1, 2 and 3 threads. Then the forward: a layer with the fused sites gives
// the hidden states and statistics of a layer whose hook computes them, and holding the converted weights
// across calls (Forward::hold_converted_weights) gives the bits of converting them per call.
#include <gtest/gtest.h>

#include <omp.h>

#include <cmath>
#include <cstring>
#include <limits>
#include <map>
#include <random>
#include <string>
#include <vector>

#include "runtime/channel_stats.h"
#include "runtime/elementwise.h"
#include "runtime/forward.h"
#include "test/support/forward_reference.h"

namespace fp4c::runtime {
namespace {

using namespace fp4c::testing::reference;

struct Acc {
  std::vector<float> absmax, min, max;
  std::vector<double> ss;
  explicit Acc(int64_t cols = 0) { reset(cols); }
  void reset(int64_t cols) {
    absmax.assign(size_t(cols), 0.0f);
    min.assign(size_t(cols), std::numeric_limits<float>::infinity());
    max.assign(size_t(cols), -std::numeric_limits<float>::infinity());
    ss.assign(size_t(cols), 0.0);
  }
  ChannelAccumulators view() { return {absmax.data(), min.data(), max.data(), ss.data()}; }
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

// Equal values, a NaN matching any NaN (the reference's NaNs may carry other sign bits: the kernel's
// multiply-adds propagate the other operand's NaN).
template <typename T>
bool same_values(const std::vector<T>& a, const std::vector<T>& b) {
  if (a.size() != b.size()) return false;
  for (size_t i = 0; i < a.size(); ++i)
    if (!(a[i] == b[i] || (std::isnan(a[i]) && std::isnan(b[i])))) return false;
  return true;
}

void expect_same_values(const Acc& got, const Acc& want) {
  EXPECT_TRUE(same_values(got.absmax, want.absmax)) << "absmax";
  EXPECT_TRUE(same_values(got.min, want.min)) << "min";
  EXPECT_TRUE(same_values(got.max, want.max)) << "max";
  EXPECT_TRUE(same_values(got.ss, want.ss)) << "sum of squares";
}

std::vector<float> random_values(std::mt19937_64& rng, size_t n, float spread, bool specials) {
  std::normal_distribution<float> normal(0.0f, 1.0f);
  std::uniform_real_distribution<float> scale(-spread, spread);
  std::vector<float> x(n);
  for (auto& v : x) v = normal(rng) * std::exp2(scale(rng));
  if (specials) {
    const float special[] = {0.0f, -0.0f, std::numeric_limits<float>::infinity(),
                             -std::numeric_limits<float>::infinity(), std::numeric_limits<float>::quiet_NaN(),
                             std::numeric_limits<float>::denorm_min(), -1e-40f, 100.0f, -100.0f};
    for (size_t i = 0; i < n / 97 + 1; ++i) x[size_t(rng() % n)] = special[rng() % (sizeof special / sizeof special[0])];
  }
  return x;
}

class Threads {
 public:
  explicit Threads(int n) : saved_(omp_get_max_threads()) { omp_set_num_threads(n); }
  ~Threads() { omp_set_num_threads(saved_); }

 private:
  int saved_;
};

const int64_t kShapes[][2] = {{1, 1}, {3, 17}, {65, 31}, {200, 256}, {129, 300}, {37, 1000}, {300, 896}, {70, 4864}};

TEST(FusedStats, RmsNormEqualsNormThenStatisticsBitForBit) {
  const uint64_t seed = std::random_device{}();
  SCOPED_TRACE("seed " + std::to_string(seed));
  std::mt19937_64 rng(seed);
  for (const auto& shape : kShapes)
    for (bool specials : {false, true}) {
      const int64_t rows = shape[0], cols = shape[1];
      SCOPED_TRACE(std::to_string(rows) + "x" + std::to_string(cols) + (specials ? " with specials" : ""));
      const auto x = random_values(rng, size_t(rows * cols), 6.0f, specials);
      const auto w = random_values(rng, size_t(cols), 1.0f, false);
      const double eps = 1e-6;
      std::vector<float> want_out(x.size());
      rms_norm(x.data(), w.data(), rows, cols, eps, want_out.data());
      // Bit for bit against today's path (the norm, then the statistics kernel), value for value against
      // the slow obvious reference.
      Acc want(cols), ref(cols);
      accumulate_channel_stats(want_out.data(), rows, cols, want.view());
      accumulate_channel_stats_reference(want_out.data(), rows, cols, ref.view());
      expect_same_values(want, ref);
      for (int threads : {1, 2, 3}) {
        SCOPED_TRACE(std::to_string(threads) + " threads");
        Threads t(threads);
        std::vector<float> out(x.size(), NAN);
        Acc got(cols);
        rms_norm_channel_stats(x.data(), w.data(), rows, cols, eps, out.data(), got.view());
        EXPECT_TRUE(same_bits(out, want_out)) << "normalized rows";
        expect_same(got, want);
        // In place, as the attention output norm runs.
        std::vector<float> inplace = x;
        Acc got2(cols);
        rms_norm_channel_stats(inplace.data(), w.data(), rows, cols, eps, inplace.data(), got2.view());
        EXPECT_TRUE(same_bits(inplace, want_out)) << "in place";
        expect_same(got2, want);
      }
    }
}

TEST(FusedStats, GatedActivationEqualsActivationThenStatisticsBitForBit) {
  const uint64_t seed = std::random_device{}();
  SCOPED_TRACE("seed " + std::to_string(seed));
  std::mt19937_64 rng(seed);
  for (const std::string act : {"silu", "gelu_pytorch_tanh"})
    for (const auto& shape : kShapes)
      for (bool specials : {false, true}) {
        const int64_t rows = shape[0], cols = shape[1];
        SCOPED_TRACE(act + " " + std::to_string(rows) + "x" + std::to_string(cols) + (specials ? " with specials" : ""));
        const auto gate = random_values(rng, size_t(rows * cols), 3.0f, specials);
        const auto up = random_values(rng, size_t(rows * cols), 3.0f, specials);
        std::vector<float> want_out = gate;
        activation_mul(act, want_out.data(), up.data(), rows * cols);
        Acc want(cols), ref(cols);
        accumulate_channel_stats(want_out.data(), rows, cols, want.view());
        accumulate_channel_stats_reference(want_out.data(), rows, cols, ref.view());
        expect_same_values(want, ref);
        for (int threads : {1, 2, 3}) {
          SCOPED_TRACE(std::to_string(threads) + " threads");
          Threads t(threads);
          // Folded in chunks of rows, as the forward's up projection runs (the last one shorter).
          std::vector<float> out = gate;
          Acc got(cols);
          const int64_t chunk = 1 + int64_t(rng() % uint64_t(rows + 1));
          for (int64_t r = 0; r < rows; r += chunk) {
            const int64_t n = std::min(chunk, rows - r);
            activation_mul_channel_stats(act, out.data() + r * cols, up.data() + r * cols, n, cols, got.view());
          }
          EXPECT_TRUE(same_bits(out, want_out)) << "activations (chunks of " << chunk << " rows)";
          expect_same(got, want);
        }
      }
}

// Per-site statistics of one forward over the tiny model's layers: the hook computing all of them (the
// reference kernel) or the producers folding Q, Gate and Down in.
struct LayerRun {
  std::vector<float> hidden;
  std::map<std::pair<int, ir::Role>, Acc> sites;
  std::map<std::pair<int, ir::Role>, int> hook_calls;
};

LayerRun run_layers(const TinyModel& m, const std::vector<std::vector<int32_t>>& seqs, Precision p, int threads,
                    bool fused) {
  Forward fwd(m.config, {p, threads});
  auto acts = fwd.embed(m.embedding, seqs);
  EXPECT_TRUE(acts.ok());
  LayerRun run;
  for (int l = 0; l < m.config.num_hidden_layers; ++l) {
    auto site = [&](ir::Role role, int64_t cols) -> Acc& {
      Acc& a = run.sites[{l, role}];
      if (a.absmax.empty()) a.reset(cols);
      return a;
    };
    const LinearHook hook = [&](const LinearInput& in) {
      ++run.hook_calls[{l, in.role}];
      const bool expect_folded = fused && in.role != ir::Role::O;
      EXPECT_EQ(in.channel_stats_folded, expect_folded) << "layer " << l << " role " << int(in.role);
      if (!in.channel_stats_folded) accumulate_channel_stats_reference(in.x, in.rows, in.cols, site(in.role, in.cols).view());
    };
    const ChannelStatsSites sites = [&](ir::Role role, int64_t cols) { return site(role, cols).view(); };
    const Status st = fused ? fwd.layer(l, m.layers[size_t(l)], *acts, hook, sites) : fwd.layer(l, m.layers[size_t(l)], *acts, hook);
    EXPECT_TRUE(st.ok()) << st.error().message;
  }
  run.hidden.assign(acts->hidden.begin(), acts->hidden.end());
  return run;
}

TEST(FusedStats, ForwardLayersFoldTheSameStatisticsAsTheHook) {
  const uint64_t seed = std::random_device{}();
  SCOPED_TRACE("seed " + std::to_string(seed));
  const TinyModel m = tiny_model(false, seed, seed % 2 == 1);
  const auto seqs = tiny_sequences(m.config.vocab_size);
  for (Precision p : {Precision::F32, Precision::BF16}) {
    const LayerRun want = run_layers(m, seqs, p, 1, false);
    ASSERT_EQ(want.sites.size(), size_t(4 * m.config.num_hidden_layers));
    for (int threads : {1, 2, 3}) {
      SCOPED_TRACE(std::to_string(threads) + " threads, precision " + std::to_string(int(p)));
      const LayerRun got = run_layers(m, seqs, p, threads, true);
      EXPECT_TRUE(same_bits(got.hidden, want.hidden));
      EXPECT_EQ(got.hook_calls, want.hook_calls);
      ASSERT_EQ(got.sites.size(), want.sites.size());
      for (const auto& [key, acc] : want.sites) {
        SCOPED_TRACE("layer " + std::to_string(key.first) + " role " + std::to_string(int(key.second)));
        expect_same(got.sites.at(key), acc);
      }
    }
  }
}

TEST(FusedStats, HeldConvertedWeightsGiveTheBitsOfFreshConversions) {
  // Blocks of sequences through each layer with the layer's weights held, lengths changing between
  // blocks (a conversion for each row count), against a Forward converting per call.
  const uint64_t seed = std::random_device{}();
  SCOPED_TRACE("seed " + std::to_string(seed));
  const TinyModel m = tiny_model(true, seed);
  const std::vector<std::vector<std::vector<int32_t>>> blocks = {
      {{1, 2, 3, 4, 5}, {6, 7, 8}}, {{9, 10, 11, 12, 13}, {14, 15, 16}}, {{17, 18}}, {{19, 20, 21, 22, 23, 24, 25, 26}}};
  for (Precision p : {Precision::F32, Precision::BF16}) {
    const Forward fresh(m.config, {p, 2}), holding(m.config, {p, 2});
    std::vector<Activations> a, b;
    for (const auto& seqs : blocks) {
      a.push_back(*fresh.embed(m.embedding, seqs));
      b.push_back(*holding.embed(m.embedding, seqs));
    }
    for (int l = 0; l < m.config.num_hidden_layers; ++l) {
      const LayerParams params = m.layers[size_t(l)];
      const auto token = holding.hold_converted_weights(params);
      for (size_t k = 0; k < blocks.size(); ++k) {
        ASSERT_TRUE(fresh.layer(l, m.layers[size_t(l)], a[k]).ok());
        ASSERT_TRUE(holding.layer(l, params, b[k]).ok());
      }
    }
    for (size_t k = 0; k < blocks.size(); ++k)
      EXPECT_TRUE(std::equal(a[k].hidden.begin(), a[k].hidden.end(), b[k].hidden.begin(), b[k].hidden.end()))
          << "block " << k;
    // Another LayerParams object is not the held one: its own weights are used.
    LayerParams other = m.layers[0];
    const auto token = holding.hold_converted_weights(m.layers[1]);
    for (float& v : other.q.weight) v *= 0.5f;
    Activations x = *fresh.embed(m.embedding, blocks[0]), y = *holding.embed(m.embedding, blocks[0]);
    ASSERT_TRUE(fresh.layer(0, other, x).ok());
    ASSERT_TRUE(holding.layer(0, other, y).ok());
    EXPECT_TRUE(std::equal(x.hidden.begin(), x.hidden.end(), y.hidden.begin(), y.hidden.end()));
  }
}

}  // namespace
}  // namespace fp4c::runtime
