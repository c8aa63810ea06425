// fp4c quantize: a BF16 Hugging Face checkpoint in, an NVFP4 artifact (compressed-tensors or ModelOpt
// layout) and its manifest out (the work is quantize() in quantize_run.cpp).
#include <cstdio>

#include "passes/recipes.h"
#include "tools/fp4c/commands.h"
#include "tools/fp4c/quantize_run.h"

namespace fp4c::tools {

Runner setup_quantize(CLI::App& app, const CommandLine& cl) {
  auto opts = std::make_shared<QuantizeRequest>();
  CLI::App* sub = app.add_subcommand("quantize", "Quantize a checkpoint to an NVFP4 artifact");
  sub->add_option("--model", opts->model, "Hugging Face checkpoint directory (BF16)")->required();
  sub->add_option("--out", opts->out, "artifact directory to create")->required();
  sub->add_option("--scheme", opts->scheme,
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
  add_token_set_options(sub, opts->tokens, "--calib-samples");
  sub->add_option("--stats-cache", opts->stats_cache,
                  "directory where activation statistics are kept and reused, keyed by model, rewrites and "
                  "calibration set");
  sub->add_option("--memory-budget", opts->memory_budget,
                  "hidden states of the calibration set beyond this size live in a temporary file ($TMPDIR)")
      ->default_str("4GiB");
  sub->add_option("--precision", opts->precision, "runtime precision of calibration: f32 or bf16")
      ->check(CLI::IsMember({"f32", "bf16"}))
      ->default_str("f32");
  sub->add_option("--ignore", opts->ignore,
                  "keep Linears whose module name matches this regex in BF16 (repeatable)");
  sub->add_option("--threads", opts->threads, "threads (default: all cores)")->check(CLI::NonNegativeNumber);
  sub->add_option("--max-shard-size", opts->max_shard_size,
                  "shard the artifact by size (e.g. 5GB) instead of like the source");
  sub->add_option("--format", opts->format,
                  "artifact layout: compressed-tensors (vLLM's nvfp4-pack-quantized) or modelopt (ModelOpt's "
                  "Hugging Face layout with hf_quant_config.json: TensorRT-LLM, vLLM modelopt_fp4, SGLang)")
      ->check(CLI::IsMember({"compressed-tensors", "modelopt"}))
      ->default_str("compressed-tensors");
  sub->add_flag("--dry-run", opts->dry_run, "print the per-tensor plan and projected size; write nothing");
  sub->add_flag("--force", opts->force, "replace an existing output directory");
  sub->add_flag("--quiet", opts->quiet, "print nothing on success");
  sub->add_option("--price-per-hour", opts->price_per_hour,
                  "machine price per hour, for the build-cost figure in the manifest");
  return {sub, [opts, &cl]() {
            QuantizeRequest r = *opts;
            r.command_line = cl.joined();
            auto outcome = quantize(r);
            if (!outcome) {
              std::fprintf(stderr, "fp4c quantize: error: %s\n", outcome.error().message.c_str());
              return 1;
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
              auto r = passes::load_recipe_file(*file);
              if (!r) {
                std::fprintf(stderr, "fp4c recipes: error: %s\n", r.error().message.c_str());
                return 1;
              }
              std::printf("%s%s\n  %s\n  pipeline: %s\n", r->name.c_str(),
                          r->scheme.empty() ? "" : (" (" + r->scheme + ")").c_str(), r->description.c_str(),
                          r->pipeline.c_str());
              return 0;
            }
            for (const auto& r : passes::builtin_recipes())
              std::printf("%s\n  %s\n  pipeline: %s\n", r.name.c_str(), r.description.c_str(), r.pipeline.c_str());
            std::printf("\nA recipe file: {\"name\": \"mine\", \"description\": \"...\", \"scheme\": \"w4a4\", "
                        "\"pipeline\": [\"stats\", \"smoothquant{alpha=0.6}\", \"stats\", \"blockscale{rule=mse}\", "
                        "\"pack\"]}\n");
            return 0;
          }};
}

}  // namespace fp4c::tools
