// SentencePiece tokenizer.model (frontend::load_sentencepiece_tokenizer): the protobuf
// (frontend/sentencepiece_model.proto), piece types, normalizer spec, byte fallback, unigram and BPE
// models. A tokenizer that loads encodes a few texts (ASCII, whitespace runs, non-Latin scripts,
// invalid UTF-8, control bytes) with and without special tokens; every id must be in [0, vocab_size).
#include <cstddef>
#include <cstdint>
#include <string>

#include "frontend/tokenizer_internal.h"
#include "fuzz_support.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const std::string path = fp4c::fuzz::Scratch::get().write("tokenizer.model", data, size);
  auto t = fp4c::frontend::load_sentencepiece_tokenizer(path, fp4c::frontend::SpecialTokenConventions{});
  if (!t.ok()) return 0;
  static constexpr char kInvalid[] = "bad \xff\xfe utf-8 \xc3 and a NUL \0 byte";
  static const std::string texts[] = {
      "Once upon a time, there was a little girl named Lily.",
      "  leading and   inner   spaces\tand\ttabs\n\nnewlines  ",
      "\xe4\xbd\xa0\xe5\xa5\xbd \xd0\xbf\xd1\x80\xd0\xb8\xd0\xb2\xd0\xb5\xd1\x82 \xf0\x9f\x98\x80 caf\xc3\xa9",
      std::string(kInvalid, sizeof kInvalid - 1),
      "",
  };
  for (const auto& text : texts)
    for (bool add_special : {true, false}) {
      auto ids = (*t)->encode(text, add_special);
      if (!ids.ok()) continue;
      for (int32_t id : *ids)
        if (id < 0 || id >= (*t)->vocab_size()) __builtin_trap();
      (void)(*t)->decode(*ids);
    }
  return 0;
}
