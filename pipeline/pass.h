// A pass of the pipeline: one class per file in pipeline/passes/, declared once in
// pipeline/passes.def. Its PassDefinition is everything the library knows about it: the spec (name,
// help, typed options with ranges, what must run before it, what it invalidates) from which the
// parser, the canonical printer and `fp4c passes` come; the checks it needs of the scheme and the
// passes before it, made before any weight is read; and how to make the pass from a parsed
// invocation (options typed once, already range-checked). A pass does its work in run(), at its place
// in the pipeline, on the PassContext; describe() says what it did (`--print-after`).
#pragma once

#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include "backends/artifact.h"
#include "backends/artifact_layout.h"
#include "backends/compressed_tensors/writer.h"
#include "frontend/calibration.h"
#include "frontend/checkpoint.h"
#include "base/expected.h"
#include "passes/pack.h"
#include "passes/quantizers.h"
#include "passes/stats.h"
#include "passes/weight_plan.h"
#include "pipeline/pipeline_text.h"
#include "runtime/forward.h"

namespace fp4c::pipeline {

// What a library caller sees of a run besides its result; every member may be empty.
struct Reporter {
  std::function<void(const std::string&)> note;   // warnings and notes, one sentence each
  // A per-layer progress callback for a forward over `tokens` tokens ("calibrating", "auto", ...).
  std::function<std::function<void(int, int)>(const char* what, double tokens)> progress;
  // --print-after: the pass's describe() after its run-th run.
  std::function<void(const std::string& pass, int run, const std::string& text)> after_pass;
};

// The statistics of the model as it stands, and where they came from (the manifest records the first).
struct StatsResult {
  std::shared_ptr<const passes::ActivationStats> stats;
  bool from_cache = false;
  std::string key;
};

// Everything passes share. The manager owns it for one run; passes read and write it, nothing else.
struct PassContext {
  // The model and where its weights are.
  frontend::LoadedCheckpoint& checkpoint;
  ir::Model& model;
  passes::Scheme scheme = passes::Scheme::W4A16;
  std::vector<std::string> ignore;              // --ignore regexes: Linears kept in BF16 by the user
  runtime::ForwardOptions forward;              // how passes that run the model run it

  // Token sets: the calibration sequences the statistics see, and the held-out ones `auto` measures on.
  frontend::TokenSet* calibration = nullptr;
  std::vector<std::vector<int32_t>> heldout;

  // The analysis cache: statistics of the model as it stands, computed by `stats` (from the process's
  // memo, the cache directory or a forward); null once a pass invalidates them.
  std::shared_ptr<const passes::ActivationStats> stats;
  std::function<Expected<StatsResult>(const passes::StatsOptions&)> compute_stats;
  std::optional<StatsResult> first_stats;

  // Decisions the passes hand to pack.
  passes::Quantizer quantizer;                  // the block-scale rule or algorithm of every Linear
  std::vector<std::pair<ir::TensorId, ir::SkipReason>> bf16_keep;   // Linears the sensitivity pass keeps in BF16

  // The artifact pack writes.
  std::string out;
  bool force = false;
  std::string checkpoint_dir;                   // --checkpoint DIR: per-layer progress kept there (empty: none)
  backends::LayoutOptions layout;
  std::optional<backends::StagingDir> staging;
  std::optional<backends::Plan> plan;
  std::optional<backends::ArtifactWriter> writer;
  std::optional<passes::PackResult> packed;

  Reporter* report = nullptr;

  std::function<void(int, int)> progress(const char* what, double tokens) const {
    return report && report->progress ? report->progress(what, tokens) : std::function<void(int, int)>();
  }
  void note(const std::string& text) const {
    if (report && report->note) report->note(text);
  }
  // Bytes the current pass read and wrote, for its build-cost record.
  uint64_t bytes_read = 0, bytes_written = 0;
};

class Pass {
 public:
  virtual ~Pass() = default;
  virtual Status run(PassContext& ctx) = 0;
  virtual std::string describe(const PassContext& ctx) const = 0;
};

// What the passes before a pass leave, for the checks made before any weight is read.
struct CheckState {
  passes::Scheme scheme = passes::Scheme::W4A16;
  bool have_calibration = false;
  bool stats_valid = false;                     // `stats` ran and nothing invalidated it since
  bool second_moments = false;                  // ... with second moments
  std::optional<std::string> quantizer_chosen_by;   // "gptq" or "auto": a later blockscale rule would be ignored
};

struct PassDefinition {
  PassSpec spec;
  // The checks beyond spec.prerequisites; may update `state` for the passes after it.
  std::function<Status(const PassInvocation&, CheckState&)> check;
  std::function<std::unique_ptr<Pass>(const PassInvocation&)> create;
  // Before any pass runs, once the calibration set is loaded (e.g. `auto` holds sequences out of
  // what the statistics passes see); may be null.
  std::function<Status(const PassInvocation&, PassContext&)> prepare;
};

// Every pass, in the order `fp4c passes` lists them (pipeline/passes.def).
const std::vector<const PassDefinition*>& pass_definitions();
const PassDefinition* find_definition(std::string_view name);

// The checks of a parsed pipeline that need no weights, for a scheme and whether a calibration set
// is given: it ends in pack, each pass's own checks in order. The library runs them before any
// weight is read, for every caller.
Status check_pipeline(const Pipeline& pipeline, passes::Scheme scheme, bool have_calibration);

// Shared by the passes' checks.
Status need_second_moments(const CheckState& s, const std::string& what);
Status refuse_for_mxfp4(const CheckState& s, const std::string& pass);

}  // namespace fp4c::pipeline
