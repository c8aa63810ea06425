// evaluate() without a candidate (one pass of the head, lm_head freed once converted, each chunk of
// logits reduced in place by the vectorized log-sum-exp) gives the reference figures the lockstep path
// with a candidate gives (std::exp over stored logits): per sequence and in total within 1e-13
// relative, the same prediction counts, at F32 and BF16, on random tiny models (fresh seeds).
#include <gtest/gtest.h>

#include <cmath>
#include <random>

#include "frontend/checkpoint.h"
#include "quant/eval_metrics.h"
#include "runtime/checkpoint_weights.h"
#include "test/support/tiny_checkpoint.h"

namespace fp4c::testing {
namespace {

TEST(EvaluateReferenceOnly, SameFiguresAsWithACandidate) {
  const uint64_t seed = std::random_device{}();
  SCOPED_TRACE("seed " + std::to_string(seed));
  TinyShape shape;
  shape.architecture = "Qwen2ForCausalLM";
  TempDir tmp;
  write_checkpoint(tmp.path / "m", shape, tiny_tensors(shape, seed));
  auto ckpt = frontend::open_checkpoint((tmp.path / "m").string());
  ASSERT_TRUE(ckpt.ok()) << ckpt.error().message;
  std::mt19937_64 rng(seed ^ 0x9e3779b97f4a7c15ull);
  std::vector<std::vector<int32_t>> seqs;
  for (int s = 0; s < 5; ++s) {
    std::vector<int32_t> ids(size_t(3 + 11 * s));
    for (auto& id : ids) id = int32_t(rng() % uint64_t(shape.vocab));
    seqs.push_back(ids);
  }
  for (auto precision : {runtime::Precision::F32, runtime::Precision::BF16}) {
    SCOPED_TRACE(std::string(runtime::precision_name(precision)));
    runtime::Forward forward(ckpt->model.config, runtime::ForwardOptions{.precision = precision});
    runtime::CheckpointWeights ref(ckpt->model, ckpt->refs, true), cand(ckpt->model, ckpt->refs, false);
    auto alone = quant::evaluate(forward, ref, nullptr, seqs);
    ASSERT_TRUE(alone.ok()) << alone.error().message;
    auto paired = quant::evaluate(forward, ref, &cand, seqs);
    ASSERT_TRUE(paired.ok()) << paired.error().message;
    EXPECT_EQ(alone->predictions, paired->predictions);
    EXPECT_EQ(alone->sequence_predictions, paired->sequence_predictions);
    EXPECT_NEAR(alone->reference_nll, paired->reference_nll, 1e-13 * paired->reference_nll);
    EXPECT_NEAR(alone->reference_perplexity, paired->reference_perplexity, 1e-13 * paired->reference_perplexity);
    ASSERT_EQ(alone->reference_sequence_nll.size(), seqs.size());
    for (size_t s = 0; s < seqs.size(); ++s)
      EXPECT_NEAR(alone->reference_sequence_nll[s], paired->reference_sequence_nll[s],
                  1e-13 * paired->reference_sequence_nll[s]) << "sequence " << s;
    EXPECT_FALSE(alone->nll.has_value());
  }
}

}  // namespace
}  // namespace fp4c::testing
