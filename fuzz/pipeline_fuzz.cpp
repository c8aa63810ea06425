// Pipeline text (pipeline::parse_pipeline): pass names, `{key=value,...}` options of every type,
// prerequisites and invalidation. A pipeline that parses must round-trip through its canonical form
// (pipeline.h promises parse(canonical()) gives the same pipeline): anything else traps.
#include <cstddef>
#include <cstdint>
#include <string_view>

#include "pipeline/pipeline_text.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const std::string_view text(reinterpret_cast<const char*>(data), size);
  auto p = fp4c::pipeline::parse_pipeline(text);
  if (!p.ok()) return 0;
  const std::string canonical = p->canonical();
  auto again = fp4c::pipeline::parse_pipeline(canonical);
  if (!again.ok() || again->canonical() != canonical) __builtin_trap();
  for (const auto& inv : p->passes) {
    if (fp4c::pipeline::find_pass(inv.name) == nullptr) __builtin_trap();
    if (p->find(inv.name) == nullptr) __builtin_trap();
  }
  return 0;
}
