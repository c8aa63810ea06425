// The decoder forward behind one interface, whatever runs it: the CPU Forward (runtime/forward.h) or
// the CUDA engine (runtime/cuda/). Evaluation (quant::evaluate), fp4c eval and fp4c-verify take an
// Engine, so the same code and the same test suite drive every device. Hidden states stay on the host
// between calls (Activations); an engine that computes elsewhere copies them in and out per layer.
#pragma once

#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "base/expected.h"
#include "ir/model.h"
#include "runtime/weights.h"

namespace fp4c::runtime {

class Engine {
 public:
  virtual ~Engine() = default;
  virtual const ir::ModelConfig& config() const = 0;
  // "cpu", or e.g. "cuda:0 NVIDIA H100 80GB HBM3 (sm_90)".
  virtual std::string device() const = 0;
  // How W4A4 products are computed: "fake-quantized f32" (CPU), "native" (block-scaled FP4 MMA) or
  // "emulated" (the same numbers without FP4 hardware). Reports label every figure with it.
  virtual std::string fp4_path() const = 0;
  // Embedding lookup of every sequence, reading only the rows used; errors on ids outside the
  // vocabulary (naming sequence and position).
  virtual Expected<Activations> embed(WeightSource& weights, const std::vector<std::vector<int32_t>>& sequences) const = 0;
  // One decoder layer in place; `hook` (may be empty) sees each Linear group's input.
  virtual Status layer(int index, const LayerParams& params, Activations& acts, const LinearHook& hook = {}) const = 0;
  // Final norm and output projection, `chunk_rows` tokens at a time: sink(first_row, logits, rows)
  // with logits [rows, vocab] (host memory, valid during the call).
  virtual Status head(const std::vector<float>& final_norm, const LinearParams& lm_head, const Activations& acts,
                      const std::function<void(int64_t, const float*, int64_t)>& sink, int64_t chunk_rows = 256) const = 0;
  // head() for a caller that is done with lm_head: the engine may free its weights once it holds them
  // in its own form (the CPU forward does: a 150k-vocabulary lm_head is 545 MB of float).
  virtual Status head_consuming(const std::vector<float>& final_norm, LinearParams&& lm_head, const Activations& acts,
                                const std::function<void(int64_t, const float*, int64_t)>& sink,
                                int64_t chunk_rows = 256) const {
    return head(final_norm, lm_head, acts, sink, chunk_rows);
  }
  // While the returned token lives, head() calls given this very `lm_head` object (unchanged meanwhile)
  // may reuse the engine's own form of its weights instead of making it per call (the CPU forward keeps
  // its conversion for the last row count; the same bits as converting per call). The default keeps nothing.
  [[nodiscard]] virtual std::shared_ptr<void> hold_converted_head(const LinearParams& lm_head) const {
    (void)lm_head;
    return nullptr;
  }
  // Frees temporaries kept between calls.
  virtual void release_memory() const = 0;
};

}  // namespace fp4c::runtime
