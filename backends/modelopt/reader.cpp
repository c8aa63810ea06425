#include "backends/modelopt/reader.h"

#include <nlohmann/json.hpp>

#include <filesystem>
#include <fstream>
#include <sstream>

#include "backends/modelopt/writer.h"
#include "formats/json_input.h"

namespace fp4c::backends::modelopt {
namespace fs = std::filesystem;

Expected<compressed_tensors::ArtifactReader> open(const std::string& dir, const ir::Model& reference) {
  const std::string path = (fs::path(dir) / kQuantConfigFile).string();
  FP4C_ASSIGN(const nlohmann::json doc, json_input::read_file(path));
  if (!doc.is_object()) return make_error(path + ": malformed JSON (not an object)");
  const auto producer = doc.find("producer");
  if (producer == doc.end() || !producer->is_object() || !producer->contains("name"))
    return make_error(path + ": no 'producer' object with a 'name'");
  const auto q = doc.find("quantization");
  if (q == doc.end() || !q->is_object()) return make_error(path + ": no 'quantization' object");
  // What vLLM's ModelOpt NVFP4 config requires of hf_quant_config.json.
  for (const char* field : {"quant_algo", "group_size", "kv_cache_quant_algo", "exclude_modules"})
    if (!q->contains(field)) return make_error(path + ": 'quantization' has no '" + field + "'");
  const auto& algo = q->at("quant_algo");   // each field's presence checked above
  if (!algo.is_string() || (algo != "NVFP4" && algo != "W4A16_NVFP4"))
    return make_error(path + ": quant_algo " + algo.dump() + " is not NVFP4 or W4A16_NVFP4");
  const auto& group = q->at("group_size");
  if (!group.is_number_integer() || group.get<int64_t>() != 16)
    return make_error(path + ": group_size " + group.dump() + " is not 16");
  const auto& kv = q->at("kv_cache_quant_algo");
  if (!kv.is_null() && !kv.is_string())
    return make_error(path + ": kv_cache_quant_algo " + kv.dump() + " is neither null nor a string");
  const auto& exclude = q->at("exclude_modules");
  if (!exclude.is_array()) return make_error(path + ": exclude_modules is not a list");
  for (const auto& e : exclude)
    if (!e.is_string()) return make_error(path + ": exclude_modules holds " + e.dump() + ", not a module name");
  return compressed_tensors::ArtifactReader::open_tensors(dir, reference, modelopt_names(), algo == "NVFP4");
}

}  // namespace fp4c::backends::modelopt
