// A Hugging Face checkpoint directory opened for reading: config, classified IR, mapped tensors.
#pragma once

#include <string>

#include "formats/safetensors.h"
#include "base/expected.h"
#include "ir/model.h"

namespace fp4c::frontend {

struct LoadedCheckpoint {
  std::string dir;
  ir::Model model;
  safetensors::Checkpoint files;
  // The checkpoint entry of each IR tensor, indexed by TensorId.
  std::vector<safetensors::Checkpoint::Ref> refs;
};

// Reads dir/config.json, opens the safetensors files (single or sharded), classifies every tensor.
Expected<LoadedCheckpoint> open_checkpoint(const std::string& dir);

}  // namespace fp4c::frontend
