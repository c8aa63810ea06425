// `auto`: per Linear (fused groups together) the quantizer with the least output error on held-out
// calibration sequences, each norm site smoothed where the layer's output errs less.
#include <algorithm>
#include <cmath>
#include <cstdlib>

#include "passes/auto_quantizer.h"
#include "pipeline/pass.h"
#include "runtime/checkpoint_weights.h"

namespace fp4c::pipeline {
namespace {

class AutoPass final : public Pass {
 public:
  explicit AutoPass(const PassInvocation& inv) {
    options_.gptq.damp = std::strtod(inv.option("damp").c_str(), nullptr);
    options_.gptq.act_order = inv.option("act_order") == "true";
    options_.smoothquant = inv.option("smoothquant") == "true";
    // One alpha, or several separated by '/' (the parser checked each: a number in [0, 1], none twice), or
    // by-scheme, resolved in run() when the scheme is known.
    const std::string& alphas = inv.option("alpha");
    by_scheme_ = alphas == kByScheme;
    if (!by_scheme_) options_.alphas = parse_alphas(alphas);
    sequential_ = inv.option("sequential") == "true";
    options_.gptq.asym_alpha = std::strtod(inv.option("gptaq_alpha").c_str(), nullptr);
    gptaq_ = inv.option("gptaq") == "true";
    if (inv.option("gptaq") == "true" || inv.option("both_orders") == "true") {
      options_.candidates = passes::auto_candidates(options_.gptq);
      if (inv.option("both_orders") == "true")
        for (const auto& q : passes::other_order_candidates(options_.gptq)) options_.candidates.push_back(q);
      if (inv.option("gptaq") == "true")
        for (const auto& q : passes::gptaq_candidates(options_.gptq)) options_.candidates.push_back(q);
    }
  }

  Status run(PassContext& ctx) override {
    passes::WeightPlanOptions plan_options{ctx.scheme, ctx.ignore, ctx.stats.get(), ctx.bf16_keep};
    FP4C_TRY(passes::plan_weights(ctx.model, plan_options));
    ctx.quantizer.gptq.damp = options_.gptq.damp;
    ctx.quantizer.gptq.act_order = options_.gptq.act_order;
    ctx.quantizer.gptq.asym_alpha = options_.gptq.asym_alpha;
    runtime::Forward forward(ctx.model.config, ctx.forward);
    runtime::CheckpointWeights weights(ctx.model, ctx.checkpoint.refs, /*release_pages=*/true);
    int64_t held_tokens = 0;
    for (const auto& s : ctx.heldout) held_tokens += int64_t(s.size());
    std::vector<passes::SiteStats> smoothed;
    passes::AutoOptions options = options_;
    if (by_scheme_) options.alphas = alphas_for(ctx.scheme);
    options.alpha = options.alphas.front();
    if (sequential_ || gptaq_) {
      if (!ctx.calibration) return make_error("auto: sequential calibration needs a calibration set (--calib)");
      options.sequential = &ctx.calibration->sequences;
      options.sequential_all = sequential_;   // else the quantized stream is GPTAQ's alone
    }
    FP4C_TRY(passes::choose_quantizers(ctx.model, forward, weights, *ctx.stats, ctx.heldout, options,
                                       ctx.progress("auto", double(held_tokens)), &smoothed, runtime::Comm::world()));
    // the smoothed sites' rescaled statistics (sequential: every site's, from the quantized layers)
    ctx.stats = passes::overlay_stats(ctx.stats, std::move(smoothed));
    return {};
  }

  std::string describe(const PassContext& ctx) const override { return passes::format_choices(ctx.model); }

 private:
  static std::vector<float> parse_alphas(const std::string& text) {
    std::vector<float> out;
    for (size_t b = 0; b <= text.size();) {
      const size_t e = std::min(text.find('/', b), text.size());
      out.push_back(std::strtof(text.substr(b, e - b).c_str(), nullptr));
      b = e + 1;
    }
    return out;
  }
  // alpha=by-scheme: several strengths where activations are quantized (W4A4: on SmolLM2's held-out split
  // recovery 0.867 -> 0.900, on stories260K 0.905 -> 0.908), the one strength weights-only (W4A16: the
  // three lost a little recovery on both models; docs/DECISIONS.md).
  static std::vector<float> alphas_for(passes::Scheme scheme) {
    return scheme == passes::Scheme::W4A4 ? std::vector<float>{0.3f, 0.5f, 0.7f} : std::vector<float>{0.5f};
  }
  static constexpr const char* kByScheme = "by-scheme";

  passes::AutoOptions options_;
  bool by_scheme_ = false;
  bool sequential_ = false;
  bool gptaq_ = false;
};

// `auto` measures on sequences the statistics (and so GPTQ's second moments) never saw: the last
// holdout share of them, at least one; the statistics passes get the rest.
Status hold_out(const PassInvocation& inv, PassContext& ctx) {
  if (!ctx.calibration || !ctx.heldout.empty()) return {};   // the first auto's share holds
  const std::string& h = inv.option("holdout");
  const double share = std::strtod(h.substr(0, h.size() - 1).c_str(), nullptr) / 100.0;
  auto& sequences = ctx.calibration->sequences;
  const size_t n = sequences.size();
  const size_t held = std::max<size_t>(1, size_t(std::llround(double(n) * share)));
  if (n < 2 || held >= n)
    return make_error("pass 'auto' holds out " + h + " of " + std::to_string(n) +
                      " calibration sequence(s), leaving none for the statistics: give more (--calib-samples)");
  ctx.heldout.assign(sequences.end() - long(held), sequences.end());
  sequences.resize(n - held);
  return {};
}

}  // namespace

const PassDefinition& AutoPass_definition() {
  static const PassDefinition d{
      {"auto",
       "per Linear (fused groups together), every quantizer (max, mse, weighted, 4over6, localhessian, gptq, "
       "gptq+localhessian) measured by its output error on held-out calibration sequences, the least kept; at "
       "each norm -> {q,k,v} and norm -> {gate,up} site every quantizer also after SmoothQuant of the site, "
       "which is folded in only where it wins; the statistics passes then see only the other sequences (needs "
       "stats{second_moments=true})",
       {{"holdout", OptionType::Percent, "25%", "share of the calibration sequences held out for measuring (at least one)",
         {}, 0, 100},
        {"damp", OptionType::Float, "0.01", "GPTQ dampening for the gptq candidates", {}, 0, 10},
        {"act_order", OptionType::Bool, "false",
         "the gptq candidates in activation order (off: held-out recovery on SmolLM2 was higher without it, "
         "docs/DECISIONS.md)", {}},
        {"smoothquant", OptionType::Bool, "true", "also try each site smoothed (SmoothQuant's factors, as the smoothquant pass)", {}},
        {"alpha", OptionType::FloatList, "by-scheme",
         "SmoothQuant migration strength of the smoothed candidates; several separated by '/' (0.3/0.5/0.7): every "
         "site is measured smoothed at each, and keeps the one (or none) whose layer output errs least on the "
         "held-out sequences (each alpha costs another measurement of every candidate at q,k,v,gate,up); "
         "by-scheme: 0.3/0.5/0.7 under W4A4, 0.5 weights-only (measured, docs/DECISIONS.md)",
         {"by-scheme"}, 0, 1},
        {"sequential", OptionType::Bool, "false",
         "sequential calibration: each layer's statistics and second moments from the calibration sequences as "
         "the layers before it, quantized as chosen (W4A4: activations too), give them; held-out sequences "
         "measured through the quantized layers (two more layer forwards of the calibration set per layer)", {}},
        {"gptaq", OptionType::Bool, "false",
         "also the GPTAQ candidates (gptaq, gptaq+localhessian: GPTQ against the unquantized model's output, "
         "from the quantized model's input): the calibration sequences also run through the layers as quantized "
         "and as they are (three more layer forwards per layer); without sequential=true only these candidates "
         "use the quantized stream", {}},
        {"both_orders", OptionType::Bool, "false",
         "also the gptq candidates in the other column order (named +actorder or +natural)", {}},
        {"gptaq_alpha", OptionType::Float, "0.25", "GPTAQ's asymmetry strength (the authors' alpha)", {}, 0, 10}},
       {"stats"},
       {}},
      [](const PassInvocation& inv, CheckState& s) -> Status {
        FP4C_TRY(need_second_moments(s, "pass 'auto'"));
        FP4C_TRY(refuse_for_mxfp4(s, "auto"));
        if (s.quantizer_chosen_by == "signround")
          return make_error("pass 'auto' after 'signround': each Linear's quantizer is chosen by one pass");
        s.quantizer_chosen_by = "auto";
        return {};
      },
      [](const PassInvocation& inv) -> std::unique_ptr<Pass> { return std::make_unique<AutoPass>(inv); },
      hold_out};
  return d;
}

}  // namespace fp4c::pipeline
