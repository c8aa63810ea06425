// config.json -> typed model metadata.
#pragma once

#include <string>

#include "base/expected.h"
#include "ir/model.h"

namespace fp4c::frontend {

// Reads and validates `path` (a config.json). Errors name the file and the key: missing file,
// malformed JSON (with the byte offset), missing or mistyped required keys, unsupported architecture.
Expected<ir::ModelConfig> read_config(const std::string& path);
// The same from text already in memory; `path` is only used in messages.
Expected<ir::ModelConfig> parse_config(const std::string& text, const std::string& path);

}  // namespace fp4c::frontend
