// fp4c compare: several recipes on one model, calibration set and evaluation set, side by side (the
// work is pipeline::compare()); prints the table, the verdicts against the first recipe and where the
// report is.
#include <cstdio>
#include <filesystem>

#include "pipeline/compare.h"
#include "pipeline/quantize.h"
#include "pipeline/sizes.h"
#include "runtime/comm.h"
#include "tools/fp4c/commands.h"

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

// Under mpirun an error on any rank ends the job (the others may be waiting in a collective).
int fail(const std::string& message) {
  runtime::Comm& comm = runtime::Comm::world();
  if (!comm.distributed()) {
    std::fprintf(stderr, "fp4c compare: error: %s\n", message.c_str());
    return 1;
  }
  std::fprintf(stderr, "fp4c compare: error on rank %d of %d: %s\n", comm.rank(), comm.size(), message.c_str());
  comm.abort(1);
}

int run_compare(const CompareOptions& o, const CommandLine& cl) {
  CompareRequest r;
  r.model = o.model;
  r.calib = o.calib;
  r.eval = o.eval;
  r.out = o.out;
  r.recipes = o.recipes;
  if (!o.scheme.empty()) r.scheme = passes::parse_scheme(o.scheme);   // CLI11 checked the choices
  for (const auto& s : o.schemes) r.schemes.push_back(*passes::parse_scheme(s));
  auto tokens = token_set_options(o.calib_tokens);
  if (!tokens) return fail(tokens.error().message);
  r.calib_tokens = *tokens;
  r.eval_samples = o.eval_samples;
  r.precision = *runtime::parse_precision(o.precision);
  const auto budget = parse_size(o.memory_budget);
  if (!budget) return fail("--memory-budget '" + o.memory_budget + "': not a size (e.g. 4GiB)");
  r.memory_budget = *budget;
  r.threads = o.threads;
  r.price_per_hour = o.price_per_hour;
  r.gpu_memory_gb = o.gpu_memory_gb;
  r.stats_cache = o.stats_cache;
  r.force = o.force;
  r.command_line = cl.joined();
  r.report = terminal_reporter(/*progress=*/false);
  if (runtime::Comm::world().rank() != 0) r.report = {};   // rank 0 reports
  auto outcome = compare(r);
  if (!outcome) return fail(outcome.error().message);
  if (runtime::Comm::world().rank() != 0) return 0;

  const CompareReport& report = outcome->report;
  const fs::path final_dir = outcome->out;
  std::printf("%-22s %9s %9s %9s %9s %9s %7s %12s %7s %9s\n", "recipe", "perplexity", "recovery", "half 1", "half 2",
              "KL mean", "top-1", "bytes", "bits/w", "build s");
  for (const auto& rec : report.recipes)
    std::printf("%-22s %9.4f %9.4f %9.4f %9.4f %9.5f %7.4f %12llu %7.3f %9.2f\n", rec.name.c_str(), rec.perplexity,
                rec.recovery, rec.half_recovery[0], rec.half_recovery[1], rec.kl_mean, rec.top1_agreement,
                static_cast<unsigned long long>(rec.artifact_bytes), rec.effective_bits_per_weight,
                rec.build_wall_seconds);
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
  sub->add_option("--model", opts->model, "Hugging Face checkpoint directory (BF16), or a GGUF file (or a directory holding one)")->required();
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
