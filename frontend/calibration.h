// Calibration and evaluation sets: JSONL records with `text` or `input_ids`, plain text files, either
// gzip-compressed; selected and packed into token sequences deterministically.
//
// Formats. The name, less a trailing `.gz`, picks the format: `.jsonl` and `.json` are JSON Lines,
// anything else (`.txt`, ...) is plain text. Compression is found by content, not name: a file
// starting with the gzip magic bytes 1f 8b is decompressed (concatenated members are read one after
// another, as gzip -d does; anything after a member that is not another member is an error).
// A UTF-8 byte order mark at the start is skipped; lines end at "\n", and a "\r" before it is dropped.
// - JSON Lines: one JSON object per line; lines holding only whitespace are skipped. A record has
//   `input_ids` (an array of integers, used as they are, BOS included only if written) or `text` (a
//   string, encoded with tokenizer->encode(text, /*add_special=*/true), so the checkpoint's BOS
//   convention applies); with both, `input_ids` wins; null counts as absent; other keys are ignored.
// - Plain text: a record is a paragraph: a run of lines that are not blank, separated by one or more
//   blank lines (empty or whitespace only). The paragraph's lines are joined with "\n", as written,
//   and encoded like a `text` record. A record's line is the line its paragraph starts on.
//
// Checks, on every record: ids in [0, vocab_size) (vocab_size 0: only that ids are non-negative and
// fit in int32), at least min_tokens ids (before truncation), and with Records and no seq_len, at
// most max_positions ids. Every record is read, tokenized and checked, whichever are then selected,
// so an error does not depend on the seed or the sample count.
//
// Packing and selection:
// - Records: a sample per record, truncated to seq_len when seq_len > 0.
// - Chunks: every record's ids concatenated in file order into one stream, cut into consecutive
//   seq_len chunks; the short tail is dropped (as llama.cpp's imatrix does). No BOS is inserted: a
//   chunk holds one only where a record carries it.
// - samples 0 takes every sample; samples >= available takes every one as well, and TokenSet says
//   how many were asked for and how many there were; otherwise choose_samples() picks which.
//
// Errors name the file; for a record, "FILE:LINE: " (1-based line) starts the message. Token
// positions are 0-based indices into the record's ids.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "formats/hash.h"
#include "frontend/tokenizer.h"
#include "base/expected.h"

namespace fp4c::frontend {

enum class Packing : uint8_t {
  Records,   // one sample per record (JSONL record, or plain-text paragraph), truncated to seq_len
  Chunks,    // all records concatenated (in file order), cut into seq_len chunks (llama.cpp imatrix)
};

// Text at most 4 bytes of ids per byte: 256 MiB of text stays under ~1.3 GB with its ids.
inline constexpr uint64_t kDefaultMaxCalibrationBytes = uint64_t(256) << 20;   // --max-calib-bytes
inline constexpr uint64_t kDefaultMaxRecordBytes = uint64_t(4) << 20;          // --max-record-bytes

struct CalibrationOptions {
  int64_t samples = 0;          // 0: all
  int64_t seq_len = 0;          // 0: no limit for Records (model max positions apply); required for Chunks
  uint64_t seed = 0;            // selection: when fewer samples than available are asked for, a
                                // seeded shuffle picks which (documented, stable across platforms)
  Packing packing = Packing::Records;
  int64_t min_tokens = 2;       // a record shorter than this is an error (naming its line)
  int64_t max_positions = 0;    // the model's max_position_embeddings; seq_len above it is an error
  int64_t vocab_size = 0;       // ids must be in [0, vocab_size); 0: unknown, ids only checked >= 0
  // Memory bounds (README "Limits"): the file's text, decompressed, and one record (a JSONL line or
  // a plain-text paragraph). Past either, an error naming the limit and the option that raises it.
  uint64_t max_bytes = kDefaultMaxCalibrationBytes;
  uint64_t max_record_bytes = kDefaultMaxRecordBytes;
  // Why there is no tokenizer (load_tokenizer's error), added to the error for a text record.
  std::string no_tokenizer_reason;
};

struct TokenSet {
  std::vector<std::vector<int32_t>> sequences;
  hash::Digest source_hash;     // XXH3-128 of the file's bytes as stored (compressed or not)
  int64_t total_tokens() const;
  // Where each sequence came from: Records: the 1-based line of its record; Chunks: the chunk's
  // 0-based index in the stream. Ascending: the chosen samples keep their order in the file.
  std::vector<int64_t> origins;
  int64_t requested = 0;        // options.samples (0: all)
  int64_t available = 0;        // samples the file offers: records (Records) or whole chunks (Chunks)
  int64_t records = 0;          // records in the file
  int64_t dropped_tokens = 0;   // Chunks: the tail shorter than seq_len; Records: cut off the chosen
                                // samples by truncation to seq_len
};

// `tokenizer` may be null: then text records are an error suggesting input_ids. Errors name the
// file and line (JSONL) and say what is wrong: empty set, malformed JSON, missing field, token id
// outside the vocabulary, record too short, corrupt gzip stream, seq_len above max positions,
// Chunks without seq_len (or with fewer tokens than one chunk), a record above max positions with
// Records and no seq_len (pass --seq-len).
Expected<TokenSet> load_token_set(const std::string& path, const Tokenizer* tokenizer,
                                  const CalibrationOptions& options);

// Which `count` of `available` samples to take (0 < count < available), ascending. Stable across
// platforms and compilers (no std::shuffle, no std::uniform_int_distribution):
//   SplitMix64 from state = seed: state += 0x9e3779b97f4a7c15; z = state;
//     z = (z ^ z >> 30) * 0xbf58476d1ce4e5b9; z = (z ^ z >> 27) * 0x94d049bb133111eb; z ^ z >> 31.
//   below(m): t = 2^64 mod m; draw z until z >= t; z mod m (unbiased).
//   idx = 0..available-1; for i in 0..count-1: swap(idx[i], idx[i + below(available - i)]);
//   the answer is idx[0..count) sorted (a partial Fisher-Yates shuffle).
std::vector<int64_t> choose_samples(int64_t available, int64_t count, uint64_t seed);

// A file's contents, decompressed when it is gzip (by magic bytes), with the hash of its bytes as
// stored. Errors name the file; a corrupt or truncated gzip stream also the compressed byte offset
// (how far zlib had read when it found the damage; for a truncated stream, the file's size). More
// than max_bytes of contents (decompressed) is an error, found before more is held in memory.
struct SourceBytes {
  std::string data;             // decompressed
  hash::Digest stored_hash;     // XXH3-128 of the bytes as stored (= hash::hash_file(path))
  uint64_t stored_size = 0;
  bool gzip = false;
};
Expected<SourceBytes> read_source(const std::string& path, uint64_t max_bytes = kDefaultMaxCalibrationBytes);

}  // namespace fp4c::frontend
