// `fp4c compare --schemes`: each recipe under each scheme, NVFP4 beside MXFP4, on a synthetic model:
// the rows (recipe@scheme), their schemes, artifact bytes and effective bits per weight (MXFP4 exactly
// 4.25 on this model, where every Linear is quantized; NVFP4 above 4.5), and the argument errors.
#include <gtest/gtest.h>
#include <nlohmann/json.hpp>

#include "backends/manifest.h"
#include "test/support/tiny_checkpoint.h"

namespace fp4c::testing {
namespace {

TEST(CompareSchemes, Nvfp4BesideMxfp4) {
  SynthModel s;
  const auto out = s.tmp.path / "cmp";
  auto r = fp4c("compare --model " + s.model.string() + " --calib " + s.calib.string() + " --eval " +
                s.eval.string() + " --recipes plain --schemes w4a4,mxfp4,mxfp4a16 --out " + out.string());
  ASSERT_EQ(r.exit_code, 0) << r.out;
  const auto j = nlohmann::json::parse(read_file(out / "report.json"));
  ASSERT_EQ(j["recipes"].size(), 3u);
  const char* names[] = {"plain@w4a4", "plain@mxfp4", "plain@mxfp4a16"};
  const char* schemes[] = {"w4a4", "mxfp4", "mxfp4a16"};
  for (int i = 0; i < 3; ++i) {
    const auto& rec = j["recipes"][size_t(i)];
    EXPECT_EQ(rec["name"], names[i]);
    EXPECT_EQ(rec["scheme"], schemes[i]);
    EXPECT_TRUE(fs::exists(out / "artifacts" / (std::string("plain_") + schemes[i]) / "fp4c-manifest.json"));
    EXPECT_GT(rec["recovery"].get<double>(), 0.0);
  }
  EXPECT_GT(j["recipes"][0]["effective_bits_per_weight"].get<double>(), 4.5);
  EXPECT_DOUBLE_EQ(j["recipes"][1]["effective_bits_per_weight"].get<double>(), 4.25);
  EXPECT_DOUBLE_EQ(j["recipes"][2]["effective_bits_per_weight"].get<double>(), 4.25);
  EXPECT_LT(j["recipes"][1]["artifact_bytes"].get<uint64_t>(), j["recipes"][0]["artifact_bytes"].get<uint64_t>());
  // Same weights, MXFP4 W4A4 additionally quantizes activations: a different (lower) accuracy.
  EXPECT_NE(j["recipes"][1]["perplexity"], j["recipes"][2]["perplexity"]);
  EXPECT_NE(r.out.find("plain@mxfp4 vs plain@w4a4"), std::string::npos) << r.out;
  auto m = backends::read_manifest((out / "artifacts" / "plain_mxfp4" / "fp4c-manifest.json").string());
  ASSERT_TRUE(m.ok()) << m.error().message;
  EXPECT_EQ(m->options().scheme(), "mxfp4");
}

TEST(CompareSchemes, ArgumentErrors) {
  SynthModel s;
  const std::string base = "compare --model " + s.model.string() + " --calib " + s.calib.string() + " --eval " +
                           s.eval.string() + " --recipes plain --out " + (s.tmp.path / "x").string();
  auto r = fp4c(base + " --scheme w4a4 --schemes mxfp4");
  EXPECT_NE(r.exit_code, 0);
  EXPECT_NE(r.out.find("give --scheme or --schemes, not both"), std::string::npos) << r.out;
  r = fp4c(base + " --schemes w4a4,w4a4");
  EXPECT_NE(r.exit_code, 0);
  EXPECT_NE(r.out.find("'plain@w4a4' appears twice"), std::string::npos) << r.out;
  r = fp4c(base + " --schemes mxfp8");
  EXPECT_NE(r.exit_code, 0);
  EXPECT_FALSE(fs::exists(s.tmp.path / "x"));
}

}  // namespace
}  // namespace fp4c::testing
