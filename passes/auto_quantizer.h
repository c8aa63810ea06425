// The `auto` pass: per Linear (fused groups decided together), every quantizer fp4c has (max, mse,
// weighted, 4over6, localhessian, gptq, gptq+localhessian) is tried on the model as it stands, and the
// one whose output error on held-out calibration tokens is least is kept; pack then quantizes each Linear
// with its choice. The error of every candidate goes into the manifest.
#pragma once

#include <functional>
#include <string>
#include <vector>

#include "base/expected.h"
#include "ir/model.h"
#include "quant/gptq.h"
#include "passes/quantizers.h"
#include "passes/stats.h"
#include "runtime/comm.h"
#include "runtime/forward.h"

namespace fp4c::passes {

inline constexpr size_t kMaxAlphas = 8;

struct AutoOptions {
  quant::GptqOptions gptq;   // for the gptq candidates
  // Also every candidate after SmoothQuant of the site (norm -> {q,k,v}, norm -> {gate,up}; factors from
  // the statistics as the smoothquant pass computes them), kept where it measures less error.
  bool smoothquant = true;
  float alpha = 0.5f;
  // Several migration strengths (each in [0, 1], distinct, at most kMaxAlphas): every site is measured
  // smoothed at each, and keeps the one (or none) whose layer output errs least. Empty: {alpha}. With more
  // than one, the smoothed candidates are labelled with their alpha ("smoothquant@0.3+gptq").
  std::vector<float> alphas;
  float min_scale = 1e-5f;
  // The quantizers tried, cheapest first (empty: auto_candidates(gptq)).
  std::vector<Quantizer> candidates;
  // Sequential calibration (GPTQ's own procedure, llm-compressor's sequential pipeline), where set: the
  // statistics (and second moments) of layer i are taken from these calibration sequences as they come
  // out of layers 0..i-1 *as quantized* (each Linear at its chosen candidate, smoothing folded where it
  // was, and under W4A4 every quantized Linear's input fake-quantized as served), not from `fit`; the
  // held-out sequences run through the quantized layers too, so every layer is measured on the inputs the
  // served model gives it. Layer i's own inputs come from its unquantized weights (as llm-compressor's
  // hooks see them). The statistics used are appended to `overlay_stats` (pack reproduces the choices
  // from them). Every rank runs the whole sequential forward (the same bits).
  const std::vector<std::vector<int32_t>>* sequential = nullptr;
  // With `sequential` set and this false, the quantized stream serves the GPTAQ candidates alone: the
  // others keep `fit`, the held-out sequences run through the unquantized layers as without `sequential`,
  // and nothing is appended to `overlay_stats` (GPTAQ's choices are all handed to pack as bytes).
  bool sequential_all = true;
};

// Needs model.annotations.decision (a plan; for W4A4 each Linear's input_amax) and `fit`: statistics with
// second moments of the calibration tokens the candidates may use (not `heldout`). Runs the model
// (`weights`: as the pipeline has rewritten it) over `heldout` layer by layer; at each Linear group's input
// X, for every NVFP4 member and candidate: ||fq(X) Q(W)^T - X W^T||^2 (fq: W4A4 activation
// fake-quantization with the Linear's input global scale; none for W4A16), G from the fused group's max |W|
// as pack computes it. A unit (fused group or lone Linear) keeps the candidate with the least summed
// error over its members (ties: the earlier, cheaper one). Writes model.annotations.choice.
// With options.smoothquant, at each norm -> Linears site no earlier pass rewrote, every candidate is also
// measured on the smoothed site: input X * m (m: what the norm rewritten by 1/s does to it,
// smoothed_input_scale), weights W[:, j] * s_j rounded to their dtype, the site's statistics rescaled by m
// (mean squares by m^2, second moments by m m^T), the input global scale from the rescaled max. Whether the
// site is smoothed is the layer's decision: the decoder layer's output on the first held-out sequences (up to
// 8192 tokens) with every unit at its best unsmoothed candidate, against the same with the site's
// consumers at their best smoothed one, each against the BF16 layer's output (recorded in
// QuantizerChoice::layer_error). Where smoothing errs less, the factors are folded into the model
// (fold_norm_smoothing, recorded in annotations.smoothing), the site's rescaled statistics are appended to
// `overlay_stats` (the caller lays them over `fit` with overlay_stats, so that later passes and pack see the
// smoothed input; `fit` itself no longer holds for those sites), and the choice is marked smoothed
// (AutoCandidate::smoothed; labelled "smoothquant+<quantizer>" in the manifest).
// Under MPI (`comm` with several ranks) every rank runs the held-out forward and decides alike; each
// Linear's candidates are spread over the ranks (largest first to the least loaded rank) and their codes,
// scales, errors and dequantized weights shared with every rank, so the choices are one process's.
Status choose_quantizers(ir::Model& model, const runtime::Forward& forward, runtime::WeightSource& weights,
                         const ActivationStats& fit, const std::vector<std::vector<int32_t>>& heldout,
                         const AutoOptions& options, const std::function<void(int layer, int layers)>& progress = {},
                         std::vector<SiteStats>* overlay_stats = nullptr,
                         runtime::Comm& comm = runtime::Comm::single());

// A readable table of the choices and every candidate's error (for --print-after auto).
std::string format_choices(const ir::Model& model);

}  // namespace fp4c::passes
