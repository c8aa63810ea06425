// fp4c eval: perplexity of a BF16 checkpoint and, with --artifact, of an NVFP4 artifact made from
// it, with KL divergence, top-1 agreement and recovery; written into the artifact's manifest.
#include <omp.h>
#include <unistd.h>

#include <chrono>

#include <nlohmann/json.hpp>

#include <cstdio>
#include <filesystem>

#include "backends/compressed_tensors/reader.h"
#include "backends/manifest.h"
#include "frontend/checkpoint.h"
#include "passes/evaluate.h"
#include "runtime/checkpoint_weights.h"
#include "tools/fp4c/artifact_weights.h"
#include "tools/fp4c/calibration_input.h"
#include "tools/fp4c/commands.h"
#include "tools/fp4c/size_option.h"

namespace fp4c::tools {
namespace {
namespace fs = std::filesystem;

struct EvalOptions {
  std::string model;
  std::string artifact;
  std::string data;
  std::string precision = "f32";
  std::string memory_budget = "4GiB";
  bool json = false;
  bool no_manifest = false;
  int threads = 0;
  TokenSetOptions tokens;
};

int fail(const Error& e) {
  std::fprintf(stderr, "fp4c eval: error: %s\n", e.message.c_str());
  return 1;
}

int run_eval(const EvalOptions& o) {
  if (o.threads > 0) omp_set_num_threads(o.threads);
  auto ckpt = frontend::open_checkpoint(o.model);
  if (!ckpt) return fail(ckpt.error());
  auto tokens = load_tokens(o.data, o.model, ckpt->model.config, o.tokens);
  if (!tokens) return fail(tokens.error());

  std::optional<backends::compressed_tensors::ArtifactReader> artifact;
  if (!o.artifact.empty()) {
    auto a = backends::compressed_tensors::ArtifactReader::open(o.artifact, ckpt->model);
    if (!a) return fail(a.error());
    artifact.emplace(std::move(*a));
  }

  runtime::ForwardOptions fo;
  fo.precision = o.precision == "bf16" ? runtime::Precision::BF16 : runtime::Precision::F32;
  const auto budget = parse_size(o.memory_budget);
  if (!budget) return fail(make_error("--memory-budget '" + o.memory_budget + "': not a size (e.g. 4GiB)"));
  fo.spill.memory_budget = *budget;
  runtime::Forward forward(ckpt->model.config, fo);
  runtime::CheckpointWeights reference(ckpt->model, ckpt->refs, /*release_pages=*/false);
  std::optional<ArtifactWeights> candidate;
  if (artifact) candidate.emplace(ckpt->model, *artifact);

  const auto t0 = std::chrono::steady_clock::now();
  const bool tty = isatty(fileno(stderr)) && !o.json;
  auto result = passes::evaluate(forward, reference, candidate ? &*candidate : nullptr, tokens->sequences,
                                 [&](int i, int n) {
                                   if (tty) std::fprintf(stderr, "\rlayer %d of %d", i, n);
                                 });
  if (tty) std::fprintf(stderr, "\n");
  if (!result) return fail(result.error());
  const double seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  const auto& r = *result;

  if (artifact && !o.no_manifest) {
    const std::string path = (fs::path(o.artifact) / backends::kManifestFile).string();
    auto m = backends::read_manifest(path);
    if (!m) return fail(m.error());
    auto* acc = m->add_accuracy();
    acc->set_device(std::string("cpu-") + o.precision);
    acc->set_perplexity_reference(r.reference_perplexity);
    acc->set_perplexity(*r.perplexity);
    acc->set_recovery(*r.recovery);
    acc->set_kl_mean(*r.kl_mean);
    acc->set_kl_median(*r.kl_median);
    acc->set_kl_p99(*r.kl_p99);
    acc->set_top1_agreement(*r.top1_agreement);
    acc->set_tokens(uint64_t(r.predictions));
    *acc->mutable_eval_hash() = backends::to_proto(tokens->source_hash);
    if (auto st = backends::write_manifest(*m, path); !st) return fail(st.error());
  }

  if (o.json) {
    nlohmann::json j{{"predictions", r.predictions},
                     {"reference_nll", r.reference_nll},
                     {"reference_perplexity", r.reference_perplexity},
                     {"precision", o.precision},
                     {"seconds", seconds},
                     {"tokens_per_second", double(tokens->total_tokens()) * (artifact ? 2 : 1) / seconds}};
    if (artifact) {
      j["nll"] = *r.nll;
      j["perplexity"] = *r.perplexity;
      j["recovery"] = *r.recovery;
      j["kl_mean"] = *r.kl_mean;
      j["kl_median"] = *r.kl_median;
      j["kl_p99"] = *r.kl_p99;
      j["top1_agreement"] = *r.top1_agreement;
    }
    std::printf("%s\n", j.dump(2).c_str());
    return 0;
  }
  std::printf("%-10s %10s %14s %10s %10s %10s %10s %8s\n", "model", "perplexity", "total NLL", "recovery", "KL mean",
              "KL median", "KL p99", "top-1");
  std::printf("%-10s %10.6f %14.4f\n", "reference", r.reference_perplexity, r.reference_nll);
  if (artifact)
    std::printf("%-10s %10.6f %14.4f %10.4f %10.5f %10.5f %10.5f %8.4f\n", "artifact", *r.perplexity, *r.nll,
                *r.recovery, *r.kl_mean, *r.kl_median, *r.kl_p99, *r.top1_agreement);
  std::printf("%lld predictions over %zu sequences, %s, %.2f s\n", static_cast<long long>(r.predictions),
              tokens->sequences.size(), o.precision.c_str(), seconds);
  return 0;
}

}  // namespace

Runner setup_eval(CLI::App& app, const CommandLine&) {
  auto opts = std::make_shared<EvalOptions>();
  CLI::App* sub = app.add_subcommand("eval", "Perplexity, KL and recovery of an artifact against its BF16 reference");
  sub->add_option("--model", opts->model, "the reference BF16 checkpoint")->required();
  sub->add_option("--artifact", opts->artifact, "an fp4c artifact made from --model");
  sub->add_option("--data", opts->data, "evaluation set (JSONL with text or input_ids, or text; .gz too)")->required();
  sub->add_option("--precision", opts->precision, "f32 or bf16 activations and GEMMs")
      ->check(CLI::IsMember({"f32", "bf16"}))
      ->default_str("f32");
  sub->add_option("--threads", opts->threads, "threads (default: all cores)");
  sub->add_option("--memory-budget", opts->memory_budget,
                  "hidden states of each model beyond this size live in a temporary file ($TMPDIR)")
      ->default_str("4GiB");
  sub->add_flag("--json", opts->json, "print the figures as JSON");
  sub->add_flag("--no-manifest", opts->no_manifest, "do not record the figures in the artifact's manifest");
  add_token_set_options(sub, opts->tokens, "--samples");
  return {sub, [opts]() { return run_eval(*opts); }};
}

}  // namespace fp4c::tools
