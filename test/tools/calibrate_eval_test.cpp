// End to end: `fp4c quantize --calib` (W4A4) and `fp4c eval`, on the real stories260K model against
// the reference figures of ../shared/models/README.md, and on synthetic models.
#include <gtest/gtest.h>
#include <nlohmann/json.hpp>

#include <cmath>
#include <cstring>
#include <map>

#include "backends/manifest.h"
#include "formats/safetensors.h"
#include "test/support/tiny_checkpoint.h"

namespace fp4c::testing {
namespace {

const fs::path kStories = fs::path(FP4C_SHARED_DIR) / "models" / "stories260K";

nlohmann::json eval_json(const std::string& args) {
  auto r = fp4c("eval --json " + args);
  EXPECT_EQ(r.exit_code, 0) << r.out;
  return r.exit_code == 0 ? nlohmann::json::parse(r.out) : nlohmann::json();
}

float read_scalar(const safetensors::File& f, const std::string& name) {
  const auto* e = f.find(name);
  EXPECT_NE(e, nullptr) << name;
  if (!e) return NAN;
  float v;
  std::memcpy(&v, f.bytes(*e).data(), 4);
  return v;
}

class Stories260K : public ::testing::Test {
 protected:
  void SetUp() override {
    if (!fs::exists(kStories / "model.safetensors")) GTEST_SKIP() << "no " << kStories;
  }
  TempDir tmp;
};

TEST_F(Stories260K, ReferenceAndW4A16PerplexityMatchTheReadme) {
  auto out = tmp.path / "w4a16";
  ASSERT_EQ(fp4c("quantize --quiet --model " + kStories.string() + " --out " + out.string()).exit_code, 0);
  auto j = eval_json("--model " + kStories.string() + " --artifact " + out.string() + " --data " +
                     (kStories / "eval.jsonl").string());
  EXPECT_EQ(j["predictions"], 12409);
  EXPECT_NEAR(j["reference_nll"].get<double>(), 17519.6958, 0.01);
  EXPECT_NEAR(j["reference_perplexity"].get<double>(), 4.103556, 4.103556 * 5e-5);
  EXPECT_NEAR(j["perplexity"].get<double>(), 4.452907, 4.452907 * 5e-5);
  EXPECT_NEAR(j["recovery"].get<double>(), 4.103556 / 4.452907, 1e-4);
  EXPECT_GT(j["kl_mean"].get<double>(), 0);
  EXPECT_LE(j["kl_median"].get<double>(), j["kl_p99"].get<double>());
  EXPECT_GT(j["top1_agreement"].get<double>(), 0.5);
  // The figures went into the artifact's manifest.
  auto m = backends::read_manifest((out / backends::kManifestFile).string());
  ASSERT_TRUE(m.ok());
  ASSERT_EQ(m->accuracy_size(), 1);
  EXPECT_NEAR(m->accuracy(0).perplexity(), j["perplexity"].get<double>(), 1e-9);
  // The manifest edit leaves every artifact hash valid.
  EXPECT_EQ(fp4c("inspect --verify " + out.string()).exit_code, 0);
}

TEST_F(Stories260K, W4A4WithCalibrationMatchesTheReadme) {
  auto out = tmp.path / "w4a4";
  auto cache = tmp.path / "cache";
  auto r = fp4c("quantize --quiet --model " + kStories.string() + " --out " + out.string() + " --calib " +
                (kStories / "calib.jsonl").string() + " --stats-cache " + cache.string());
  ASSERT_EQ(r.exit_code, 0) << r.out;

  auto f = safetensors::File::open((out / "model.safetensors").string());
  ASSERT_TRUE(f.ok());
  for (int layer = 0; layer < 5; ++layer) {
    const std::string p = "model.layers." + std::to_string(layer) + ".";
    const float q = read_scalar(*f, p + "self_attn.q_proj.input_global_scale");
    EXPECT_EQ(q, read_scalar(*f, p + "self_attn.k_proj.input_global_scale"));
    EXPECT_EQ(q, read_scalar(*f, p + "self_attn.v_proj.input_global_scale"));
    EXPECT_EQ(read_scalar(*f, p + "mlp.gate_proj.input_global_scale"),
              read_scalar(*f, p + "mlp.up_proj.input_global_scale"));
    EXPECT_GT(read_scalar(*f, p + "self_attn.o_proj.input_global_scale"), 0);
    EXPECT_EQ(f->find(p + "mlp.down_proj.input_global_scale"), nullptr);  // kept BF16 (172 % 16)
  }
  auto config = nlohmann::json::parse(read_file(out / "config.json"));
  const auto& act = config["quantization_config"]["config_groups"]["group_0"]["input_activations"];
  EXPECT_EQ(act["dynamic"], "local");
  EXPECT_EQ(act["observer"], "static_minmax");
  EXPECT_EQ(act["strategy"], "tensor_group");

  auto j = eval_json("--model " + kStories.string() + " --artifact " + out.string() + " --data " +
                     (kStories / "eval.jsonl").string());
  EXPECT_NEAR(j["perplexity"].get<double>(), 4.704877, 4.704877 * 1e-3);

  // A second run reuses the statistics and writes the same bytes.
  auto again = tmp.path / "w4a4-again";
  r = fp4c("quantize --quiet --model " + kStories.string() + " --out " + again.string() + " --calib " +
           (kStories / "calib.jsonl").string() + " --stats-cache " + cache.string() + " --threads 1");
  ASSERT_EQ(r.exit_code, 0) << r.out;
  auto m = backends::read_manifest((again / backends::kManifestFile).string());
  ASSERT_TRUE(m.ok());
  EXPECT_TRUE(m->options().calibration().stats_from_cache());
  EXPECT_EQ(m->options().calibration().samples(), 64);
  EXPECT_EQ(read_file(out / "model.safetensors"), read_file(again / "model.safetensors"));
}

TEST_F(Stories260K, BlockScaleRulesThroughThePipeline) {
  // Each search rule is never worse than max on the error it minimizes (formats tests, per block);
  // end to end, mse and 4over6 lower the weight error and the perplexity on this model.
  std::map<std::string, double> ppl, sqnr;
  for (const std::string rule : {"max", "mse", "4over6", "weighted"}) {
    auto out = tmp.path / rule;
    auto r = fp4c("quantize --quiet --model " + kStories.string() + " --out " + out.string() + " --scheme w4a16 --calib " +
                  (kStories / "calib.jsonl").string() + " --passes 'stats,blockscale{rule=" + rule + "},pack'");
    ASSERT_EQ(r.exit_code, 0) << rule << ": " << r.out;
    auto m = backends::read_manifest((out / backends::kManifestFile).string());
    ASSERT_TRUE(m.ok());
    EXPECT_EQ(m->options().pipeline(), "stats{second_moments=false},blockscale{rule=" + rule + "},pack");
    double sum = 0;
    int n = 0;
    for (const auto& t : m->tensors())
      if (t.format() == "nvfp4") sum += t.weight_error().sqnr_db(), ++n;
    sqnr[rule] = sum / n;
    ppl[rule] = eval_json("--no-manifest --model " + kStories.string() + " --artifact " + out.string() + " --data " +
                          (kStories / "eval.jsonl").string())["perplexity"].get<double>();
  }
  EXPECT_NEAR(ppl["max"], 4.452907, 4.452907 * 5e-5);
  EXPECT_GT(sqnr["mse"], sqnr["max"]);
  EXPECT_GT(sqnr["4over6"], sqnr["max"]);
  EXPECT_LT(ppl["mse"], ppl["max"]);
  EXPECT_LT(ppl["4over6"], ppl["max"]);
  auto r = fp4c("quantize --model " + kStories.string() + " --out " + (tmp.path / "bad").string() +
                " --passes 'blockscale{rule=weighted},pack'");
  EXPECT_NE(r.exit_code, 0);
  EXPECT_NE(r.out.find("needs the 'stats' pass"), std::string::npos) << r.out;
}

TEST(CalibrateEval, W4A4NeedsACalibrationSet) {
  TempDir tmp;
  write_checkpoint(tmp.path / "m", {}, tiny_tensors({}, 1));
  auto r = fp4c("quantize --scheme w4a4 --model " + (tmp.path / "m").string() + " --out " + (tmp.path / "o").string());
  EXPECT_NE(r.exit_code, 0);
  EXPECT_NE(r.out.find("--calib"), std::string::npos) << r.out;
  EXPECT_FALSE(fs::exists(tmp.path / "o"));
}

TEST(CalibrateEval, SyntheticModelWithTextCalibrationIsDeterministic) {
  TempDir tmp;
  auto model = tmp.path / "tiny";
  auto synth = run(tool_path("FP4C_SYNTH_BIN", "fp4c-synth") + " --preset tiny --out " + model.string());
  ASSERT_EQ(synth.exit_code, 0) << synth.out;
  write_text(tmp.path / "calib.txt",
             "The quick brown fox jumps over the lazy dog.\n\nfor (int i = 0; i < n; ++i) sum += x[i];\n\n"
             "Quantization maps many values onto few; calibration decides which.\n");
  std::string outs[2];
  for (int t = 1; t <= 2; ++t) {
    auto out = tmp.path / ("o" + std::to_string(t));
    auto r = fp4c("quantize --quiet --model " + model.string() + " --out " + out.string() + " --calib " +
                  (tmp.path / "calib.txt").string() + " --threads " + std::to_string(t));
    ASSERT_EQ(r.exit_code, 0) << r.out;
    outs[t - 1] = read_file(out / "model.safetensors");
  }
  EXPECT_EQ(outs[0], outs[1]);
  auto j = eval_json("--model " + model.string() + " --artifact " + (tmp.path / "o1").string() + " --data " +
                     (tmp.path / "calib.txt").string());
  EXPECT_GT(j["perplexity"].get<double>(), 1.0);
  EXPECT_GT(j["recovery"].get<double>(), 0.5);
}

TEST(CalibrateEval, BadEvaluationSets) {
  TempDir tmp;
  auto model = tmp.path / "m";
  write_checkpoint(model, {}, tiny_tensors({}, 2));   // vocab 96, no tokenizer
  write_text(tmp.path / "oov.jsonl", "{\"input_ids\": [1, 2, 3]}\n{\"input_ids\": [1, 96, 3]}\n");
  auto r = fp4c("eval --model " + model.string() + " --data " + (tmp.path / "oov.jsonl").string());
  EXPECT_NE(r.exit_code, 0);
  EXPECT_NE(r.out.find("oov.jsonl:2"), std::string::npos) << r.out;
  EXPECT_NE(r.out.find("96"), std::string::npos) << r.out;

  write_text(tmp.path / "empty.jsonl", "");
  r = fp4c("eval --model " + model.string() + " --data " + (tmp.path / "empty.jsonl").string());
  EXPECT_NE(r.exit_code, 0);
  EXPECT_NE(r.out.find("empty"), std::string::npos) << r.out;

  write_text(tmp.path / "text.jsonl", "{\"text\": \"hello\"}\n");
  r = fp4c("quantize --model " + model.string() + " --out " + (tmp.path / "o").string() + " --calib " +
           (tmp.path / "text.jsonl").string());
  EXPECT_NE(r.exit_code, 0);
  EXPECT_NE(r.out.find("input_ids"), std::string::npos) << r.out;
  EXPECT_FALSE(fs::exists(tmp.path / "o"));
}

}  // namespace
}  // namespace fp4c::testing
