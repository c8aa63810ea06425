#include "backends/artifact_reader.h"

#include <filesystem>

#include "backends/modelopt/reader.h"
#include "backends/modelopt/writer.h"

namespace fp4c::backends {

bool is_modelopt_artifact(const std::string& dir) {
  std::error_code ec;
  return std::filesystem::exists(std::filesystem::path(dir) / modelopt::kQuantConfigFile, ec);
}

Expected<compressed_tensors::ArtifactReader> open_artifact(const std::string& dir, const ir::Model& reference) {
  if (is_modelopt_artifact(dir)) return modelopt::open(dir, reference);
  return compressed_tensors::ArtifactReader::open(dir, reference);
}

}  // namespace fp4c::backends
