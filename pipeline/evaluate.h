// `fp4c eval` as a function: open a checkpoint and, optionally, an artifact made from it, load the
// evaluation tokens, run quant::evaluate (per Linear too when asked) and record the figures in the
// artifact's manifest. The command and `fp4c compare` both call it.
#pragma once

#include <nlohmann/json.hpp>

#include <array>
#include <functional>
#include <cstdint>
#include <string>
#include <vector>

#include "formats/hash.h"
#include "base/expected.h"
#include "ir/model.h"
#include "manifest.pb.h"
#include "quant/eval_metrics.h"
#include "pipeline/token_sets.h"
#include "runtime/weights.h"

namespace fp4c::pipeline {

struct EvalRequest {
  std::string model;            // the reference BF16 checkpoint
  std::string artifact;         // an fp4c artifact made from it (empty: reference perplexity only)
  std::string data;             // evaluation set
  TokenSetOptions tokens;
  std::string device = "cpu";   // "cpu", "cuda" or "cuda:N" (runtime::make_engine)
  runtime::Precision precision = runtime::Precision::F32;
  uint64_t memory_budget = uint64_t(4) << 30;
  int threads = 0;              // 0: leave OpenMP's setting
  bool per_layer = false;       // output error of every quantized Linear
  bool record_in_manifest = true;   // append an Accuracy entry to the artifact's manifest
  std::function<void(int, int)> progress;   // told after each layer (may be empty)
};

struct LinearOutputError {
  std::string module;           // e.g. "model.layers.3.self_attn.q_proj"
  ir::Role role = ir::Role::Other;
  int layer = 0;
  double output_error = 0;
};

// Perplexity, recovery and their inputs over a subset of the evaluation sequences.
struct SubsetFigures {
  int64_t sequences = 0, predictions = 0;
  double reference_nll = 0, nll = 0;
  double reference_perplexity = 0, perplexity = 0, recovery = 0;
};

struct EvalOutcome {
  quant::EvalResult result;
  std::vector<LinearOutputError> layers;   // with module names, when per_layer
  ir::ModelConfig config;
  hash::Digest source_hash;     // of the evaluation set's file
  int64_t sequences = 0;
  int64_t tokens = 0;
  double seconds = 0;           // the evaluation itself
  std::string device;           // the engine's: "cpu", or e.g. "cuda:0 NVIDIA H100 ... (sm_90)"
  std::string fp4_path;         // how the engine computed W4A4 products (runtime::Engine::fp4_path)
  // The figures as the manifest records them (with a candidate): Accuracy.device is e.g. "cpu-f32", or
  // "cuda:0 NVIDIA H100 ... (sm_90)-f32 (FP4 emulated)".
  manifest::Accuracy accuracy;
  std::string table;            // what `fp4c eval` prints
  nlohmann::json json;          // what `fp4c eval --json` prints
};

Expected<EvalOutcome> run_evaluation(const EvalRequest& request);

// Figures of sequences [begin, end) of an evaluation with a candidate (perplexities and recovery NaN
// when the subset has no prediction); the two halves of the set
// are halves(result)[0] (the first floor(n/2) sequences) and [1] (the rest).
SubsetFigures subset_figures(const quant::EvalResult& r, size_t begin, size_t end);
std::array<SubsetFigures, 2> halves(const quant::EvalResult& r);

}  // namespace fp4c::pipeline
