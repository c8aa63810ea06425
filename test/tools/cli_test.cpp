// Smoke tests of the command line: --help and --version work, a missing or unknown argument is a
// clear usage error with a non-zero exit.
#include <gtest/gtest.h>

#include "test/support/tiny_checkpoint.h"

namespace fp4c::testing {
namespace {

TEST(Cli, HelpAndVersion) {
  auto v = fp4c("--version");
  EXPECT_EQ(v.exit_code, 0) << v.out;
  EXPECT_NE(v.out.find("fp4c 0."), std::string::npos) << v.out;
  for (const char* sub : {"quantize", "inspect", "eval"}) {
    auto h = fp4c(std::string(sub) + " --help");
    EXPECT_EQ(h.exit_code, 0) << sub << ": " << h.out;
    EXPECT_NE(h.out.find("--"), std::string::npos) << sub;
  }
  auto s = run(tool_path("FP4C_SYNTH_BIN", "fp4c-synth") + " --help");
  EXPECT_EQ(s.exit_code, 0) << s.out;
}

TEST(Cli, UsageErrors) {
  auto r = fp4c("quantize --out /tmp/nowhere-fp4c");
  EXPECT_NE(r.exit_code, 0);
  EXPECT_NE(r.out.find("--model"), std::string::npos) << r.out;
  r = fp4c("frobnicate");
  EXPECT_NE(r.exit_code, 0);
  r = fp4c("quantize --model /nonexistent --out /tmp/nowhere-fp4c --scheme w8a8");
  EXPECT_NE(r.exit_code, 0);
  EXPECT_NE(r.out.find("w8a8"), std::string::npos) << r.out;
  r = fp4c("quantize --model /nonexistent/model --out /tmp/nowhere-fp4c");
  EXPECT_NE(r.exit_code, 0);
  EXPECT_NE(r.out.find("/nonexistent/model"), std::string::npos) << r.out;
  EXPECT_FALSE(fs::exists("/tmp/nowhere-fp4c"));
}

}  // namespace
}  // namespace fp4c::testing
