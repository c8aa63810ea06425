#include "tools/fp4c/calibration_input.h"

#include <filesystem>
#include <map>

#include "frontend/tokenizer.h"

namespace fp4c::tools {

void add_token_set_options(CLI::App* sub, TokenSetOptions& o, const std::string& samples_flag) {
  sub->add_option(samples_flag, o.samples, "number of samples to use (0: all), chosen by a seeded shuffle");
  sub->add_option("--seq-len", o.seq_len, "tokens per sample: records are truncated to it, chunks cut to it");
  sub->add_option("--seed", o.seed, "seed of the sample selection");
  sub->add_option("--packing", o.packing,
                  "records: one sample per record (JSONL line or text paragraph); chunks: all records "
                  "concatenated and cut into --seq-len chunks, as llama.cpp's imatrix does")
      ->check(CLI::IsMember({"records", "chunks"}))
      ->default_str("records");
}

Expected<frontend::TokenSet> load_tokens(const std::string& path, const std::string& model_dir,
                                         const ir::ModelConfig& config, const TokenSetOptions& o) {
  frontend::CalibrationOptions co;
  co.samples = o.samples;
  co.seq_len = o.seq_len;
  co.seed = o.seed;
  co.packing = o.packing == "chunks" ? frontend::Packing::Chunks : frontend::Packing::Records;
  co.max_positions = config.max_position_embeddings;
  co.vocab_size = config.vocab_size;
  // A tokenizer is needed only for text; an input_ids set must load without one.
  auto tokenizer = frontend::load_tokenizer(model_dir);
  namespace fs = std::filesystem;
  std::error_code ec;
  const bool has_tokenizer_file = fs::exists(fs::path(model_dir) / "tokenizer.json", ec) ||
                                  fs::exists(fs::path(model_dir) / "tokenizer.model", ec);
  if (!tokenizer && has_tokenizer_file) return tokenizer.error();
  return frontend::load_token_set(path, tokenizer ? tokenizer->get() : nullptr, co);
}

}  // namespace fp4c::tools
