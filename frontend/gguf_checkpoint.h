// A GGUF file as a checkpoint source: its metadata read as a Hugging Face config, its tensors renamed to
// Hugging Face's (llama.cpp's Q/K row permutation undone), block formats dequantized to F32.
#pragma once

#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "base/expected.h"
#include "formats/gguf.h"
#include "formats/safetensors.h"

namespace fp4c::frontend {

// A directory of this process's own, removed (with what it holds) when the last owner lets go.
class ScratchDir {
 public:
  static Expected<std::shared_ptr<ScratchDir>> create(const std::string& prefix);
  ~ScratchDir();
  ScratchDir(const ScratchDir&) = delete;
  ScratchDir& operator=(const ScratchDir&) = delete;
  const std::string& path() const { return path_; }

 private:
  explicit ScratchDir(std::string path) : path_(std::move(path)) {}
  std::string path_;
};

// The GGUF file `model` names: the file itself (a regular file whose first bytes are "GGUF"), or the one
// *.gguf in a directory holding no config.json; nullopt when `model` is neither (a Hugging Face
// directory). A directory holding several .gguf files is an error naming them.
Expected<std::optional<std::string>> find_gguf(const std::string& model);

// What a GGUF source became: a Hugging Face-shaped directory (config.json, model.safetensors) the rest of
// fp4c reads as any checkpoint.
struct GgufImage {
  std::shared_ptr<ScratchDir> dir;
  // The tensors, when the image was made in memory (dir then holds no model.safetensors).
  std::optional<safetensors::File> weights;
  std::string gguf_path;
  std::string gguf_architecture;               // general.architecture, e.g. "llama"
  std::vector<std::string> dequantized_types;  // ggml types dequantized to F32, sorted ("Q4_1", "Q8_0")
};

// Reads the GGUF at `path` and writes its image under a new scratch directory in the system's temporary
// directory: config.json from the metadata (general.architecture's table: llama (and Mixtral: llama with
// experts), qwen2, qwen3, gemma3, phi3, qwen3moe), model.safetensors (or `weights`, per ImageStorage) with every
// tensor under its Hugging Face name (a stack of experts split per expert), F32/F16/BF16 as they
// are and block formats dequantized to F32, in the GGUF's order; tokenizer.json and tokenizer_config.json
// from tokenizer.ggml.* (frontend/gguf_tokenizer.h; when fp4c cannot read that tokenizer, or there is none,
// fp4c-tokenizer-error.txt says why, for load_tokenizer to report when text needs tokenizing) and
// generation_config.json. Errors name the GGUF file and the key
// or tensor: an architecture or tensor fp4c has no table entry for, metadata that is missing or
// mistyped, a tensor type it does not read.
// Where the image's tensors go: anonymous memory (produced in place, nothing written or read back: the
// fast way) or model.safetensors in the scratch directory (pages the kernel can drop and read again, for
// images larger than memory). Auto: in memory when the image is at most half of MemAvailable.
enum class ImageStorage { Auto, Memory, Disk };
uint64_t memory_image_limit();
Expected<GgufImage> write_gguf_image(const std::string& path, ImageStorage storage = ImageStorage::Auto);

// generation_config.json for a GGUF's metadata: its BOS, EOS and padding token ids, where it has them.
std::string gguf_generation_config_json(const gguf::File& file);

// The config.json text for a GGUF's metadata (exposed for tests).
Expected<std::string> gguf_config_json(const gguf::File& file);

}  // namespace fp4c::frontend
