// Generation on the CPU: a decoder that holds every layer's weights and a KV cache, prefills a batch of
// prompts and then decodes one token per sequence per step (RoPE at the new position, GQA attention
// over the cache, q/k/v biases where present, RMSNorm, SwiGLU, lm_head tied or not). The serving cases
// of the CPU PerfDevice (runtime/perf.h) run on it.
//
// Each Linear is held the way a serving engine holds it: NVFP4 Linears that carry their packed bytes
// (LinearParams::packed) run the fused-dequant kernel (runtime/nvfp4_matmul.h), their input first
// quantized to NVFP4 when they have an input global scale (W4A4); the others go through oneDNN, in
// BF16 when the decoder runs in BF16 and the weights are BF16 values, else in FP32.
#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "base/expected.h"
#include "ir/model.h"
#include "runtime/perf.h"
#include "runtime/weights.h"

namespace fp4c::runtime {

struct DecoderOptions {
  // F32: dense Linears, attention and the KV cache in FP32 (matches runtime::Forward at F32).
  // BF16: dense Linears whose weights are BF16 values held in BF16 (inputs rounded to BF16, FP32
  // accumulation), the KV cache in BF16, as a serving engine runs a BF16 model.
  Precision precision = Precision::F32;
  int threads = 0;  // OpenMP threads per call; 0: OpenMP's default
};

// How many Linears (lm_head included) the decoder holds each way.
struct DecoderLinearCounts {
  int nvfp4 = 0, bf16 = 0, f32 = 0;
};

class Decoder {
 public:
  // Reads the embedding, every layer, the final norm and lm_head from `weights`, once.
  static Expected<Decoder> load(WeightSource& weights, const ir::ModelConfig& config, const DecoderOptions& options);
  Decoder(Decoder&&) noexcept;
  Decoder& operator=(Decoder&&) noexcept;
  ~Decoder();

  // Starts `batch` empty sequences with room for `capacity` positions each (the KV cache is allocated here).
  Status start(int batch, int64_t capacity);
  // Runs prompts[b] (at least one token each) through the empty sequence b; logits [batch, vocab] of
  // each prompt's last position.
  Expected<std::vector<float>> prefill(const std::vector<std::vector<int32_t>>& prompts);
  // Appends tokens[b] to sequence b; logits [batch, vocab] of the new positions.
  Expected<std::vector<float>> step(const std::vector<int32_t>& tokens);

  const ir::ModelConfig& config() const;
  uint64_t weight_bytes() const;    // the weights as held (packed NVFP4, BF16 or FP32; embedding; norms)
  uint64_t kv_cache_bytes() const;  // the cache as allocated by start()
  DecoderLinearCounts linear_counts() const;

  struct Impl;

 private:
  explicit Decoder(std::unique_ptr<Impl> impl);
  std::unique_ptr<Impl> impl_;
};

// Index of the largest logit of each row of logits [rows, vocab] (the lowest index on ties).
std::vector<int32_t> greedy_tokens(const std::vector<float>& logits, int64_t vocab);

// The serving case `spec` on the CPU (see PerfDevice::serve): BF16 decoder, spec.batch random prompts of
// spec.prompt ids (fresh seed), greedy decoding of spec.output tokens per request, timed after an
// untimed warm-up of the same shapes (one prefill and one step; oneDNN makes its primitives for a row
// count on first use, and a serving engine warms up before taking requests). memory_used is the
// process's resident set while serving (the larger of VmRSS after the prefill and at the end, when the
// weights, the whole KV cache and the prefill's temporaries are held), not the process's lifetime peak,
// which an earlier phase (the ceilings' 512 MiB buffer, a previous case) would dominate.
Expected<ServingFigures> serve_cpu(WeightSource& weights, const ir::ModelConfig& config, const ServingSpec& spec,
                                   int threads);

}  // namespace fp4c::runtime
