// `smoothquant`: migrates activation outliers into the weights at each norm -> Linears site and folds
// the factors into the norm (NVFP4.md §7); the model computes the same function, its statistics change.
#include <cstdlib>

#include "passes/smoothquant.h"
#include "pipeline/pass.h"

namespace fp4c::pipeline {
namespace {

class SmoothQuantPass final : public Pass {
 public:
  explicit SmoothQuantPass(const PassInvocation& inv) {
    options_.alpha = std::strtof(inv.option("alpha").c_str(), nullptr);
    options_.min_scale = std::strtof(inv.option("min_scale").c_str(), nullptr);
    options_.extra = inv.option("extra") == "true";
  }

  Status run(PassContext& ctx) override {
    return passes::smooth_model(ctx.model, ctx.checkpoint.refs, *ctx.stats, options_);
  }

  std::string describe(const PassContext& ctx) const override { return passes::format_smoothing(ctx.model); }

 private:
  passes::SmoothQuantOptions options_;
};

}  // namespace

const PassDefinition& SmoothQuantPass_definition() {
  static const PassDefinition d{
      {"smoothquant",
       "SmoothQuant as llm-compressor does it by default (NVFP4.md §7): per input channel s = range^alpha / "
       "(2 maxW)^(1-alpha), floored; the norm weight divided by s, the balanced Linears' columns multiplied "
       "(input_layernorm -> q,k,v; post_attention_layernorm -> gate,up); the model computes the same function",
       {{"alpha", OptionType::Float, "0.5", "migration strength: 0 leaves activations alone, 1 moves all range into weights",
         {}, 0, 1},
        {"min_scale", OptionType::Float, "1e-5", "floor of the factors", {}, 1e-30, 1},
        {"extra", OptionType::Bool, "false",
         "also up -> down (rows of up divided, columns of down multiplied) and v -> o when the model has as many "
         "key/value heads as query heads",
         {}}},
       {"stats"},
       {"stats"}},
      nullptr,
      [](const PassInvocation& inv) -> std::unique_ptr<Pass> { return std::make_unique<SmoothQuantPass>(inv); }};
  return d;
}

}  // namespace fp4c::pipeline
