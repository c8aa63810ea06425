// fp4c-manifest.json (backends::read_manifest): protobuf's JSON mapping of formats/manifest.proto.
#include <cstddef>
#include <cstdint>

#include "backends/manifest.h"
#include "fuzz_support.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const std::string path = fp4c::fuzz::Scratch::get().write("fp4c-manifest.json", data, size);
  auto m = fp4c::backends::read_manifest(path);
  (void)m;
  return 0;
}
