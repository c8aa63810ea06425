#include "frontend/calibration.h"

#include <gtest/gtest.h>
#include <unistd.h>
#include <zlib.h>

#include <filesystem>
#include <fstream>
#include <sstream>

#include "formats/hash.h"

namespace fp4c::frontend {
namespace {

namespace fs = std::filesystem;
using Ids = std::vector<int32_t>;

const std::string kData = std::string(FP4C_SOURCE_DIR) + "/testdata/calibration/";
const std::string kStories = std::string(FP4C_SHARED_DIR) + "/models/stories260K/";

// Bytes to ids: BOS 1 (with add_special), then 3 + each byte; vocab 259. Text holding "FAIL" is an error.
class ByteTokenizer : public Tokenizer {
 public:
  Expected<std::vector<int32_t>> encode(std::string_view text, bool add_special) const override {
    if (text.find("FAIL") != std::string_view::npos) return make_error("cannot encode FAIL");
    std::vector<int32_t> ids;
    if (add_special) ids.push_back(1);
    for (unsigned char c : text) ids.push_back(3 + c);
    return ids;
  }
  std::string decode(const std::vector<int32_t>& ids) const override {
    std::string s;
    for (int32_t id : ids)
      if (id >= 3) s += static_cast<char>(id - 3);
    return s;
  }
  int64_t vocab_size() const override { return 259; }
  std::optional<int32_t> bos_id() const override { return 1; }
  std::optional<int32_t> eos_id() const override { return 2; }
  std::string_view kind() const override { return "bytes"; }
};

const ByteTokenizer kBytes;

Ids bytes(std::string_view text, bool bos = true) {
  auto ids = ByteTokenizer().encode(text, bos);
  return ids.value();
}

CalibrationOptions opts(int64_t vocab = 259) {
  CalibrationOptions o;
  o.vocab_size = vocab;
  return o;
}

void write_file(const std::string& path, std::string_view contents) {
  std::ofstream f(path, std::ios::binary);
  f.write(contents.data(), static_cast<std::streamsize>(contents.size()));
  ASSERT_TRUE(f.good()) << path;
}

std::string read_file(const std::string& path) {
  std::ifstream f(path, std::ios::binary);
  std::stringstream ss;
  ss << f.rdbuf();
  return ss.str();
}

// Writes `contents` as one gzip member per element, appended (gzopen "ab" starts a new member).
void write_gzip(const std::string& path, const std::vector<std::string>& members) {
  fs::remove(path);
  for (const std::string& m : members) {
    gzFile gz = gzopen(path.c_str(), "ab9");
    ASSERT_NE(gz, nullptr) << path;
    if (!m.empty()) {
      ASSERT_EQ(gzwrite(gz, m.data(), static_cast<unsigned>(m.size())), static_cast<int>(m.size()));
    }
    ASSERT_EQ(gzclose(gz), Z_OK);
  }
}

class Calibration : public ::testing::Test {
 protected:
  void SetUp() override {
    const auto* info = ::testing::UnitTest::GetInstance()->current_test_info();
    dir_ = fs::path(FP4C_BINARY_DIR) / "test-tmp" / "calibration" /
           (std::string(info->name()) + "-" + std::to_string(::getpid()));
    fs::remove_all(dir_);
    fs::create_directories(dir_);
  }
  void TearDown() override {
    if (!HasFailure()) fs::remove_all(dir_);
  }

  std::string path(const std::string& name) const { return (dir_ / name).string(); }

  std::string write(const std::string& name, std::string_view contents) {
    write_file(path(name), contents);
    return path(name);
  }

  Expected<TokenSet> load(const std::string& name, std::string_view contents,
                          const CalibrationOptions& o = opts(), const Tokenizer* tok = &kBytes) {
    return load_token_set(write(name, contents), tok, o);
  }

  // The error a set must give; it must name the file.
  std::string error_of(const std::string& name, std::string_view contents, const CalibrationOptions& o = opts(),
                       const Tokenizer* tok = &kBytes) {
    auto set = load(name, contents, o, tok);
    if (set.ok()) {
      ADD_FAILURE() << "loaded: " << name;
      return "";
    }
    EXPECT_NE(set.error().message.find(path(name)), std::string::npos)
        << "error does not name the file: " << set.error().message;
    return set.error().message;
  }

  fs::path dir_;
};

#define EXPECT_HAS(haystack, needle) \
  EXPECT_NE(std::string(haystack).find(needle), std::string::npos) << "in: " << (haystack)

// --- formats ---------------------------------------------------------------------------------

TEST_F(Calibration, JsonLinesFixture) {
  const std::string file = kData + "records.jsonl";
  auto set = load_token_set(file, &kBytes, opts());
  ASSERT_TRUE(set.ok()) << set.error().message;
  ASSERT_EQ(set->sequences.size(), 4u);
  EXPECT_EQ(set->sequences[0], (Ids{1, 10, 11, 12, 13}));
  EXPECT_EQ(set->sequences[1], bytes("Hi there"));
  EXPECT_EQ(set->sequences[2], (Ids{1, 20, 21}));  // input_ids wins over text
  EXPECT_EQ(set->sequences[3], bytes("ab"));
  EXPECT_EQ(set->origins, (std::vector<int64_t>{1, 2, 4, 5}));  // line 3 is blank
  EXPECT_EQ(set->records, 4);
  EXPECT_EQ(set->available, 4);
  EXPECT_EQ(set->requested, 0);
  EXPECT_EQ(set->dropped_tokens, 0);
  EXPECT_EQ(set->total_tokens(), 5 + 9 + 3 + 3);
  auto h = hash::hash_file(file);
  ASSERT_TRUE(h.ok());
  EXPECT_EQ(set->source_hash, *h);
}

TEST_F(Calibration, PlainTextParagraphs) {
  auto set = load_token_set(kData + "paragraphs.txt", &kBytes, opts());
  ASSERT_TRUE(set.ok()) << set.error().message;
  ASSERT_EQ(set->sequences.size(), 3u);
  EXPECT_EQ(set->sequences[0], bytes("Once upon a time\nthere was a cat."));
  EXPECT_EQ(set->sequences[1], bytes("It sat."));  // a whitespace-only line separates too
  EXPECT_EQ(set->sequences[2], bytes("The end."));
  EXPECT_EQ(set->origins, (std::vector<int64_t>{1, 5, 9}));
}

TEST_F(Calibration, PlainTextCrLfBomAndNoFinalNewline) {
  auto set = load("p.txt", "\xEF\xBB\xBF" "a b\r\nc\r\n\r\n\r\n d \r\ne");
  ASSERT_TRUE(set.ok()) << set.error().message;
  ASSERT_EQ(set->sequences.size(), 2u);
  EXPECT_EQ(set->sequences[0], bytes("a b\nc"));
  EXPECT_EQ(set->sequences[1], bytes(" d \ne"));  // lines are kept as written
  EXPECT_EQ(set->origins, (std::vector<int64_t>{1, 5}));
}

TEST_F(Calibration, AnyOtherExtensionIsPlainText) {
  auto set = load("data.md", "{\"input_ids\": [1, 2]}\n");
  ASSERT_TRUE(set.ok()) << set.error().message;
  EXPECT_EQ(set->sequences[0], bytes("{\"input_ids\": [1, 2]}"));
}

TEST_F(Calibration, JsonExtensionIsJsonLinesAndCrLf) {
  auto set = load("data.JSON", "{\"input_ids\": [1, 2]}\r\n  \r\n{\"text\": \"x\", \"input_ids\": null}\r\n");
  ASSERT_TRUE(set.ok()) << set.error().message;
  ASSERT_EQ(set->sequences.size(), 2u);
  EXPECT_EQ(set->sequences[0], (Ids{1, 2}));
  EXPECT_EQ(set->sequences[1], bytes("x"));  // null counts as absent
  EXPECT_EQ(set->origins, (std::vector<int64_t>{1, 3}));
}

TEST_F(Calibration, InputIdsNeedNoTokenizer) {
  auto set = load("ids.jsonl", "{\"input_ids\": [5, 6, 7]}\n", opts(), nullptr);
  ASSERT_TRUE(set.ok()) << set.error().message;
  EXPECT_EQ(set->sequences[0], (Ids{5, 6, 7}));
}

TEST_F(Calibration, VocabSizeZeroChecksOnlyNonNegative) {
  auto set = load("ids.jsonl", "{\"input_ids\": [0, 2147483647]}\n", opts(0), nullptr);
  ASSERT_TRUE(set.ok()) << set.error().message;
  EXPECT_EQ(set->sequences[0], (Ids{0, 2147483647}));
}

// --- gzip ------------------------------------------------------------------------------------

TEST_F(Calibration, GzipFixtureEqualsPlain) {
  auto plain = load_token_set(kData + "records.jsonl", &kBytes, opts());
  auto gz = load_token_set(kData + "records.jsonl.gz", &kBytes, opts());
  ASSERT_TRUE(plain.ok()) << plain.error().message;
  ASSERT_TRUE(gz.ok()) << gz.error().message;
  EXPECT_EQ(gz->sequences, plain->sequences);
  EXPECT_EQ(gz->origins, plain->origins);
  // The hash is of the bytes as stored.
  EXPECT_NE(gz->source_hash, plain->source_hash);
  EXPECT_EQ(gz->source_hash, hash::hash_file(kData + "records.jsonl.gz").value());
}

TEST_F(Calibration, GzipRoundTripJsonLines) {
  std::string text;
  for (int i = 0; i < 2000; ++i)  // larger than one read or inflate buffer
    text += "{\"input_ids\": [1, " + std::to_string(i % 200 + 3) + ", 7, 8]}\n{\"text\": \"line " +
            std::to_string(i) + "\"}\n";
  const std::string plain = write("big.jsonl", text);
  write_gzip(path("big.jsonl.gz"), {text});
  auto a = load_token_set(plain, &kBytes, opts());
  auto b = load_token_set(path("big.jsonl.gz"), &kBytes, opts());
  ASSERT_TRUE(a.ok()) << a.error().message;
  ASSERT_TRUE(b.ok()) << b.error().message;
  EXPECT_EQ(a->records, 4000);
  EXPECT_EQ(a->sequences, b->sequences);
  EXPECT_EQ(b->source_hash, hash::hash_file(path("big.jsonl.gz")).value());
  auto src = read_source(path("big.jsonl.gz"));
  ASSERT_TRUE(src.ok());
  EXPECT_TRUE(src->gzip);
  EXPECT_EQ(src->data, text);
  EXPECT_EQ(src->stored_size, fs::file_size(path("big.jsonl.gz")));
}

TEST_F(Calibration, GzipRoundTripPlainText) {
  write_gzip(path("p.txt.gz"), {"one\ntwo\n\nthree\n"});
  auto set = load_token_set(path("p.txt.gz"), &kBytes, opts());
  ASSERT_TRUE(set.ok()) << set.error().message;
  ASSERT_EQ(set->sequences.size(), 2u);
  EXPECT_EQ(set->sequences[0], bytes("one\ntwo"));
  EXPECT_EQ(set->sequences[1], bytes("three"));
}

TEST_F(Calibration, GzipConcatenatedMembers) {
  write_gzip(path("m.jsonl.gz"), {"{\"input_ids\": [1, 2]}\n{\"input_ids\": [3,", "", " 4]}\n"});
  auto set = load_token_set(path("m.jsonl.gz"), &kBytes, opts());
  ASSERT_TRUE(set.ok()) << set.error().message;
  ASSERT_EQ(set->sequences.size(), 2u);
  EXPECT_EQ(set->sequences[1], (Ids{3, 4}));
}

TEST_F(Calibration, GzipFoundByMagicNotName) {
  write_gzip(path("gz-but-named.jsonl"), {"{\"input_ids\": [9, 9]}\n"});
  auto set = load_token_set(path("gz-but-named.jsonl"), &kBytes, opts());
  ASSERT_TRUE(set.ok()) << set.error().message;
  EXPECT_EQ(set->sequences[0], (Ids{9, 9}));
  // And a .gz name holding plain bytes is read as it is.
  auto plain = load("plain.jsonl.gz", "{\"input_ids\": [8, 8]}\n");
  ASSERT_TRUE(plain.ok()) << plain.error().message;
  EXPECT_EQ(plain->sequences[0], (Ids{8, 8}));
}

// --- packing and selection ---------------------------------------------------------------------

const char* kFive =
    "{\"input_ids\": [1, 10, 11, 12, 13, 14]}\n"
    "{\"input_ids\": [1, 20, 21]}\n"
    "{\"input_ids\": [30, 31, 32, 33]}\n"
    "{\"input_ids\": [1, 40, 41, 42, 43, 44, 45]}\n"
    "{\"input_ids\": [50, 51]}\n";

TEST_F(Calibration, RecordsTruncatedToSeqLen) {
  auto o = opts();
  o.seq_len = 4;
  auto set = load("five.jsonl", kFive, o);
  ASSERT_TRUE(set.ok()) << set.error().message;
  ASSERT_EQ(set->sequences.size(), 5u);
  EXPECT_EQ(set->sequences[0], (Ids{1, 10, 11, 12}));
  EXPECT_EQ(set->sequences[1], (Ids{1, 20, 21}));
  EXPECT_EQ(set->sequences[3], (Ids{1, 40, 41, 42}));
  EXPECT_EQ(set->sequences[4], (Ids{50, 51}));
  EXPECT_EQ(set->dropped_tokens, 2 + 3);
}

TEST_F(Calibration, ChunksConcatenateAndDropTail) {
  auto o = opts();
  o.packing = Packing::Chunks;
  o.seq_len = 5;
  auto set = load("five.jsonl", kFive, o);
  ASSERT_TRUE(set.ok()) << set.error().message;
  // Stream of 22 tokens: 4 chunks of 5, a tail of 2 dropped; BOS only where records carry it.
  ASSERT_EQ(set->sequences.size(), 4u);
  EXPECT_EQ(set->sequences[0], (Ids{1, 10, 11, 12, 13}));
  EXPECT_EQ(set->sequences[1], (Ids{14, 1, 20, 21, 30}));
  EXPECT_EQ(set->sequences[2], (Ids{31, 32, 33, 1, 40}));
  EXPECT_EQ(set->sequences[3], (Ids{41, 42, 43, 44, 45}));
  EXPECT_EQ(set->origins, (std::vector<int64_t>{0, 1, 2, 3}));
  EXPECT_EQ(set->available, 4);
  EXPECT_EQ(set->records, 5);
  EXPECT_EQ(set->dropped_tokens, 2);
}

TEST_F(Calibration, ChunksOfTextRecords) {
  auto o = opts();
  o.packing = Packing::Chunks;
  o.seq_len = 3;
  auto set = load("t.txt", "ab\n\ncd\n", o);
  ASSERT_TRUE(set.ok()) << set.error().message;
  ASSERT_EQ(set->sequences.size(), 2u);
  EXPECT_EQ(set->sequences[0], bytes("ab"));
  EXPECT_EQ(set->sequences[1], bytes("cd"));
}

TEST(ChooseSamples, GoldenValues) {
  // From an independent Python implementation of the algorithm in calibration.h.
  EXPECT_EQ(choose_samples(10, 3, 0), (std::vector<int64_t>{1, 5, 9}));
  EXPECT_EQ(choose_samples(10, 3, 1), (std::vector<int64_t>{1, 5, 8}));
  EXPECT_EQ(choose_samples(64, 8, 42), (std::vector<int64_t>{1, 14, 20, 21, 42, 47, 51, 56}));
  EXPECT_EQ(choose_samples(1000, 5, 0xdeadbeef), (std::vector<int64_t>{67, 784, 810, 909, 921}));
}

TEST(ChooseSamples, AllWhenNotFewer) {
  EXPECT_EQ(choose_samples(4, 0, 7), (std::vector<int64_t>{0, 1, 2, 3}));
  EXPECT_EQ(choose_samples(4, 4, 7), (std::vector<int64_t>{0, 1, 2, 3}));
  EXPECT_EQ(choose_samples(4, 9, 7), (std::vector<int64_t>{0, 1, 2, 3}));
}

TEST(ChooseSamples, SubsetsAreSortedDistinctAndRoughlyUniform) {
  std::vector<int> hits(20, 0);
  for (uint64_t seed = 0; seed < 4000; ++seed) {
    auto c = choose_samples(20, 5, seed);
    ASSERT_EQ(c.size(), 5u);
    for (size_t i = 1; i < c.size(); ++i) ASSERT_LT(c[i - 1], c[i]);
    for (int64_t i : c) ++hits[static_cast<size_t>(i)];
  }
  for (int h : hits) {  // expected 1000 each
    EXPECT_GT(h, 880);
    EXPECT_LT(h, 1120);
  }
}

TEST_F(Calibration, SelectionKeepsFileOrderAndIsSeeded) {
  std::string text;
  for (int i = 0; i < 50; ++i) text += "{\"input_ids\": [1, " + std::to_string(i + 3) + "]}\n";
  auto o = opts();
  o.samples = 7;
  o.seed = 3;
  auto a = load("fifty.jsonl", text, o);
  auto b = load("fifty.jsonl", text, o);
  ASSERT_TRUE(a.ok()) << a.error().message;
  ASSERT_TRUE(b.ok());
  EXPECT_EQ(a->sequences, b->sequences);
  ASSERT_EQ(a->sequences.size(), 7u);
  EXPECT_EQ(a->requested, 7);
  EXPECT_EQ(a->available, 50);
  const auto chosen = choose_samples(50, 7, 3);
  for (size_t i = 0; i < chosen.size(); ++i) {
    EXPECT_EQ(a->origins[i], chosen[i] + 1);  // one record per line
    EXPECT_EQ(a->sequences[i], (Ids{1, static_cast<int32_t>(chosen[i] + 3)}));
  }
  o.seed = 4;
  auto c = load("fifty.jsonl", text, o);
  ASSERT_TRUE(c.ok());
  EXPECT_NE(c->origins, a->origins);
}

TEST_F(Calibration, SelectionOfChunks) {
  auto o = opts();
  o.packing = Packing::Chunks;
  o.seq_len = 2;
  o.samples = 3;
  o.seed = 11;
  auto set = load("five.jsonl", kFive, o);
  ASSERT_TRUE(set.ok()) << set.error().message;
  EXPECT_EQ(set->available, 11);
  EXPECT_EQ(set->origins, choose_samples(11, 3, 11));
  ASSERT_EQ(set->sequences.size(), 3u);
  for (const auto& s : set->sequences) EXPECT_EQ(s.size(), 2u);
}

TEST_F(Calibration, FewerAvailableThanAskedTakesAllAndSaysSo) {
  auto o = opts();
  o.samples = 100;
  auto set = load("five.jsonl", kFive, o);
  ASSERT_TRUE(set.ok()) << set.error().message;
  EXPECT_EQ(set->sequences.size(), 5u);
  EXPECT_EQ(set->requested, 100);
  EXPECT_EQ(set->available, 5);
}

// --- bad input ---------------------------------------------------------------------------------

TEST_F(Calibration, ErrorEmptyFile) {
  EXPECT_HAS(error_of("empty.jsonl", ""), "calibration set " + path("empty.jsonl") + " is empty");
  EXPECT_HAS(error_of("blank.jsonl", "\n  \n\r\n"), "calibration set " + path("blank.jsonl") + " is empty");
  EXPECT_HAS(error_of("blank.txt", "\n\n \t\n"), "calibration set " + path("blank.txt") + " is empty");
  write_gzip(path("empty.jsonl.gz"), {""});
  auto set = load_token_set(path("empty.jsonl.gz"), &kBytes, opts());
  ASSERT_FALSE(set.ok());
  EXPECT_HAS(set.error().message, "calibration set " + path("empty.jsonl.gz") + " is empty");
}

TEST_F(Calibration, ErrorMissingFile) {
  auto set = load_token_set(path("nope.jsonl"), &kBytes, opts());
  ASSERT_FALSE(set.ok());
  EXPECT_HAS(set.error().message, path("nope.jsonl") + ": cannot open calibration set: No such file");
}

TEST_F(Calibration, ErrorMalformedJsonLine) {
  const std::string e = error_of("bad.jsonl", "{\"input_ids\": [1, 2]}\n\n{\"input_ids\": [1, 2}\n");
  EXPECT_HAS(e, path("bad.jsonl") + ":3: malformed JSON at column");
  EXPECT_HAS(error_of("trail.jsonl", "{\"input_ids\": [1, 2]} x\n"), path("trail.jsonl") + ":1: malformed JSON");
}

TEST_F(Calibration, ErrorNumberOverflowInJsonLine) {
  // json::out_of_range, not parse_error: it used to abort the process.
  EXPECT_HAS(error_of("big.jsonl", "{\"input_ids\": [1, 2]}\n{\"input_ids\": [1, 1e400]}\n"),
             path("big.jsonl") + ":2: malformed JSON at column 19: number 1e400 is outside the range of a double");
  EXPECT_HAS(error_of("deep.jsonl", std::string(100, '[') + "\n"), ":1: malformed JSON at column 65: nested deeper");
}

// --- limits -------------------------------------------------------------------------------------

TEST_F(Calibration, ErrorRecordLongerThanTheLimit) {
  CalibrationOptions o = opts();
  o.max_record_bytes = 64;
  const std::string line = "{\"text\": \"" + std::string(100, 'a') + "\"}";
  EXPECT_HAS(error_of("long.jsonl", "{\"text\": \"ab\"}\n" + line + "\n", o),
             path("long.jsonl") + ":2: record longer than the limit of 64 bytes (--max-record-bytes raises it)");
  // A plain-text paragraph of short lines counts as one record, named by its first line.
  std::string para = "ok\n\n";
  for (int i = 0; i < 10; ++i) para += "ten bytes\n";
  EXPECT_HAS(error_of("long.txt", para, o), path("long.txt") + ":3: record longer than the limit of 64 bytes");
  // One line, no newline, far longer than the limit: refused without tokenizing it.
  EXPECT_HAS(error_of("one.txt", std::string(1 << 20, 'x'), o), ":1: record longer than the limit of 64 bytes");
  o.max_record_bytes = 1 << 20;
  EXPECT_TRUE(load("one2.txt", std::string(1000, 'x'), o).ok());
}

TEST_F(Calibration, ErrorTextLargerThanTheLimit) {
  CalibrationOptions o = opts();
  o.max_bytes = 1000;
  EXPECT_HAS(error_of("big.txt", std::string(5000, 'a'), o),
             path("big.txt") + ": holds more than 1000 bytes of text, the limit of a calibration or evaluation set "
                               "(--max-calib-bytes raises it)");
  // A gzip bomb in miniature: 10 MB of zeros in a few kB, stopped at the limit.
  write_gzip(path("bomb.txt.gz"), {std::string(10'000'000, '\0')});
  EXPECT_LT(fs::file_size(path("bomb.txt.gz")), 50'000u);
  auto bomb = load_token_set(path("bomb.txt.gz"), &kBytes, o);
  ASSERT_FALSE(bomb.ok());
  EXPECT_HAS(bomb.error().message, path("bomb.txt.gz") + ": decompresses to more than 1000 bytes of text");
  EXPECT_HAS(bomb.error().message, "--max-calib-bytes");
  o.max_bytes = 5000;
  EXPECT_TRUE(load("fits.txt", std::string(5000, 'a'), o).ok());
  EXPECT_EQ(CalibrationOptions().max_bytes, kDefaultMaxCalibrationBytes);
}

TEST_F(Calibration, ErrorJsonArrayInsteadOfLines) {
  EXPECT_HAS(error_of("arr.json", "[{\"input_ids\": [1, 2]}]\n"),
             ":1: record must be a JSON object, got array (a calibration set holds one JSON object per line");
  EXPECT_HAS(error_of("arr2.json", "[\n{\"input_ids\": [1, 2]}\n]\n"), ":1: malformed JSON");
}

TEST_F(Calibration, ErrorRecordWithoutFields) {
  EXPECT_HAS(error_of("none.jsonl", "{\"input_ids\": [1, 2]}\n{\"txt\": \"a\"}\n"),
             path("none.jsonl") + ":2: record has neither 'text' (a string) nor 'input_ids'");
  EXPECT_HAS(error_of("nulls.jsonl", "{\"text\": null, \"input_ids\": null}\n"),
             ":1: record has neither 'text'");
}

TEST_F(Calibration, ErrorWrongTypes) {
  EXPECT_HAS(error_of("t.jsonl", "{\"text\": 5}\n"), path("t.jsonl") + ":1: 'text' must be a string, got integer");
  EXPECT_HAS(error_of("i.jsonl", "\n{\"input_ids\": \"1 2\"}\n"),
             path("i.jsonl") + ":2: 'input_ids' must be an array of integers, got string");
  EXPECT_HAS(error_of("f.jsonl", "{\"input_ids\": [1, 2.5]}\n"),
             path("f.jsonl") + ":1: 'input_ids' must be an array of integers, but element 1 is 2.5 (number)");
  EXPECT_HAS(error_of("b.jsonl", "{\"input_ids\": [1, true]}\n"), ":1: 'input_ids' must be an array of integers, but element 1 is true");
  EXPECT_HAS(error_of("s.jsonl", "{\"input_ids\": [1, \"2\"]}\n"), "but element 1 is string");
  EXPECT_HAS(error_of("o.jsonl", "5\n"), path("o.jsonl") + ":1: record must be a JSON object, got integer");
}

TEST_F(Calibration, ErrorTokenIdOutsideVocabulary) {
  auto o = opts(512);
  const std::string e = error_of("v.jsonl", "{\"input_ids\": [1, 2]}\n{\"input_ids\": [1, 2, 511, 512, 3]}\n", o);
  EXPECT_HAS(e, path("v.jsonl") + ":2: token id 512 at position 3 is outside the vocabulary [0, 512) (vocab_size 512)");
  EXPECT_HAS(error_of("n.jsonl", "{\"input_ids\": [-1, 2]}\n", o), ":1: token id -1 at position 0 is outside the vocabulary");
  EXPECT_HAS(error_of("h.jsonl", "{\"input_ids\": [1, 18446744073709551615]}\n", o),
             ":1: token id 18446744073709551615 at position 1 is outside the vocabulary [0, 512)");
  EXPECT_HAS(error_of("h0.jsonl", "{\"input_ids\": [1, 4294967296]}\n", opts(0)),
             ":1: token id 4294967296 at position 1 is not a token id");
  // Ids from the tokenizer are checked too: 'x' is 3 + 120 = 123.
  EXPECT_HAS(error_of("tv.txt", "\n\nxa\n", opts(100)), path("tv.txt") + ":3: token id 123 at position 1 is outside the vocabulary [0, 100)");
}

TEST_F(Calibration, ErrorRecordTooShort) {
  EXPECT_HAS(error_of("s.jsonl", "{\"input_ids\": [1, 2]}\n{\"input_ids\": [1]}\n"),
             path("s.jsonl") + ":2: record has 1 tokens, fewer than the 2 required");
  EXPECT_HAS(error_of("e.jsonl", "{\"input_ids\": []}\n"), ":1: record has 0 tokens, fewer than the 2 required");
  auto o = opts();
  o.min_tokens = 5;
  EXPECT_HAS(error_of("t.txt", "abcd\n\nabc\n", o), path("t.txt") + ":3: record has 4 tokens, fewer than the 5 required");
}

TEST_F(Calibration, ErrorCorruptGzip) {
  std::string text;
  for (int i = 0; i < 400; ++i) text += "{\"input_ids\": [1, " + std::to_string(i + 3) + "]}\n";
  write_gzip(path("ok.jsonl.gz"), {text});
  std::string gz = read_file(path("ok.jsonl.gz"));
  ASSERT_GT(gz.size(), 100u);
  std::string corrupt = gz;
  for (size_t i = 40; i < 60; ++i) corrupt[i] = static_cast<char>(corrupt[i] ^ 0x5a);
  const std::string e = error_of("corrupt.jsonl.gz", corrupt);
  EXPECT_HAS(e, path("corrupt.jsonl.gz") + ": corrupt gzip stream at compressed byte offset ");
  // A bad CRC at the end of the member.
  std::string crc = gz;
  crc[crc.size() - 6] = static_cast<char>(crc[crc.size() - 6] ^ 1);
  EXPECT_HAS(error_of("crc.jsonl.gz", crc),
             "corrupt gzip stream at compressed byte offset " + std::to_string(gz.size() - 4) + " (incorrect data check)");
  // A damaged header: the offset is where zlib found it wrong, after reading method and flags.
  std::string header = gz;
  header[2] = 7;  // compression method other than deflate
  EXPECT_HAS(error_of("header.jsonl.gz", header), "corrupt gzip stream at compressed byte offset 4 (unknown compression method)");
}

TEST_F(Calibration, ErrorTruncatedGzip) {
  std::string text;
  for (int i = 0; i < 400; ++i) text += "{\"input_ids\": [1, " + std::to_string(i + 3) + "]}\n";
  write_gzip(path("ok.jsonl.gz"), {text});
  const std::string gz = read_file(path("ok.jsonl.gz"));
  const std::string cut = gz.substr(0, gz.size() / 2);
  EXPECT_HAS(error_of("cut.jsonl.gz", cut),
             path("cut.jsonl.gz") + ": corrupt gzip stream: truncated at compressed byte offset " +
                 std::to_string(cut.size()));
  EXPECT_HAS(error_of("cut8.jsonl.gz", gz.substr(0, gz.size() - 3)), "truncated at compressed byte offset");
}

TEST_F(Calibration, ErrorGzipTrailingGarbage) {
  write_gzip(path("ok.jsonl.gz"), {"{\"input_ids\": [1, 2]}\n"});
  const std::string gz = read_file(path("ok.jsonl.gz"));
  EXPECT_HAS(error_of("junk.jsonl.gz", gz + "junk after the member"),
             "corrupt gzip stream at compressed byte offset ");
}

TEST_F(Calibration, ErrorTextWithoutTokenizer) {
  const std::string want = " has text records but the model has no tokenizer; give input_ids records instead";
  EXPECT_HAS(error_of("t.jsonl", "{\"input_ids\": [1, 2]}\n{\"text\": \"hello\"}\n", opts(), nullptr),
             "calibration set " + path("t.jsonl") + want);
  EXPECT_HAS(error_of("t.jsonl", "{\"input_ids\": [1, 2]}\n{\"text\": \"hello\"}\n", opts(), nullptr),
             "first text record: line 2");
  EXPECT_HAS(error_of("t.txt", "hello\n", opts(), nullptr), "calibration set " + path("t.txt") + want);
}

TEST_F(Calibration, ErrorTokenizerFailure) {
  EXPECT_HAS(error_of("t.jsonl", "{\"text\": \"ok\"}\n{\"text\": \"FAIL\"}\n"),
             path("t.jsonl") + ":2: cannot tokenize the text: cannot encode FAIL");
}

TEST_F(Calibration, ErrorSeqLenAboveMaxPositions) {
  auto o = opts();
  o.max_positions = 512;
  o.seq_len = 1024;
  EXPECT_HAS(error_of("five.jsonl", kFive, o), "seq_len 1024 is above the model's maximum positions 512");
  o.seq_len = 512;
  EXPECT_TRUE(load("five.jsonl", kFive, o).ok());
}

TEST_F(Calibration, ErrorChunksWithoutSeqLen) {
  auto o = opts();
  o.packing = Packing::Chunks;
  EXPECT_HAS(error_of("five.jsonl", kFive, o), "packing into chunks needs a sequence length (--seq-len)");
}

TEST_F(Calibration, ErrorChunksFewerTokensThanOneChunk) {
  auto o = opts();
  o.packing = Packing::Chunks;
  o.seq_len = 100;
  EXPECT_HAS(error_of("five.jsonl", kFive, o), "has 22 tokens, fewer than one chunk of seq_len 100");
}

TEST_F(Calibration, ErrorRecordAboveMaxPositionsWithoutSeqLen) {
  auto o = opts();
  o.max_positions = 5;
  const std::string e = error_of("five.jsonl", kFive, o);
  EXPECT_HAS(e, path("five.jsonl") + ":1: record has 6 tokens, more than the model's maximum positions 5");
  EXPECT_HAS(e, "pass --seq-len");
  o.seq_len = 5;  // truncation makes it fine
  auto set = load("five.jsonl", kFive, o);
  ASSERT_TRUE(set.ok()) << set.error().message;
  EXPECT_EQ(set->sequences[3].size(), 5u);
}

TEST_F(Calibration, ErrorBadOptions) {
  auto o = opts();
  o.samples = -1;
  EXPECT_HAS(error_of("five.jsonl", kFive, o), "the sample count must not be negative");
  o = opts();
  o.seq_len = -2;
  EXPECT_HAS(error_of("five.jsonl", kFive, o), "seq_len must not be negative");
  o = opts();
  o.seq_len = 1;
  EXPECT_HAS(error_of("five.jsonl", kFive, o), "seq_len 1 is below the 2 tokens a sample needs");
}

// --- the real stories260K sets -------------------------------------------------------------------

void check_stories(const std::string& name, int64_t predictions) {
  const std::string file = kStories + name;
  if (!fs::exists(file)) GTEST_SKIP() << file << " is absent";
  CalibrationOptions o;
  o.vocab_size = 512;
  o.max_positions = 512;
  auto set = load_token_set(file, nullptr, o);
  ASSERT_TRUE(set.ok()) << set.error().message;
  EXPECT_EQ(set->records, 64);
  ASSERT_EQ(set->sequences.size(), 64u);
  int64_t preds = 0;
  for (const auto& s : set->sequences) {
    ASSERT_GE(s.size(), 2u);
    EXPECT_LE(s.size(), 256u);
    EXPECT_EQ(s[0], 1);  // BOS
    for (int32_t id : s) {
      EXPECT_GE(id, 0);
      EXPECT_LT(id, 512);
    }
    preds += static_cast<int64_t>(s.size()) - 1;
  }
  if (predictions > 0) {
    EXPECT_EQ(preds, predictions);
  }
  EXPECT_EQ(set->source_hash, hash::hash_file(file).value());

  // Gzip round trip of the real file.
  const fs::path tmp = fs::path(FP4C_BINARY_DIR) / "test-tmp" / "calibration" /
                       (std::to_string(::getpid()) + "-" + name + ".gz");
  fs::create_directories(tmp.parent_path());
  write_gzip(tmp.string(), {read_file(file)});
  auto gz = load_token_set(tmp.string(), nullptr, o);
  ASSERT_TRUE(gz.ok()) << gz.error().message;
  EXPECT_EQ(gz->sequences, set->sequences);
  fs::remove(tmp);

  // 16 samples of 128 tokens in chunks, as a calibration run would take them.
  o.packing = Packing::Chunks;
  o.seq_len = 128;
  o.samples = 16;
  auto chunks = load_token_set(file, nullptr, o);
  ASSERT_TRUE(chunks.ok()) << chunks.error().message;
  EXPECT_EQ(chunks->sequences.size(), 16u);
  EXPECT_EQ(chunks->available, (preds + 64) / 128);
}

TEST(Stories260K, CalibJsonl) { check_stories("calib.jsonl", 0); }

// The README's reference figures count 12409 predictions on eval.jsonl.
TEST(Stories260K, EvalJsonl) { check_stories("eval.jsonl", 12409); }

TEST(Stories260K, CalibTxtParagraphs) {
  const std::string file = kStories + "calib.txt";
  if (!fs::exists(file)) GTEST_SKIP() << file << " is absent";
  ByteTokenizer tok;
  CalibrationOptions o;
  o.vocab_size = tok.vocab_size();
  o.min_tokens = 1;
  auto set = load_token_set(file, &tok, o);
  ASSERT_TRUE(set.ok()) << set.error().message;
  EXPECT_GT(set->records, 1);
  std::string all;
  for (const auto& s : set->sequences) all += tok.decode(s);
  // Every non-blank byte of the file is in some record.
  const std::string text = read_file(file);
  size_t nonblank = 0;
  for (char c : text) nonblank += !std::isspace(static_cast<unsigned char>(c));
  size_t nonblank_records = 0;
  for (char c : all) nonblank_records += !std::isspace(static_cast<unsigned char>(c));
  EXPECT_EQ(nonblank_records, nonblank);
}

}  // namespace
}  // namespace fp4c::frontend
