// Recipe files (pipeline::load_recipe_file): name, description, scheme, and the pipeline as one string
// or an array of pass texts. A recipe that loads holds a canonical pipeline that parses again.
#include <cstddef>
#include <cstdint>

#include "fuzz_support.h"
#include "pipeline/pipeline_text.h"
#include "pipeline/recipes.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const std::string path = fp4c::fuzz::Scratch::get().write("recipe.json", data, size);
  auto r = fp4c::pipeline::load_recipe_file(path);
  if (!r.ok()) return 0;
  if (!fp4c::pipeline::parse_pipeline(r->pipeline).ok()) __builtin_trap();
  return 0;
}
