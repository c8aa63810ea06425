// Hugging Face tokenizer.json (frontend::parse_hf_tokenizer): BPE model, vocab and merges, added
// tokens, normalizers, pre-tokenizers (Split regexes through PCRE2, ByteLevel, Metaspace),
// post-processors and decoders; with the BOS/EOS conventions of tokenizer_config.json and config.json
// (frontend::read_special_token_conventions). A tokenizer that loads encodes a text (with and without
// special tokens) and decodes the ids; every id must be in [0, vocab_size).
//
// Input parts (fuzz_support.h): 0 tokenizer.json; 1 the text to encode (default "Hello world"); 2
// tokenizer_config.json; 3 config.json (absent when the part is).
#include <cstddef>
#include <cstdint>
#include <string>

#include "frontend/tokenizer_bpe.h"
#include "frontend/tokenizer_internal.h"
#include "fuzz_support.h"

namespace {

void check_ids(const fp4c::frontend::Tokenizer& t, const std::vector<int32_t>& ids) {
  for (int32_t id : ids)
    if (id < 0 || id >= t.vocab_size()) __builtin_trap();
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const auto& scratch = fp4c::fuzz::Scratch::get();
  const auto parts = fp4c::fuzz::split_parts(data, size, 4);
  fp4c::frontend::SpecialTokenConventions conventions;
  if (parts.size() > 2) {
    const std::string dir = scratch.subdir("tok");
    scratch.write("tok/tokenizer_config.json", parts[2]);
    if (parts.size() > 3) scratch.write("tok/config.json", parts[3]);
    auto c = fp4c::frontend::read_special_token_conventions(dir);
    if (!c.ok()) return 0;
    conventions = *c;
  }
  auto t = fp4c::frontend::parse_hf_tokenizer(std::string(parts[0]), "tokenizer.json", conventions);
  if (!t.ok()) return 0;
  const std::string text = parts.size() > 1 ? std::string(parts[1]) : std::string("Hello world");
  for (bool add_special : {true, false}) {
    auto ids = (*t)->encode(text, add_special);
    if (!ids.ok()) continue;
    check_ids(**t, *ids);
    (void)(*t)->decode(*ids);
  }
  (void)(*t)->bos_id();
  (void)(*t)->eos_id();
  return 0;
}
