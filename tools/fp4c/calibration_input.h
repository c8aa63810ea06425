// Shared by the subcommands that read a calibration or evaluation set: the CLI options and loading
// the tokens for a checkpoint (its tokenizer when the set holds text).
#pragma once

#include <CLI/CLI.hpp>

#include <string>

#include "frontend/calibration.h"
#include "ir/model.h"

namespace fp4c::tools {

struct TokenSetOptions {
  int64_t samples = 0;
  int64_t seq_len = 0;
  uint64_t seed = 0;
  std::string packing = "records";
  std::string max_bytes;          // --max-calib-bytes (empty: frontend's default)
  std::string max_record_bytes;   // --max-record-bytes (empty: frontend's default)
};

// Declares --{prefix}samples, --seq-len, --seed, --packing, --max-calib-bytes and --max-record-bytes on `sub`.
void add_token_set_options(CLI::App* sub, TokenSetOptions& o, const std::string& samples_flag);

// Loads `path` for the model in `model_dir`: input_ids records need no tokenizer; text records use
// the checkpoint's tokenizer.json or tokenizer.model.
Expected<frontend::TokenSet> load_tokens(const std::string& path, const std::string& model_dir,
                                         const ir::ModelConfig& config, const TokenSetOptions& o);

}  // namespace fp4c::tools
