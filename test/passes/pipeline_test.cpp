// Pipeline text: parsing, defaults, canonical round trip, and the exact error sentences.
#include <gtest/gtest.h>

#include "passes/pipeline.h"

namespace fp4c::passes {
namespace {

std::string error_of(std::string_view text) {
  auto p = parse_pipeline(text);
  EXPECT_FALSE(p.ok()) << text;
  return p.ok() ? "" : p.error().message;
}

TEST(Pipeline, DefaultsAreFilledInAndTheCanonicalFormRoundTrips) {
  auto p = parse_pipeline(" stats , blockscale , pack ");
  ASSERT_TRUE(p.ok()) << p.error().message;
  EXPECT_EQ(p->canonical(), "stats{second_moments=false},blockscale{rule=max},pack");
  auto again = parse_pipeline(p->canonical());
  ASSERT_TRUE(again.ok());
  EXPECT_EQ(again->canonical(), p->canonical());
  auto q = parse_pipeline("stats{second_moments=on},blockscale{rule=max},pack");
  ASSERT_TRUE(q.ok());
  EXPECT_EQ(q->find("stats")->option("second_moments"), "true");
  EXPECT_EQ(q->find("blockscale")->option("rule"), "max");
  EXPECT_EQ(q->find("sensitivity"), nullptr);
}

TEST(Pipeline, ErrorsNameTheColumnAndTheValidChoices) {
  EXPECT_EQ(error_of("stats,stat"), "pipeline column 7: unknown pass 'stat' (valid: auto, blockscale, gptq, outliers, pack, sensitivity, smoothquant, stats)");
  EXPECT_EQ(error_of("blockscale{rul=max},pack"),
            "pipeline column 12: unknown option 'rul' of pass 'blockscale' (valid: rule)");
  EXPECT_EQ(error_of("blockscale{rule=min},pack"),
            "pipeline column 17: option 'rule' of pass 'blockscale': 'min' is not one of max, mse, weighted, 4over6, localhessian");
  EXPECT_EQ(error_of("stats{second_moments=maybe}"),
            "pipeline column 22: option 'second_moments' of pass 'stats': 'maybe' is not true or false");
  EXPECT_EQ(error_of("pack"), "pipeline column 1: pass 'pack' needs 'blockscale' earlier in the pipeline");
  EXPECT_EQ(error_of(""), "pipeline column 1: empty pipeline (valid passes: auto, blockscale, gptq, outliers, pack, sensitivity, smoothquant, stats)");
  EXPECT_EQ(error_of("blockscale pack"), "pipeline column 12: expected ',' between passes");
  EXPECT_EQ(error_of("blockscale{rule=max"), "pipeline column 20: expected ',' or '}' in the options of pass 'blockscale'");
  EXPECT_EQ(error_of("blockscale{rule=max,rule=max},pack"), "pipeline column 21: option 'rule' given twice");
  EXPECT_EQ(error_of("pack{x=1}"), "pipeline column 6: unknown option 'x' of pass 'pack' (valid: none)");
}

TEST(Pipeline, RegistryIsWellFormed) {
  for (const auto& p : pass_registry()) {
    for (const auto& r : p.prerequisites) EXPECT_NE(find_pass(r), nullptr) << p.name << " requires " << r;
    for (const auto& o : p.options) EXPECT_FALSE(o.help.empty()) << p.name << "." << o.name;
    // Every default parses.
    std::string text = p.name;
    for (const auto& r : p.prerequisites) text = r + "," + text;
    EXPECT_TRUE(parse_pipeline(text).ok()) << text;
  }
}

}  // namespace
}  // namespace fp4c::passes
