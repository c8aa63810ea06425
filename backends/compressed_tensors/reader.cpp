#include "backends/compressed_tensors/reader.h"

#include <nlohmann/json.hpp>

#include <cmath>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <sstream>

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

Expected<float> read_scalar(const safetensors::Checkpoint::Ref& r) {
  if (r.entry->dtype != DType::F32 || r.entry->numel() != 1)
    return make_error(where(r) + ": expected one F32 value, found " + std::string(dtype_name(r.entry->dtype)) + " " +
                      shape_text(r.entry->shape));
  float v;
  std::memcpy(&v, r.file->bytes(*r.entry).data(), 4);
  if (!(v > 0) || !std::isfinite(v)) return make_error(where(r) + ": global scale " + std::to_string(v) + " is not a positive finite number");
  return v;
}

}  // namespace

Expected<ArtifactReader> ArtifactReader::open(const std::string& dir, const ir::Model& reference) {
  ArtifactReader r;
  const std::string config_path = (fs::path(dir) / "config.json").string();
  {
    std::ifstream in(config_path, std::ios::binary);
    if (!in) return make_error(config_path + ": cannot open the artifact's config.json");
    std::stringstream ss;
    ss << in.rdbuf();
    auto config = nlohmann::json::parse(ss.str(), nullptr, false);
    if (config.is_discarded() || !config.is_object()) return make_error(config_path + ": malformed JSON");
    const auto q = config.find("quantization_config");
    if (q == config.end() || !q->is_object() || q->value("quant_method", "") != "compressed-tensors")
      return make_error(config_path + ": no compressed-tensors quantization_config; not an fp4c NVFP4 artifact");
    const auto& groups = (*q)["config_groups"];
    if (groups.is_object())
      for (const auto& [name, g] : groups.items())
        if (g.is_object() && g.contains("input_activations") && !g["input_activations"].is_null()) r.w4a4_ = true;
  }
  FP4C_ASSIGN(r.files_, safetensors::Checkpoint::open(dir));

  r.tensors_.resize(reference.tensors.size());
  for (ir::TensorId id = 0; id < reference.tensors.size(); ++id) {
    const ir::TensorInfo& t = reference.tensors[id];
    ArtifactTensor& a = r.tensors_[id];
    if (const auto* ref = r.files_.find(t.name)) {
      if (ref->entry->shape != t.shape)
        return make_error(where(*ref) + ": shape " + shape_text(ref->entry->shape) + " differs from the reference's " +
                          shape_text(t.shape));
      a.source = *ref;
      continue;
    }
    const auto* packed = r.files_.find(t.module + ".weight_packed");
    const auto* scales = r.files_.find(t.module + ".weight_scale");
    const auto* global = r.files_.find(t.module + ".weight_global_scale");
    if (!packed || !scales || !global || t.shape.size() != 2)
      return make_error(dir + ": artifact has neither '" + t.name + "' nor the NVFP4 tensors of '" + t.module + "'");
    const int64_t out = t.shape[0], in = t.shape[1];
    if (packed->entry->dtype != DType::U8 || packed->entry->shape != std::vector<int64_t>{out, in / 2})
      return make_error(where(*packed) + ": expected U8 " + shape_text({out, in / 2}) + ", found " +
                        std::string(dtype_name(packed->entry->dtype)) + " " + shape_text(packed->entry->shape));
    if (scales->entry->dtype != DType::F8_E4M3 || scales->entry->shape != std::vector<int64_t>{out, in / 16})
      return make_error(where(*scales) + ": expected F8_E4M3 " + shape_text({out, in / 16}) + ", found " +
                        std::string(dtype_name(scales->entry->dtype)) + " " + shape_text(scales->entry->shape));
    a.quantized = true;
    a.packed = *packed;
    a.scales = *scales;
    FP4C_ASSIGN(a.weight_global_scale, read_scalar(*global));
    if (const auto* input = r.files_.find(t.module + ".input_global_scale")) {
      FP4C_ASSIGN(float gx, read_scalar(*input));
      a.input_global_scale = gx;
    } else if (r.w4a4_) {
      return make_error(dir + ": W4A4 artifact has no input global scale for '" + t.module +
                        "' (tensor '" + t.module + ".input_global_scale' is missing)");
    }
  }
  return r;
}

std::vector<float> ArtifactReader::dequantize(ir::TensorId id, const ir::Model& reference) const {
  const ArtifactTensor& a = tensors_[id];
  const auto& shape = reference.tensors[id].shape;
  std::vector<float> out(size_t(shape[0] * shape[1]));
  nvfp4::dequantize(reinterpret_cast<const uint8_t*>(a.packed->file->bytes(*a.packed->entry).data()),
                    reinterpret_cast<const uint8_t*>(a.scales->file->bytes(*a.scales->entry).data()), shape[0],
                    shape[1], a.weight_global_scale, out.data());
  return out;
}

}  // namespace fp4c::backends::compressed_tensors
