// fp4c-verify: the verification tool that gates a release. The work is verify::run_verification();
// this file parses the command line and prints.
#include <CLI/CLI.hpp>
#include <google/protobuf/util/json_util.h>
#include <unistd.h>

#include <cstdio>
#include <string>

#include "tools/fp4c-verify/verify.h"
#include "tools/common/cli.h"

int main(int argc, char** argv) {
  using namespace fp4c;
  CLI::App app{"fp4c-verify: checks an NVFP4 artifact against its manifest and reference, measures its accuracy "
               "(as fp4c eval) and speed, writes verification.json beside the manifest and gates on thresholds.\n"
               "Exit codes: 0 pass, 1 a threshold failed, 2 inputs refused (hashes, another model's manifest, bad "
               "artifact or evaluation set, unusable device, bad options)."};
  app.set_version_flag("--version", std::string("fp4c-verify ") + FP4C_VERSION);
  verify::VerifyRequest q;
  bool json = false, no_speed = false, no_per_layer = false;
  double min_recovery = 0, max_kl_mean = 0, max_kl_p99 = 0;
  app.add_option("--artifact", q.artifact, "the artifact directory (with fp4c-manifest.json)")->required();
  app.add_option("--reference", q.reference, "the BF16 checkpoint (or GGUF file) the artifact was made from")->required();
  app.add_option("--eval", q.eval, "evaluation set (JSONL with text or input_ids, or text; .gz too)")->required();
  app.add_option("--device", q.device, "cpu, cuda or cuda:N")->default_str("cpu");
  auto* o_rec = app.add_option("--min-recovery", min_recovery, "fail when recovery (reference ppl / artifact ppl) is below");
  auto* o_klm = app.add_option("--max-kl-mean", max_kl_mean, "fail when the mean KL divergence is above");
  auto* o_klp = app.add_option("--max-kl-p99", max_kl_p99, "fail when the 99th percentile KL divergence is above");
  tools::add_token_set_options(&app, q.tokens, "--samples");
  app.add_option("--precision", q.precision, "f32 or bf16 activations and GEMMs")
      ->check(CLI::IsMember({"f32", "bf16"}))
      ->default_str("f32");
  app.add_option("--threads", q.threads, "threads (default: all cores)");
  app.add_option("--memory-budget", q.memory_budget, "hidden states beyond this size live in a temporary file")
      ->default_str("4GiB");
  app.add_flag("--no-per-layer", no_per_layer, "skip each quantized Linear's output error");
  app.add_option("--batch", q.batch, "requests run together in the serving cases")->default_str("1");
  app.add_option("--repetitions", q.repetitions, "timed repetitions of each matrix multiply")->default_str("10");
  app.add_flag("--no-speed", no_speed, "skip the speed and memory section");
  app.add_flag("--json", json, "print verification.json's content instead of the table");
  bool no_write = false;
  app.add_flag("--no-write", no_write, "do not write verification.json");
  try {
    app.parse(argc, argv);
  } catch (const CLI::ParseError& e) {
    const int rc = app.exit(e);
    return rc == 0 ? 0 : verify::kExitRefused;
  }
  if (o_rec->count()) q.min_recovery = min_recovery;
  if (o_klm->count()) q.max_kl_mean = max_kl_mean;
  if (o_klp->count()) q.max_kl_p99 = max_kl_p99;
  q.write_file = !no_write;
  q.speed = !no_speed;
  q.per_layer = !no_per_layer;
  q.command_line = tools::CommandLine{argc, argv}.joined();
  q.progress = isatty(fileno(stderr)) && !json;

  auto out = verify::run_verification(q);
  if (json) {
    google::protobuf::util::JsonPrintOptions opts;
    opts.add_whitespace = true;
    opts.always_print_primitive_fields = true;
    std::string text;
    (void)google::protobuf::util::MessageToJsonString(out.record, &text, opts);
    std::fputs(text.c_str(), stdout);
  } else {
    std::fputs(out.table.c_str(), stdout);
  }
  if (!out.refused.empty()) std::fprintf(stderr, "fp4c-verify: refused: %s\n", out.refused.c_str());
  for (const auto& f : out.failures) std::fprintf(stderr, "fp4c-verify: %s\n", f.c_str());
  if (!out.written.empty() && !json) std::printf("wrote %s\n", out.written.c_str());
  return out.exit_code;
}
