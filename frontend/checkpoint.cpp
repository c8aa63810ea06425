#include "frontend/checkpoint.h"

#include <filesystem>

#include "frontend/architecture.h"
#include "frontend/config.h"

namespace fp4c::frontend {

std::string_view source_format_name(SourceFormat f) { return f == SourceFormat::Gguf ? "gguf" : "safetensors"; }

namespace {

// `label` names the checkpoint in classification errors (the GGUF file for its image).
// `weights`: the tensors when they are not files in `dir` (a GGUF image made in memory).
Expected<LoadedCheckpoint> open_directory(const std::string& dir, const std::string& label,
                                          std::optional<safetensors::File> weights = std::nullopt) {
  FP4C_ASSIGN(ir::ModelConfig config,
              read_config((std::filesystem::path(dir) / "config.json").string()));
  safetensors::Checkpoint files;
  if (weights) {
    files = safetensors::Checkpoint::of_file(std::move(*weights));
  } else {
    FP4C_ASSIGN(files, safetensors::Checkpoint::open(dir));
  }

  std::vector<TensorHeader> headers;
  headers.reserve(files.tensors().size());
  for (const safetensors::Checkpoint::Ref& ref : files.tensors())
    headers.push_back(TensorHeader{ref.entry->name, ref.entry->dtype, ref.entry->shape});
  FP4C_ASSIGN(ir::Model model, classify(config, headers, label));

  LoadedCheckpoint out{dir, std::move(model), std::move(files), {}};
  // Refs point into the files' heap storage, which moving the Checkpoint leaves in place.
  out.refs.reserve(out.model.tensors.size());
  for (const ir::TensorInfo& t : out.model.tensors) {
    if (t.stored_in) {   // a row slice of a fused tensor, checked whole by classify
      const safetensors::Checkpoint::Ref* whole = out.files.find(t.stored_in->tensor);
      if (!whole) return make_error(dir + ": tensor '" + t.stored_in->tensor + "' vanished from the checkpoint");
      out.slices.push_back(std::make_unique<safetensors::TensorEntry>(
          safetensors::row_slice(*whole->entry, t.name, t.stored_in->row_begin, t.shape[0])));
      out.refs.push_back({whole->file, out.slices.back().get()});
      continue;
    }
    const safetensors::Checkpoint::Ref* ref = out.files.find(t.name);
    if (!ref) return make_error(dir + ": tensor '" + t.name + "' vanished from the checkpoint");
    out.refs.push_back(*ref);
  }
  return out;
}

}  // namespace

Expected<LoadedCheckpoint> open_checkpoint(const std::string& model) {
  FP4C_ASSIGN(std::optional<std::string> gguf_path, find_gguf(model));
  if (gguf_path) {
    FP4C_ASSIGN(GgufImage image, write_gguf_image(*gguf_path));
    FP4C_ASSIGN(LoadedCheckpoint out, open_directory(image.dir->path(), *gguf_path, std::move(image.weights)));
    out.source_format = SourceFormat::Gguf;
    out.source_path = *gguf_path;
    out.dequantized_types = std::move(image.dequantized_types);
    // A block-format embedding makes a bfloat16 model (gguf_config_json): its F32 tensors are written as BF16.
    if (!out.dequantized_types.empty() && out.model.config.torch_dtype == "bfloat16")
      for (ir::TensorInfo& t : out.model.tensors)
        if (t.dtype == DType::F32) t.kept_as = DType::BF16;
    out.image = std::move(image.dir);
    return out;
  }
  std::error_code ec;
  if (!std::filesystem::is_directory(model, ec)) return make_error(model + ": not a checkpoint directory");
  return open_directory(model, model);
}

}  // namespace fp4c::frontend
