// `sensitivity`: each Linear group's quantization error on calibration activations (or the model's KL
// with only that group quantized); the most sensitive groups are kept in BF16 within the budget.
#include <cstdlib>

#include "passes/sensitivity.h"
#include "pipeline/pass.h"
#include "runtime/checkpoint_weights.h"

namespace fp4c::pipeline {
namespace {

class SensitivityPass final : public Pass {
 public:
  explicit SensitivityPass(const PassInvocation& inv) {
    const std::string& b = inv.option("budget");
    options_.budget_percent = std::strtod(b.substr(0, b.size() - 1).c_str(), nullptr);
    options_.max_layers = std::atoi(inv.option("max_layers").c_str());
    options_.kl = inv.option("metric") == "kl";
  }

  Status run(PassContext& ctx) override {
    // A plan of what would be NVFP4 (with the input scales of the statistics), then each Linear's error.
    passes::WeightPlanOptions plan_options{ctx.scheme, ctx.ignore, ctx.stats.get()};
    FP4C_TRY(passes::plan_weights(ctx.model, plan_options));
    runtime::Forward forward(ctx.model.config, ctx.forward);
    runtime::CheckpointWeights weights(ctx.model, ctx.checkpoint.refs, /*release_pages=*/true);
    FP4C_ASSIGN(ctx.bf16_keep,
                passes::run_sensitivity(ctx.model, forward, weights, ctx.calibration->sequences, options_,
                                        ctx.progress("sensitivity", double(ctx.calibration->total_tokens()))));
    return {};
  }

  std::string describe(const PassContext& ctx) const override {
    std::string text = passes::format_sensitivity(ctx.model);
    text += ctx.bf16_keep.empty() ? "kept in BF16: none within the budget\n" : "kept in BF16:\n";
    for (const auto& [id, why] : ctx.bf16_keep) text += "  " + ctx.model.tensors[id].name + "  (" + why.detail + ")\n";
    return text;
  }

 private:
  passes::SensitivityOptions options_;
};

}  // namespace

const PassDefinition& SensitivityPass_definition() {
  static const PassDefinition d{
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
       {},
       /*at_most_once=*/true},
      [](const PassInvocation&, CheckState& s) -> Status {
        if (s.scheme == passes::Scheme::W4A4 && !s.stats_valid)
          return make_error("pass 'sensitivity' under W4A4 needs statistics of the model as it stands: 'stats' after "
                            "any 'smoothquant'");
        return refuse_for_mxfp4(s, "sensitivity");
      },
      [](const PassInvocation& inv) -> std::unique_ptr<Pass> { return std::make_unique<SensitivityPass>(inv); }};
  return d;
}

}  // namespace fp4c::pipeline
