// The quantize driver: open the checkpoint, check the pipeline, load the calibration set, run the
// passes in order over a PassContext (the pass manager), and write the artifact's configs and manifest.
#include "pipeline/quantize.h"

#include <omp.h>

#include <algorithm>
#include <cstdio>
#include <filesystem>
#include <map>

#include "backends/artifact.h"
#include "backends/artifact_layout.h"
#include "backends/compressed_tensors/writer.h"
#include "backends/manifest.h"
#include "backends/modelopt/writer.h"
#include "frontend/checkpoint.h"
#include "base/stage_clock.h"
#include "passes/pack.h"
#include "passes/stats.h"
#include "passes/weight_plan.h"
#include "pipeline/distributed.h"
#include "pipeline/pipeline_text.h"
#include "pipeline/recipes.h"
#include "pipeline/sizes.h"
#include "runtime/checkpoint_weights.h"
#include "runtime/comm.h"

namespace fp4c::pipeline {
namespace {
namespace fs = std::filesystem;
namespace ct = backends::compressed_tensors;

std::string shape_text(const std::vector<int64_t>& shape) {
  std::string s = "[";
  for (size_t i = 0; i < shape.size(); ++i) s += (i ? "," : "") + std::to_string(shape[i]);
  return s + "]";
}

std::string plan_text(const ir::Model& model, const backends::Plan& plan, uint64_t source_bytes) {
  std::map<ir::TensorId, uint64_t> out_bytes;
  for (const auto& t : plan.tensors) out_bytes[t.source] += t.nbytes;
  std::string out;
  char line[512];
  std::snprintf(line, sizeof line, "%-58s %-8s %5s %-14s %-6s %12s  %s\n", "tensor", "role", "layer", "shape", "format",
                "bytes", "reason kept");
  out += line;
  for (ir::TensorId id = 0; id < model.tensors.size(); ++id) {
    const auto& t = model.tensors[id];
    const auto& d = model.annotations.decision[id];
    std::snprintf(line, sizeof line, "%-58s %-8s %5s %-14s %-6s %12llu  %s\n", t.name.c_str(),
                  std::string(ir::role_name(t.role)).c_str(), t.layer ? std::to_string(*t.layer).c_str() : "-",
                  shape_text(t.shape).c_str(), std::string(ir::format_name(d.format)).c_str(),
                  static_cast<unsigned long long>(out_bytes[id]),
                  d.skip && d.skip->kind != ir::SkipKind::NotLinear ? d.skip->detail.c_str() : "");
    out += line;
  }
  std::snprintf(line, sizeof line, "\nprojected artifact: %s of tensors in %zu shard(s) (source %s, ratio %.3f)\n",
                format_bytes(plan.total_bytes()).c_str(), plan.shards.size(), format_bytes(source_bytes).c_str(),
                source_bytes ? double(plan.total_bytes()) / double(source_bytes) : 0.0);
  out += line;
  for (const auto& sh : plan.shards) {
    std::snprintf(line, sizeof line, "  %s  %s\n", sh.file_name.c_str(), format_bytes(sh.bytes).c_str());
    out += line;
  }
  return out;
}

// Key of everything that decides a set of statistics: the model files, its rewrites, the calibration
// set and how it was selected and run.
struct StatsKey {
  std::string model_key, calibration_key, short_key;
};

// The source files: the safetensors files, or the GGUF file (whose image is a function of it).
std::vector<std::string> source_files(const frontend::LoadedCheckpoint& ckpt) {
  if (ckpt.source_format == frontend::SourceFormat::Gguf) return {ckpt.source_path};
  std::vector<std::string> out;
  for (const auto& f : ckpt.files.files()) out.push_back(f.path());
  return out;
}

Expected<std::string> model_files_key(const frontend::LoadedCheckpoint& ckpt) {
  hash::Hasher model_key;
  for (const std::string& path : source_files(ckpt)) {
    FP4C_ASSIGN(auto d, hash::hash_file(path));
    const std::string hex = d.hex();
    model_key.update(std::as_bytes(std::span(hex)));
  }
  FP4C_ASSIGN(auto d, hash::hash_file((fs::path(ckpt.dir) / "config.json").string()));
  const std::string hex = d.hex();
  model_key.update(std::as_bytes(std::span(hex)));
  return model_key.digest().hex();
}

StatsKey stats_key(const std::string& files_key, const ir::Model& model, const QuantizeRequest& o,
                   const frontend::TokenSet& tokens, bool second_moments, bool all_experts = false) {
  // `tokens` may be the fit part of the set (auto holds sequences out): its count is part of the key.
  // The rewrites passes made: a smoothed model has other statistics than the checkpoint.
  hash::Hasher rewrites;
  bool any = false;
  for (ir::TensorId id = 0; id < model.tensors.size(); ++id) {
    if (!model.transformed(id)) continue;
    any = true;
    rewrites.update(std::as_bytes(std::span(&id, 1)));
    const auto& a = model.annotations;
    if (id < a.channel_scale.size()) rewrites.update(std::as_bytes(std::span(a.channel_scale[id])));
    rewrites.update(std::as_bytes(std::span("|", 1)));
    if (id < a.row_scale.size()) rewrites.update(std::as_bytes(std::span(a.row_scale[id])));
  }
  StatsKey k;
  const std::string rewritten_key = files_key + "|" + rewrites.digest().hex();
  k.model_key = any ? hash::xxh3_128(std::as_bytes(std::span(rewritten_key))).hex() : files_key;
  const std::string calib_text = tokens.source_hash.hex() + "|" + std::to_string(o.tokens.samples) + "|" +
                                 std::to_string(o.tokens.seq_len) + "|" + std::to_string(o.tokens.seed) + "|" +
                                 packing_name(o.tokens.packing) + "|" + std::string(runtime::precision_name(o.precision)) + "|" +
                                 (second_moments ? "m2" : "") + (all_experts ? "|all-experts" : "") + "|" +
                                 std::to_string(tokens.sequences.size()) + "|blocks" +
                                 std::to_string(passes::kMaxCalibrationBlocks);
  k.calibration_key = hash::xxh3_128(std::as_bytes(std::span(calib_text))).hex();
  k.short_key = k.model_key.substr(0, 16) + "-" + k.calibration_key.substr(0, 16);
  return k;
}

runtime::ForwardOptions forward_options(const QuantizeRequest& o) {
  runtime::ForwardOptions fo;
  fo.precision = o.precision;
  fo.spill.memory_budget = o.memory_budget;
  return fo;
}

// Rank 0's cached statistics (or none) on every rank.
Status share_cached(runtime::Comm& comm, const StatsKey& key, const std::string& precision,
                    std::optional<passes::ActivationStats>& cached) {
  std::string bytes;
  if (comm.rank() == 0 && cached) bytes = "1" + passes::pack_sites(*cached);
  FP4C_TRY(comm.broadcast(bytes));
  if (comm.rank() != 0 && !bytes.empty()) {
    FP4C_ASSIGN(auto s, passes::unpack_sites(bytes.substr(1)));
    s.model_key = key.model_key;
    s.calibration_key = key.calibration_key;
    s.precision = precision;
    cached = std::move(s);
  }
  return {};
}

// Statistics of the model as now rewritten: from the process's memo, the cache directory, or a
// layer-by-layer run over the calibration set (then kept in both).
Expected<StatsResult> collect(const QuantizeRequest& o, const frontend::LoadedCheckpoint& ckpt,
                              const std::string& files_key, const frontend::TokenSet& tokens,
                              const passes::StatsOptions& so, const PassContext& ctx) {
  const StatsKey key = stats_key(files_key, ckpt.model, o, tokens, so.second_moments, so.all_experts);
  StatsResult r;
  r.key = key.short_key;
  if (o.memo) {
    auto it = o.memo->by_key.find(key.short_key);
    if (it != o.memo->by_key.end()) {
      r.stats = it->second;
      r.from_cache = true;
      return r;
    }
  }
  const std::string cache_path =
      o.stats_cache.empty() ? "" : (fs::path(o.stats_cache) / (key.short_key + ".fp4c-stats")).string();
  std::error_code ec;
  std::optional<passes::ActivationStats> cached;
  // Under MPI rank 0 reads and writes the cache; the others get what it found.
  runtime::Comm& comm = runtime::Comm::world();
  if (comm.rank() == 0 && !cache_path.empty() && fs::exists(cache_path, ec)) {
    // A cache that cannot be used is moved aside and recomputed, not a failed build: a CI cache
    // directory outlives crashes, full disks and older fp4c versions.
    auto loaded = passes::load_stats(cache_path);
    std::string why;
    if (!loaded) why = loaded.error().message;
    else if (loaded->model_key != key.model_key || loaded->calibration_key != key.calibration_key)
      why = cache_path + ": statistics were made for another model or calibration set";
    if (why.empty()) {
      cached = std::move(loaded).value();
    } else {
      const std::string aside = cache_path + ".unusable";
      fs::rename(cache_path, aside, ec);
      ctx.note("warning: " + why + "; " + (ec ? "cannot move it aside (" + ec.message() + ")" : "moved it to " + aside) +
               ", recomputing the statistics");
    }
  }
  if (comm.distributed()) FP4C_TRY(share_cached(comm, key, std::string(runtime::precision_name(o.precision)), cached));
  if (cached) {
    r.stats = std::make_shared<const passes::ActivationStats>(std::move(*cached));
    r.from_cache = true;
  } else {
    passes::StatsOptions options = so;
    if (!ctx.checkpoint_dir.empty()) {
      options.checkpoint_dir = (fs::path(ctx.checkpoint_dir) / ("stats-" + key.short_key)).string();
      const int layers = int(ckpt.model.config.num_hidden_layers);
      if (const int done = passes::checkpointed_layers(options.checkpoint_dir, layers); done > 0 && comm.rank() == 0)
        ctx.note("--checkpoint: statistics of layers 0-" + std::to_string(done - 1) + " from " + options.checkpoint_dir +
                 (done < layers ? "; continuing at layer " + std::to_string(done) : ""));
    }
    runtime::ForwardOptions fo = forward_options(o);
    fo.moe_all_experts = so.all_experts;
    runtime::Forward forward(ckpt.model.config, fo);
    runtime::CheckpointWeights weights(ckpt.model, ckpt.refs, /*release_pages=*/true);
    FP4C_ASSIGN(auto s, passes::collect_stats(forward, weights, tokens.sequences, options,
                                              ctx.progress("calibrating", double(tokens.total_tokens())), comm));
    s.model_key = key.model_key;
    s.calibration_key = key.calibration_key;
    s.precision = std::string(runtime::precision_name(o.precision));
    if (!cache_path.empty() && comm.rank() == 0) {
      fs::create_directories(o.stats_cache, ec);
      FP4C_TRY(passes::save_stats(s, cache_path));
    }
    r.stats = std::make_shared<const passes::ActivationStats>(std::move(s));
  }
  if (o.memo) o.memo->by_key[key.short_key] = r.stats;
  return r;
}

Expected<std::vector<backends::WrittenFile>> hash_inputs(const frontend::LoadedCheckpoint& ckpt,
                                                          const passes::PackResult& packed) {
  std::vector<backends::WrittenFile> out;
  auto add_file = [&](const std::string& name) -> Status {
    fs::path p = fs::path(ckpt.dir) / name;
    std::error_code ec;
    if (!fs::is_regular_file(p, ec)) return {};
    backends::WrittenFile f{name, 0, {}};
    FP4C_ASSIGN(f.hash, hash::hash_file(p.string(), &f.bytes));
    out.push_back(std::move(f));
    return {};
  };
  if (ckpt.source_format == frontend::SourceFormat::Gguf) {
    // The GGUF file is the input (its image in the scratch directory is fp4c's own).
    backends::WrittenFile f{fs::path(ckpt.source_path).filename().string(), 0, {}};
    FP4C_ASSIGN(f.hash, hash::hash_file(ckpt.source_path, &f.bytes));
    out.push_back(std::move(f));
    return out;
  }
  FP4C_TRY(add_file("config.json"));
  if (ckpt.files.sharded()) FP4C_TRY(add_file("model.safetensors.index.json"));
  for (size_t i = 0; i < ckpt.files.files().size(); ++i) {
    const auto& f = ckpt.files.files()[i];
    out.push_back({fs::path(f.path()).filename().string(), f.file_size(), packed.input_file_hashes[i]});
  }
  for (const char* name : backends::auxiliary_file_names())
    FP4C_TRY(add_file(name));
  return out;
}

Expected<Pipeline> choose_pipeline(const QuantizeRequest& o, std::string* recipe_name,
                                   std::optional<passes::Scheme>* scheme) {
  if (!o.passes.empty() && !o.recipe.empty()) return make_error("give --passes or --recipe, not both");
  std::string text;
  if (!o.recipe.empty()) {
    FP4C_ASSIGN(auto r, resolve_recipe(o.recipe));
    *recipe_name = r.name == o.recipe ? r.name : r.name + " (" + o.recipe + ")";
    if (!r.scheme.empty()) {
      const std::optional<passes::Scheme> recipe_scheme = passes::parse_scheme(r.scheme);
      if (!*scheme) *scheme = recipe_scheme;
      if (*scheme != recipe_scheme)
        return make_error("recipe '" + r.name + "' is for " + r.scheme + ", but --scheme " +
                          std::string(passes::scheme_name(**scheme)) + " was given");
    }
    text = r.pipeline;
  } else {
    text = !o.passes.empty() ? o.passes : o.calib.empty() ? "blockscale,pack" : "stats,blockscale,pack";
  }
  auto p = parse_pipeline(text);
  if (!p) return make_error(std::string(o.recipe.empty() ? "--passes: " : "--recipe: ") + p.error().message);
  return p;
}

}  // namespace

std::string_view format_name(ArtifactFormat f) {
  return f == ArtifactFormat::ModelOpt ? "modelopt" : "compressed-tensors";
}

std::optional<ArtifactFormat> parse_format(std::string_view name) {
  if (name == "compressed-tensors") return ArtifactFormat::CompressedTensors;
  if (name == "modelopt") return ArtifactFormat::ModelOpt;
  return std::nullopt;
}

Expected<QuantizeOutcome> quantize(const QuantizeRequest& o) {
  if (o.threads > 0) omp_set_num_threads(o.threads);
  const int threads = o.threads > 0 ? o.threads : omp_get_max_threads();
  const bool modelopt = o.format == ArtifactFormat::ModelOpt;
  for (const auto& name : o.print_after)
    if (!find_pass(name)) {
      std::string names;
      for (const auto& p : pass_registry()) names += (names.empty() ? "" : ", ") + p.name;
      return make_error("--print-after: unknown pass '" + name + "' (valid: " + names + ")");
    }

  // The pipeline: given, a recipe's, or the default. Checked before any weight is read.
  std::string recipe_name;
  std::optional<passes::Scheme> chosen_scheme = o.scheme;
  FP4C_ASSIGN(Pipeline pipeline, choose_pipeline(o, &recipe_name, &chosen_scheme));
  const passes::Scheme scheme =
      chosen_scheme ? *chosen_scheme : o.calib.empty() ? passes::Scheme::W4A16 : passes::Scheme::W4A4;
  if (scheme == passes::Scheme::W4A4 && o.calib.empty())
    return make_error("--scheme w4a4 needs a calibration set (--calib FILE) for its input global scales");
  const bool mxfp4 = passes::is_mxfp4(scheme);
  if (mxfp4 && modelopt)
    return make_error("--format modelopt with --scheme " + std::string(passes::scheme_name(scheme)) +
                      ": fp4c writes ModelOpt's Hugging Face layout for NVFP4 only; use --format compressed-tensors "
                      "(mxfp4-pack-quantized) for MXFP4");
  FP4C_TRY(check_pipeline(pipeline, scheme, !o.calib.empty()));

  std::vector<StageCostFigures> stages;
  StageClock open_clock("open");
  FP4C_ASSIGN(frontend::LoadedCheckpoint ckpt, frontend::open_checkpoint(o.model));
  ir::Model& model = ckpt.model;
  Reporter report = o.report;
  PassContext ctx{ckpt, model};
  ctx.scheme = scheme;
  ctx.ignore = o.ignore;
  ctx.forward = forward_options(o);
  ctx.out = o.out;
  ctx.force = o.force;
  // Under MPI every rank runs the passes (each its share of the forward and of pack's quantizers);
  // rank 0 writes the artifact (pipeline/passes/pack.cpp).
  runtime::Comm& comm = runtime::Comm::world();
  ctx.report = &report;
  std::optional<frontend::TokenSet> tokens;
  std::string files_key;
  if (!o.calib.empty() && !o.dry_run) {
    FP4C_ASSIGN(tokens, load_tokens(o.calib, ckpt.dir, model.config, o.tokens));
    ctx.calibration = &*tokens;
    for (const PassInvocation& inv : pipeline.passes)
      if (const PassDefinition* d = find_definition(inv.name); d->prepare) FP4C_TRY(d->prepare(inv, ctx));
    FP4C_ASSIGN(files_key, model_files_key(ckpt));
  }
  if (!o.checkpoint.empty() && !o.dry_run) {
    if (files_key.empty()) {
      FP4C_ASSIGN(files_key, model_files_key(ckpt));
    }
    std::string ignore;
    for (const auto& r : o.ignore) ignore += (ignore.empty() ? "" : " ") + r;
    const std::vector<std::pair<std::string, std::string>> fingerprint = {
        {"fp4c", FP4C_VERSION},
        {"--model (its files)", files_key},
        {"--calib (its contents)", tokens ? tokens->source_hash.hex() : ""},
        {"--calib-samples", std::to_string(o.tokens.samples)},
        {"--seq-len", std::to_string(o.tokens.seq_len)},
        {"--seed", std::to_string(o.tokens.seed)},
        {"--packing", packing_name(o.tokens.packing)},
        {"--precision", std::string(runtime::precision_name(o.precision))},
        {"--scheme", std::string(passes::scheme_name(scheme))},
        {"--passes/--recipe (canonical)", pipeline.canonical()},
        {"--format", std::string(format_name(o.format))},
        {"--ignore", ignore},
        {"--max-shard-size", o.max_shard_size ? std::to_string(*o.max_shard_size) : ""}};
    FP4C_TRY(check_checkpoint(o.checkpoint, fingerprint, comm));
    ctx.checkpoint_dir = o.checkpoint;
  }
  ctx.compute_stats = [&](const passes::StatsOptions& so) {
    return collect(o, ckpt, files_key, *tokens, so, ctx);
  };
  stages.push_back(open_clock.stop());

  ctx.layout.max_shard_size = o.max_shard_size;
  ctx.layout.source_sharded = ckpt.files.sharded();
  if (modelopt) ctx.layout.names = backends::modelopt_names();   // same plan and bytes, ModelOpt's names
  uint64_t source_bytes = 0;
  for (const auto& r : ckpt.refs) {
    ctx.layout.source_file_of_tensor.push_back(fs::path(r.file->path()).filename().string());
    source_bytes += r.entry->nbytes();
  }
  QuantizeOutcome outcome;
  outcome.pipeline = pipeline.canonical();
  outcome.scheme = scheme;
  outcome.threads = threads;
  outcome.source_bytes = source_bytes;
  if (o.dry_run) {
    // The plan as far as it is known without running anything (W4A4 scales come from statistics).
    passes::WeightPlanOptions plan_options{mxfp4 ? passes::Scheme::Mxfp4A16 : passes::Scheme::W4A16, o.ignore,
                                           nullptr};
    FP4C_TRY(passes::plan_weights(model, plan_options));
    outcome.plan = plan_text(model, backends::plan_layout(model, ctx.layout), source_bytes);
    std::error_code ec;
    outcome.out_exists = fs::exists(o.out, ec);
    return outcome;
  }

  // The pass manager: each pass at its place; what a pass invalidates is dropped from the analysis cache.
  std::map<std::string, int> runs;
  for (const PassInvocation& inv : pipeline.passes) {
    const PassDefinition& def = *find_definition(inv.name);
    const std::unique_ptr<Pass> pass = def.create(inv);
    const int run = ++runs[inv.name];
    StageClock clock(run == 1 ? inv.name : inv.name + "#" + std::to_string(run));
    ctx.bytes_read = ctx.bytes_written = 0;
    FP4C_TRY(pass->run(ctx));
    for (const std::string& stale : def.spec.invalidates)
      if (stale == "stats") ctx.stats.reset();
    stages.push_back(clock.stop(ctx.bytes_read, ctx.bytes_written));
    if (report.after_pass && std::find(o.print_after.begin(), o.print_after.end(), inv.name) != o.print_after.end())
      report.after_pass(inv.name, run, pass->describe(ctx));
  }

  if (comm.rank() != 0) return outcome;   // rank 0 writes the configs and the manifest

  StageClock finish_clock("finalize");
  std::vector<backends::WrittenFile> outputs = ctx.writer->files();
  const std::string source_config = (fs::path(ckpt.dir) / "config.json").string();
  const bool w4a4 = passes::quantizes_activations(scheme);
  if (modelopt) {
    FP4C_ASSIGN(auto configs, backends::modelopt::write_configs(source_config, ctx.staging->path(), model, w4a4,
                                                                FP4C_VERSION));
    outputs.insert(outputs.end(), configs.begin(), configs.end());
  } else {
    FP4C_ASSIGN(auto config, ct::write_config(source_config, ctx.staging->path(), model, w4a4, mxfp4));
    outputs.push_back(config);
  }
  FP4C_ASSIGN(auto aux, backends::copy_auxiliary_files(ckpt.dir, ctx.staging->path()));
  outputs.insert(outputs.end(), aux.begin(), aux.end());
  FP4C_ASSIGN(auto inputs, hash_inputs(ckpt, *ctx.packed));
  uint64_t written = 0;
  for (const auto& f : outputs) written += f.bytes;
  stages.push_back(finish_clock.stop(0, written - ctx.writer->bytes_written()));

  backends::ManifestInputs mi;
  mi.tool_version = FP4C_VERSION;
  mi.command_line = o.command_line;
  mi.model_dir = fs::absolute(o.model).lexically_normal().string();
  mi.source_format = std::string(frontend::source_format_name(ckpt.source_format));
  mi.dequantized_types = ckpt.dequantized_types;
  for (const ir::TensorInfo& t : ckpt.model.tensors)
    if (t.kept_as) mi.kept_tensors_written_as = std::string(dtype_name(*t.kept_as));
  if (!ckpt.source_path.empty()) mi.source_file = fs::path(ckpt.source_path).filename().string();
  mi.options.set_scheme(std::string(passes::scheme_name(scheme)));
  if (ctx.first_stats) {
    auto* c = mi.options.mutable_calibration();
    c->set_path(o.calib);
    *c->mutable_hash() = backends::to_proto(tokens->source_hash);
    c->set_samples_requested(o.tokens.samples);
    c->set_samples(int64_t(tokens->sequences.size()));
    c->set_tokens(tokens->total_tokens());
    c->set_seq_len(o.tokens.seq_len);
    c->set_seed(o.tokens.seed);
    c->set_packing(packing_name(o.tokens.packing));
    c->set_precision(std::string(runtime::precision_name(o.precision)));
    c->set_stats_from_cache(ctx.first_stats->from_cache);
    c->set_stats_key(ctx.first_stats->key);
  }
  for (const auto& r : o.ignore) mi.options.add_ignore(r);
  mi.options.set_threads(threads);
  mi.options.set_max_shard_size(o.max_shard_size.value_or(0));
  mi.options.set_format(std::string(format_name(o.format)));
  mi.options.set_pipeline(pipeline.canonical());
  mi.inputs = std::move(inputs);
  mi.outputs = outputs;
  mi.output_tensors = ctx.writer->tensors();
  for (const auto& t : ctx.plan->tensors) mi.outputs_of_source.emplace_back(t.source, t.name);
  mi.stages = stages;
  mi.threads = threads;
  mi.price_per_hour = o.price_per_hour;
  outcome.manifest = backends::build_manifest(model, mi);
  if (!recipe_name.empty()) outcome.manifest.set_recipe(recipe_name);
  FP4C_TRY(backends::write_manifest(outcome.manifest,
                                    (fs::path(ctx.staging->path()) / backends::kManifestFile).string()));
  FP4C_TRY(ctx.staging->commit());

  for (const auto& p : model.annotations.packed)
    if (p) outcome.sqnr_db.push_back(p->error.sqnr_db);
  std::sort(outcome.sqnr_db.begin(), outcome.sqnr_db.end());
  outcome.quantized = outcome.sqnr_db.size();
  outcome.tensors = model.tensors.size();
  for (const auto& s : stages) {
    outcome.wall_seconds += s.wall_seconds;
    if (s.stage == "pack") outcome.pack_seconds = s.wall_seconds;
  }
  return outcome;
}

}  // namespace fp4c::pipeline
