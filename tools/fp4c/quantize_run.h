// `fp4c quantize` as a function: open a checkpoint, run a pipeline of passes over it, write the
// artifact and its manifest. The command and `fp4c compare` both call it.
#pragma once

#include <map>
#include <memory>
#include <string>
#include <vector>

#include "ir/expected.h"
#include "manifest.pb.h"
#include "passes/stats.h"
#include "tools/fp4c/calibration_input.h"

namespace fp4c::tools {

// Statistics kept in memory between runs of one process (fp4c compare), keyed like the cache files
// (model, rewrites, calibration set and options), so several recipes share them.
struct StatsMemo {
  std::map<std::string, std::shared_ptr<const passes::ActivationStats>> by_key;
};

struct QuantizeRequest {
  std::string model;            // BF16 checkpoint directory
  std::string out;              // artifact directory to create
  std::string scheme;           // "w4a16" or "w4a4"; empty: w4a4 with a calibration set, else w4a16
  std::string calib;            // calibration set (empty: none)
  TokenSetOptions tokens;
  std::string stats_cache;      // directory of cached statistics (empty: no cache)
  std::string precision = "f32";
  std::string memory_budget = "4GiB";
  std::string passes;           // pipeline text; empty: the recipe's, or the default for the scheme
  std::string recipe;           // a recipe name (`fp4c recipes`) or a recipe file; not with `passes`
  std::vector<std::string> ignore;
  int threads = 0;
  std::string max_shard_size;
  std::string format = "compressed-tensors";   // artifact layout: "compressed-tensors" or "modelopt"
  bool dry_run = false;
  bool force = false;
  bool quiet = false;           // no summary on stdout, no progress on stderr
  double price_per_hour = 0;
  std::vector<std::string> print_after;   // pass names: print what each annotated after it ran
  std::string command_line;     // for the manifest
  StatsMemo* memo = nullptr;    // optional in-process reuse of statistics
};

struct QuantizeOutcome {
  manifest::Manifest manifest;  // as written (empty for a dry run)
  std::string pipeline;         // the canonical pipeline that ran
};

Expected<QuantizeOutcome> quantize(const QuantizeRequest& request);

}  // namespace fp4c::tools
