// fp4c compare: several recipes on one model, calibration set and evaluation set, side by side.
// Each recipe is quantized (statistics collected once and shared through a StatsMemo and the stats
// cache) and its artifact evaluated against the BF16 reference with per-Linear output errors; the
// report (report.md, report.json, SVG plots) and the artifacts are built in a hidden sibling of --out
// and moved into place only when every recipe has run.
#include <chrono>
#include <cmath>
#include <cstdio>
#include <ctime>
#include <filesystem>
#include <algorithm>
#include <cctype>

#include "backends/artifact.h"
#include "pipeline/recipes.h"
#include "passes/weight_plan.h"
#include "pipeline/token_sets.h"
#include "runtime/weights.h"
#include "tools/fp4c/commands.h"
#include "pipeline/evaluate.h"
#include "pipeline/quantize.h"
#include "pipeline/report.h"
#include "pipeline/serving_memory.h"
#include "pipeline/sizes.h"

namespace fp4c::tools {
namespace {
namespace fs = std::filesystem;
using namespace pipeline;   // this command is a thin shell over the library

struct CompareOptions {
  std::string model, calib, eval, out;
  std::vector<std::string> recipes;
  std::string scheme;
  std::vector<std::string> schemes;   // --schemes: every recipe under each (rows "recipe@scheme")
  TokenSetFlags calib_tokens;     // --calib-samples, --seq-len, --seed, --packing (the last three for both sets)
  int64_t eval_samples = 0;
  std::string precision = "f32";
  std::string memory_budget = "4GiB";
  int threads = 0;
  double price_per_hour = 0;
  double gpu_memory_gb = 80;
  std::string stats_cache;
  bool force = false;
};

int fail(const std::string& message) {
  std::fprintf(stderr, "fp4c compare: error: %s\n", message.c_str());
  return 1;
}

std::string utc_now() {
  const std::time_t t = std::time(nullptr);
  std::tm tm{};
  gmtime_r(&t, &tm);
  char buf[32];
  std::strftime(buf, sizeof buf, "%Y-%m-%dT%H:%M:%SZ", &tm);
  return buf;
}

// A recipe name made safe as a directory name.
std::string artifact_name(const std::string& recipe) {
  std::string s = recipe;
  for (char& c : s)
    if (!(std::isalnum(static_cast<unsigned char>(c)) || c == '-' || c == '_' || c == '.')) c = '_';
  return s.empty() ? "recipe" : s;
}

bool is_stats_stage(const std::string& stage) { return stage == "stats" || stage.rfind("stats#", 0) == 0; }

RecipeReport recipe_report(const std::string& name, const std::string& artifact, const pipeline::QuantizeOutcome& q,
                           const pipeline::EvalOutcome& e, double gpu_memory_gb) {
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

int run_compare(const CompareOptions& o, const CommandLine& cl) {
  // Everything that can be checked without reading a weight, first.
  if (o.recipes.empty()) return fail("--recipes: give at least one recipe, e.g. plain,smoothquant");
  if (!(o.gpu_memory_gb > 0)) return fail("--gpu-memory-gb must be positive");
  if (o.price_per_hour < 0) return fail("--price-per-hour must not be negative");
  const auto memory_budget = parse_size(o.memory_budget);
  if (!memory_budget) return fail("--memory-budget '" + o.memory_budget + "': not a size (e.g. 4GiB)");
  const runtime::Precision precision = *parse_precision(o.precision);   // CLI11 checked the choices
  const auto calib_tokens = token_set_options(o.calib_tokens);
  if (!calib_tokens) return fail(calib_tokens.error().message);
  if (!o.schemes.empty() && !o.scheme.empty()) return fail("give --scheme or --schemes, not both");
  for (const auto& s : o.schemes)
    if (!passes::parse_scheme(s)) return fail("--schemes: '" + s + "' is not w4a16, w4a4, mxfp4a16 or mxfp4");
  // Unknown recipes and bad recipe files fail here, before any statistics are collected. A recipe is
  // reported under its name (a file's "name", else its stem), which also names its artifact; with
  // --schemes, each recipe runs under each scheme, reported as "name@scheme".
  struct Run {
    std::string recipe, scheme, name, dir;
  };
  std::vector<Run> runs;
  for (const auto& r : o.recipes) {
    if (r.empty()) return fail("--recipes: empty recipe name in the list");
    auto recipe = pipeline::resolve_recipe(r);
    if (!recipe) return fail("--recipes: " + recipe.error().message);
    const std::string name = artifact_name(recipe->name.empty() ? r : recipe->name);
    for (const auto& s : o.schemes.empty() ? std::vector<std::string>{o.scheme} : o.schemes) {
      Run run{r, s, o.schemes.empty() ? name : name + "@" + s, ""};
      run.dir = artifact_name(run.name);
      for (const auto& other : runs)
        if (other.name == run.name) return fail("--recipes: '" + run.name + "' appears twice");
      runs.push_back(std::move(run));
    }
  }

  auto staging = backends::StagingDir::create(o.out, o.force);
  if (!staging) return fail(staging.error().message);
  for (const std::string& d : staging->removed())
    std::fprintf(stderr, "removed %s, the staging directory of a run that died\n", d.c_str());
  const fs::path stage_dir = staging->path();
  const fs::path final_dir = staging->destination();
  std::error_code ec;
  fs::create_directories(stage_dir / "artifacts", ec);
  if (ec) return fail((stage_dir / "artifacts").string() + ": " + ec.message());

  StatsMemo memo;
  QuantizeRequest base;
  base.model = o.model;
  if (!o.scheme.empty()) base.scheme = passes::parse_scheme(o.scheme);
  base.calib = o.calib;
  base.tokens = *calib_tokens;
  base.stats_cache = o.stats_cache.empty() ? (stage_dir / "stats-cache").string() : o.stats_cache;
  base.precision = precision;
  base.memory_budget = *memory_budget;
  base.threads = o.threads;
  base.report = terminal_reporter(/*progress=*/false);
  base.price_per_hour = o.price_per_hour;
  base.command_line = cl.joined();
  base.memo = &memo;

  CompareReport report;
  report.tool_version = FP4C_VERSION;
  report.created_utc = utc_now();
  report.command_line = cl.joined();
  report.model = o.model;
  report.precision = o.precision;
  report.price_per_hour = o.price_per_hour;
  report.gpu_memory_gb = o.gpu_memory_gb;

  pipeline::TokenSetOptions eval_tokens = *calib_tokens;
  eval_tokens.samples = o.eval_samples;
  std::vector<int> computed_stats(runs.size(), 0);
  for (size_t i = 0; i < runs.size(); ++i) {
    const auto& name = runs[i].name;
    const std::string& dir_name = runs[i].dir;
    QuantizeRequest q = base;
    q.recipe = runs[i].recipe;
    q.scheme = runs[i].scheme.empty() ? base.scheme : passes::parse_scheme(runs[i].scheme);
    q.out = (stage_dir / "artifacts" / dir_name).string();
    std::fprintf(stderr, "[%zu/%zu] %s: quantizing\n", i + 1, runs.size(), name.c_str());
    const size_t memo_before = memo.by_key.size();
    auto quantized = quantize(q);
    if (!quantized) return fail("recipe '" + name + "': " + quantized.error().message);

    std::fprintf(stderr, "[%zu/%zu] %s: evaluating\n", i + 1, runs.size(), name.c_str());
    EvalRequest e;
    e.model = o.model;
    e.artifact = q.out;
    e.data = o.eval;
    e.tokens = eval_tokens;
    e.precision = precision;
    e.memory_budget = *memory_budget;
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
  add_alone_costs(report, computed_stats, o.price_per_hour);

  if (auto st = write_report(report, stage_dir.string()); !st) return fail(st.error().message);
  if (auto st = staging->commit(); !st) return fail(st.error().message);

  std::printf("%-22s %9s %9s %9s %9s %9s %7s %12s %7s %9s\n", "recipe", "perplexity", "recovery", "half 1", "half 2",
              "KL mean", "top-1", "bytes", "bits/w", "build s");
  for (const auto& r : report.recipes)
    std::printf("%-22s %9.4f %9.4f %9.4f %9.4f %9.5f %7.4f %12llu %7.3f %9.2f\n", r.name.c_str(), r.perplexity,
                r.recovery, r.half_recovery[0], r.half_recovery[1], r.kl_mean, r.top1_agreement,
                static_cast<unsigned long long>(r.artifact_bytes), r.effective_bits_per_weight, r.build_wall_seconds);
  std::printf("BF16 reference perplexity %.6f over %lld predictions\n", report.reference_perplexity,
              static_cast<long long>(report.predictions));
  for (size_t i = 1; i < report.recipes.size(); ++i)
    std::printf("%s\n", verdict(report.recipes[0], report.recipes[i]).text.c_str());
  std::printf("report: %s, %s, %s, %s\n", (final_dir / kReportMarkdown).c_str(), (final_dir / kReportJson).c_str(),
              (final_dir / kLayerErrorSvg).c_str(), (final_dir / kRecoverySvg).c_str());
  return 0;
}

}  // namespace

Runner setup_compare(CLI::App& app, const CommandLine& cl) {
  auto opts = std::make_shared<CompareOptions>();
  CLI::App* sub = app.add_subcommand(
      "compare", "Run several recipes on one model, calibration and evaluation set; write a report side by side");
  sub->add_option("--model", opts->model, "Hugging Face checkpoint directory (BF16)")->required();
  sub->add_option("--calib", opts->calib, "calibration set: JSONL with text or input_ids, or plain text; .gz too")
      ->required();
  sub->add_option("--eval", opts->eval, "evaluation set, same formats")->required();
  sub->add_option("--recipes", opts->recipes, "comma-separated recipes; the first is the baseline of the verdicts")
      ->required()
      ->delimiter(',');
  sub->add_option("--out", opts->out, "report directory to create (report.md, report.json, *.svg, artifacts/)")
      ->required();
  sub->add_option("--scheme", opts->scheme, "w4a4 (the default), w4a16, mxfp4 or mxfp4a16")
      ->check(CLI::IsMember({"w4a16", "w4a4", "mxfp4a16", "mxfp4"}));
  sub->add_option("--schemes", opts->schemes,
                  "comma-separated schemes (e.g. w4a4,mxfp4): every recipe under each, rows named recipe@scheme; "
                  "not with --scheme")
      ->delimiter(',')
      ->check(CLI::IsMember({"w4a16", "w4a4", "mxfp4a16", "mxfp4"}));
  add_token_set_options(sub, opts->calib_tokens, "--calib-samples");
  sub->add_option("--eval-samples", opts->eval_samples,
                  "evaluation samples to use (0: all); --seq-len, --seed and --packing apply to both sets");
  sub->add_option("--precision", opts->precision, "runtime precision of calibration and evaluation: f32 or bf16")
      ->check(CLI::IsMember({"f32", "bf16"}))
      ->default_str("f32");
  sub->add_option("--memory-budget", opts->memory_budget,
                  "hidden states beyond this size live in a temporary file ($TMPDIR)")
      ->default_str("4GiB");
  sub->add_option("--threads", opts->threads, "threads (default: all cores)")->check(CLI::NonNegativeNumber);
  sub->add_option("--price-per-hour", opts->price_per_hour, "machine price per hour, for the build-cost money figure");
  sub->add_option("--gpu-memory-gb", opts->gpu_memory_gb,
                  "GPU memory in GB (10^9 bytes) for the computed serving-memory figures")
      ->default_str("80");
  sub->add_option("--stats-cache", opts->stats_cache,
                  "directory where activation statistics are kept and reused (default: OUT/stats-cache)");
  sub->add_flag("--force", opts->force, "replace an existing output directory");
  return {sub, [opts, &cl]() { return run_compare(*opts, cl); }};
}

}  // namespace fp4c::tools
