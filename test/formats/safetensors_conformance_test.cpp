// Conformance with the official Python `safetensors` library, both directions, plus agreement on
// which malformed files to reject. Needs python3 and pip (a virtualenv is made once under the build
// directory); fails loudly when it cannot be made, unless FP4C_OFFLINE=1, which skips.
#include <fcntl.h>
#include <gtest/gtest.h>
#include <sys/file.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <random>
#include <sstream>

#include <nlohmann/json.hpp>

#include "formats/safetensors.h"

namespace fp4c::safetensors {
namespace {

namespace fs = std::filesystem;

const fs::path kVenv = fs::path(FP4C_BINARY_DIR) / ".venv-conformance";
const fs::path kScript = fs::path(FP4C_SOURCE_DIR) / "test" / "formats" / "safetensors_conformance.py";

struct RunResult {
  int rc = -1;
  std::string output;
};

// Runs a shell command, stdout and stderr together.
RunResult run(const std::string& command) {
  RunResult r;
  FILE* p = ::popen((command + " 2>&1").c_str(), "r");
  if (!p) return r;
  char buf[4096];
  size_t n;
  while ((n = std::fread(buf, 1, sizeof buf, p)) > 0) r.output.append(buf, n);
  int status = ::pclose(p);
  r.rc = WIFEXITED(status) ? WEXITSTATUS(status) : -1;
  return r;
}

std::string quote(const std::string& s) {
  std::string out = "'";
  for (char c : s) out += c == '\'' ? std::string("'\\''") : std::string(1, c);
  return out + "'";
}

// The venv's python, made on first use. Test processes may run in parallel: a file lock serializes
// the set-up, and a marker written last says it completed.
std::string python_or_fail() {
  const fs::path marker = kVenv / ".fp4c-ready";
  const std::string lock_path = kVenv.string() + ".lock";
  int lock = ::open(lock_path.c_str(), O_RDWR | O_CREAT | O_CLOEXEC, 0644);
  if (lock < 0) {
    ADD_FAILURE() << "cannot create " << lock_path;
    return "";
  }
  ::flock(lock, LOCK_EX);
  std::string python = (kVenv / "bin" / "python").string();
  if (!fs::exists(marker)) {
    fs::remove_all(kVenv);
    const std::string setup = "python3 -m venv " + quote(kVenv.string()) + " && " + quote(python) +
                              " -m pip install --disable-pip-version-check -q 'safetensors>=0.4' numpy && " +
                              quote(python) + " -c 'import safetensors, numpy'";
    RunResult r = run(setup);
    if (r.rc != 0) {
      ADD_FAILURE() << "could not make the conformance virtualenv (set FP4C_OFFLINE=1 to skip this test "
                       "without network):\n$ " << setup << "\n" << r.output;
      python.clear();
    } else {
      std::ofstream(marker) << "ok\n";
    }
  }
  ::flock(lock, LOCK_UN);
  ::close(lock);
  return python;
}

std::string hex(std::span<const std::byte> bytes) {
  static const char* digits = "0123456789abcdef";
  std::string s;
  s.reserve(bytes.size() * 2);
  for (std::byte b : bytes) {
    s += digits[std::to_integer<int>(b) >> 4];
    s += digits[std::to_integer<int>(b) & 15];
  }
  return s;
}

std::vector<std::byte> random_bytes(size_t n, std::mt19937_64& rng) {
  std::vector<std::byte> out(n);
  for (auto& b : out) b = static_cast<std::byte>(rng() & 0xff);
  return out;
}

std::string raw_file(std::string_view header, std::string_view data, std::optional<uint64_t> length = {}) {
  uint64_t n = length.value_or(header.size());
  std::string out(8, '\0');
  for (int i = 0; i < 8; ++i) out[i] = static_cast<char>((n >> (8 * i)) & 0xff);
  return out + std::string(header) + std::string(data);
}

class SafetensorsConformanceTest : public ::testing::Test {
 protected:
  void SetUp() override {
    const char* offline = std::getenv("FP4C_OFFLINE");
    if (offline && std::string(offline) == "1") GTEST_SKIP() << "FP4C_OFFLINE=1: no virtualenv, no official library";
    python_ = python_or_fail();
    ASSERT_FALSE(python_.empty());
    const auto* info = ::testing::UnitTest::GetInstance()->current_test_info();
    dir_ = fs::path(FP4C_BINARY_DIR) / "test-tmp" / "safetensors-conformance" /
           (std::string(info->name()) + "-" + std::to_string(::getpid()));
    fs::remove_all(dir_);
    fs::create_directories(dir_);
  }
  void TearDown() override {
    if (!HasFailure() && !dir_.empty()) fs::remove_all(dir_);
  }

  RunResult script(const std::string& args) { return run(quote(python_) + " " + quote(kScript.string()) + " " + args); }

  std::string python_;
  fs::path dir_;
};

TEST_F(SafetensorsConformanceTest, FilesWrittenByFp4cAreReadByTheOfficialLibrary) {
  const std::vector<DType> dtypes = {DType::BF16, DType::F16, DType::F32, DType::U8, DType::F8_E4M3, DType::I32,
                                     DType::I64};
  const std::vector<std::vector<int64_t>> shapes = {{}, {0}, {1}, {5}, {3, 4}, {2, 0, 3}, {2, 3, 5}, {64, 33}};
  std::mt19937_64 rng(20240601);
  nlohmann::json files = nlohmann::json::array();

  auto write = [&](const std::string& name, std::vector<TensorSpec> specs,
                   const std::map<std::string, std::string>& metadata, size_t max_chunk) {
    const std::string path = (dir_ / name).string();
    std::vector<std::vector<std::byte>> data;
    for (const TensorSpec& s : specs) data.push_back(random_bytes(s.nbytes(), rng));
    Expected<Writer> w = Writer::create(path, specs, metadata);
    ASSERT_TRUE(w.ok()) << w.error().message;
    std::vector<std::byte> all;
    for (const auto& d : data) all.insert(all.end(), d.begin(), d.end());
    for (size_t at = 0; at < all.size();) {  // chunks crossing tensor boundaries
      size_t n = std::min<size_t>(1 + rng() % max_chunk, all.size() - at);
      ASSERT_TRUE(w->write(std::span(all).subspan(at, n)).ok());
      at += n;
    }
    Status s = w->finish();
    ASSERT_TRUE(s.ok()) << s.error().message;
    nlohmann::json tensors = nlohmann::json::array();
    for (size_t i = 0; i < specs.size(); ++i)
      tensors.push_back({{"name", specs[i].name}, {"dtype", dtype_name(specs[i].dtype)},
                         {"shape", specs[i].shape}, {"hex", hex(data[i])}});
    files.push_back({{"path", path}, {"metadata", metadata}, {"tensors", tensors}});
  };

  std::vector<TensorSpec> all;
  for (DType t : dtypes)
    for (size_t i = 0; i < shapes.size(); ++i)
      all.push_back({"model." + std::string(dtype_name(t)) + ".t" + std::to_string(i), t, shapes[i]});
  std::shuffle(all.begin(), all.end(), rng);  // dtypes of mixed alignment, in no particular order
  write("all_dtypes.safetensors", all, {{"format", "pt"}, {"quantizer", "fp4c ünïcode"}}, 300);
  for (DType t : dtypes) {
    std::vector<TensorSpec> one;
    for (size_t i = 0; i < shapes.size(); ++i) one.push_back({"t" + std::to_string(i), t, shapes[i]});
    write(std::string("only_") + std::string(dtype_name(t)) + ".safetensors", one, {}, 1 << 16);
  }
  write("no_tensors.safetensors", {}, {}, 1);
  write("metadata_only.safetensors", {}, {{"k", "v"}}, 1);
  write("scalar.safetensors", {{"s", DType::F8_E4M3, {}}}, {}, 1);

  const fs::path desc = dir_ / "written.json";
  std::ofstream(desc) << nlohmann::json{{"files", files}}.dump(1);
  RunResult r = script("check-written " + quote(desc.string()));
  EXPECT_EQ(r.rc, 0) << r.output;
}

TEST_F(SafetensorsConformanceTest, FilesWrittenByTheOfficialLibraryAreReadByFp4c) {
  RunResult r = script("write-official " + quote(dir_.string()));
  ASSERT_EQ(r.rc, 0) << r.output;
  nlohmann::json expected = nlohmann::json::parse(std::ifstream(dir_ / "expected.json"));
  ASSERT_GE(expected["files"].size(), 3u);
  for (const nlohmann::json& f : expected["files"]) {
    const std::string path = f["path"];
    Expected<File> file = File::open(path);
    ASSERT_TRUE(file.ok()) << file.error().message;
    const auto metadata = f["metadata"].get<std::map<std::string, std::string>>();
    EXPECT_EQ(file->metadata(), metadata) << path;
    ASSERT_EQ(file->tensors().size(), f["tensors"].size()) << path;
    for (const nlohmann::json& t : f["tensors"]) {
      const std::string name = t["name"];
      const TensorEntry* e = file->find(name);
      ASSERT_NE(e, nullptr) << path << ": " << name;
      EXPECT_EQ(dtype_name(e->dtype), t["dtype"].get<std::string>()) << name;
      EXPECT_EQ(e->shape, t["shape"].get<std::vector<int64_t>>()) << name;
      EXPECT_EQ(hex(file->bytes(*e)), t["hex"].get<std::string>()) << name;
    }
  }

  // The sharded checkpoint: our reader opens it, our index writer reproduces transformers' bytes.
  const nlohmann::json& sharded = expected["sharded"];
  const std::string ckpt_dir = sharded["dir"];
  Expected<Checkpoint> ck = Checkpoint::open(ckpt_dir);
  ASSERT_TRUE(ck.ok()) << ck.error().message;
  EXPECT_TRUE(ck->sharded());
  EXPECT_EQ(ck->tensors().size(), sharded["weight_map"].size());
  const std::string hf_index = (fs::path(ckpt_dir) / "model.safetensors.index.json").string();
  Expected<Index> index = read_index(hf_index);
  ASSERT_TRUE(index.ok()) << index.error().message;
  EXPECT_EQ(index->metadata.at("total_size"), std::to_string(sharded["total_size"].get<uint64_t>()));
  const std::string ours = (dir_ / "ours.index.json").string();
  ASSERT_TRUE(write_index(ours, *index, sharded["total_size"].get<uint64_t>()).ok());
  auto slurp = [](const std::string& p) { std::stringstream ss; ss << std::ifstream(p).rdbuf(); return ss.str(); };
  EXPECT_EQ(slurp(ours), slurp(hf_index));
}

// Every malformed file fp4c rejects, the official library rejects too (duplicate keys aside: it keeps
// the last, we refuse; and dtypes it knows that fp4c does not support).
TEST_F(SafetensorsConformanceTest, MalformedFilesAreRejectedByBoth) {
  auto pad = [](std::string h) { h.resize((h.size() + 7) / 8 * 8, ' '); return h; };
  const std::map<std::string, std::string> cases = {
      {"short", "abc"},
      {"header_past_end", raw_file("{}", "", 1000)},
      {"malformed_json", raw_file(R"({"a":1x})", "")},
      {"not_object", raw_file("[1]", "")},
      {"missing_dtype", raw_file(R"({"w":{"shape":[1],"data_offsets":[0,1]}})", "x")},
      {"float_shape", raw_file(R"({"w":{"dtype":"U8","shape":[1.0],"data_offsets":[0,1]}})", "x")},
      {"negative_dim", raw_file(R"({"w":{"dtype":"U8","shape":[-1],"data_offsets":[0,1]}})", "x")},
      {"end_before_begin", raw_file(R"({"w":{"dtype":"U8","shape":[1],"data_offsets":[2,1]}})", "xyz")},
      {"outside_data", raw_file(pad(R"({"w":{"dtype":"F32","shape":[2],"data_offsets":[0,8]}})"), "abcd")},
      {"overlap", raw_file(R"({"a":{"dtype":"U8","shape":[4],"data_offsets":[0,4]},)"
                           R"("b":{"dtype":"U8","shape":[4],"data_offsets":[2,6]}})", "123456")},
      {"gap", raw_file(R"({"a":{"dtype":"U8","shape":[2],"data_offsets":[0,2]},)"
                       R"("b":{"dtype":"U8","shape":[2],"data_offsets":[4,6]}})", "123456")},
      {"gap_at_start", raw_file(R"({"a":{"dtype":"U8","shape":[2],"data_offsets":[1,3]}})", "123")},
      {"trailing", raw_file(pad(R"({"a":{"dtype":"U8","shape":[2],"data_offsets":[0,2]}})"), "12345")},
      {"trailing_empty", raw_file("{}", "x")},
      {"span_mismatch", raw_file(R"({"w":{"dtype":"BF16","shape":[2,3],"data_offsets":[0,6]}})", "123456")},
      {"bad_metadata", raw_file(R"({"__metadata__":{"a":1}})", "")},
      {"numel_overflow",
       raw_file(R"({"w":{"dtype":"I64","shape":[4294967296,4294967296],"data_offsets":[0,0]}})", "")},
  };
  std::string paths;
  for (const auto& [name, bytes] : cases) {
    const std::string path = (dir_ / (name + ".safetensors")).string();
    std::ofstream(path, std::ios::binary) << bytes;
    Expected<File> f = File::open(path);
    EXPECT_FALSE(f.ok()) << "fp4c accepts " << name;
    paths += " " + quote(path);
  }
  // And a well-formed file of fp4c's, which both accept.
  const std::string good = (dir_ / "good.safetensors").string();
  {
    Expected<Writer> w = Writer::create(good, {{"a", DType::U8, {2}}});
    ASSERT_TRUE(w.ok());
    std::byte two[2] = {std::byte{1}, std::byte{2}};
    ASSERT_TRUE(w->write(two).ok());
    ASSERT_TRUE(w->finish().ok());
  }
  RunResult r = script("check-rejected" + paths);
  EXPECT_EQ(r.rc, 0) << r.output;
  RunResult g = script("check-rejected " + quote(good));
  EXPECT_NE(g.output.find("accepts it"), std::string::npos) << g.output;
}

}  // namespace
}  // namespace fp4c::safetensors
