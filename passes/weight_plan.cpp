#include "passes/weight_plan.h"

#include <cmath>
#include <regex>

namespace fp4c::passes {

std::string_view scheme_name(Scheme s) {
  switch (s) {
    case Scheme::W4A16: return "w4a16";
    case Scheme::W4A4: return "w4a4";
    case Scheme::Mxfp4A16: return "mxfp4a16";
    case Scheme::Mxfp4: return "mxfp4";
  }
  return "?";
}

std::optional<Scheme> parse_scheme(std::string_view name) {
  for (Scheme s : {Scheme::W4A16, Scheme::W4A4, Scheme::Mxfp4A16, Scheme::Mxfp4})
    if (scheme_name(s) == name) return s;
  return std::nullopt;
}

bool is_mxfp4(Scheme s) { return s == Scheme::Mxfp4A16 || s == Scheme::Mxfp4; }
bool quantizes_activations(Scheme s) { return s == Scheme::W4A4 || s == Scheme::Mxfp4; }
ir::Format weight_format(Scheme s) { return is_mxfp4(s) ? ir::Format::MXFP4 : ir::Format::NVFP4; }

namespace {

ir::Decision keep(ir::SkipKind kind, std::string detail) {
  return ir::Decision{ir::Format::BF16, ir::SkipReason{kind, std::move(detail)}, std::nullopt};
}

}  // namespace

Status plan_weights(ir::Model& model, const WeightPlanOptions& options) {
  std::vector<std::pair<std::string, std::regex>> patterns;
  for (const auto& p : options.ignore) {
    try {
      patterns.emplace_back(p, std::regex(p, std::regex::ECMAScript));
    } catch (const std::regex_error& e) {
      return make_error("--ignore '" + p + "': invalid regular expression: " + e.what());
    }
  }

  for (const auto& [id, reason] : options.bf16_keep) {
    if (id >= model.tensors.size())
      return make_error("weight plan: kept tensor id " + std::to_string(id) + " outside the model's " +
                        std::to_string(model.tensors.size()) + " tensors");
    const ir::TensorInfo& t = model.tensors[id];
    if (t.kind != ir::ParamKind::Weight || !ir::is_linear(t.role) || t.role == ir::Role::LmHead ||
        t.role == ir::Role::Router)
      return make_error("weight plan: the keep list names '" + t.name + "', which is not a quantizable Linear weight");
  }
  std::vector<const ir::SkipReason*> kept_by_option(model.tensors.size(), nullptr);
  for (const auto& [id, reason] : options.bf16_keep) kept_by_option[id] = &reason;

  auto& decisions = model.annotations.decision;
  const ir::Format fp4 = weight_format(options.scheme);
  const int64_t block = is_mxfp4(options.scheme) ? 32 : 16;
  decisions.assign(model.tensors.size(), ir::Decision{fp4, std::nullopt, std::nullopt});
  for (ir::TensorId id = 0; id < model.tensors.size(); ++id) {
    const ir::TensorInfo& t = model.tensors[id];
    ir::Decision& d = decisions[id];
    if (t.kind == ir::ParamKind::Bias || !ir::is_linear(t.role)) {
      d = t.role == ir::Role::Embedding ? keep(ir::SkipKind::Embedding, "embeddings stay BF16")
                                        : keep(ir::SkipKind::NotLinear, "not a Linear weight");
      continue;
    }
    if (t.role == ir::Role::LmHead) {
      d = keep(ir::SkipKind::LmHead, "the output projection stays BF16");
      continue;
    }
    if (t.role == ir::Role::Router) {
      d = keep(ir::SkipKind::Router, "routers stay BF16");
      continue;
    }
    const int64_t in_features = t.shape.size() == 2 ? t.shape[1] : 0;
    if (in_features % block != 0 || in_features == 0) {
      d = keep(block == 32 ? ir::SkipKind::InFeaturesNotMultipleOf32 : ir::SkipKind::InFeaturesNotMultipleOf16,
               "in_features " + std::to_string(in_features) + " is not a multiple of " + std::to_string(block));
      continue;
    }
    for (const auto& [text, re] : patterns) {
      // A slice of a fused tensor (Phi-3's q_proj inside qkv_proj) matches by either module name.
      if (std::regex_search(t.module, re) || (t.stored_in && std::regex_search(t.stored_in->module, re))) {
        d = keep(ir::SkipKind::UserIgnore, "matched --ignore '" + text + "'");
        break;
      }
    }
    if (ir::is_fp4(d.format) && kept_by_option[id]) d = keep(kept_by_option[id]->kind, kept_by_option[id]->detail);
  }

  if (options.scheme == Scheme::W4A4) {
    if (!options.stats) return make_error("--scheme w4a4 needs activation statistics: give a calibration set (--calib)");
    for (ir::TensorId id = 0; id < model.tensors.size(); ++id) {
      ir::Decision& d = decisions[id];
      if (!ir::is_fp4(d.format)) continue;
      const ir::TensorInfo& t = model.tensors[id];
      const auto site_role = input_site_role(t.role);
      const SiteStats* site = site_role && t.layer ? options.stats->find(*t.layer, *site_role) : nullptr;
      const float amax = site ? site->tensor_absmax() : 0.0f;
      if (!site || site->tokens == 0) {
        d = keep(ir::SkipKind::NoCalibrationData, "its input saw no calibration token");
      } else if (!(amax > 0) || !std::isfinite(amax)) {
        d = keep(ir::SkipKind::NoCalibrationData,
                 "its input max |x| over " + std::to_string(site->tokens) + " tokens is " + std::to_string(amax));
      } else {
        d.input_amax = amax;
      }
    }
  }

  // A fused group is one GEMM at serving time: one kept member keeps the whole group.
  for (const ir::FusedGroup& g : model.fused_groups) {
    const ir::TensorInfo* kept = nullptr;
    for (ir::TensorId m : g.members)
      if (!ir::is_fp4(decisions[m].format)) kept = &model.tensors[m];
    if (!kept) continue;
    for (ir::TensorId m : g.members)
      if (ir::is_fp4(decisions[m].format))
        decisions[m] = keep(ir::SkipKind::FusedWithSkipped,
                            "fused with " + kept->module + ", which stays BF16");
  }
  return {};
}

}  // namespace fp4c::passes
