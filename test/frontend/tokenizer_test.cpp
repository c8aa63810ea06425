// Unit tests of the tokenizers on hand-made tokenizer.json files small enough to check by hand:
// merges by rank, ignore_merges, added tokens, byte fallback and <unk>, the byte-level alphabet,
// BOS/EOS conventions, NFC, and the exact errors for bad input. The conformance test compares
// with the reference libraries on real-sized tokenizers.
#include <unistd.h>

#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <string>
#include <vector>

#include <gtest/gtest.h>
#include <nlohmann/json.hpp>

#include "frontend/tokenizer.h"
#include "frontend/tokenizer_unicode.h"

namespace fp4c::frontend {
namespace {

namespace fs = std::filesystem;
using json = nlohmann::json;
using Ids = std::vector<int32_t>;

class TokenizerTest : public ::testing::Test {
 protected:
  void SetUp() override {
    const auto* info = ::testing::UnitTest::GetInstance()->current_test_info();
    dir_ = fs::temp_directory_path() / ("fp4c-tok-" + std::to_string(::getpid()) + "-" + info->name());
    fs::remove_all(dir_);
    fs::create_directories(dir_);
  }
  void TearDown() override { fs::remove_all(dir_); }

  void write(const std::string& name, const std::string& text) { std::ofstream(dir_ / name, std::ios::binary) << text; }
  void write(const std::string& name, const json& j) { write(name, j.dump(2)); }

  std::unique_ptr<Tokenizer> load() {
    auto t = load_tokenizer(dir_.string());
    EXPECT_TRUE(t.ok()) << t.error().message;
    return t.ok() ? std::move(t).value() : nullptr;
  }
  std::string load_error() {
    auto t = load_tokenizer(dir_.string());
    EXPECT_FALSE(t.ok());
    return t.ok() ? std::string() : t.error().message;
  }
  static Ids encode(const Tokenizer& t, const std::string& text, bool add_special = true) {
    auto ids = t.encode(text, add_special);
    EXPECT_TRUE(ids.ok()) << ids.error().message;
    return ids.ok() ? ids.value() : Ids{};
  }

  fs::path dir_;
};

// A BPE tokenizer.json over letters, with no normalizer and no pre-tokenizer unless given.
json bpe_json(const json& vocab, const json& merges) {
  return {{"version", "1.0"},
          {"added_tokens", json::array()},
          {"normalizer", nullptr},
          {"pre_tokenizer", nullptr},
          {"post_processor", nullptr},
          {"decoder", nullptr},
          {"model", {{"type", "BPE"}, {"dropout", nullptr}, {"unk_token", nullptr}, {"fuse_unk", false},
                     {"byte_fallback", false}, {"ignore_merges", false}, {"vocab", vocab}, {"merges", merges}}}};
}

json added(int id, const std::string& content, bool special = true) {
  return {{"id", id}, {"content", content}, {"single_word", false}, {"lstrip", false},
          {"rstrip", false}, {"normalized", !special}, {"special", special}};
}

json template_bos(const std::string& bos, int id) {
  return {{"type", "TemplateProcessing"},
          {"single", {{{"SpecialToken", {{"id", bos}, {"type_id", 0}}}}, {{"Sequence", {{"id", "A"}, {"type_id", 0}}}}}},
          {"pair", json::array()},
          {"special_tokens", {{bos, {{"id", bos}, {"ids", {id}}, {"tokens", {bos}}}}}}};
}

const json kAbcVocab = {{"a", 0}, {"b", 1}, {"c", 2}, {"ab", 3}, {"bc", 4}, {"abc", 5}};

TEST_F(TokenizerTest, MergesApplyByRankNotByPosition) {
  write("tokenizer.json", bpe_json(kAbcVocab, {"b c", "a b", "a bc"}));
  auto t = load();
  ASSERT_TRUE(t);
  EXPECT_EQ(t->kind(), "bpe");
  EXPECT_EQ(encode(*t, "abc"), (Ids{5}));       // b+c first (rank 0), then a+bc
  EXPECT_EQ(encode(*t, "ab"), (Ids{3}));
  EXPECT_EQ(encode(*t, "cab"), (Ids{2, 3}));
  EXPECT_EQ(t->vocab_size(), 6);
}

TEST_F(TokenizerTest, MergesAsPairsAndAnUnreachableToken) {
  // a+b is ranked first, and nothing merges ab with c: "abc" stays two tokens.
  write("tokenizer.json", bpe_json(kAbcVocab, json::array({json::array({"a", "b"}), json::array({"b", "c"}),
                                                   json::array({"a", "bc"})})));
  auto t = load();
  ASSERT_TRUE(t);
  EXPECT_EQ(encode(*t, "abc"), (Ids{3, 2}));
  EXPECT_EQ(encode(*t, "bcab"), (Ids{4, 3}));
}

TEST_F(TokenizerTest, EqualRanksMergeLeftmostFirst) {
  write("tokenizer.json", bpe_json({{"a", 0}, {"aa", 1}}, {"a a"}));
  auto t = load();
  ASSERT_TRUE(t);
  EXPECT_EQ(encode(*t, "aaa"), (Ids{1, 0}));
  EXPECT_EQ(encode(*t, "aaaa"), (Ids{1, 1}));
  EXPECT_EQ(encode(*t, "aaaaa"), (Ids{1, 1, 0}));
}

TEST_F(TokenizerTest, IgnoreMergesEmitsAWholePreTokenThatIsInTheVocabulary) {
  json j = bpe_json(kAbcVocab, {"a b"});  // no merge path reaches "abc"
  write("tokenizer.json", j);
  EXPECT_EQ(encode(*load(), "abc"), (Ids{3, 2}));
  j["model"]["ignore_merges"] = true;
  write("tokenizer.json", j);
  auto t = load();
  EXPECT_EQ(encode(*t, "abc"), (Ids{5}));
  EXPECT_EQ(encode(*t, "abcab"), (Ids{3, 2, 3}));  // not in the vocabulary: merged as usual
}

TEST_F(TokenizerTest, AddedTokensAreCutOutFirstLongestMatchFirst) {
  json j = bpe_json(kAbcVocab, {"a b", "b c"});
  j["added_tokens"] = {added(6, "<|x|>"), added(7, "<|x|>y"), added(8, "bca", false)};
  write("tokenizer.json", j);
  auto t = load();
  ASSERT_TRUE(t);
  EXPECT_EQ(encode(*t, "a<|x|>b"), (Ids{0, 6, 1}));
  EXPECT_EQ(encode(*t, "<|x|>y<|x|>"), (Ids{7, 6}));
  EXPECT_EQ(encode(*t, "abca"), (Ids{0, 8}));     // the added token wins over the merges around it
  EXPECT_EQ(encode(*t, "<|x|>", false), (Ids{6}));  // special tokens in text are matched either way
  EXPECT_EQ(t->vocab_size(), 9);
  EXPECT_EQ(t->decode({0, 6, 1}), "a<|x|>b");
}

TEST_F(TokenizerTest, AddedTokenStripsWhitespaceWhenAsked) {
  json j = bpe_json({{"a", 0}, {" ", 1}}, json::array());
  json m = added(2, "<m>");
  m["lstrip"] = true;
  m["rstrip"] = true;
  j["added_tokens"] = json::array({m});   // `= {m}` is m itself with clang, [m] with GCC
  write("tokenizer.json", j);
  auto t = load();
  EXPECT_EQ(encode(*t, "a  <m>  a"), (Ids{0, 2, 0}));
  EXPECT_EQ(encode(*t, "a <m>"), (Ids{0, 2}));
}

TEST_F(TokenizerTest, ByteFallbackSpellsUnknownCharactersAsBytes) {
  json vocab = {{"<unk>", 0}, {"a", 1}, {"<0xC3>", 2}, {"<0xA9>", 3}};
  json j = bpe_json(vocab, json::array());
  j["model"]["byte_fallback"] = true;
  j["model"]["unk_token"] = "<unk>";
  write("tokenizer.json", j);
  auto t = load();
  EXPECT_EQ(encode(*t, "a\xC3\xA9" "a"), (Ids{1, 2, 3, 1}));  // "aéa"
  EXPECT_EQ(encode(*t, "\xC3\xBC"), (Ids{0}));               // "ü": 0xBC has no byte token
}

TEST_F(TokenizerTest, UnknownCharactersWithoutByteFallback) {
  json j = bpe_json({{"<unk>", 0}, {"a", 1}}, json::array());
  write("tokenizer.json", j);
  EXPECT_EQ(encode(*load(), "axya"), (Ids{1, 1}));  // no unk_token: dropped, as `tokenizers` does
  j["model"]["unk_token"] = "<unk>";
  write("tokenizer.json", j);
  EXPECT_EQ(encode(*load(), "axya"), (Ids{1, 0, 0, 1}));
  j["model"]["fuse_unk"] = true;
  write("tokenizer.json", j);
  EXPECT_EQ(encode(*load(), "axya"), (Ids{1, 0, 1}));
}

TEST_F(TokenizerTest, ByteLevelAlphabetRegexAndDecode) {
  // GPT-2's map sends ' ' to U+0120 'Ġ' and '\n' to U+010A 'Ċ'.
  json vocab = {{"h", 0}, {"i", 1}, {"\xC4\xA0", 2}, {"hi", 3}, {"\xC4\xA0h", 4}, {"\xC4\xA0hi", 5}, {"\xC4\x8A", 6}};
  json j = bpe_json(vocab, {"h i", "\xC4\xA0 h", "\xC4\xA0 hi"});
  j["pre_tokenizer"] = {{"type", "ByteLevel"}, {"add_prefix_space", false}, {"trim_offsets", true}, {"use_regex", true}};
  j["decoder"] = {{"type", "ByteLevel"}, {"add_prefix_space", true}, {"trim_offsets", true}, {"use_regex", true}};
  write("tokenizer.json", j);
  auto t = load();
  ASSERT_TRUE(t);
  EXPECT_EQ(encode(*t, "hi hi"), (Ids{3, 5}));  // "hi", " hi": the regex keeps the space with the word
  EXPECT_EQ(encode(*t, "hi\nhi"), (Ids{3, 6, 3}));
  EXPECT_EQ(t->decode({3, 5, 6, 2}), "hi hi\n ");
  j["pre_tokenizer"]["add_prefix_space"] = true;
  write("tokenizer.json", j);
  EXPECT_EQ(encode(*load(), "hi"), (Ids{5}));
}

TEST_F(TokenizerTest, SplitThenByteLevelAsQwen2AndLlama3ShipIt) {
  json vocab = {{"a", 0}, {"1", 1}, {"11", 2}, {"111", 3}, {"\xC4\xA0", 4}};
  json j = bpe_json(vocab, {"1 1", "11 1"});
  const json split = {{"type", "Split"}, {"pattern", {{"Regex", R"(\p{N}{1,3}|\p{L}+|\s+)"}}},
                      {"behavior", "Isolated"}, {"invert", false}};
  const json byte_level = {{"type", "ByteLevel"}, {"add_prefix_space", false}, {"trim_offsets", true}, {"use_regex", false}};
  j["pre_tokenizer"] = {{"type", "Sequence"}, {"pretokenizers", {split, byte_level}}};
  write("tokenizer.json", j);
  auto t = load();
  ASSERT_TRUE(t);
  EXPECT_EQ(encode(*t, "1111111"), (Ids{3, 3, 1}));  // digits in threes, never merged across
  EXPECT_EQ(encode(*t, "a 11"), (Ids{0, 4, 2}));
}

TEST_F(TokenizerTest, NfcNormalizerComposesBeforeMatching) {
  json j = bpe_json({{"\xC3\xA9", 0}, {"e", 1}, {"\xCC\x81", 2}}, json::array());  // é, e, U+0301
  write("tokenizer.json", j);
  EXPECT_EQ(encode(*load(), "e\xCC\x81"), (Ids{1, 2}));
  j["normalizer"] = {{"type", "NFC"}};
  write("tokenizer.json", j);
  EXPECT_EQ(encode(*load(), "e\xCC\x81"), (Ids{0}));
}

TEST_F(TokenizerTest, MetaspaceAndLegacyNormalizersPrependTheWordBoundary) {
  // "▁" is U+2581.
  json vocab = {{"\xE2\x96\x81", 0}, {"a", 1}, {"\xE2\x96\x81" "a", 2}, {"<s>", 3}};
  json j = bpe_json(vocab, {"\xE2\x96\x81 a"});
  j["added_tokens"] = json::array({added(3, "<s>")});
  j["normalizer"] = {{"type", "Sequence"},
                     {"normalizers", {{{"type", "Prepend"}, {"prepend", "\xE2\x96\x81"}},
                                      {{"type", "Replace"}, {"pattern", {{"String", " "}}}, {"content", "\xE2\x96\x81"}}}}};
  write("tokenizer.json", j);
  auto t = load();
  EXPECT_EQ(encode(*t, "a a"), (Ids{2, 2}));
  EXPECT_EQ(encode(*t, "<s>a"), (Ids{3, 2}));  // each piece between added tokens is normalized alone

  j["normalizer"] = nullptr;
  j["pre_tokenizer"] = {{"type", "Metaspace"}, {"replacement", "\xE2\x96\x81"}, {"prepend_scheme", "first"}, {"split", false}};
  write("tokenizer.json", j);
  t = load();
  EXPECT_EQ(encode(*t, "a a"), (Ids{2, 2}));
  EXPECT_EQ(encode(*t, "<s>a"), (Ids{3, 1}));  // "first": only at the start of the input
}

TEST_F(TokenizerTest, TemplateAddsBosAndTokenizerConfigOverrides) {
  json j = bpe_json({{"<s>", 0}, {"</s>", 1}, {"a", 2}}, json::array());
  j["added_tokens"] = {added(0, "<s>"), added(1, "</s>")};
  j["post_processor"] = {{"type", "Sequence"},
                         {"processors", {{{"type", "ByteLevel"}, {"trim_offsets", false}}, template_bos("<s>", 0)}}};
  write("tokenizer.json", j);
  auto t = load();
  EXPECT_EQ(encode(*t, "a"), (Ids{0, 2}));
  EXPECT_EQ(encode(*t, "a", false), (Ids{2}));
  EXPECT_EQ(encode(*t, ""), (Ids{0}));

  write("tokenizer_config.json", json{{"bos_token", "<s>"}, {"eos_token", "</s>"}, {"add_bos_token", false}});
  t = load();
  EXPECT_EQ(encode(*t, "a"), (Ids{2}));
  EXPECT_EQ(t->bos_id(), 0);
  EXPECT_EQ(t->eos_id(), 1);

  write("tokenizer_config.json",
        json{{"bos_token", {{"content", "<s>"}}}, {"eos_token", "</s>"}, {"add_bos_token", true}, {"add_eos_token", true}});
  EXPECT_EQ(encode(*load(), "a"), (Ids{0, 2, 1}));

  j["post_processor"] = nullptr;  // no template: add_bos_token alone adds it
  write("tokenizer.json", j);
  EXPECT_EQ(encode(*load(), "a"), (Ids{0, 2, 1}));
}

TEST_F(TokenizerTest, BosAndEosIdsFromConfigJsonOrNone) {
  json j = bpe_json({{"a", 0}, {"b", 1}}, json::array());
  write("tokenizer.json", j);
  auto t = load();
  EXPECT_EQ(t->bos_id(), std::nullopt);
  EXPECT_EQ(t->eos_id(), std::nullopt);
  write("config.json", json{{"bos_token_id", 0}, {"eos_token_id", {1, 0}}});
  t = load();
  EXPECT_EQ(t->bos_id(), 0);
  EXPECT_EQ(t->eos_id(), 1);
  EXPECT_EQ(encode(*t, "ab"), (Ids{0, 1}));  // no template, no add_bos_token: nothing added
  write("tokenizer_config.json", json{{"bos_token", nullptr}, {"eos_token", "b"}});  // as Qwen2 says it
  t = load();
  EXPECT_EQ(t->bos_id(), std::nullopt);
  EXPECT_EQ(t->eos_id(), 1);
}

TEST(TokenizerUnicodeTest, Nfc) {
  using unicode::nfc;
  EXPECT_EQ(nfc("plain ASCII"), "plain ASCII");
  EXPECT_EQ(nfc("e\xCC\x81"), "\xC3\xA9");                          // e + acute -> é
  EXPECT_EQ(nfc("\xE2\x84\xAB"), "\xC3\x85");                       // Å (U+212B) -> U+00C5
  EXPECT_EQ(nfc("\xE0\xA5\x98"), "\xE0\xA4\x95\xE0\xA4\xBC");       // U+0958 is excluded: stays apart
  EXPECT_EQ(nfc("a\xCC\x82\xCC\xA3"), "\xE1\xBA\xAD");              // a + circumflex + dot below -> ậ
  EXPECT_EQ(nfc("\xE1\x84\x80\xE1\x85\xA1\xE1\x86\xA8"), "\xEA\xB0\x81");  // jamo -> 각
  EXPECT_EQ(nfc("\xEA\xB0\x80\xE1\x86\xA8"), "\xEA\xB0\x81");       // 가 + ᆨ -> 각
  EXPECT_EQ(nfc("\xCC\x81" "a"), "\xCC\x81" "a");                   // a mark with nothing before it
  EXPECT_EQ(nfc("\xE4\xB8\xAD\xF0\x9F\x98\x80"), "\xE4\xB8\xAD\xF0\x9F\x98\x80");  // 中😀
}

TEST(TokenizerUnicodeTest, FindsInvalidUtf8) {
  using unicode::find_invalid_utf8;
  EXPECT_EQ(find_invalid_utf8("ok \xC3\xA9"), std::nullopt);
  EXPECT_EQ(find_invalid_utf8("ab\xC3"), 2u);            // truncated
  EXPECT_EQ(find_invalid_utf8("\xC0\x80"), 0u);          // overlong
  EXPECT_EQ(find_invalid_utf8("x\xED\xA0\x80"), 1u);     // surrogate
  EXPECT_EQ(find_invalid_utf8("\xFF"), 0u);
}

// ---- Errors ------------------------------------------------------------------------------------

TEST_F(TokenizerTest, NoTokenizerSuggestsInputIds) {
  EXPECT_EQ(load_error(), dir_.string() + ": no tokenizer.json or tokenizer.model; text input needs a tokenizer "
                                          "(give `input_ids` records instead)");
}

TEST_F(TokenizerTest, MalformedTokenizerJsonNamesTheFile) {
  write("tokenizer.json", std::string("{\"model\": {"));
  const std::string e = load_error();
  EXPECT_NE(e.find((dir_ / "tokenizer.json").string() + ": malformed JSON"), std::string::npos) << e;
}

TEST_F(TokenizerTest, HostileTokenizerJsonIsAnErrorNotAnAbort) {
  // A number that overflows a double, and nesting past the limit.
  write("tokenizer.json", std::string("{\"model\": {\"type\": \"BPE\", \"dropout\": 1e400}}"));
  std::string e = load_error();
  EXPECT_NE(e.find((dir_ / "tokenizer.json").string() + ": malformed JSON at byte 37: number 1e400"), std::string::npos) << e;
  write("tokenizer.json", std::string(1000, '['));
  e = load_error();
  EXPECT_NE(e.find("nested deeper than 64 levels"), std::string::npos) << e;

  // TemplateProcessing's special_tokens: an entry without ids, one that is not an object, ids that
  // are not 32-bit; Roberta's cls/sep not [token, id]. Each used to reach a const operator[] on a
  // missing key (an abort with asserts, undefined behaviour without).
  json j = bpe_json(kAbcVocab, json::array());
  j["post_processor"] = {{"type", "TemplateProcessing"},
                         {"single", {{{"SpecialToken", {{"id", "<s>"}, {"type_id", 0}}}}, {{"Sequence", {{"id", "A"}}}}}},
                         {"special_tokens", {{"<s>", {{"id", "<s>"}}}}}};
  write("tokenizer.json", j);
  e = load_error();
  EXPECT_NE(e.find("post_processor: special_tokens.<s>: expected an array 'ids'"), std::string::npos) << e;
  j["post_processor"]["special_tokens"]["<s>"] = 5;
  write("tokenizer.json", j);
  e = load_error();
  EXPECT_NE(e.find("special_tokens.<s>: expected an array 'ids'"), std::string::npos) << e;
  j["post_processor"]["special_tokens"] = json::array();
  write("tokenizer.json", j);
  e = load_error();
  EXPECT_NE(e.find("special token '<s>' is not listed in special_tokens"), std::string::npos) << e;
  j["post_processor"]["special_tokens"] = {{"<s>", {{"id", "<s>"}, {"ids", {int64_t(1) << 33}}}}};
  write("tokenizer.json", j);
  e = load_error();
  EXPECT_NE(e.find("ids must be non-negative 32-bit integers"), std::string::npos) << e;
  j["post_processor"] = {{"type", "RobertaProcessing"}, {"cls", "<s>"}, {"sep", {"</s>", 2}}};
  write("tokenizer.json", j);
  e = load_error();
  EXPECT_NE(e.find("expected 'cls' and 'sep' as [token, id]"), std::string::npos) << e;
  j["post_processor"]["cls"] = json::array({"<s>"});
  write("tokenizer.json", j);
  e = load_error();
  EXPECT_NE(e.find("expected 'cls' and 'sep' as [token, id]"), std::string::npos) << e;
}

TEST_F(TokenizerTest, UnsupportedComponentsAreNamed) {
  json j = bpe_json(kAbcVocab, json::array());
  j["normalizer"] = {{"type", "Lowercase"}};
  write("tokenizer.json", j);
  std::string e = load_error();
  EXPECT_NE(e.find((dir_ / "tokenizer.json").string() + ": normalizer: unsupported normalizer type 'Lowercase'"),
            std::string::npos) << e;

  j["normalizer"] = nullptr;
  j["pre_tokenizer"] = {{"type", "Sequence"}, {"pretokenizers", {{{"type", "Whitespace"}}}}};
  write("tokenizer.json", j);
  e = load_error();
  EXPECT_NE(e.find("pre_tokenizer.pretokenizers[0]: unsupported pre_tokenizer type 'Whitespace'"), std::string::npos) << e;

  j["pre_tokenizer"] = nullptr;
  j["model"]["type"] = "Unigram";
  write("tokenizer.json", j);
  e = load_error();
  EXPECT_NE(e.find("model: unsupported model type 'Unigram'"), std::string::npos) << e;
}

TEST_F(TokenizerTest, BadMergesAndRegexesAreErrors) {
  write("tokenizer.json", bpe_json(kAbcVocab, {"a b", "a z"}));
  std::string e = load_error();
  EXPECT_NE(e.find("model.merges[1]: token 'z' is not in the vocabulary"), std::string::npos) << e;

  write("tokenizer.json", bpe_json(kAbcVocab, {"abc"}));
  e = load_error();
  EXPECT_NE(e.find("model.merges[0]: expected two tokens separated by one space"), std::string::npos) << e;

  json j = bpe_json(kAbcVocab, json::array());
  j["pre_tokenizer"] = {{"type", "Split"}, {"pattern", {{"Regex", "(\\p{L}"}}}, {"behavior", "Isolated"}, {"invert", false}};
  write("tokenizer.json", j);
  e = load_error();
  EXPECT_NE(e.find((dir_ / "tokenizer.json").string() + ": pre_tokenizer: regex /(\\p{L}/ does not compile"),
            std::string::npos) << e;
}

TEST_F(TokenizerTest, MalformedTokenizerConfigNamesTheFile) {
  write("tokenizer.json", bpe_json(kAbcVocab, json::array()));
  write("tokenizer_config.json", std::string("{not json"));
  std::string e = load_error();
  EXPECT_EQ(e.find((dir_ / "tokenizer_config.json").string() + ": malformed JSON at byte "), 0u) << e;
  write("tokenizer_config.json", json{{"add_bos_token", "yes"}});
  e = load_error();
  EXPECT_EQ(e, (dir_ / "tokenizer_config.json").string() + ": key 'add_bos_token' must be true or false");
  write("tokenizer_config.json", json{{"bos_token", "<nope>"}});
  e = load_error();
  EXPECT_NE(e.find("bos_token '<nope>' is not a token of this tokenizer"), std::string::npos) << e;
}

TEST_F(TokenizerTest, CorruptSentencePieceModelNamesTheFile) {
  write("tokenizer.model", std::string("\x0a\x05garbage-that-is-not-a-model", 30));
  const std::string e = load_error();
  EXPECT_EQ(e.rfind((dir_ / "tokenizer.model").string() + ": not a SentencePiece model", 0), 0u) << e;
}

TEST_F(TokenizerTest, InvalidUtf8TextIsAnError) {
  write("tokenizer.json", bpe_json(kAbcVocab, json::array()));
  auto t = load();
  auto ids = t->encode("ab\xFF" "c");
  ASSERT_FALSE(ids.ok());
  EXPECT_EQ(ids.error().message, "text is not valid UTF-8 at byte offset 2");
}

TEST_F(TokenizerTest, TokenizerJsonWinsOverTokenizerModel) {
  write("tokenizer.json", bpe_json(kAbcVocab, json::array()));
  write("tokenizer.model", std::string("not read"));
  EXPECT_EQ(load()->kind(), "bpe");
}

// ---- Real tokenizer files --------------------------------------------------------------------

TEST(TokenizerFilesTest, Stories260KSentencePiece) {
  const fs::path dir = fs::path(FP4C_SHARED_DIR) / "models/stories260K";
  if (!fs::exists(dir / "tokenizer.model")) GTEST_SKIP() << dir << " has no tokenizer.model";
  auto t = load_tokenizer(dir.string());
  ASSERT_TRUE(t.ok()) << t.error().message;
  const Tokenizer& tok = **t;
  EXPECT_EQ(tok.kind(), "sentencepiece");
  EXPECT_EQ(tok.vocab_size(), 512);
  EXPECT_EQ(tok.bos_id(), 1);
  EXPECT_EQ(tok.eos_id(), 2);
  auto with = tok.encode("Once upon a time, there was a cat.");
  auto without = tok.encode("Once upon a time, there was a cat.", false);
  ASSERT_TRUE(with.ok() && without.ok());
  ASSERT_FALSE(without->empty());
  EXPECT_EQ(with->front(), 1);  // add_bos_token: true; add_eos_token: false
  EXPECT_EQ(Ids(with->begin() + 1, with->end()), *without);
  EXPECT_EQ(tok.decode(*without), "Once upon a time, there was a cat.");
}

std::string synth_bin() {
  if (const char* env = std::getenv("FP4C_SYNTH_BIN")) return env;
  return (fs::path(FP4C_BINARY_DIR) / "fp4c-synth").string();
}

// The BOS conventions of the two tokenizers fp4c-synth writes: Qwen2 adds nothing, Llama 3 adds
// <|begin_of_text|> through its post-processor.
TEST(TokenizerFilesTest, SynthBosConventions) {
  if (!fs::exists(synth_bin())) GTEST_SKIP() << synth_bin() << " is not built";
  const fs::path root = fs::temp_directory_path() / ("fp4c-tok-synth-" + std::to_string(::getpid()));
  fs::remove_all(root);
  for (const std::string preset : {"tiny", "tiny-llama"}) {
    const fs::path out = root / preset;
    const std::string cmd = "'" + synth_bin() + "' --preset " + preset + " --threads 1 --out '" + out.string() + "' >/dev/null 2>&1";
    ASSERT_EQ(std::system(cmd.c_str()), 0) << cmd;
    auto t = load_tokenizer(out.string());
    ASSERT_TRUE(t.ok()) << t.error().message;
    const Tokenizer& tok = **t;
    auto ids = tok.encode("Hello world");
    auto plain = tok.encode("Hello world", false);
    ASSERT_TRUE(ids.ok() && plain.ok());
    ASSERT_TRUE(tok.eos_id().has_value());
    if (preset == "tiny") {
      EXPECT_EQ(tok.bos_id(), std::nullopt);  // "bos_token": null
      EXPECT_EQ(*ids, *plain);
      EXPECT_EQ(tok.encode("<|endoftext|>")->back(), *tok.eos_id());
    } else {
      ASSERT_TRUE(tok.bos_id().has_value());
      ASSERT_EQ(ids->size(), plain->size() + 1);
      EXPECT_EQ(ids->front(), *tok.bos_id());
      EXPECT_EQ(tok.encode("")->size(), 1u);
    }
    EXPECT_EQ(tok.decode(*plain), "Hello world");
  }
  fs::remove_all(root);
}

}  // namespace
}  // namespace fp4c::frontend
