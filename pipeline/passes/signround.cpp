// `signround`: block-output reconstruction (SignRound / AutoRound) per decoder layer: every NVFP4 Linear's
// rounding offsets and block-scale multipliers tuned by signed gradient descent on the layer's output error
// against the unquantized layer, W4A4 activations fake-quantized in the loop (passes/signround.h). The tuned
// bytes are handed to pack (annotations.prequantized); a layer keeps round-to-nearest where tuning did not
// lower its error over the calibration sequences.
#include <cstdlib>

#include "formats/hash.h"
#include "passes/quantizers.h"
#include "passes/signround.h"
#include "passes/weight_plan.h"
#include "pipeline/pass.h"
#include "runtime/checkpoint_weights.h"

namespace fp4c::pipeline {
namespace {

class SignRoundPass final : public Pass {
 public:
  explicit SignRoundPass(const PassInvocation& inv) {
    options_.iters = std::atoi(inv.option("iters").c_str());
    options_.lr = std::strtod(inv.option("lr").c_str(), nullptr);
    options_.batch = std::atoi(inv.option("batch").c_str());
    options_.select = std::atoi(inv.option("select").c_str());
    options_.tune_scales = inv.option("scales") == "true";
    options_.scale_min = std::strtof(inv.option("scale_min").c_str(), nullptr);
    options_.seed = uint64_t(std::strtoull(inv.option("seed").c_str(), nullptr, 10));
    from_auto_ = inv.option("start") == "auto";
    rival_auto_ = inv.option("rival") == "auto";
  }

  Status run(PassContext& ctx) override {
    if (!ctx.calibration) return make_error("signround: needs a calibration set (--calib)");
    passes::WeightPlanOptions plan_options{ctx.scheme, ctx.ignore, ctx.stats.get(), ctx.bf16_keep};
    FP4C_TRY(passes::plan_weights(ctx.model, plan_options));
    runtime::Forward forward(ctx.model.config, ctx.forward);
    runtime::CheckpointWeights weights(ctx.model, ctx.checkpoint.refs, /*release_pages=*/true);
    int64_t tokens = 0;
    for (const auto& s : ctx.calibration->sequences) tokens += int64_t(s.size());
    passes::SignRoundOptions options = options_;
    options.threads = ctx.forward.threads;
    if (rival_auto_) {
      if (ctx.heldout.empty()) return make_error("signround{rival=auto}: the 'auto' pass held no sequences out");
      options.rival_judge = &ctx.heldout;
    }
    if (from_auto_ || rival_auto_) {
      // auto's choice of each Linear, as pack would write it: its bytes where auto kept them for this weight,
      // else computed here from the statistics (as pack computes them).
      ir::Model& model = ctx.model;
      const passes::Quantizer& pipeline_q = ctx.quantizer;
      const passes::ActivationStats* stats = ctx.stats.get();
      options.start = [&model, pipeline_q, stats](ir::TensorId id, const std::vector<float>& w, float G,
                                                  std::vector<uint8_t>& packed,
                                                  std::vector<uint8_t>& scales) -> Expected<bool> {
        const auto& t = model.tensors[id];
        if (id >= model.annotations.choice.size() || !model.annotations.choice[id]) return false;
        auto q = passes::parse_quantizer(model.annotations.choice[id]->chosen.quantizer);
        if (!q) return make_error("signround: " + t.name + ": unknown quantizer '" +
                                  model.annotations.choice[id]->chosen.quantizer + "'");
        q->gptq.damp = pipeline_q.gptq.damp;
        if (!q->order_in_name) q->gptq.act_order = pipeline_q.gptq.act_order;
        q->gptq.asym_alpha = pipeline_q.gptq.asym_alpha;
        const auto& pre = id < model.annotations.prequantized.size() ? model.annotations.prequantized[id]
                                                                      : std::optional<ir::Prequantized>();
        if (pre && pre->quantizer == q->name() && pre->global_scale == G &&
            pre->zero_scale == uint8_t(nvfp4::ZeroScale::CompressedTensors) && pre->packed.size() == packed.size() &&
            pre->scales.size() == scales.size()) {
          const hash::Digest d = hash::xxh3_128(std::as_bytes(std::span(w)));
          if (d.high == pre->weight_hash_high && d.low == pre->weight_hash_low) {
            packed = pre->packed;
            scales = pre->scales;
            return true;
          }
        }
        FP4C_TRY(passes::quantize_weight(*q, w.data(), t.shape[0], t.shape[1], G, passes::weight_input_stats(stats, t),
                                         t.module, packed.data(), scales.data(), nvfp4::ZeroScale::CompressedTensors,
                                         nullptr));
        return true;
      };
    }
    FP4C_ASSIGN(layers_, passes::signround(ctx.model, forward, weights, ctx.calibration->sequences, options,
                                           ctx.progress("signround", 3.0 * double(tokens))));
    return {};
  }

  std::string describe(const PassContext&) const override { return passes::format_signround(layers_); }

 private:
  passes::SignRoundOptions options_;
  bool from_auto_ = false;
  bool rival_auto_ = false;
  std::vector<passes::SignRoundLayer> layers_;
};

}  // namespace

const PassDefinition& SignRoundPass_definition() {
  static const PassDefinition d{
      {"signround",
       "block-output reconstruction (SignRound / AutoRound): per decoder layer, each NVFP4 Linear's rounding "
       "offsets (one per weight, in [-0.5, 0.5]) and block-scale multipliers (one per 16 weights) tuned by "
       "signed gradient descent on the layer's output error against the unquantized layer (its input: the "
       "calibration sequences through the layers before it as quantized; W4A4: activations fake-quantized as "
       "served); the step with the least loss kept, and only where it beats round-to-nearest on all calibration "
       "sequences (costs a layer forward and backward per step plus three layer forwards of the calibration set "
       "per layer)",
       {{"iters", OptionType::Int, "50", "steps per layer (0: round-to-nearest)", {}, 0, 100000},
        {"lr", OptionType::Float, "0", "the first step's size, decaying linearly to 0 (0: 1 / iters, AutoRound's)",
         {}, 0, 1},
        {"batch", OptionType::Int, "4", "calibration sequences per step", {}, 1, 1 << 20},
        {"select", OptionType::Int, "0",
         "calibration sequences every step's iterate is measured on, the best kept (0: batch)", {}, 0, 1 << 20},
        {"scales", OptionType::Bool, "true", "also tune a multiplier of each block's scale", {}},
        {"scale_min", OptionType::Float, "0.5", "the multipliers' lower bound (upper: 1)", {}, 0.01, 1},
        {"seed", OptionType::Int, "0", "the order in which the steps take the calibration sequences", {}, 0,
         1 << 30},
        {"start", OptionType::Choice, "rtn",
         "where each Linear starts: round-to-nearest (AutoRound's), or the choice of an 'auto' pass before this one "
         "(its codes and block scales; a layer keeps auto's choice where tuning does not lower its error)",
         {"rtn", "auto"}},
        {"rival", OptionType::Choice, "none",
         "auto: each layer is tuned from round-to-nearest, then keeps the choices of the 'auto' pass before this one "
         "instead where they give the layer's output less error on auto's held-out sequences (auto as a candidate "
         "per layer)",
         {"none", "auto"}}},
       {"stats"},
       {}},
      [](const PassInvocation& inv, CheckState& s) -> Status {
        if (!s.have_calibration) return make_error("pass 'signround' needs a calibration set (--calib)");
        const bool after_auto = inv.option("start") == "auto" || inv.option("rival") == "auto";
        if (inv.option("start") == "auto" && inv.option("rival") == "auto")
          return make_error("pass 'signround': start=auto and rival=auto exclude each other (auto's choice either "
                            "starts the tuning or competes with it)");
        if (inv.option("start") == "auto" && s.quantizer_chosen_by != "auto")
          return make_error("pass 'signround{start=auto}' needs an 'auto' pass before it");
        if (inv.option("rival") == "auto" && s.quantizer_chosen_by != "auto")
          return make_error("pass 'signround{rival=auto}' needs an 'auto' pass before it");
        if (s.quantizer_chosen_by && !after_auto)
          return make_error("pass 'signround' after '" + *s.quantizer_chosen_by +
                            "': each Linear's quantizer is chosen by one pass");
        FP4C_TRY(refuse_for_mxfp4(s, "signround"));
        s.quantizer_chosen_by = "signround";
        return {};
      },
      [](const PassInvocation& inv) -> std::unique_ptr<Pass> { return std::make_unique<SignRoundPass>(inv); }};
  return d;
}

}  // namespace fp4c::pipeline
