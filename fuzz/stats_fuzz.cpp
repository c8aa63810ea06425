// The statistics cache (passes::load_stats): a zlib-compressed protobuf (formats/stats.proto) with
// its claimed sizes, keys and per-site channel vectors.
#include <cstddef>
#include <cstdint>

#include "fuzz_support.h"
#include "passes/stats.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const std::string path = fp4c::fuzz::Scratch::get().write("stats.fp4cstats", data, size);
  auto s = fp4c::passes::load_stats(path);
  if (!s.ok()) return 0;
  volatile float sink = 0;
  for (const auto& site : s->sites) {
    if (s->find(site.layer, site.role) == nullptr) __builtin_trap();
    if (site.cols() > 0) sink = sink + site.tensor_absmax();
  }
  (void)sink;
  return 0;
}
