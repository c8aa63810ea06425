#include "passes/quantizers.h"

#include "formats/nvfp4_rules.h"
#include "quant/localhessian.h"

namespace fp4c::passes {

std::string Quantizer::name() const {
  switch (kind) {
    case Kind::Rule: return nvfp4::scale_rule_name(rule);
    case Kind::LocalHessian: return "localhessian";
    case Kind::Tuned: return "signround";
    case Kind::Gptq:
      return std::string(asymmetric ? "gptaq" : "gptq") + (gptq.localhessian_scales ? "+localhessian" : "") +
             (order_in_name ? (gptq.act_order ? "+actorder" : "+natural") : "");
  }
  return "?";
}

std::vector<Quantizer> auto_candidates(const quant::GptqOptions& gptq) {
  std::vector<Quantizer> out;
  for (auto r : {nvfp4::ScaleRule::Max, nvfp4::ScaleRule::Mse, nvfp4::ScaleRule::Weighted, nvfp4::ScaleRule::FourOverSix})
    out.push_back({Quantizer::Kind::Rule, r, {}});
  out.push_back({Quantizer::Kind::LocalHessian, nvfp4::ScaleRule::Max, {}});
  Quantizer g{Quantizer::Kind::Gptq, nvfp4::ScaleRule::Max, gptq};
  g.gptq.localhessian_scales = false;
  out.push_back(g);
  g.gptq.localhessian_scales = true;
  out.push_back(g);
  return out;
}

std::vector<Quantizer> gptaq_candidates(const quant::GptqOptions& gptq) {
  std::vector<Quantizer> out;
  Quantizer g{Quantizer::Kind::Gptq, nvfp4::ScaleRule::Max, gptq};
  g.asymmetric = true;
  g.gptq.localhessian_scales = false;
  out.push_back(g);
  g.gptq.localhessian_scales = true;
  out.push_back(g);
  return out;
}

std::vector<Quantizer> other_order_candidates(const quant::GptqOptions& gptq) {
  std::vector<Quantizer> out;
  Quantizer g{Quantizer::Kind::Gptq, nvfp4::ScaleRule::Max, gptq};
  g.gptq.act_order = !gptq.act_order;
  g.order_in_name = true;
  g.gptq.localhessian_scales = false;
  out.push_back(g);
  g.gptq.localhessian_scales = true;
  out.push_back(g);
  return out;
}

std::optional<Quantizer> parse_quantizer(const std::string& name) {
  for (bool act : {false, true}) {
    quant::GptqOptions o;
    o.act_order = !act;
    for (const auto& q : other_order_candidates(o))
      if (q.name() == name) return q;
  }
  for (const auto& q : auto_candidates())
    if (q.name() == name) return q;
  for (const auto& q : gptaq_candidates())
    if (q.name() == name) return q;
  if (name == "signround") return Quantizer{Quantizer::Kind::Tuned, nvfp4::ScaleRule::Max, {}};
  return std::nullopt;
}

Status quantize_weight(const Quantizer& q, const float* w, int64_t rows, int64_t cols, float G, const SiteStats* site,
                       const std::string& what, uint8_t* packed, uint8_t* scales, nvfp4::ZeroScale zero,
                       nvfp4::ErrorStats* err, float* dequantized) {
  if (q.kind == Quantizer::Kind::Tuned)
    return make_error("signround: " + what + ": its tuned NVFP4 bytes come from the signround pass, which did not "
                      "hand them over for this weight as it is read now");
  if (q.needs_stats() && (!site || site->cols() != cols))
    return make_error(q.name() + ": no input statistics for " + what + " (run 'stats' before it)");
  if (q.needs_second_moments() && site->second_moment.size() != size_t(cols * cols))
    return make_error(q.name() + ": no input second moments for " + what +
                      " (run 'stats{second_moments=true}' before it)");
  switch (q.kind) {
    case Quantizer::Kind::Gptq:
      if (q.asymmetric) {
        if (site->asym_second_moment.size() != size_t(cols * cols) || site->asym_cross.size() != size_t(cols * cols))
          return make_error(q.name() + ": no asymmetric input statistics for " + what +
                            " (they come from sequential calibration: gptq{sequential=true,asymmetric=true} or "
                            "auto{sequential=true,gptaq=true})");
        if (auto st = quant::gptaq_quantize(w, rows, cols, site->asym_second_moment.data(), site->asym_cross.data(), G,
                                            q.gptq, packed, scales, zero, dequantized, err);
            !st)
          return make_error(what + ": " + st.error().message);
        return {};
      }
      if (auto st = quant::gptq_quantize(w, rows, cols, site->second_moment.data(), G, q.gptq, packed, scales, zero,
                                  dequantized, err);
          !st)
        return make_error(what + ": " + st.error().message);
      return {};
    case Quantizer::Kind::Tuned:
      break;   // refused above
    case Quantizer::Kind::LocalHessian:
      quant::quantize_rows_localhessian(w, rows, cols, G, site->second_moment.data(), packed, scales, zero, err);
      break;
    case Quantizer::Kind::Rule: {
      std::vector<float> weights;
      if (q.rule == nvfp4::ScaleRule::Weighted) weights.assign(site->mean_square.begin(), site->mean_square.end());
      // Max included: the same bytes and error figures as nvfp4::quantize_f32_ref (nvfp4_rules_test), in parallel.
      nvfp4::quantize_rows_with_rule(w, rows, cols, G, q.rule, weights.empty() ? nullptr : weights.data(), packed,
                                     scales, zero, err);
      break;
    }
  }
  if (dequantized) nvfp4::dequantize(packed, scales, rows, cols, G, dequantized);
  return {};
}

}  // namespace fp4c::passes
