// Holding converted weights across calls (Forward::hold_converted_weights, as the stats pass does for each
// layer's blocks; Forward::hold_converted_head, as eval with an artifact does for both heads' slices) gives
// the bits of converting them per call, on random weights (fresh seeds), row counts changing between calls.
#include <gtest/gtest.h>

#include <algorithm>
#include <random>
#include <string>
#include <vector>

#include "runtime/forward.h"
#include "test/support/forward_reference.h"

namespace fp4c::runtime {
namespace {

using namespace fp4c::testing::reference;

TEST(HeldWeights, HeldConvertedWeightsGiveTheBitsOfFreshConversions) {
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

TEST(HeldWeights, HeldHeadGivesTheLogitsOfFreshConversions) {
  // Eval's lockstep: slices of the rows through head(), each slice one chunk, the last one shorter (a
  // second row count), alternating between two heads, as with a reference and a candidate.
  const uint64_t seed = std::random_device{}();
  SCOPED_TRACE("seed " + std::to_string(seed));
  const TinyModel m = tiny_model(false, seed);
  LinearParams other = m.lm_head;
  std::mt19937_64 rng(seed ^ 0x9e3779b97f4a7c15ull);
  std::normal_distribution<float> noise(0.0f, 0.01f);
  for (float& w : other.weight) w += noise(rng);
  const auto seqs = tiny_sequences(m.config.vocab_size);
  const int64_t V = m.config.vocab_size, H = m.config.hidden_size;
  for (Precision p : {Precision::F32, Precision::BF16}) {
    SCOPED_TRACE(precision_name(p));
    const Forward fresh(m.config, {p, 2}), holding(m.config, {p, 2});
    auto acts = fresh.embed(m.embedding, seqs);
    ASSERT_TRUE(acts.ok());
    for (int l = 0; l < m.config.num_hidden_layers; ++l) ASSERT_TRUE(fresh.layer(l, m.layers[size_t(l)], *acts).ok());
    const int64_t T = acts->tokens(), slice_rows = std::max<int64_t>(1, T / 3 + 1);
    ASSERT_GT(T % slice_rows, 0) << "the last slice must be shorter";
    const auto token_a = holding.hold_converted_head(m.lm_head);
    const auto token_b = holding.hold_converted_head(other);
    for (int pass = 0; pass < 2; ++pass)
      for (int64_t first = 0; first < T; first += slice_rows) {
        const int64_t rows = std::min(slice_rows, T - first);
        Activations s;
        s.hidden.assign(acts->hidden.begin() + first * H, acts->hidden.begin() + (first + rows) * H);
        s.offsets = {0, rows};
        for (const LinearParams* head : {static_cast<const LinearParams*>(&m.lm_head), static_cast<const LinearParams*>(&other)}) {
          std::vector<float> want, got;
          auto keep = [V](std::vector<float>& dst) {
            return [&dst, V](int64_t, const float* l, int64_t n) { dst.insert(dst.end(), l, l + n * V); };
          };
          ASSERT_TRUE(fresh.head(m.final_norm, *head, s, keep(want), rows).ok());
          ASSERT_TRUE(holding.head(m.final_norm, *head, s, keep(got), rows).ok());
          ASSERT_EQ(got.size(), size_t(rows * V));
          EXPECT_TRUE(std::equal(got.begin(), got.end(), want.begin(), want.end()))
              << "slice at " << first << ", pass " << pass;
        }
      }
  }
}

}  // namespace
}  // namespace fp4c::runtime
