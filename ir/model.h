// The IR: a model's tensors classified once by the frontend (role, layer, module), the fused groups
// that must share scales, the activation sites, and the per-Linear decisions that passes narrow.
#pragma once

#include <cstdint>
#include <map>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "base/dtype.h"
#include "base/expected.h"

namespace fp4c::ir {

enum class Role : uint8_t {
  Embedding, Q, K, V, O, Gate, Up, Down, LmHead, Norm, Router, Other,
  QNorm, KNorm,   // per-head RMSNorm of the queries / keys before RoPE (Qwen3, Gemma 3), weight [head_dim]
  AttnOutNorm,    // RMSNorm of the attention block's output before the residual add (Gemma 3's post_attention_layernorm)
  MlpOutNorm,     // RMSNorm of the MLP's output before the residual add (Gemma 3's post_feedforward_layernorm)
};
std::string_view role_name(Role r);  // "q", "k", "v", "o", "gate", "up", "down", "lm_head", "q_norm", ...

// Linears are the roles that can become NVFP4 (lm_head is a Linear, but never FP4 by default).
bool is_linear(Role r);

enum class ParamKind : uint8_t { Weight, Bias };

struct RopeScaling {        // rope_scaling / rope_parameters beyond plain RoPE
  std::string type;         // "linear", "dynamic", "llama3", "yarn", or empty when the config has none
  double factor = 1.0;
  double low_freq_factor = 1.0;   // llama3
  double high_freq_factor = 4.0;  // llama3
  int64_t original_max_position_embeddings = 0;   // llama3, yarn
  // yarn, resolved as transformers' _compute_yarn_parameters does: the ramp between beta_fast and beta_slow
  // rotations (truncated to whole dimensions unless truncate is false), and the factor cos and sin are
  // multiplied by (attention_factor, or from mscale / mscale_all_dim, or 0.1 ln(factor) + 1).
  double beta_fast = 32.0, beta_slow = 1.0;
  bool truncate = true;
  double attention_factor = 1.0;   // yarn, longrope
  // longrope (Phi-3 long context): inverse frequencies divided by short_factor for a sequence of at most
  // original_max_position_embeddings tokens, by long_factor beyond (transformers chooses by the length
  // of the sequence it runs; fp4c per sequence), head_dim / 2 entries each.
  std::vector<double> short_factor, long_factor;
};

// Typed metadata from config.json.
struct ModelConfig {
  std::string architecture;   // e.g. "Qwen2ForCausalLM"
  std::string model_type;     // e.g. "qwen2"
  int64_t hidden_size = 0;
  int64_t intermediate_size = 0;
  int64_t num_hidden_layers = 0;
  int64_t num_attention_heads = 0;
  int64_t num_key_value_heads = 0;
  int64_t head_dim = 0;       // hidden_size / num_attention_heads unless the config says otherwise
  // partial_rotary_factor (Phi-4-mini's 0.75): RoPE turns the first rotary_dim = int(head_dim * factor) dimensions
  // of each head, its frequencies computed over rotary_dim; the rest pass through. 0: head_dim (the whole head).
  double partial_rotary_factor = 1.0;
  int64_t rotary_dim = 0;
  int64_t vocab_size = 0;
  int64_t max_position_embeddings = 0;
  int64_t original_max_position_embeddings = 0;   // top-level key (Phi-3), 0 when absent
  double rms_norm_eps = 1e-6;
  double rope_theta = 10000.0;
  RopeScaling rope_scaling;
  std::string rope_source;    // where rope_theta came from: "rope_theta", "rope_parameters" or "default"
  // Sliding-window attention: the window and, per layer, whether the layer uses it (Mistral's
  // sliding_window, Qwen2's use_sliding_window with max_window_layers, or layer_types), applied in the
  // forward and the decoder as transformers masks it (a key at t is seen from p when p - t < window).
  std::optional<int64_t> sliding_window;
  std::vector<bool> sliding_layers;
  bool tie_word_embeddings = false;
  std::string hidden_act = "silu";   // the MLP's activation: "silu" or "gelu_pytorch_tanh" (GeGLU, Gemma)
  // Gemma: every RMSNorm multiplies by (1 + w) in float32 (the checkpoint holds w); the embedding rows are
  // multiplied by float32(sqrt(hidden_size)); attention scores by query_pre_attn_scalar^-0.5; the layers that
  // slide use default RoPE with their own base (rope_local_base_freq / rope_parameters.sliding_attention).
  bool norm_plus_one = false;
  float embedding_scale = 0;          // 0: none
  double query_pre_attn_scalar = 0;   // 0: head_dim
  std::optional<double> sliding_rope_theta;
  // Gemma 3's final_logit_softcapping: the output logits become tanh(x / c) * c. 0: none.
  double final_logit_softcapping = 0;
  bool attention_bias = false;   // q/k/v (and o, Llama and Qwen3) biases; Qwen2 always has q/k/v ones
  bool mlp_bias = false;         // gate/up/down biases (Llama's mlp_bias)
  // Mixture of experts (Mixtral, Qwen3-MoE): 0 experts is a dense model. A sparse layer's MLP is a router
  // (Linear [num_experts, hidden], kept BF16) and num_experts SwiGLU experts of moe_intermediate_size; each
  // token goes to the num_experts_per_tok experts of the highest softmax(router logits) (float32), weighted by
  // those probabilities, renormalized to sum 1 when norm_topk_prob (Mixtral always). moe_layers[l]: layer l is
  // sparse (Qwen3-MoE: not in mlp_only_layers and (l + 1) % decoder_sparse_step == 0); the others are dense
  // MLPs of intermediate_size.
  int64_t num_experts = 0;
  int64_t num_experts_per_tok = 0;
  int64_t moe_intermediate_size = 0;
  bool norm_topk_prob = false;
  std::vector<bool> moe_layers;
  bool is_moe() const { return num_experts > 0; }
  bool moe_layer(int64_t l) const { return l >= 0 && size_t(l) < moe_layers.size() && moe_layers[size_t(l)]; }
  std::optional<int64_t> bos_token_id;
  std::vector<int64_t> eos_token_ids;
  std::string torch_dtype;
  // The RoPE dimensions of each head (rotary_dim, or head_dim when unset).
  int64_t rope_dim() const { return rotary_dim > 0 ? rotary_dim : head_dim; }
};

using TensorId = uint32_t;

// MoE: below this many routed calibration tokens an expert's own statistics are not used for its quantizers
// (passes::weight_input_stats; docs/MOE.md).
constexpr int64_t kMinExpertTokens = 32;

struct TensorInfo {
  std::string name;            // full checkpoint name, e.g. "model.layers.0.self_attn.q_proj.weight"
  std::string module;          // owning module, e.g. "model.layers.0.self_attn.q_proj"
  DType dtype;
  std::vector<int64_t> shape;
  Role role;
  ParamKind kind = ParamKind::Weight;
  std::optional<int> layer;    // decoder layer, when it has one
  // A row slice of a tensor the checkpoint stores fused (Phi-3's qkv_proj = q|k|v, gate_up_proj = gate|up): the
  // frontend names the slice as the unfused model would (q_proj.weight, ...), so every pass sees it as a Linear
  // of its own; the artifact re-fuses the slices of one fused tensor into one (one global scale), and its
  // reader splits them again.
  struct StoredSlice {
    std::string tensor;        // the checkpoint's tensor, e.g. "model.layers.0.self_attn.qkv_proj.weight"
    std::string module;        // its module, e.g. "model.layers.0.self_attn.qkv_proj"
    int64_t row_begin = 0;     // the slice is rows [row_begin, row_begin + shape[0]) of it
    int64_t rows_total = 0;    // the fused tensor's rows
  };
  std::optional<StoredSlice> stored_in;
  std::optional<int> expert;   // MoE: the expert a gate/up/down Linear belongs to
  // The dtype the artifact stores this tensor in when it is kept unquantized, where that is not `dtype`: a
  // GGUF with block formats is read as F32 (the reference) but written as a bfloat16 model (its config says
  // so), each F32 value rounded to the nearest BF16, ties to even.
  std::optional<DType> kept_as;
  DType kept_dtype() const { return kept_as.value_or(dtype); }
};

// Linears that a serving engine runs as one GEMM: they share the weight and input global scales.
struct FusedGroup {
  std::vector<TensorId> members;   // weight tensors, e.g. q, k, v of one layer
};

// A producer (a norm) feeding a group of Linears; SmoothQuant balances across these.
struct ActivationSite {
  TensorId producer;               // the norm's weight
  std::vector<TensorId> consumers; // Linear weights
};

enum class Format : uint8_t { BF16, NVFP4, MXFP4 };
std::string_view format_name(Format f);
inline bool is_fp4(Format f) { return f != Format::BF16; }   // NVFP4 or MXFP4: packed by the pack pass

enum class SkipKind : uint8_t {
  NotLinear,          // embeddings, norms, biases: never quantized
  LmHead,             // the output projection stays BF16 by default
  Embedding,
  Router,
  InFeaturesNotMultipleOf16,
  InFeaturesNotMultipleOf32,  // MXFP4 blocks are 32 wide
  UserIgnore,         // matched an --ignore pattern
  TiedEmbedding,      // lm_head tied to the embedding
  FusedWithSkipped,   // another member of its fused group stays BF16, so it must too
  NoCalibrationData,  // W4A4: its input saw no token, or only zeros: no input scale can be chosen
  Sensitivity,        // kept in BF16 by the sensitivity pass's budget (detail: its error and rank)
};
std::string_view skip_kind_name(SkipKind k);

struct SkipReason {
  SkipKind kind;
  std::string detail;  // e.g. "in_features 172 % 16 != 0", "matched --ignore 'mlp'"
};

struct Decision {
  Format format = Format::NVFP4;
  std::optional<SkipReason> skip;
  // W4A4: max |x| of this Linear's input over all calibration tokens (shared by a fused group, which
  // has one input); the input global scale is 448 * 6 / input_amax. Unset for W4A16.
  std::optional<float> input_amax;
};

// Weight error of a quantized tensor against its source.
struct WeightError {
  double relative_mse = 0;
  double sqnr_db = 0;        // +inf when exact
  double max_abs_error = 0;
};

// What the pack pass did to one NVFP4 Linear.
struct PackedWeight {
  float weight_amax = 0;            // this tensor's max |W|
  float group_amax = 0;             // the max over its fused group (what G is computed from)
  float weight_global_scale = 1;    // G, shared within the fused group
  std::optional<float> input_global_scale;  // W4A4 only
  WeightError error;
};

// How concentrated a set of per-channel magnitudes is (the outliers pass). For a weight the channels
// are its input columns (max |W[:, j]|); for an activation, its input channels (absmax over tokens).
struct ChannelOutliers {
  int64_t channels = 0;
  float max = 0, median = 0;
  double max_over_median = 0;        // +inf when the median is 0 and the max is not
  double kurtosis = 0;               // excess kurtosis of the per-channel magnitudes
  int64_t above_k = 0;               // channels whose magnitude exceeds k x the median
  std::vector<std::pair<int64_t, float>> top;   // the largest channels, (index, magnitude), descending
};

struct OutlierStats {
  double k = 0;                                 // the threshold multiple used for above_k
  ChannelOutliers weight;
  std::optional<ChannelOutliers> activation;    // when the pipeline had statistics of its input
};

// Output error of a Linear under W4A4 fake-quantization on calibration activations (the sensitivity
// pass): ||Q(X) Q(W)^T - X W^T||^2 / ||X W^T||^2 over the calibration tokens.
struct Sensitivity {
  double output_error = 0;
  std::optional<double> kl;          // mean KL of the model with only this Linear('s group) quantized
  int rank = 0;                      // 1 = the most sensitive group
};

// A function-preserving rewrite applied to one activation site (SmoothQuant): the producer's weight
// divided by s, the balanced Linears' input columns multiplied by s.
// Which site a smoothing rewrote.
enum class SmoothingMapping : uint8_t {
  Attention,   // input_layernorm -> q, k, v
  Mlp,         // post_attention_layernorm -> gate, up
  UpDown,      // up -> down
  VO,          // v -> o
};
std::string_view mapping_name(SmoothingMapping m);   // "attn", "mlp", "up->down", "v->o" (manifest, inspect)

struct Smoothing {
  int layer = 0;
  SmoothingMapping mapping = SmoothingMapping::Attention;
  TensorId smooth = 0;               // the norm weight
  std::vector<TensorId> balanced;    // the Linear weights
  float alpha = 0.5f;
  float factor_min = 0, factor_median = 0, factor_max = 0;
};

// The auto pass's choice for one Linear: every candidate quantizer's relative output error on held-out
// calibration tokens, and the one kept (the least error over its fused group).
// One of `auto`'s candidates: a quantizer (by its name, e.g. "gptq+localhessian"), applied to the
// weight as it is, or after SmoothQuant of the Linear's norm site.
struct AutoCandidate {
  std::string quantizer;
  bool smoothed = false;
  // Where auto measured several SmoothQuant strengths: this smoothed candidate's alpha as text ("0.3");
  // empty where it measured one (the candidate is then labelled without it, as before).
  std::string alpha;
  // "gptq+localhessian", "smoothquant+gptq+localhessian", or with several alphas
  // "smoothquant@0.3+gptq+localhessian": how the manifest and inspect name it.
  std::string label() const {
    return smoothed ? "smoothquant" + (alpha.empty() ? std::string() : "@" + alpha) + "+" + quantizer : quantizer;
  }
  bool operator==(const AutoCandidate&) const = default;
};

struct QuantizerChoice {
  AutoCandidate chosen;
  std::vector<std::pair<AutoCandidate, double>> candidates;   // (candidate, relative output error of this Linear)
  // Where the Linear's norm site was also measured smoothed: the decoder layer's output error (summed squares
  // against the BF16 layer on the held-out tokens) with the site unsmoothed and smoothed (each at its best).
  std::optional<std::pair<double, double>> layer_error;
  // With several alphas: the layer error with the site smoothed at each (alpha, error), in the option's order;
  // layer_error's second is the least of them.
  std::vector<std::pair<float, double>> layer_error_by_alpha;
};

// A Linear's NVFP4 bytes as the auto pass computed them for its chosen quantizer, so that pack does not
// compute them again (GPTQ, local-Hessian): pack takes them only when the weight it reads has the same
// XXH3-128 (of its float32 values), the same global scale, zero-scale convention and quantizer.
struct Prequantized {
  std::string quantizer;
  uint64_t weight_hash_high = 0, weight_hash_low = 0;
  float global_scale = 0;
  uint8_t zero_scale = 0;            // nvfp4::ZeroScale
  std::vector<uint8_t> packed, scales;
  double sum_sq_err = 0, sum_sq_ref = 0, max_abs_err = 0;   // the weight error, as nvfp4::ErrorStats
  int64_t count = 0;
};

// Per-tensor annotations, indexed by TensorId; each slot is written by one pass.
struct Annotations {
  std::vector<Decision> decision;                 // weight plan
  std::vector<std::optional<PackedWeight>> packed;  // pack
  // Channel multipliers applied whenever the tensor is read (pack, the runtime's checkpoint source):
  // empty = unchanged; for a [out, in] weight, column j times scale[j]; for a 1-D tensor, element j
  // times scale[j]; the result rounded to the tensor's dtype, as a framework would store it.
  std::vector<std::vector<float>> channel_scale;  // smoothquant
  std::vector<std::vector<float>> row_scale;      // smoothquant{extra}: for a [out, in] weight, row i times scale[i]
  std::vector<Smoothing> smoothing;               // smoothquant, in site order
  // max |W[:, j]| of a Linear's stored BF16 source as BF16 bits (NaN sorting above Inf), recorded by smoothquant
  // for the weights it read, so pack finds their rewritten amax without reading them again.
  std::vector<std::vector<uint16_t>> source_column_absmax_bits;
  std::vector<std::optional<OutlierStats>> outliers;      // outliers (Linear weights)
  std::vector<std::optional<Sensitivity>> sensitivity;    // sensitivity (Linear weights)
  std::vector<std::optional<QuantizerChoice>> choice;     // auto (Linear weights)
  std::vector<std::optional<Prequantized>> prequantized;  // auto (chosen GPTQ / local-Hessian results), for pack
  // MoE experts' Linears: the calibration tokens routed to the expert in the last statistics (stats).
  std::vector<std::optional<int64_t>> routed_tokens;
};

class Model {
 public:
  ModelConfig config;
  std::vector<TensorInfo> tensors;
  std::vector<FusedGroup> fused_groups;
  std::vector<ActivationSite> sites;
  Annotations annotations;
  // Whether "lm_head.weight" is absent because it is tied to the embedding.
  bool tied_lm_head = false;

  std::optional<TensorId> find(std::string_view name) const;
  TensorId add(TensorInfo info);
  // The fused group a weight belongs to, if any.
  const FusedGroup* group_of(TensorId id) const;
  // Weight tensors of Linears (roles for which is_linear() holds), in tensor order.
  std::vector<TensorId> linear_weights() const;
  // "model.layers.3.qkv"-style label of a fused group, for reports.
  std::string group_label(const FusedGroup& g) const;
  // Whether a pass has rewritten tensor `id` (annotations.channel_scale or row_scale).
  bool transformed(TensorId id) const;

 private:
  std::map<std::string, TensorId, std::less<>> by_name_;
};

}  // namespace fp4c::ir
