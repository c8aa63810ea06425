// fp4c eval: perplexity of a BF16 checkpoint and, with --artifact, of an NVFP4 artifact made from
// it, with KL divergence, top-1 agreement and recovery (and, with --per-layer, each quantized
// Linear's output error); written into the artifact's manifest. The work is run_evaluation().
#include <unistd.h>

#include <cstdio>

#include "pipeline/evaluate.h"
#include "pipeline/quantize.h"
#include "pipeline/sizes.h"
#include "tools/fp4c/commands.h"

namespace fp4c::tools {
namespace {

struct EvalCommandOptions {
  pipeline::EvalRequest request;
  TokenSetFlags tokens;
  std::string precision = "f32", memory_budget = "4GiB";
  bool json = false;
  bool no_manifest = false;
};

int run_eval(const EvalCommandOptions& o) {
  auto fail = [](const std::string& message) {
    std::fprintf(stderr, "fp4c eval: error: %s\n", message.c_str());
    return 1;
  };
  pipeline::EvalRequest request = o.request;
  request.record_in_manifest = !o.no_manifest;
  request.precision = *runtime::parse_precision(o.precision);
  const auto budget = pipeline::parse_size(o.memory_budget);
  if (!budget) return fail("--memory-budget '" + o.memory_budget + "': not a size (e.g. 4GiB)");
  request.memory_budget = *budget;
  auto tokens = token_set_options(o.tokens);
  if (!tokens) return fail(tokens.error().message);
  request.tokens = *tokens;
  if (isatty(fileno(stderr)) && !o.json) request.progress = layer_progress();
  auto outcome = pipeline::run_evaluation(request);
  if (!outcome) return fail(outcome.error().message);
  if (o.json) std::printf("%s\n", outcome->json.dump(2).c_str());
  else std::fputs(outcome->table.c_str(), stdout);
  return 0;
}

}  // namespace

Runner setup_eval(CLI::App& app, const CommandLine&) {
  auto opts = std::make_shared<EvalCommandOptions>();
  pipeline::EvalRequest& r = opts->request;
  CLI::App* sub = app.add_subcommand("eval", "Perplexity, KL and recovery of an artifact against its BF16 reference");
  sub->add_option("--model", r.model, "the reference BF16 checkpoint, or a GGUF file (or a directory holding one)")->required();
  sub->add_option("--artifact", r.artifact, "an fp4c artifact made from --model");
  sub->add_option("--data", r.data, "evaluation set (JSONL with text or input_ids, or text; .gz too)")->required();
  sub->add_option("--precision", opts->precision, "f32 or bf16 activations and GEMMs")
      ->check(CLI::IsMember({"f32", "bf16"}))
      ->default_str("f32");
  sub->add_option("--device", r.device, "cpu, cuda or cuda:N (the GPU runtime, in a CUDA build)")->default_str("cpu");
  sub->add_option("--threads", r.threads, "threads (default: all cores)");
  sub->add_option("--memory-budget", opts->memory_budget,
                  "hidden states of each model beyond this size live in a temporary file ($TMPDIR)")
      ->default_str("4GiB");
  sub->add_flag("--per-layer", r.per_layer,
                "also measure each quantized Linear's output error on the reference's input (needs --artifact)");
  sub->add_flag("--json", opts->json, "print the figures as JSON");
  sub->add_flag("--no-manifest", opts->no_manifest, "do not record the figures in the artifact's manifest");
  add_token_set_options(sub, opts->tokens, "--samples");
  return {sub, [opts]() { return run_eval(*opts); }};
}

}  // namespace fp4c::tools
