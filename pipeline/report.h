// The report of `fp4c compare`: several recipes run on one model, calibration set and evaluation set,
// side by side. A plain data structure filled by the command (or by hand in tests) and its writers:
// report.md, report.json and two SVG plots drawn by hand (per-Linear output error, recovery).
#pragma once

#include <nlohmann/json.hpp>

#include <array>
#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include "base/expected.h"
#include "pipeline/serving_memory.h"

namespace fp4c::pipeline {

struct ReportLinearError {   // one Linear's output error on the evaluation set (fp4c eval --per-layer)
  std::string module;        // e.g. "model.layers.3.self_attn.q_proj"
  std::string role;          // "q", "k", ..., "down"
  int layer = 0;
  double output_error = 0;   // relative squared error of the Linear's output on the reference's input
};

struct ReportStage {         // one pass of the build, from the manifest's build_cost
  std::string stage;
  double wall_seconds = 0;
  double cpu_seconds = 0;
  uint64_t peak_rss_bytes = 0;
};

struct RecipeReport {
  std::string name;          // the recipe name, e.g. "smoothquant"
  std::string pipeline;      // the canonical pipeline that ran
  std::string scheme;        // "w4a4" or "w4a16"
  std::string artifact;      // its directory
  // Accuracy against the BF16 reference on the evaluation set.
  double perplexity = 0;
  double recovery = 0;       // reference perplexity / perplexity
  double kl_mean = 0, kl_median = 0, kl_p99 = 0;
  double top1_agreement = 0;
  std::array<double, 2> half_recovery{0, 0};   // recovery on each half of the evaluation sequences
  double eval_seconds = 0;
  std::vector<ReportLinearError> layers;
  // Size.
  uint64_t artifact_bytes = 0;
  double effective_bits_per_weight = 0;
  // Build cost.
  std::vector<ReportStage> stages;
  double build_wall_seconds = 0, build_cpu_seconds = 0;
  uint64_t peak_rss_bytes = 0;
  double money = 0;          // build wall hours x price per hour
  bool stats_reused = false; // its first statistics came from an earlier recipe or the cache
  int stats_passes = 0;      // stats passes in its pipeline
  int stats_passes_reused = 0;   // of those, how many took statistics an earlier recipe or the cache held
  // The build cost had it been built alone: the figures above plus, for each reused stats pass, the
  // cost of one computed stats pass (an estimate; unset when no stats pass was computed in the run).
  std::optional<double> alone_wall_seconds, alone_cpu_seconds, alone_money;
  // Serving memory, one entry per decision case.
  std::vector<ServingMemory> serving;
};

struct TokenSetReport {
  std::string path;
  std::string hash;          // XXH3-128 of the file, hex
  int64_t samples = 0;       // sequences used
  int64_t tokens = 0;
  int64_t seq_len = 0;       // 0: whole records
  uint64_t seed = 0;
  std::string packing;
};

struct CompareReport {
  std::string tool_version;
  std::string created_utc;
  std::string command_line;
  std::string model;         // checkpoint directory
  std::string architecture;
  int64_t layers = 0, hidden_size = 0, num_key_value_heads = 0, head_dim = 0;
  uint64_t bf16_bytes = 0;   // all tensors at BF16
  TokenSetReport calibration;
  TokenSetReport evaluation;
  int64_t predictions = 0;   // next-token predictions scored
  std::array<int64_t, 2> half_sequences{0, 0};   // sequences in each evaluation half
  std::string precision;     // runtime precision of statistics and evaluation
  int threads = 0;
  double price_per_hour = 0;
  double gpu_memory_gb = 0;
  double reference_perplexity = 0;
  std::vector<RecipeReport> recipes;   // the first is the baseline of every verdict
};

// Whether recipe B's recovery beats baseline A's by more than the spread between evaluation halves
// (the larger |half1 - half2| of A and B), and what B costs to build over A.
struct Verdict {
  enum class Outcome { CandidateBetter, BaselineBetter, NoDifference };
  std::string baseline, candidate;
  double recovery_delta = 0;   // candidate - baseline
  double spread = 0;
  Outcome outcome = Outcome::NoDifference;
  double extra_wall_seconds = 0, extra_cpu_seconds = 0, extra_money = 0;   // as run
  // When either reused statistics: the extra cost had both been built alone (estimated).
  std::optional<double> alone_extra_wall_seconds, alone_extra_cpu_seconds, alone_extra_money;
  std::string text;            // one sentence
};
Verdict verdict(const RecipeReport& baseline, const RecipeReport& candidate);
std::string_view outcome_name(Verdict::Outcome o);   // "candidate_better", ...

// Output error ratio of a Linear under a recipe over the baseline's: below kHelps it helps, above
// kHurts it hurts.
inline constexpr double kHelps = 0.9, kHurts = 1.1;
struct LayerEffect {
  std::vector<std::string> helps, hurts;   // module names, in the baseline's Linear order
};
LayerEffect layer_effect(const RecipeReport& baseline, const RecipeReport& candidate);

std::string render_markdown(const CompareReport& r);
nlohmann::json to_json(const CompareReport& r);
std::string layer_error_svg(const CompareReport& r);   // per-Linear output error, log scale
std::string recovery_svg(const CompareReport& r);      // recovery per recipe, with each half

inline constexpr const char* kReportMarkdown = "report.md";
inline constexpr const char* kReportJson = "report.json";
inline constexpr const char* kLayerErrorSvg = "layer_error.svg";
inline constexpr const char* kRecoverySvg = "recovery.svg";

// Writes the four files into `dir` (created if missing).
Status write_report(const CompareReport& r, const std::string& dir);

}  // namespace fp4c::pipeline
