// The one way fp4c reads JSON it did not write itself: config.json, safetensors headers and
// indexes, tokenizer files, calibration JSON Lines, recipe files, artifact configs.
//
// Before nlohmann parses anything, one linear scan bounds what parsing may cost: the text's size,
// its nesting depth (a header of `[[[[...` would otherwise build a DOM of millions of levels) and
// every number (one that overflows a double, `1e400`, makes nlohmann throw out_of_range, which is
// not a parse_error). Then nlohmann parses without exceptions escaping; any failure comes back as
// an Error naming the file and the byte offset of the offending character.
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>

#include <nlohmann/json.hpp>

#include "base/expected.h"

namespace fp4c::json_input {

// Deeper than any file fp4c reads needs (a tokenizer.json nests about 6 levels).
inline constexpr int kMaxDepth = 64;
inline constexpr size_t kMaxNumberChars = 400;
// The largest JSON file read whole (a Gemma 3 tokenizer.json is 33 MB); its DOM costs ~10x this.
inline constexpr uint64_t kDefaultMaxFileBytes = uint64_t(64) << 20;
// The environment variable that raises kDefaultMaxFileBytes (a size in bytes, e.g. 268435456).
inline constexpr const char* kMaxFileBytesEnv = "FP4C_MAX_JSON_BYTES";

struct Options {
  uint64_t base_offset = 0;     // added to reported offsets (a safetensors header starts at byte 8)
  bool unique_keys = false;     // refuse an object key given twice at any depth (nlohmann keeps the last)
  int max_depth = kMaxDepth;
};

// Why a text is not acceptable JSON: the 0-based byte offset (base_offset added) of the offending
// character and a sentence saying what is wrong.
struct Failure {
  std::optional<uint64_t> offset;   // absent where no one character is to blame (a duplicate key)
  std::string reason;
};

// The linear scan parse_into starts with, for a text another parser (protobuf's) reads: nesting
// depth, number ranges and lengths. Syntax is not checked.
std::optional<Failure> prescan(std::string_view text, const Options& options = {});

// Parses `text` (nlohmann::json or nlohmann::ordered_json); fills `out`, or returns the failure.
template <typename Json>
std::optional<Failure> parse_into(std::string_view text, Json& out, const Options& options = {});

// parse_into, with the failure as "<where>: malformed JSON at byte N: <reason>".
// Numbers longer than kMaxNumberChars characters are refused (no file fp4c reads has one).
Expected<nlohmann::json> parse(std::string_view text, const std::string& where, const Options& options = {});
Expected<nlohmann::ordered_json> parse_ordered(std::string_view text, const std::string& where,
                                               const Options& options = {});

// The size limit for JSON files read whole: kDefaultMaxFileBytes, or FP4C_MAX_JSON_BYTES when set.
uint64_t max_file_bytes();

// Reads a whole file of at most `max_bytes` (refused before reading when larger: the message names
// the limit and FP4C_MAX_JSON_BYTES).
Expected<std::string> read_text(const std::string& path, uint64_t max_bytes = max_file_bytes());

// read_text then parse.
Expected<nlohmann::json> read_file(const std::string& path, const Options& options = {});
Expected<nlohmann::ordered_json> read_file_ordered(const std::string& path, const Options& options = {});

// The JSON type name a reader's message uses: "integer" and "number" told apart.
std::string type_of(const nlohmann::json& v);

}  // namespace fp4c::json_input
