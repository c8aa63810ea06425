// Pipeline text: parsing, defaults, canonical round trip, and the exact error sentences.
#include <gtest/gtest.h>

#include "pipeline/pipeline_text.h"

namespace fp4c::pipeline {
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
  EXPECT_EQ(error_of("stats,stat"), "pipeline column 7: unknown pass 'stat' (valid: auto, blockscale, describe, gptq, outliers, pack, sensitivity, signround, smoothquant, stats)");
  EXPECT_EQ(error_of("blockscale{rul=max},pack"),
            "pipeline column 12: unknown option 'rul' of pass 'blockscale' (valid: rule)");
  EXPECT_EQ(error_of("blockscale{rule=min},pack"),
            "pipeline column 17: option 'rule' of pass 'blockscale': 'min' is not one of max, mse, weighted, 4over6, localhessian");
  EXPECT_EQ(error_of("stats{second_moments=maybe}"),
            "pipeline column 22: option 'second_moments' of pass 'stats': 'maybe' is not true or false");
  EXPECT_EQ(error_of("pack"), "pipeline column 1: pass 'pack' needs 'blockscale' earlier in the pipeline");
  EXPECT_EQ(error_of(""), "pipeline column 1: empty pipeline (valid passes: auto, blockscale, describe, gptq, outliers, pack, sensitivity, signround, smoothquant, stats)");
  EXPECT_EQ(error_of("blockscale pack"), "pipeline column 12: expected ',' between passes");
  EXPECT_EQ(error_of("blockscale{rule=max"), "pipeline column 20: expected ',' or '}' in the options of pass 'blockscale'");
  EXPECT_EQ(error_of("blockscale{rule=max,rule=max},pack"), "pipeline column 21: option 'rule' given twice");
  EXPECT_EQ(error_of("pack{x=1}"), "pipeline column 6: unknown option 'x' of pass 'pack' (valid: none)");
}

// Values the passes could not use (they used to reach std::stof/std::stoi in the driver, which threw
// out_of_range and aborted the process, and --dry-run accepted them) are refused where they are
// parsed, by the range each option declares.
TEST(Pipeline, OptionValuesOutOfRangeAreRefused) {
  EXPECT_EQ(error_of("stats,smoothquant{alpha=1e999}"),
            "pipeline column 25: option 'alpha' of pass 'smoothquant': '1e999' is not a number in [0, 1]");
  EXPECT_EQ(error_of("stats,smoothquant{min_scale=1e-50}"),
            "pipeline column 29: option 'min_scale' of pass 'smoothquant': '1e-50' is not a number in [1e-30, 1]");
  EXPECT_EQ(error_of("stats,smoothquant{alpha=nan}"),
            "pipeline column 25: option 'alpha' of pass 'smoothquant': 'nan' is not a number in [0, 1]");
  EXPECT_EQ(error_of("stats,smoothquant{alpha=-0.1}"),
            "pipeline column 25: option 'alpha' of pass 'smoothquant': '-0.1' is not a number in [0, 1]");
  EXPECT_EQ(error_of("outliers{top=99999999999}"),
            "pipeline column 14: option 'top' of pass 'outliers': '99999999999' is not an integer in [0, 65536]");
  EXPECT_EQ(error_of("outliers{top=99999999999999999999999}"),
            "pipeline column 14: option 'top' of pass 'outliers': '99999999999999999999999' is not an integer in [0, 65536]");
  EXPECT_EQ(error_of("stats,sensitivity{max_layers=99999999999}"),
            "pipeline column 30: option 'max_layers' of pass 'sensitivity': '99999999999' is not an integer in [0, 1e+06]");
  EXPECT_EQ(error_of("stats,sensitivity{budget=101%}"),
            "pipeline column 26: option 'budget' of pass 'sensitivity': '101%' is not a percentage in [0, 100] such as 2%");
  EXPECT_EQ(error_of("stats,gptq{block=24}"),
            "pipeline column 18: option 'block' of pass 'gptq': '24' is not a multiple of 16 in [16, 1.04858e+06]");
  // auto's alpha: one number or several separated by '/', each in range, none twice, at most 8.
  const std::string list_form =
      "a number in [0, 1], or up to 8 different ones separated by '/' (0.3/0.5/0.7), or by-scheme";
  EXPECT_EQ(error_of("stats,auto{alpha=2}"),
            "pipeline column 18: option 'alpha' of pass 'auto': '2' is not " + list_form);
  EXPECT_EQ(error_of("stats,auto{alpha=0.3/2}"),
            "pipeline column 18: option 'alpha' of pass 'auto': '0.3/2' is not " + list_form);
  EXPECT_EQ(error_of("stats,auto{alpha=0.3/0.30}"),
            "pipeline column 18: option 'alpha' of pass 'auto': '0.3/0.30' is not " + list_form);
  EXPECT_EQ(error_of("stats,auto{alpha=0.3/}"),
            "pipeline column 18: option 'alpha' of pass 'auto': '0.3/' is not " + list_form);
  EXPECT_EQ(error_of("stats,auto{alpha=/}"), "pipeline column 18: option 'alpha' of pass 'auto': '/' is not " + list_form);
  EXPECT_EQ(error_of("stats,auto{alpha=0.1/0.2/0.3/0.4/0.5/0.6/0.7/0.8/0.9}"),
            "pipeline column 18: option 'alpha' of pass 'auto': '0.1/0.2/0.3/0.4/0.5/0.6/0.7/0.8/0.9' is not " + list_form);
  EXPECT_EQ(error_of("stats,smoothquant{alpha=0.3/0.5}"),
            "pipeline column 25: option 'alpha' of pass 'smoothquant': '0.3/0.5' is not a number in [0, 1]");
  {
    auto p = parse_pipeline("stats{second_moments=true},auto{alpha=0.3/0.5/0.7},blockscale,pack");
    ASSERT_TRUE(p.ok()) << p.error().message;
    EXPECT_EQ(p->find("auto")->option("alpha"), "0.3/0.5/0.7");
    auto again = parse_pipeline(p->canonical());
    ASSERT_TRUE(again.ok());
    EXPECT_EQ(again->canonical(), p->canonical());
    auto one = parse_pipeline("stats{second_moments=true},auto,blockscale,pack");   // the default, resolved by the pass
    ASSERT_TRUE(one.ok());
    EXPECT_NE(one->canonical().find("alpha=by-scheme,"), std::string::npos) << one->canonical();
    EXPECT_FALSE(parse_pipeline("stats,auto{alpha=by-scheme/0.5}").ok());
    EXPECT_FALSE(parse_pipeline("stats,smoothquant{alpha=by-scheme}").ok());
  }
  // The ends of each range are accepted.
  for (const char* ok : {"stats,smoothquant{alpha=0,min_scale=1e-30}", "stats,smoothquant{alpha=1,min_scale=1}",
                         "outliers{top=65536,k=1}", "stats,sensitivity{max_layers=1000000,budget=0%}",
                         "stats,gptq{block=16,damp=0}", "stats,auto{alpha=0/1}",
                         "stats,auto{alpha=0.1/0.2/0.3/0.4/0.5/0.6/0.7/0.8}"})
    EXPECT_TRUE(parse_pipeline(ok).ok()) << ok;
}

TEST(Pipeline, RegistryIsWellFormed) {
  for (const auto& p : pass_registry()) {
    for (const auto& r : p.prerequisites) EXPECT_NE(find_pass(r), nullptr) << p.name << " requires " << r;
    for (const auto& o : p.options) {
      EXPECT_FALSE(o.help.empty()) << p.name << "." << o.name;
      // Every number has a range, and the default lies in it.
      if (o.type == OptionType::Int || o.type == OptionType::Float || o.type == OptionType::Percent ||
          o.type == OptionType::FloatList) {
        EXPECT_LT(o.min, o.max) << p.name << "." << o.name;
      }
    }
    // Every default parses.
    std::string text = p.name;
    for (const auto& r : p.prerequisites) text = r + "," + text;
    EXPECT_TRUE(parse_pipeline(text).ok()) << text;
  }
}

}  // namespace
}  // namespace fp4c::pipeline
