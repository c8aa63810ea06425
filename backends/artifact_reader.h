// Opens an fp4c artifact in either Hugging Face layout: ModelOpt when hf_quant_config.json is
// present, compressed-tensors otherwise.
#pragma once

#include <string>

#include "backends/compressed_tensors/reader.h"

namespace fp4c::backends {

bool is_modelopt_artifact(const std::string& dir);

Expected<compressed_tensors::ArtifactReader> open_artifact(const std::string& dir, const ir::Model& reference);

}  // namespace fp4c::backends
