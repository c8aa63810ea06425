#include "backends/compressed_tensors/reader.h"

#include <nlohmann/json.hpp>

#include "formats/json_input.h"

#include <cmath>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <sstream>

#include "formats/mxfp4.h"
#include "formats/nvfp4.h"

namespace fp4c::backends::compressed_tensors {
namespace fs = std::filesystem;

namespace {

std::string shape_text(const std::vector<int64_t>& s) {
  std::string out = "[";
  for (size_t i = 0; i < s.size(); ++i) out += (i ? ", " : "") + std::to_string(s[i]);
  return out + "]";
}

std::string where(const safetensors::Checkpoint::Ref& r) {
  return r.file->path() + ": tensor '" + r.entry->name + "'";
}

Expected<float> read_scalar(const safetensors::Checkpoint::Ref& r, const std::vector<int64_t>& shape) {
  if (r.entry->dtype != DType::F32 || r.entry->shape != shape)
    return make_error(where(r) + ": expected one F32 value of shape " + shape_text(shape) + ", found " +
                      std::string(dtype_name(r.entry->dtype)) + " " + shape_text(r.entry->shape));
  float v;
  std::memcpy(&v, r.file->bytes(*r.entry).data(), 4);
  if (!(v > 0) || !std::isfinite(v)) return make_error(where(r) + ": scale " + std::to_string(v) + " is not a positive finite number");
  return v;
}

}  // namespace

Expected<ArtifactReader> ArtifactReader::open(const std::string& dir, const ir::Model& reference) {
  bool w4a4 = false, mxfp4 = false;
  const std::string config_path = (fs::path(dir) / "config.json").string();
  {
    FP4C_ASSIGN(const nlohmann::json config, json_input::read_file(config_path));
    if (!config.is_object()) return make_error(config_path + ": malformed JSON (not an object)");
    // j[key] if j is an object holding key, else null (const operator[] on a missing key is undefined).
    const auto member = [](const nlohmann::json& j, const char* key) -> const nlohmann::json& {
      static const nlohmann::json null;
      if (!j.is_object()) return null;
      const auto it = j.find(key);
      return it == j.end() ? null : *it;
    };
    const nlohmann::json& q = member(config, "quantization_config");
    if (member(q, "quant_method") != "compressed-tensors")
      return make_error(config_path + ": no compressed-tensors quantization_config; not an fp4c NVFP4 artifact");
    const auto is_format = [&](const nlohmann::json& j, const char* f) { return member(j, "format") == f; };
    mxfp4 = is_format(q, "mxfp4-pack-quantized");
    const nlohmann::json& groups = member(q, "config_groups");
    if (groups.is_object())
      for (const auto& [name, g] : groups.items()) {
        if (!member(g, "input_activations").is_null()) w4a4 = true;
        if (is_format(g, "mxfp4-pack-quantized")) mxfp4 = true;
      }
  }
  return open_tensors(dir, reference, compressed_tensors_names(), w4a4, mxfp4);
}

Expected<ArtifactReader> ArtifactReader::open_tensors(const std::string& dir, const ir::Model& reference,
                                                      const QuantizedNames& names, bool w4a4, bool mxfp4) {
  ArtifactReader r;
  r.w4a4_ = w4a4;
  r.mxfp4_ = mxfp4;
  r.names_ = names;
  FP4C_ASSIGN(r.files_, safetensors::Checkpoint::open(dir));

  r.tensors_.resize(reference.tensors.size());
  for (ir::TensorId id = 0; id < reference.tensors.size(); ++id) {
    const ir::TensorInfo& t = reference.tensors[id];
    ArtifactTensor& a = r.tensors_[id];
    // A Linear weight is NVFP4 when its block scales are there (ModelOpt's packed codes keep the
    // weight's own name, so the name alone does not tell).
    const bool linear_weight = t.kind == ir::ParamKind::Weight && ir::is_linear(t.role) && t.shape.size() == 2 &&
                               t.name == t.module + ".weight";
    // A fused tensor's slice: the artifact's tensors are the fused module's, `out` its rows.
    const std::string& module = t.stored_in ? t.stored_in->module : t.module;
    const std::string& stored_name = t.stored_in ? t.stored_in->tensor : t.name;
    const std::vector<int64_t> stored_shape =
        t.stored_in ? std::vector<int64_t>{t.stored_in->rows_total, t.shape.at(1)} : t.shape;
    // This slice's rows of a checked fused tensor.
    const auto slice = [&](const safetensors::Checkpoint::Ref& whole) -> safetensors::Checkpoint::Ref {
      if (!t.stored_in) return whole;
      r.slices_.push_back(std::make_unique<safetensors::TensorEntry>(
          safetensors::row_slice(*whole.entry, whole.entry->name, t.stored_in->row_begin, t.shape[0])));
      return {whole.file, r.slices_.back().get()};
    };
    const auto* scales = linear_weight ? r.files_.find(module + names.block_scales) : nullptr;
    if (!scales) {
      const auto* ref = r.files_.find(stored_name);
      if (!ref) return make_error(dir + ": artifact has neither '" + stored_name + "' nor the NVFP4 tensors of '" + module + "'");
      if (ref->entry->shape != stored_shape)
        return make_error(where(*ref) + ": shape " + shape_text(ref->entry->shape) + " differs from the reference's " +
                          shape_text(stored_shape));
      a.source = slice(*ref);
      continue;
    }
    const auto* packed = r.files_.find(module + names.packed);
    const int64_t out = stored_shape[0], in = t.shape[1];
    if (mxfp4) {
      if (!packed)
        return make_error(where(*scales) + ": " + names.layout + " MXFP4 Linear '" + module + "' has no '" +
                          module + names.packed + "'");
      if (in % 32 != 0)
        return make_error(where(*scales) + ": MXFP4 Linear '" + t.module + "' has in_features " + std::to_string(in) +
                          ", not a multiple of 32");
      if (packed->entry->dtype != DType::U8 || packed->entry->shape != std::vector<int64_t>{out, in / 2})
        return make_error(where(*packed) + ": expected U8 " + shape_text({out, in / 2}) + ", found " +
                          std::string(dtype_name(packed->entry->dtype)) + " " + shape_text(packed->entry->shape));
      if (scales->entry->dtype != DType::U8 || scales->entry->shape != std::vector<int64_t>{out, in / 32})
        return make_error(where(*scales) + ": expected U8 (E8M0) " + shape_text({out, in / 32}) + ", found " +
                          std::string(dtype_name(scales->entry->dtype)) + " " + shape_text(scales->entry->shape));
      // 0xFF is E8M0's NaN: no fp4c artifact holds one (NaN weights are refused), so the file is damaged.
      const auto sb = scales->file->bytes(*scales->entry);
      for (size_t i = 0; i < sb.size(); ++i)
        if (uint8_t(sb[i]) == 0xFF)
          return make_error(where(*scales) + ": block scale " + std::to_string(i) + " (file offset " +
                            std::to_string(scales->file->data_offset() + scales->entry->begin + i) +
                            ") is 0xFF, E8M0's NaN");
      a.quantized = true;
      a.mxfp4 = true;
      a.input_mxfp4 = w4a4;
      a.packed = slice(*packed);
      a.scales = slice(*scales);
      continue;
    }
    const auto* global = r.files_.find(module + names.weight_global);
    for (const auto& [found, suffix] : {std::pair{packed, names.packed}, std::pair{global, names.weight_global}})
      if (!found)
        return make_error(where(*scales) + ": " + names.layout + " NVFP4 Linear '" + module + "' has no '" +
                          module + suffix + "'");
    if (packed->entry->dtype != DType::U8 || packed->entry->shape != std::vector<int64_t>{out, in / 2})
      return make_error(where(*packed) + ": expected U8 " + shape_text({out, in / 2}) + ", found " +
                        std::string(dtype_name(packed->entry->dtype)) + " " + shape_text(packed->entry->shape));
    if (scales->entry->dtype != DType::F8_E4M3 || scales->entry->shape != std::vector<int64_t>{out, in / 16})
      return make_error(where(*scales) + ": expected F8_E4M3 " + shape_text({out, in / 16}) + ", found " +
                        std::string(dtype_name(scales->entry->dtype)) + " " + shape_text(scales->entry->shape));
    a.quantized = true;
    a.packed = slice(*packed);
    a.scales = slice(*scales);
    FP4C_ASSIGN(const float g, read_scalar(*global, names.global_shape));
    a.weight_global_scale = names.reciprocal_globals ? 1.0f / g : g;
    if (names.reciprocal_globals) a.weight_scale_2 = g;
    if (const auto* input = r.files_.find(module + names.input_global)) {
      FP4C_ASSIGN(const float gx, read_scalar(*input, names.global_shape));
      a.input_global_scale = names.reciprocal_globals ? 1.0f / gx : gx;
    } else if (r.w4a4_) {
      return make_error(dir + ": W4A4 artifact has no input global scale for '" + module + "' (tensor '" +
                        module + names.input_global + "' is missing)");
    }
  }
  return r;
}

std::vector<float> ArtifactReader::dequantize(ir::TensorId id, const ir::Model& reference) const {
  const ArtifactTensor& a = tensors_[id];
  const auto& shape = reference.tensors[id].shape;
  std::vector<float> out(size_t(shape[0] * shape[1]));
  if (a.mxfp4) {
    mxfp4::dequantize(reinterpret_cast<const uint8_t*>(a.packed->file->bytes(*a.packed->entry).data()),
                      reinterpret_cast<const uint8_t*>(a.scales->file->bytes(*a.scales->entry).data()), shape[0],
                      shape[1], out.data());
    return out;
  }
  nvfp4::dequantize(reinterpret_cast<const uint8_t*>(a.packed->file->bytes(*a.packed->entry).data()),
                    reinterpret_cast<const uint8_t*>(a.scales->file->bytes(*a.scales->entry).data()), shape[0],
                    shape[1], a.weight_scale_2 ? 1.0f : a.weight_global_scale, out.data());
  if (a.weight_scale_2)
    for (float& v : out) v *= *a.weight_scale_2;
  return out;
}

}  // namespace fp4c::backends::compressed_tensors
