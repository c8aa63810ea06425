// fp4c inspect: per-layer table of an artifact from its manifest, and --verify of every hash.
#include <nlohmann/json.hpp>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <filesystem>
#include <map>
#include <set>

#include "backends/manifest.h"
#include "formats/hash.h"
#include "formats/safetensors.h"
#include "tools/fp4c/commands.h"

namespace fp4c::tools {
namespace {
namespace fs = std::filesystem;

struct InspectOptions {
  std::string artifact;
  std::string sort = "sqnr";
  int top = 0;
  bool json = false;
  bool verify = false;
  bool all = false;
};

int fail(const Error& e) {
  std::fprintf(stderr, "fp4c inspect: error: %s\n", e.message.c_str());
  return 1;
}

// Recomputes every file and tensor hash the manifest records; returns the mismatches.
std::vector<std::string> verify(const manifest::Manifest& m, const std::string& dir) {
  std::vector<std::string> problems;
  std::set<std::string> listed{backends::kManifestFile};
  for (const auto& f : m.outputs()) {
    listed.insert(f.path());
    const std::string p = (fs::path(dir) / f.path()).string();
    uint64_t size = 0;
    auto h = hash::hash_file(p, &size);
    if (!h) problems.push_back(h.error().message);
    else if (h->hex() != f.hash().hex() || size != f.bytes())
      problems.push_back(f.path() + ": file hash " + h->hex() + " (" + std::to_string(size) +
                         " bytes) differs from the manifest's " + f.hash().hex() + " (" +
                         std::to_string(f.bytes()) + " bytes)");
  }
  std::error_code ec;
  for (const auto& e : fs::directory_iterator(dir, ec))
    if (!listed.count(e.path().filename().string()))
      problems.push_back(e.path().filename().string() + ": file not listed in the manifest");
  std::map<std::string, safetensors::File> opened;
  for (const auto& t : m.output_tensors()) {
    auto it = opened.find(t.file());
    if (it == opened.end()) {
      auto f = safetensors::File::open((fs::path(dir) / t.file()).string());
      if (!f) {
        problems.push_back(f.error().message);
        continue;
      }
      it = opened.emplace(t.file(), std::move(*f)).first;
    }
    const auto* e = it->second.find(t.name());
    if (!e) {
      problems.push_back(t.file() + ": tensor '" + t.name() + "' listed in the manifest is missing");
      continue;
    }
    const auto h = hash::xxh3_128(it->second.bytes(*e));
    if (h.hex() != t.hash().hex())
      problems.push_back(t.file() + ": tensor '" + t.name() + "' hash " + h.hex() +
                         " differs from the manifest's " + t.hash().hex());
  }
  return problems;
}

double sqnr_of(const manifest::TensorRecord& r) {
  return r.format() == "nvfp4" ? r.weight_error().sqnr_db() : INFINITY;
}

int run_inspect(const InspectOptions& o) {
  const std::string path = (fs::path(o.artifact) / backends::kManifestFile).string();
  auto m = backends::read_manifest(path);
  if (!m) return fail(m.error());

  if (o.verify) {
    auto problems = verify(*m, o.artifact);
    for (const auto& p : problems) std::fprintf(stderr, "fp4c inspect: mismatch: %s\n", p.c_str());
    if (!problems.empty()) {
      std::fprintf(stderr, "fp4c inspect: %zu mismatch(es) against %s\n", problems.size(), path.c_str());
      return 1;
    }
    std::printf("verified %d file(s) and %d tensor(s) against %s\n", m->outputs_size(),
                m->output_tensors_size(), path.c_str());
    return 0;
  }

  std::vector<const manifest::TensorRecord*> rows;
  for (const auto& r : m->tensors())
    if (o.all || (r.role() != "norm" && r.role() != "other" && r.skip().kind() != "not_linear")) rows.push_back(&r);
  auto by = [&](auto key, bool desc) {
    std::stable_sort(rows.begin(), rows.end(), [&](auto* a, auto* b) { return desc ? key(a) > key(b) : key(a) < key(b); });
  };
  if (o.sort == "sqnr") by([](auto* r) { return sqnr_of(*r); }, false);
  else if (o.sort == "rel_mse") by([](auto* r) { return r->weight_error().relative_mse(); }, true);
  else if (o.sort == "max_abs") by([](auto* r) { return r->weight_error().max_abs_error(); }, true);
  else if (o.sort == "layer") by([](auto* r) { return r->has_layer() ? r->layer() : -1; }, false);
  else if (o.sort == "name") by([](auto* r) { return r->name(); }, false);
  if (o.top > 0 && rows.size() > size_t(o.top)) rows.resize(size_t(o.top));

  if (o.json) {
    nlohmann::json out = nlohmann::json::array();
    for (auto* r : rows) {
      nlohmann::json j{{"name", r->name()}, {"module", r->module()}, {"role", r->role()},
                       {"layer", r->has_layer() ? nlohmann::json(r->layer()) : nlohmann::json(nullptr)},
                       {"shape", std::vector<int64_t>(r->shape().begin(), r->shape().end())},
                       {"format", r->format()}, {"fused_group", r->fused_group()}};
      if (r->format() == "nvfp4") {
        j["weight_global_scale"] = r->weight_global_scale();
        j["weight_amax"] = r->weight_amax();
        const double s = r->weight_error().sqnr_db();
        j["sqnr_db"] = std::isfinite(s) ? nlohmann::json(s) : nlohmann::json(nullptr);
        j["relative_mse"] = r->weight_error().relative_mse();
        j["max_abs_error"] = r->weight_error().max_abs_error();
      } else {
        j["skip"] = {{"kind", r->skip().kind()}, {"detail", r->skip().detail()}};
      }
      out.push_back(j);
    }
    std::printf("%s\n", out.dump(2).c_str());
    return 0;
  }

  const auto& mem = m->memory();
  std::printf("%s (%s, %s): %.2f bits per Linear weight, %llu -> %llu bytes\n", o.artifact.c_str(),
              m->architecture().c_str(), m->options().scheme().c_str(), mem.effective_bits_per_weight(),
              static_cast<unsigned long long>(mem.source_bytes()),
              static_cast<unsigned long long>(mem.artifact_bytes()));
  std::printf("%-48s %-7s %5s %-6s %11s %9s %11s %11s  %s\n", "module", "role", "layer", "format", "global", "SQNR dB",
              "rel MSE", "max |err|", "kept because");
  for (auto* r : rows) {
    if (r->format() == "nvfp4") {
      std::printf("%-48s %-7s %5s %-6s %11.4g %9.2f %11.3e %11.3e\n", r->module().c_str(), r->role().c_str(),
                  r->has_layer() ? std::to_string(r->layer()).c_str() : "-", r->format().c_str(),
                  r->weight_global_scale(), r->weight_error().sqnr_db(), r->weight_error().relative_mse(),
                  r->weight_error().max_abs_error());
    } else {
      std::printf("%-48s %-7s %5s %-6s %11s %9s %11s %11s  %s\n", r->module().c_str(), r->role().c_str(),
                  r->has_layer() ? std::to_string(r->layer()).c_str() : "-", r->format().c_str(), "-", "-", "-",
                  "-", r->skip().detail().c_str());
    }
  }
  return 0;
}

}  // namespace

Runner setup_inspect(CLI::App& app, const CommandLine&) {
  auto opts = std::make_shared<InspectOptions>();
  CLI::App* sub = app.add_subcommand("inspect", "Per-layer error, skip reasons and hashes of an artifact");
  sub->add_option("artifact", opts->artifact, "artifact directory")->required();
  sub->add_option("--sort", opts->sort, "sqnr (worst first), rel_mse, max_abs, layer or name")
      ->check(CLI::IsMember({"sqnr", "rel_mse", "max_abs", "layer", "name"}))
      ->default_str("sqnr");
  sub->add_option("--top", opts->top, "show only the first N rows");
  sub->add_flag("--json", opts->json, "print the rows as JSON");
  sub->add_flag("--all", opts->all, "include norms, biases and other non-Linear tensors");
  sub->add_flag("--verify", opts->verify, "recompute every file and tensor hash in the manifest");
  return {sub, [opts]() { return run_inspect(*opts); }};
}

}  // namespace fp4c::tools
