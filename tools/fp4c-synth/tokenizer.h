// A byte-level BPE tokenizer learned from the embedded corpus, written in the Hugging Face
// `tokenizers` format the way Qwen2 (or Llama 3) ships it.
#pragma once

#include <cstdint>
#include <span>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "preset.h"

namespace fp4c::synth {

// The pre-tokenizer regexes of the two families; they differ only in how digits group.
inline constexpr std::string_view kQwen2Pattern =
    R"((?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+)";
inline constexpr std::string_view kLlama3Pattern =
    R"((?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+)";

// Splits UTF-8 text as the pattern above does (max_digits 1: Qwen2, 3: Llama 3). Letters, numbers
// and spaces are classified exactly for ASCII and for the scripts the corpus uses.
std::vector<std::string_view> pre_tokenize(std::string_view text, int max_digits);

// GPT-2's byte-to-unicode table: the token string (UTF-8) that stands for byte b, and the id order
// of the 256 byte tokens (printable bytes first, as in GPT-2's and Qwen2's vocabularies).
std::string byte_symbol(uint8_t b);
std::span<const uint8_t, 256> byte_token_order();

struct BpeModel {
  std::vector<std::string> tokens;                     // id -> token string (byte-level symbols)
  std::vector<std::pair<int32_t, int32_t>> merges;     // in rank order; merge k makes token 256 + k
};

// Learns merges on the words of `documents` (after pre_tokenize), most frequent pair first, ties to
// the smaller pair of ids; stops at max_merges or when no pair occurs min_count times.
BpeModel train_bpe(std::span<const std::string_view> documents, int max_digits, size_t max_merges,
                   int64_t min_count);

struct TokenizerFiles {
  std::string tokenizer_json;
  std::string tokenizer_config_json;
  SpecialIds ids;
};

// The family's tokenizer trained on the embedded corpus; deterministic.
TokenizerFiles make_tokenizer(Family family);

}  // namespace fp4c::synth
