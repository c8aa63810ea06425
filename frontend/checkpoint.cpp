#include "frontend/checkpoint.h"

#include <filesystem>

#include "frontend/architecture.h"
#include "frontend/config.h"

namespace fp4c::frontend {

Expected<LoadedCheckpoint> open_checkpoint(const std::string& dir) {
  std::error_code ec;
  if (!std::filesystem::is_directory(dir, ec))
    return make_error(dir + ": not a checkpoint directory");
  FP4C_ASSIGN(ir::ModelConfig config,
              read_config((std::filesystem::path(dir) / "config.json").string()));
  FP4C_ASSIGN(safetensors::Checkpoint files, safetensors::Checkpoint::open(dir));

  std::vector<TensorHeader> headers;
  headers.reserve(files.tensors().size());
  for (const safetensors::Checkpoint::Ref& ref : files.tensors())
    headers.push_back(TensorHeader{ref.entry->name, ref.entry->dtype, ref.entry->shape});
  FP4C_ASSIGN(ir::Model model, classify(config, headers, dir));

  LoadedCheckpoint out{dir, std::move(model), std::move(files), {}};
  // Refs point into the files' heap storage, which moving the Checkpoint leaves in place.
  out.refs.reserve(out.model.tensors.size());
  for (const ir::TensorInfo& t : out.model.tensors) {
    const safetensors::Checkpoint::Ref* ref = out.files.find(t.name);
    if (!ref) return make_error(dir + ": tensor '" + t.name + "' vanished from the checkpoint");
    out.refs.push_back(*ref);
  }
  return out;
}

}  // namespace fp4c::frontend
