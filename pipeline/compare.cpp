#include "pipeline/compare.h"

#include "base/text.h"

#include <algorithm>
#include <cctype>
#include <cmath>
#include <ctime>
#include <filesystem>
#include <optional>

#include "backends/artifact.h"
#include "pipeline/evaluate.h"
#include "pipeline/quantize.h"
#include "pipeline/recipes.h"
#include "pipeline/serving_memory.h"
#include "runtime/comm.h"

namespace fp4c::pipeline {
namespace {
namespace fs = std::filesystem;


// A recipe name made safe as a directory name.
std::string artifact_name(const std::string& recipe) {
  std::string s = recipe;
  for (char& c : s)
    if (!(std::isalnum(static_cast<unsigned char>(c)) || c == '-' || c == '_' || c == '.')) c = '_';
  return s.empty() ? "recipe" : s;
}

bool is_stats_stage(const std::string& stage) { return stage == "stats" || stage.rfind("stats#", 0) == 0; }

RecipeReport recipe_report(const std::string& name, const std::string& artifact, const QuantizeOutcome& q,
                           const EvalOutcome& e, double gpu_memory_gb) {
  RecipeReport rec;
  const auto& m = q.manifest;
  const auto& r = e.result;
  rec.name = name;
  rec.pipeline = q.pipeline.empty() ? m.options().pipeline() : q.pipeline;
  rec.scheme = m.options().scheme();
  rec.artifact = artifact;
  rec.perplexity = r.perplexity.value_or(NAN);
  rec.recovery = r.recovery.value_or(NAN);
  rec.kl_mean = r.kl_mean.value_or(NAN);
  rec.kl_median = r.kl_median.value_or(NAN);
  rec.kl_p99 = r.kl_p99.value_or(NAN);
  rec.top1_agreement = r.top1_agreement.value_or(NAN);
  const auto h = halves(r);
  rec.half_recovery = {h[0].recovery, h[1].recovery};
  rec.eval_seconds = e.seconds;
  for (const auto& l : e.layers)
    rec.layers.push_back({l.module, std::string(ir::role_name(l.role)), l.layer, l.output_error});
  rec.artifact_bytes = m.memory().artifact_bytes();
  rec.effective_bits_per_weight = m.memory().effective_bits_per_weight();
  const auto& bc = m.build_cost();
  for (const auto& s : bc.stages())
    rec.stages.push_back({s.stage(), s.wall_seconds(), s.cpu_seconds(), s.peak_rss_bytes()});
  rec.build_wall_seconds = bc.wall_seconds();
  rec.build_cpu_seconds = bc.cpu_seconds();
  rec.peak_rss_bytes = bc.peak_rss_bytes();
  rec.money = bc.cost();
  rec.stats_reused = m.options().has_calibration() && m.options().calibration().stats_from_cache();
  rec.serving = serving_memory(e.config, rec.artifact_bytes, gpu_memory_gb);
  for (const auto& s : rec.stages) rec.stats_passes += is_stats_stage(s.stage);
  return rec;
}

// Built-alone costs: each reused stats pass priced at the slowest stats pass the run computed (each
// recipe's `computed` slowest stats stages are the ones it measured; a reused pass costs ~nothing).
void add_alone_costs(CompareReport& report, const std::vector<int>& computed, double price_per_hour) {
  double wall = -1, cpu = 0;
  for (size_t i = 0; i < report.recipes.size(); ++i) {
    std::vector<const ReportStage*> stats;
    for (const auto& s : report.recipes[i].stages)
      if (is_stats_stage(s.stage)) stats.push_back(&s);
    std::sort(stats.begin(), stats.end(),
              [](const ReportStage* a, const ReportStage* b) { return a->wall_seconds > b->wall_seconds; });
    for (size_t k = 0; k < stats.size() && int(k) < computed[i]; ++k)
      if (stats[k]->wall_seconds > wall) wall = stats[k]->wall_seconds, cpu = stats[k]->cpu_seconds;
  }
  if (wall < 0) return;   // no stats pass computed in this run: no estimate
  for (auto& rec : report.recipes) {
    rec.alone_wall_seconds = rec.build_wall_seconds + rec.stats_passes_reused * wall;
    rec.alone_cpu_seconds = rec.build_cpu_seconds + rec.stats_passes_reused * cpu;
    rec.alone_money = *rec.alone_wall_seconds / 3600 * price_per_hour;
  }
}

}  // namespace

Expected<CompareOutcome> compare(const CompareRequest& o) {
  auto fail = [](const std::string& message) { return make_error(message); };
  // Everything that can be checked without reading a weight, first.
  if (o.recipes.empty()) return fail("--recipes: give at least one recipe, e.g. plain,smoothquant");
  if (!(o.gpu_memory_gb > 0)) return fail("--gpu-memory-gb must be positive");
  if (o.price_per_hour < 0) return fail("--price-per-hour must not be negative");
  if (!o.schemes.empty() && o.scheme) return fail("give --scheme or --schemes, not both");
  // Unknown recipes and bad recipe files fail here, before any statistics are collected. A recipe is
  // reported under its name (a file's "name", else its stem), which also names its artifact; with
  // --schemes, each recipe runs under each scheme, reported as "name@scheme".
  struct Run {
    std::string recipe;
    std::optional<passes::Scheme> scheme;
    std::string name, dir;
  };
  std::vector<Run> runs;
  for (const auto& r : o.recipes) {
    if (r.empty()) return fail("--recipes: empty recipe name in the list");
    auto recipe = pipeline::resolve_recipe(r);
    if (!recipe) return fail("--recipes: " + recipe.error().message);
    const std::string name = artifact_name(recipe->name.empty() ? r : recipe->name);
    std::vector<std::optional<passes::Scheme>> schemes{o.scheme};
    if (!o.schemes.empty()) schemes.assign(o.schemes.begin(), o.schemes.end());
    for (const auto& s : schemes) {
      Run run{r, s, o.schemes.empty() ? name : name + "@" + std::string(passes::scheme_name(*s)), ""};
      run.dir = artifact_name(run.name);
      for (const auto& other : runs)
        if (other.name == run.name) return fail("--recipes: '" + run.name + "' appears twice");
      runs.push_back(std::move(run));
    }
  }

  auto note = [&](const std::string& text) {
    if (o.report.note) o.report.note(text);
  };
  // Under MPI (runtime/comm.h) every rank takes its share of each recipe's quantize; rank 0 alone
  // evaluates and writes the report and the artifacts.
  runtime::Comm& comm = runtime::Comm::world();
  std::optional<backends::StagingDir> staging;
  fs::path stage_dir = o.out, final_dir = o.out;   // (other ranks write nothing there)
  if (comm.rank() == 0) {
    auto created = backends::StagingDir::create(o.out, o.force);
    if (!created) return fail(created.error().message);
    staging.emplace(std::move(*created));
    for (const std::string& d : staging->removed()) note("removed " + d + ", the staging directory of a run that died");
    stage_dir = staging->path();
    final_dir = staging->destination();
    std::error_code ec;
    fs::create_directories(stage_dir / "artifacts", ec);
    if (ec) return fail((stage_dir / "artifacts").string() + ": " + ec.message());
  }

  StatsMemo memo;
  QuantizeRequest base;
  base.model = o.model;
  base.scheme = o.scheme;
  base.calib = o.calib;
  base.tokens = o.calib_tokens;
  base.stats_cache = o.stats_cache.empty() ? (stage_dir / "stats-cache").string() : o.stats_cache;
  base.precision = o.precision;
  base.memory_budget = o.memory_budget;
  base.threads = o.threads;
  base.report.note = o.report.note;
  base.price_per_hour = o.price_per_hour;
  base.command_line = o.command_line;
  base.memo = &memo;

  CompareReport report;
  report.tool_version = FP4C_VERSION;
  report.created_utc = utc_timestamp();
  report.command_line = o.command_line;
  report.model = o.model;
  report.precision = std::string(runtime::precision_name(o.precision));
  report.price_per_hour = o.price_per_hour;
  report.gpu_memory_gb = o.gpu_memory_gb;

  TokenSetOptions eval_tokens = o.calib_tokens;
  eval_tokens.samples = o.eval_samples;
  std::vector<int> computed_stats(runs.size(), 0);
  for (size_t i = 0; i < runs.size(); ++i) {
    const auto& name = runs[i].name;
    const std::string& dir_name = runs[i].dir;
    QuantizeRequest q = base;
    q.recipe = runs[i].recipe;
    q.scheme = runs[i].scheme;
    q.out = (stage_dir / "artifacts" / dir_name).string();
    const std::string step = "[" + std::to_string(i + 1) + "/" + std::to_string(runs.size()) + "] " + name;
    note(step + ": quantizing");
    const size_t memo_before = memo.by_key.size();
    auto quantized = quantize(q);
    if (!quantized) return fail("recipe '" + name + "': " + quantized.error().message);
    if (comm.rank() != 0) continue;

    note(step + ": evaluating");
    EvalRequest e;
    e.model = o.model;
    e.artifact = q.out;
    e.data = o.eval;
    e.tokens = eval_tokens;
    e.precision = o.precision;
    e.memory_budget = o.memory_budget;
    e.threads = o.threads;
    e.per_layer = true;
    auto evaluated = run_evaluation(e);
    if (!evaluated) return fail("recipe '" + name + "': evaluation: " + evaluated.error().message);

    const auto& m = quantized->manifest;
    if (i == 0) {
      const auto& c = evaluated->config;
      report.architecture = m.architecture().empty() ? c.architecture : m.architecture();
      report.layers = c.num_hidden_layers;
      report.hidden_size = c.hidden_size;
      report.num_key_value_heads = c.num_key_value_heads;
      report.head_dim = c.head_dim;
      report.bf16_bytes = m.memory().bf16_bytes();
      report.threads = m.build_cost().threads();
      if (m.options().has_calibration()) {
        const auto& cal = m.options().calibration();
        report.calibration = {cal.path(), cal.hash().hex(), cal.samples(), cal.tokens(),
                              cal.seq_len(), cal.seed(), cal.packing()};
      }
      report.evaluation = {o.eval, evaluated->source_hash.hex(), evaluated->sequences, evaluated->tokens,
                           eval_tokens.seq_len, eval_tokens.seed, packing_name(eval_tokens.packing)};
      report.predictions = evaluated->result.predictions;
      report.reference_perplexity = evaluated->result.reference_perplexity;
      const auto h = halves(evaluated->result);
      report.half_sequences = {h[0].sequences, h[1].sequences};
    }
    report.recipes.push_back(recipe_report(name, (final_dir / "artifacts" / dir_name).string(), *quantized,
                                           *evaluated, o.gpu_memory_gb));
    // The statistics this recipe added to the memo were measured (or read from the cache) by it; its
    // other stats passes found theirs already there.
    auto& rec = report.recipes.back();
    const int added = int(memo.by_key.size() - memo_before);
    rec.stats_passes_reused = std::max(0, rec.stats_passes - added);
    computed_stats[i] = added;
  }
  if (comm.rank() != 0) return CompareOutcome{};
  add_alone_costs(report, computed_stats, o.price_per_hour);

  if (auto st = write_report(report, stage_dir.string()); !st) return fail(st.error().message);
  if (auto st = staging->commit(); !st) return fail(st.error().message);
  return CompareOutcome{std::move(report), final_dir.string()};
}

}  // namespace fp4c::pipeline
