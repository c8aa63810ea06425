// The `smoothquant` pass as llm-compressor does it by default (NVFP4.md §7): per input channel
// factors s_j = range_j^alpha / (2 maxW_j)^(1-alpha) (floored at 1e-5) for the mappings
// input_layernorm -> {q,k,v} and post_attention_layernorm -> {gate,up}; the balanced Linears'
// columns are multiplied by s and the norm weight divided by it, so the function is unchanged.
#pragma once

#include <span>
#include <string>
#include <vector>

#include "formats/safetensors.h"
#include "base/expected.h"
#include "passes/stats.h"
#include "runtime/forward.h"

namespace fp4c::passes {

// Factors of one channel mapping: range_j = site.max[j] - site.min[j]; maxW_j = max |W[:, j]| over all
// `balanced` weights (dense [out, in]); s_j = range_j^alpha / (2 maxW_j)^(1-alpha), or range_j where
// maxW_j is 0; then s_j = max(s_j, min_scale). Every balanced weight's `in` must equal site.cols().
std::vector<float> smoothing_factors(const SiteStats& site, const std::vector<const runtime::LinearParams*>& balanced,
                                     float alpha, float min_scale = 1e-5f);

// The same from the column maxima of the balanced weights (max_w[j] = max |W[:, j]| over all of them).
std::vector<float> smoothing_factors(const SiteStats& site, const std::vector<float>& max_w, float alpha,
                                     float min_scale = 1e-5f);

// Folds factors in: column j of each balanced weight times s[j], norm weight j divided by s[j].
void apply_smoothing(std::vector<float>& norm_weight, const std::vector<runtime::LinearParams*>& balanced,
                     const std::vector<float>& s);

// Folds factors s of one norm -> Linears mapping into the model's rewrites (norm weight / s, each balanced
// Linear's columns * s, composed with earlier rewrites) and records it in model.annotations.smoothing.
void fold_norm_smoothing(ir::Model& model, int layer, ir::SmoothingMapping mapping, ir::TensorId norm,
                         const std::vector<ir::TensorId>& balanced, float alpha, const std::vector<float>& s);

// An unrewritten norm weight after folding s in, as pack stores it: norm_weight_j / s_j rounded to the
// norm's dtype.
std::vector<float> rewritten_norm(const ir::Model& model, ir::TensorId norm, const std::vector<float>& norm_weight,
                                  const std::vector<float>& s);
// What that does to the norm's output channel j, which the Linears see: X_j * m_j with
// m_j = rewritten_j / norm_weight_j (1 where the norm weight is 0).
std::vector<float> smoothed_input_scale(const std::vector<float>& norm_weight, const std::vector<float>& rewritten);

// The factors of one layer's two default mappings; an empty vector leaves that mapping unsmoothed.
struct LayerFactors {
  std::vector<float> attn;  // input_layernorm -> {q, k, v}, [hidden]
  std::vector<float> mlp;   // post_attention_layernorm -> {gate, up}, [hidden]
};

// Factors for layers [0, layers) from the statistics of the Q and Gate sites and the weights of
// `weights`. Errors name the layer when a site is missing or its width disagrees with the weights.
Expected<std::vector<LayerFactors>> compute_smoothquant(const ActivationStats& stats, runtime::WeightSource& weights,
                                                        int layers, float alpha, float min_scale = 1e-5f);

struct SmoothQuantOptions {
  float alpha = 0.5f;
  float min_scale = 1e-5f;
  // Also up -> down (up's rows divided, down's columns multiplied; exact through SwiGLU) and, when the
  // model has as many key/value heads as query heads, v -> o (v's rows and bias divided).
  bool extra = false;
};

// The `smoothquant` pass on the IR: for every activation site of `model` (input_layernorm -> q,k,v;
// post_attention_layernorm -> gate,up; with `extra` the two above), the factors from `stats` and the
// weights as the model now stands (earlier rewrites included, read through `refs`), recorded as rewrites
// (model.annotations.channel_scale / row_scale, composed with earlier ones) and in
// model.annotations.smoothing. Nothing is written to disk: pack and the runtime apply the rewrites when
// they read a tensor. Errors name the layer and site (missing statistics, widths that disagree).
Status smooth_model(ir::Model& model, std::span<const safetensors::Checkpoint::Ref> refs,
                    const ActivationStats& stats, const SmoothQuantOptions& options);

// A readable table of model.annotations.smoothing (for --print-after smoothquant).
std::string format_smoothing(const ir::Model& model);

// Smooths the layers of another source (which must outlive this object) on the fly; everything
// else passes through. Layers without factors (index beyond factors.size()) pass through unchanged.
class SmoothedWeights : public runtime::WeightSource {
 public:
  SmoothedWeights(runtime::WeightSource& inner, std::vector<LayerFactors> factors)
      : inner_(inner), factors_(std::move(factors)) {}

  Expected<std::vector<float>> embedding() override { return inner_.embedding(); }
  Expected<std::vector<float>> embedding_rows(std::span<const int32_t> ids, int64_t hidden) override {
    return inner_.embedding_rows(ids, hidden);
  }
  Expected<runtime::LayerParams> layer(int index) override;
  Expected<std::vector<float>> final_norm() override { return inner_.final_norm(); }
  Expected<runtime::LinearParams> lm_head() override { return inner_.lm_head(); }

  const std::vector<LayerFactors>& factors() const { return factors_; }

 private:
  runtime::WeightSource& inner_;
  std::vector<LayerFactors> factors_;
};

}  // namespace fp4c::passes
