// How Hugging Face splits a state dict into safetensors shards, and its size strings ("5GB").
#pragma once

#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

#include "architecture.h"
#include "base/expected.h"

namespace fp4c::synth {

// "5GB" (10^9), "4GiB" (2^30), "500MB", "1.5GB", "200KB", "123" (bytes); units are case-insensitive.
Expected<uint64_t> parse_size(std::string_view text);

struct Shard {
  std::string file;               // "model.safetensors" or "model-00001-of-00004.safetensors"
  std::vector<size_t> tensors;    // indices into the plan, in the file's order (sorted by name)
  uint64_t nbytes = 0;
};

// huggingface_hub's split_torch_state_dict_into_shards: walk the tensors in state-dict order,
// start a new shard when the next tensor would overflow max_shard_size, give a tensor larger than
// the limit a shard of its own. One shard is named model.safetensors (no index). Inside a file,
// tensors are laid out sorted by name, as the safetensors library does.
std::vector<Shard> plan_shards(const std::vector<PlannedTensor>& tensors, uint64_t max_shard_size);

}  // namespace fp4c::synth
