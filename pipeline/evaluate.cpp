#include "pipeline/evaluate.h"

#include <omp.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <filesystem>
#include <map>
#include <optional>

#include "backends/artifact_reader.h"
#include "backends/manifest.h"
#include "frontend/checkpoint.h"
#include "runtime/checkpoint_weights.h"
#include "runtime/device.h"
#include "pipeline/artifact_weights.h"
#include "base/text.h"

namespace fp4c::pipeline {
namespace {
namespace fs = std::filesystem;


// The module of each (layer, role) Linear, from the IR the frontend classified.
std::string module_of(const ir::Model& model, int layer, ir::Role role) {
  for (const auto& t : model.tensors)
    if (t.role == role && t.layer && *t.layer == layer && t.kind == ir::ParamKind::Weight) return t.module;
  if (role == ir::Role::LmHead) return "lm_head";
  return "model.layers." + std::to_string(layer) + "." + std::string(ir::role_name(role));
}

}  // namespace

Expected<EvalOutcome> run_evaluation(const EvalRequest& o) {
  if (o.threads > 0) omp_set_num_threads(o.threads);
  if (o.per_layer && o.artifact.empty()) return make_error("--per-layer needs --artifact");
  auto ckpt = frontend::open_checkpoint(o.model);
  if (!ckpt) return ckpt.error();
  auto tokens = load_tokens(o.data, ckpt->dir, ckpt->model.config, o.tokens);
  if (!tokens) return tokens.error();

  std::optional<backends::compressed_tensors::ArtifactReader> artifact;
  if (!o.artifact.empty()) {
    auto a = backends::open_artifact(o.artifact, ckpt->model);   // either layout
    if (!a) return a.error();
    artifact.emplace(std::move(*a));
  }

  runtime::ForwardOptions fo;
  fo.precision = o.precision;
  fo.spill.memory_budget = o.memory_budget;
  const std::string precision(runtime::precision_name(o.precision));
  FP4C_ASSIGN(auto engine, runtime::make_engine(o.device, ckpt->model.config, fo));
  // Each tensor's mapped pages are handed back once converted: the whole checkpoint stays out of the RSS.
  runtime::CheckpointWeights reference(ckpt->model, ckpt->refs, /*release_pages=*/true);
  std::optional<ArtifactWeights> candidate;
  // An engine other than the CPU's multiplies the packed bytes themselves.
  if (artifact) candidate.emplace(ckpt->model, *artifact, /*with_packed=*/o.device != "cpu");

  quant::EvalOptions eo;
  eo.per_layer = o.per_layer;
  const auto t0 = std::chrono::steady_clock::now();
  auto result = quant::evaluate(*engine, reference, candidate ? &*candidate : nullptr, tokens->sequences, eo,
                                 o.progress);
  if (!result) return result.error();

  EvalOutcome out;
  out.seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  out.result = std::move(*result);
  out.config = ckpt->model.config;
  out.device = engine->device();
  out.fp4_path = engine->fp4_path();
  out.source_hash = tokens->source_hash;
  out.sequences = int64_t(tokens->sequences.size());
  out.tokens = tokens->total_tokens();
  const auto& r = out.result;
  for (const auto& l : r.layers)
    out.layers.push_back({module_of(ckpt->model, l.layer, l.role), l.role, l.layer, l.output_error});

  if (artifact) {
    auto& acc = out.accuracy;
    // "cpu-f32" as before; a GPU by its name, with how its W4A4 products ran (native or emulated).
    acc.set_device(o.device == "cpu" ? "cpu-" + precision
                                     : out.device + "-" + precision + " (FP4 " + out.fp4_path + ")");
    acc.set_perplexity_reference(r.reference_perplexity);
    acc.set_perplexity(*r.perplexity);
    acc.set_recovery(*r.recovery);
    acc.set_kl_mean(*r.kl_mean);
    acc.set_kl_median(*r.kl_median);
    acc.set_kl_p99(*r.kl_p99);
    acc.set_top1_agreement(*r.top1_agreement);
    acc.set_tokens(uint64_t(r.predictions));
    *acc.mutable_eval_hash() = backends::to_proto(tokens->source_hash);
    for (const auto& l : out.layers) {
      auto* le = acc.add_layers();
      le->set_module(l.module);
      le->set_role(std::string(ir::role_name(l.role)));
      le->set_layer(l.layer);
      le->set_output_error(l.output_error);
    }
  }
  if (artifact && o.record_in_manifest) {
    const std::string path = (fs::path(o.artifact) / backends::kManifestFile).string();
    FP4C_ASSIGN(auto m, backends::read_manifest(path));
    *m.add_accuracy() = out.accuracy;
    FP4C_TRY(backends::write_manifest(m, path));
  }

  const double tokens_per_second = double(out.tokens) * (artifact ? 2 : 1) / out.seconds;
  out.json = nlohmann::json{{"predictions", r.predictions},
                            {"reference_nll", r.reference_nll},
                            {"reference_perplexity", r.reference_perplexity},
                            {"precision", precision},
                            {"device", out.device},
                            {"seconds", out.seconds},
                            {"tokens_per_second", tokens_per_second}};
  if (artifact) {
    out.json["nll"] = *r.nll;
    out.json["perplexity"] = *r.perplexity;
    out.json["recovery"] = *r.recovery;
    out.json["kl_mean"] = *r.kl_mean;
    out.json["kl_median"] = *r.kl_median;
    out.json["kl_p99"] = *r.kl_p99;
    out.json["top1_agreement"] = *r.top1_agreement;
    if (o.per_layer) {
      auto layers = nlohmann::json::array();
      for (const auto& l : out.layers)
        layers.push_back({{"module", l.module},
                          {"role", std::string(ir::role_name(l.role))},
                          {"layer", l.layer},
                          {"output_error", l.output_error}});
      out.json["layers"] = layers;
    }
  }

  std::string& t = out.table;
  t += format("%-10s %10s %14s %10s %10s %10s %10s %8s\n", "model", "perplexity", "total NLL", "recovery",
                     "KL mean", "KL median", "KL p99", "top-1");
  t += format("%-10s %10.6f %14.4f\n", "reference", r.reference_perplexity, r.reference_nll);
  if (artifact)
    t += format("%-10s %10.6f %14.4f %10.4f %10.5f %10.5f %10.5f %8.4f\n", "artifact", *r.perplexity, *r.nll,
                       *r.recovery, *r.kl_mean, *r.kl_median, *r.kl_p99, *r.top1_agreement);
  t += format("%lld predictions over %lld sequences, %s, %s, %.2f s\n", static_cast<long long>(r.predictions),
                     static_cast<long long>(out.sequences), out.device.c_str(), precision.c_str(), out.seconds);
  if (o.per_layer && !out.layers.empty()) {
    t += format("\n%-48s %-6s %5s %14s\n", "Linear", "role", "layer", "output error");
    for (const auto& l : out.layers)
      t += format("%-48s %-6s %5d %14.6g\n", l.module.c_str(), std::string(ir::role_name(l.role)).c_str(),
                         l.layer, l.output_error);
  }
  return out;
}

SubsetFigures subset_figures(const quant::EvalResult& r, size_t begin, size_t end) {
  SubsetFigures f;
  end = std::min(end, r.sequence_predictions.size());
  for (size_t s = begin; s < end; ++s) {
    f.sequences += 1;
    f.predictions += r.sequence_predictions[s];
    f.reference_nll += r.reference_sequence_nll[s];
    if (s < r.sequence_nll.size()) f.nll += r.sequence_nll[s];
  }
  if (f.predictions == 0) {   // nothing to measure (e.g. the first half of a one-sequence set)
    f.reference_perplexity = f.perplexity = f.recovery = NAN;
  } else {
    const double n = double(f.predictions);
    f.reference_perplexity = std::exp(f.reference_nll / n);
    f.perplexity = std::exp(f.nll / n);
    f.recovery = std::exp((f.nll - f.reference_nll) / -n);
  }
  return f;
}

std::array<SubsetFigures, 2> halves(const quant::EvalResult& r) {
  const size_t n = r.sequence_predictions.size();
  return {subset_figures(r, 0, n / 2), subset_figures(r, n / 2, n)};
}

}  // namespace fp4c::pipeline
