// safetensors::File::open on arbitrary bytes: the u64 header length, the JSON header (dtypes, shapes,
// offsets, __metadata__) and the data section's bounds; on success every tensor's bytes are touched.
#include <cstddef>
#include <cstdint>

#include "formats/safetensors.h"
#include "fuzz_support.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const std::string path = fp4c::fuzz::Scratch::get().write("model.safetensors", data, size);
  auto f = fp4c::safetensors::File::open(path);
  if (!f.ok()) return 0;
  volatile uint8_t sink = 0;
  for (const auto& t : f->tensors()) {
    if (f->find(t.name) != &t) __builtin_trap();   // the index by name agrees with the list
    const auto bytes = f->bytes(t);
    if (bytes.size() != t.nbytes()) __builtin_trap();
    if (!bytes.empty()) sink = sink ^ uint8_t(bytes.front()) ^ uint8_t(bytes.back());
  }
  if (f->raw().size() != f->file_size()) __builtin_trap();
  (void)sink;
  return 0;
}
