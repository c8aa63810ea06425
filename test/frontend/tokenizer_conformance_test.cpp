// fp4c's token ids against the reference libraries (Hugging Face `tokenizers`, `sentencepiece`,
// installed from PyPI into a virtualenv in the build directory) on testdata/tokenizers/corpus.txt:
// every line alone, and runs of lines joined by assorted newlines. Every tokenizer the tests can get
// takes part: the two fp4c-synth writes (Qwen2 and Llama 3 style), tokenizer.json files of the
// SentencePiece-BPE kind trained by `tokenizers` itself (Llama 2 / Mistral style, with byte fallback
// and with <unk>), and stories260K's tokenizer.model when ../shared has it. FP4C_OFFLINE=1 skips.
#include <sys/file.h>
#include <unistd.h>

#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <sstream>
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

struct CommandResult {
  int status = -1;
  std::string output;
};

CommandResult run(const std::string& cmd) {
  CommandResult r;
  std::FILE* p = ::popen((cmd + " 2>&1").c_str(), "r");
  if (p == nullptr) return r;
  char buf[4096];
  size_t n;
  while ((n = std::fread(buf, 1, sizeof buf, p)) > 0) r.output.append(buf, n);
  r.status = ::pclose(p);
  return r;
}

std::string quote(const fs::path& p) { return "'" + p.string() + "'"; }

bool offline() {
  const char* v = std::getenv("FP4C_OFFLINE");
  return v != nullptr && std::string(v) == "1";
}

fs::path helper_script() { return fs::path(FP4C_SOURCE_DIR) / "test/frontend/tokenizer_conformance.py"; }

// The virtualenv with `tokenizers` and `sentencepiece`, made once; ctest may run the tests of this
// file in parallel, so a file lock serializes the set-up. Returns its python, or "" with `why` set.
std::string reference_python(std::string& why) {
  const fs::path venv = fs::path(FP4C_BINARY_DIR) / ".venv-tokenizers";
  const fs::path python = venv / "bin/python";
  const fs::path ready = venv / ".fp4c-ready";
  const std::string lock_path = (fs::path(FP4C_BINARY_DIR) / ".venv-tokenizers.lock").string();
  const int fd = ::open(lock_path.c_str(), O_CREAT | O_RDWR, 0644);
  if (fd < 0 || ::flock(fd, LOCK_EX) != 0) {
    why = "cannot lock " + lock_path;
    return "";
  }
  std::string result = python.string();
  if (!fs::exists(ready)) {
    CommandResult r = run("python3 -m venv " + quote(venv));
    if (r.status == 0) r = run(quote(python) + " -m pip install --quiet --disable-pip-version-check tokenizers sentencepiece");
    if (r.status == 0) r = run(quote(python) + " -c 'import tokenizers, sentencepiece'");
    if (r.status == 0) {
      std::ofstream(ready) << "ok\n";
    } else {
      why = "setting up " + venv.string() + " failed:\n" + r.output;
      result.clear();
    }
  }
  ::flock(fd, LOCK_UN);
  ::close(fd);
  return result;
}

fs::path temp_dir(const std::string& name) {
  const fs::path dir = fs::temp_directory_path() / ("fp4c-tokconf-" + std::to_string(::getpid()) + "-" + name);
  fs::remove_all(dir);
  fs::create_directories(dir);
  return dir;
}

// The corpus's lines, and runs of 2 to 6 consecutive lines joined by varied line breaks.
struct Texts {
  std::vector<std::string> texts;
  size_t lines = 0;
};

Texts corpus_texts() {
  Texts t;
  std::ifstream in(fs::path(FP4C_SOURCE_DIR) / "testdata/tokenizers/corpus.txt", std::ios::binary);
  std::string line;
  while (std::getline(in, line)) t.texts.push_back(line);
  t.lines = t.texts.size();
  const char* breaks[] = {"\n", "\n\n", "\r\n", "\n  \n", " \n\t", "\n\n\n"};
  for (size_t i = 0, k = 0; i + 6 < t.lines; i += 7, ++k) {
    std::string block;
    const size_t n = 2 + k % 5;
    for (size_t j = 0; j < n; ++j) block += (j ? breaks[(k + j) % 6] : "") + t.texts[i + j];
    t.texts.push_back(block);
  }
  return t;
}

std::string abbreviate(const std::vector<int32_t>& ids) {
  std::string s = "[";
  for (size_t i = 0; i < ids.size() && i < 40; ++i) s += (i ? ", " : "") + std::to_string(ids[i]);
  return s + (ids.size() > 40 ? ", ...]" : "]");
}

// Encodes every text with fp4c and with the reference, requires identical ids, prints the figures.
void compare(const std::string& name, const fs::path& tokenizer_dir, const std::string& reference_command_prefix) {
  std::string why;
  const std::string python = reference_python(why);
  ASSERT_FALSE(python.empty()) << why;

  auto tok = load_tokenizer(tokenizer_dir.string());
  ASSERT_TRUE(tok.ok()) << tok.error().message;
  const Texts t = corpus_texts();
  ASSERT_GT(t.lines, 2000u) << "the corpus is missing or short";

  const fs::path work = temp_dir(name + "-io");
  const fs::path inputs = work / "inputs.jsonl", expected = work / "expected.jsonl";
  {
    std::ofstream out(inputs, std::ios::binary);
    for (const std::string& s : t.texts) out << json(s).dump() << "\n";
  }
  const CommandResult r =
      run(quote(python) + " " + quote(helper_script()) + " " + reference_command_prefix + " " + quote(inputs) + " " + quote(expected));
  ASSERT_EQ(r.status, 0) << r.output;
  double ref_seconds = 0;
  long long ref_tokens = 0;
  std::sscanf(r.output.c_str(), "seconds=%lf tokens=%lld", &ref_seconds, &ref_tokens);

  std::vector<std::vector<int32_t>> ours;
  ours.reserve(t.texts.size());
  const auto t0 = std::chrono::steady_clock::now();
  for (const std::string& s : t.texts) {
    auto ids = (*tok)->encode(s);
    ASSERT_TRUE(ids.ok()) << ids.error().message;
    ours.push_back(std::move(ids).value());
  }
  const double seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  const auto t1 = std::chrono::steady_clock::now();  // again, with the pre-token cache warm
  for (const std::string& s : t.texts) (void)(*tok)->encode(s);
  const double warm_seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - t1).count();

  std::ifstream in(expected, std::ios::binary);
  std::string line;
  size_t compared = 0, mismatches = 0, tokens = 0;
  for (size_t i = 0; i < t.texts.size(); ++i) {
    ASSERT_TRUE(std::getline(in, line)) << "the reference wrote " << i << " results for " << t.texts.size() << " texts";
    const auto want = json::parse(line).get<std::vector<int32_t>>();
    tokens += ours[i].size();
    ++compared;
    if (want != ours[i]) {
      if (++mismatches <= 5) {
        ADD_FAILURE() << name << ": text " << i << " " << json(t.texts[i]).dump() << "\n  fp4c:      "
                      << abbreviate(ours[i]) << "\n  reference: " << abbreviate(want);
      }
    }
  }
  size_t bytes = 0;
  for (const std::string& s : t.texts) bytes += s.size();
  std::printf("[ %s ] %zu texts compared (%zu lines + %zu multi-line blocks), %zu mismatches, %zu tokens\n",
              name.c_str(), compared, t.lines, compared - t.lines, mismatches, tokens);
  std::printf("[ %s ] encode, one thread: fp4c %.2fM tokens/s = %.1f MB/s (%.2fM tokens/s with a warm pre-token "
              "cache); the reference library called from Python: %.2fM tokens/s\n",
              name.c_str(), tokens / seconds / 1e6, bytes / seconds / 1e6, tokens / warm_seconds / 1e6,
              ref_seconds > 0 ? double(ref_tokens) / ref_seconds / 1e6 : 0.0);
  EXPECT_EQ(mismatches, 0u);
  fs::remove_all(work);
}

std::string synth_bin() {
  if (const char* env = std::getenv("FP4C_SYNTH_BIN")) return env;
  return (fs::path(FP4C_BINARY_DIR) / "fp4c-synth").string();
}

fs::path synth(const std::string& preset) {
  const fs::path dir = temp_dir("synth-" + preset);
  const fs::path out = dir / "model";
  const CommandResult r = run(quote(synth_bin()) + " --preset " + preset + " --threads 1 --out " + quote(out));
  EXPECT_EQ(r.status, 0) << r.output;
  return out;
}

class TokenizerConformance : public ::testing::Test {
 protected:
  void SetUp() override {
    if (offline()) GTEST_SKIP() << "FP4C_OFFLINE=1: no PyPI, no reference libraries";
  }
};

TEST_F(TokenizerConformance, SynthQwen2ByteLevelBpe) {
  const fs::path dir = synth("tiny");
  compare("synth tiny (Qwen2 style)", dir, "encode-hf " + quote(dir / "tokenizer.json"));
  fs::remove_all(dir.parent_path());
}

TEST_F(TokenizerConformance, SynthLlama3ByteLevelBpe) {
  const fs::path dir = synth("tiny-llama");
  compare("synth tiny-llama (Llama 3 style)", dir, "encode-hf " + quote(dir / "tokenizer.json"));
  fs::remove_all(dir.parent_path());
}

// tokenizer.json files of the SentencePiece-BPE kind, trained here by `tokenizers` on the corpus.
void sentencepiece_style(const std::string& variant) {
  std::string why;
  const std::string python = reference_python(why);
  ASSERT_FALSE(python.empty()) << why;
  const fs::path dir = temp_dir("sp-bpe-" + variant);
  const CommandResult r = run(quote(python) + " " + quote(helper_script()) + " train-sp-bpe " +
                              quote(fs::path(FP4C_SOURCE_DIR) / "testdata/tokenizers/corpus.txt") + " " + quote(dir) +
                              " " + variant);
  ASSERT_EQ(r.status, 0) << r.output;
  compare("tokenizer.json SentencePiece-BPE, " + variant, dir, "encode-hf " + quote(dir / "tokenizer.json"));
  fs::remove_all(dir);
}

TEST_F(TokenizerConformance, SentencePieceStyleBpeLegacyNormalizers) { sentencepiece_style("legacy"); }
TEST_F(TokenizerConformance, SentencePieceStyleBpeMetaspace) { sentencepiece_style("metaspace"); }
TEST_F(TokenizerConformance, SentencePieceStyleBpeUnknownTokens) { sentencepiece_style("unk"); }

TEST_F(TokenizerConformance, Stories260KSentencePieceModel) {
  const fs::path dir = fs::path(FP4C_SHARED_DIR) / "models/stories260K";
  if (!fs::exists(dir / "tokenizer.model")) GTEST_SKIP() << dir << " has no tokenizer.model";
  // LlamaTokenizer's conventions: BOS unless add_bos_token is false, EOS only if add_eos_token.
  bool add_bos = true, add_eos = false;
  if (std::ifstream cfg(dir / "tokenizer_config.json"); cfg) {
    const json c = json::parse(cfg);
    add_bos = c.value("add_bos_token", true);
    add_eos = c.value("add_eos_token", false);
  }
  compare("stories260K tokenizer.model", dir,
          "encode-sp " + quote(dir / "tokenizer.model") + (add_bos ? " --add-bos" : "") + (add_eos ? " --add-eos" : ""));
}

// fp4c's NFC (tables generated from Python's unicodedata) against unicodedata itself, over every
// assigned code point in a few contexts.
TEST_F(TokenizerConformance, NfcMatchesPythonUnicodedata) {
  std::string why;
  const std::string python = reference_python(why);
  ASSERT_FALSE(python.empty()) << why;
  const fs::path work = temp_dir("nfc");
  const CommandResult r = run(quote(python) + " " + quote(helper_script()) + " nfc-cases " + quote(work / "in.jsonl") +
                              " " + quote(work / "want.jsonl"));
  ASSERT_EQ(r.status, 0) << r.output;
  std::string source = r.output;  // "cases=N unicode=V"
  while (!source.empty() && (source.back() == '\n' || source.back() == '\r')) source.pop_back();
  std::ifstream in(work / "in.jsonl", std::ios::binary), want(work / "want.jsonl", std::ios::binary);
  std::string a, b;
  size_t compared = 0, mismatches = 0;
  while (std::getline(in, a) && std::getline(want, b)) {
    const auto text = json::parse(a).get<std::string>();
    const auto expected = json::parse(b).get<std::string>();
    ++compared;
    if (unicode::nfc(text) != expected && ++mismatches <= 5) {
      ADD_FAILURE() << "nfc(" << a << ") = " << json(unicode::nfc(text)).dump() << ", Python: " << b;
    }
  }
  std::printf("[ NFC ] %zu strings compared with Python's unicodedata (%s), %zu mismatches\n", compared,
              source.c_str(), mismatches);
  EXPECT_GT(compared, 500000u);
  EXPECT_EQ(mismatches, 0u);
  fs::remove_all(work);
}

}  // namespace
}  // namespace fp4c::frontend
