// The one list of passes: the pipeline parser, `fp4c passes` and the help text all come from it.
#include "passes/pipeline.h"

namespace fp4c::passes {

const std::vector<PassSpec>& pass_registry() {
  static const std::vector<PassSpec> passes{
      {"stats",
       "per-channel statistics (absmax, min, max, mean square, tokens) of every Linear group's input over "
       "the calibration set, from a layer-by-layer forward; needs --calib",
       {{"second_moments", OptionType::Bool, "false", "also the input second-moment matrix X^T X / tokens", {}}},
       {},
       {}},
      {"blockscale",
       "NVFP4 global scales (one per fused group) and the FP8 block-scale rule",
       {{"rule", OptionType::Choice, "max",
         "max: the block max maps to 6 (NVFP4.md §3); mse: the FP8 scale with the least squared error of "
         "the block; weighted: the same error weighted by each input channel's mean square (needs stats); "
         "4over6: the block max maps to 6 or to 4, whichever errs less",
         {"max", "mse", "weighted", "4over6"}}},
       {},
       {}},
      {"pack",
       "streams every tensor into the artifact: NVFP4 Linears packed, the rest as they came",
       {},
       {"blockscale"},
       {}},
  };
  return passes;
}

}  // namespace fp4c::passes
