// One dense decoder layer's forward with its intermediates kept, and its backward: from the gradient of the
// layer's output to the gradients of its seven Linears' weights (q, k, v, o, gate, up, down), for block-output
// reconstruction (passes/signround.h). The layer's input and its norms are fixed, so no gradient flows to
// them. W4A4 inputs (LinearParams::input_global_scale) are fake-quantized in the forward as served and passed
// straight through in the backward (the straight-through estimator, as AutoRound does).
//
// Implemented: RMSNorm, q/k/v (biases too), RoPE (any of rope_inv_freq's types but longrope, no partial
// rotary, no attention factor), causal grouped-query softmax attention with the config's score scale, o,
// SiLU-gated MLP, residuals. Refused by name (check): q/k norms, attention/MLP output norms, (1 + w) norms,
// sliding windows, partial rotary, longrope, a RoPE attention factor, another MLP activation, MoE layers.
// The GEMMs go through oneDNN (gemm_f32); the attention runs per (sequence, KV head) in fixed order, so the
// results do not depend on the thread count.
#pragma once

#include <cstdint>
#include <span>
#include <vector>

#include "base/expected.h"
#include "ir/model.h"
#include "runtime/weights.h"

namespace fp4c::runtime {

// Each Linear's weight gradient [out, in], as LayerParams names them.
struct LayerGradients {
  std::vector<float> q, k, v, o, gate, up, down;
};

class LayerTape {
 public:
  LayerTape(const ir::ModelConfig& config, int layer, int threads = 0);
  // Whether this layer of this model is one the tape implements (an error naming what it is not).
  static Status check(const ir::ModelConfig& config, int layer, const LayerParams& params);

  // out[T, hidden] = the layer applied to x[T, hidden] (sequences at `offsets`, as Activations); keeps what
  // the backward needs. `params` must outlive the backward.
  Status forward(const LayerParams& params, const float* x, std::span<const int64_t> offsets, float* out);
  // From d(loss)/d(out) [T, hidden] of the last forward, every Linear's d(loss)/d(weight).
  Status backward(const float* dout, LayerGradients& grads);

 private:
  ir::ModelConfig config_;
  int layer_;
  int threads_;
  const LayerParams* params_ = nullptr;
  std::vector<int64_t> offsets_;
  int64_t T_ = 0;
  // Intermediates: the Linears' (fake-quantized) inputs, the projections, rotated q and k, probabilities.
  std::vector<float> xq_, xk_, xv_;      // inputs of q, k, v
  std::vector<float> qr_, kr_, v_;       // rotated q [T, Dq], rotated k [T, Dkv], v [T, Dkv]
  std::vector<float> probs_;             // per (sequence, head): [len, len] causal probabilities
  std::vector<int64_t> prob_base_;       // where (sequence s, head h) starts in probs_
  std::vector<float> attn_, xo_;         // attention output, o's input
  std::vector<float> h1_, xg_, xu_;      // residual after attention, gate's and up's inputs
  std::vector<float> g_, u_, xd_;        // gate and up outputs, down's input
  std::vector<float> cos_, sin_;         // RoPE tables [max_len, head_dim / 2]
};

}  // namespace fp4c::runtime
