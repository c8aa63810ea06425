// model.safetensors.index.json (safetensors::read_index) and a sharded checkpoint around it
// (safetensors::Checkpoint::open): the index's weight_map and metadata, shard names, tensors missing
// from or duplicated across shards.
//
// Input parts (fuzz_support.h): 0 the index JSON; 1 and 2 the shards
// model-00001-of-00002.safetensors and model-00002-of-00002.safetensors (absent when the part is).
#include <cstddef>
#include <cstdint>

#include "formats/safetensors.h"
#include "fuzz_support.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const auto& scratch = fp4c::fuzz::Scratch::get();
  const auto parts = fp4c::fuzz::split_parts(data, size, 3);
  const std::string dir = scratch.subdir("ckpt");
  scratch.write("ckpt/model.safetensors.index.json", parts[0]);
  if (parts.size() > 1) scratch.write("ckpt/model-00001-of-00002.safetensors", parts[1]);
  if (parts.size() > 2) scratch.write("ckpt/model-00002-of-00002.safetensors", parts[2]);
  auto index = fp4c::safetensors::read_index(dir + "/model.safetensors.index.json");
  if (!index.ok()) return 0;
  auto ckpt = fp4c::safetensors::Checkpoint::open(dir);
  if (!ckpt.ok()) return 0;
  for (const auto& ref : ckpt->tensors()) {
    const auto* found = ckpt->find(ref.entry->name);
    if (found == nullptr || found->entry != ref.entry) __builtin_trap();
  }
  return 0;
}
