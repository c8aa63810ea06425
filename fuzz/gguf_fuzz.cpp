// gguf::File::open on arbitrary bytes: header, metadata of every value type (arrays, nested arrays),
// tensor infos, alignment and data layout; on success every tensor's bytes are touched and the small
// ones read as float32 (dequantized where they are a block format).
#include <cstddef>
#include <cstdint>

#include "formats/gguf.h"
#include "fuzz_support.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const std::string path = fp4c::fuzz::Scratch::get().write("model.gguf", data, size);
  auto f = fp4c::gguf::File::open(path);
  if (!f.ok()) return 0;
  volatile uint8_t sink = 0;
  for (const auto& t : f->tensors()) {
    if (f->find(t.name) != &t) __builtin_trap();   // the index by name agrees with the list
    const auto bytes = f->bytes(t);
    if (bytes.size() != t.nbytes) __builtin_trap();
    if (bytes.data() + bytes.size() > f->raw().data() + f->raw().size()) __builtin_trap();
    if (!bytes.empty()) sink = sink ^ uint8_t(bytes.front()) ^ uint8_t(bytes.back());
    if (t.numel <= (1 << 16)) {
      auto v = f->to_f32(t);
      if (v.ok() && int64_t(v->size()) != t.numel) __builtin_trap();
    }
  }
  for (const auto& [key, value] : f->metadata())
    if (f->find_key(key) != &value) __builtin_trap();
  (void)sink;
  return 0;
}
