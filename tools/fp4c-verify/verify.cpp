#include "tools/fp4c-verify/verify.h"

#include "base/text.h"

#include <google/protobuf/util/json_util.h>
#include <unistd.h>

#include <chrono>
#include <cmath>
#include <cstdio>
#include <ctime>
#include <filesystem>
#include <fstream>

#include "backends/artifact_reader.h"
#include "backends/manifest.h"
#include "backends/verify_hashes.h"
#include "formats/hash.h"
#include "frontend/checkpoint.h"
#include "runtime/device.h"
#include "runtime/perf.h"
#include "tools/fp4c-verify/speed.h"
#include "pipeline/evaluate.h"
#include "pipeline/quantize.h"
#include "pipeline/sizes.h"

#ifndef FP4C_VERSION
#define FP4C_VERSION "unknown"
#endif

namespace fp4c::verify {
namespace {
namespace fs = std::filesystem;


std::string number(double v) {
  char buf[32];
  std::snprintf(buf, sizeof buf, "%.4f", v);
  return buf;
}

std::string limit_text(double v) {
  char buf[32];
  std::snprintf(buf, sizeof buf, "%g", v);
  return buf;
}

// One threshold: `at_least` for --min-*, else at most. A NaN value fails.
void check_threshold(VerifyOutcome& out, const std::string& name, const std::string& option, double limit,
                     double value, bool at_least) {
  auto* t = out.record.add_thresholds();
  t->set_name(name);
  t->set_option(option);
  t->set_limit(limit);
  t->set_value(value);
  const bool passed = at_least ? value >= limit : value <= limit;
  t->set_passed(passed);
  if (!passed)
    out.failures.push_back("FAIL " + name + " " + number(value) + (at_least ? " < " : " > ") + option + " " +
                           limit_text(limit));
}

}  // namespace

Status write_verification(const manifest::Verification& v, const std::string& path) {
  google::protobuf::util::JsonPrintOptions opts;
  opts.add_whitespace = true;
  opts.always_print_primitive_fields = true;
  std::string json;
  auto st = google::protobuf::util::MessageToJsonString(v, &json, opts);
  if (!st.ok()) return make_error(path + ": cannot serialize the verification: " + st.ToString());
  const std::string tmp = path + ".tmp-" + std::to_string(getpid());
  {
    std::ofstream out(tmp, std::ios::binary | std::ios::trunc);
    out << json;
    out.flush();
    if (!out) {
      std::error_code ec;
      fs::remove(tmp, ec);
      return make_error(tmp + ": write failed");
    }
  }
  std::error_code ec;
  fs::rename(tmp, path, ec);
  if (ec) {
    fs::remove(tmp, ec);
    return make_error(path + ": cannot rename " + tmp + " into place: " + ec.message());
  }
  return {};
}

VerifyOutcome run_verification(const VerifyRequest& q) {
  const auto t0 = std::chrono::steady_clock::now();
  VerifyOutcome out;
  manifest::Verification& v = out.record;
  v.set_tool("fp4c-verify");
  v.set_tool_version(FP4C_VERSION);
  v.set_command_line(q.command_line);
  v.set_created_utc(utc_timestamp());
  v.set_artifact_dir(q.artifact);
  v.set_reference_dir(q.reference);
  v.set_eval_path(q.eval);
  v.set_device(q.device);
  v.set_eval_samples(q.tokens.samples);
  v.set_eval_seq_len(q.tokens.seq_len);
  v.set_eval_seed(q.tokens.seed);
  v.set_eval_packing(q.tokens.packing);
  v.set_precision(q.precision);

  const std::string manifest_path = (fs::path(q.artifact) / backends::kManifestFile).string();
  bool may_write = false;   // only beside a manifest that could be read
  const auto finish = [&](int code) -> VerifyOutcome& {
    out.exit_code = code;
    v.set_exit_code(code);
    v.set_verdict(code == kExitPass ? "pass" : code == kExitThreshold ? "fail" : "refused");
    v.set_refused(out.refused);
    v.set_seconds(std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count());
    if (may_write && q.write_file) {
      const std::string path = (fs::path(q.artifact) / backends::kVerificationFile).string();
      auto st = write_verification(v, path);
      if (!st.ok()) {
        // The record is the gate's output: without it the run is not a pass.
        if (out.refused.empty()) out.refused = st.error().message;
        out.exit_code = kExitRefused;
      } else {
        out.written = path;
      }
    }
    out.table = render_table(v);
    return out;
  };
  const auto refuse = [&](std::string why) -> VerifyOutcome& {
    out.refused = std::move(why);
    return finish(kExitRefused);
  };

  // The options themselves.
  if (q.batch < 1) return refuse("--batch " + std::to_string(q.batch) + ": must be at least 1");
  if (q.repetitions < 1) return refuse("--repetitions " + std::to_string(q.repetitions) + ": must be at least 1");

  auto m = backends::read_manifest(manifest_path);
  if (!m) return refuse(m.error().message);
  may_write = true;
  v.set_scheme(m->options().scheme());
  v.set_format(backends::is_modelopt_artifact(q.artifact) ? "modelopt" : "compressed-tensors");
  {
    auto h = hash::hash_file(manifest_path);
    if (!h) return refuse(h.error().message);
    *v.mutable_manifest_hash() = backends::to_proto(*h);
  }
  {
    auto h = hash::hash_file(q.eval);
    if (!h) return refuse(q.eval + ": the evaluation set cannot be read: " + h.error().message);
    *v.mutable_eval_hash() = backends::to_proto(*h);
  }

  // The reference and the device first: an unusable device is refused before any long work.
  auto ckpt = frontend::open_checkpoint(q.reference);
  if (!ckpt) return refuse(ckpt.error().message);
  {
    runtime::ForwardOptions fo;
    auto engine = runtime::make_engine(q.device, ckpt->model.config, fo);
    if (!engine) return refuse("--device " + q.device + ": " + engine.error().message);
  }
  std::unique_ptr<runtime::PerfDevice> perf;
  if (q.speed) {
    auto p = runtime::make_perf_device(q.device, q.threads);
    if (!p) return refuse("--device " + q.device + ": " + p.error().message);
    perf = std::move(*p);
  }

  // (a) The artifact is what its manifest says, and the manifest belongs to the reference.
  auto artifact_check = backends::check_artifact_hashes(*m, q.artifact);
  // A GGUF reference's input is the file itself, recorded by name: checked in its directory.
  const std::string reference_dir = ckpt->source_format == frontend::SourceFormat::Gguf
                                        ? std::filesystem::path(ckpt->source_path).parent_path().string()
                                        : q.reference;
  auto reference_check = backends::check_reference_inputs(*m, reference_dir.empty() ? "." : reference_dir);
  auto* hc = v.mutable_hash_check();
  hc->set_artifact_files(artifact_check.files);
  hc->set_artifact_tensors(artifact_check.tensors);
  hc->set_reference_files(reference_check.files);
  for (const auto& p : artifact_check.problems) hc->add_problems(p);
  for (const auto& p : reference_check.problems) hc->add_problems(p);
  hc->set_passed(artifact_check.ok() && reference_check.ok());
  *v.mutable_reference_files() = m->inputs();
  if (!artifact_check.ok())
    return refuse("the artifact does not match its manifest (" + std::to_string(artifact_check.problems.size()) +
                  " problem(s)); first: " + artifact_check.problems.front());
  if (!reference_check.ok())
    return refuse("the manifest was not made from the reference " + q.reference + " (" +
                  std::to_string(reference_check.problems.size()) + " problem(s)); first: " +
                  reference_check.problems.front());

  // The artifact's tensors against the reference model: every NVFP4 Linear complete, and for W4A4 an
  // input global scale each (the reader's checks), the scheme the manifest says.
  auto reader = backends::open_artifact(q.artifact, ckpt->model);
  if (!reader) return refuse(reader.error().message);
  const bool manifest_w4a4 = m->options().scheme() == "w4a4" || m->options().scheme() == "mxfp4";
  if (reader->w4a4() != manifest_w4a4)
    return refuse(q.artifact + ": the manifest says scheme " + m->options().scheme() + " but the artifact's config is " +
                  (reader->w4a4() ? "W4A4" : "W4A16"));

  // (b) Accuracy, as fp4c eval defines it.
  pipeline::EvalRequest er;
  er.model = q.reference;
  er.artifact = q.artifact;
  er.data = q.eval;
  {
    auto tokens = tools::token_set_options(q.tokens);
    if (!tokens) return refuse(tokens.error().message);
    er.tokens = *tokens;
    const auto precision = runtime::parse_precision(q.precision);
    if (!precision) return refuse("--precision '" + q.precision + "': not f32 or bf16");
    er.precision = *precision;
    const auto budget = pipeline::parse_size(q.memory_budget);
    if (!budget) return refuse("--memory-budget '" + q.memory_budget + "': not a size (e.g. 4GiB)");
    er.memory_budget = *budget;
  }
  er.device = q.device;
  er.threads = q.threads;
  er.per_layer = q.per_layer;
  er.record_in_manifest = false;   // verification.json holds the figures; the artifact stays as built
  if (q.progress) er.progress = tools::layer_progress();
  auto eval = pipeline::run_evaluation(er);
  if (!eval) return refuse(eval.error().message);
  *v.mutable_accuracy() = eval->accuracy;
  if (eval->accuracy.eval_hash().hex() != v.eval_hash().hex())
    return refuse(q.eval + ": the evaluation set changed while it was read");

  if (q.min_recovery)
    check_threshold(out, "recovery", "--min-recovery", *q.min_recovery, eval->accuracy.recovery(), true);
  if (q.max_kl_mean)
    check_threshold(out, "kl_mean", "--max-kl-mean", *q.max_kl_mean, eval->accuracy.kl_mean(), false);
  if (q.max_kl_p99) check_threshold(out, "kl_p99", "--max-kl-p99", *q.max_kl_p99, eval->accuracy.kl_p99(), false);

  // (c) Speed and memory on the same device.
  if (perf) {
    SpeedOptions so;
    so.batch = q.batch;
    so.repetitions = q.repetitions;
    so.decode_m = q.decode_m;
    so.prefill_m = q.prefill_m;
    so.serving = q.serving;
    if (q.progress) so.progress = [](const std::string& what) { std::fprintf(stderr, "\rspeed: %-60s", what.c_str()); };
    auto p = measure_performance(*perf, *ckpt, *reader, so);
    if (q.progress) std::fprintf(stderr, "\n");
    if (!p) return refuse("speed and memory on " + q.device + ": " + p.error().message);
    *v.mutable_performance() = std::move(*p);
  }

  return finish(out.failures.empty() ? kExitPass : kExitThreshold);
}

}  // namespace fp4c::verify
