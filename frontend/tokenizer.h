// Tokenizers as checkpoints ship them: Hugging Face tokenizer.json (byte-level BPE, as Qwen2, Llama 3
// and Mistral ship it) and SentencePiece tokenizer.model (Llama 2 style).
#pragma once

#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "base/expected.h"

namespace fp4c::frontend {

class Tokenizer {
 public:
  virtual ~Tokenizer() = default;
  // Token ids of `text`. With add_special, the checkpoint's conventions apply (BOS prepended when the
  // tokenizer/config says so, as `AutoTokenizer(text)` would do by default).
  virtual Expected<std::vector<int32_t>> encode(std::string_view text, bool add_special = true) const = 0;
  virtual std::string decode(const std::vector<int32_t>& ids) const = 0;
  virtual int64_t vocab_size() const = 0;     // ids are in [0, vocab_size)
  virtual std::optional<int32_t> bos_id() const = 0;
  virtual std::optional<int32_t> eos_id() const = 0;
  virtual std::string_view kind() const = 0;   // "bpe" or "sentencepiece"
};

// Loads dir/tokenizer.json if present, else dir/tokenizer.model; tokenizer_config.json and
// config.json supply the BOS/EOS conventions. Errors name the file; a directory with neither file is
// an error that says text input needs a tokenizer and suggests `input_ids` records instead.
Expected<std::unique_ptr<Tokenizer>> load_tokenizer(const std::string& dir);

}  // namespace fp4c::frontend
