// Accuracy of a quantized model against its reference on an evaluation set, computed by the runtime:
// perplexity of both, KL divergence of each next-token distribution from the reference's, top-1
// agreement and recovery. The two models run in lockstep, layer by layer, so the reference's logits
// never have to be stored for the whole set.
#pragma once

#include <cstdint>
#include <functional>
#include <optional>
#include <vector>

#include "base/expected.h"
#include "ir/model.h"
#include "runtime/forward.h"

namespace fp4c::quant {

struct EvalOptions {
  // Per-layer output error of every candidate Linear (EvalResult::layers); needs a candidate.
  bool per_layer = false;
};

// The output error of one candidate Linear on the reference model's residual stream: its input is what
// the reference forward feeds the reference Linear, passed through the candidate's own changes (the
// ratio of its norm weight to the reference's at the q/k/v and gate/up sites, as SmoothQuant folds
// factors into the norm; its input fake-quantization with its input global scale, W4A4), and its
// output compared with the reference Linear's: ||Yc - Y||^2 / ||Y||^2 over all tokens (biases left
// out). A function-preserving rewrite without quantization gives ~0.
struct LayerOutputError {
  int layer;
  ir::Role role;       // Q, K, V, O, Gate, Up, Down
  double output_error;
};

struct EvalResult {
  int64_t predictions = 0;       // every id after the first of each sequence
  double reference_nll = 0;      // total, natural log
  double reference_perplexity = 0;
  // With a candidate:
  std::optional<double> nll, perplexity;
  std::optional<double> recovery;        // reference perplexity / candidate perplexity
  std::optional<double> kl_mean, kl_median, kl_p99;
  std::optional<double> top1_agreement;
  // Per sequence (so callers can compute perplexity or recovery on subsets): the predictions (length
  // - 1), the reference's total NLL and the candidate's (empty without a candidate). Each sums, in
  // sequence order, to the totals above within double rounding.
  std::vector<int64_t> sequence_predictions;
  std::vector<double> reference_sequence_nll, sequence_nll;
  // With options.per_layer and a candidate: layer by layer, roles in the order q, k, v, o, gate, up, down.
  std::vector<LayerOutputError> layers;
};

// `candidate` may be null (reference perplexity only). `progress` (may be empty) is told after each
// layer.
Expected<EvalResult> evaluate(const runtime::Engine& forward, runtime::WeightSource& reference,
                              runtime::WeightSource* candidate,
                              const std::vector<std::vector<int32_t>>& sequences, const EvalOptions& options,
                              const std::function<void(int layer, int layers)>& progress = {});
// The same with default options.
Expected<EvalResult> evaluate(const runtime::Engine& forward, runtime::WeightSource& reference,
                              runtime::WeightSource* candidate,
                              const std::vector<std::vector<int32_t>>& sequences,
                              const std::function<void(int layer, int layers)>& progress = {});

}  // namespace fp4c::quant
