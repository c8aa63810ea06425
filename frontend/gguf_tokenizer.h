// The tokenizer a GGUF file describes in its `tokenizer.ggml.*` metadata, as the Hugging Face files
// (tokenizer.json, tokenizer_config.json) that say the same, read by fp4c's tokenizer.json reader.
//
// tokenizer.ggml.model:
//   gpt2   byte-level BPE: tokens, merges, token types; the pre-tokenizer from tokenizer.ggml.pre as
//          llama.cpp splits text for it (llama-vocab.cpp, llm_tokenizer_bpe): llama-bpe (and its
//          aliases llama3, llama-v3, falcon3, ...), qwen2 (deepseek-r1-qwen, ...), smollm (starcoder,
//          refact, command-r, codeshell, exaone, minerva), gpt-2 (mpt, olmo, jais, trillion, ...)
//          and default (what llama.cpp uses when the key is absent); any other name is refused.
//   llama  SentencePiece-style BPE from tokens and scores (merges derived from the scores as
//          transformers' generate_merges does), byte fallback through <0xXX> tokens.
// Token types: CONTROL tokens (and the BOS/EOS/UNK/PAD tokens) become special added tokens,
// USER_DEFINED ones plain added tokens, both matched whole in the text before anything else.
// tokenizer.ggml.add_bos_token / add_eos_token decide what surrounds the text.
#pragma once

#include <memory>
#include <string>

#include "base/expected.h"
#include "formats/gguf.h"
#include "frontend/tokenizer.h"

namespace fp4c::frontend {

struct GgufTokenizerFiles {
  std::string tokenizer_json;         // tokenizer.json text
  std::string tokenizer_config_json;  // tokenizer_config.json text
};

// Whether the file has a tokenizer at all (a `tokenizer.ggml.model` key).
bool gguf_has_tokenizer(const gguf::File& file);

// The Hugging Face files for the file's tokenizer. Errors name the GGUF file and the key (and the
// index of a bad element): a model or pre-tokenizer fp4c does not implement, arrays of the wrong type or
// of different lengths, ids outside the vocabulary, a malformed merge.
Expected<GgufTokenizerFiles> gguf_tokenizer_files(const gguf::File& file);

// The tokenizer itself (gguf_tokenizer_files, parsed).
Expected<std::unique_ptr<Tokenizer>> load_gguf_tokenizer(const gguf::File& file);

}  // namespace fp4c::frontend
