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
      {"smoothquant",
       "SmoothQuant as llm-compressor does it by default (NVFP4.md §7): per input channel s = range^alpha / "
       "(2 maxW)^(1-alpha), floored; the norm weight divided by s, the balanced Linears' columns multiplied "
       "(input_layernorm -> q,k,v; post_attention_layernorm -> gate,up); the model computes the same function",
       {{"alpha", OptionType::Float, "0.5", "migration strength: 0 leaves activations alone, 1 moves all range into weights", {}, 0, 1},
        {"min_scale", OptionType::Float, "1e-5", "floor of the factors", {}, 1e-30, 1},
        {"extra", OptionType::Bool, "false",
         "also up -> down (rows of up divided, columns of down multiplied) and v -> o when the model has as many "
         "key/value heads as query heads",
         {}}},
       {"stats"},
       {"stats"}},
      {"outliers",
       "per Linear: how concentrated its weight columns and its input channels are (max/median, kurtosis, "
       "channels above k x median, the top channels); into the manifest and `fp4c inspect --outliers`",
       {{"k", OptionType::Float, "8", "a channel is an outlier above k x the median magnitude", {}, 1, 1e6},
        {"top", OptionType::Int, "8", "how many of the largest channels to record", {}, 0, 65536}},
       {},
       {}},
      {"sensitivity",
       "per Linear: output error under W4A4 fake-quantization on calibration activations (optionally the "
       "end-to-end KL with only that Linear's group quantized); the most sensitive groups are kept in BF16 "
       "within the budget (fused groups decided together; rule: descending error, a group that does not fit "
       "is passed over)",
       {{"budget", OptionType::Percent, "2%", "the most Linear parameters kept in BF16", {}, 0, 100},
        {"max_layers", OptionType::Int, "0", "the most Linear groups kept in BF16 (0: no limit besides budget)", {},
         0, 1e6},
        {"metric", OptionType::Choice, "output",
         "output: the group's own output error; kl: mean KL of the model with only that group quantized (one "
         "forward over the calibration set per group)",
         {"output", "kl"}}},
       {"stats"},
       {}},
      {"blockscale",
       "NVFP4 global scales (one per fused group) and the FP8 block-scale rule",
       {{"rule", OptionType::Choice, "max",
         "max: the block max maps to 6 (NVFP4.md §3); mse: the FP8 scale with the least squared error of "
         "the block; weighted: the same error weighted by each input channel's mean square (needs stats); "
         "4over6: the block max maps to 6 or to 4, whichever errs less; localhessian: the FP8 scale minimizing "
         "e^T H_b e with H_b the block's 16x16 input second-moment block (ModelOpt; needs stats{second_moments=true})",
         {"max", "mse", "weighted", "4over6", "localhessian"}}},
       {},
       {}},
      {"gptq",
       "GPTQ on the NVFP4 grid: each Linear's columns quantized in order, each one's error compensated on the "
       "columns after it through the input second-moment matrix (needs stats{second_moments=true}); block "
       "scales chosen from the error-updated weights as each group of 16 columns is reached",
       {{"damp", OptionType::Float, "0.01", "dampening, relative to the mean of diag(H)", {}, 0, 10},
        {"act_order", OptionType::Bool, "false", "process 16-column groups by descending diag(H)", {}},
        {"block", OptionType::Int, "128", "lazy-batch width in columns (a multiple of 16; the result does not depend on it)",
         {}, 16, 1 << 20, 16},
        {"scales", OptionType::Choice, "max", "each group's block scales: max rule, or the local-Hessian rule",
         {"max", "localhessian"}}},
       {"stats"},
       {}},
      {"auto",
       "per Linear (fused groups together), every quantizer (max, mse, weighted, 4over6, localhessian, gptq, "
       "gptq+localhessian) measured by its output error on held-out calibration sequences, the least kept; at "
       "each norm -> {q,k,v} and norm -> {gate,up} site every quantizer also after SmoothQuant of the site, "
       "which is folded in only where it wins; the statistics passes then see only the other sequences (needs "
       "stats{second_moments=true})",
       {{"holdout", OptionType::Percent, "25%", "share of the calibration sequences held out for measuring (at least one)", {},
         0, 100},
        {"damp", OptionType::Float, "0.01", "GPTQ dampening for the gptq candidates", {}, 0, 10},
        {"smoothquant", OptionType::Bool, "true", "also try each site smoothed (SmoothQuant's factors, as the smoothquant pass)", {}},
        {"alpha", OptionType::Float, "0.5", "SmoothQuant migration strength of the smoothed candidates", {}, 0, 1}},
       {"stats"},
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
