// The quantize pipeline: open the checkpoint, run the passes of the pipeline in order over the IR, and
// write the artifact (the pack pass) and its manifest. Passes communicate only through the IR's
// annotations and the current activation statistics, which a rewrite (smoothquant) invalidates.
#include "tools/fp4c/quantize_run.h"

#include <omp.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <filesystem>
#include <map>
#include <set>

#include "backends/artifact.h"
#include "backends/compressed_tensors/writer.h"
#include "backends/manifest.h"
#include "backends/modelopt/writer.h"
#include "frontend/checkpoint.h"
#include "formats/mxfp4.h"
#include "ir/cost.h"
#include "passes/auto_quantizer.h"
#include "passes/outliers.h"
#include "passes/pack.h"
#include "passes/pipeline.h"
#include "passes/recipes.h"
#include "passes/sensitivity.h"
#include "passes/smoothquant.h"
#include "passes/stats.h"
#include "passes/weight_plan.h"
#include "runtime/checkpoint_weights.h"
#include "tools/fp4c/size_option.h"

namespace fp4c::tools {
namespace {
namespace fs = std::filesystem;
namespace ct = backends::compressed_tensors;

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

std::string format_stats(const passes::ActivationStats& stats) {
  std::string out;
  char line[256];
  std::snprintf(line, sizeof line, "%-6s %-6s %8s %8s %12s %12s %8s\n", "layer", "site", "tokens", "cols", "absmax",
                "rms", "top ch");
  out += line;
  for (const auto& s : stats.sites) {
    double ms = 0;
    for (double v : s.mean_square) ms += v;
    const auto top = std::max_element(s.absmax.begin(), s.absmax.end());
    std::snprintf(line, sizeof line, "%-6d %-6s %8lld %8lld %12.5g %12.5g %8lld\n", s.layer,
                  std::string(ir::role_name(s.role)).c_str(), static_cast<long long>(s.tokens),
                  static_cast<long long>(s.cols()), s.tensor_absmax(), s.cols() ? std::sqrt(ms / double(s.cols())) : 0.0,
                  static_cast<long long>(top == s.absmax.end() ? -1 : top - s.absmax.begin()));
    out += line;
  }
  return out;
}

std::string format_packed(const ir::Model& model) {
  std::string out;
  char line[320];
  std::snprintf(line, sizeof line, "%-58s %-6s %10s %10s %10s  %s\n", "tensor", "format", "SQNR dB", "G", "Gx",
                "reason kept");
  out += line;
  for (ir::TensorId id = 0; id < model.tensors.size(); ++id) {
    const auto& t = model.tensors[id];
    if (!ir::is_linear(t.role) || t.kind != ir::ParamKind::Weight) continue;
    const auto& d = model.annotations.decision[id];
    const auto& p = id < model.annotations.packed.size() ? model.annotations.packed[id] : std::nullopt;
    if (p && d.format == ir::Format::MXFP4)
      std::snprintf(line, sizeof line, "%-58s %-6s %10.2f %10s %10s\n", t.name.c_str(), "mxfp4", p->error.sqnr_db, "-",
                    "-");
    else if (p)
      std::snprintf(line, sizeof line, "%-58s %-6s %10.2f %10.4g %10s\n", t.name.c_str(), "nvfp4", p->error.sqnr_db,
                    p->weight_global_scale,
                    p->input_global_scale ? std::to_string(*p->input_global_scale).c_str() : "-");
    else
      std::snprintf(line, sizeof line, "%-58s %-6s %10s %10s %10s  %s\n", t.name.c_str(),
                    std::string(ir::format_name(d.format)).c_str(), "-", "-", "-",
                    d.skip ? d.skip->detail.c_str() : "");
    out += line;
  }
  return out;
}

// Key of everything that decides a set of statistics: the model files, its rewrites, the calibration
// set and how it was selected and run.
struct StatsKey {
  std::string model_key, calibration_key, short_key;
};

Expected<std::string> model_files_key(const frontend::LoadedCheckpoint& ckpt, const std::string& model_dir) {
  hash::Hasher model_key;
  for (const auto& f : ckpt.files.files()) {
    FP4C_ASSIGN(auto d, hash::hash_file(f.path()));
    const std::string hex = d.hex();
    model_key.update(std::as_bytes(std::span(hex)));
  }
  FP4C_ASSIGN(auto d, hash::hash_file((fs::path(model_dir) / "config.json").string()));
  const std::string hex = d.hex();
  model_key.update(std::as_bytes(std::span(hex)));
  return model_key.digest().hex();
}

StatsKey stats_key(const std::string& files_key, const ir::Model& model, const QuantizeRequest& o,
                   const frontend::TokenSet& tokens, bool second_moments) {
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
                                 o.tokens.packing + "|" + o.precision + "|" + (second_moments ? "m2" : "") + "|" +
                                 std::to_string(tokens.sequences.size());
  k.calibration_key = hash::xxh3_128(std::as_bytes(std::span(calib_text))).hex();
  k.short_key = k.model_key.substr(0, 16) + "-" + k.calibration_key.substr(0, 16);
  return k;
}

runtime::ForwardOptions forward_options(const QuantizeRequest& o, uint64_t budget) {
  runtime::ForwardOptions fo;
  fo.precision = o.precision == "bf16" ? runtime::Precision::BF16 : runtime::Precision::F32;
  fo.spill.memory_budget = budget;
  return fo;
}

// A progress line on a terminal: "<what>: layer i of n, T tokens/s, S s left".
std::function<void(int, int)> progress_line(bool tty, const char* what, double tokens) {
  if (!tty) return {};
  const auto t0 = std::chrono::steady_clock::now();
  return [=](int layer, int layers) {
    const double s = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
    std::fprintf(stderr, "\r%s: layer %d of %d, %.0f tokens/s, %.0f s left   ", what, layer, layers,
                 tokens * layer / layers / s, s / layer * (layers - layer));
    if (layer == layers) std::fprintf(stderr, "\n");
  };
}

struct StatsResult {
  std::shared_ptr<const passes::ActivationStats> stats;
  bool from_cache = false;
  std::string key;
};

// Statistics of the model as now rewritten: from the process's memo, the cache directory, or a
// layer-by-layer run over the calibration set (then kept in both).
Expected<StatsResult> collect(const QuantizeRequest& o, const frontend::LoadedCheckpoint& ckpt,
                              const std::string& files_key, const frontend::TokenSet& tokens,
                              const passes::StatsOptions& so, uint64_t budget, bool tty) {
  const StatsKey key = stats_key(files_key, ckpt.model, o, tokens, so.second_moments);
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
  if (!cache_path.empty() && fs::exists(cache_path, ec)) {
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
      std::fprintf(stderr, "warning: %s; %s, recomputing the statistics\n", why.c_str(),
                   ec ? ("cannot move it aside (" + ec.message() + ")").c_str() : ("moved it to " + aside).c_str());
    }
  }
  if (cached) {
    r.stats = std::make_shared<const passes::ActivationStats>(std::move(*cached));
    r.from_cache = true;
  } else {
    runtime::Forward forward(ckpt.model.config, forward_options(o, budget));
    runtime::CheckpointWeights weights(ckpt.model, ckpt.refs, /*release_pages=*/true);
    FP4C_ASSIGN(auto s, passes::collect_stats(forward, weights, tokens.sequences, so,
                                              progress_line(tty, "calibrating", double(tokens.total_tokens()))));
    s.model_key = key.model_key;
    s.calibration_key = key.calibration_key;
    s.precision = o.precision;
    if (!cache_path.empty()) {
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

// MXFP4 has one block-scale rule (formats/mxfp4.h's kDefaultRule, which blockscale{rule=max} stands for);
// the scale searches, GPTQ, auto and sensitivity are NVFP4-only.
Status check_mxfp4_pipeline(const passes::Pipeline& pipeline, passes::Scheme scheme) {
  const std::string s(passes::scheme_name(scheme));
  for (const auto& p : pipeline.passes) {
    if (p.name == "blockscale" && p.option("rule") != "max")
      return make_error("--scheme " + s + ": blockscale{rule=" + p.option("rule") +
                        "} is NVFP4-only; MXFP4 uses its power-of-two rule (" +
                        std::string(mxfp4::scale_rule_name(mxfp4::kDefaultRule)) +
                        "), written blockscale{rule=max} or blockscale");
    if (p.name == "gptq" || p.name == "auto" || p.name == "sensitivity")
      return make_error("--scheme " + s + ": pass '" + p.name + "' is NVFP4-only (it measures NVFP4 error)");
  }
  return {};
}

// Checks that need no weights: what each pass needs of the command line and of the passes before it.
Status check_pipeline(const passes::Pipeline& pipeline, passes::Scheme scheme, bool have_calib) {
  const auto& ps = pipeline.passes;
  if (ps.empty() || ps.back().name != "pack")
    return make_error("the pipeline must end in 'pack' to write an artifact");
  if (std::count_if(ps.begin(), ps.end(), [](const auto& p) { return p.name == "pack"; }) != 1)
    return make_error("the pipeline runs 'pack' once, at the end");
  if (std::count_if(ps.begin(), ps.end(), [](const auto& p) { return p.name == "sensitivity"; }) > 1)
    return make_error("the pipeline runs 'sensitivity' at most once");
  bool stats_valid = false, second_moments = false;
  std::string rule = "max";
  const auto need_moments = [&](const std::string& what) -> Status {
    if (!stats_valid || !second_moments)
      return make_error(what + " needs the input second moments: 'stats{second_moments=true}' before it (and after "
                               "any 'smoothquant')");
    return {};
  };
  for (const auto& p : ps) {
    if (p.name == "stats") {
      if (!have_calib) return make_error("pass 'stats' needs a calibration set (--calib FILE)");
      stats_valid = true;
      second_moments = p.option("second_moments") == "true";
    } else if (p.name == "smoothquant") {
      stats_valid = false;
    } else if (p.name == "auto") {
      FP4C_TRY(need_moments("pass 'auto'"));
    } else if (p.name == "gptq") {
      FP4C_TRY(need_moments("pass 'gptq'"));
    } else if (p.name == "blockscale") {
      rule = p.option("rule");
      if (rule == "weighted" && !stats_valid)
        return make_error("blockscale{rule=weighted} needs the 'stats' pass before it (and after any 'smoothquant')");
      if (rule == "localhessian") FP4C_TRY(need_moments("blockscale{rule=localhessian}"));
    } else if (p.name == "pack") {
      if (scheme == passes::Scheme::W4A4 && !stats_valid)
        return make_error("--scheme w4a4 needs statistics of the model as it is packed (its input global scales): "
                          "'stats' in the pipeline, after any 'smoothquant'");
    }
  }
  return {};
}

Expected<passes::Pipeline> choose_pipeline(const QuantizeRequest& o, std::string* recipe_name, std::string* scheme) {
  if (!o.passes.empty() && !o.recipe.empty()) return make_error("give --passes or --recipe, not both");
  std::string text;
  if (!o.recipe.empty()) {
    FP4C_ASSIGN(auto r, passes::resolve_recipe(o.recipe));
    *recipe_name = r.name == o.recipe ? r.name : r.name + " (" + o.recipe + ")";
    if (!r.scheme.empty() && scheme->empty()) *scheme = r.scheme;
    if (!r.scheme.empty() && *scheme != r.scheme)
      return make_error("recipe '" + r.name + "' is for " + r.scheme + ", but --scheme " + *scheme + " was given");
    text = r.pipeline;
  } else {
    text = !o.passes.empty() ? o.passes : o.calib.empty() ? "blockscale,pack" : "stats,blockscale,pack";
  }
  auto p = passes::parse_pipeline(text);
  if (!p) return make_error(std::string(o.recipe.empty() ? "--passes: " : "--recipe: ") + p.error().message);
  return p;
}

}  // namespace

Expected<QuantizeOutcome> quantize(const QuantizeRequest& o) {
  if (o.threads > 0) omp_set_num_threads(o.threads);
  const int threads = o.threads > 0 ? o.threads : omp_get_max_threads();
  std::optional<uint64_t> max_shard;
  if (!o.max_shard_size.empty()) {
    max_shard = parse_size(o.max_shard_size);
    if (!max_shard) return make_error("--max-shard-size '" + o.max_shard_size + "': not a size (e.g. 5GB, 500MB, 2GiB)");
  }
  const auto budget = parse_size(o.memory_budget);
  if (!budget) return make_error("--memory-budget '" + o.memory_budget + "': not a size (e.g. 4GiB)");
  if (o.format != "compressed-tensors" && o.format != "modelopt")
    return make_error("--format '" + o.format + "': not compressed-tensors or modelopt");
  const bool modelopt = o.format == "modelopt";
  for (const auto& name : o.print_after)
    if (!passes::find_pass(name)) {
      std::string names;
      for (const auto& p : passes::pass_registry()) names += (names.empty() ? "" : ", ") + p.name;
      return make_error("--print-after: unknown pass '" + name + "' (valid: " + names + ")");
    }
  const bool tty = isatty(fileno(stderr)) && !o.quiet;

  // The pipeline: given, a recipe's, or the default. Checked before any weight is read.
  std::string recipe_name, scheme_text = o.scheme;
  FP4C_ASSIGN(passes::Pipeline pipeline, choose_pipeline(o, &recipe_name, &scheme_text));
  std::optional<passes::Scheme> parsed_scheme = passes::parse_scheme(scheme_text);
  if (!scheme_text.empty() && !parsed_scheme)
    return make_error("--scheme '" + scheme_text + "': not w4a16, w4a4, mxfp4a16 or mxfp4");
  const passes::Scheme scheme =
      parsed_scheme ? *parsed_scheme : o.calib.empty() ? passes::Scheme::W4A16 : passes::Scheme::W4A4;
  if (scheme == passes::Scheme::W4A4 && o.calib.empty())
    return make_error("--scheme w4a4 needs a calibration set (--calib FILE) for its input global scales");
  const bool mxfp4 = passes::is_mxfp4(scheme);
  if (mxfp4 && modelopt)
    return make_error("--format modelopt with --scheme " + scheme_text +
                      ": fp4c writes ModelOpt's Hugging Face layout for NVFP4 only; use --format compressed-tensors "
                      "(mxfp4-pack-quantized) for MXFP4");
  FP4C_TRY(check_pipeline(pipeline, scheme, !o.calib.empty()));
  if (mxfp4) FP4C_TRY(check_mxfp4_pipeline(pipeline, scheme));

  std::vector<StageCostFigures> stages;
  StageClock open_clock("open");
  FP4C_ASSIGN(frontend::LoadedCheckpoint ckpt, frontend::open_checkpoint(o.model));
  ir::Model& model = ckpt.model;
  std::optional<frontend::TokenSet> tokens;
  std::vector<std::vector<int32_t>> heldout;   // auto's measuring sequences, out of `tokens`
  std::string files_key;
  if (!o.calib.empty() && !o.dry_run) {
    FP4C_ASSIGN(tokens, load_tokens(o.calib, o.model, model.config, o.tokens));
    // `auto` measures on sequences the statistics (and so GPTQ's second moments) never saw: the last
    // holdout share of them, at least one; the statistics passes get the rest.
    if (const passes::PassInvocation* a = pipeline.find("auto")) {
      const std::string h = a->option("holdout");
      const double share = std::stod(h.substr(0, h.size() - 1)) / 100.0;
      const size_t n = tokens->sequences.size();
      const size_t held = std::max<size_t>(1, size_t(std::llround(double(n) * share)));
      if (n < 2 || held >= n)
        return make_error("pass 'auto' holds out " + h + " of " + std::to_string(n) +
                          " calibration sequence(s), leaving none for the statistics: give more (--calib-samples)");
      heldout.assign(tokens->sequences.end() - long(held), tokens->sequences.end());
      tokens->sequences.resize(n - held);
    }
    FP4C_ASSIGN(files_key, model_files_key(ckpt, o.model));
  }
  stages.push_back(open_clock.stop());

  ct::LayoutOptions layout;
  layout.max_shard_size = max_shard;
  layout.source_sharded = ckpt.files.sharded();
  if (modelopt) layout.names = backends::modelopt_names();   // same plan and bytes, ModelOpt's names
  uint64_t source_bytes = 0;
  for (const auto& r : ckpt.refs) {
    layout.source_file_of_tensor.push_back(fs::path(r.file->path()).filename().string());
    source_bytes += r.entry->nbytes();
  }
  if (o.dry_run) {
    // The plan as far as it is known without running anything (W4A4 scales come from statistics).
    passes::WeightPlanOptions plan_options{mxfp4 ? passes::Scheme::Mxfp4A16 : passes::Scheme::W4A16, o.ignore,
                                           nullptr};
    FP4C_TRY(passes::plan_weights(model, plan_options));
    print_plan(model, ct::plan_layout(model, layout), source_bytes);
    std::error_code ec;
    if (fs::exists(o.out, ec) && !o.force)
      std::printf("note: %s exists; a real run needs --force to replace it\n", o.out.c_str());
    return QuantizeOutcome{{}, pipeline.canonical()};
  }

  std::shared_ptr<const passes::ActivationStats> stats;   // of the model as it stands; null once invalidated
  std::optional<StatsResult> first_stats;                 // what the manifest's calibration record describes
  std::vector<std::pair<ir::TensorId, ir::SkipReason>> keep;
  passes::Quantizer quantizer;
  std::map<std::string, int> runs;
  std::optional<backends::StagingDir> staging;
  std::optional<ct::Plan> plan;
  std::optional<ct::Writer> writer;
  std::optional<passes::PackResult> packed;

  for (const passes::PassInvocation& pass : pipeline.passes) {
    const int run = ++runs[pass.name];
    StageClock clock(run == 1 ? pass.name : pass.name + "#" + std::to_string(run));
    uint64_t bytes_read = 0, bytes_written = 0;
    if (pass.name == "stats") {
      passes::StatsOptions so;
      so.second_moments = pass.option("second_moments") == "true";
      FP4C_ASSIGN(auto r, collect(o, ckpt, files_key, *tokens, so, *budget, tty));
      stats = r.stats;
      if (!first_stats) first_stats = r;
    } else if (pass.name == "smoothquant") {
      passes::SmoothQuantOptions so;
      so.alpha = std::stof(pass.option("alpha"));
      so.min_scale = std::stof(pass.option("min_scale"));
      so.extra = pass.option("extra") == "true";
      FP4C_TRY(passes::smooth_model(model, ckpt.refs, *stats, so));
      stats.reset();  // the smoothed sites' statistics no longer hold
    } else if (pass.name == "outliers") {
      FP4C_TRY(passes::analyze_outliers(
          model, [&](ir::TensorId id) { return runtime::read_tensor(model, ckpt.refs[id], id, false); }, stats.get(),
          std::stod(pass.option("k")), std::stoi(pass.option("top"))));
    } else if (pass.name == "sensitivity") {
      // A plan of what would be NVFP4 (with the input scales of the statistics), then each Linear's error.
      passes::WeightPlanOptions plan_options{scheme, o.ignore, stats.get()};
      if (scheme == passes::Scheme::W4A4 && !stats)
        return make_error("pass 'sensitivity' under W4A4 needs statistics of the model as it stands: 'stats' after "
                          "any 'smoothquant'");
      FP4C_TRY(passes::plan_weights(model, plan_options));
      passes::SensitivityOptions so;
      const std::string b = pass.option("budget");
      so.budget_percent = std::stod(b.substr(0, b.size() - 1));
      so.max_layers = std::stoi(pass.option("max_layers"));
      so.kl = pass.option("metric") == "kl";
      runtime::Forward forward(model.config, forward_options(o, *budget));
      runtime::CheckpointWeights weights(model, ckpt.refs, /*release_pages=*/true);
      FP4C_ASSIGN(keep, passes::run_sensitivity(model, forward, weights, tokens->sequences, so,
                                                progress_line(tty, "sensitivity", double(tokens->total_tokens()))));
    } else if (pass.name == "auto") {
      passes::WeightPlanOptions plan_options{scheme, o.ignore, stats.get(), keep};
      FP4C_TRY(passes::plan_weights(model, plan_options));
      passes::AutoOptions ao;
      ao.gptq.damp = std::stod(pass.option("damp"));
      ao.smoothquant = pass.option("smoothquant") == "true";
      ao.alpha = std::stof(pass.option("alpha"));
      quantizer.gptq.damp = ao.gptq.damp;
      runtime::Forward forward(model.config, forward_options(o, *budget));
      runtime::CheckpointWeights weights(model, ckpt.refs, /*release_pages=*/true);
      int64_t held_tokens = 0;
      for (const auto& s : heldout) held_tokens += int64_t(s.size());
      std::vector<passes::SiteStats> smoothed;
      FP4C_TRY(passes::choose_quantizers(model, forward, weights, *stats, heldout, ao,
                                         progress_line(tty, "auto", double(held_tokens)), &smoothed));
      stats = passes::overlay_stats(stats, std::move(smoothed));  // the smoothed sites' rescaled statistics
    } else if (pass.name == "gptq") {
      passes::GptqOptions g;
      g.damp = std::stod(pass.option("damp"));
      g.act_order = pass.option("act_order") == "true";
      g.block = std::stoi(pass.option("block"));
      g.localhessian_scales = pass.option("scales") == "localhessian";
      quantizer.kind = passes::Quantizer::Kind::Gptq;
      quantizer.gptq = g;
    } else if (pass.name == "blockscale") {
      if (quantizer.kind != passes::Quantizer::Kind::Gptq) {  // gptq chooses its own block scales
        if (pass.option("rule") == "localhessian") quantizer.kind = passes::Quantizer::Kind::LocalHessian;
        else quantizer.rule = *nvfp4::parse_scale_rule(pass.option("rule"));
      }
    } else if (pass.name == "pack") {
      passes::WeightPlanOptions plan_options{scheme, o.ignore, stats.get(), keep};
      FP4C_TRY(passes::plan_weights(model, plan_options));
      plan = ct::plan_layout(model, layout);
      {
        FP4C_ASSIGN(auto dir, backends::StagingDir::create(o.out, o.force));
        staging.emplace(std::move(dir));
        for (const std::string& d : staging->removed())
          std::fprintf(stderr, "removed %s, the staging directory of a run that died\n", d.c_str());
      }
      writer.emplace(staging->path(), *plan);
      passes::PackOptions pack_options;
      pack_options.quantizer = quantizer;
      pack_options.stats = stats.get();
      FP4C_ASSIGN(packed, passes::pack_weights(model, ckpt.files, ckpt.refs, *writer, pack_options));
      FP4C_TRY(writer->finish());
      bytes_read = packed->bytes_read;
      bytes_written = writer->bytes_written();
    } else {
      return make_error("pass '" + pass.name + "' has no implementation in fp4c quantize");
    }
    stages.push_back(clock.stop(bytes_read, bytes_written));

    if (std::find(o.print_after.begin(), o.print_after.end(), pass.name) != o.print_after.end()) {
      std::string text;
      if (pass.name == "stats") text = format_stats(*stats);
      else if (pass.name == "smoothquant") text = passes::format_smoothing(model);
      else if (pass.name == "outliers") text = passes::format_outliers(model);
      else if (pass.name == "sensitivity") {
        text = passes::format_sensitivity(model);
        text += keep.empty() ? "kept in BF16: none within the budget\n" : "kept in BF16:\n";
        for (const auto& [id, why] : keep) text += "  " + model.tensors[id].name + "  (" + why.detail + ")\n";
      }
      else if (pass.name == "blockscale") text = "rule=" + pass.option("rule") + "\n";
      else if (pass.name == "auto") text = passes::format_choices(model);
      else if (pass.name == "gptq") text = "GPTQ at pack: damp=" + pass.option("damp") + ", act_order=" +
                                          pass.option("act_order") + ", scales=" + pass.option("scales") + "\n";
      else if (pass.name == "pack") text = format_packed(model);
      std::printf("--- after %s (run %d) ---\n%s", pass.name.c_str(), run, text.c_str());
    }
  }

  StageClock finish_clock("finalize");
  std::vector<backends::WrittenFile> outputs = writer->files();
  const std::string source_config = (fs::path(o.model) / "config.json").string();
  const bool w4a4 = passes::quantizes_activations(scheme);
  if (modelopt) {
    FP4C_ASSIGN(auto configs, backends::modelopt::write_configs(source_config, staging->path(), model, w4a4,
                                                                FP4C_VERSION));
    outputs.insert(outputs.end(), configs.begin(), configs.end());
  } else {
    FP4C_ASSIGN(auto config, ct::write_config(source_config, staging->path(), model, w4a4, mxfp4));
    outputs.push_back(config);
  }
  FP4C_ASSIGN(auto aux, backends::copy_auxiliary_files(o.model, staging->path()));
  outputs.insert(outputs.end(), aux.begin(), aux.end());
  FP4C_ASSIGN(auto inputs, hash_inputs(ckpt, *packed));
  uint64_t written = 0;
  for (const auto& f : outputs) written += f.bytes;
  stages.push_back(finish_clock.stop(0, written - writer->bytes_written()));

  backends::ManifestInputs mi;
  mi.tool_version = FP4C_VERSION;
  mi.command_line = o.command_line;
  mi.model_dir = fs::absolute(o.model).lexically_normal().string();
  mi.options.set_scheme(std::string(passes::scheme_name(scheme)));
  if (first_stats) {
    auto* c = mi.options.mutable_calibration();
    c->set_path(o.calib);
    *c->mutable_hash() = backends::to_proto(tokens->source_hash);
    c->set_samples_requested(o.tokens.samples);
    c->set_samples(int64_t(tokens->sequences.size()));
    c->set_tokens(tokens->total_tokens());
    c->set_seq_len(o.tokens.seq_len);
    c->set_seed(o.tokens.seed);
    c->set_packing(o.tokens.packing);
    c->set_precision(o.precision);
    c->set_stats_from_cache(first_stats->from_cache);
    c->set_stats_key(first_stats->key);
  }
  for (const auto& r : o.ignore) mi.options.add_ignore(r);
  mi.options.set_threads(threads);
  mi.options.set_max_shard_size(max_shard.value_or(0));
  mi.options.set_format(o.format);
  mi.options.set_pipeline(pipeline.canonical());
  mi.inputs = std::move(inputs);
  mi.outputs = outputs;
  mi.output_tensors = writer->tensors();
  for (const auto& t : plan->tensors) mi.outputs_of_source.emplace_back(t.source, t.name);
  mi.stages = stages;
  mi.threads = threads;
  mi.price_per_hour = o.price_per_hour;
  QuantizeOutcome outcome;
  outcome.manifest = backends::build_manifest(model, mi);
  if (!recipe_name.empty()) outcome.manifest.set_recipe(recipe_name);
  outcome.pipeline = pipeline.canonical();
  FP4C_TRY(backends::write_manifest(outcome.manifest, (fs::path(staging->path()) / backends::kManifestFile).string()));
  FP4C_TRY(staging->commit());

  if (!o.quiet) {
    std::vector<double> sqnr;
    for (const auto& p : model.annotations.packed)
      if (p) sqnr.push_back(p->error.sqnr_db);
    std::sort(sqnr.begin(), sqnr.end());
    const auto& mem = outcome.manifest.memory();
    double wall = 0, pack_wall = 0;
    for (const auto& s : stages) {
      wall += s.wall_seconds;
      if (s.stage == "pack") pack_wall = s.wall_seconds;
    }
    std::printf("fp4c quantize: %zu Linear(s) to %s, %zu tensor(s) kept; %s -> %s (%.2f bits per Linear weight)\n",
                sqnr.size(), mxfp4 ? "MXFP4" : "NVFP4", model.tensors.size() - sqnr.size(), format_bytes(mem.source_bytes()).c_str(),
                format_bytes(mem.artifact_bytes()).c_str(), mem.effective_bits_per_weight());
    if (!sqnr.empty())
      std::printf("  weight SQNR: median %.2f dB, worst %.2f dB\n", sqnr[sqnr.size() / 2], sqnr.front());
    std::printf("  pipeline: %s\n", outcome.pipeline.c_str());
    std::printf("  %.2f s in all (packing %.2f s, %.2f GB/s of input), %d thread(s); artifact in %s\n", wall,
                pack_wall, pack_wall > 0 ? double(source_bytes) / pack_wall / 1e9 : 0.0, threads, o.out.c_str());
  }
  return outcome;
}

}  // namespace fp4c::tools
