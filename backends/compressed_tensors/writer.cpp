#include "backends/compressed_tensors/writer.h"

#include <nlohmann/json.hpp>

#include <cstdio>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <map>
#include <sstream>

#include "formats/json_input.h"

namespace fp4c::backends::compressed_tensors {
namespace fs = std::filesystem;

std::vector<std::string> ignore_list(const ir::Model& model) {
  std::vector<std::string> out{"lm_head"};
  for (ir::TensorId id : model.linear_weights()) {
    const ir::TensorInfo& t = model.tensors[id];
    if (t.role == ir::Role::LmHead) continue;
    if (ir::is_fp4(model.annotations.decision[id].format)) continue;
    // A fused tensor (Phi-3's qkv_proj) is kept as a whole, under its own module's name.
    if (t.stored_in) {
      if (t.stored_in->row_begin == 0) out.push_back(t.stored_in->module);
      continue;
    }
    out.push_back(t.module);
  }
  return out;
}

namespace {

nlohmann::json quant_args(bool activations) {
  // Keys as compressed-tensors 0.18 serializes a QuantizationArgs (nlohmann::json sorts them).
  return nlohmann::json{
      {"num_bits", 4},
      {"type", "float"},
      {"strategy", "tensor_group"},
      {"group_size", 16},
      {"symmetric", true},
      {"dynamic", activations ? nlohmann::json("local") : nlohmann::json(false)},
      {"observer", activations ? "static_minmax" : "memoryless_minmax"},
      {"scale_dtype", "torch.float8_e4m3fn"},
      {"zp_dtype", nullptr},
      {"actorder", nullptr},
      {"block_structure", nullptr},
      {"observer_kwargs", nlohmann::json::object()},
  };
}

// MXFP4 as compressed-tensors' MXFP4A16 / MXFP4 presets define it (strategy group, group_size 32, E8M0
// scales as torch.uint8; activations dynamic per block), with the keys of quant_args above.
nlohmann::json mxfp4_args(bool activations) {
  return nlohmann::json{
      {"num_bits", 4},
      {"type", "float"},
      {"strategy", "group"},
      {"group_size", 32},
      {"symmetric", true},
      {"dynamic", activations},
      {"observer", activations ? nlohmann::json(nullptr) : nlohmann::json("memoryless_minmax")},
      {"scale_dtype", "torch.uint8"},
      {"zp_dtype", nullptr},
      {"actorder", nullptr},
      {"block_structure", nullptr},
      {"observer_kwargs", nlohmann::json::object()},
  };
}

}  // namespace

Expected<WrittenFile> write_config_with(const std::string& source_config_path, const std::string& dir,
                                        const std::string& quantization_config) {
  FP4C_ASSIGN(nlohmann::ordered_json config, json_input::read_file_ordered(source_config_path));
  if (!config.is_object())
    return make_error(source_config_path + ": not a JSON object");
  config["quantization_config"] = nlohmann::ordered_json::parse(quantization_config);

  const std::string path = (fs::path(dir) / "config.json").string();
  {
    std::ofstream out(path, std::ios::binary);
    out << config.dump(2) << "\n";
    if (!out) return make_error(path + ": write failed");
  }
  WrittenFile f{"config.json", 0, {}};
  FP4C_ASSIGN(f.hash, hash::hash_file(path, &f.bytes));
  return f;
}

Expected<WrittenFile> write_config(const std::string& source_config_path, const std::string& dir,
                                   const ir::Model& model, bool w4a4, bool mxfp4) {
  const char* format = mxfp4 ? "mxfp4-pack-quantized" : "nvfp4-pack-quantized";
  const auto args = [&](bool activations) { return mxfp4 ? mxfp4_args(activations) : quant_args(activations); };
  nlohmann::json group{
      {"format", format},
      {"targets", {"Linear"}},
      {"weights", args(false)},
      {"input_activations", w4a4 ? args(true) : nlohmann::json(nullptr)},
      {"output_activations", nullptr},
  };
  nlohmann::json q{
      {"config_groups", {{"group_0", group}}},
      {"format", format},
      {"global_compression_ratio", nullptr},
      {"ignore", ignore_list(model)},
      {"kv_cache_scheme", nullptr},
      {"quant_method", "compressed-tensors"},
      {"quantization_status", "compressed"},
      {"sparsity_config", nlohmann::json::object()},
      {"transform_config", nlohmann::json::object()},
      {"version", "0.18.0"},
  };
  // nlohmann::json keeps keys sorted; that order is carried into the ordered document.
  return write_config_with(source_config_path, dir, q.dump());
}

}  // namespace fp4c::backends::compressed_tensors
