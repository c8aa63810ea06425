// `fp4c compare` as a library call: several recipes (optionally each under several schemes) on one
// model, calibration set and evaluation set. Each recipe is quantized (statistics collected once and
// shared through a StatsMemo and the stats cache) and its artifact evaluated against the BF16
// reference with per-Linear output errors; the report (report.md, report.json, SVG plots) and the
// artifacts are built in a hidden sibling of `out` and moved into place only when every recipe has run.
#pragma once

#include <optional>
#include <string>
#include <vector>

#include "base/expected.h"
#include "passes/weight_plan.h"
#include "pipeline/pass.h"
#include "pipeline/report.h"
#include "pipeline/token_sets.h"
#include "runtime/weights.h"

namespace fp4c::pipeline {

struct CompareRequest {
  std::string model, calib, eval, out;
  std::vector<std::string> recipes;        // names or recipe files; the first is the verdicts' baseline
  std::optional<passes::Scheme> scheme;    // one scheme for every recipe (none: each recipe's, else W4A4)
  std::vector<passes::Scheme> schemes;     // every recipe under each, rows "recipe@scheme"; not with `scheme`
  TokenSetOptions calib_tokens;            // seq_len, seed and packing apply to the evaluation set too
  int64_t eval_samples = 0;
  runtime::Precision precision = runtime::Precision::F32;
  uint64_t memory_budget = uint64_t(4) << 30;
  int threads = 0;
  double price_per_hour = 0;
  double gpu_memory_gb = 80;
  std::string stats_cache;                 // empty: OUT/stats-cache
  bool force = false;
  std::string command_line;
  Reporter report;                         // "[i/n] recipe: quantizing" and the runs' notes
};

struct CompareOutcome {
  CompareReport report;
  std::string out;                         // where the report and artifacts now are
};

Expected<CompareOutcome> compare(const CompareRequest& request);

}  // namespace fp4c::pipeline
