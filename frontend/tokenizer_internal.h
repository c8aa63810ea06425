// Shared by the tokenizer implementations: the BOS/EOS conventions a checkpoint states outside its
// tokenizer file, and one loader per file kind.
#pragma once

#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "frontend/tokenizer.h"

namespace fp4c::frontend {

// What tokenizer_config.json and config.json say about BOS and EOS. A key that is absent stays
// nullopt; `bos_token_is_null` records an explicit `"bos_token": null` (Qwen2: no BOS at all).
struct SpecialTokenConventions {
  std::optional<bool> add_bos_token, add_eos_token;    // tokenizer_config.json
  std::optional<std::string> bos_token, eos_token;     // tokenizer_config.json, token text
  bool bos_token_is_null = false, eos_token_is_null = false;
  std::optional<int32_t> bos_token_id, eos_token_id;   // config.json (the first EOS of a list)
};

// Reads dir/tokenizer_config.json and dir/config.json where present; malformed ones are errors
// that name the file.
Expected<SpecialTokenConventions> read_special_token_conventions(const std::string& dir);

Expected<std::unique_ptr<Tokenizer>> load_hf_tokenizer(const std::string& path,
                                                       const SpecialTokenConventions& conventions);
Expected<std::unique_ptr<Tokenizer>> load_sentencepiece_tokenizer(const std::string& path,
                                                                  const SpecialTokenConventions& conventions);

// Applies an explicit add_bos_token / add_eos_token to the special tokens a tokenizer would put
// around the text on its own: true adds the token where it is missing, false removes it.
void apply_bos_eos_conventions(const SpecialTokenConventions& c, std::optional<int32_t> bos,
                               std::optional<int32_t> eos, std::vector<int32_t>& prefix,
                               std::vector<int32_t>& suffix);

}  // namespace fp4c::frontend
