// `blockscale`: the FP8 block-scale rule of every NVFP4 Linear (the global scales follow from it at
// pack): max, the searches (mse, weighted, 4over6) or the local-Hessian rule.
#include "formats/mxfp4.h"
#include "formats/nvfp4_rules.h"
#include "pipeline/pass.h"

namespace fp4c::pipeline {
namespace {

class BlockScalePass final : public Pass {
 public:
  explicit BlockScalePass(const PassInvocation& inv) : rule_(inv.option("rule")) {}

  Status run(PassContext& ctx) override {
    if (ctx.quantizer.kind == passes::Quantizer::Kind::Gptq) return {};   // gptq chooses its own (rule max only: checked)
    if (rule_ == "localhessian") {
      ctx.quantizer.kind = passes::Quantizer::Kind::LocalHessian;
    } else {
      ctx.quantizer.rule = *nvfp4::parse_scale_rule(rule_);
    }
    return {};
  }

  std::string describe(const PassContext&) const override { return "rule=" + rule_ + "\n"; }

 private:
  std::string rule_;
};

}  // namespace

const PassDefinition& BlockScalePass_definition() {
  static const PassDefinition d{
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
      [](const PassInvocation& inv, CheckState& s) -> Status {
        const std::string& rule = inv.option("rule");
        if (rule == "weighted" && !s.stats_valid)
          return make_error("blockscale{rule=weighted} needs the 'stats' pass before it (and after any 'smoothquant')");
        if (rule == "localhessian") FP4C_TRY(need_second_moments(s, "blockscale{rule=localhessian}"));
        if (passes::is_mxfp4(s.scheme) && rule != "max")
          return make_error("--scheme " + std::string(passes::scheme_name(s.scheme)) + ": blockscale{rule=" + rule +
                            "} is NVFP4-only; MXFP4 uses its power-of-two rule (" +
                            std::string(mxfp4::scale_rule_name(mxfp4::kDefaultRule)) +
                            "), written blockscale{rule=max} or blockscale");
        // The block scales were chosen already: a rule here would not be used, so it is not accepted.
        if (s.quantizer_chosen_by && rule != "max")
          return make_error("blockscale{rule=" + rule + "} after '" + *s.quantizer_chosen_by + "', which chooses the " +
                            "block scales itself: the rule would not be used (write blockscale" +
                            (*s.quantizer_chosen_by == "gptq" && rule == "localhessian"
                                 ? ", and gptq{scales=localhessian} for local-Hessian scales)"
                                 : ")"));
        return {};
      },
      [](const PassInvocation& inv) -> std::unique_ptr<Pass> { return std::make_unique<BlockScalePass>(inv); }};
  return d;
}

}  // namespace fp4c::pipeline
