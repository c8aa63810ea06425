// A Hugging Face checkpoint directory opened for reading: config, classified IR, mapped tensors.
#pragma once

#include <memory>
#include <string>
#include <vector>

#include "formats/safetensors.h"
#include "base/expected.h"
#include "frontend/gguf_checkpoint.h"
#include "ir/model.h"

namespace fp4c::frontend {

enum class SourceFormat { Safetensors, Gguf };
std::string_view source_format_name(SourceFormat f);

struct LoadedCheckpoint {
  // The Hugging Face directory read: the model directory, or for a GGUF source the image of it
  // (frontend/gguf_checkpoint.h: config.json and the tensors, dequantized: in memory for an image of at
  // most half the available memory, else model.safetensors there) under `image`.
  std::string dir;
  ir::Model model;
  safetensors::Checkpoint files;
  // The checkpoint entry of each IR tensor, indexed by TensorId.
  std::vector<safetensors::Checkpoint::Ref> refs;
  // The entries of row slices of fused tensors (ir::TensorInfo::stored_in) that refs point to.
  std::vector<std::unique_ptr<safetensors::TensorEntry>> slices;
  SourceFormat source_format = SourceFormat::Safetensors;
  std::string source_path;                     // the GGUF file (empty for safetensors)
  std::vector<std::string> dequantized_types;  // GGUF block formats dequantized to F32, e.g. {"Q4_1", "Q8_0"}
  std::shared_ptr<ScratchDir> image;
};

// `model`: a Hugging Face directory (config.json, safetensors single or sharded), a GGUF file, or a
// directory holding exactly one .gguf. Reads the config, opens the tensors, classifies every tensor.
Expected<LoadedCheckpoint> open_checkpoint(const std::string& model);

}  // namespace fp4c::frontend
