// `outliers`: how concentrated each Linear's weight columns and input channels are, for the manifest,
// `fp4c inspect --outliers` and the report.
#include <cstdlib>

#include "passes/outliers.h"
#include "pipeline/pass.h"
#include "runtime/checkpoint_weights.h"

namespace fp4c::pipeline {
namespace {

class OutliersPass final : public Pass {
 public:
  explicit OutliersPass(const PassInvocation& inv)
      : k_(std::strtod(inv.option("k").c_str(), nullptr)), top_(std::atoi(inv.option("top").c_str())) {}

  Status run(PassContext& ctx) override {
    return passes::analyze_outliers(
        ctx.model,
        [&](ir::TensorId id) { return runtime::read_tensor(ctx.model, ctx.checkpoint.refs[id], id, false); },
        ctx.stats.get(), k_, top_);
  }

  std::string describe(const PassContext& ctx) const override { return passes::format_outliers(ctx.model); }

 private:
  double k_;
  int top_;
};

}  // namespace

const PassDefinition& OutliersPass_definition() {
  static const PassDefinition d{
      {"outliers",
       "per Linear: how concentrated its weight columns and its input channels are (max/median, kurtosis, "
       "channels above k x median, the top channels); into the manifest and `fp4c inspect --outliers`",
       {{"k", OptionType::Float, "8", "a channel is an outlier above k x the median magnitude", {}, 1, 1e6},
        {"top", OptionType::Int, "8", "how many of the largest channels to record", {}, 0, 65536}},
       {},
       {}},
      nullptr,
      [](const PassInvocation& inv) -> std::unique_ptr<Pass> { return std::make_unique<OutliersPass>(inv); }};
  return d;
}

}  // namespace fp4c::pipeline
