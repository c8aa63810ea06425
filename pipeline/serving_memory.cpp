#include "pipeline/serving_memory.h"

#include <cmath>

namespace fp4c::pipeline {

std::vector<ServingCase> decision_cases() {
  return {{"steady-512-output-128", 512, 128}, {"prefill-2048-output-128", 2048, 128}};
}

uint64_t kv_cache_bytes_per_request(const ir::ModelConfig& c, int64_t tokens) {
  const int64_t head_dim = c.head_dim > 0 ? c.head_dim
                           : c.num_attention_heads > 0 ? c.hidden_size / c.num_attention_heads
                                                       : 0;
  const int64_t kv_heads = c.num_key_value_heads > 0 ? c.num_key_value_heads : c.num_attention_heads;
  return uint64_t(2) * uint64_t(c.num_hidden_layers) * uint64_t(kv_heads) * uint64_t(head_dim) *
         uint64_t(tokens) * 2;
}

ServingMemory serving_memory(const ir::ModelConfig& config, uint64_t weight_bytes, double gpu_memory_gb,
                             const ServingCase& c) {
  ServingMemory m;
  m.serving_case = c;
  m.gpu_memory_bytes = gpu_memory_gb > 0 ? uint64_t(std::llround(gpu_memory_gb * 1e9)) : 0;
  m.weight_bytes = weight_bytes;
  m.kv_bytes_per_request = kv_cache_bytes_per_request(config, c.prompt_tokens + c.output_tokens);
  m.memory_left_bytes = int64_t(m.gpu_memory_bytes) - int64_t(weight_bytes);
  m.max_concurrent_requests = m.memory_left_bytes > 0 && m.kv_bytes_per_request > 0
                                  ? m.memory_left_bytes / int64_t(m.kv_bytes_per_request)
                                  : 0;
  return m;
}

std::vector<ServingMemory> serving_memory(const ir::ModelConfig& config, uint64_t weight_bytes,
                                          double gpu_memory_gb) {
  std::vector<ServingMemory> out;
  for (const auto& c : decision_cases()) out.push_back(serving_memory(config, weight_bytes, gpu_memory_gb, c));
  return out;
}

}  // namespace fp4c::pipeline
