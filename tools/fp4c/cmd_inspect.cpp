// fp4c inspect: per-layer table of an artifact from its manifest, and --verify of every hash.
#include <nlohmann/json.hpp>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <filesystem>
#include <map>

#include "backends/manifest.h"
#include "backends/verify_hashes.h"
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
  bool outliers = false;
};

int fail(const Error& e) {
  std::fprintf(stderr, "fp4c inspect: error: %s\n", e.message.c_str());
  return 1;
}

// A Linear packed to FP4 (NVFP4, or MXFP4 which has no global scale).
bool is_fp4(const manifest::TensorRecord& r) { return r.format() == "nvfp4" || r.format() == "mxfp4"; }

double sqnr_of(const manifest::TensorRecord& r) { return is_fp4(r) ? r.weight_error().sqnr_db() : INFINITY; }

nlohmann::json finite_or_null(double v) { return std::isfinite(v) ? nlohmann::json(v) : nlohmann::json(nullptr); }

nlohmann::json to_json(const manifest::ChannelOutliers& c) {
  return {{"channels", c.channels()},
          {"max", c.max()},
          {"median", c.median()},
          {"max_over_median", finite_or_null(c.max_over_median())},
          {"kurtosis", finite_or_null(c.kurtosis())},
          {"above_k", c.above_k()},
          {"top_channels", std::vector<int64_t>(c.top_channels().begin(), c.top_channels().end())},
          {"top_values", std::vector<float>(c.top_values().begin(), c.top_values().end())}};
}

nlohmann::json to_json(const manifest::Outliers& o) {
  return {{"k", o.k()},
          {"weight", to_json(o.weight())},
          {"activation", o.has_activation() ? to_json(o.activation()) : nlohmann::json(nullptr)}};
}

nlohmann::json to_json(const manifest::Sensitivity& s) {
  return {{"output_error", s.output_error()},
          {"kl", s.has_kl() ? nlohmann::json(s.kl()) : nlohmann::json(nullptr)},
          {"rank", s.rank()}};
}

nlohmann::json to_json(const manifest::Smoothing& s) {
  return {{"layer", s.layer()},
          {"mapping", s.mapping()},
          {"smooth", s.smooth()},
          {"balanced", std::vector<std::string>(s.balanced().begin(), s.balanced().end())},
          {"alpha", s.alpha()},
          {"factor_min", s.factor_min()},
          {"factor_median", s.factor_median()},
          {"factor_max", s.factor_max()}};
}

nlohmann::json layer_json(const manifest::TensorRecord& r) {
  return r.has_layer() ? nlohmann::json(r.layer()) : nlohmann::json(nullptr);
}

std::string ratio_text(double r) {
  if (std::isinf(r)) return "inf";
  char buf[32];
  std::snprintf(buf, sizeof buf, "%.2f", r);
  return buf;
}

// "12:3.5 7:2.25 ..." for the first `n` top channels.
std::string top_text(const manifest::ChannelOutliers& c, int n) {
  std::string s;
  for (int i = 0; i < std::min({n, c.top_channels_size(), c.top_values_size()}); ++i) {
    char buf[48];
    std::snprintf(buf, sizeof buf, "%s%lld:%.3g", i ? " " : "", static_cast<long long>(c.top_channels(i)),
                  double(c.top_values(i)));
    s += buf;
  }
  return s.empty() ? "-" : s;
}

// --outliers: one row per analysed Linear, the most concentrated input first (activation max/median,
// the weight's where the pipeline had no statistics).
int print_outliers(const manifest::Manifest& m, const InspectOptions& o) {
  std::vector<const manifest::TensorRecord*> rows;
  for (const auto& r : m.tensors())
    if (r.has_outliers()) rows.push_back(&r);
  auto key = [](const manifest::TensorRecord* r) {
    const auto& x = r->outliers();
    return x.has_activation() ? x.activation().max_over_median() : x.weight().max_over_median();
  };
  std::stable_sort(rows.begin(), rows.end(), [&](auto* a, auto* b) { return key(a) > key(b); });
  if (o.top > 0 && rows.size() > size_t(o.top)) rows.resize(size_t(o.top));

  if (o.json) {
    nlohmann::json out = nlohmann::json::array();
    for (auto* r : rows)
      out.push_back({{"name", r->name()}, {"module", r->module()}, {"role", r->role()}, {"layer", layer_json(*r)},
                     {"outliers", to_json(r->outliers())}});
    std::printf("%s\n", out.dump(2).c_str());
    return 0;
  }
  if (rows.empty()) {
    std::printf("%s: no outlier analysis in the manifest (run the outliers pass: --passes '...,outliers,...')\n",
                o.artifact.c_str());
    return 0;
  }
  std::printf("%s: per-channel magnitudes, weight columns max|W[:,j]| (W) and input channels absmax (A); "
              "k = %g\n",
              o.artifact.c_str(), rows.front()->outliers().k());
  std::printf("%-44s %-7s %5s %10s %10s %9s %8s %6s %10s %10s %9s %8s %6s  %-30s %s\n", "module", "role", "layer",
              "W max", "W median", "W max/med", "W kurt", "W >k", "A max", "A median", "A max/med", "A kurt", "A >k",
              "W top", "A top");
  for (auto* r : rows) {
    const auto& w = r->outliers().weight();
    char act[128];
    if (r->outliers().has_activation()) {
      const auto& a = r->outliers().activation();
      std::snprintf(act, sizeof act, "%10.4g %10.4g %9s %8.2f %6lld", double(a.max()), double(a.median()),
                    ratio_text(a.max_over_median()).c_str(), a.kurtosis(), static_cast<long long>(a.above_k()));
    } else {
      std::snprintf(act, sizeof act, "%10s %10s %9s %8s %6s", "-", "-", "-", "-", "-");
    }
    std::printf("%-44s %-7s %5s %10.4g %10.4g %9s %8.2f %6lld %s  %-30s %s\n", r->module().c_str(), r->role().c_str(),
                r->has_layer() ? std::to_string(r->layer()).c_str() : "-", double(w.max()), double(w.median()),
                ratio_text(w.max_over_median()).c_str(), w.kurtosis(), static_cast<long long>(w.above_k()), act,
                top_text(w, 3).c_str(),
                r->outliers().has_activation() ? top_text(r->outliers().activation(), 3).c_str() : "-");
  }
  return 0;
}

int run_inspect(const InspectOptions& o) {
  const std::string path = (fs::path(o.artifact) / backends::kManifestFile).string();
  auto m = backends::read_manifest(path);
  if (!m) return fail(m.error());

  if (o.verify) {
    const auto check = backends::check_artifact_hashes(*m, o.artifact);
    for (const auto& p : check.problems) std::fprintf(stderr, "fp4c inspect: mismatch: %s\n", p.c_str());
    if (!check.ok()) {
      std::fprintf(stderr, "fp4c inspect: %zu mismatch(es) against %s\n", check.problems.size(), path.c_str());
      return 1;
    }
    std::printf("verified %d file(s) and %d tensor(s) against %s\n", m->outputs_size(),
                m->output_tensors_size(), path.c_str());
    return 0;
  }
  if (o.outliers) return print_outliers(*m, o);

  // The smoothing records that touched each tensor (as the norm divided or a Linear balanced).
  std::map<std::string, std::vector<const manifest::Smoothing*>> smoothing_of;
  for (const auto& sm : m->smoothing()) {
    smoothing_of[sm.smooth()].push_back(&sm);
    for (const auto& b : sm.balanced()) smoothing_of[b].push_back(&sm);
  }
  const bool sensitivity = std::any_of(m->tensors().begin(), m->tensors().end(),
                                       [](const auto& r) { return r.has_sensitivity(); });
  const bool chosen = std::any_of(m->tensors().begin(), m->tensors().end(),
                                  [](const auto& r) { return r.has_quantizer(); });

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
      if (r->has_stored_in()) {
        j["stored_in"] = r->stored_in();
        j["stored_row"] = r->stored_row();
      }
      if (is_fp4(*r)) {
        if (r->format() == "nvfp4") j["weight_global_scale"] = r->weight_global_scale();
        j["weight_amax"] = r->weight_amax();
        const double s = r->weight_error().sqnr_db();
        j["sqnr_db"] = std::isfinite(s) ? nlohmann::json(s) : nlohmann::json(nullptr);
        j["relative_mse"] = r->weight_error().relative_mse();
        j["max_abs_error"] = r->weight_error().max_abs_error();
      } else {
        j["skip"] = {{"kind", r->skip().kind()}, {"detail", r->skip().detail()}};
      }
      j["smoothed"] = r->smoothed();
      if (r->has_outliers()) j["outliers"] = to_json(r->outliers());
      if (r->has_sensitivity()) j["sensitivity"] = to_json(r->sensitivity());
      if (r->has_quantizer()) {
        nlohmann::json c = nlohmann::json::object();
        for (const auto& cand : r->quantizer().candidates()) c[cand.name()] = cand.output_error();
        j["quantizer"] = {{"chosen", r->quantizer().chosen()}, {"candidates", c}};
        if (r->quantizer().has_layer_error_smoothed())
          j["quantizer"]["layer_error"] = {{"unsmoothed", r->quantizer().layer_error_unsmoothed()},
                                           {"smoothed", r->quantizer().layer_error_smoothed()}};
      }
      if (auto it = smoothing_of.find(r->name()); it != smoothing_of.end()) {
        j["smoothing"] = nlohmann::json::array();
        for (const auto* sm : it->second) j["smoothing"].push_back(to_json(*sm));
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
  // The sensitivity pass's figures, when it ran: the output error and its rank (1 = most sensitive).
  auto sens = [&](const manifest::TensorRecord* r) -> std::string {
    if (!sensitivity) return "";
    char buf[48];
    if (r->has_sensitivity())
      std::snprintf(buf, sizeof buf, " %11.3e %4d", r->sensitivity().output_error(), r->sensitivity().rank());
    else
      std::snprintf(buf, sizeof buf, " %11s %4s", "-", "-");
    return buf;
  };
  // The auto pass's choice: the quantizer kept and its held-out output error.
  auto quant = [&](const manifest::TensorRecord* r) -> std::string {
    if (!chosen) return "";
    char buf[64];
    double e = NAN;
    if (r->has_quantizer())
      for (const auto& c : r->quantizer().candidates())
        if (c.name() == r->quantizer().chosen()) e = c.output_error();
    std::snprintf(buf, sizeof buf, " %-30s %10.3e", r->has_quantizer() ? r->quantizer().chosen().c_str() : "-", e);
    return buf;
  };
  std::printf("%-48s %-7s %5s %-6s %11s %9s %11s %11s%s%s  %s\n", "module", "role", "layer", "format", "global", "SQNR dB",
              "rel MSE", "max |err|", sensitivity ? "    sens err rank" : "",
              chosen ? " quantizer                       out error" : "", "kept because");
  for (auto* r : rows) {
    if (is_fp4(*r)) {
      char global[32] = "-";  // MXFP4 has no global scale
      if (r->format() == "nvfp4") std::snprintf(global, sizeof global, "%.4g", double(r->weight_global_scale()));
      std::printf("%-48s %-7s %5s %-6s %11s %9.2f %11.3e %11.3e%s%s\n", r->module().c_str(), r->role().c_str(),
                  r->has_layer() ? std::to_string(r->layer()).c_str() : "-", r->format().c_str(),
                  global, r->weight_error().sqnr_db(), r->weight_error().relative_mse(),
                  r->weight_error().max_abs_error(), sens(r).c_str(), quant(r).c_str());
    } else {
      std::printf("%-48s %-7s %5s %-6s %11s %9s %11s %11s%s%s  %s\n", r->module().c_str(), r->role().c_str(),
                  r->has_layer() ? std::to_string(r->layer()).c_str() : "-", r->format().c_str(), "-", "-", "-",
                  "-", sens(r).c_str(), quant(r).c_str(), r->skip().detail().c_str());
    }
  }
  // Tensors the checkpoint and the artifact store fused (Phi-3): which rows each slice is.
  std::vector<std::pair<std::string, std::string>> fused;   // (fused tensor, its slices)
  for (const auto& r : m->tensors()) {
    if (!r.has_stored_in()) continue;
    if (fused.empty() || fused.back().first != r.stored_in()) fused.push_back({r.stored_in(), ""});
    const int64_t rows = r.shape_size() > 0 ? r.shape(0) : 0;
    fused.back().second += (fused.back().second.empty() ? "" : ", ") + r.module() + " rows [" +
                           std::to_string(r.stored_row()) + ", " + std::to_string(r.stored_row() + rows) + ")";
  }
  if (!fused.empty()) {
    std::printf("\nfused on disk (%zu tensor(s), each one artifact tensor with one global scale):\n", fused.size());
    for (const auto& [tensor, slices] : fused) std::printf("  %s = %s\n", tensor.c_str(), slices.c_str());
  }
  if (m->smoothing_size() > 0) {
    std::printf("\nsmoothing (%d mapping(s)): norm weight divided by s, Linear input columns multiplied by s\n",
                m->smoothing_size());
    std::printf("%5s %-7s %6s %11s %11s %11s  %s\n", "layer", "mapping", "alpha", "s min", "s median", "s max",
                "smooth -> balanced");
    for (const auto& sm : m->smoothing()) {
      std::string balanced;
      for (const auto& b : sm.balanced()) balanced += (balanced.empty() ? "" : ", ") + b;
      std::printf("%5d %-7s %6.3g %11.4g %11.4g %11.4g  %s -> %s\n", sm.layer(), sm.mapping().c_str(),
                  double(sm.alpha()), double(sm.factor_min()), double(sm.factor_median()), double(sm.factor_max()),
                  sm.smooth().c_str(), balanced.c_str());
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
  sub->add_flag("--outliers", opts->outliers,
                "per-Linear outlier table (weight and activation max/median, kurtosis, channels above k, top "
                "channels), most concentrated input first");
  return {sub, [opts]() { return run_inspect(*opts); }};
}

}  // namespace fp4c::tools
