// Config forms end to end: transformers 5's rope_parameters is read (the forward changes with its
// rope_theta exactly as with transformers 4's rope_theta), the manifest records the resolved values,
// and a sliding window is applied to the layers that slide.
#include <gtest/gtest.h>

#include <cmath>
#include <nlohmann/json.hpp>

#include "test/support/tiny_checkpoint.h"

namespace fp4c::testing {
namespace {

using nlohmann::json;

json read_json(const fs::path& p) { return json::parse(read_file(p)); }

fs::path with_config(const SynthModel& s, const std::string& name, const std::function<void(json&)>& edit) {
  const fs::path dir = s.tmp.path / name;
  fs::create_directories(dir);
  fs::copy(s.model, dir, fs::copy_options::recursive | fs::copy_options::overwrite_existing);
  json c = read_json(dir / "config.json");
  edit(c);
  write_text(dir / "config.json", c.dump(2));
  return dir;
}

double reference_nll(const fs::path& model, const fs::path& data) {
  auto r = fp4c("eval --json --model " + model.string() + " --data " + data.string() + " --seq-len 16 --no-manifest");
  EXPECT_EQ(r.exit_code, 0) << r.out;
  return r.exit_code == 0 ? json::parse(r.out)["reference_nll"].get<double>() : 0.0;
}

TEST(ConfigForms, RopeParametersChangeTheForwardAsRopeThetaDoes) {
  SynthModel s;
  const fs::path v4 = with_config(s, "v4", [](json& c) { c["rope_theta"] = 100000.0; });
  const fs::path v5 = with_config(s, "v5", [](json& c) {
    c.erase("rope_theta");
    c["rope_parameters"] = {{"rope_theta", 100000.0}, {"rope_type", "default"}};
  });
  const double base = reference_nll(s.model, s.eval);
  const double nll4 = reference_nll(v4, s.eval);
  const double nll5 = reference_nll(v5, s.eval);
  EXPECT_EQ(nll4, nll5) << "the same model in both forms";
  EXPECT_NE(nll4, base) << "rope_theta 100000 is another model than the synthetic one's";
  // The manifest says what was used and where it came from.
  auto r = fp4c("quantize --quiet --model " + v5.string() + " --out " + (s.tmp.path / "a5").string() +
                " --scheme w4a16");
  ASSERT_EQ(r.exit_code, 0) << r.out;
  const json m = read_json(s.tmp.path / "a5" / "fp4c-manifest.json");
  EXPECT_EQ(m["config"]["ropeTheta"].get<double>(), 100000.0);
  EXPECT_EQ(m["config"]["ropeThetaFrom"], "rope_parameters");
  EXPECT_EQ(m["config"]["ropeType"], "default");
  // A RoPE type fp4c does not implement: refused by name, nothing written.
  const fs::path longrope = with_config(s, "longrope", [](json& c) {
    c.erase("rope_theta");
    c["rope_parameters"] = {{"rope_theta", 10000.0}, {"rope_type", "su"}, {"factor", 4.0}};
  });
  r = fp4c("quantize --model " + longrope.string() + " --out " + (s.tmp.path / "al").string() + " --scheme w4a16");
  EXPECT_EQ(r.exit_code, 1) << r.out;
  EXPECT_NE(r.out.find("unsupported RoPE type 'su'"), std::string::npos) << r.out;
  EXPECT_FALSE(fs::exists(s.tmp.path / "al"));
  // YaRN is implemented: another forward, its resolved values in the manifest.
  const fs::path yarn = with_config(s, "yarn", [](json& c) {
    c["rope_parameters"] = {{"rope_theta", c["rope_theta"]}, {"rope_type", "yarn"}, {"factor", 4.0},
                            {"original_max_position_embeddings", 64}};
  });
  EXPECT_NE(reference_nll(yarn, s.eval), base);
  r = fp4c("quantize --quiet --model " + yarn.string() + " --out " + (s.tmp.path / "ay").string() + " --scheme w4a16");
  ASSERT_EQ(r.exit_code, 0) << r.out;
  const json my = read_json(s.tmp.path / "ay" / "fp4c-manifest.json");
  EXPECT_EQ(my["config"]["ropeType"], "yarn");
  EXPECT_DOUBLE_EQ(my["config"]["ropeAttentionFactor"].get<double>(), 0.1 * std::log(4.0) + 1.0);
}

TEST(ConfigForms, ASlidingWindowIsAppliedToTheLayersThatSlide) {
  SynthModel s;
  const fs::path sw = with_config(s, "sw", [](json& c) {
    c["use_sliding_window"] = true;
    c["sliding_window"] = 16;
    c["max_window_layers"] = 0;
  });
  const std::string set = " --calib " + s.calib.string() + " --packing chunks --calib-samples 4";
  // Longer sequences than the window: every layer attends to its last 16 positions only, another model
  // than the one without a window.
  auto r = fp4c("quantize --quiet --model " + sw.string() + " --out " + (s.tmp.path / "long").string() + set +
                " --seq-len 32");
  EXPECT_EQ(r.exit_code, 0) << r.out;
  auto nll = [&](const fs::path& model, int seq) {
    auto e = fp4c("eval --json --model " + model.string() + " --data " + s.eval.string() + " --seq-len " +
                  std::to_string(seq) + " --no-manifest");
    EXPECT_EQ(e.exit_code, 0) << e.out;
    return e.exit_code == 0 ? json::parse(e.out)["reference_nll"].get<double>() : 0.0;
  };
  EXPECT_NE(nll(sw, 32), nll(s.model, 32)) << "a window of 16 over 32 positions must change the forward";
  EXPECT_EQ(nll(sw, 16), nll(s.model, 16)) << "within the window it is full causal attention";
  // Within the window the computation is full causal attention: the same artifact bytes as the model
  // without a window.
  r = fp4c("quantize --quiet --model " + sw.string() + " --out " + (s.tmp.path / "sw16").string() + set + " --seq-len 16");
  ASSERT_EQ(r.exit_code, 0) << r.out;
  r = fp4c("quantize --quiet --model " + s.model.string() + " --out " + (s.tmp.path / "full16").string() + set +
           " --seq-len 16");
  ASSERT_EQ(r.exit_code, 0) << r.out;
  EXPECT_EQ(read_file(s.tmp.path / "sw16" / "model.safetensors"), read_file(s.tmp.path / "full16" / "model.safetensors"));
  const json m = read_json(s.tmp.path / "sw16" / "fp4c-manifest.json");
  EXPECT_EQ(m["config"]["slidingWindow"], "16");
  EXPECT_EQ(m["config"]["slidingLayers"].size(), 2u);
}

// Gemma 3: its norms compute x * (1 + w), so SmoothQuant (which folds a per-channel scale into the norm weight)
// is refused by name; `auto` runs without its smoothed candidates; the artifact keeps the norms as the
// checkpoint holds them (w, not 1 + w).
TEST(ConfigForms, Gemma3RecipesAndNorms) {
  const fs::path model = fs::path(FP4C_SOURCE_DIR) / "testdata" / "conformance" / "gemma3";
  TempDir tmp;
  const std::string calib = " --calib " + (model / "calib.jsonl").string() + " --calib-samples 8";
  auto r = fp4c("quantize --model " + model.string() + " --out " + (tmp.path / "sq").string() + " --recipe smoothquant" +
                calib);
  EXPECT_EQ(r.exit_code, 1) << r.out;
  EXPECT_NE(r.out.find("norms compute x * (1 + w)"), std::string::npos) << r.out;
  EXPECT_FALSE(fs::exists(tmp.path / "sq"));
  // Block-output reconstruction implements dense Llama-style layers only: Gemma's is refused by name, nothing written.
  r = fp4c("quantize --model " + model.string() + " --out " + (tmp.path / "sr").string() +
           " --scheme w4a4 --passes stats,signround{iters=2},blockscale,pack" + calib);
  EXPECT_EQ(r.exit_code, 1) << r.out;
  EXPECT_NE(r.out.find("layer 0: block-output reconstruction does not implement q/k norms"), std::string::npos) << r.out;
  EXPECT_FALSE(fs::exists(tmp.path / "sr"));
  r = fp4c("quantize --quiet --model " + model.string() + " --out " + (tmp.path / "auto").string() + " --recipe auto" +
           calib);
  ASSERT_EQ(r.exit_code, 0) << r.out;
  const json m = read_json(tmp.path / "auto" / "fp4c-manifest.json");
  EXPECT_EQ(m["config"]["hiddenAct"], "gelu_pytorch_tanh");
  EXPECT_EQ(m["config"]["normPlusOne"], true);
  EXPECT_NE(m.dump().find("\"chosen\""), std::string::npos);
  EXPECT_EQ(m.dump().find("smoothquant+"), std::string::npos) << "no smoothed candidate on Gemma";
  auto e = fp4c("eval --json --model " + model.string() + " --artifact " + (tmp.path / "auto").string() + " --data " +
                (model / "eval.jsonl").string() + " --no-manifest");
  ASSERT_EQ(e.exit_code, 0) << e.out;
  const json ej = json::parse(e.out);
  EXPECT_TRUE(std::isfinite(ej["nll"].get<double>()));
}

}  // namespace
}  // namespace fp4c::testing
