// The `sensitivity` pass: how much each NVFP4 Linear's quantization disturbs its output on calibration
// activations (optionally the end-to-end KL with only it quantized), and a skip list of the most
// sensitive ones under a parameter budget, for plan_weights' `keep`.
#pragma once

#include <cstdint>
#include <functional>
#include <string>
#include <utility>
#include <vector>

#include "base/expected.h"
#include "ir/model.h"
#include "runtime/forward.h"

namespace fp4c::passes {

struct SensitivityOptions {
  double budget_percent = 2.0;  // the most Linear parameters kept in BF16, in % of those the plan makes NVFP4
  int max_layers = 0;           // the most units kept in BF16 (0: no limit besides the budget)
  bool kl = false;              // rank by the mean KL of the model with only that unit quantized
};

// A unit decided as one: a fused group (its members, which share scales and one GEMM) or a lone Linear.
struct SensitivityUnit {
  std::vector<ir::TensorId> members;
  int64_t parameters = 0;   // weight elements of all members
  double score = 0;         // what ranks it: output error, or KL
};

struct UnitSelection {
  std::vector<size_t> order;       // unit indices, most sensitive first (rank = position + 1)
  std::vector<size_t> rank;        // per unit, 1-based
  std::vector<bool> kept;          // per unit
  int64_t budget_parameters = 0;   // floor(total * budget_percent / 100)
  int64_t kept_parameters = 0;
};

// The rule: units ranked by score descending (NaN first, as the most suspicious; ties by index);
// walking that order, a unit is kept if its parameters fit in what is left of the budget and fewer
// than max_layers units (when > 0) are kept already; a unit that does not fit is passed over.
UnitSelection select_units(const std::vector<SensitivityUnit>& units, int64_t total_parameters,
                           double budget_percent, int max_layers);

// Needs model.annotations.decision (plan_weights) to know which Linears are NVFP4 and, for W4A4, each
// one's input_amax. Runs the model (`weights`: the BF16 model as the pipeline has rewritten it) over
// `sequences` layer by layer with a hook; for each NVFP4 Linear: the output error
// (quant::linear_output_error) of its NVFP4 round trip (global scale from the max |W| over its fused group,
// max block rule) with its input fake-quantized at nvfp4::global_scale(input_amax) (none for W4A16)
// against the unquantized Linear on the same input. With options.kl, also the mean KL
// (quant::evaluate) of the model with only that unit quantized against the model unquantized, over
// `sequences` (one evaluation of both per unit).
// A unit's error = sum of its members' error_sq / sum of their reference_sq (its KL with kl); the
// units are chosen by select_units over all NVFP4 Linear parameters. Writes
// model.annotations.sensitivity (each Linear's own output error, its unit's KL and rank) for every
// NVFP4 Linear and returns the members of kept units with SkipReason{Sensitivity, "output error
// 0.0123, rank 2 of 35, budget 2%"}, for plan_weights' `keep`.
// `progress` (may be empty) is told after each layer of the output-error run, then with kl after each
// unit's evaluation as (unit, units).
Expected<std::vector<std::pair<ir::TensorId, ir::SkipReason>>> run_sensitivity(
    ir::Model& model, const runtime::Forward& forward, runtime::WeightSource& weights,
    const std::vector<std::vector<int32_t>>& sequences, const SensitivityOptions& options,
    const std::function<void(int layer, int layers)>& progress = {});

// A readable table of model.annotations.sensitivity in rank order (for `--print-after sensitivity`):
// rank, output error, KL, parameters, decision and module of every Linear that has one.
std::string format_sensitivity(const ir::Model& model);

}  // namespace fp4c::passes
