// The decoder forward on the CPU (Llama, Qwen2, Mistral), run layer by layer over a whole set of
// sequences: the hidden states of every sequence for one layer are held together, so each layer's
// weights are read once per pass and every matrix multiply is large. Hooks see each Linear's input.
#pragma once

#include <cstdint>
#include <functional>
#include <memory>
#include <optional>
#include <span>
#include <vector>

#include "ir/expected.h"
#include "ir/model.h"
#include "runtime/spill.h"

namespace fp4c::runtime {

struct ForwardWorkspace;

enum class Precision : uint8_t {
  F32,    // FP32 activations and GEMMs (the correctness reference)
  BF16,   // GEMM inputs rounded to BF16, FP32 accumulation (as GPU frameworks run a BF16 model)
};

// A Linear as the forward uses it: dense float32 weight [out, in] row-major (dequantized when the
// source is quantized), an optional bias [out], and for W4A4 the input global scale with which its
// input is fake-quantized to NVFP4 (blocks of 16 along in, FP8 block scales), as a serving engine does.
struct LinearParams {
  int64_t out = 0, in = 0;
  std::vector<float> weight;
  std::vector<float> bias;                 // empty: no bias
  std::optional<float> input_global_scale; // set: W4A4 activation fake-quantization
};

struct LayerParams {
  std::vector<float> input_norm;           // [hidden]
  std::vector<float> post_norm;            // [hidden]
  LinearParams q, k, v, o, gate, up, down;
};

// Supplies weights one layer at a time (from a BF16 checkpoint, or dequantized from an artifact).
class WeightSource {
 public:
  virtual ~WeightSource() = default;
  virtual Expected<std::vector<float>> embedding() = 0;  // [vocab, hidden]
  // Rows `ids` of the embedding, [ids.size(), hidden]; a source that can read single rows should,
  // so that a large vocabulary is never held whole. The default gathers from embedding().
  virtual Expected<std::vector<float>> embedding_rows(std::span<const int32_t> ids, int64_t hidden);
  virtual Expected<LayerParams> layer(int index) = 0;
  virtual Expected<std::vector<float>> final_norm() = 0; // [hidden]
  virtual Expected<LinearParams> lm_head() = 0;          // [vocab, hidden] (the embedding when tied)
};

// The input of a Linear group, FP32, [rows = tokens of all sequences, cols = in_features]. `role` is
// the role of the group's first member: Q for {q,k,v}, O, Gate for {gate,up}, Down.
struct LinearInput {
  int layer;
  ir::Role role;
  const float* x;
  int64_t rows;
  int64_t cols;
};
using LinearHook = std::function<void(const LinearInput&)>;

// Hidden states of all sequences, [total tokens, hidden], sequences back to back.
struct Activations {
  HiddenStates hidden;            // spilled to a temporary file beyond ForwardOptions::spill's budget
  std::vector<int64_t> offsets;   // sequence s is rows [offsets[s], offsets[s+1])
  int64_t tokens() const { return offsets.empty() ? 0 : offsets.back(); }
};

struct ForwardOptions {
  Precision precision = Precision::F32;
  int threads = 0;  // OpenMP threads for the forward (oneDNN's included); 0: OpenMP's default
  SpillPolicy spill; // hidden states of all sequences beyond spill.memory_budget go to a temporary file
};

class Forward {
 public:
  Forward(const ir::ModelConfig& config, ForwardOptions options);
  // Embedding lookup; errors on ids outside the vocabulary (naming sequence and position).
  Expected<Activations> embed(const std::vector<float>& embedding, const std::vector<std::vector<int32_t>>& sequences) const;
  // The same, reading only the embedding rows the sequences use (weights.embedding_rows).
  Expected<Activations> embed(WeightSource& weights, const std::vector<std::vector<int32_t>>& sequences) const;
  // One decoder layer in place; `hook` (may be empty) sees each Linear group's input.
  Status layer(int index, const LayerParams& params, Activations& acts, const LinearHook& hook = {}) const;
  // Final norm and output projection, `chunk_rows` tokens at a time: sink(first_row, logits, rows)
  // with logits [rows, vocab].
  Status head(const std::vector<float>& final_norm, const LinearParams& lm_head, const Activations& acts,
              const std::function<void(int64_t, const float*, int64_t)>& sink, int64_t chunk_rows = 256) const;
  const ir::ModelConfig& config() const { return config_; }
  // The forward keeps its temporaries (several hundred MB for thousands of tokens) between calls, so
  // that each layer does not pay for fresh pages; this frees them. Copies of a Forward share them, and
  // calls on one Forward or its copies run one at a time (so a hook must not call back into it).
  void release_memory() const;

 private:
  ir::ModelConfig config_;
  ForwardOptions options_;
  std::shared_ptr<ForwardWorkspace> workspace_;
};

}  // namespace fp4c::runtime
