// Runtime helpers shared by tests: random token sequences, a whole-model forward to logits, and a
// weight source that edits another's layers.
#pragma once

#include <gtest/gtest.h>

#include <algorithm>
#include <functional>
#include <random>
#include <vector>

#include "runtime/forward.h"

namespace fp4c::testing {

// Three sequences of 6, 15 and 24 ids below `vocab`.
inline std::vector<std::vector<int32_t>> random_sequences(uint64_t seed, int vocab) {
  std::mt19937_64 rng(seed);
  std::vector<std::vector<int32_t>> seqs;
  for (int s = 0; s < 3; ++s) {
    std::vector<int32_t> ids(size_t(6 + 9 * s));
    for (auto& id : ids) id = int32_t(rng() % uint64_t(vocab));
    seqs.push_back(ids);
  }
  return seqs;
}

// Logits [tokens, vocab] of every sequence through the whole model (empty after a failed expectation).
inline std::vector<float> logits(const runtime::Forward& forward, runtime::WeightSource& w,
                                 const std::vector<std::vector<int32_t>>& seqs, int layers) {
  std::vector<float> out;
  auto acts = forward.embed(w, seqs);
  EXPECT_TRUE(acts.ok()) << acts.error().message;
  if (!acts.ok()) return out;
  for (int i = 0; i < layers; ++i) {
    auto p = w.layer(i);
    EXPECT_TRUE(p.ok()) << p.error().message;
    if (!p.ok()) return {};
    EXPECT_TRUE(forward.layer(i, *p, *acts).ok());
  }
  auto fn = w.final_norm();
  auto head = w.lm_head();
  EXPECT_TRUE(fn.ok() && head.ok());
  if (!fn.ok() || !head.ok()) return {};
  const int64_t vocab = head->out;
  out.resize(size_t(acts->tokens() * vocab));
  EXPECT_TRUE(forward
                  .head(*fn, *head, *acts,
                        [&](int64_t first, const float* l, int64_t rows) {
                          std::copy(l, l + rows * vocab, out.begin() + first * vocab);
                        })
                  .ok());
  return out;
}

// Another source's weights with `edit` applied to each layer.
class EditedWeights : public runtime::WeightSource {
 public:
  EditedWeights(runtime::WeightSource& inner, std::function<void(int, runtime::LayerParams&)> edit)
      : inner_(inner), edit_(std::move(edit)) {}
  Expected<std::vector<float>> embedding() override { return inner_.embedding(); }
  Expected<std::vector<float>> embedding_rows(std::span<const int32_t> ids, int64_t hidden) override {
    return inner_.embedding_rows(ids, hidden);
  }
  Expected<runtime::LayerParams> layer(int index) override {
    auto p = inner_.layer(index);
    if (p.ok()) edit_(index, *p);
    return p;
  }
  Expected<std::vector<float>> final_norm() override { return inner_.final_norm(); }
  Expected<runtime::LinearParams> lm_head() override { return inner_.lm_head(); }

 private:
  runtime::WeightSource& inner_;
  std::function<void(int, runtime::LayerParams&)> edit_;
};

}  // namespace fp4c::testing
