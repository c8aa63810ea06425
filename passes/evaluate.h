// Accuracy of a quantized model against its reference on an evaluation set, computed by the runtime:
// perplexity of both, KL divergence of each next-token distribution from the reference's, top-1
// agreement and recovery. The two models run in lockstep, layer by layer, so the reference's logits
// never have to be stored for the whole set.
#pragma once

#include <cstdint>
#include <functional>
#include <optional>
#include <vector>

#include "ir/expected.h"
#include "runtime/forward.h"

namespace fp4c::passes {

struct EvalResult {
  int64_t predictions = 0;       // every id after the first of each sequence
  double reference_nll = 0;      // total, natural log
  double reference_perplexity = 0;
  // With a candidate:
  std::optional<double> nll, perplexity;
  std::optional<double> recovery;        // reference perplexity / candidate perplexity
  std::optional<double> kl_mean, kl_median, kl_p99;
  std::optional<double> top1_agreement;
};

// `candidate` may be null (reference perplexity only). `progress` (may be empty) is told after each
// layer.
Expected<EvalResult> evaluate(const runtime::Forward& forward, runtime::WeightSource& reference,
                              runtime::WeightSource* candidate,
                              const std::vector<std::vector<int32_t>>& sequences,
                              const std::function<void(int layer, int layers)>& progress = {});

}  // namespace fp4c::passes
