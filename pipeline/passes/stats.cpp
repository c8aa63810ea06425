// `stats`: per-channel statistics of every Linear group's input over the calibration set (optionally
// the second moments), into the context's analysis cache.
#include <algorithm>
#include <cmath>
#include <cstdio>

#include "pipeline/pass.h"

namespace fp4c::pipeline {
namespace {

class StatsPass final : public Pass {
 public:
  explicit StatsPass(const PassInvocation& inv) {
    options_.second_moments = inv.option("second_moments") == "true";
    options_.all_experts = inv.option("all_experts") == "true";
  }

  Status run(PassContext& ctx) override {
    FP4C_ASSIGN(StatsResult r, ctx.compute_stats(options_));
    ctx.stats = r.stats;
    // MoE: each expert's routed calibration tokens, for the manifest.
    auto& routed = ctx.model.annotations.routed_tokens;
    routed.assign(ctx.model.tensors.size(), std::nullopt);
    for (ir::TensorId id = 0; id < ctx.model.tensors.size(); ++id) {
      const ir::TensorInfo& t = ctx.model.tensors[id];
      if (!t.expert || !t.layer || t.kind != ir::ParamKind::Weight) continue;
      if (const passes::SiteStats* s = ctx.stats->find(*t.layer, ir::Role::Gate, *t.expert)) routed[id] = s->tokens;
    }
    if (!ctx.first_stats) ctx.first_stats = r;
    return {};
  }

  std::string describe(const PassContext& ctx) const override {
    std::string out;
    char line[256];
    std::snprintf(line, sizeof line, "%-6s %-6s %8s %8s %12s %12s %8s\n", "layer", "site", "tokens", "cols", "absmax",
                  "rms", "top ch");
    out += line;
    for (const auto& s : ctx.stats->sites) {
      double ms = 0;
      for (double v : s.mean_square) ms += v;
      const auto top = std::max_element(s.absmax.begin(), s.absmax.end());
      const std::string site = std::string(ir::role_name(s.role)) + (s.expert >= 0 ? "@" + std::to_string(s.expert) : "");
      std::snprintf(line, sizeof line, "%-6d %-6s %8lld %8lld %12.5g %12.5g %8lld\n", s.layer, site.c_str(), static_cast<long long>(s.tokens),
                    static_cast<long long>(s.cols()), s.tensor_absmax(),
                    s.cols() ? std::sqrt(ms / double(s.cols())) : 0.0,
                    static_cast<long long>(top == s.absmax.end() ? -1 : top - s.absmax.begin()));
      out += line;
    }
    return out;
  }

 private:
  passes::StatsOptions options_;
};

}  // namespace

const PassDefinition& StatsPass_definition() {
  static const PassDefinition d{
      {"stats",
       "per-channel statistics (absmax, min, max, mean square, tokens) of every Linear group's input over "
       "the calibration set, from a layer-by-layer forward; needs --calib",
       {{"second_moments", OptionType::Bool, "false", "also the input second-moment matrix X^T X / tokens", {}},
        {"all_experts", OptionType::Bool, "false",
         "MoE: every token through every expert for the experts' statistics (llm-compressor's "
         "moe_calibrate_all_experts); default: each expert's routed tokens only", {}, 0, 0, 0, false}},
       {},
       {}},
      [](const PassInvocation& inv, CheckState& s) -> Status {
        if (!s.have_calibration) return make_error("pass 'stats' needs a calibration set (--calib FILE)");
        s.stats_valid = true;
        s.second_moments = inv.option("second_moments") == "true";
        return {};
      },
      [](const PassInvocation& inv) -> std::unique_ptr<Pass> { return std::make_unique<StatsPass>(inv); }};
  return d;
}

}  // namespace fp4c::pipeline
