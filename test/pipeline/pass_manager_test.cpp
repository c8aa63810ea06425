// The pass manager as a library: a program runs a recipe through pipeline::quantize with no command
// line and nothing printed; passes run at their place over one PassContext; what a pass invalidates is
// dropped from the analysis cache; every pass's checks come from its definition.
#include <gtest/gtest.h>

#include <set>

#include "pipeline/pass.h"
#include "pipeline/quantize.h"
#include "test/support/tiny_checkpoint.h"

namespace fp4c::pipeline {
namespace {

namespace fs = std::filesystem;
using testing::SynthModel;

Status check(const std::string& text, passes::Scheme scheme = passes::Scheme::W4A4, bool calib = true) {
  auto p = parse_pipeline(text);
  if (!p) return p.error();
  return check_pipeline(*p, scheme, calib);
}

TEST(PassManager, EveryPassIsDeclaredOnceAndMakesItself) {
  std::set<std::string> names;
  ASSERT_EQ(pass_definitions().size(), pass_registry().size());
  for (size_t i = 0; i < pass_definitions().size(); ++i) {
    const PassDefinition* d = pass_definitions()[i];
    EXPECT_TRUE(names.insert(d->spec.name).second) << d->spec.name;
    EXPECT_EQ(pass_registry()[i].name, d->spec.name);
    EXPECT_EQ(find_definition(d->spec.name), d);
    ASSERT_TRUE(d->create) << d->spec.name;
    // Every pass can be made from its defaults.
    std::string text = d->spec.name;
    for (const auto& r : d->spec.prerequisites) text = r + "," + text;
    auto p = parse_pipeline(text);
    ASSERT_TRUE(p.ok()) << text << ": " << p.error().message;
    EXPECT_NE(d->create(p->passes.back()), nullptr) << d->spec.name;
  }
  EXPECT_EQ(find_definition("nope"), nullptr);
}

TEST(PassManager, ChecksComeFromThePassDefinitions) {
  EXPECT_TRUE(check("stats,blockscale,pack").ok());
  EXPECT_EQ(check("stats,blockscale").error().message, "the pipeline must end in 'pack' to write an artifact");
  EXPECT_EQ(check("stats,blockscale,pack,blockscale,pack").error().message, "the pipeline runs 'pack' once, at the end");
  EXPECT_EQ(check("stats,sensitivity,sensitivity,blockscale,pack").error().message,
            "the pipeline runs 'sensitivity' at most once");
  EXPECT_EQ(check("stats,blockscale,pack", passes::Scheme::W4A4, false).error().message,
            "pass 'stats' needs a calibration set (--calib FILE)");
  EXPECT_NE(check("stats,gptq,blockscale,pack").error().message.find("pass 'gptq' needs the input second moments"),
            std::string::npos);
  EXPECT_NE(check("stats,smoothquant,blockscale,pack").error().message.find("--scheme w4a4 needs statistics"),
            std::string::npos);
  EXPECT_NE(check("stats{second_moments=true},gptq,blockscale,pack", passes::Scheme::Mxfp4).error().message.find(
                "pass 'gptq' is NVFP4-only"),
            std::string::npos);
  // A rule after a pass that chose the block scales itself would be ignored: refused, with the way to
  // say what was meant.
  EXPECT_EQ(check("stats{second_moments=true},gptq,blockscale{rule=mse},pack").error().message,
            "blockscale{rule=mse} after 'gptq', which chooses the block scales itself: the rule would not be used "
            "(write blockscale)");
  EXPECT_EQ(check("stats{second_moments=true},gptq,blockscale{rule=localhessian},pack").error().message,
            "blockscale{rule=localhessian} after 'gptq', which chooses the block scales itself: the rule would not "
            "be used (write blockscale, and gptq{scales=localhessian} for local-Hessian scales)");
  EXPECT_NE(check("stats{second_moments=true},auto,blockscale{rule=weighted},pack").error().message.find(
                "after 'auto', which chooses the block scales itself"),
            std::string::npos);
  EXPECT_TRUE(check("stats{second_moments=true},gptq,blockscale{rule=max},pack").ok());
  EXPECT_TRUE(check("describe,stats,describe,blockscale,describe,pack").ok());
}

// A program runs a recipe: no CLI, nothing on stdout; --print-after through the Reporter; the describe
// pass sees the statistics dropped after smoothquant invalidated them and the rewritten tensors.
TEST(PassManager, ALibraryCallerRunsAPipelineAndSeesEachPassAtItsPlace) {
  SynthModel s;
  QuantizeRequest r;
  r.model = s.model.string();
  r.out = (s.tmp.path / "out").string();
  r.calib = s.calib.string();
  r.passes = "describe,stats,smoothquant,describe,stats,describe,blockscale,pack";
  r.print_after = {"describe", "smoothquant"};
  std::vector<std::pair<std::string, std::string>> seen;
  r.report.after_pass = [&](const std::string& pass, int run, const std::string& text) {
    seen.emplace_back(pass + "#" + std::to_string(run), text);
  };
  std::vector<std::string> notes;
  r.report.note = [&](const std::string& text) { notes.push_back(text); };
  ::testing::internal::CaptureStdout();
  auto outcome = quantize(r);
  const std::string printed = ::testing::internal::GetCapturedStdout();
  ASSERT_TRUE(outcome.ok()) << outcome.error().message;
  EXPECT_EQ(printed, "") << "the library prints nothing";
  EXPECT_EQ(outcome->scheme, passes::Scheme::W4A4);
  EXPECT_EQ(outcome->pipeline,
            "describe,stats{second_moments=false},smoothquant{alpha=0.5,min_scale=1e-5,extra=false},describe,"
            "stats{second_moments=false},describe,blockscale{rule=max},pack");
  ASSERT_EQ(seen.size(), 4u);
  EXPECT_EQ(seen[0].first, "describe#1");
  EXPECT_NE(seen[0].second.find(", 0 rewritten; statistics none"), std::string::npos) << seen[0].second;
  EXPECT_EQ(seen[1].first, "smoothquant#1");
  EXPECT_EQ(seen[2].first, "describe#2");
  EXPECT_EQ(seen[2].second.find(", 0 rewritten"), std::string::npos) << seen[2].second;
  EXPECT_NE(seen[2].second.find("statistics none (not collected, or invalidated)"), std::string::npos)
      << "smoothquant invalidated the statistics: " << seen[2].second;
  EXPECT_EQ(seen[3].first, "describe#3");
  EXPECT_NE(seen[3].second.find("statistics current"), std::string::npos) << seen[3].second;
  EXPECT_TRUE(fs::exists(s.tmp.path / "out" / "fp4c-manifest.json"));
  EXPECT_GT(outcome->quantized, 0u);
  EXPECT_EQ(outcome->manifest.options().pipeline(), outcome->pipeline);
  // Stage records per pass run, in order.
  std::vector<std::string> stages;
  for (const auto& st : outcome->manifest.build_cost().stages()) stages.push_back(st.stage());
  EXPECT_EQ(stages, (std::vector<std::string>{"open", "describe", "stats", "smoothquant", "describe#2", "stats#2",
                                              "describe#3", "blockscale", "pack", "finalize"}));
}

}  // namespace
}  // namespace fp4c::pipeline
