// The decoder forward on the CPU (Llama, Qwen2, Mistral), run layer by layer over a whole set of
// sequences: the hidden states of every sequence for one layer are held together, so each layer's
// weights are read once per pass and every matrix multiply is large. Hooks see each Linear's input.
#pragma once

#include <cstdint>
#include <functional>
#include <memory>
#include <optional>
#include <span>
#include <string>
#include <vector>

#include "base/expected.h"
#include "ir/model.h"
#include "runtime/engine.h"
#include "runtime/spill.h"

namespace fp4c::runtime {

struct ForwardWorkspace;
struct HeldLinears;

class Forward final : public Engine {
 public:
  Forward(const ir::ModelConfig& config, ForwardOptions options);
  // Embedding lookup; errors on ids outside the vocabulary (naming sequence and position).
  Expected<Activations> embed(const std::vector<float>& embedding, const std::vector<std::vector<int32_t>>& sequences) const;
  // The same, reading only the embedding rows the sequences use (weights.embedding_rows).
  Expected<Activations> embed(WeightSource& weights, const std::vector<std::vector<int32_t>>& sequences) const override;
  // One decoder layer in place; `hook` (may be empty) sees each Linear group's input.
  Status layer(int index, const LayerParams& params, Activations& acts, const LinearHook& hook = {}) const override;
  // Final norm and output projection, `chunk_rows` tokens at a time: sink(first_row, logits, rows)
  // with logits [rows, vocab].
  Status head(const std::vector<float>& final_norm, const LinearParams& lm_head, const Activations& acts,
              const std::function<void(int64_t, const float*, int64_t)>& sink, int64_t chunk_rows = 256) const override;
  // The same; lm_head's float weights are freed once converted for the GEMM.
  Status head_consuming(const std::vector<float>& final_norm, LinearParams&& lm_head, const Activations& acts,
                        const std::function<void(int64_t, const float*, int64_t)>& sink,
                        int64_t chunk_rows = 256) const override;
  const ir::ModelConfig& config() const override { return config_; }
  std::string device() const override { return "cpu"; }
  std::string fp4_path() const override { return "fake-quantized f32"; }
  // The forward keeps its temporaries (several hundred MB for thousands of tokens) between calls, so
  // that each layer does not pay for fresh pages; this frees them. Copies of a Forward share them, and
  // calls on one Forward or its copies run one at a time (so a hook must not call back into it).
  void release_memory() const override;
  // While the returned token lives, layer() calls given this very `params` object (unchanged meanwhile)
  // keep each dense Linear's converted weight for the next call with the same row count, instead of
  // converting it per call: the stats pass runs each layer once per calibration block with the same
  // weights. A call with another row count converts afresh (and keeps that one), so every GEMM runs the
  // primitive and weight layout a fresh conversion would give: the same bits. Dropping the token frees
  // the converted weights. Tokens for different objects coexist (eval holds two heads); hold one object
  // once at a time (a second token for the same object replaces the first, and either one dropped frees both).
  [[nodiscard]] std::shared_ptr<void> hold_converted_weights(const LayerParams& params) const;
  // The same for head() calls given this `lm_head` object: its conversion for the last row count is kept
  // (a caller walking the rows in slices converts once for the full slices and once for the last; one
  // conversion of a 151936 x 896 head is 272 MB, so keeping both row counts would hold twice that).
  [[nodiscard]] std::shared_ptr<void> hold_converted_head(const LinearParams& lm_head) const override;

 private:
  ir::ModelConfig config_;
  ForwardOptions options_;
  Status head_impl(const std::vector<float>& final_norm, const LinearParams& lm_head, LinearParams* consumed,
                   const Activations& acts, const std::function<void(int64_t, const float*, int64_t)>& sink,
                   int64_t chunk_rows) const;
  std::shared_ptr<void> hold(const void* object, size_t row_counts) const;
  std::shared_ptr<ForwardWorkspace> workspace_;
  std::shared_ptr<HeldLinears> held_;
};

}  // namespace fp4c::runtime
