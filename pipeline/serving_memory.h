// Serving memory of an artifact for the two decision cases of `fp4c compare`: the weights, the KV
// cache one request needs, what is left on a GPU and how many requests fit at once. Computed from the
// model's config and the artifact's size, not measured on a serving engine.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "ir/model.h"

namespace fp4c::pipeline {

struct ServingCase {
  std::string name;            // e.g. "steady-512-output-128"
  int64_t prompt_tokens = 0;
  int64_t output_tokens = 0;
};

// steady-512-output-128 (512 prompt, 128 output tokens) and prefill-2048-output-128.
std::vector<ServingCase> decision_cases();

// Bytes of a BF16 KV cache for one request of `tokens` tokens:
// 2 (K and V) x layers x num_key_value_heads x head_dim x tokens x 2 bytes.
uint64_t kv_cache_bytes_per_request(const ir::ModelConfig& config, int64_t tokens);

struct ServingMemory {
  ServingCase serving_case;
  uint64_t gpu_memory_bytes = 0;
  uint64_t weight_bytes = 0;
  uint64_t kv_bytes_per_request = 0;
  int64_t memory_left_bytes = 0;     // GPU memory - weights; negative when the weights do not fit
  int64_t max_concurrent_requests = 0;  // floor(left / kv per request), 0 when nothing is left
};

inline constexpr const char* kServingMemoryLabel = "computed, not measured";

// GPU memory in GB of 10^9 bytes, as format_bytes prints them.
ServingMemory serving_memory(const ir::ModelConfig& config, uint64_t weight_bytes, double gpu_memory_gb,
                             const ServingCase& c);
std::vector<ServingMemory> serving_memory(const ir::ModelConfig& config, uint64_t weight_bytes,
                                          double gpu_memory_gb);

}  // namespace fp4c::pipeline
