#include "pipeline/token_sets.h"

#include <filesystem>

#include "frontend/tokenizer.h"

namespace fp4c::pipeline {

std::string packing_name(frontend::Packing packing) {
  return packing == frontend::Packing::Chunks ? "chunks" : "records";
}

Expected<frontend::TokenSet> load_tokens(const std::string& path, const std::string& model_dir,
                                         const ir::ModelConfig& config, const TokenSetOptions& o) {
  frontend::CalibrationOptions co;
  co.samples = o.samples;
  co.seq_len = o.seq_len;
  co.seed = o.seed;
  co.packing = o.packing;
  co.max_positions = config.max_position_embeddings;
  co.vocab_size = config.vocab_size;
  co.max_bytes = o.max_bytes;
  co.max_record_bytes = o.max_record_bytes;
  // A tokenizer is needed only for text; an input_ids set must load without one.
  auto tokenizer = frontend::load_tokenizer(model_dir);
  namespace fs = std::filesystem;
  std::error_code ec;
  const bool has_tokenizer_file = fs::exists(fs::path(model_dir) / "tokenizer.json", ec) ||
                                  fs::exists(fs::path(model_dir) / "tokenizer.model", ec);
  if (!tokenizer && has_tokenizer_file) return tokenizer.error();
  if (!tokenizer && fs::exists(fs::path(model_dir) / "fp4c-tokenizer-error.txt", ec))
    co.no_tokenizer_reason = tokenizer.error().message;  // a GGUF source whose tokenizer fp4c cannot read
  return frontend::load_token_set(path, tokenizer ? tokenizer->get() : nullptr, co);
}

}  // namespace fp4c::pipeline
