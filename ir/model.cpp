#include "ir/model.h"

namespace fp4c::ir {

std::string_view role_name(Role r) {
  switch (r) {
    case Role::Embedding: return "embedding";
    case Role::Q: return "q";
    case Role::K: return "k";
    case Role::V: return "v";
    case Role::O: return "o";
    case Role::Gate: return "gate";
    case Role::Up: return "up";
    case Role::Down: return "down";
    case Role::LmHead: return "lm_head";
    case Role::Norm: return "norm";
    case Role::Router: return "router";
    case Role::Other: return "other";
    case Role::QNorm: return "q_norm";
    case Role::KNorm: return "k_norm";
    case Role::AttnOutNorm: return "attn_out_norm";
    case Role::MlpOutNorm: return "mlp_out_norm";
  }
  return "?";
}

bool is_linear(Role r) {
  switch (r) {
    case Role::Q: case Role::K: case Role::V: case Role::O:
    case Role::Gate: case Role::Up: case Role::Down: case Role::LmHead: case Role::Router:
      return true;
    default:
      return false;
  }
}

std::string_view mapping_name(SmoothingMapping m) {
  switch (m) {
    case SmoothingMapping::Attention: return "attn";
    case SmoothingMapping::Mlp: return "mlp";
    case SmoothingMapping::UpDown: return "up->down";
    case SmoothingMapping::VO: return "v->o";
  }
  return "?";
}

std::string_view format_name(Format f) {
  switch (f) {
    case Format::BF16: return "bf16";
    case Format::NVFP4: return "nvfp4";
    case Format::MXFP4: return "mxfp4";
  }
  return "?";
}

std::string_view skip_kind_name(SkipKind k) {
  switch (k) {
    case SkipKind::NotLinear: return "not_linear";
    case SkipKind::LmHead: return "lm_head";
    case SkipKind::Embedding: return "embedding";
    case SkipKind::Router: return "router";
    case SkipKind::InFeaturesNotMultipleOf16: return "in_features_not_multiple_of_16";
    case SkipKind::InFeaturesNotMultipleOf32: return "in_features_not_multiple_of_32";
    case SkipKind::UserIgnore: return "user_ignore";
    case SkipKind::TiedEmbedding: return "tied_embedding";
    case SkipKind::FusedWithSkipped: return "fused_with_skipped";
    case SkipKind::NoCalibrationData: return "no_calibration_data";
    case SkipKind::Sensitivity: return "sensitivity";
  }
  return "?";
}

bool Model::transformed(TensorId id) const {
  const auto& c = annotations.channel_scale;
  const auto& r = annotations.row_scale;
  return (id < c.size() && !c[id].empty()) || (id < r.size() && !r[id].empty());
}

std::optional<TensorId> Model::find(std::string_view name) const {
  auto it = by_name_.find(name);
  if (it == by_name_.end()) return std::nullopt;
  return it->second;
}

TensorId Model::add(TensorInfo info) {
  TensorId id = TensorId(tensors.size());
  by_name_.emplace(info.name, id);
  tensors.push_back(std::move(info));
  return id;
}

const FusedGroup* Model::group_of(TensorId id) const {
  for (const auto& g : fused_groups)
    for (TensorId m : g.members)
      if (m == id) return &g;
  return nullptr;
}

std::vector<TensorId> Model::linear_weights() const {
  std::vector<TensorId> out;
  for (TensorId i = 0; i < tensors.size(); ++i)
    if (is_linear(tensors[i].role) && tensors[i].kind == ParamKind::Weight) out.push_back(i);
  return out;
}

std::string Model::group_label(const FusedGroup& g) const {
  std::string label;
  std::string prefix;
  for (TensorId m : g.members) {
    const TensorInfo& t = tensors[m];
    auto dot = t.module.rfind('.');
    std::string parent = dot == std::string::npos ? "" : t.module.substr(0, dot + 1);
    if (prefix.empty()) prefix = parent;
    if (!label.empty()) label += "+";
    label += std::string(role_name(t.role));
  }
  return prefix + label;
}

}  // namespace fp4c::ir

#include "ir/artifact.h"

namespace fp4c::ir {
std::string_view tensor_part_name(TensorPart p) {
  switch (p) {
    case TensorPart::Source: return "source";
    case TensorPart::PackedWeight: return "packed_weight";
    case TensorPart::BlockScales: return "block_scales";
    case TensorPart::WeightGlobalScale: return "weight_global_scale";
    case TensorPart::InputGlobalScale: return "input_global_scale";
  }
  return "?";
}
}  // namespace fp4c::ir
