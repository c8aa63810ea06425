#include "pipeline/report.h"

#include <algorithm>
#include <cmath>
#include <cstdarg>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <map>
#include <set>

#include "pipeline/sizes.h"

namespace fp4c::pipeline {
namespace {
namespace fs = std::filesystem;

std::string fmt(const char* f, ...) __attribute__((format(printf, 1, 2)));
std::string fmt(const char* f, ...) {
  char buf[512];
  va_list ap;
  va_start(ap, f);
  std::vsnprintf(buf, sizeof buf, f, ap);
  va_end(ap);
  return buf;
}

std::string xml_escape(std::string_view s) {
  std::string out;
  for (char c : s) {
    switch (c) {
      case '<': out += "&lt;"; break;
      case '>': out += "&gt;"; break;
      case '&': out += "&amp;"; break;
      case '"': out += "&quot;"; break;
      case '\'': out += "&apos;"; break;
      default: out += c;
    }
  }
  return out;
}

// A Markdown table cell: no pipes or newlines.
std::string cell(std::string_view s) {
  std::string out;
  for (char c : s) {
    if (c == '|') out += "\\|";
    else if (c == '\n') out += ' ';
    else out += c;
  }
  return out;
}

std::string bytes_text(int64_t b) {
  return b < 0 ? "-" + format_bytes(uint64_t(-b)) : format_bytes(uint64_t(b));
}

// The Linears of every recipe, in the first recipe's order, then any others in order of appearance.
struct LinearRow {
  std::string module, role;
  int layer = 0;
};
std::vector<LinearRow> linear_rows(const CompareReport& r) {
  std::vector<LinearRow> rows;
  std::set<std::string> seen;
  for (const auto& rec : r.recipes)
    for (const auto& l : rec.layers)
      if (seen.insert(l.module).second) rows.push_back({l.module, l.role, l.layer});
  return rows;
}

std::optional<double> error_of(const RecipeReport& rec, const std::string& module) {
  for (const auto& l : rec.layers)
    if (l.module == module) return l.output_error;
  return std::nullopt;
}

const char* kPalette[] = {"#4e79a7", "#f28e2b", "#59a14f", "#e15759", "#76b7b2", "#edc948", "#b07aa1", "#9c755f"};
const char* color(size_t i) { return kPalette[i % (sizeof kPalette / sizeof *kPalette)]; }

std::string short_label(const LinearRow& l) { return fmt("L%d.%s", l.layer, l.role.c_str()); }

}  // namespace

std::string_view outcome_name(Verdict::Outcome o) {
  switch (o) {
    case Verdict::Outcome::CandidateBetter: return "candidate_better";
    case Verdict::Outcome::BaselineBetter: return "baseline_better";
    case Verdict::Outcome::NoDifference: return "no_measurable_difference";
  }
  return "?";
}

Verdict verdict(const RecipeReport& a, const RecipeReport& b) {
  Verdict v;
  v.baseline = a.name;
  v.candidate = b.name;
  v.recovery_delta = b.recovery - a.recovery;
  v.spread = std::max(std::fabs(a.half_recovery[0] - a.half_recovery[1]),
                      std::fabs(b.half_recovery[0] - b.half_recovery[1]));
  for (double h : {a.half_recovery[0], a.half_recovery[1], b.half_recovery[0], b.half_recovery[1]})
    if (!std::isfinite(h)) v.spread = NAN;   // a half without predictions: no spread, no verdict
  if (!std::isfinite(v.spread) || !std::isfinite(v.recovery_delta)) v.outcome = Verdict::Outcome::NoDifference;
  else if (v.recovery_delta > v.spread) v.outcome = Verdict::Outcome::CandidateBetter;
  else if (-v.recovery_delta > v.spread) v.outcome = Verdict::Outcome::BaselineBetter;
  else v.outcome = Verdict::Outcome::NoDifference;
  v.extra_wall_seconds = b.build_wall_seconds - a.build_wall_seconds;
  v.extra_cpu_seconds = b.build_cpu_seconds - a.build_cpu_seconds;
  v.extra_money = b.money - a.money;
  if ((a.stats_passes_reused > 0 || b.stats_passes_reused > 0) && a.alone_wall_seconds && b.alone_wall_seconds) {
    v.alone_extra_wall_seconds = *b.alone_wall_seconds - *a.alone_wall_seconds;
    v.alone_extra_cpu_seconds = b.alone_cpu_seconds.value_or(0) - a.alone_cpu_seconds.value_or(0);
    v.alone_extra_money = b.alone_money.value_or(0) - a.alone_money.value_or(0);
  }
  std::string what;
  switch (v.outcome) {
    case Verdict::Outcome::CandidateBetter: what = b.name + " beats " + a.name; break;
    case Verdict::Outcome::BaselineBetter: what = a.name + " beats " + b.name; break;
    case Verdict::Outcome::NoDifference: what = "no measurable difference between " + b.name + " and " + a.name; break;
  }
  v.text = fmt("%s vs %s: recovery %.4f vs %.4f (%+.4f), spread between evaluation halves ", b.name.c_str(),
               a.name.c_str(), b.recovery, a.recovery, v.recovery_delta) +
           (std::isfinite(v.spread) ? fmt("%.4f", v.spread) : std::string("unknown (a half has no prediction)")) +
           ": " + what +
           fmt("; build cost of %s over %s: %+.2f s wall, %+.2f CPU s, %+.4f money", b.name.c_str(), a.name.c_str(),
               v.extra_wall_seconds, v.extra_cpu_seconds, v.extra_money);
  if (v.alone_extra_wall_seconds)
    v.text += fmt(" as run (statistics shared between recipes), %+.2f s wall, %+.2f CPU s, %+.4f money with each "
                  "built alone (estimated)",
                  *v.alone_extra_wall_seconds, *v.alone_extra_cpu_seconds, *v.alone_extra_money);
  v.text += ".";
  return v;
}

LayerEffect layer_effect(const RecipeReport& a, const RecipeReport& b) {
  LayerEffect e;
  for (const auto& l : a.layers) {
    const auto eb = error_of(b, l.module);
    if (!eb) continue;
    if (l.output_error > 0) {
      const double ratio = *eb / l.output_error;
      if (ratio < kHelps) e.helps.push_back(l.module);
      else if (ratio > kHurts) e.hurts.push_back(l.module);
    } else if (*eb > 0) {
      e.hurts.push_back(l.module);   // exact under the baseline (kept in BF16), not under the candidate
    }
  }
  return e;
}

std::string render_markdown(const CompareReport& r) {
  std::string md;
  auto line = [&](const std::string& s = "") { md += s + "\n"; };
  line("# fp4c compare: " + r.model);
  line();
  line(fmt("- model: `%s` (%s, %lld layers, hidden %lld, %lld KV heads x head_dim %lld), %s at BF16", r.model.c_str(),
           r.architecture.c_str(), (long long)r.layers, (long long)r.hidden_size, (long long)r.num_key_value_heads,
           (long long)r.head_dim, format_bytes(r.bf16_bytes).c_str()));
  auto set_line = [&](const char* what, const TokenSetReport& t) {
    if (t.path.empty()) {
      line(fmt("- %s: none", what));
      return;
    }
    line(fmt("- %s: `%s` (xxh3 %s), %lld sequences, %lld tokens, seq_len %s, seed %llu, packing %s", what,
             t.path.c_str(), t.hash.c_str(), (long long)t.samples, (long long)t.tokens,
             t.seq_len > 0 ? std::to_string(t.seq_len).c_str() : "whole records", (unsigned long long)t.seed,
             t.packing.c_str()));
  };
  set_line("calibration", r.calibration);
  set_line("evaluation", r.evaluation);
  line(fmt("- runtime precision %s, %d thread(s); fp4c %s, %s", r.precision.c_str(), r.threads,
           r.tool_version.c_str(), r.created_utc.c_str()));
  if (!r.command_line.empty()) line("- command: `" + r.command_line + "`");
  line();

  line("## Accuracy against BF16");
  line();
  line(fmt("BF16 reference perplexity %.6f over %lld next-token predictions. Recovery = reference perplexity / "
           "recipe perplexity; the halves are the first %lld and the last %lld evaluation sequences.",
           r.reference_perplexity, (long long)r.predictions, (long long)r.half_sequences[0],
           (long long)r.half_sequences[1]));
  line();
  line("| recipe | scheme | perplexity | recovery | recovery half 1 | recovery half 2 | KL mean | KL median | KL p99 | top-1 |");
  line("|---|---|---:|---:|---:|---:|---:|---:|---:|---:|");
  for (const auto& rec : r.recipes)
    line(fmt("| %s | %s | %.6f | %.4f | %.4f | %.4f | %.5f | %.5f | %.5f | %.4f |", cell(rec.name).c_str(),
             rec.scheme.c_str(), rec.perplexity, rec.recovery, rec.half_recovery[0], rec.half_recovery[1],
             rec.kl_mean, rec.kl_median, rec.kl_p99, rec.top1_agreement));
  line();
  line(std::string("![recovery per recipe](") + kRecoverySvg + ")");
  line();
  line("Pipelines:");
  line();
  for (const auto& rec : r.recipes) line("- " + rec.name + ": `" + rec.pipeline + "`");
  line();

  if (r.recipes.size() > 1) {
    line("## Verdict");
    line();
    line(fmt("Each recipe against the first (%s). A difference in recovery counts only when it exceeds the spread "
             "between evaluation halves, the larger |recovery(half 1) - recovery(half 2)| of the two recipes.",
             r.recipes[0].name.c_str()));
    line();
    for (size_t i = 1; i < r.recipes.size(); ++i) {
      const auto v = verdict(r.recipes[0], r.recipes[i]);
      line("- " + v.text);
    }
    line();
  }

  line("## Size");
  line();
  line("| recipe | artifact bytes | of BF16 | effective bits per weight |");
  line("|---|---:|---:|---:|");
  for (const auto& rec : r.recipes)
    line(fmt("| %s | %s (%llu) | %.3f | %.3f |", cell(rec.name).c_str(), format_bytes(rec.artifact_bytes).c_str(),
             (unsigned long long)rec.artifact_bytes, r.bf16_bytes ? double(rec.artifact_bytes) / double(r.bf16_bytes) : 0.0,
             rec.effective_bits_per_weight));
  line();

  line("## Build cost");
  line();
  line(fmt("Money at %.4f per hour of wall time. Peak RSS is the process's peak at the end of the build; one "
           "`fp4c compare` process builds every recipe, so a later recipe's figure includes earlier ones'.",
           r.price_per_hour));
  line();
  line("Statistics are collected once and shared: a recipe whose stats pass found them already measured (by an "
       "earlier recipe, or in the cache) skips the work. \"Built alone\" adds, for each such pass, the cost of the "
       "slowest stats pass this run computed: an estimate of the recipe's cost without the others.");
  line();
  line("| recipe | wall s | CPU s | peak RSS | money | stats passes reused | built alone: wall s | CPU s | money | eval s |");
  line("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|");
  auto opt = [](const std::optional<double>& v, const char* f) { return v ? fmt(f, *v) : std::string("-"); };
  for (const auto& rec : r.recipes)
    line(fmt("| %s | %.2f | %.2f | %s | %.4f | %d of %d | ", cell(rec.name).c_str(), rec.build_wall_seconds,
             rec.build_cpu_seconds, format_bytes(rec.peak_rss_bytes).c_str(), rec.money, rec.stats_passes_reused,
             rec.stats_passes) +
         opt(rec.alone_wall_seconds, "%.2f") + " | " + opt(rec.alone_cpu_seconds, "%.2f") + " | " +
         opt(rec.alone_money, "%.4f") + fmt(" | %.2f |", rec.eval_seconds));
  line();
  // Per pass, recipes side by side; passes in order of first appearance.
  std::vector<std::string> stage_names;
  for (const auto& rec : r.recipes)
    for (const auto& s : rec.stages)
      if (std::find(stage_names.begin(), stage_names.end(), s.stage) == stage_names.end())
        stage_names.push_back(s.stage);
  std::string head = "| pass |", rule = "|---|";
  for (const auto& rec : r.recipes) {
    head += " " + cell(rec.name) + " wall s | " + cell(rec.name) + " CPU s |";
    rule += "---:|---:|";
  }
  line(head);
  line(rule);
  for (const auto& name : stage_names) {
    std::string row = "| " + cell(name) + " |";
    for (const auto& rec : r.recipes) {
      double w = 0, c = 0;
      bool found = false;
      for (const auto& s : rec.stages)
        if (s.stage == name) w += s.wall_seconds, c += s.cpu_seconds, found = true;
      row += found ? fmt(" %.3f | %.3f |", w, c) : std::string(" - | - |");
    }
    line(row);
  }
  line();

  line("## Serving memory (" + std::string(kServingMemoryLabel) + ")");
  line();
  line(fmt("On a GPU of %.1f GB (10^9 bytes): the artifact's weights, a BF16 KV cache per request (2 x layers x KV "
           "heads x head_dim x tokens x 2 bytes), the memory left and the most concurrent requests that fit in it. "
           "Computed from the config and the artifact size, not measured; activations, CUDA graphs and the "
           "engine's own reserve are not counted.",
           r.gpu_memory_gb));
  line();
  line("| recipe | case | weights | KV cache per request | memory left | most concurrent requests |");
  line("|---|---|---:|---:|---:|---:|");
  for (const auto& rec : r.recipes)
    for (const auto& s : rec.serving)
      line(fmt("| %s | %s | %s | %s | %s | %lld |", cell(rec.name).c_str(), s.serving_case.name.c_str(),
               format_bytes(s.weight_bytes).c_str(), format_bytes(s.kv_bytes_per_request).c_str(),
               bytes_text(s.memory_left_bytes).c_str(), (long long)s.max_concurrent_requests));
  line();

  line("## Per-Linear output error");
  line();
  line("Relative squared error of each Linear's output on the reference's input, over the evaluation set "
       "(`fp4c eval --per-layer`); lower is better; 0 means exact (e.g. a Linear kept BF16). In parentheses: the "
       "ratio to the first recipe's.");
  line();
  line(std::string("![per-Linear output error](") + kLayerErrorSvg + ")");
  line();
  const auto rows = linear_rows(r);
  if (rows.empty()) {
    line("No per-Linear figures.");
    line();
  } else {
    head = "| Linear |";
    rule = "|---|";
    for (const auto& rec : r.recipes) head += " " + cell(rec.name) + " |", rule += "---:|";
    line(head);
    line(rule);
    for (const auto& row : rows) {
      std::string s = "| " + row.module + " |";
      const auto base = r.recipes.empty() ? std::nullopt : error_of(r.recipes[0], row.module);
      for (size_t i = 0; i < r.recipes.size(); ++i) {
        const auto e = error_of(r.recipes[i], row.module);
        if (!e) s += " - |";
        else if (i > 0 && base && *base > 0) s += fmt(" %.4g (%.2f) |", *e, *e / *base);
        else s += fmt(" %.4g |", *e);
      }
      line(s);
    }
    line();
    for (size_t i = 1; i < r.recipes.size(); ++i) {
      const auto e = layer_effect(r.recipes[0], r.recipes[i]);
      auto list = [](const std::vector<std::string>& v) {
        std::string s;
        for (const auto& m : v) s += (s.empty() ? "" : ", ") + ("`" + m + "`");
        return s.empty() ? std::string("none") : s;
      };
      line(fmt("%s vs %s (helps: error ratio < %.2f; hurts: > %.2f):", r.recipes[i].name.c_str(),
               r.recipes[0].name.c_str(), kHelps, kHurts));
      line();
      line(fmt("- helps %zu: ", e.helps.size()) + list(e.helps));
      line(fmt("- hurts %zu: ", e.hurts.size()) + list(e.hurts));
      line();
    }
  }
  return md;
}

nlohmann::json to_json(const CompareReport& r) {
  using nlohmann::json;
  auto set_json = [](const TokenSetReport& t) {
    return json{{"path", t.path}, {"hash", t.hash},       {"samples", t.samples}, {"tokens", t.tokens},
                {"seq_len", t.seq_len}, {"seed", t.seed}, {"packing", t.packing}};
  };
  json j{{"tool_version", r.tool_version},
         {"created_utc", r.created_utc},
         {"command_line", r.command_line},
         {"model", {{"path", r.model},
                    {"architecture", r.architecture},
                    {"layers", r.layers},
                    {"hidden_size", r.hidden_size},
                    {"num_key_value_heads", r.num_key_value_heads},
                    {"head_dim", r.head_dim},
                    {"bf16_bytes", r.bf16_bytes}}},
         {"calibration", set_json(r.calibration)},
         {"evaluation", set_json(r.evaluation)},
         {"predictions", r.predictions},
         {"half_sequences", r.half_sequences},
         {"precision", r.precision},
         {"threads", r.threads},
         {"price_per_hour", r.price_per_hour},
         {"gpu_memory_gb", r.gpu_memory_gb},
         {"reference_perplexity", r.reference_perplexity},
         {"serving_memory_note", kServingMemoryLabel}};
  json recipes = json::array();
  for (const auto& rec : r.recipes) {
    json layers = json::array();
    for (const auto& l : rec.layers)
      layers.push_back({{"module", l.module}, {"role", l.role}, {"layer", l.layer}, {"output_error", l.output_error}});
    json stages = json::array();
    for (const auto& s : rec.stages)
      stages.push_back({{"stage", s.stage},
                        {"wall_seconds", s.wall_seconds},
                        {"cpu_seconds", s.cpu_seconds},
                        {"peak_rss_bytes", s.peak_rss_bytes}});
    json serving = json::array();
    for (const auto& s : rec.serving)
      serving.push_back({{"case", s.serving_case.name},
                         {"prompt_tokens", s.serving_case.prompt_tokens},
                         {"output_tokens", s.serving_case.output_tokens},
                         {"gpu_memory_bytes", s.gpu_memory_bytes},
                         {"weight_bytes", s.weight_bytes},
                         {"kv_bytes_per_request", s.kv_bytes_per_request},
                         {"memory_left_bytes", s.memory_left_bytes},
                         {"max_concurrent_requests", s.max_concurrent_requests},
                         {"note", kServingMemoryLabel}});
    recipes.push_back({{"name", rec.name},
                       {"pipeline", rec.pipeline},
                       {"scheme", rec.scheme},
                       {"artifact", rec.artifact},
                       {"perplexity", rec.perplexity},
                       {"recovery", rec.recovery},
                       {"half_recovery", rec.half_recovery},
                       {"kl_mean", rec.kl_mean},
                       {"kl_median", rec.kl_median},
                       {"kl_p99", rec.kl_p99},
                       {"top1_agreement", rec.top1_agreement},
                       {"eval_seconds", rec.eval_seconds},
                       {"layers", layers},
                       {"artifact_bytes", rec.artifact_bytes},
                       {"effective_bits_per_weight", rec.effective_bits_per_weight},
                       {"build", {{"stages", stages},
                                  {"wall_seconds", rec.build_wall_seconds},
                                  {"cpu_seconds", rec.build_cpu_seconds},
                                  {"peak_rss_bytes", rec.peak_rss_bytes},
                                  {"money", rec.money},
                                  {"stats_reused", rec.stats_reused},
                                  {"stats_passes", rec.stats_passes},
                                  {"stats_passes_reused", rec.stats_passes_reused},
                                  {"alone_wall_seconds", rec.alone_wall_seconds ? json(*rec.alone_wall_seconds) : json()},
                                  {"alone_cpu_seconds", rec.alone_cpu_seconds ? json(*rec.alone_cpu_seconds) : json()},
                                  {"alone_money", rec.alone_money ? json(*rec.alone_money) : json()}}},
                       {"serving_memory", serving}});
  }
  j["recipes"] = recipes;
  json verdicts = json::array();
  for (size_t i = 1; i < r.recipes.size(); ++i) {
    const auto v = verdict(r.recipes[0], r.recipes[i]);
    const auto e = layer_effect(r.recipes[0], r.recipes[i]);
    verdicts.push_back({{"baseline", v.baseline},
                        {"candidate", v.candidate},
                        {"recovery_delta", v.recovery_delta},
                        {"spread", v.spread},
                        {"outcome", std::string(outcome_name(v.outcome))},
                        {"extra_wall_seconds", v.extra_wall_seconds},
                        {"extra_cpu_seconds", v.extra_cpu_seconds},
                        {"extra_money", v.extra_money},
                        {"alone_extra_wall_seconds", v.alone_extra_wall_seconds ? json(*v.alone_extra_wall_seconds) : json()},
                        {"alone_extra_cpu_seconds", v.alone_extra_cpu_seconds ? json(*v.alone_extra_cpu_seconds) : json()},
                        {"alone_extra_money", v.alone_extra_money ? json(*v.alone_extra_money) : json()},
                        {"text", v.text},
                        {"layers_helped", e.helps},
                        {"layers_hurt", e.hurts}});
  }
  j["verdicts"] = verdicts;
  return j;
}

std::string layer_error_svg(const CompareReport& r) {
  const auto rows = linear_rows(r);
  const size_t n = std::max<size_t>(rows.size(), 1), k = std::max<size_t>(r.recipes.size(), 1);
  double lo_v = INFINITY, hi_v = 0;
  for (const auto& rec : r.recipes)
    for (const auto& l : rec.layers)
      if (l.output_error > 0 && std::isfinite(l.output_error)) lo_v = std::min(lo_v, l.output_error), hi_v = std::max(hi_v, l.output_error);
  const bool any = hi_v > 0;
  int lo = any ? int(std::floor(std::log10(lo_v))) : -6, hi = any ? int(std::ceil(std::log10(hi_v))) : 0;
  if (hi <= lo) hi = lo + 1;

  const double bw = std::clamp(640.0 / double(n * k), 2.0, 10.0);   // bar width
  const double gw = bw * double(k) + 4;                               // one Linear's group
  const double left = 80, right = 20, top = 50 + 16.0 * double((k + 3) / 4), ph = 300, bottom = 80;
  const double pw = std::max(gw * double(n), 320.0);
  const double width = left + pw + right, height = top + ph + bottom;
  auto y_of = [&](double v) { return top + ph * (double(hi) - std::log10(v)) / double(hi - lo); };

  std::string s = fmt("<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"%.0f\" height=\"%.0f\" viewBox=\"0 0 %.0f %.0f\" "
                      "font-family=\"sans-serif\" font-size=\"11\">\n",
                      width, height, width, height);
  s += fmt("<rect x=\"0\" y=\"0\" width=\"%.0f\" height=\"%.0f\" fill=\"white\"/>\n", width, height);
  s += fmt("<text x=\"%.1f\" y=\"18\" font-size=\"14\" text-anchor=\"middle\">Per-Linear output error by recipe "
           "(lower is better)</text>\n",
           width / 2);
  // Legend.
  for (size_t i = 0; i < r.recipes.size(); ++i) {
    const double lx = left + double(i % 4) * 160, ly = 30 + 16.0 * double(i / 4);
    s += fmt("<rect x=\"%.1f\" y=\"%.1f\" width=\"10\" height=\"10\" fill=\"%s\"/>\n", lx, ly, color(i));
    s += fmt("<text x=\"%.1f\" y=\"%.1f\">", lx + 14, ly + 9) + xml_escape(r.recipes[i].name) + "</text>\n";
  }
  // Decade grid and y labels.
  for (int d = lo; d <= hi; ++d) {
    const double y = top + ph * double(hi - d) / double(hi - lo);
    s += fmt("<line x1=\"%.1f\" y1=\"%.1f\" x2=\"%.1f\" y2=\"%.1f\" stroke=\"#dddddd\"/>\n", left, y, left + pw, y);
    s += fmt("<text x=\"%.1f\" y=\"%.1f\" text-anchor=\"end\">1e%d</text>\n", left - 6, y + 4, d);
  }
  s += fmt("<line x1=\"%.1f\" y1=\"%.1f\" x2=\"%.1f\" y2=\"%.1f\" stroke=\"black\"/>\n", left, top, left, top + ph);
  s += fmt("<line x1=\"%.1f\" y1=\"%.1f\" x2=\"%.1f\" y2=\"%.1f\" stroke=\"black\"/>\n", left, top + ph, left + pw,
           top + ph);
  s += fmt("<text x=\"%.1f\" y=\"%.1f\" text-anchor=\"middle\" transform=\"rotate(-90 %.1f %.1f)\">relative output "
           "error (log scale)</text>\n",
           18.0, top + ph / 2, 18.0, top + ph / 2);
  s += fmt("<text x=\"%.1f\" y=\"%.1f\" text-anchor=\"middle\">Linear (L&lt;decoder layer&gt;.&lt;role&gt;)</text>\n",
           left + pw / 2, height - 8);
  if (!any)
    s += fmt("<text x=\"%.1f\" y=\"%.1f\" text-anchor=\"middle\">no non-zero output error</text>\n", left + pw / 2,
             top + ph / 2);
  bool any_zero = false;
  for (const auto& rec : r.recipes)
    for (const auto& l : rec.layers) any_zero = any_zero || l.output_error == 0;
  if (any_zero)
    s += fmt("<text x=\"%.1f\" y=\"%.1f\" text-anchor=\"end\" font-size=\"9\">no bar: error 0 (the Linear is "
             "exact, e.g. kept BF16)</text>\n",
             left + pw, height - 26);
  // Bars.
  const size_t label_every = std::max<size_t>(1, size_t(std::ceil(10.0 / gw)));
  for (size_t j = 0; j < rows.size(); ++j) {
    const double gx = left + gw * double(j) + 2;
    for (size_t i = 0; i < r.recipes.size(); ++i) {
      const auto e = error_of(r.recipes[i], rows[j].module);
      if (!e || !(*e > 0) || !std::isfinite(*e)) continue;
      const double y = std::max(top, y_of(*e));
      s += fmt("<rect x=\"%.2f\" y=\"%.2f\" width=\"%.2f\" height=\"%.2f\" fill=\"%s\"><title>", gx + bw * double(i), y,
               bw, top + ph - y, color(i)) +
           xml_escape(rows[j].module + " " + r.recipes[i].name) + fmt(": %.4g</title></rect>\n", *e);
    }
    if (j % label_every == 0) {
      const double cx = gx + bw * double(k) / 2, cy = top + ph + 8;
      s += fmt("<text x=\"%.1f\" y=\"%.1f\" font-size=\"9\" text-anchor=\"end\" transform=\"rotate(-90 %.1f %.1f)\">",
               cx + 3, cy, cx + 3, cy) +
           xml_escape(short_label(rows[j])) + "</text>\n";
    }
  }
  s += "</svg>\n";
  return s;
}

std::string recovery_svg(const CompareReport& r) {
  const size_t k = std::max<size_t>(r.recipes.size(), 1);
  double lo_v = 1, hi_v = 1;
  for (const auto& rec : r.recipes)
    for (double v : {rec.recovery, rec.half_recovery[0], rec.half_recovery[1]})
      if (std::isfinite(v)) lo_v = std::min(lo_v, v), hi_v = std::max(hi_v, v);
  const double pad = std::max(0.1 * (hi_v - lo_v), 0.002);
  const double lo = lo_v - pad, hi = hi_v + pad;
  const double left = 80, right = 20, top = 48, ph = 260, bottom = 60, slot = 110;
  const double pw = std::max(slot * double(k), 360.0), width = left + pw + right, height = top + ph + bottom;
  auto y_of = [&](double v) { return top + ph * (hi - v) / (hi - lo); };

  std::string s = fmt("<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"%.0f\" height=\"%.0f\" viewBox=\"0 0 %.0f %.0f\" "
                      "font-family=\"sans-serif\" font-size=\"11\">\n",
                      width, height, width, height);
  s += fmt("<rect x=\"0\" y=\"0\" width=\"%.0f\" height=\"%.0f\" fill=\"white\"/>\n", width, height);
  s += fmt("<text x=\"%.1f\" y=\"18\" font-size=\"14\" text-anchor=\"middle\">Recovery vs BF16 per recipe</text>\n",
           width / 2);
  s += fmt("<text x=\"%.1f\" y=\"32\" font-size=\"10\" text-anchor=\"middle\">reference perplexity / recipe "
           "perplexity; whiskers: the two evaluation halves</text>\n",
           width / 2);
  for (int t = 0; t <= 5; ++t) {
    const double v = lo + (hi - lo) * double(t) / 5, y = y_of(v);
    s += fmt("<line x1=\"%.1f\" y1=\"%.1f\" x2=\"%.1f\" y2=\"%.1f\" stroke=\"#dddddd\"/>\n", left, y, left + pw, y);
    s += fmt("<text x=\"%.1f\" y=\"%.1f\" text-anchor=\"end\">%.4f</text>\n", left - 6, y + 4, v);
  }
  s += fmt("<line x1=\"%.1f\" y1=\"%.1f\" x2=\"%.1f\" y2=\"%.1f\" stroke=\"black\"/>\n", left, top, left, top + ph);
  s += fmt("<line x1=\"%.1f\" y1=\"%.1f\" x2=\"%.1f\" y2=\"%.1f\" stroke=\"black\"/>\n", left, top + ph, left + pw,
           top + ph);
  const double y1 = y_of(1.0);
  s += fmt("<line x1=\"%.1f\" y1=\"%.1f\" x2=\"%.1f\" y2=\"%.1f\" stroke=\"#888888\" stroke-dasharray=\"4 3\"/>\n", left,
           y1, left + pw, y1);
  s += fmt("<text x=\"%.1f\" y=\"%.1f\" text-anchor=\"end\" fill=\"#888888\">BF16 = 1</text>\n", left + pw - 2, y1 - 3);
  s += fmt("<text x=\"%.1f\" y=\"%.1f\" text-anchor=\"middle\" transform=\"rotate(-90 %.1f %.1f)\">recovery</text>\n",
           18.0, top + ph / 2, 18.0, top + ph / 2);
  s += fmt("<text x=\"%.1f\" y=\"%.1f\" text-anchor=\"middle\">recipe</text>\n", left + pw / 2, height - 8);
  const double step = pw / double(k);
  for (size_t i = 0; i < r.recipes.size(); ++i) {
    const auto& rec = r.recipes[i];
    const double x = left + step * (double(i) + 0.5);
    s += fmt("<text x=\"%.1f\" y=\"%.1f\" text-anchor=\"middle\">", x, top + ph + 18) + xml_escape(rec.name) + "</text>\n";
    if (std::isfinite(rec.half_recovery[0]) && std::isfinite(rec.half_recovery[1])) {
      const double ya = y_of(rec.half_recovery[0]), yb = y_of(rec.half_recovery[1]);
      s += fmt("<line x1=\"%.1f\" y1=\"%.2f\" x2=\"%.1f\" y2=\"%.2f\" stroke=\"%s\" stroke-width=\"2\"/>\n", x, ya, x, yb,
               color(i));
      for (double yy : {ya, yb})
        s += fmt("<line x1=\"%.1f\" y1=\"%.2f\" x2=\"%.1f\" y2=\"%.2f\" stroke=\"%s\" stroke-width=\"2\"/>\n", x - 8, yy,
                 x + 8, yy, color(i));
    }
    if (std::isfinite(rec.recovery)) {
      const double y = y_of(rec.recovery);
      s += fmt("<circle cx=\"%.1f\" cy=\"%.2f\" r=\"5\" fill=\"%s\"><title>", x, y, color(i)) + xml_escape(rec.name) +
           fmt(": recovery %.4f (halves %.4f, %.4f)</title></circle>\n", rec.recovery, rec.half_recovery[0],
               rec.half_recovery[1]);
      s += fmt("<text x=\"%.1f\" y=\"%.2f\">%.4f</text>\n", x + 12, y + 4, rec.recovery);
    }
  }
  s += "</svg>\n";
  return s;
}

Status write_report(const CompareReport& r, const std::string& dir) {
  std::error_code ec;
  fs::create_directories(dir, ec);
  if (ec) return make_error("cannot create " + dir + ": " + ec.message());
  auto write = [&](const char* name, const std::string& text) -> Status {
    const auto path = fs::path(dir) / name;
    std::ofstream out(path, std::ios::binary);
    out << text;
    out.close();
    if (!out) return make_error("cannot write " + path.string());
    return {};
  };
  FP4C_TRY(write(kReportMarkdown, render_markdown(r)));
  FP4C_TRY(write(kReportJson, to_json(r).dump(2) + "\n"));
  FP4C_TRY(write(kLayerErrorSvg, layer_error_svg(r)));
  FP4C_TRY(write(kRecoverySvg, recovery_svg(r)));
  return {};
}

}  // namespace fp4c::pipeline
