// Recipes and the pipeline through `fp4c quantize`: `fp4c recipes`, recipe files (and their errors),
// --recipe / --passes / --print-after, what each pass needs of the passes before it, SmoothQuant in the
// artifact (smoothed norms, smoothing records), statistics reused per rewrite, determinism; and on
// stories260K, SmoothQuant's W4A4 recovery against the independent reference (0.861).
#include <gtest/gtest.h>
#include <nlohmann/json.hpp>

#include <cstdio>
#include <cstring>
#include <map>

#include "backends/manifest.h"
#include "formats/safetensors.h"
#include "test/support/tiny_checkpoint.h"

namespace fp4c::testing {
namespace {

const fs::path kStories = fs::path(FP4C_SHARED_DIR) / "models" / "stories260K";

struct Synth : SynthModel {
  std::string base(const fs::path& out) const {
    return "quantize --model " + model.string() + " --out " + out.string() + " --calib " + calib.string();
  }
};

TEST(Recipes, ListAndCheck) {
  auto r = fp4c("recipes");
  ASSERT_EQ(r.exit_code, 0) << r.out;
  for (const char* name : {"plain", "smoothquant", "best"}) EXPECT_NE(r.out.find(name), std::string::npos) << name;
  EXPECT_NE(r.out.find("stats{second_moments=false},smoothquant{alpha=0.5,min_scale=1e-5,extra=false},stats"),
            std::string::npos)
      << r.out;

  TempDir tmp;
  write_text(tmp.path / "mine.json",
             R"({"name": "mine", "description": "mse after smoothing", "scheme": "w4a4",
                 "pipeline": ["stats", "smoothquant{alpha=0.6}", "stats", "blockscale{rule=mse}", "pack"]})");
  r = fp4c("recipes --check " + (tmp.path / "mine.json").string());
  ASSERT_EQ(r.exit_code, 0) << r.out;
  EXPECT_NE(r.out.find("smoothquant{alpha=0.6,"), std::string::npos) << r.out;
  EXPECT_NE(r.out.find("blockscale{rule=mse}"), std::string::npos) << r.out;

  struct Bad {
    const char* text;
    const char* expect;
  } bad[] = {
      {R"({"pipeline": "stats,pack",)", "not valid JSON"},
      {R"({"pipeline": "stats,pack", "passes": 1})", "unknown key 'passes'"},
      {R"({"name": "x"})", "no 'pipeline'"},
      {R"({"pipeline": "stats,smoothqant,pack"})", "column 7: unknown pass 'smoothqant'"},
      {R"({"pipeline": ["stats", 3]})", "entries must be strings"},
      {R"({"pipeline": "stats,pack", "scheme": "w8a8"})", "'scheme'"},
      {R"([1, 2])", "JSON object"},
  };
  for (const auto& b : bad) {
    write_text(tmp.path / "bad.json", b.text);
    r = fp4c("recipes --check " + (tmp.path / "bad.json").string());
    EXPECT_NE(r.exit_code, 0) << b.text;
    EXPECT_NE(r.out.find("bad.json"), std::string::npos) << r.out;
    EXPECT_NE(r.out.find(b.expect), std::string::npos) << b.text << " -> " << r.out;
  }
}

TEST(Recipes, PipelineErrorsComeBeforeAnyWork) {
  Synth s;
  const auto out = s.tmp.path / "o";
  struct Case {
    std::string args, expect;
  } cases[] = {
      {" --recipe nope", "unknown recipe 'nope' (built-in: plain, smoothquant"},
      {" --recipe plain --passes stats,blockscale,pack", "--passes or --recipe, not both"},
      {" --passes 'stats,smoothquant,blockscale,pack'", "'stats' in the pipeline, after any 'smoothquant'"},
      {" --passes 'stats,smoothquant,smoothquant,stats,blockscale,pack'", "needs 'stats' earlier"},
      {" --passes 'stats,blockscale,pack,stats'", "must end in 'pack'"},
      {" --passes 'smoothquant,stats,blockscale,pack'", "pass 'smoothquant' needs 'stats' earlier"},
      {" --scheme w4a16 --passes 'stats,smoothquant,blockscale{rule=weighted},pack'", "rule=weighted"},
      {" --recipe plain --print-after stat", "--print-after: unknown pass 'stat'"},
      {" --passes 'stats,gptq,blockscale,pack'", "pass 'gptq' needs the input second moments"},
      {" --passes 'stats{second_moments=true},smoothquant,stats,gptq,blockscale,pack'", "needs the input second moments"},
      {" --passes 'stats,blockscale{rule=localhessian},pack'", "blockscale{rule=localhessian} needs the input second"},
      {" --passes 'stats{second_moments=true},gptq{block=20},blockscale,pack'", "'20' is not a multiple of 16 in [16, "},
      {" --recipe " + (s.tmp.path / "missing.json").string(), "missing.json: cannot open: No such file"},
  };
  for (const auto& c : cases) {
    auto r = fp4c(s.base(out) + c.args);
    EXPECT_NE(r.exit_code, 0) << c.args;
    EXPECT_NE(r.out.find(c.expect), std::string::npos) << c.args << " -> " << r.out;
    EXPECT_FALSE(fs::exists(out)) << c.args;
  }
}

TEST(Recipes, SmoothQuantRecipeWritesSmoothedNormsAndRecords) {
  Synth s;
  const auto cache = s.tmp.path / "cache";
  const auto sq = s.tmp.path / "sq", plain = s.tmp.path / "plain";
  auto r = fp4c(s.base(plain) + " --quiet --recipe plain --stats-cache " + cache.string());
  ASSERT_EQ(r.exit_code, 0) << r.out;
  r = fp4c(s.base(sq) + " --recipe smoothquant --stats-cache " + cache.string() +
           " --print-after smoothquant --print-after stats --threads 1");
  ASSERT_EQ(r.exit_code, 0) << r.out;
  EXPECT_NE(r.out.find("--- after smoothquant (run 1) ---"), std::string::npos) << r.out;
  EXPECT_NE(r.out.find("--- after stats (run 2) ---"), std::string::npos) << r.out;
  EXPECT_NE(r.out.find("post_attention_layernorm"), std::string::npos) << r.out;

  auto m = backends::read_manifest((sq / backends::kManifestFile).string());
  ASSERT_TRUE(m.ok()) << m.error().message;
  EXPECT_EQ(m->recipe(), "smoothquant");
  EXPECT_NE(m->options().pipeline().find("smoothquant{alpha=0.5"), std::string::npos);
  // The first statistics came from the cache the plain recipe filled; the smoothed model's did not.
  EXPECT_TRUE(m->options().calibration().stats_from_cache());
  int cached = 0;
  for (const auto& e : fs::directory_iterator(cache)) cached += e.path().extension() == ".fp4c-stats";
  EXPECT_EQ(cached, 2);
  std::vector<std::string> stages;
  for (const auto& st : m->build_cost().stages()) stages.push_back(st.stage());
  EXPECT_EQ(stages, (std::vector<std::string>{"open", "stats", "smoothquant", "stats#2", "blockscale", "pack",
                                              "finalize"}));
  ASSERT_GT(m->smoothing_size(), 0);
  for (const auto& rec : m->smoothing()) {
    EXPECT_TRUE(rec.mapping() == "attn" || rec.mapping() == "mlp");
    EXPECT_GT(rec.factor_max(), 0.0f);
  }
  int smoothed = 0;
  for (const auto& t : m->tensors()) smoothed += t.smoothed();
  EXPECT_EQ(smoothed, 7 * m->smoothing_size() / 2);   // per layer: 2 norms + q, k, v, gate, up

  // The artifact's norms are the smoothed ones; the plain artifact's are the source's.
  auto a = safetensors::File::open((sq / "model.safetensors").string());
  auto b = safetensors::File::open((plain / "model.safetensors").string());
  ASSERT_TRUE(a.ok() && b.ok());
  const auto* na = a->find("model.layers.0.input_layernorm.weight");
  const auto* nb = b->find("model.layers.0.input_layernorm.weight");
  ASSERT_TRUE(na && nb);
  EXPECT_EQ(na->dtype, nb->dtype);
  EXPECT_NE(std::memcmp(a->bytes(*na).data(), b->bytes(*nb).data(), a->bytes(*na).size()), 0);

  // Same inputs, same options: the same bytes at 2 threads (statistics now all from the cache).
  const auto again = s.tmp.path / "again";
  r = fp4c(s.base(again) + " --quiet --recipe smoothquant --threads 2 --stats-cache " + cache.string());
  ASSERT_EQ(r.exit_code, 0) << r.out;
  EXPECT_EQ(read_file(sq / "model.safetensors"), read_file(again / "model.safetensors"));
  EXPECT_EQ(read_file(sq / "config.json"), read_file(again / "config.json"));
  // And the same bytes computing the statistics afresh.
  const auto fresh = s.tmp.path / "fresh";
  r = fp4c(s.base(fresh) + " --quiet --recipe smoothquant --threads 2");
  ASSERT_EQ(r.exit_code, 0) << r.out;
  EXPECT_EQ(read_file(sq / "model.safetensors"), read_file(fresh / "model.safetensors"));
}

TEST(Recipes, OutliersPassReachesTheManifestAndInspect) {
  Synth s;   // fp4c-synth plants outlier channels (norm gammas, weight input channels)
  const auto out = s.tmp.path / "o";
  auto r = fp4c(s.base(out) + " --passes 'stats,outliers{k=6,top=4},blockscale,pack' --print-after outliers");
  ASSERT_EQ(r.exit_code, 0) << r.out;
  EXPECT_NE(r.out.find("--- after outliers (run 1) ---"), std::string::npos) << r.out;
  auto m = backends::read_manifest((out / backends::kManifestFile).string());
  ASSERT_TRUE(m.ok());
  int with = 0;
  for (const auto& t : m->tensors()) {
    if (!t.has_outliers()) continue;
    ++with;
    EXPECT_EQ(t.outliers().k(), 6.0);
    EXPECT_EQ(t.outliers().weight().top_channels_size(), 4);
    if (t.role() == "q" || t.role() == "gate") {
      EXPECT_TRUE(t.outliers().has_activation()) << t.name();
    }
  }
  EXPECT_GE(with, 14);   // 7 Linears per layer, 2 layers (and lm_head when untied)
  r = fp4c("inspect " + out.string() + " --outliers --top 5");
  ASSERT_EQ(r.exit_code, 0) << r.out;
  EXPECT_NE(r.out.find("proj"), std::string::npos) << r.out;
}

TEST(Recipes, SensitivityPassKeepsGroupsWithinTheBudget) {
  Synth s;
  const auto out = s.tmp.path / "o";
  auto r = fp4c(s.base(out) + " --passes 'stats,sensitivity{budget=30%},blockscale,pack' --print-after sensitivity");
  ASSERT_EQ(r.exit_code, 0) << r.out;
  EXPECT_NE(r.out.find("kept in BF16:"), std::string::npos) << r.out;
  auto m = backends::read_manifest((out / backends::kManifestFile).string());
  ASSERT_TRUE(m.ok());
  uint64_t kept = 0, quantizable = 0;
  int ranked = 0;
  for (const auto& t : m->tensors()) {
    if (t.has_sensitivity()) {
      ++ranked;
      EXPECT_GE(t.sensitivity().rank(), 1);
      EXPECT_GT(t.sensitivity().output_error(), 0.0);
    }
    if (t.role() == "lm_head" || t.role() == "embedding" || t.shape_size() != 2 || !t.has_sensitivity()) continue;
    const uint64_t n = uint64_t(t.shape(0) * t.shape(1));
    quantizable += n;
    if (t.skip().kind() == "sensitivity" || t.skip().kind() == "fused_with_skipped") kept += n;
  }
  EXPECT_GE(ranked, 14);
  EXPECT_GT(kept, 0u);
  EXPECT_LE(double(kept), 0.30 * double(quantizable));
}

TEST(Recipes, NanInASmoothedWeightIsAnErrorNamingIt) {
  TempDir tmp;
  TinyShape shape;
  auto tensors = tiny_tensors(shape, 11);
  for (auto& t : tensors)
    if (t.name == "model.layers.1.self_attn.k_proj.weight") t.bf16[100] = 0x7FC0;   // NaN
  write_checkpoint(tmp.path / "m", shape, tensors);
  write_text(tmp.path / "calib.jsonl", "{\"input_ids\": [1, 5, 9, 12, 40, 3, 7, 8]}\n{\"input_ids\": [2, 6, 10, 11, 30]}\n");
  const auto out = tmp.path / "o";
  auto r = fp4c("quantize --model " + (tmp.path / "m").string() + " --out " + out.string() + " --calib " +
                (tmp.path / "calib.jsonl").string() + " --recipe smoothquant");
  EXPECT_NE(r.exit_code, 0);
  EXPECT_NE(r.out.find("model.layers.1.self_attn.k_proj.weight"), std::string::npos) << r.out;
  EXPECT_NE(r.out.find("NaN"), std::string::npos) << r.out;
  EXPECT_FALSE(fs::exists(out));
}

TEST(Recipes, RecipeFileDrivesQuantize) {
  Synth s;
  write_text(s.tmp.path / "w16.json", R"({"name": "w16-mse", "scheme": "w4a16", "pipeline": "blockscale{rule=mse},pack"})");
  const auto out = s.tmp.path / "o";
  auto r = fp4c("quantize --quiet --model " + s.model.string() + " --out " + out.string() + " --recipe " +
                (s.tmp.path / "w16.json").string());
  ASSERT_EQ(r.exit_code, 0) << r.out;
  auto m = backends::read_manifest((out / backends::kManifestFile).string());
  ASSERT_TRUE(m.ok());
  EXPECT_EQ(m->options().scheme(), "w4a16");
  EXPECT_EQ(m->options().pipeline(), "blockscale{rule=mse},pack");
  EXPECT_NE(m->recipe().find("w16-mse"), std::string::npos);
  // A recipe for one scheme refuses another.
  r = fp4c(s.base(s.tmp.path / "o2") + " --scheme w4a4 --recipe " + (s.tmp.path / "w16.json").string());
  EXPECT_NE(r.exit_code, 0);
  EXPECT_NE(r.out.find("is for w4a16"), std::string::npos) << r.out;
}

TEST(Recipes, Stories260KGptqAndLocalHessianBeatPlain) {
  if (!fs::exists(kStories / "model.safetensors")) GTEST_SKIP() << "no " << kStories;
  TempDir tmp;
  auto recovery = [&](const std::string& passes) {
    const auto out = tmp.path / "a";
    fs::remove_all(out);
    auto r = fp4c("quantize --quiet --model " + kStories.string() + " --out " + out.string() + " --calib " +
                  (kStories / "calib.jsonl").string() + " --stats-cache " + (tmp.path / "cache").string() +
                  " --passes '" + passes + "'");
    EXPECT_EQ(r.exit_code, 0) << r.out;
    r = fp4c("eval --json --no-manifest --model " + kStories.string() + " --artifact " + out.string() + " --data " +
             (kStories / "eval.jsonl").string());
    EXPECT_EQ(r.exit_code, 0) << r.out;
    return r.exit_code ? 0.0 : nlohmann::json::parse(r.out.substr(r.out.find('{')))["recovery"].get<double>();
  };
  const double plain = recovery("stats,blockscale,pack");
  EXPECT_NEAR(plain, 0.8725, 0.002);
  // Measured: local-Hessian scales 0.8958, GPTQ 0.8952, GPTQ with local-Hessian scales 0.9037 (W4A4).
  EXPECT_GT(recovery("stats{second_moments=true},blockscale{rule=localhessian},pack"), plain + 0.01);
  EXPECT_GT(recovery("stats{second_moments=true},gptq,blockscale,pack"), plain + 0.01);
  EXPECT_GT(recovery("stats{second_moments=true},gptq{scales=localhessian},blockscale,pack"), plain + 0.02);
  // auto (measured 0.905 with 16 of the 64 sequences held out; 0.915 without per-site SmoothQuant).
  EXPECT_GT(recovery("stats{second_moments=true},auto,blockscale,pack"), plain + 0.02);
  EXPECT_GT(recovery("stats{second_moments=true},auto{smoothquant=false},blockscale,pack"), plain + 0.03);
}

TEST(Recipes, AutoRecordsEveryCandidateAndNeedsHeldOutSequences) {
  Synth s;
  const auto out = s.tmp.path / "o";
  auto r = fp4c(s.base(out) + " --recipe auto --print-after auto");
  ASSERT_EQ(r.exit_code, 0) << r.out;
  EXPECT_NE(r.out.find("gptq+localhessian"), std::string::npos) << r.out;
  auto m = backends::read_manifest((out / backends::kManifestFile).string());
  ASSERT_TRUE(m.ok());
  int chosen = 0;
  for (const auto& t : m->tensors()) {
    if (!t.has_quantizer()) continue;
    ++chosen;
    // Every quantizer; a norm's consumers (q, k, v, gate, up) also each one after smoothing their site, at
    // each of the three strengths alpha=by-scheme measures under W4A4 (the scheme with --calib).
    const bool site = t.role() == "q" || t.role() == "k" || t.role() == "v" || t.role() == "gate" || t.role() == "up";
    EXPECT_EQ(t.quantizer().candidates_size(), site ? 28 : 7) << t.name();
    // ... and the layer output errors that decided whether to smooth the site.
    EXPECT_EQ(t.quantizer().has_layer_error_smoothed(), site) << t.name();
    if (site) {
      EXPECT_GT(t.quantizer().layer_error_unsmoothed(), 0.0) << t.name();
    }
    EXPECT_EQ(t.format(), "nvfp4");
  }
  EXPECT_GE(chosen, 14);
  // The planted channels get some sites smoothed; the artifact is the same bytes at 1 and 2 threads.
  EXPECT_GT(m->smoothing_size(), 0);
  const auto one = s.tmp.path / "o1", two = s.tmp.path / "o2";
  ASSERT_EQ(fp4c(s.base(one) + " --quiet --recipe auto --threads 1").exit_code, 0);
  ASSERT_EQ(fp4c(s.base(two) + " --quiet --recipe auto --threads 2").exit_code, 0);
  int files = 0;
  for (const auto& e : fs::directory_iterator(one))
    if (e.path().extension() == ".safetensors") {
      ++files;
      EXPECT_EQ(read_file(e.path()), read_file(two / e.path().filename())) << e.path().filename();
    }
  EXPECT_GT(files, 0);
  r = fp4c("inspect " + out.string());
  ASSERT_EQ(r.exit_code, 0);
  EXPECT_NE(r.out.find("quantizer"), std::string::npos) << r.out;
  // A migration strength outside [0, 1]: a clear error and no artifact.
  r = fp4c(s.base(s.tmp.path / "o3") + " --passes 'stats{second_moments=true},auto{alpha=2},blockscale,pack'");
  EXPECT_NE(r.exit_code, 0);
  EXPECT_NE(r.out.find("option 'alpha' of pass 'auto': '2' is not a number in [0, 1]"), std::string::npos) << r.out;
  EXPECT_FALSE(fs::exists(s.tmp.path / "o3"));
  r = fp4c(s.base(s.tmp.path / "o3") + " --passes 'stats{second_moments=true},auto{alpha=0.3/0.3},blockscale,pack'");
  EXPECT_NE(r.exit_code, 0);
  EXPECT_NE(r.out.find("'0.3/0.3' is not a number in [0, 1], or up to 8 different ones"), std::string::npos) << r.out;
  EXPECT_FALSE(fs::exists(s.tmp.path / "o3"));
  // Several alphas: each site smoothed at the one its layer errs least with (or none), recorded in the manifest
  // (the smoothing records' alpha, every candidate at every alpha, the layer error at each); the same bytes at 1
  // and 2 threads.
  {
    const std::string passes = " --passes 'stats{second_moments=true},auto{alpha=0.3/0.5/0.7},blockscale,pack'";
    const auto a1 = s.tmp.path / "a1", a2 = s.tmp.path / "a2";
    ASSERT_EQ(fp4c(s.base(a1) + " --quiet --threads 1" + passes).exit_code, 0);
    ASSERT_EQ(fp4c(s.base(a2) + " --quiet --threads 2" + passes).exit_code, 0);
    // ... and the recipe's alpha=by-scheme is exactly that under W4A4 (`one`: the recipe, 1 thread).
    for (const auto& e : fs::directory_iterator(a1)) {
      if (e.path().extension() != ".safetensors") continue;
      EXPECT_EQ(read_file(e.path()), read_file(a2 / e.path().filename())) << e.path().filename();
      EXPECT_EQ(read_file(e.path()), read_file(one / e.path().filename())) << e.path().filename();
    }
    auto ma = backends::read_manifest((a1 / backends::kManifestFile).string());
    ASSERT_TRUE(ma.ok());
    EXPECT_GT(ma->smoothing_size(), 0);
    std::map<std::string, float> alpha_of;
    for (const auto& sm : ma->smoothing()) {
      EXPECT_TRUE(sm.alpha() == 0.3f || sm.alpha() == 0.5f || sm.alpha() == 0.7f) << sm.alpha();
      for (const auto& b : sm.balanced()) alpha_of[b] = sm.alpha();
    }
    for (const auto& t : ma->tensors()) {
      if (!t.has_quantizer()) continue;
      const bool site = t.role() == "q" || t.role() == "k" || t.role() == "v" || t.role() == "gate" || t.role() == "up";
      EXPECT_EQ(t.quantizer().candidates_size(), site ? 28 : 7) << t.name();
      EXPECT_EQ(t.quantizer().layer_error_by_alpha_size(), site ? 3 : 0) << t.name();
      const std::string& chosen = t.quantizer().chosen();
      if (auto it = alpha_of.find(t.name()); it != alpha_of.end()) {
        char want[32];
        std::snprintf(want, sizeof want, "smoothquant@%g+", double(it->second));
        EXPECT_EQ(chosen.rfind(want, 0), 0u) << t.name() << " " << chosen;
      } else {
        EXPECT_EQ(chosen.find("smoothquant"), std::string::npos) << t.name() << " " << chosen;
      }
    }
  }
  // Weights-only, alpha=by-scheme is the one strength 0.5: the recipe's bytes are auto{alpha=0.5}'s, and the
  // smoothed candidates are labelled without an alpha (7 + 7 candidates at a site).
  {
    const auto w1 = s.tmp.path / "w1", w2 = s.tmp.path / "w2";
    ASSERT_EQ(fp4c(s.base(w1) + " --quiet --scheme w4a16 --recipe auto").exit_code, 0);
    ASSERT_EQ(fp4c(s.base(w2) + " --quiet --scheme w4a16 --passes "
                                "'stats{second_moments=true},auto{alpha=0.5},blockscale,pack'").exit_code, 0);
    for (const auto& e : fs::directory_iterator(w1)) {
      if (e.path().extension() != ".safetensors") continue;
      EXPECT_EQ(read_file(e.path()), read_file(w2 / e.path().filename())) << e.path().filename();
    }
    auto mw = backends::read_manifest((w1 / backends::kManifestFile).string());
    ASSERT_TRUE(mw.ok());
    for (const auto& t : mw->tensors()) {
      if (!t.has_quantizer()) continue;
      const bool site = t.role() == "q" || t.role() == "k" || t.role() == "v" || t.role() == "gate" || t.role() == "up";
      EXPECT_EQ(t.quantizer().candidates_size(), site ? 14 : 7) << t.name();
      EXPECT_EQ(t.quantizer().chosen().find('@'), std::string::npos) << t.name();
    }
  }
  // One calibration sequence: nothing left for the statistics once one is held out.
  r = fp4c(s.base(s.tmp.path / "o2") + " --recipe auto --calib-samples 1");
  EXPECT_NE(r.exit_code, 0);
  EXPECT_NE(r.out.find("holds out"), std::string::npos) << r.out;
}

TEST(Recipes, Stories260KSmoothQuantMatchesTheIndependentReference) {
  if (!fs::exists(kStories / "model.safetensors")) GTEST_SKIP() << "no " << kStories;
  TempDir tmp;
  const auto out = tmp.path / "sq";
  auto r = fp4c("quantize --quiet --model " + kStories.string() + " --out " + out.string() + " --calib " +
                (kStories / "calib.jsonl").string() + " --recipe smoothquant");
  ASSERT_EQ(r.exit_code, 0) << r.out;
  r = fp4c("eval --json --no-manifest --model " + kStories.string() + " --artifact " + out.string() + " --data " +
           (kStories / "eval.jsonl").string());
  ASSERT_EQ(r.exit_code, 0) << r.out;
  const auto j = nlohmann::json::parse(r.out.substr(r.out.find('{')));
  // ../shared issue figures: W4A4 plain 0.872, after llm-compressor's default SmoothQuant 0.861.
  EXPECT_NEAR(j["recovery"].get<double>(), 0.861, 0.003);
}

}  // namespace
}  // namespace fp4c::testing
