// fp4c-synth: writes deterministic synthetic checkpoints in the Hugging Face layout (config, BF16
// safetensors, byte-level BPE tokenizer) with the weight statistics of trained LLMs, for tests,
// demos and benchmarks of fp4c.
#include <CLI/CLI.hpp>
#include <omp.h>

#include <atomic>
#include <chrono>
#include <csignal>
#include <cstdio>
#include <filesystem>
#include <optional>
#include <string>
#include <vector>

#include "checkpoint_writer.h"
#include "preset.h"
#include "sharding.h"
#include "backends/artifact.h"
#include "tokenizer.h"

namespace {

namespace fs = std::filesystem;
using namespace fp4c;
using namespace fp4c::synth;

struct Options {
  std::string preset;
  std::string out;
  uint64_t seed = 0;
  std::optional<int64_t> layers;
  bool outliers = true;
  std::string max_shard_size = "5GB";  // transformers' default
  int threads = 1;
  bool force = false;
};

std::atomic<bool> g_cancel{false};

extern "C" void on_signal(int) { g_cancel.store(true); }

Status write_text(const std::string& path, const std::string& text) {
  std::FILE* f = std::fopen(path.c_str(), "wb");
  if (!f) return make_error("cannot create '" + path + "'");
  const bool ok = std::fwrite(text.data(), 1, text.size(), f) == text.size();
  if (std::fclose(f) != 0 || !ok) return make_error("cannot write '" + path + "'");
  return {};
}

std::string human_bytes(uint64_t n) {
  char buf[32];
  if (n >= 1000000000ull) std::snprintf(buf, sizeof buf, "%.2f GB", double(n) / 1e9);
  else if (n >= 1000000ull) std::snprintf(buf, sizeof buf, "%.1f MB", double(n) / 1e6);
  else std::snprintf(buf, sizeof buf, "%.1f KB", double(n) / 1e3);
  return buf;
}

// Everything after argument parsing; returns the process exit code.
int run(const Options& o) {
  const auto start = std::chrono::steady_clock::now();
  auto fail = [](const std::string& message) {
    std::fprintf(stderr, "fp4c-synth: error: %s\n", message.c_str());
    return g_cancel.load() ? 130 : 1;
  };
  const Preset* preset = find_preset(o.preset);
  if (!preset) return fail("unknown preset '" + o.preset + "'");
  const auto max_shard = parse_size(o.max_shard_size);
  if (!max_shard) return fail("--max-shard-size: " + max_shard.error().message);
  std::error_code ec;
  if (fs::exists(fs::symlink_status(o.out, ec))) {
    if (!o.force) return fail("output directory '" + o.out + "' already exists; pass --force to replace it");
    if (!fs::is_directory(fs::symlink_status(o.out, ec)))
      return fail("'" + o.out + "' exists and is not a directory; not replacing it");
  }
  omp_set_num_threads(o.threads);
  std::signal(SIGINT, on_signal);
  std::signal(SIGTERM, on_signal);

  const TokenizerFiles tokenizer = make_tokenizer(preset->family);
  const ModelSpec spec = resolve(*preset, o.layers, tokenizer.ids);
  // The same staging as fp4c's artifacts (backends/artifact.h): a hidden sibling, renamed into place
  // when complete, and the leftovers of a run that was killed cleaned by the next.
  if (const fs::path parent = fs::absolute(o.out, ec).parent_path(); !parent.empty()) fs::create_directories(parent, ec);
  auto staging = backends::StagingDir::create(o.out, o.force);
  if (!staging) return fail(staging.error().message);
  for (const std::string& d : staging->removed())
    std::fprintf(stderr, "fp4c-synth: removed %s, the staging directory of a run that died\n", d.c_str());
  const std::string dir = staging->path();
  const std::vector<std::pair<std::string, std::string>> texts = {
      {"config.json", config_json(spec)},
      {"generation_config.json", generation_config_json(spec)},
      {"tokenizer.json", tokenizer.tokenizer_json},
      {"tokenizer_config.json", tokenizer.tokenizer_config_json}};
  for (const auto& [name, text] : texts) {
    if (Status s = write_text(dir + "/" + name, text); !s) return fail(s.error().message);
  }
  const auto summary = write_weights(dir, spec, WeightOptions{o.seed, o.preset, o.outliers}, *max_shard, g_cancel);
  if (!summary) return fail(summary.error().message);
  if (g_cancel.load()) return fail("interrupted");
  if (Status s = staging->commit(); !s) return fail(s.error().message);

  const double secs = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  std::printf("fp4c-synth: wrote %s to %s: %s, %lld layers, vocab %lld (tokenizer %lld), %zu tensors, "
              "%s in %zu safetensors file%s, %.2f s (%.2f GB/s, %d threads)\n",
              o.preset.c_str(), o.out.c_str(),
              std::string(architecture_name(preset->family)).c_str(),
              (long long)spec.num_layers, (long long)spec.vocab_size, (long long)spec.ids.tokenizer_size,
              summary->tensors, human_bytes(summary->tensor_bytes).c_str(), summary->files,
              summary->files == 1 ? "" : "s", secs, double(summary->tensor_bytes) / 1e9 / secs, o.threads);
  return 0;
}

}  // namespace

int main(int argc, char** argv) {
  CLI::App app{"fp4c-synth: deterministic synthetic Hugging Face checkpoints (BF16 safetensors, config, "
               "byte-level BPE tokenizer) with the weight statistics of trained LLMs"};
#ifdef FP4C_VERSION
  app.set_version_flag("--version", std::string("fp4c-synth ") + FP4C_VERSION);
#endif
  Options o;
  o.threads = omp_get_max_threads();
  std::vector<std::string> names;
  std::string preset_help = "model shape:";
  for (const Preset& p : presets()) {
    names.emplace_back(p.name);
    preset_help += "\n  " + std::string(p.name) + ": " + std::string(p.summary);
  }
  app.add_option("--preset", o.preset, preset_help)->required()->check(CLI::IsMember(names));
  app.add_option("--out", o.out, "output directory (written to a temporary sibling, then renamed)")->required();
  app.add_option("--seed", o.seed, "random seed")->capture_default_str();
  int64_t layers = 0;
  CLI::Option* layers_opt =
      app.add_option("--layers", layers, "number of decoder layers (default: the preset's)")
          ->check(CLI::Range(int64_t(1), int64_t(1000)));
  std::string outliers = "on";
  app.add_option("--outliers", outliers, "plant outlier channels (norm gammas, weight input channels)")
      ->check(CLI::IsMember({"on", "off"}))
      ->capture_default_str();
  app.add_option("--max-shard-size", o.max_shard_size,
                 "split into model-0000k-of-0000N.safetensors above this size (5GB = 5*10^9 bytes, 4GiB = 4*2^30)")
      ->capture_default_str();
  app.add_option("--threads", o.threads, "generator threads (the output does not depend on it)")
      ->check(CLI::Range(1, 1024))
      ->capture_default_str();
  app.add_flag("--force", o.force, "replace --out if it exists");
  try {
    app.parse(argc, argv);
  } catch (const CLI::ParseError& e) {
    return app.exit(e);
  }
  if (layers_opt->count() > 0) o.layers = layers;
  o.outliers = outliers == "on";
  return run(o);
}
