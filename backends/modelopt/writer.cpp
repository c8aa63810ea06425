#include "backends/modelopt/writer.h"

#include <nlohmann/json.hpp>

#include <algorithm>
#include <filesystem>
#include <fstream>

namespace fp4c::backends::modelopt {
namespace fs = std::filesystem;

std::vector<std::string> exclude_modules(const ir::Model& model) {
  auto names = compressed_tensors::ignore_list(model);
  std::sort(names.begin(), names.end());
  return names;
}

std::string hf_quant_config(const ir::Model& model, bool w4a4, const std::string& producer_version) {
  const nlohmann::json doc{
      {"producer", {{"name", "fp4c"}, {"version", producer_version}}},
      {"quantization",
       {{"quant_algo", w4a4 ? "NVFP4" : "W4A16_NVFP4"},
        {"kv_cache_quant_algo", nullptr},
        {"group_size", 16},
        {"exclude_modules", exclude_modules(model)}}},
  };
  return doc.dump();
}

Expected<std::vector<WrittenFile>> write_configs(const std::string& source_config_path, const std::string& dir,
                                                 const ir::Model& model, bool w4a4,
                                                 const std::string& producer_version) {
  std::vector<WrittenFile> out;
  const std::string text = hf_quant_config(model, w4a4, producer_version);
  const std::string path = (fs::path(dir) / kQuantConfigFile).string();
  {
    std::ofstream f(path, std::ios::binary);
    f << nlohmann::json::parse(text).dump(2) << "\n";
    if (!f) return make_error(path + ": write failed");
  }
  WrittenFile quant{kQuantConfigFile, 0, {}};
  FP4C_ASSIGN(quant.hash, hash::hash_file(path, &quant.bytes));
  out.push_back(std::move(quant));

  nlohmann::json mirror = nlohmann::json::parse(text);
  mirror["quant_method"] = "modelopt";
  FP4C_ASSIGN(auto config, compressed_tensors::write_config_with(source_config_path, dir, mirror.dump()));
  out.push_back(std::move(config));
  return out;
}

}  // namespace fp4c::backends::modelopt
