// The sparse MoE MLP (runtime/moe.h): the routing against a plain one, the Forward against the float64 reference
// (test/support/forward_reference.h) on a tiny random MoE with norm_topk_prob true and false, hooks per expert,
// all-expert hooks, thread-count independence, the KV-cache decoder against the Forward, and bad input.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <numeric>
#include <random>
#include <vector>

#include "runtime/decoder.h"
#include "runtime/forward.h"
#include "runtime/moe.h"
#include "test/support/forward_reference.h"

namespace fp4c::runtime {
namespace {

using namespace fp4c::testing::reference;

struct MoeRun {
  std::vector<float> logits;
  std::vector<LinearInput> calls;            // pointers dropped
  std::vector<std::vector<float>> inputs;
  std::vector<std::vector<int64_t>> tokens;
};

MoeRun run_forward(const TinyModel& m, const std::vector<std::vector<int32_t>>& seqs, ForwardOptions opt) {
  Forward fwd(m.config, opt);
  auto acts = fwd.embed(m.embedding, seqs);
  EXPECT_TRUE(acts.ok()) << acts.error().message;
  MoeRun res;
  for (int l = 0; l < m.config.num_hidden_layers; ++l) {
    Status st = fwd.layer(l, m.layers[size_t(l)], *acts, [&](const LinearInput& in) {
      LinearInput c = in;
      res.inputs.emplace_back(in.x, in.x + in.rows * in.cols);
      res.tokens.push_back(in.tokens ? std::vector<int64_t>(in.tokens, in.tokens + in.rows) : std::vector<int64_t>{});
      c.x = nullptr;
      c.tokens = nullptr;
      res.calls.push_back(c);
    });
    EXPECT_TRUE(st.ok()) << st.error().message;
  }
  const int64_t V = m.config.vocab_size;
  res.logits.assign(size_t(acts->tokens() * V), NAN);
  Status st = fwd.head(m.final_norm, m.lm_head, *acts, [&](int64_t first, const float* logits, int64_t rows) {
    std::copy(logits, logits + rows * V, res.logits.begin() + first * V);
  });
  EXPECT_TRUE(st.ok()) << st.error().message;
  return res;
}

// A plain routing: probabilities in double, a full stable sort.
TEST(Moe, RoutingMatchesAPlainOneOnRandomLogits) {
  std::mt19937_64 rng(5);
  std::normal_distribution<float> normal(0.0f, 2.0f);
  for (bool renorm : {false, true})
    for (auto [E, k] : {std::pair<int64_t, int64_t>{8, 2}, {128, 8}, {4, 4}, {3, 1}}) {
      const int64_t T = 37;
      std::vector<float> logits(size_t(T * E));
      for (auto& v : logits) v = normal(rng);
      logits[0] = logits[1];   // a tie: the lower index first
      const Routing r = route(logits.data(), T, E, k, renorm);
      std::vector<int64_t> count(size_t(E), 0);
      for (int64_t t = 0; t < T; ++t) {
        std::vector<double> p(static_cast<size_t>(E));
        double mx = -INFINITY, sum = 0;
        for (int64_t e = 0; e < E; ++e) mx = std::max(mx, double(logits[size_t(t * E + e)]));
        for (int64_t e = 0; e < E; ++e) sum += (p[size_t(e)] = std::exp(double(logits[size_t(t * E + e)]) - mx));
        std::vector<int64_t> order(static_cast<size_t>(E));
        std::iota(order.begin(), order.end(), 0);
        std::stable_sort(order.begin(), order.end(), [&](int64_t a, int64_t b) { return p[size_t(a)] > p[size_t(b)]; });
        double chosen = 0;
        for (int64_t j = 0; j < k; ++j) chosen += p[size_t(order[size_t(j)])] / sum;
        for (int64_t j = 0; j < k; ++j) {
          const int64_t e = order[size_t(j)];
          ASSERT_EQ(r.expert[size_t(t * k + j)], e) << "token " << t << " slot " << j;
          const double want = p[size_t(e)] / sum / (renorm ? chosen : 1.0);
          EXPECT_NEAR(r.weight[size_t(t * k + j)], want, 1e-6 * std::max(1.0, want));
          ++count[size_t(e)];
        }
        if (renorm) {
          double s = 0;
          for (int64_t j = 0; j < k; ++j) s += r.weight[size_t(t * k + j)];
          EXPECT_NEAR(s, 1.0, 1e-6);
        }
      }
      // Grouped: each expert's tokens ascending, the counts as routed.
      for (int64_t e = 0; e < E; ++e) {
        ASSERT_EQ(r.count(e), count[size_t(e)]);
        for (int64_t i = r.begin[size_t(e)] + 1; i < r.begin[size_t(e) + 1]; ++i)
          EXPECT_LT(r.token[size_t(i - 1)], r.token[size_t(i)]);
      }
    }
}

class MoeForward : public ::testing::TestWithParam<bool> {};

// The routed forward against the float64 reference; leaving out the renormalization (or adding it) moves the
// logits far more than the tolerance, as does routing to the top-1 instead of top-2.
TEST_P(MoeForward, F32MatchesTheReference) {
  const bool norm = GetParam();
  const TinyModel m = tiny_moe_model(21, norm);
  const auto seqs = tiny_sequences(m.config.vocab_size);
  const ReferenceResult ref = reference_forward(m, seqs, {});
  const MoeRun got = run_forward(m, seqs, {Precision::F32});
  const double err = relative_error(got.logits, ref.logits);
  EXPECT_LT(err, 1e-4);
  RecordProperty("relative_error", sci(err));
  TinyModel flipped = m;
  flipped.config.norm_topk_prob = !norm;
  const double moved = relative_error(run_forward(flipped, seqs, {Precision::F32}).logits, ref.logits);
  EXPECT_GT(moved, 100 * err + 1e-3);
  RecordProperty("renormalization_flipped", sci(moved));
  TinyModel top1 = m;
  top1.config.num_experts_per_tok = 1;
  const double moved_k = relative_error(run_forward(top1, seqs, {Precision::F32}).logits, ref.logits);
  EXPECT_GT(moved_k, 100 * err + 1e-3);
  RecordProperty("top1_instead_of_top2", sci(moved_k));
  // BF16: GEMM inputs rounded, near the BF16 reference.
  const double bf16 = relative_error(run_forward(m, seqs, {Precision::BF16}).logits, reference_forward(m, seqs, {.bf16 = true}).logits);
  EXPECT_LT(bf16, 5e-3);
  RecordProperty("bf16_vs_bf16_reference", sci(bf16));
}

INSTANTIATE_TEST_SUITE_P(NormTopk, MoeForward, ::testing::Values(false, true),
                         [](const auto& info) { return info.param ? "renormalized" : "raw"; });

// Hooks on a sparse layer: the router's input over every token, then per expert its routed tokens' rows
// (ascending token indices, the rows of that input) and its SiLU-mul output; the dense layer as before.
// With moe_all_experts every expert sees every token, and the logits do not change.
TEST(Moe, HooksSeeEachExpertsRoutedTokens) {
  const TinyModel m = tiny_moe_model(22, true);
  const auto seqs = tiny_sequences(m.config.vocab_size);
  const MoeRun got = run_forward(m, seqs, {Precision::F32});
  const int64_t T = 111, H = m.config.hidden_size, E = m.config.num_experts, k = m.config.num_experts_per_tok;
  // layer 0: Q, O, Gate(all), then per expert with tokens Gate, Down; layer 1 dense: Q, O, Gate, Down.
  int64_t routed = 0;
  size_t i = 2;
  ASSERT_EQ(got.calls[i].role, ir::Role::Gate);
  ASSERT_EQ(got.calls[i].expert, -1);
  ASSERT_EQ(got.calls[i].rows, T);
  const std::vector<float>& site = got.inputs[i];
  ++i;
  int last_expert = -1;
  while (got.calls[i].layer == 0) {
    const LinearInput& g = got.calls[i];
    ASSERT_EQ(g.role, ir::Role::Gate);
    ASSERT_GT(g.expert, last_expert);
    last_expert = g.expert;
    ASSERT_EQ(got.tokens[i].size(), size_t(g.rows));
    for (int64_t r = 0; r < g.rows; ++r) {
      if (r) EXPECT_LT(got.tokens[i][size_t(r - 1)], got.tokens[i][size_t(r)]);
      for (int64_t h = 0; h < H; ++h)
        ASSERT_EQ(got.inputs[i][size_t(r * H + h)], site[size_t(got.tokens[i][size_t(r)] * H + h)]);
    }
    routed += g.rows;
    const LinearInput& d = got.calls[i + 1];
    EXPECT_EQ(d.role, ir::Role::Down);
    EXPECT_EQ(d.expert, g.expert);
    EXPECT_EQ(d.rows, g.rows);
    EXPECT_EQ(d.cols, m.config.moe_intermediate_size);
    i += 2;
  }
  EXPECT_EQ(routed, T * k);
  EXPECT_LE(last_expert, int(E - 1));
  EXPECT_EQ(got.calls.size() - i, 4u);

  ForwardOptions all{Precision::F32};
  all.moe_all_experts = true;
  const MoeRun every = run_forward(m, seqs, all);
  EXPECT_EQ(every.logits, got.logits);
  int64_t expert_calls = 0;
  for (size_t j = 0; j < every.calls.size(); ++j)
    if (every.calls[j].expert >= 0) {
      ++expert_calls;
      EXPECT_EQ(every.calls[j].rows, T);
      EXPECT_TRUE(every.tokens[j].empty());
    }
  EXPECT_EQ(expert_calls, 2 * E);
}

TEST(Moe, SameBitsWithOneAndTwoThreads) {
  const TinyModel m = tiny_moe_model(23, false);
  const auto seqs = tiny_sequences(m.config.vocab_size);
  for (Precision p : {Precision::F32, Precision::BF16}) {
    const MoeRun one = run_forward(m, seqs, {p, 1});
    const MoeRun two = run_forward(m, seqs, {p, 2});
    EXPECT_EQ(one.logits, two.logits);
    ASSERT_EQ(one.inputs.size(), two.inputs.size());
    for (size_t i = 0; i < one.inputs.size(); ++i) EXPECT_EQ(one.inputs[i], two.inputs[i]);
  }
}

TEST(Moe, BadParamsAreNamedErrors) {
  const TinyModel m = tiny_moe_model(24, true);
  const auto seqs = tiny_sequences(m.config.vocab_size);
  auto expect_error = [&](TinyModel bad, const std::string& what) {
    Forward fwd(bad.config, {Precision::F32});
    auto acts = fwd.embed(bad.embedding, seqs);
    ASSERT_TRUE(acts.ok());
    Status st = fwd.layer(0, bad.layers[0], *acts);
    ASSERT_FALSE(st.ok()) << what;
    EXPECT_NE(st.error().message.find(what), std::string::npos) << st.error().message;
  };
  TinyModel a = m;
  a.layers[0].experts.pop_back();
  expect_error(a, "layer 0: 5 experts, expected 6");
  TinyModel b = m;
  b.layers[0].experts[3].down.weight.pop_back();
  expect_error(b, "layer 0 expert 3 down");
  TinyModel c = m;
  c.config.num_experts_per_tok = 7;
  expect_error(c, "num_experts_per_tok 7 outside [1, 6]");
  TinyModel d = m;
  d.layers[0].router.out = 5;
  expect_error(d, "layer 0 router: shape");
}

// The decoder (prefill, then one token at a time through the KV cache) against the Forward.
class MemoryWeights : public WeightSource {
 public:
  TinyModel m;
  Expected<std::vector<float>> embedding() override { return m.embedding; }
  Expected<LayerParams> layer(int index) override { return m.layers.at(size_t(index)); }
  Expected<std::vector<float>> final_norm() override { return m.final_norm; }
  Expected<LinearParams> lm_head() override { return m.lm_head; }
};

TEST(Moe, DecoderMatchesTheForward) {
  MemoryWeights w;
  w.m = tiny_moe_model(25, true);
  const ir::ModelConfig& c = w.m.config;
  const int64_t V = c.vocab_size;
  std::mt19937_64 rng(3);
  std::vector<std::vector<int32_t>> seqs(2, std::vector<int32_t>(15));
  for (auto& s : seqs)
    for (auto& id : s) id = int32_t(rng() % uint64_t(V));
  const MoeRun ref = run_forward(w.m, seqs, {Precision::F32});
  auto dec = Decoder::load(w, c, DecoderOptions{Precision::F32, 0});
  ASSERT_TRUE(dec.ok()) << dec.error().message;
  ASSERT_TRUE(dec->start(2, 15).ok());
  const size_t prompt = 6;
  std::vector<std::vector<int32_t>> prompts;
  for (const auto& s : seqs) prompts.emplace_back(s.begin(), s.begin() + std::ptrdiff_t(prompt));
  auto logits = dec->prefill(prompts);
  ASSERT_TRUE(logits.ok()) << logits.error().message;
  double worst = 0;
  auto compare = [&](const float* got, size_t b, size_t pos) {
    const float* want = &ref.logits[(b * 15 + pos) * size_t(V)];
    double diff = 0, mag = 0;
    for (int64_t i = 0; i < V; ++i) {
      diff = std::max(diff, std::fabs(double(got[i]) - want[i]));
      mag = std::max(mag, std::fabs(double(want[i])));
    }
    worst = std::max(worst, diff / mag);
  };
  for (size_t b = 0; b < 2; ++b) compare(&(*logits)[b * size_t(V)], b, prompt - 1);
  for (size_t pos = prompt; pos < 15; ++pos) {
    auto l = dec->step({seqs[0][pos], seqs[1][pos]});
    ASSERT_TRUE(l.ok()) << l.error().message;
    for (size_t b = 0; b < 2; ++b) compare(&(*l)[b * size_t(V)], b, pos);
  }
  EXPECT_LT(worst, 1e-4);
  RecordProperty("worst_relative_difference", sci(worst));
  const auto counts = dec->linear_counts();
  EXPECT_EQ(counts.f32, 4 * 2 + 3 + 1 + 3 * 6 + 1);   // attention x2, dense MLP, router, experts, lm_head
}

}  // namespace
}  // namespace fp4c::runtime
