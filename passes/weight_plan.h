// The weight plan: which tensors become NVFP4 and, for every other one, why it stays as it came.
#pragma once

#include <string>
#include <vector>

#include "ir/expected.h"
#include "ir/model.h"

namespace fp4c::passes {

enum class Scheme : uint8_t { W4A16, W4A4 };
std::string_view scheme_name(Scheme s);

struct WeightPlanOptions {
  Scheme scheme = Scheme::W4A16;
  // ECMAScript regexes searched in module names ("model.layers.0.mlp.down_proj"); a match keeps
  // that Linear in BF16. Anchor with ^ and $ for a whole-name match.
  std::vector<std::string> ignore;
};

// Writes model.annotations.decision for every tensor:
//  - embeddings, norms, biases and other non-Linear tensors: kept, reason not_linear / embedding;
//  - lm_head: kept (reason lm_head), as every peer does by default;
//  - a Linear whose in_features % 16 != 0: kept, reason names in_features;
//  - a Linear matching --ignore: kept, reason names the pattern;
//  - the other members of a fused group with a kept member: kept too (a serving engine runs the group
//    as one GEMM in one format), reason names the member that was kept.
// Errors: an invalid regex (naming it).
Status plan_weights(ir::Model& model, const WeightPlanOptions& options);

}  // namespace fp4c::passes
