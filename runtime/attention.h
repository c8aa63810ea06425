// Rotary position embedding and causal grouped-query attention over a batch of sequences, as matrix
// multiplies: per (sequence, KV head, block of query positions) one QK^T and one PV product (oneDNN
// matmul), with the softmax between them; only key blocks at or before the query block are computed.
#pragma once

#include <cstdint>
#include <span>
#include <vector>

#include "base/expected.h"
#include "ir/model.h"
#include "runtime/forward.h"
#include "runtime/workspace.h"

namespace fp4c::runtime {

// RoPE inverse frequencies theta^(-2i/rotary_dim), i < rotary_dim / 2 (rotary_dim: head_dim unless partial), in double, with linear, Llama 3 and YaRN
// scaling applied as transformers' _compute_*_parameters do.
std::vector<double> rope_inv_freq(const ir::ModelConfig& config);

// longrope: the inverse frequencies with the long factors (rope_inv_freq gives the short ones), and whether a
// sequence of `sequence_length` tokens uses them (longer than original_max_position_embeddings).
std::vector<double> rope_inv_freq_long(const ir::ModelConfig& config);
bool uses_long_rope(const ir::ModelConfig& config, int64_t sequence_length);
// The RoPE types the runtime implements (none, linear, dynamic, llama3, yarn, longrope); an error naming another.
Status check_rope_type(const ir::ModelConfig& config);
// The factor YaRN and LongRoPE multiply cos and sin by (1 for every other RoPE type).
double rope_attention_factor(const ir::ModelConfig& config);

struct AttentionShape {
  int64_t heads = 0;
  int64_t kv_heads = 0;
  int64_t head_dim = 0;
  // RoPE turns the first rotary_dim dimensions of each head (partial_rotary_factor), the rest pass through;
  // 0: head_dim. inv_freq then holds rotary_dim / 2 frequencies.
  int64_t rotary_dim = 0;
  // Sliding-window attention: a query at position p sees the keys at positions p - window < t <= p
  // (transformers' sliding-window mask); 0: every earlier position.
  int64_t window = 0;
  double rope_factor = 1.0;   // cos and sin multiplied by it (rope_attention_factor)
  double scale = 0;           // scores multiplied by it; 0: 1 / sqrt(head_dim)
};

// Whether decoder layer `layer` uses the sliding window.
bool layer_slides(const ir::ModelConfig& config, int layer);
// The RoPE inverse frequencies of `layer`: the model's (rope_inv_freq), or default RoPE with
// sliding_rope_theta on the layers that slide where the model has one (Gemma 3).
std::vector<double> rope_inv_freq(const ir::ModelConfig& config, int layer);
// The attention of decoder layer `layer` as the config defines it: heads, window, RoPE factor, score scale
// (query_pre_attn_scalar^-0.5 where the model has one).
AttentionShape attention_shape(const ir::ModelConfig& config, int layer);

// q [T, heads * head_dim], k and v [T, kv_heads * head_dim] (the projections' outputs, biases added):
// rotates q and k (HF rotate-half layout, positions 0..len-1 within each sequence), then for each
// sequence and head out = softmax(q k^T / sqrt(head_dim) + causal (and window) mask) v, into out [T, heads *
// head_dim]. `offsets` as in Activations. Precision::BF16 rounds q, k, v and the probabilities to
// BF16 before their products (FP32 accumulation, FP32 softmax), as flash attention does.
// `workspace` (may be null) keeps the temporaries between calls.
Status causal_attention(const float* q, const float* k, const float* v, std::span<const int64_t> offsets,
                        const AttentionShape& shape, std::span<const double> inv_freq,
                        Precision precision, float* out, AttentionWorkspace* workspace = nullptr);

}  // namespace fp4c::runtime
