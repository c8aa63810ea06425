// formats/json_input: every way a JSON text can be hostile comes back as an error value naming the
// byte offset, never as an exception or an abort, and nothing unbounded is built first.
#include "formats/json_input.h"

#include <gtest/gtest.h>

#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <random>

namespace fp4c::json_input {
namespace {

namespace fs = std::filesystem;
using nlohmann::json;

std::string error_of(std::string_view text, const Options& o = {}) {
  auto j = parse(text, "f.json", o);
  return j.ok() ? std::string("(parsed)") : j.error().message;
}

TEST(JsonInput, ParsesOrdinaryJson) {
  auto j = parse(R"({"a": [1, 2.5, -3e-2, "x", null, true], "b": {"c": 1e-400}})", "f.json");
  ASSERT_TRUE(j.ok()) << j.error().message;
  EXPECT_EQ((*j)["a"][1].get<double>(), 2.5);
  EXPECT_EQ((*j)["b"]["c"].get<double>(), 0.0);   // underflow is zero, as in Python and nlohmann
  auto o = parse_ordered(R"({"z": 1, "a": 2})", "f.json");
  ASSERT_TRUE(o.ok());
  EXPECT_EQ(o->begin().key(), "z");
}

TEST(JsonInput, NumberOverflowIsAnErrorAtItsOffset) {
  // nlohmann throws json::out_of_range (not parse_error) for these: an abort before formats/json_input.
  EXPECT_EQ(error_of(R"({"rope_theta": 1e400})"), "f.json: malformed JSON at byte 15: number 1e400 is outside the range of a double");
  EXPECT_NE(error_of("[-1e400]").find("at byte 1: number -1e400"), std::string::npos);
  EXPECT_NE(error_of("[1" + std::string(350, '0') + "]").find("at byte 1: number 1000"), std::string::npos);
  // A huge integer is read as a double by nlohmann; one that still fits is fine.
  EXPECT_EQ(error_of("[123456789012345678901234567890]"), "(parsed)");
  EXPECT_NE(error_of("[" + std::string(401, '7') + "]").find("a number of 401 characters"), std::string::npos);
  // Inside a string it is text, not a number.
  EXPECT_EQ(error_of(R"({"k": "1e400 \" 1e999"})"), "(parsed)");
}

TEST(JsonInput, NestingIsBoundedBeforeParsing) {
  std::string ok = std::string(kMaxDepth, '[') + std::string(kMaxDepth, ']');
  EXPECT_EQ(error_of(ok), "(parsed)");
  std::string deep = std::string(kMaxDepth + 1, '[') + std::string(kMaxDepth + 1, ']');
  EXPECT_EQ(error_of(deep), "f.json: malformed JSON at byte 64: nested deeper than 64 levels");
  // Ten million levels: refused at once, with nothing allocated for them.
  std::string bomb(10'000'000, '[');
  EXPECT_NE(error_of(bomb).find("nested deeper than 64 levels"), std::string::npos);
  std::string objects;
  for (int i = 0; i < 100; ++i) objects += "{\"a\":";
  EXPECT_NE(error_of(objects).find("at byte 320: nested deeper"), std::string::npos);
  Options tight;
  tight.max_depth = 2;
  EXPECT_NE(error_of("[[[1]]]", tight).find("nested deeper than 2 levels"), std::string::npos);
}

TEST(JsonInput, SyntaxErrorsNameTheOffendingByte) {
  EXPECT_EQ(error_of(R"({"a": 1,})").substr(0, 35), "f.json: malformed JSON at byte 8: s");
  Options o;
  o.base_offset = 8;
  json j;
  auto f = parse_into("{\"a\" 1}", j, o);
  ASSERT_TRUE(f.has_value());
  EXPECT_EQ(f->offset, 8u + 5u);
  EXPECT_EQ(error_of("").find("f.json: malformed JSON at byte 0"), 0u);
  EXPECT_NE(error_of("\"\xff\"").find("malformed JSON"), std::string::npos);   // invalid UTF-8
}

TEST(JsonInput, DuplicateKeysOnlyWhenAsked) {
  EXPECT_EQ(error_of(R"({"a": 1, "a": 2})"), "(parsed)");
  Options unique;
  unique.unique_keys = true;
  EXPECT_EQ(error_of(R"({"a": 1, "a": 2})", unique), "f.json: malformed JSON: duplicate key 'a'");
  EXPECT_EQ(error_of(R"({"t": {"x": 1, "x": 2}})", unique), "f.json: malformed JSON: duplicate key 'x' in the entry of 't'");
  EXPECT_EQ(error_of(R"({"t": {"x": 1}, "u": {"x": 2}})", unique), "(parsed)");
}

// Random bytes and random mutations of a valid text: every outcome is a value, never an exception.
TEST(JsonInput, RandomInputNeverThrows) {
  std::mt19937_64 rng(std::random_device{}());
  const std::string base = R"({"a": [1, 2.5e3, {"b": "c\u00e9"}], "d": null, "e": -0.0})";
  const std::string alphabet = "{}[]\",:0123456789eE+-.\\ntrufalse \x80\xff";
  for (int i = 0; i < 20000; ++i) {
    std::string t = base;
    const int edits = 1 + int(rng() % 4);
    for (int k = 0; k < edits; ++k) {
      const size_t at = rng() % (t.size() + 1);
      const char c = alphabet[rng() % alphabet.size()];
      switch (rng() % 3) {
        case 0: t.insert(t.begin() + long(at), c); break;
        case 1: if (at < t.size()) t[at] = c; break;
        default: if (at < t.size()) t.erase(at, 1 + rng() % 4); break;
      }
    }
    json j;
    Options o;
    o.unique_keys = (i % 2) == 0;
    EXPECT_NO_THROW((void)parse_into(t, j, o)) << t;
  }
}

TEST(JsonInput, FilesAboveTheLimitAreRefusedBeforeReading) {
  const fs::path p = fs::temp_directory_path() / ("fp4c-json-input-" + std::to_string(std::random_device{}()) + ".json");
  { std::ofstream(p) << "{\"a\": \"" << std::string(1000, 'x') << "\"}"; }
  auto small = read_text(p.string(), 100);
  ASSERT_FALSE(small.ok());
  EXPECT_NE(small.error().message.find(p.string() + ": 1009 bytes, more than the 100 fp4c reads of a JSON file "
                                       "(FP4C_MAX_JSON_BYTES raises the limit)"),
            std::string::npos)
      << small.error().message;
  EXPECT_TRUE(read_file(p.string()).ok());
  ::setenv(kMaxFileBytesEnv, "100", 1);
  EXPECT_EQ(max_file_bytes(), 100u);
  EXPECT_FALSE(read_file(p.string()).ok());
  ::setenv(kMaxFileBytesEnv, "not a number", 1);
  EXPECT_EQ(max_file_bytes(), kDefaultMaxFileBytes);
  ::unsetenv(kMaxFileBytesEnv);
  auto missing = read_file((p.string() + ".missing"));
  ASSERT_FALSE(missing.ok());
  EXPECT_NE(missing.error().message.find(".missing: cannot open"), std::string::npos);
  fs::remove(p);
}

}  // namespace
}  // namespace fp4c::json_input
