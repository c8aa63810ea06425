// fp4c quantize: a BF16 Hugging Face checkpoint in, an NVFP4 compressed-tensors artifact and its
// manifest out.
#include <omp.h>
#include <unistd.h>

#include <chrono>

#include <algorithm>
#include <cstdio>
#include <filesystem>
#include <iostream>
#include <map>

#include "backends/artifact.h"
#include "backends/compressed_tensors/writer.h"
#include "backends/manifest.h"
#include "frontend/checkpoint.h"
#include "ir/cost.h"
#include "passes/pack.h"
#include "passes/pipeline.h"
#include "passes/stats.h"
#include "passes/weight_plan.h"
#include "runtime/checkpoint_weights.h"
#include "tools/fp4c/calibration_input.h"
#include "tools/fp4c/commands.h"
#include "tools/fp4c/size_option.h"

namespace fp4c::tools {
namespace {
namespace fs = std::filesystem;
namespace ct = backends::compressed_tensors;

struct QuantizeOptions {
  std::string model;
  std::string out;
  std::string scheme;   // "w4a16" or "w4a4"; empty: w4a4 with --calib, else w4a16
  std::string calib;
  TokenSetOptions tokens;
  std::string stats_cache;
  std::string precision = "f32";
  std::string memory_budget = "4GiB";
  std::string passes;   // pipeline text; empty: the default for the scheme
  std::vector<std::string> ignore;
  int threads = 0;
  std::string max_shard_size;
  bool dry_run = false;
  bool force = false;
  bool quiet = false;
  double price_per_hour = 0;
};

int fail(const Error& e) {
  std::fprintf(stderr, "fp4c quantize: error: %s\n", e.message.c_str());
  return 1;
}

std::string shape_text(const std::vector<int64_t>& shape) {
  std::string s = "[";
  for (size_t i = 0; i < shape.size(); ++i) s += (i ? "," : "") + std::to_string(shape[i]);
  return s + "]";
}

void print_plan(const ir::Model& model, const ct::Plan& plan, uint64_t source_bytes) {
  std::map<ir::TensorId, uint64_t> out_bytes;
  for (const auto& t : plan.tensors) out_bytes[t.source] += t.nbytes;
  std::printf("%-58s %-8s %5s %-14s %-6s %12s  %s\n", "tensor", "role", "layer", "shape", "format",
              "bytes", "reason kept");
  for (ir::TensorId id = 0; id < model.tensors.size(); ++id) {
    const auto& t = model.tensors[id];
    const auto& d = model.annotations.decision[id];
    std::printf("%-58s %-8s %5s %-14s %-6s %12llu  %s\n", t.name.c_str(),
                std::string(ir::role_name(t.role)).c_str(),
                t.layer ? std::to_string(*t.layer).c_str() : "-", shape_text(t.shape).c_str(),
                std::string(ir::format_name(d.format)).c_str(),
                static_cast<unsigned long long>(out_bytes[id]),
                d.skip && d.skip->kind != ir::SkipKind::NotLinear ? d.skip->detail.c_str() : "");
  }
  std::printf("\nprojected artifact: %s of tensors in %zu shard(s) (source %s, ratio %.3f)\n",
              format_bytes(plan.total_bytes()).c_str(), plan.shards.size(),
              format_bytes(source_bytes).c_str(),
              source_bytes ? double(plan.total_bytes()) / double(source_bytes) : 0.0);
  for (const auto& s : plan.shards)
    std::printf("  %s  %s\n", s.file_name.c_str(), format_bytes(s.bytes).c_str());
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

// Statistics for W4A4: from the cache when it holds them for this model and calibration set, else
// collected by running the model layer by layer over the set (and cached).
struct Calibrated {
  passes::ActivationStats stats;
  frontend::TokenSet tokens;
  bool from_cache = false;
  std::string key;
};

Expected<Calibrated> calibrate(const QuantizeOptions& o, const frontend::LoadedCheckpoint& ckpt,
                               const passes::StatsOptions& stats_options) {
  Calibrated c;
  FP4C_ASSIGN(c.tokens, load_tokens(o.calib, o.model, ckpt.model.config, o.tokens));
  // Keys: every model file's hash, and the calibration file's hash with the selection options.
  hash::Hasher model_key;
  for (const auto& f : ckpt.files.files()) {
    FP4C_ASSIGN(auto d, hash::hash_file(f.path()));
    const std::string hex = d.hex();
    model_key.update(std::as_bytes(std::span(hex)));
  }
  {
    FP4C_ASSIGN(auto d, hash::hash_file((fs::path(o.model) / "config.json").string()));
    const std::string hex = d.hex();
    model_key.update(std::as_bytes(std::span(hex)));
  }
  const std::string calib_text = c.tokens.source_hash.hex() + "|" + std::to_string(o.tokens.samples) + "|" +
                                 std::to_string(o.tokens.seq_len) + "|" + std::to_string(o.tokens.seed) + "|" +
                                 o.tokens.packing + "|" + o.precision + "|" +
                                 (stats_options.second_moments ? "m2" : "");
  const std::string mk = model_key.digest().hex();
  const std::string ck = hash::xxh3_128(std::as_bytes(std::span(calib_text))).hex();
  c.key = mk.substr(0, 16) + "-" + ck.substr(0, 16);
  const std::string cache_path =
      o.stats_cache.empty() ? "" : (fs::path(o.stats_cache) / (c.key + ".fp4c-stats")).string();
  std::error_code ec;
  if (!cache_path.empty() && fs::exists(cache_path, ec)) {
    FP4C_ASSIGN(c.stats, passes::load_stats(cache_path));
    if (c.stats.model_key != mk || c.stats.calibration_key != ck)
      return make_error(cache_path + ": statistics were made for another model or calibration set");
    c.from_cache = true;
    return c;
  }

  runtime::ForwardOptions fo;
  fo.precision = o.precision == "bf16" ? runtime::Precision::BF16 : runtime::Precision::F32;
  const auto budget = parse_size(o.memory_budget);
  if (!budget) return make_error("--memory-budget '" + o.memory_budget + "': not a size (e.g. 4GiB)");
  fo.spill.memory_budget = *budget;
  runtime::Forward forward(ckpt.model.config, fo);
  runtime::CheckpointWeights weights(ckpt.model, ckpt.refs, /*release_pages=*/true);
  const bool tty = isatty(fileno(stderr)) && !o.quiet;
  const auto t0 = std::chrono::steady_clock::now();
  const double tokens = double(c.tokens.total_tokens());
  FP4C_ASSIGN(c.stats, passes::collect_stats(forward, weights, c.tokens.sequences, stats_options,
                                             [&](int layer, int layers) {
                                               if (!tty) return;
                                               const double s = std::chrono::duration<double>(
                                                   std::chrono::steady_clock::now() - t0).count();
                                               std::fprintf(stderr, "\rcalibrating: layer %d of %d, %.0f tokens/s, %.0f s left   ",
                                                            layer, layers, tokens * layer / layers / s,
                                                            s / layer * (layers - layer));
                                               if (layer == layers) std::fprintf(stderr, "\n");
                                             }));
  c.stats.model_key = mk;
  c.stats.calibration_key = ck;
  c.stats.precision = o.precision;
  if (!cache_path.empty()) {
    fs::create_directories(o.stats_cache, ec);
    FP4C_TRY(passes::save_stats(c.stats, cache_path));
  }
  return c;
}

int run_quantize(const QuantizeOptions& o, const CommandLine& cl) {
  if (o.threads > 0) omp_set_num_threads(o.threads);
  const int threads = o.threads > 0 ? o.threads : omp_get_max_threads();
  std::optional<uint64_t> max_shard;
  if (!o.max_shard_size.empty()) {
    max_shard = parse_size(o.max_shard_size);
    if (!max_shard) return fail(make_error("--max-shard-size '" + o.max_shard_size + "': not a size (e.g. 5GB, 500MB, 2GiB)"));
  }

  std::vector<StageCostFigures> stages;
  StageClock open_clock("open");
  auto loaded = frontend::open_checkpoint(o.model);
  if (!loaded) return fail(loaded.error());
  auto& ckpt = *loaded;
  ir::Model& model = ckpt.model;
  const passes::Scheme scheme = o.scheme.empty() ? (o.calib.empty() ? passes::Scheme::W4A16 : passes::Scheme::W4A4)
                                : o.scheme == "w4a4" ? passes::Scheme::W4A4 : passes::Scheme::W4A16;
  if (scheme == passes::Scheme::W4A4 && o.calib.empty())
    return fail(make_error("--scheme w4a4 needs a calibration set (--calib FILE) for its input global scales"));
  stages.push_back(open_clock.stop());

  // The pipeline: given, or the default. Checked before any weight is read.
  const std::string pipeline_text =
      !o.passes.empty() ? o.passes : o.calib.empty() ? "blockscale,pack" : "stats,blockscale,pack";
  auto pipeline = passes::parse_pipeline(pipeline_text);
  if (!pipeline) return fail(make_error("--passes: " + pipeline.error().message));
  const bool run_stats = pipeline->find("stats") != nullptr;
  if (run_stats && o.calib.empty()) return fail(make_error("--passes: pass 'stats' needs a calibration set (--calib FILE)"));
  if (!pipeline->find("pack")) return fail(make_error("--passes: the pipeline must end in 'pack' to write an artifact"));
  if (pipeline->find("blockscale")->option("rule") == "weighted" && !run_stats)
    return fail(make_error("--passes: blockscale{rule=weighted} needs the 'stats' pass (and --calib)"));
  if (scheme == passes::Scheme::W4A4 && !run_stats)
    return fail(make_error("--scheme w4a4 needs the 'stats' pass in the pipeline for its input global scales"));

  std::optional<Calibrated> calibrated;
  if (run_stats && !o.dry_run) {
    StageClock clock("calibrate");
    passes::StatsOptions so;
    so.second_moments = pipeline->find("stats")->option("second_moments") == "true";
    auto c = calibrate(o, ckpt, so);
    if (!c) return fail(c.error());
    calibrated.emplace(std::move(*c));
    stages.push_back(clock.stop());
  }

  passes::WeightPlanOptions plan_options{scheme, o.ignore, calibrated ? &calibrated->stats : nullptr};
  if (scheme == passes::Scheme::W4A4 && o.dry_run) plan_options.scheme = passes::Scheme::W4A16;  // scales unknown yet
  if (auto st = passes::plan_weights(model, plan_options); !st) return fail(st.error());

  ct::LayoutOptions layout;
  layout.max_shard_size = max_shard;
  layout.source_sharded = ckpt.files.sharded();
  uint64_t source_bytes = 0;
  for (const auto& r : ckpt.refs) {
    layout.source_file_of_tensor.push_back(fs::path(r.file->path()).filename().string());
    source_bytes += r.entry->nbytes();
  }
  ct::Plan plan = ct::plan_layout(model, layout);
  if (o.dry_run) {
    print_plan(model, plan, source_bytes);
    std::error_code ec;
    if (fs::exists(o.out, ec) && !o.force)
      std::printf("note: %s exists; a real run needs --force to replace it\n", o.out.c_str());
    return 0;
  }

  auto staging = backends::StagingDir::create(o.out, o.force);
  if (!staging) return fail(staging.error());

  StageClock pack_clock("pack");
  ct::Writer writer(staging->path(), plan);
  passes::PackOptions pack_options;
  pack_options.rule = *nvfp4::parse_scale_rule(pipeline->find("blockscale")->option("rule"));
  pack_options.stats = calibrated ? &calibrated->stats : nullptr;
  auto packed = passes::pack_weights(model, ckpt.files, ckpt.refs, writer, pack_options);
  if (!packed) return fail(packed.error());
  if (auto st = writer.finish(); !st) return fail(st.error());
  stages.push_back(pack_clock.stop(packed->bytes_read, writer.bytes_written()));

  StageClock finish_clock("finalize");
  std::vector<backends::WrittenFile> outputs = writer.files();
  auto config = ct::write_config((fs::path(o.model) / "config.json").string(), staging->path(), model,
                                 scheme == passes::Scheme::W4A4);
  if (!config) return fail(config.error());
  outputs.push_back(*config);
  auto aux = backends::copy_auxiliary_files(o.model, staging->path());
  if (!aux) return fail(aux.error());
  outputs.insert(outputs.end(), aux->begin(), aux->end());
  auto inputs = hash_inputs(ckpt, *packed);
  if (!inputs) return fail(inputs.error());
  uint64_t written = 0;
  for (const auto& f : outputs) written += f.bytes;
  stages.push_back(finish_clock.stop(0, written - writer.bytes_written()));

  backends::ManifestInputs mi;
  mi.tool_version = FP4C_VERSION;
  mi.command_line = cl.joined();
  mi.model_dir = fs::absolute(o.model).lexically_normal().string();
  mi.options.set_scheme(std::string(passes::scheme_name(scheme)));
  if (calibrated) {
    auto* c = mi.options.mutable_calibration();
    c->set_path(o.calib);
    *c->mutable_hash() = backends::to_proto(calibrated->tokens.source_hash);
    c->set_samples_requested(o.tokens.samples);
    c->set_samples(int64_t(calibrated->tokens.sequences.size()));
    c->set_tokens(calibrated->tokens.total_tokens());
    c->set_seq_len(o.tokens.seq_len);
    c->set_seed(o.tokens.seed);
    c->set_packing(o.tokens.packing);
    c->set_precision(o.precision);
    c->set_stats_from_cache(calibrated->from_cache);
    c->set_stats_key(calibrated->key);
  }
  for (const auto& r : o.ignore) mi.options.add_ignore(r);
  mi.options.set_threads(threads);
  mi.options.set_max_shard_size(max_shard.value_or(0));
  mi.options.set_format("compressed-tensors");
  mi.options.set_pipeline(pipeline->canonical());
  mi.inputs = std::move(*inputs);
  mi.outputs = outputs;
  mi.output_tensors = writer.tensors();
  for (const auto& t : plan.tensors) mi.outputs_of_source.emplace_back(t.source, t.name);
  mi.stages = stages;
  mi.threads = threads;
  mi.price_per_hour = o.price_per_hour;
  auto manifest = backends::build_manifest(model, mi);
  if (auto st = backends::write_manifest(manifest, (fs::path(staging->path()) / backends::kManifestFile).string()); !st)
    return fail(st.error());
  if (auto st = staging->commit(); !st) return fail(st.error());

  if (!o.quiet) {
    std::vector<double> sqnr;
    for (const auto& p : model.annotations.packed)
      if (p) sqnr.push_back(p->error.sqnr_db);
    std::sort(sqnr.begin(), sqnr.end());
    const auto& mem = manifest.memory();
    double wall = 0, pack_wall = 0;
    for (const auto& s : stages) {
      wall += s.wall_seconds;
      if (s.stage == "pack") pack_wall = s.wall_seconds;
    }
    std::printf("fp4c quantize: %zu Linear(s) to NVFP4, %zu tensor(s) kept; %s -> %s (%.2f bits per Linear weight)\n",
                sqnr.size(), model.tensors.size() - sqnr.size(), format_bytes(mem.source_bytes()).c_str(),
                format_bytes(mem.artifact_bytes()).c_str(), mem.effective_bits_per_weight());
    if (!sqnr.empty())
      std::printf("  weight SQNR: median %.2f dB, worst %.2f dB\n", sqnr[sqnr.size() / 2], sqnr.front());
    std::printf("  %.2f s in all (packing %.2f s, %.2f GB/s of input), %d thread(s); artifact in %s\n", wall,
                pack_wall, pack_wall > 0 ? double(source_bytes) / pack_wall / 1e9 : 0.0, threads, o.out.c_str());
  }
  return 0;
}

}  // namespace

Runner setup_quantize(CLI::App& app, const CommandLine& cl) {
  auto opts = std::make_shared<QuantizeOptions>();
  CLI::App* sub = app.add_subcommand("quantize", "Quantize a checkpoint to an NVFP4 artifact");
  sub->add_option("--model", opts->model, "Hugging Face checkpoint directory (BF16)")->required();
  sub->add_option("--out", opts->out, "artifact directory to create")->required();
  sub->add_option("--scheme", opts->scheme,
                  "w4a16: NVFP4 weights, BF16 activations; w4a4: NVFP4 weights and activations (needs "
                  "--calib; the default when --calib is given)")
      ->check(CLI::IsMember({"w4a16", "w4a4"}));
  sub->add_option("--passes", opts->passes,
                  "pipeline text, e.g. 'stats,blockscale{rule=max},pack' (see `fp4c passes`); default: "
                  "blockscale,pack, with stats first when --calib is given");
  sub->add_option("--calib", opts->calib, "calibration set: JSONL with text or input_ids, or plain text; .gz too");
  add_token_set_options(sub, opts->tokens, "--calib-samples");
  sub->add_option("--stats-cache", opts->stats_cache,
                  "directory where activation statistics are kept and reused, keyed by model and calibration set");
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
  sub->add_flag("--dry-run", opts->dry_run, "print the per-tensor plan and projected size; write nothing");
  sub->add_flag("--force", opts->force, "replace an existing output directory");
  sub->add_flag("--quiet", opts->quiet, "print nothing on success");
  sub->add_option("--price-per-hour", opts->price_per_hour,
                  "machine price per hour, for the build-cost figure in the manifest");
  return {sub, [opts, &cl]() { return run_quantize(*opts, cl); }};
}

}  // namespace fp4c::tools
