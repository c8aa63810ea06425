// What the fp4c-verify tests share: running the built tool and reading the verification.json it writes.
#pragma once

#include <gtest/gtest.h>
#include <google/protobuf/util/json_util.h>

#include <string>

#include "manifest.pb.h"
#include "test/support/tiny_checkpoint.h"

namespace fp4c::testing {

inline RunResult fp4c_verify(const std::string& args) {
  return run(tool_path("FP4C_VERIFY_BIN", "fp4c-verify") + " " + args);
}

inline manifest::Verification read_verification(const fs::path& p) {
  manifest::Verification v;
  auto st = google::protobuf::util::JsonStringToMessage(read_file(p), &v);
  EXPECT_TRUE(st.ok()) << p << ": " << st.ToString();
  return v;
}

}  // namespace fp4c::testing
