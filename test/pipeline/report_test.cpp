// The report of `fp4c compare` built by hand: verdict logic, helps/hurts per Linear, serving memory
// against hand arithmetic, and the content of report.md, report.json and the SVG plots.
#include <gtest/gtest.h>
#include <nlohmann/json.hpp>

#include <cmath>
#include <regex>
#include <string>
#include <vector>

#include "test/support/tiny_checkpoint.h"
#include "pipeline/report.h"
#include "pipeline/serving_memory.h"

namespace fp4c::pipeline {
namespace {

RecipeReport recipe(std::string name, double recovery, double h1, double h2, double wall, double money) {
  RecipeReport r;
  r.name = std::move(name);
  r.pipeline = "stats,blockscale{rule=max},pack";
  r.scheme = "w4a4";
  r.recovery = recovery;
  r.perplexity = 4.0 / recovery;
  r.half_recovery = {h1, h2};
  r.build_wall_seconds = wall;
  r.build_cpu_seconds = 2 * wall;
  r.money = money;
  return r;
}

TEST(Verdict, BeatsOnlyBeyondTheSpreadOfTheHalves) {
  // Spread = max(|0.90-0.92|, |0.95-0.94|) = 0.02; delta 0.04 > 0.02.
  auto a = recipe("plain", 0.91, 0.90, 0.92, 10, 0.01);
  auto b = recipe("smoothquant", 0.95, 0.95, 0.94, 25, 0.03);
  auto v = verdict(a, b);
  EXPECT_EQ(v.outcome, Verdict::Outcome::CandidateBetter);
  EXPECT_NEAR(v.spread, 0.02, 1e-12);
  EXPECT_NEAR(v.recovery_delta, 0.04, 1e-12);
  EXPECT_NEAR(v.extra_wall_seconds, 15, 1e-12);
  EXPECT_NEAR(v.extra_cpu_seconds, 30, 1e-12);
  EXPECT_NEAR(v.extra_money, 0.02, 1e-12);
  EXPECT_NE(v.text.find("smoothquant beats plain"), std::string::npos) << v.text;

  // The reverse.
  v = verdict(b, a);
  EXPECT_EQ(v.outcome, Verdict::Outcome::BaselineBetter);
  EXPECT_NE(v.text.find("smoothquant beats plain"), std::string::npos) << v.text;
  EXPECT_NEAR(v.extra_wall_seconds, -15, 1e-12);

  // Within the spread: the candidate's own halves are far apart.
  auto c = recipe("mse", 0.93, 0.88, 0.98, 12, 0.01);   // spread 0.10 > delta 0.02
  v = verdict(a, c);
  EXPECT_EQ(v.outcome, Verdict::Outcome::NoDifference);
  EXPECT_NE(v.text.find("no measurable difference"), std::string::npos) << v.text;

  // Equal to the spread is not more than it (binary fractions, exact): spread 0.25, delta 0.25.
  EXPECT_EQ(verdict(recipe("a", 0.5, 0.5, 0.75, 1, 0), recipe("b", 0.75, 0.75, 0.75, 1, 0)).outcome,
            Verdict::Outcome::NoDifference);

  // No statistics reused: no "built alone" figures.
  EXPECT_FALSE(verdict(a, b).alone_extra_wall_seconds);
  // The candidate reused statistics: the extra cost had each been built alone comes from the
  // built-alone figures.
  a.alone_wall_seconds = 10, a.alone_cpu_seconds = 20, a.alone_money = 0.01;
  b.alone_wall_seconds = 31, b.alone_cpu_seconds = 59, b.alone_money = 0.035;
  EXPECT_FALSE(verdict(a, b).alone_extra_wall_seconds);   // nothing reused: as run is alone
  b.stats_passes = 2, b.stats_passes_reused = 1;
  v = verdict(a, b);
  ASSERT_TRUE(v.alone_extra_wall_seconds);
  EXPECT_NEAR(*v.alone_extra_wall_seconds, 21, 1e-12);
  EXPECT_NEAR(*v.alone_extra_cpu_seconds, 39, 1e-12);
  EXPECT_NEAR(*v.alone_extra_money, 0.025, 1e-12);
  EXPECT_NE(v.text.find("built alone"), std::string::npos) << v.text;

  // A half without predictions (a one-sequence evaluation set): no spread, no verdict either way.
  v = verdict(recipe("a", 0.5, NAN, 0.5, 1, 0), recipe("b", 0.9, NAN, 0.9, 1, 0));
  EXPECT_EQ(v.outcome, Verdict::Outcome::NoDifference);
  EXPECT_TRUE(std::isnan(v.spread));

  // Zero spread: any positive difference counts.
  EXPECT_EQ(verdict(recipe("a", 0.9, 0.9, 0.9, 1, 0), recipe("b", 0.9001, 0.9001, 0.9001, 1, 0)).outcome,
            Verdict::Outcome::CandidateBetter);
}

TEST(LayerEffect, RatiosBelowPoint9HelpAbove1Point1Hurt) {
  auto a = recipe("plain", 0.9, 0.9, 0.9, 1, 0);
  auto b = recipe("sq", 0.9, 0.9, 0.9, 1, 0);
  a.layers = {{"m.q", "q", 0, 1.0}, {"m.k", "k", 0, 1.0}, {"m.v", "v", 0, 1.0}, {"m.o", "o", 0, 0.0},
              {"m.up", "up", 0, 1.0}};
  b.layers = {{"m.q", "q", 0, 0.5}, {"m.k", "k", 0, 1.05}, {"m.v", "v", 0, 1.5}, {"m.o", "o", 0, 0.1},
              {"m.up", "up", 0, 0.9}};
  auto e = layer_effect(a, b);
  EXPECT_EQ(e.helps, (std::vector<std::string>{"m.q"}));          // 0.9 exactly is not < 0.9
  EXPECT_EQ(e.hurts, (std::vector<std::string>{"m.v", "m.o"}));   // exact baseline, not exact candidate
}

TEST(ServingMemory, MatchesHandArithmetic) {
  // Llama-3-8B-like: 32 layers, 8 KV heads of 128.
  ir::ModelConfig c;
  c.num_hidden_layers = 32;
  c.num_attention_heads = 32;
  c.num_key_value_heads = 8;
  c.hidden_size = 4096;
  c.head_dim = 128;
  // 2 x 32 x 8 x 128 x 640 x 2 = 83,886,080 bytes.
  EXPECT_EQ(kv_cache_bytes_per_request(c, 640), 83886080u);
  auto cases = decision_cases();
  ASSERT_EQ(cases.size(), 2u);
  EXPECT_EQ(cases[0].name, "steady-512-output-128");
  EXPECT_EQ(cases[0].prompt_tokens, 512);
  EXPECT_EQ(cases[0].output_tokens, 128);
  EXPECT_EQ(cases[1].name, "prefill-2048-output-128");
  EXPECT_EQ(cases[1].prompt_tokens, 2048);
  auto m = serving_memory(c, 6'000'000'000ull, 80);
  ASSERT_EQ(m.size(), 2u);
  EXPECT_EQ(m[0].gpu_memory_bytes, 80'000'000'000ull);
  EXPECT_EQ(m[0].weight_bytes, 6'000'000'000ull);
  EXPECT_EQ(m[0].kv_bytes_per_request, 83886080u);
  EXPECT_EQ(m[0].memory_left_bytes, 74'000'000'000ll);
  EXPECT_EQ(m[0].max_concurrent_requests, 74'000'000'000ll / 83886080);   // 882
  EXPECT_EQ(m[0].max_concurrent_requests, 882);
  // 2 x 32 x 8 x 128 x 2176 x 2 = 285,212,672 bytes; 74e9 / that = 259.
  EXPECT_EQ(m[1].kv_bytes_per_request, 285212672u);
  EXPECT_EQ(m[1].max_concurrent_requests, 259);
  // Weights larger than the GPU: negative memory left, no request fits.
  auto big = serving_memory(c, 90'000'000'000ull, 80, cases[0]);
  EXPECT_EQ(big.memory_left_bytes, -10'000'000'000ll);
  EXPECT_EQ(big.max_concurrent_requests, 0);
  // head_dim missing from the config: hidden / heads.
  c.head_dim = 0;
  EXPECT_EQ(kv_cache_bytes_per_request(c, 640), 83886080u);
}

CompareReport hand_report() {
  CompareReport r;
  r.tool_version = "0.1.0";
  r.created_utc = "2026-07-01T00:00:00Z";
  r.model = "/models/tiny";
  r.architecture = "LlamaForCausalLM";
  r.layers = 2;
  r.hidden_size = 64;
  r.num_key_value_heads = 2;
  r.head_dim = 16;
  r.bf16_bytes = 200000;
  r.calibration = {"calib.jsonl", "00ff", 8, 512, 64, 0, "records"};
  r.evaluation = {"eval.jsonl", "11ee", 6, 384, 64, 0, "records"};
  r.predictions = 378;
  r.half_sequences = {3, 3};
  r.precision = "f32";
  r.threads = 2;
  r.price_per_hour = 3.5;
  r.gpu_memory_gb = 80;
  r.reference_perplexity = 12.5;
  ir::ModelConfig c;
  c.num_hidden_layers = 2;
  c.num_attention_heads = 4;
  c.num_key_value_heads = 2;
  c.hidden_size = 64;
  c.head_dim = 16;
  auto a = recipe("plain", 0.9123, 0.9100, 0.9150, 1.5, 0.0015);
  auto b = recipe("smoothquant", 0.9456, 0.9440, 0.9470, 2.5, 0.0024);
  const char* roles[] = {"q", "k", "v", "o", "gate", "up", "down"};
  for (int layer = 0; layer < 2; ++layer)
    for (int i = 0; i < 7; ++i) {
      const std::string module = "model.layers." + std::to_string(layer) + (i < 4 ? ".self_attn." : ".mlp.") +
                                 roles[i] + "_proj";
      a.layers.push_back({module, roles[i], layer, 0.01 * (i + 1)});
      b.layers.push_back({module, roles[i], layer, i == 0 ? 0.002 : i == 6 ? 0.2 : 0.01 * (i + 1)});
    }
  for (auto* rec : {&a, &b}) {
    rec->artifact_bytes = 60000;
    rec->effective_bits_per_weight = 4.5;
    rec->stages = {{"open", 0.01, 0.01, 1 << 20}, {"stats", 0.5, 1.0, 2 << 20}, {"pack", 0.2, 0.4, 3 << 20}};
    rec->build_cpu_seconds = 1.41;
    rec->peak_rss_bytes = 3 << 20;
    rec->serving = serving_memory(c, rec->artifact_bytes, 80);
  }
  b.stages.insert(b.stages.begin() + 2, ReportStage{"smoothquant", 0.3, 0.3, 3 << 20});
  b.stats_reused = true;
  a.stats_passes = 1, b.stats_passes = 1, b.stats_passes_reused = 1;
  a.alone_wall_seconds = a.build_wall_seconds, a.alone_cpu_seconds = a.build_cpu_seconds, a.alone_money = a.money;
  b.alone_wall_seconds = b.build_wall_seconds + 0.5, b.alone_cpu_seconds = b.build_cpu_seconds + 1.0;
  b.alone_money = *b.alone_wall_seconds / 3600 * 3.5;
  r.recipes = {a, b};
  return r;
}

// Tags balance: every <tag> is closed by </tag> in order, or self-closed.
bool balanced_xml(const std::string& s, std::string* why) {
  std::vector<std::string> stack;
  size_t i = 0;
  while ((i = s.find('<', i)) != std::string::npos) {
    const size_t j = s.find('>', i);
    if (j == std::string::npos) return *why = "unterminated tag", false;
    std::string tag = s.substr(i + 1, j - i - 1);
    i = j + 1;
    if (tag.empty()) return *why = "empty tag", false;
    if (tag[0] == '?' || tag[0] == '!') continue;
    if (tag.back() == '/') continue;
    if (tag[0] == '/') {
      const std::string name = tag.substr(1);
      if (stack.empty() || stack.back() != name) return *why = "unexpected </" + name + ">", false;
      stack.pop_back();
      continue;
    }
    stack.push_back(tag.substr(0, tag.find_first_of(" \t\n")));
  }
  if (!stack.empty()) return *why = "unclosed <" + stack.back() + ">", false;
  return true;
}

TEST(Report, MarkdownHasEverySection) {
  const auto md = render_markdown(hand_report());
  for (const char* s : {"# fp4c compare: /models/tiny", "## Accuracy against BF16", "## Verdict", "## Size",
                        "## Build cost", "## Serving memory (computed, not measured)", "## Per-Linear output error",
                        "steady-512-output-128", "prefill-2048-output-128", "layer_error.svg", "recovery.svg",
                        "smoothquant beats plain", "0.9456", "0.9123", "12.500000", "| 1 of 1 | 3.00 |"})
    EXPECT_NE(md.find(s), std::string::npos) << s << "\n" << md;
  // Helps: q_proj of both layers (ratio 0.2); hurts: down_proj of both (ratio 2.86).
  EXPECT_NE(md.find("- helps 2: `model.layers.0.self_attn.q_proj`, `model.layers.1.self_attn.q_proj`"),
            std::string::npos)
      << md;
  EXPECT_NE(md.find("- hurts 2: `model.layers.0.mlp.down_proj`, `model.layers.1.mlp.down_proj`"), std::string::npos)
      << md;
  // The per-pass table has the smoothquant pass, absent from plain.
  EXPECT_NE(md.find("| smoothquant | - | - | 0.300 | 0.300 |"), std::string::npos) << md;
  // Serving memory: 2 x 2 layers x 2 heads x 16 x 640 tokens x 2 bytes = 163,840 bytes.
  EXPECT_NE(md.find("163.84 kB"), std::string::npos) << md;
}

TEST(Report, JsonHoldsEverything) {
  const auto j = to_json(hand_report());
  ASSERT_EQ(j["recipes"].size(), 2u);
  EXPECT_EQ(j["recipes"][0]["name"], "plain");
  EXPECT_DOUBLE_EQ(j["recipes"][1]["recovery"].get<double>(), 0.9456);
  EXPECT_DOUBLE_EQ(j["recipes"][1]["half_recovery"][1].get<double>(), 0.9470);
  EXPECT_EQ(j["recipes"][0]["layers"].size(), 14u);
  EXPECT_EQ(j["recipes"][1]["layers"][0]["module"], "model.layers.0.self_attn.q_proj");
  EXPECT_EQ(j["recipes"][1]["build"]["stages"].size(), 4u);
  EXPECT_EQ(j["recipes"][1]["build"]["stats_reused"], true);
  EXPECT_EQ(j["recipes"][1]["build"]["stats_passes_reused"], 1);
  EXPECT_NEAR(j["recipes"][1]["build"]["alone_wall_seconds"].get<double>(), 3.0, 1e-12);
  EXPECT_NEAR(j["verdicts"][0]["alone_extra_wall_seconds"].get<double>(), 1.5, 1e-12);
  EXPECT_EQ(j["recipes"][0]["serving_memory"].size(), 2u);
  EXPECT_EQ(j["recipes"][0]["serving_memory"][0]["kv_bytes_per_request"], 163840);
  EXPECT_EQ(j["recipes"][0]["serving_memory"][0]["note"], "computed, not measured");
  ASSERT_EQ(j["verdicts"].size(), 1u);
  EXPECT_EQ(j["verdicts"][0]["outcome"], "candidate_better");
  EXPECT_NEAR(j["verdicts"][0]["spread"].get<double>(), 0.005, 1e-12);
  EXPECT_NEAR(j["verdicts"][0]["extra_wall_seconds"].get<double>(), 1.0, 1e-12);
  EXPECT_EQ(j["verdicts"][0]["layers_helped"].size(), 2u);
  EXPECT_EQ(j["calibration"]["path"], "calib.jsonl");
  EXPECT_EQ(j["evaluation"]["samples"], 6);
  // Round trip through text.
  EXPECT_EQ(nlohmann::json::parse(j.dump()), j);
}

TEST(Report, SvgPlotsAreBalancedAndHoldTheFigures) {
  const auto r = hand_report();
  std::string why;
  const auto layers = layer_error_svg(r);
  EXPECT_TRUE(balanced_xml(layers, &why)) << why << "\n" << layers;
  EXPECT_EQ(layers.rfind("<svg", 0), 0u);
  // One bar per Linear and recipe, with its value in the tooltip.
  const std::regex bar("<rect [^>]*><title>");
  EXPECT_EQ(std::distance(std::sregex_iterator(layers.begin(), layers.end(), bar), std::sregex_iterator()), 28);
  EXPECT_NE(layers.find("model.layers.1.mlp.down_proj smoothquant: 0.2</title>"), std::string::npos) << layers;
  EXPECT_NE(layers.find("log scale"), std::string::npos);
  EXPECT_NE(layers.find(">plain</text>"), std::string::npos);        // legend
  EXPECT_NE(layers.find(">smoothquant</text>"), std::string::npos);
  EXPECT_NE(layers.find(">1e-3</text>"), std::string::npos);         // decades from 0.002 ..
  EXPECT_NE(layers.find(">1e0</text>"), std::string::npos);          // .. to 0.2
  EXPECT_NE(layers.find(">L1.down</text>"), std::string::npos);

  const auto rec = recovery_svg(r);
  EXPECT_TRUE(balanced_xml(rec, &why)) << why << "\n" << rec;
  EXPECT_NE(rec.find(">0.9456</text>"), std::string::npos) << rec;
  EXPECT_NE(rec.find(">0.9123</text>"), std::string::npos) << rec;
  EXPECT_NE(rec.find("halves 0.9440, 0.9470"), std::string::npos) << rec;

  // Names are escaped.
  auto odd = r;
  odd.recipes[1].name = "a<b&c";
  EXPECT_TRUE(balanced_xml(layer_error_svg(odd), &why)) << why;
  EXPECT_NE(recovery_svg(odd).find("a&lt;b&amp;c"), std::string::npos);
}

TEST(Report, WritesTheFourFiles) {
  fp4c::testing::TempDir tmp;
  const auto dir = tmp.path / "report";
  ASSERT_TRUE(write_report(hand_report(), dir.string()).ok());
  for (const char* f : {kReportMarkdown, kReportJson, kLayerErrorSvg, kRecoverySvg})
    EXPECT_GT(std::filesystem::file_size(dir / f), 100u) << f;
  auto j = nlohmann::json::parse(fp4c::testing::read_file(dir / kReportJson));
  EXPECT_EQ(j["recipes"].size(), 2u);
}

TEST(Report, SingleRecipeAndNoLayers) {
  auto r = hand_report();
  r.recipes.resize(1);
  r.recipes[0].layers.clear();
  const auto md = render_markdown(r);
  EXPECT_EQ(md.find("## Verdict"), std::string::npos);
  EXPECT_NE(md.find("No per-Linear figures."), std::string::npos);
  std::string why;
  EXPECT_TRUE(balanced_xml(layer_error_svg(r), &why)) << why;
  EXPECT_EQ(to_json(r)["verdicts"].size(), 0u);
}

}  // namespace
}  // namespace fp4c::pipeline
