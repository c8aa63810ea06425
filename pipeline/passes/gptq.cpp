// `gptq`: GPTQ on the NVFP4 grid as every Linear's quantizer. The columns are quantized where the
// weights are streamed (pack), one Linear at a time, so a model never has to be held in memory; this
// pass chooses the algorithm and its options, and a later blockscale rule is refused.
#include <cstdlib>

#include "passes/auto_quantizer.h"
#include "passes/weight_plan.h"
#include "pipeline/pass.h"
#include "runtime/checkpoint_weights.h"

namespace fp4c::pipeline {
namespace {

class GptqPass final : public Pass {
 public:
  explicit GptqPass(const PassInvocation& inv) : inv_(inv) {
    options_.damp = std::strtod(inv.option("damp").c_str(), nullptr);
    options_.act_order = inv.option("act_order") == "true";
    options_.block = std::atoi(inv.option("block").c_str());
    options_.localhessian_scales = inv.option("scales") == "localhessian";
    sequential_ = inv.option("sequential") == "true";
    asymmetric_ = inv.option("asymmetric") == "true";
    options_.asym_alpha = std::strtod(inv.option("alpha").c_str(), nullptr);
  }

  Status run(PassContext& ctx) override {
    ctx.quantizer.kind = passes::Quantizer::Kind::Gptq;
    ctx.quantizer.gptq = options_;
    if (!sequential_) return {};
    // Sequential: every Linear quantized here, layer by layer, from second moments of the calibration
    // sequences as they come out of the layers before it as quantized (auto's machinery with GPTQ as
    // the one candidate, measured on the calibration sequences themselves; pack takes the results).
    if (!ctx.calibration) return make_error("gptq: sequential calibration needs a calibration set (--calib)");
    passes::WeightPlanOptions plan_options{ctx.scheme, ctx.ignore, ctx.stats.get(), ctx.bf16_keep};
    FP4C_TRY(passes::plan_weights(ctx.model, plan_options));
    passes::AutoOptions options;
    options.gptq = options_;
    options.candidates = {ctx.quantizer};
    options.candidates[0].asymmetric = asymmetric_;
    options.smoothquant = false;
    options.sequential = &ctx.calibration->sequences;
    runtime::Forward forward(ctx.model.config, ctx.forward);
    runtime::CheckpointWeights weights(ctx.model, ctx.checkpoint.refs, /*release_pages=*/true);
    int64_t tokens = 0;
    for (const auto& s : ctx.calibration->sequences) tokens += int64_t(s.size());
    std::vector<passes::SiteStats> used;
    FP4C_TRY(passes::choose_quantizers(ctx.model, forward, weights, *ctx.stats, ctx.calibration->sequences, options,
                                       ctx.progress("gptq", 3.0 * double(tokens)), &used, runtime::Comm::world()));
    ctx.stats = passes::overlay_stats(ctx.stats, std::move(used));
    return {};
  }

  std::string describe(const PassContext&) const override {
    return "GPTQ at pack: damp=" + inv_.option("damp") + ", act_order=" + inv_.option("act_order") +
           ", scales=" + inv_.option("scales") + "\n";
  }

 private:
  PassInvocation inv_;
  quant::GptqOptions options_;
  bool sequential_ = false;
  bool asymmetric_ = false;
};

}  // namespace

const PassDefinition& GptqPass_definition() {
  static const PassDefinition d{
      {"gptq",
       "GPTQ on the NVFP4 grid: each Linear's columns quantized in order, each one's error compensated on the "
       "columns after it through the input second-moment matrix (needs stats{second_moments=true}); block "
       "scales chosen from the error-updated weights as each group of 16 columns is reached",
       {{"damp", OptionType::Float, "0.01", "dampening, relative to the mean of diag(H)", {}, 0, 10},
        {"act_order", OptionType::Bool, "true", "process 16-column groups by descending diag(H)", {}},
        {"block", OptionType::Int, "128",
         "lazy-batch width in columns (a multiple of 16; the result does not depend on it)", {}, 16, 1 << 20, 16},
        {"scales", OptionType::Choice, "max", "each group's block scales: max rule, or the local-Hessian rule",
         {"max", "localhessian"}},
        {"sequential", OptionType::Bool, "false",
         "sequential calibration: each layer's second moments from the calibration sequences as the layers "
         "before it, quantized by GPTQ (W4A4: activations too), give them; the Linears are quantized here, "
         "layer by layer (three layer forwards of the calibration set per layer)", {}},
        {"asymmetric", OptionType::Bool, "false",
         "GPTAQ (GPTQv2) asymmetric calibration: minimize ||X W^T - Xq Q(W)^T||, X the input on the unquantized "
         "model, Xq on the quantized one (needs sequential=true)", {}},
        {"alpha", OptionType::Float, "0.25", "GPTAQ's asymmetry strength (the authors' alpha)", {}, 0, 10}},
       {"stats"},
       {}},
      [](const PassInvocation& inv, CheckState& s) -> Status {
        if (inv.option("asymmetric") == "true" && inv.option("sequential") != "true")
          return make_error("pass 'gptq': asymmetric=true needs sequential=true (GPTAQ's statistics come from it)");
        FP4C_TRY(need_second_moments(s, "pass 'gptq'"));
        FP4C_TRY(refuse_for_mxfp4(s, "gptq"));
        if (s.quantizer_chosen_by == "signround")
          return make_error("pass 'gptq' after 'signround': each Linear's quantizer is chosen by one pass");
        s.quantizer_chosen_by = "gptq";
        return {};
      },
      [](const PassInvocation& inv) -> std::unique_ptr<Pass> { return std::make_unique<GptqPass>(inv); }};
  return d;
}

}  // namespace fp4c::pipeline
