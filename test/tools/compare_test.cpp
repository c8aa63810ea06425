// End to end: `fp4c compare` on a synthetic model (fp4c-synth --preset tiny) and, when present, on
// the real stories260K: the report files, their figures, the verdict, and the failure paths (unknown
// recipe, existing --out) leaving no report behind. Also `fp4c eval --per-layer`.
#include <gtest/gtest.h>
#include <nlohmann/json.hpp>

#include <cmath>

#include "backends/manifest.h"
#include "test/support/tiny_checkpoint.h"
#include "pipeline/evaluate.h"

namespace fp4c::testing {
namespace {

const fs::path kStories = fs::path(FP4C_SHARED_DIR) / "models" / "stories260K";

using Synthetic = SynthModel;

nlohmann::json read_json(const fs::path& p) { return nlohmann::json::parse(read_file(p)); }

// Balanced tags (a cheap XML well-formedness check).
bool balanced(const std::string& s) {
  std::vector<std::string> stack;
  size_t i = 0;
  while ((i = s.find('<', i)) != std::string::npos) {
    const size_t j = s.find('>', i);
    if (j == std::string::npos) return false;
    std::string tag = s.substr(i + 1, j - i - 1);
    i = j + 1;
    if (tag.empty() || tag[0] == '?' || tag[0] == '!' || tag.back() == '/') continue;
    if (tag[0] == '/') {
      if (stack.empty() || stack.back() != tag.substr(1)) return false;
      stack.pop_back();
    } else {
      stack.push_back(tag.substr(0, tag.find(' ')));
    }
  }
  return stack.empty();
}

void check_report(const fs::path& out, const std::vector<std::string>& recipes) {
  for (const char* f : {"report.md", "report.json", "layer_error.svg", "recovery.svg"})
    ASSERT_TRUE(fs::exists(out / f)) << f;
  EXPECT_TRUE(balanced(read_file(out / "layer_error.svg")));
  EXPECT_TRUE(balanced(read_file(out / "recovery.svg")));
  const auto j = read_json(out / "report.json");
  ASSERT_EQ(j["recipes"].size(), recipes.size());
  size_t layers = 0;
  for (size_t i = 0; i < recipes.size(); ++i) {
    const auto& r = j["recipes"][i];
    EXPECT_EQ(r["name"], recipes[i]);
    ASSERT_TRUE(r["recovery"].is_number()) << r.dump();
    const double rec = r["recovery"].get<double>();
    EXPECT_TRUE(std::isfinite(rec) && rec > 0) << rec;
    for (int h = 0; h < 2; ++h) EXPECT_TRUE(r["half_recovery"][h].is_number()) << r.dump();
    EXPECT_GT(r["layers"].size(), 0u);
    if (i == 0) layers = r["layers"].size();
    EXPECT_EQ(r["layers"].size(), layers);
    for (const auto& l : r["layers"]) {
      EXPECT_EQ(l["module"].get<std::string>().rfind("model.layers.", 0), 0u) << l.dump();
      EXPECT_TRUE(l["output_error"].is_number());
    }
    EXPECT_GT(r["artifact_bytes"].get<uint64_t>(), 0u);
    EXPECT_GT(r["effective_bits_per_weight"].get<double>(), 4.0);
    EXPECT_GT(r["build"]["stages"].size(), 0u);
    EXPECT_GT(r["build"]["wall_seconds"].get<double>(), 0);
    ASSERT_EQ(r["serving_memory"].size(), 2u);
    EXPECT_EQ(r["serving_memory"][0]["case"], "steady-512-output-128");
    EXPECT_EQ(r["serving_memory"][1]["case"], "prefill-2048-output-128");
    EXPECT_TRUE(fs::exists(out / "artifacts" / recipes[i] / "fp4c-manifest.json"));
  }
  ASSERT_EQ(j["verdicts"].size(), recipes.size() - 1);
  for (const auto& v : j["verdicts"]) {
    EXPECT_EQ(v["baseline"], recipes[0]);
    EXPECT_TRUE(v["outcome"] == "candidate_better" || v["outcome"] == "baseline_better" ||
                v["outcome"] == "no_measurable_difference");
  }
  const auto md = read_file(out / "report.md");
  for (const char* s : {"## Accuracy against BF16", "## Verdict", "## Serving memory (computed, not measured)",
                        "## Per-Linear output error", "## Build cost", "## Size"})
    EXPECT_NE(md.find(s), std::string::npos) << s;
  // No staging directory left beside the report.
  for (const auto& e : fs::directory_iterator(out.parent_path()))
    EXPECT_EQ(e.path().filename().string().find(".fp4c-tmp"), std::string::npos) << e.path();
}

TEST(Compare, SyntheticPlainVsSmoothquant) {
  Synthetic s;
  const auto out = s.tmp.path / "cmp";
  auto r = fp4c("compare --model " + s.model.string() + " --calib " + s.calib.string() + " --eval " +
                s.eval.string() + " --recipes plain,smoothquant --out " + out.string() +
                " --price-per-hour 3.5 --gpu-memory-gb 24");
  ASSERT_EQ(r.exit_code, 0) << r.out;
  check_report(out, {"plain", "smoothquant"});
  EXPECT_NE(r.out.find("report.md"), std::string::npos) << r.out;
  EXPECT_NE(r.out.find("smoothquant vs plain"), std::string::npos) << r.out;
  const auto j = read_json(out / "report.json");
  EXPECT_DOUBLE_EQ(j["gpu_memory_gb"].get<double>(), 24);
  EXPECT_EQ(j["recipes"][0]["serving_memory"][0]["gpu_memory_bytes"], 24000000000ull);
  // The statistics were collected once: the second recipe reused them.
  EXPECT_EQ(j["recipes"][1]["build"]["stats_reused"], true);
  // plain: one stats pass, measured; smoothquant: stats (reused), smoothquant, stats#2 (measured).
  EXPECT_EQ(j["recipes"][0]["build"]["stats_passes"], 1);
  EXPECT_EQ(j["recipes"][0]["build"]["stats_passes_reused"], 0);
  EXPECT_EQ(j["recipes"][1]["build"]["stats_passes"], 2);
  EXPECT_EQ(j["recipes"][1]["build"]["stats_passes_reused"], 1);
  EXPECT_GT(j["recipes"][1]["build"]["alone_wall_seconds"].get<double>(),
            j["recipes"][1]["build"]["wall_seconds"].get<double>());
  EXPECT_TRUE(j["verdicts"][0]["alone_extra_wall_seconds"].is_number());
  // The artifacts' manifests hold the per-Linear errors of their evaluation.
  auto m = backends::read_manifest((out / "artifacts" / "plain" / "fp4c-manifest.json").string());
  ASSERT_TRUE(m.ok()) << m.error().message;
  ASSERT_EQ(m->accuracy_size(), 1);
  EXPECT_EQ(size_t(m->accuracy(0).layers_size()), j["recipes"][0]["layers"].size());

  // An existing --out is refused without --force, and kept as it was.
  r = fp4c("compare --model " + s.model.string() + " --calib " + s.calib.string() + " --eval " + s.eval.string() +
           " --recipes plain --out " + out.string());
  EXPECT_NE(r.exit_code, 0);
  EXPECT_NE(r.out.find("--force"), std::string::npos) << r.out;
  EXPECT_EQ(read_json(out / "report.json")["recipes"].size(), 2u);
}

TEST(Compare, UnknownRecipeFailsBeforeAnyWorkAndWritesNothing) {
  Synthetic s;
  const auto out = s.tmp.path / "cmp";
  auto r = fp4c("compare --model " + s.model.string() + " --calib " + s.calib.string() + " --eval " +
                s.eval.string() + " --recipes plain,no-such-recipe --out " + out.string());
  EXPECT_NE(r.exit_code, 0);
  EXPECT_NE(r.out.find("no-such-recipe"), std::string::npos) << r.out;
  EXPECT_EQ(r.out.find("quantizing"), std::string::npos) << r.out;   // failed before the first recipe ran
  EXPECT_FALSE(fs::exists(out));
  for (const auto& e : fs::directory_iterator(s.tmp.path))
    EXPECT_EQ(e.path().filename().string().find(".fp4c-tmp"), std::string::npos) << e.path();
}

TEST(Compare, DuplicateRecipeIsAnError) {
  Synthetic s;
  auto r = fp4c("compare --model " + s.model.string() + " --calib " + s.calib.string() + " --eval " +
                s.eval.string() + " --recipes plain,plain --out " + (s.tmp.path / "x").string());
  EXPECT_NE(r.exit_code, 0);
  EXPECT_FALSE(fs::exists(s.tmp.path / "x"));
}

TEST(EvalPerLayer, NamesEveryQuantizedLinearAndRecordsThem) {
  Synthetic s;
  const auto art = s.tmp.path / "art";
  auto q = fp4c("quantize --quiet --model " + s.model.string() + " --out " + art.string() + " --calib " +
                s.calib.string());
  ASSERT_EQ(q.exit_code, 0) << q.out;
  auto r = fp4c("eval --per-layer --model " + s.model.string() + " --artifact " + art.string() + " --data " +
                s.eval.string());
  ASSERT_EQ(r.exit_code, 0) << r.out;
  EXPECT_NE(r.out.find("model.layers.0.self_attn.q_proj"), std::string::npos) << r.out;
  EXPECT_NE(r.out.find("output error"), std::string::npos) << r.out;
  auto m = backends::read_manifest((art / "fp4c-manifest.json").string());
  ASSERT_TRUE(m.ok());
  ASSERT_EQ(m->accuracy_size(), 1);
  ASSERT_GT(m->accuracy(0).layers_size(), 0);
  for (const auto& l : m->accuracy(0).layers()) {
    EXPECT_EQ(l.module().rfind("model.layers." + std::to_string(l.layer()) + ".", 0), 0u) << l.module();
    EXPECT_TRUE(std::isfinite(l.output_error()) && l.output_error() >= 0) << l.module();
  }
  // The library call gives the same figures, and the halves add up to the whole.
  pipeline::EvalRequest e;
  e.model = s.model.string();
  e.artifact = art.string();
  e.data = s.eval.string();
  e.record_in_manifest = false;
  auto o = pipeline::run_evaluation(e);
  ASSERT_TRUE(o.ok()) << o.error().message;
  const auto h = pipeline::halves(o->result);
  EXPECT_EQ(h[0].sequences + h[1].sequences, o->sequences);
  EXPECT_EQ(h[0].predictions + h[1].predictions, o->result.predictions);
  EXPECT_NEAR(h[0].reference_nll + h[1].reference_nll, o->result.reference_nll, 1e-6 * o->result.reference_nll);
  EXPECT_NEAR(h[0].nll + h[1].nll, *o->result.nll, 1e-6 * *o->result.nll);
  EXPECT_TRUE(o->layers.empty());   // per_layer not asked
  // --per-layer without an artifact is refused.
  r = fp4c("eval --per-layer --model " + s.model.string() + " --data " + s.eval.string());
  EXPECT_NE(r.exit_code, 0);
}

TEST(Compare, Stories260K) {
  if (!fs::exists(kStories / "model.safetensors")) GTEST_SKIP() << "no " << kStories;
  TempDir tmp;
  const auto out = tmp.path / "cmp";
  auto r = fp4c("compare --model " + kStories.string() + " --calib " + (kStories / "calib.jsonl").string() +
                " --eval " + (kStories / "eval.jsonl").string() +
                " --recipes plain,smoothquant --calib-samples 16 --eval-samples 16 --out " + out.string());
  ASSERT_EQ(r.exit_code, 0) << r.out;
  check_report(out, {"plain", "smoothquant"});
  const auto j = read_json(out / "report.json");
  EXPECT_EQ(j["evaluation"]["samples"], 16);
  EXPECT_EQ(j["calibration"]["samples"], 16);
  EXPECT_EQ(j["model"]["layers"], 5);
  // 5 layers x 4 KV heads x head_dim 8: 2 x 5 x 4 x 8 x 640 x 2 bytes per steady request.
  EXPECT_EQ(j["recipes"][0]["serving_memory"][0]["kv_bytes_per_request"], 2 * 5 * 4 * 8 * 640 * 2);
  for (const auto& rec : j["recipes"]) {
    EXPECT_GT(rec["recovery"].get<double>(), 0.5);
    EXPECT_LE(rec["recovery"].get<double>(), 1.1);
  }
}

}  // namespace
}  // namespace fp4c::testing
