// The `auto` pass: per Linear (fused groups decided together), every quantizer fp4c has (max, mse,
// weighted, 4over6, localhessian, gptq, gptq+localhessian) is tried on the model as it stands, and the
// one whose output error on held-out calibration tokens is least is kept; pack then quantizes each Linear
// with its choice. The error of every candidate goes into the manifest.
#pragma once

#include <functional>
#include <string>
#include <vector>

#include "ir/expected.h"
#include "ir/model.h"
#include "passes/gptq.h"
#include "passes/stats.h"
#include "runtime/forward.h"

namespace fp4c::passes {

struct AutoOptions {
  GptqOptions gptq;   // for the gptq candidates
};

// Needs model.annotations.decision (a plan; for W4A4 each Linear's input_amax) and `fit`: statistics with
// second moments of the calibration tokens the candidates may use (not `heldout`). Runs the model
// (`weights`: as the pipeline has rewritten it) over `heldout` layer by layer; at each Linear group's input
// X, for every NVFP4 member and candidate: ||fq(X) Q(W)^T - X W^T||^2 (fq: W4A4 activation
// fake-quantization with the Linear's input global scale; none for W4A16), G from the fused group's max |W|
// as pack computes it. A unit (fused group or lone Linear) keeps the candidate with the least summed
// error over its members (ties: the earlier, cheaper one). Writes model.annotations.choice.
Status choose_quantizers(ir::Model& model, const runtime::Forward& forward, runtime::WeightSource& weights,
                         const ActivationStats& fit, const std::vector<std::vector<int32_t>>& heldout,
                         const AutoOptions& options, const std::function<void(int layer, int layers)>& progress = {});

// A readable table of the choices and every candidate's error (for --print-after auto).
std::string format_choices(const ir::Model& model);

}  // namespace fp4c::passes
