// `fp4c quantize` as a library call: open a checkpoint, run a pipeline of passes over it (the pass
// manager: pipeline/pass.h), write the artifact and its manifest. Typed options (parsed at the
// command-line edge); nothing printed: notes, progress and --print-after go to the request's Reporter,
// and what a command prints is in the outcome.
#pragma once

#include <map>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "base/expected.h"
#include "manifest.pb.h"
#include "passes/stats.h"
#include "passes/weight_plan.h"
#include "pipeline/pass.h"
#include "pipeline/token_sets.h"
#include "runtime/weights.h"

namespace fp4c::pipeline {

// Statistics kept in memory between runs of one process (fp4c compare), keyed like the cache files
// (model, rewrites, calibration set and options), so several recipes share them.
struct StatsMemo {
  std::map<std::string, std::shared_ptr<const passes::ActivationStats>> by_key;
};

enum class ArtifactFormat : uint8_t { CompressedTensors, ModelOpt };
std::string_view format_name(ArtifactFormat f);                     // "compressed-tensors", "modelopt"
std::optional<ArtifactFormat> parse_format(std::string_view name);

struct QuantizeRequest {
  std::string model;            // BF16 checkpoint directory
  std::string out;              // artifact directory to create
  std::optional<passes::Scheme> scheme;   // none: the recipe's, else W4A4 with a calibration set, else W4A16
  std::string calib;            // calibration set (empty: none)
  TokenSetOptions tokens;
  std::string stats_cache;      // directory of cached statistics (empty: no cache)
  std::string checkpoint;       // per-layer progress to resume from (empty: none); see pipeline/distributed.h
  runtime::Precision precision = runtime::Precision::F32;
  uint64_t memory_budget = uint64_t(4) << 30;   // hidden states in memory before they spill to a file
  std::string passes;           // pipeline text; empty: the recipe's, or the default for the scheme
  std::string recipe;           // a recipe name (`fp4c recipes`) or a recipe file; not with `passes`
  std::vector<std::string> ignore;
  int threads = 0;              // 0: leave OpenMP's setting
  std::optional<uint64_t> max_shard_size;
  ArtifactFormat format = ArtifactFormat::CompressedTensors;
  bool dry_run = false;
  bool force = false;
  double price_per_hour = 0;
  std::vector<std::string> print_after;   // pass names: report what each did after it ran
  std::string command_line;     // for the manifest
  StatsMemo* memo = nullptr;    // optional in-process reuse of statistics
  Reporter report;
};

struct QuantizeOutcome {
  manifest::Manifest manifest;  // as written (empty for a dry run)
  std::string pipeline;         // the canonical pipeline that ran
  passes::Scheme scheme = passes::Scheme::W4A16;
  std::string plan;             // dry run: the per-tensor plan and the projected size, as a table
  bool out_exists = false;      // dry run: --out exists (a real run needs --force)
  // What a summary line needs.
  int threads = 0;
  size_t quantized = 0, tensors = 0;
  std::vector<double> sqnr_db;  // of every quantized Linear, ascending
  double wall_seconds = 0, pack_seconds = 0;
  uint64_t source_bytes = 0;
};

Expected<QuantizeOutcome> quantize(const QuantizeRequest& request);

}  // namespace fp4c::pipeline
