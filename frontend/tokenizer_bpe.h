// Hugging Face tokenizer.json with a BPE model: the byte-level BPE of Qwen2, Llama 3 and Mistral
// (Split + ByteLevel pre-tokenizers) and the SentencePiece-style BPE that Llama 2 and Mistral v0.1-v0.3
// checkpoints ship as tokenizer.json (Prepend/Replace normalizers or Metaspace, byte fallback).
//
// The pipeline is the `tokenizers` library's, stage by stage: added tokens are cut out first
// (leftmost-longest), the rest is normalized, pre-tokenized, run through the BPE model one
// pre-token at a time (merges by rank; results cached per pre-token) and wrapped by the
// post-processor. Anything the file configures that fp4c does not implement is a load error that
// names the file and the component, never a silent difference in token ids.
#pragma once

#include <memory>
#include <string>

#include "frontend/tokenizer.h"
#include "frontend/tokenizer_internal.h"

namespace fp4c::frontend {

// Parses tokenizer.json text; `path` is only used in messages.
Expected<std::unique_ptr<Tokenizer>> parse_hf_tokenizer(const std::string& text, const std::string& path,
                                                        const SpecialTokenConventions& conventions);

}  // namespace fp4c::frontend
