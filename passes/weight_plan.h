// The weight plan: which tensors become NVFP4 and, for every other one, why it stays as it came.
#pragma once

#include <optional>
#include <string>
#include <utility>
#include <vector>

#include "base/expected.h"
#include "ir/model.h"
#include "passes/stats.h"

namespace fp4c::passes {

// NVFP4 weights (w4a16) and activations (w4a4); MXFP4 weights (mxfp4a16) and activations (mxfp4: block
// scales of activations computed at run time, no calibrated scale).
enum class Scheme : uint8_t { W4A16, W4A4, Mxfp4A16, Mxfp4 };
std::string_view scheme_name(Scheme s);             // "w4a16", "w4a4", "mxfp4a16", "mxfp4"
std::optional<Scheme> parse_scheme(std::string_view name);
bool is_mxfp4(Scheme s);
bool quantizes_activations(Scheme s);               // w4a4, mxfp4
ir::Format weight_format(Scheme s);                 // NVFP4 or MXFP4

struct WeightPlanOptions {
  Scheme scheme = Scheme::W4A16;
  // ECMAScript regexes searched in module names ("model.layers.0.mlp.down_proj"); a match keeps
  // that Linear in BF16. Anchor with ^ and $ for a whole-name match.
  std::vector<std::string> ignore;
  // W4A4: the statistics the input global scales come from (required for W4A4).
  const ActivationStats* stats = nullptr;
  // Linears kept in BF16 with the given reason (the sensitivity pass's skip list), as for --ignore:
  // a Linear that stays BF16 for a reason listed above keeps that reason; the other members of its
  // fused group are kept too. Each id must be a Linear weight (not lm_head or a router).
  std::vector<std::pair<ir::TensorId, ir::SkipReason>> bf16_keep;   // Linears kept in BF16, with why
};

// Writes model.annotations.decision for every tensor:
//  - embeddings, norms, biases and other non-Linear tensors: kept, reason not_linear / embedding;
//  - lm_head: kept (reason lm_head), as every peer does by default;
//  - a Linear whose in_features is not a multiple of the block (16 NVFP4, 32 MXFP4): kept, reason
//    names in_features;
//  - a Linear matching --ignore: kept, reason names the pattern;
//  - a Linear in options.bf16_keep: kept with the reason given there;
//  - the other members of a fused group with a kept member: kept too (a serving engine runs the group
//    as one GEMM in one format), reason names the member that was kept.
//  - MXFP4 schemes: the quantized Linears get format MXFP4 and no input amax (MXFP4 activations are
//    scaled per block at run time);
//  - W4A4: each NVFP4 Linear gets the max |x| of its input from the statistics; a Linear whose input
//    saw no token or only zeros (no scale can be chosen) is kept, reason no_calibration_data.
// Errors: an invalid regex (naming it); W4A4 without statistics; a keep entry that is not a Linear
// weight of the model.
Status plan_weights(ir::Model& model, const WeightPlanOptions& options);

}  // namespace fp4c::passes
