#include "tools/fp4c/calibration_input.h"

#include <filesystem>
#include <map>
#include <tuple>

#include "frontend/tokenizer.h"
#include "tools/fp4c/size_option.h"

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
  sub->add_option("--max-calib-bytes", o.max_bytes,
                  "refuse a calibration/evaluation file holding more text than this, decompressed (default " +
                      format_bytes(frontend::kDefaultMaxCalibrationBytes) + ")");
  sub->add_option("--max-record-bytes", o.max_record_bytes,
                  "refuse a record (JSONL line, text paragraph) longer than this (default " +
                      format_bytes(frontend::kDefaultMaxRecordBytes) + ")");
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
  for (auto [text, flag, slot] : {std::tuple{&o.max_bytes, "--max-calib-bytes", &co.max_bytes},
                                  std::tuple{&o.max_record_bytes, "--max-record-bytes", &co.max_record_bytes}}) {
    if (text->empty()) continue;
    const auto size = parse_size(*text);
    if (!size) return make_error(std::string(flag) + " '" + *text + "': not a size (e.g. 512MiB)");
    *slot = *size;
  }
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
