// Calibration and evaluation sets: JSONL records with `text` or `input_ids`, plain text files, either
// gzip-compressed; selected and packed into token sequences deterministically.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "formats/hash.h"
#include "frontend/tokenizer.h"
#include "ir/expected.h"

namespace fp4c::frontend {

enum class Packing : uint8_t {
  Records,   // one sample per record (JSONL record, or plain-text paragraph), truncated to seq_len
  Chunks,    // all records concatenated (in file order), cut into seq_len chunks (llama.cpp imatrix)
};

struct CalibrationOptions {
  int64_t samples = 0;          // 0: all
  int64_t seq_len = 0;          // 0: no limit for Records (model max positions apply); required for Chunks
  uint64_t seed = 0;            // selection: when fewer samples than available are asked for, a
                                // seeded shuffle picks which (documented, stable across platforms)
  Packing packing = Packing::Records;
  int64_t min_tokens = 2;       // a record shorter than this is an error (naming its line)
  int64_t max_positions = 0;    // the model's max_position_embeddings; seq_len above it is an error
  int64_t vocab_size = 0;       // ids must be in [0, vocab_size)
};

struct TokenSet {
  std::vector<std::vector<int32_t>> sequences;
  hash::Digest source_hash;     // XXH3-128 of the file's bytes as stored (compressed or not)
  int64_t total_tokens() const;
};

// `tokenizer` may be null: then text records are an error suggesting input_ids. Errors name the
// file and line (JSONL) and say what is wrong: empty set, malformed JSON, missing field, token id
// outside the vocabulary, record too short, corrupt gzip stream, seq_len above max positions.
Expected<TokenSet> load_token_set(const std::string& path, const Tokenizer* tokenizer,
                                  const CalibrationOptions& options);

}  // namespace fp4c::frontend
