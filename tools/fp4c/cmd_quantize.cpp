// fp4c quantize: a BF16 Hugging Face checkpoint in, an NVFP4 artifact (compressed-tensors or ModelOpt
// layout) and its manifest out (the work is pipeline::quantize()).
#include <cstdio>

#include "pipeline/quantize.h"
#include "pipeline/recipes.h"
#include "pipeline/sizes.h"
#include "runtime/comm.h"
#include "tools/fp4c/commands.h"

namespace fp4c::tools {

namespace {

// The options as typed; parsed into a pipeline::QuantizeRequest at run time (errors name the flag).
struct QuantizeFlags {
  pipeline::QuantizeRequest request;
  std::string scheme, precision = "f32", memory_budget = "4GiB", max_shard_size, format = "compressed-tensors";
  TokenSetFlags tokens;
  bool quiet = false;
};

Expected<pipeline::QuantizeRequest> to_request(const QuantizeFlags& f) {
  pipeline::QuantizeRequest r = f.request;
  if (!f.scheme.empty()) r.scheme = passes::parse_scheme(f.scheme);
  r.precision = *runtime::parse_precision(f.precision);   // CLI11 checked the choices
  r.format = *pipeline::parse_format(f.format);
  const auto budget = pipeline::parse_size(f.memory_budget);
  if (!budget) return make_error("--memory-budget '" + f.memory_budget + "': not a size (e.g. 4GiB)");
  r.memory_budget = *budget;
  if (!f.max_shard_size.empty()) {
    r.max_shard_size = pipeline::parse_size(f.max_shard_size);
    if (!r.max_shard_size)
      return make_error("--max-shard-size '" + f.max_shard_size + "': not a size (e.g. 5GB, 500MB, 2GiB)");
  }
  FP4C_ASSIGN(r.tokens, token_set_options(f.tokens));
  r.report = terminal_reporter(/*progress=*/!f.quiet);
  r.report.after_pass = [](const std::string& pass, int run, const std::string& text) {
    std::printf("--- after %s (run %d) ---\n%s", pass.c_str(), run, text.c_str());
  };
  return r;
}

void print_summary(const pipeline::QuantizeRequest& r, const pipeline::QuantizeOutcome& o) {
  const auto& mem = o.manifest.memory();
  std::printf("fp4c quantize: %zu Linear(s) to %s, %zu tensor(s) kept; %s -> %s (%.2f bits per Linear weight)\n",
              o.quantized, passes::is_mxfp4(o.scheme) ? "MXFP4" : "NVFP4", o.tensors - o.quantized,
              pipeline::format_bytes(mem.source_bytes()).c_str(), pipeline::format_bytes(mem.artifact_bytes()).c_str(),
              mem.effective_bits_per_weight());
  if (!o.sqnr_db.empty())
    std::printf("  weight SQNR: median %.2f dB, worst %.2f dB\n", o.sqnr_db[o.sqnr_db.size() / 2], o.sqnr_db.front());
  std::printf("  pipeline: %s\n", o.pipeline.c_str());
  std::printf("  %.2f s in all (packing %.2f s, %.2f GB/s of input), %d thread(s); artifact in %s\n", o.wall_seconds,
              o.pack_seconds, o.pack_seconds > 0 ? double(o.source_bytes) / o.pack_seconds / 1e9 : 0.0, o.threads,
              r.out.c_str());
}

}  // namespace

Runner setup_quantize(CLI::App& app, const CommandLine& cl) {
  auto f = std::make_shared<QuantizeFlags>();
  pipeline::QuantizeRequest* opts = &f->request;
  CLI::App* sub = app.add_subcommand("quantize", "Quantize a checkpoint to an NVFP4 artifact");
  sub->add_option("--model", opts->model, "Hugging Face checkpoint directory (BF16), or a GGUF file (or a directory holding one)")->required();
  sub->add_option("--out", opts->out, "artifact directory to create")->required();
  sub->add_option("--scheme", f->scheme,
                  "w4a16: NVFP4 weights, BF16 activations; w4a4: NVFP4 weights and activations (needs "
                  "--calib; the default when --calib is given); mxfp4a16: MXFP4 weights (blocks of 32, E8M0 "
                  "scales), BF16 activations; mxfp4: MXFP4 weights and activations (activation block scales at run "
                  "time; --calib only for recipes that need statistics)")
      ->check(CLI::IsMember({"w4a16", "w4a4", "mxfp4a16", "mxfp4"}));
  sub->add_option("--passes", opts->passes,
                  "pipeline text, e.g. 'stats,smoothquant{alpha=0.5},stats,blockscale{rule=mse},pack' (see `fp4c "
                  "passes`); default: blockscale,pack, with stats first when --calib is given");
  sub->add_option("--recipe", opts->recipe,
                  "a named pipeline (see `fp4c recipes`: plain, smoothquant, best, sensitive) or a recipe file (JSON)");
  sub->add_option("--print-after", opts->print_after,
                  "print what a pass annotated after it ran (repeatable: --print-after stats --print-after pack)");
  sub->add_option("--calib", opts->calib, "calibration set: JSONL with text or input_ids, or plain text; .gz too");
  add_token_set_options(sub, f->tokens, "--calib-samples");
  sub->add_option("--stats-cache", opts->stats_cache,
                  "directory where activation statistics are kept and reused, keyed by model, rewrites and "
                  "calibration set");
  sub->add_option("--checkpoint", opts->checkpoint,
                  "directory of per-layer progress (statistics, hidden states, GPTQ/local-Hessian results): a run "
                  "that died, run again with the same options, continues at the first unfinished layer and writes "
                  "the same bytes; other options are refused by name. Under mpirun, on a filesystem every rank sees");
  sub->add_option("--memory-budget", f->memory_budget,
                  "hidden states of the calibration set beyond this size live in a temporary file ($TMPDIR)")
      ->default_str("4GiB");
  sub->add_option("--precision", f->precision, "runtime precision of calibration: f32 or bf16")
      ->check(CLI::IsMember({"f32", "bf16"}))
      ->default_str("f32");
  sub->add_option("--ignore", opts->ignore,
                  "keep Linears whose module name matches this regex in BF16 (repeatable)");
  sub->add_option("--threads", opts->threads, "threads (default: all cores)")->check(CLI::NonNegativeNumber);
  sub->add_option("--max-shard-size", f->max_shard_size,
                  "shard the artifact by size (e.g. 5GB) instead of like the source");
  sub->add_option("--format", f->format,
                  "artifact layout: compressed-tensors (vLLM's nvfp4-pack-quantized) or modelopt (ModelOpt's "
                  "Hugging Face layout with hf_quant_config.json: TensorRT-LLM, vLLM modelopt_fp4, SGLang)")
      ->check(CLI::IsMember({"compressed-tensors", "modelopt"}))
      ->default_str("compressed-tensors");
  sub->add_flag("--dry-run", opts->dry_run, "print the per-tensor plan and projected size; write nothing");
  sub->add_flag("--force", opts->force, "replace an existing output directory");
  sub->add_flag("--quiet", f->quiet, "print nothing on success");
  sub->add_option("--price-per-hour", opts->price_per_hour,
                  "machine price per hour, for the build-cost figure in the manifest");
  return {sub, [f, &cl]() {
            // Under mpirun (fp4c built with MPI): rank 0 reports; an error on any rank ends the job.
            runtime::Comm& comm = runtime::Comm::world();
            auto fail = [&comm](const std::string& message) {
              if (!comm.distributed()) {
                std::fprintf(stderr, "fp4c quantize: error: %s\n", message.c_str());
                return 1;
              }
              std::fprintf(stderr, "fp4c quantize: error on rank %d of %d: %s\n", comm.rank(), comm.size(),
                           message.c_str());
              comm.abort(1);
            };
            auto request = to_request(*f);
            if (!request) return fail(request.error().message);
            request->command_line = cl.joined();
            if (comm.rank() != 0) {
              request->report = {};
            }
            auto outcome = pipeline::quantize(*request);
            if (!outcome) return fail(outcome.error().message);
            if (comm.distributed() && !f->quiet)
              std::fprintf(stderr, "fp4c quantize: rank %d of %d: %llu bytes sent, %llu received\n", comm.rank(),
                           comm.size(), static_cast<unsigned long long>(comm.bytes_sent()),
                           static_cast<unsigned long long>(comm.bytes_received()));
            if (comm.rank() != 0) return 0;
            if (request->dry_run) {
              std::fputs(outcome->plan.c_str(), stdout);
              if (outcome->out_exists && !request->force)
                std::printf("note: %s exists; a real run needs --force to replace it\n", request->out.c_str());
            } else if (!f->quiet) {
              print_summary(*request, *outcome);
            }
            return 0;
          }};
}

Runner setup_recipes(CLI::App& app, const CommandLine&) {
  auto file = std::make_shared<std::string>();
  CLI::App* sub = app.add_subcommand("recipes", "List the built-in recipes (named pipelines) for --recipe");
  sub->add_option("--check", *file, "validate a recipe file and print its canonical pipeline");
  return {sub, [file]() {
            if (!file->empty()) {
              auto r = pipeline::load_recipe_file(*file);
              if (!r) {
                std::fprintf(stderr, "fp4c recipes: error: %s\n", r.error().message.c_str());
                return 1;
              }
              std::printf("%s%s\n  %s\n  pipeline: %s\n", r->name.c_str(),
                          r->scheme.empty() ? "" : (" (" + r->scheme + ")").c_str(), r->description.c_str(),
                          r->pipeline.c_str());
              return 0;
            }
            for (const auto& r : pipeline::builtin_recipes())
              std::printf("%s\n  %s\n  pipeline: %s\n", r.name.c_str(), r.description.c_str(), r.pipeline.c_str());
            std::printf("\nA recipe file: {\"name\": \"mine\", \"description\": \"...\", \"scheme\": \"w4a4\", "
                        "\"pipeline\": [\"stats\", \"smoothquant{alpha=0.6}\", \"stats\", \"blockscale{rule=mse}\", "
                        "\"pack\"]}\n");
            return 0;
          }};
}

}  // namespace fp4c::tools
