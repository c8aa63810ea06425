// `gptq`: GPTQ on the NVFP4 grid as every Linear's quantizer. The columns are quantized where the
// weights are streamed (pack), one Linear at a time, so a model never has to be held in memory; this
// pass chooses the algorithm and its options, and a later blockscale rule is refused.
#include <cstdlib>

#include "pipeline/pass.h"

namespace fp4c::pipeline {
namespace {

class GptqPass final : public Pass {
 public:
  explicit GptqPass(const PassInvocation& inv) : inv_(inv) {
    options_.damp = std::strtod(inv.option("damp").c_str(), nullptr);
    options_.act_order = inv.option("act_order") == "true";
    options_.block = std::atoi(inv.option("block").c_str());
    options_.localhessian_scales = inv.option("scales") == "localhessian";
  }

  Status run(PassContext& ctx) override {
    ctx.quantizer.kind = passes::Quantizer::Kind::Gptq;
    ctx.quantizer.gptq = options_;
    return {};
  }

  std::string describe(const PassContext&) const override {
    return "GPTQ at pack: damp=" + inv_.option("damp") + ", act_order=" + inv_.option("act_order") +
           ", scales=" + inv_.option("scales") + "\n";
  }

 private:
  PassInvocation inv_;
  quant::GptqOptions options_;
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
         {"max", "localhessian"}}},
       {"stats"},
       {}},
      [](const PassInvocation&, CheckState& s) -> Status {
        FP4C_TRY(need_second_moments(s, "pass 'gptq'"));
        FP4C_TRY(refuse_for_mxfp4(s, "gptq"));
        s.quantizer_chosen_by = "gptq";
        return {};
      },
      [](const PassInvocation& inv) -> std::unique_ptr<Pass> { return std::make_unique<GptqPass>(inv); }};
  return d;
}

}  // namespace fp4c::pipeline
