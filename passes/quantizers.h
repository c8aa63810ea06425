// The ways fp4c turns one Linear weight into NVFP4 codes and block scales, by name: round-to-nearest
// with a block-scale rule (max, mse, weighted, 4over6, localhessian) or GPTQ (with max or local-Hessian
// group scales). pack uses the pipeline's choice or the per-Linear one of the `auto` pass, which tries
// them all.
#pragma once

#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "formats/nvfp4.h"
#include "formats/nvfp4_rules.h"
#include "base/expected.h"
#include "quant/gptq.h"
#include "passes/stats.h"

namespace fp4c::passes {

struct Quantizer {
  // Tuned: block-output reconstruction (the signround pass): its bytes come from that pass
  // (annotations.prequantized) and cannot be computed again from a weight and its statistics.
  enum class Kind : uint8_t { Rule, LocalHessian, Gptq, Tuned };
  Kind kind = Kind::Rule;
  nvfp4::ScaleRule rule = nvfp4::ScaleRule::Max;   // Kind::Rule
  quant::GptqOptions gptq;                                // Kind::Gptq
  // Kind::Gptq: GPTAQ's asymmetric calibration (quant::gptaq_quantize) from the site's asymmetric
  // statistics (SiteStats::asym_*, collected by sequential calibration only).
  bool asymmetric = false;
  // Kind::Gptq: the column order is part of the name ("+actorder" / "+natural"), where `auto` offers
  // both orders; otherwise the order is the choosing pass's (its act_order option).
  bool order_in_name = false;
  // "max", ..., "localhessian", "gptq", "gptq+localhessian", "gptaq", "gptaq+localhessian", "signround"
  std::string name() const;
  bool needs_second_moments() const { return kind == Kind::LocalHessian || kind == Kind::Gptq; }
  bool needs_stats() const { return needs_second_moments() || (kind == Kind::Rule && rule == nvfp4::ScaleRule::Weighted); }
};

// Every quantizer `auto` tries, cheapest first (ties keep the earlier one).
std::vector<Quantizer> auto_candidates(const quant::GptqOptions& gptq = {});
// The two gptq quantizers (max and local-Hessian group scales) in the order other than gptq.act_order,
// named with it (order_in_name).
std::vector<Quantizer> other_order_candidates(const quant::GptqOptions& gptq = {});
// The two GPTAQ quantizers (max and local-Hessian group scales) with these options.
std::vector<Quantizer> gptaq_candidates(const quant::GptqOptions& gptq = {});
// A quantizer by name (Quantizer::name()).
std::optional<Quantizer> parse_quantizer(const std::string& name);

// Quantizes w [rows, cols] (float) with global scale G. `site`: the statistics of its input (needed by
// weighted, localhessian and gptq: errors name `what` otherwise). `dequantized` may be null.
Status quantize_weight(const Quantizer& q, const float* w, int64_t rows, int64_t cols, float G, const SiteStats* site,
                       const std::string& what, uint8_t* packed, uint8_t* scales, nvfp4::ZeroScale zero,
                       nvfp4::ErrorStats* err, float* dequantized = nullptr);

}  // namespace fp4c::passes
