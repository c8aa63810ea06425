// safetensors: strict reading (one test per bad input), streaming writing, indexes, checkpoints.
#include "formats/safetensors.h"

#include <gtest/gtest.h>
#include <unistd.h>
#include <xxhash.h>

#include <atomic>
#include <thread>
#include <algorithm>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <random>
#include <sstream>

namespace fp4c::safetensors {
namespace {

namespace fs = std::filesystem;

std::vector<std::byte> random_bytes(size_t n, uint64_t seed) {
  std::mt19937_64 rng(seed);
  std::vector<std::byte> out(n);
  for (auto& b : out) b = static_cast<std::byte>(rng() & 0xff);
  return out;
}

std::string read_file(const fs::path& p) {
  std::ifstream in(p, std::ios::binary);
  std::stringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

void write_file(const fs::path& p, std::string_view bytes) {
  std::ofstream out(p, std::ios::binary | std::ios::trunc);
  out.write(bytes.data(), static_cast<std::streamsize>(bytes.size()));
}

// A safetensors file with the given header text (as is) and data; length prefix from the header.
std::string raw_file(std::string_view header, std::string_view data, std::optional<uint64_t> length = {}) {
  uint64_t n = length.value_or(header.size());
  std::string out(8, '\0');
  for (int i = 0; i < 8; ++i) out[i] = static_cast<char>((n >> (8 * i)) & 0xff);
  return out + std::string(header) + std::string(data);
}

class SafetensorsTest : public ::testing::Test {
 protected:
  void SetUp() override {
    const auto* info = ::testing::UnitTest::GetInstance()->current_test_info();
    dir_ = fs::path(FP4C_BINARY_DIR) / "test-tmp" / "safetensors" /
           (std::string(info->name()) + "-" + std::to_string(::getpid()));
    fs::remove_all(dir_);
    fs::create_directories(dir_);
  }
  void TearDown() override {
    if (!HasFailure()) fs::remove_all(dir_);
  }

  // Writes a raw file and returns the error File::open gives for it (fails the test if it opens).
  std::string open_error(std::string_view contents, const std::string& name = "bad.safetensors") {
    const std::string path = (dir_ / name).string();
    write_file(path, contents);
    Expected<File> f = File::open(path);
    if (f.ok()) {
      ADD_FAILURE() << "opened: " << path;
      return "";
    }
    EXPECT_NE(f.error().message.find(path), std::string::npos) << "error does not name the file: "
                                                                << f.error().message;
    return f.error().message;
  }

  // Writes tensors with a Writer in one piece each.
  void write_tensors(const std::string& path, const std::vector<TensorSpec>& specs,
                     const std::vector<std::vector<std::byte>>& data,
                     const std::map<std::string, std::string>& metadata = {}) {
    Expected<Writer> w = Writer::create(path, specs, metadata);
    ASSERT_TRUE(w.ok()) << w.error().message;
    for (const auto& d : data) ASSERT_TRUE(w->write(d).ok());
    Status s = w->finish();
    ASSERT_TRUE(s.ok()) << s.error().message;
  }

  fs::path dir_;
};

#define EXPECT_MENTIONS(msg, text) EXPECT_NE((msg).find(text), std::string::npos) << "missing '" << (text) << "' in: " << (msg)

const std::vector<DType> kAllDTypes = {DType::BF16, DType::F16,     DType::F32, DType::U8,
                                       DType::F8_E4M3, DType::I32, DType::I64};

// ---------------------------------------------------------------------------------------------
// Round trips

TEST_F(SafetensorsTest, RoundTripEveryDTypeAndShape) {
  const std::vector<std::vector<int64_t>> shapes = {{}, {0}, {1}, {7}, {2, 3}, {4, 0, 5}, {3, 1, 2, 5}};
  std::vector<TensorSpec> specs;
  std::vector<std::vector<std::byte>> data;
  uint64_t seed = 1;
  for (DType t : kAllDTypes)
    for (const auto& shape : shapes) {
      std::string name = std::string(dtype_name(t)) + ".s" + std::to_string(specs.size());
      specs.push_back({name, t, shape});
      data.push_back(random_bytes(specs.back().nbytes(), seed++));
    }
  const std::string path = (dir_ / "all.safetensors").string();
  write_tensors(path, specs, data);

  Expected<File> f = File::open(path);
  ASSERT_TRUE(f.ok()) << f.error().message;
  ASSERT_EQ(f->tensors().size(), specs.size());
  EXPECT_TRUE(f->metadata().empty());
  EXPECT_EQ(f->file_size(), fs::file_size(path));
  EXPECT_EQ(f->data_offset() % 8, 0u);
  for (size_t i = 0; i < specs.size(); ++i) {
    const TensorEntry* e = f->find(specs[i].name);
    ASSERT_NE(e, nullptr) << specs[i].name;
    EXPECT_EQ(e->dtype, specs[i].dtype);
    EXPECT_EQ(e->shape, specs[i].shape);
    EXPECT_EQ(e->nbytes(), specs[i].nbytes());
    int64_t numel = 1;
    for (int64_t d : specs[i].shape) numel *= d;
    EXPECT_EQ(e->numel(), numel);
    auto b = f->bytes(*e);
    ASSERT_EQ(b.size(), data[i].size());
    EXPECT_TRUE(std::equal(b.begin(), b.end(), data[i].begin())) << specs[i].name;
  }
  // tensors() is in offset order, which is spec order here.
  uint64_t at = 0;
  for (const TensorEntry& e : f->tensors()) {
    EXPECT_EQ(e.begin, at);
    at = e.end;
  }
  EXPECT_EQ(f->raw().size(), f->file_size());
}

// A MemoryFile holds the bytes a Writer writes from the same specs, metadata and data, and opens as a File
// whose release() keeps the bytes (anonymous memory has no file to read them again from).
TEST_F(SafetensorsTest, MemoryFileIsTheWrittenFileByteForByte) {
  const std::vector<std::vector<int64_t>> shapes = {{}, {0}, {1}, {7}, {2, 3}, {3, 1, 2, 5}};
  std::vector<TensorSpec> specs;
  std::vector<std::vector<std::byte>> data;
  uint64_t seed = std::random_device{}();
  for (DType t : kAllDTypes)
    for (const auto& shape : shapes) {
      specs.push_back({std::string(dtype_name(t)) + ".m" + std::to_string(specs.size()), t, shape});
      data.push_back(random_bytes(specs.back().nbytes(), seed++));
    }
  const std::map<std::string, std::string> metadata = {{"format", "pt"}, {"k", "v"}};
  const std::string path = (dir_ / "written.safetensors").string();
  write_tensors(path, specs, data, metadata);

  Expected<MemoryFile> m = MemoryFile::create("image", specs, metadata);
  ASSERT_TRUE(m.ok()) << m.error().message;
  ASSERT_EQ(m->size(), specs.size());
  for (size_t i = 0; i < specs.size(); ++i) {
    ASSERT_EQ(m->tensor(i).size(), data[i].size());
    std::copy(data[i].begin(), data[i].end(), m->tensor(i).begin());
  }
  MemoryFile moved = std::move(*m);
  Expected<File> mem = moved.finish();
  ASSERT_TRUE(mem.ok()) << mem.error().message;
  EXPECT_FALSE(moved.finish().ok());  // handed over once
  EXPECT_TRUE(mem->in_memory());
  EXPECT_EQ(mem->path(), "image");
  EXPECT_EQ(mem->metadata(), metadata);
  Expected<File> disk = File::open(path);
  ASSERT_TRUE(disk.ok()) << disk.error().message;
  EXPECT_FALSE(disk->in_memory());
  ASSERT_EQ(mem->raw().size(), disk->raw().size());
  EXPECT_EQ(std::memcmp(mem->raw().data(), disk->raw().data(), disk->raw().size()), 0);

  const TensorEntry& e = mem->tensors()[3];
  ASSERT_GT(e.nbytes(), 0u);
  mem->release(e);
  auto b = mem->bytes(e);
  EXPECT_TRUE(std::equal(b.begin(), b.end(), data[3].begin()));
  Checkpoint c = Checkpoint::of_file(std::move(*mem));
  ASSERT_EQ(c.tensors().size(), specs.size());
  ASSERT_NE(c.find(specs[4].name), nullptr);
  EXPECT_EQ(c.find(specs[4].name)->entry->shape, specs[4].shape);
}

// A lazy image makes each tensor once, when bytes() first asks for it (from any number of threads at once),
// and produce() makes it into the caller's buffer without making it in the image.
TEST_F(SafetensorsTest, LazyMemoryFileMakesEachTensorOnceWhenRead) {
  std::vector<TensorSpec> specs;
  std::vector<std::vector<std::byte>> data;
  uint64_t seed = std::random_device{}();
  for (int i = 0; i < 6; ++i) {
    specs.push_back({"t" + std::to_string(i), DType::F32, {3 + i, 5}});
    data.push_back(random_bytes(specs.back().nbytes(), seed++));
  }
  Expected<MemoryFile> m = MemoryFile::create("lazy", specs);
  ASSERT_TRUE(m.ok()) << m.error().message;
  std::vector<std::atomic<int>> calls(specs.size());
  Expected<File> f = m->finish_lazy([&](size_t i, uint64_t offset, std::span<std::byte> out) {
    ++calls[i];
    ASSERT_LE(offset + out.size(), data[i].size());
    std::copy_n(data[i].begin() + long(offset), out.size(), out.begin());
  });
  ASSERT_TRUE(f.ok()) << f.error().message;
  EXPECT_TRUE(f->lazy());
  EXPECT_TRUE(f->in_memory());
  const TensorEntry& e2 = f->tensors()[2];
  std::vector<std::byte> out(e2.nbytes());
  f->produce(e2, out);
  f->produce(e2, out);
  EXPECT_EQ(out, data[2]);
  EXPECT_EQ(calls[2].load(), 2);
  std::vector<std::byte> part(7);  // a part: bytes [9, 16)
  f->produce(e2, part, 9);
  EXPECT_TRUE(std::equal(part.begin(), part.end(), data[2].begin() + 9));
  EXPECT_EQ(calls[2].load(), 3);
  // Not made in the image by produce(): the image still holds zeros there.
  const auto raw = f->raw().subspan(f->data_offset() + e2.begin, e2.nbytes());
  EXPECT_TRUE(std::all_of(raw.begin(), raw.end(), [](std::byte b) { return b == std::byte{0}; }));
  std::vector<std::thread> readers;
  for (int r = 0; r < 4; ++r)
    readers.emplace_back([&] {
      for (const TensorEntry& e : f->tensors()) {
        const auto b = f->bytes(e);
        EXPECT_TRUE(std::equal(b.begin(), b.end(), data[size_t(&e - f->tensors().data())].begin()));
      }
    });
  for (auto& t : readers) t.join();
  for (size_t i = 0; i < specs.size(); ++i) EXPECT_EQ(calls[i].load(), i == 2 ? 4 : 1) << i;
}

TEST_F(SafetensorsTest, MemoryFileRejectsBadSpecsByName) {
  Expected<MemoryFile> twice = MemoryFile::create("img", {{"a", DType::F32, {2}}, {"a", DType::F32, {2}}});
  ASSERT_FALSE(twice.ok());
  EXPECT_MENTIONS(twice.error().message, "img: tensor 'a': declared twice");
  Expected<MemoryFile> neg = MemoryFile::create("img", {{"b", DType::F32, {-1}}});
  ASSERT_FALSE(neg.ok());
  EXPECT_MENTIONS(neg.error().message, "tensor 'b'");
}

TEST_F(SafetensorsTest, ScalarAndEmptyTensorsHaveExpectedSizes) {
  EXPECT_EQ((TensorSpec{"s", DType::I64, {}}.nbytes()), 8u);
  EXPECT_EQ((TensorSpec{"e", DType::F32, {3, 0}}.nbytes()), 0u);
  EXPECT_EQ((TensorSpec{"b", DType::BF16, {2, 3}}.nbytes()), 12u);
  EXPECT_EQ(checked_nbytes(DType::U8, std::vector<int64_t>{-1}), std::nullopt);
  EXPECT_EQ(checked_nbytes(DType::I64, std::vector<int64_t>{int64_t{1} << 62}), std::nullopt);
}

TEST_F(SafetensorsTest, HeaderLayoutIsCompactOrderedAndPadded) {
  const std::string path = (dir_ / "h.safetensors").string();
  write_tensors(path, {{"z", DType::F32, {2}}, {"a", DType::U8, {}}}, {random_bytes(8, 1), random_bytes(1, 2)},
                {{"format", "pt"}});
  const std::string bytes = read_file(path);
  const std::string json =
      R"({"__metadata__":{"format":"pt"},"z":{"dtype":"F32","shape":[2],"data_offsets":[0,8]},)"
      R"("a":{"dtype":"U8","shape":[],"data_offsets":[8,9]}})";
  uint64_t n = 0;
  std::memcpy(&n, bytes.data(), 8);
  EXPECT_EQ(n % 8, 0u);
  EXPECT_EQ(n, (json.size() + 7) / 8 * 8);
  EXPECT_EQ(bytes.substr(8, n), json + std::string(n - json.size(), ' '));
  EXPECT_EQ(bytes.size(), 8 + n + 9);
}

TEST_F(SafetensorsTest, EmptyMetadataIsOmitted) {
  const std::string path = (dir_ / "m.safetensors").string();
  write_tensors(path, {{"x", DType::U8, {1}}}, {random_bytes(1, 1)});
  EXPECT_EQ(read_file(path).substr(8, 56), R"({"x":{"dtype":"U8","shape":[1],"data_offsets":[0,1]}})" "   ");
}

TEST_F(SafetensorsTest, MetadataRoundTrips) {
  const std::string path = (dir_ / "meta.safetensors").string();
  std::map<std::string, std::string> meta = {{"format", "pt"}, {"note", "ünïcode \"quoted\"\n"}, {"", "empty key"}};
  write_tensors(path, {{"w", DType::BF16, {2, 2}}}, {random_bytes(8, 3)}, meta);
  Expected<File> f = File::open(path);
  ASSERT_TRUE(f.ok()) << f.error().message;
  EXPECT_EQ(f->metadata(), meta);
}

TEST_F(SafetensorsTest, ZeroTensorFileWritesAndOpens) {
  const std::string path = (dir_ / "empty.safetensors").string();
  write_tensors(path, {}, {});
  EXPECT_EQ(read_file(path), raw_file("{}      ", ""));
  Expected<File> f = File::open(path);
  ASSERT_TRUE(f.ok()) << f.error().message;
  EXPECT_TRUE(f->tensors().empty());
  // Unpadded "{}" as other writers may produce it opens too.
  write_file(path, raw_file("{}", ""));
  EXPECT_TRUE(File::open(path).ok());
}

TEST_F(SafetensorsTest, ChunkedWritesMayCrossTensorBoundaries) {
  std::vector<TensorSpec> specs = {{"a", DType::F32, {3, 5}},  {"empty", DType::F16, {0, 4}},
                                   {"b", DType::U8, {1}},      {"big", DType::BF16, {5, 1 << 20}},  // > buffer
                                   {"c", DType::I64, {}},      {"d", DType::F8_E4M3, {33}}};
  uint64_t total = 0;
  for (const auto& s : specs) total += s.nbytes();
  const std::vector<std::byte> all = random_bytes(total, 42);

  const std::string one = (dir_ / "one.safetensors").string();
  const std::string chunked = (dir_ / "chunked.safetensors").string();
  write_tensors(one, specs, {all});

  Expected<Writer> w = Writer::create(chunked, specs);
  ASSERT_TRUE(w.ok()) << w.error().message;
  std::mt19937_64 rng(7);
  size_t at = 0;
  const size_t sizes[] = {0, 1, 3, 7, 61, 4096, 100000, (9u << 20)};
  while (at < all.size()) {
    size_t n = std::min(sizes[rng() % std::size(sizes)], all.size() - at);
    ASSERT_TRUE(w->write(std::span(all).subspan(at, n)).ok());
    at += n;
  }
  ASSERT_TRUE(w->finish().ok());
  EXPECT_EQ(w->bytes_written(), fs::file_size(chunked));
  EXPECT_EQ(read_file(one), read_file(chunked));

  Expected<File> f = File::open(chunked);
  ASSERT_TRUE(f.ok()) << f.error().message;
  auto big = f->bytes(*f->find("big"));
  const TensorEntry& e = *f->find("big");
  EXPECT_TRUE(std::equal(big.begin(), big.end(), all.begin() + static_cast<ptrdiff_t>(e.begin)));
}

TEST_F(SafetensorsTest, FileHashIsXxh3128OfTheFileBytes) {
  const std::string path = (dir_ / "hash.safetensors").string();
  std::vector<TensorSpec> specs = {{"a", DType::F32, {1000}}, {"b", DType::BF16, {3, 1 << 20}}};
  Expected<Writer> w = Writer::create(path, specs, {{"k", "v"}});
  ASSERT_TRUE(w.ok());
  EXPECT_EQ(w->file_hash(), (std::array<uint8_t, 16>{}));  // not finished yet
  ASSERT_TRUE(w->write(random_bytes(4000, 1)).ok());
  ASSERT_TRUE(w->write(random_bytes(6u << 20, 2)).ok());
  ASSERT_TRUE(w->finish().ok());

  const std::string bytes = read_file(path);
  XXH128_canonical_t c;
  XXH128_canonicalFromHash(&c, XXH3_128bits(bytes.data(), bytes.size()));
  std::array<uint8_t, 16> expected;
  std::memcpy(expected.data(), c.digest, 16);
  EXPECT_EQ(w->file_hash(), expected);
}

TEST_F(SafetensorsTest, WriterRejectsWritingMoreThanDeclared) {
  const std::string path = (dir_ / "over.safetensors").string();
  Expected<Writer> w = Writer::create(path, {{"a", DType::F32, {2}}, {"b", DType::U8, {3}}});
  ASSERT_TRUE(w.ok());
  ASSERT_TRUE(w->write(random_bytes(9, 1)).ok());
  Status s = w->write(random_bytes(3, 2));
  ASSERT_FALSE(s.ok());
  EXPECT_MENTIONS(s.error().message, path);
  EXPECT_MENTIONS(s.error().message, "exceeds the declared data (11 bytes, 2 left, in tensor 'b'");
  EXPECT_FALSE(w->finish().ok());  // failed for good
}

TEST_F(SafetensorsTest, WriterFinishNamesTheIncompleteTensorAndRemovesTheFile) {
  const std::string path = (dir_ / "short.safetensors").string();
  {
    Expected<Writer> w = Writer::create(path, {{"a", DType::F32, {2}}, {"b", DType::U8, {3}}});
    ASSERT_TRUE(w.ok());
    ASSERT_TRUE(w->write(random_bytes(9, 1)).ok());
    Status s = w->finish();
    ASSERT_FALSE(s.ok());
    EXPECT_MENTIONS(s.error().message, path);
    EXPECT_MENTIONS(s.error().message, "after 9 of 11 data bytes: tensor 'b' got 1 of its 3 bytes");
    EXPECT_TRUE(fs::exists(path));
  }
  EXPECT_FALSE(fs::exists(path));  // no half-written file left behind
}

TEST_F(SafetensorsTest, WriterRejectsBadSpecs) {
  const std::string path = (dir_ / "specs.safetensors").string();
  Expected<Writer> dup = Writer::create(path, {{"a", DType::F32, {2}}, {"a", DType::U8, {3}}});
  ASSERT_FALSE(dup.ok());
  EXPECT_MENTIONS(dup.error().message, "tensor 'a': declared twice");
  Expected<Writer> neg = Writer::create(path, {{"n", DType::F32, {2, -1}}});
  ASSERT_FALSE(neg.ok());
  EXPECT_MENTIONS(neg.error().message, "tensor 'n': shape [2, -1]");
  Expected<Writer> meta = Writer::create(path, {{"__metadata__", DType::U8, {1}}});
  ASSERT_FALSE(meta.ok());
  EXPECT_MENTIONS(meta.error().message, "reserved");
  EXPECT_FALSE(fs::exists(path));
}

TEST_F(SafetensorsTest, WriterIsMovable) {
  const std::string path = (dir_ / "moved.safetensors").string();
  Expected<Writer> w = Writer::create(path, {{"a", DType::U8, {4}}});
  ASSERT_TRUE(w.ok());
  Writer moved = std::move(*w);
  ASSERT_TRUE(moved.write(random_bytes(4, 1)).ok());
  ASSERT_TRUE(moved.finish().ok());
  EXPECT_EQ(moved.path(), path);
  EXPECT_TRUE(File::open(path).ok());
}

TEST_F(SafetensorsTest, FileIsMovableAndKeepsItsMapping) {
  const std::string path = (dir_ / "move.safetensors").string();
  auto data = random_bytes(64, 9);
  write_tensors(path, {{"x", DType::F32, {16}}}, {data});
  Expected<File> f = File::open(path);
  ASSERT_TRUE(f.ok());
  File a = std::move(*f);
  File b = std::move(a);
  a = std::move(b);  // back again: the mapping follows
  auto bytes = a.bytes(*a.find("x"));
  EXPECT_TRUE(std::equal(bytes.begin(), bytes.end(), data.begin()));
  EXPECT_EQ(a.path(), path);
}

TEST_F(SafetensorsTest, ReleaseKeepsBytesReadable) {
  const std::string path = (dir_ / "release.safetensors").string();
  auto small = random_bytes(100, 1);
  auto big = random_bytes(3 << 20, 2);
  write_tensors(path, {{"small", DType::U8, {100}}, {"big", DType::U8, {3 << 20}}}, {small, big});
  Expected<File> f = File::open(path);
  ASSERT_TRUE(f.ok());
  for (const TensorEntry& t : f->tensors()) f->release(t);
  auto b = f->bytes(*f->find("big"));
  EXPECT_TRUE(std::equal(b.begin(), b.end(), big.begin()));  // faulted back in from the file
  auto s = f->bytes(*f->find("small"));
  EXPECT_TRUE(std::equal(s.begin(), s.end(), small.begin()));
}

// ---------------------------------------------------------------------------------------------
// Bad input: each error names the file (checked in open_error), the tensor and the offset.

TEST_F(SafetensorsTest, RejectsFileShorterThan8Bytes) {
  std::string e = open_error("abc");
  EXPECT_MENTIONS(e, "file is 3 bytes, shorter than the 8-byte header length");
}

TEST_F(SafetensorsTest, RejectsHeaderLengthPastEnd) {
  std::string e = open_error(raw_file("{}", "", 1000));
  EXPECT_MENTIONS(e, "header length 1000");
  EXPECT_MENTIONS(e, "the file is 10 bytes");
  EXPECT_MENTIONS(e, "would end at byte 1008");
}

TEST_F(SafetensorsTest, RejectsHugeHeaderLength) {
  std::string e = open_error(raw_file("{}", "", ~uint64_t{0}));
  EXPECT_MENTIONS(e, "header length 18446744073709551615");
  EXPECT_MENTIONS(e, "the file is 10 bytes");
}

TEST_F(SafetensorsTest, RejectsMalformedJsonWithFileOffset) {
  // The stray 'x' is header byte 6, file offset 14.
  std::string e = open_error(raw_file(R"({"a":1x})", ""));
  EXPECT_MENTIONS(e, "header is not valid JSON at file offset 14");
  EXPECT_MENTIONS(e, "syntax error");
}

TEST_F(SafetensorsTest, RejectsTruncatedHeaderJson) {
  std::string e = open_error(raw_file(R"({"a":{"dtype":)", ""));
  EXPECT_MENTIONS(e, "header is not valid JSON at file offset 22");
}

TEST_F(SafetensorsTest, RejectsHeaderThatIsNotAnObject) {
  std::string e = open_error(raw_file("[1, 2, 3]", ""));
  EXPECT_MENTIONS(e, "header is a JSON array, not an object");
}

TEST_F(SafetensorsTest, RejectsDuplicateKeys) {
  std::string e = open_error(raw_file(
      R"({"a":{"dtype":"U8","shape":[1],"data_offsets":[0,1]},"a":{"dtype":"U8","shape":[1],"data_offsets":[0,1]}})",
      "x"));
  EXPECT_MENTIONS(e, "duplicate key 'a'");
  e = open_error(raw_file(R"({"a":{"dtype":"U8","dtype":"F32","shape":[1],"data_offsets":[0,1]}})", "x"));
  EXPECT_MENTIONS(e, "duplicate key 'dtype' in the entry of 'a'");
}

TEST_F(SafetensorsTest, RejectsEntryMissingDtype) {
  std::string e = open_error(raw_file(R"({"w":{"shape":[1],"data_offsets":[0,1]}})", "x"));
  EXPECT_MENTIONS(e, "tensor 'w': missing \"dtype\"");
}

TEST_F(SafetensorsTest, RejectsEntryMissingShape) {
  std::string e = open_error(raw_file(R"({"w":{"dtype":"U8","data_offsets":[0,1]}})", "x"));
  EXPECT_MENTIONS(e, "tensor 'w': missing \"shape\"");
}

TEST_F(SafetensorsTest, RejectsEntryMissingDataOffsets) {
  std::string e = open_error(raw_file(R"({"w":{"dtype":"U8","shape":[1]}})", "x"));
  EXPECT_MENTIONS(e, "tensor 'w': missing \"data_offsets\"");
}

TEST_F(SafetensorsTest, RejectsMistypedEntries) {
  EXPECT_MENTIONS(open_error(raw_file(R"({"w":3})", "")), "tensor 'w': entry is a number, not an object");
  EXPECT_MENTIONS(open_error(raw_file(R"({"w":{"dtype":8,"shape":[1],"data_offsets":[0,1]}})", "x")),
                  "tensor 'w': \"dtype\" is a number, not a string");
  EXPECT_MENTIONS(open_error(raw_file(R"({"w":{"dtype":"U8","shape":1,"data_offsets":[0,1]}})", "x")),
                  "tensor 'w': \"shape\" is a number, not an array");
  EXPECT_MENTIONS(open_error(raw_file(R"({"w":{"dtype":"U8","shape":[1.0],"data_offsets":[0,1]}})", "x")),
                  "tensor 'w': \"shape\" holds a number (1.0), not an integer");
  EXPECT_MENTIONS(open_error(raw_file(R"({"w":{"dtype":"U8","shape":[1],"data_offsets":[0]}})", "x")),
                  "tensor 'w': \"data_offsets\" must be an array of two integers, got [0]");
  EXPECT_MENTIONS(open_error(raw_file(R"({"w":{"dtype":"U8","shape":[1],"data_offsets":[0,"1"]}})", "x")),
                  "tensor 'w': \"data_offsets\" must be an array of two integers");
  EXPECT_MENTIONS(open_error(raw_file(R"({"w":{"dtype":"U8","shape":[1],"data_offsets":[-1,1]}})", "x")),
                  "tensor 'w': \"data_offsets\" [-1,1] holds a negative offset");
}

TEST_F(SafetensorsTest, RejectsUnsupportedDtype) {
  std::string e = open_error(raw_file(R"({"w":{"dtype":"F64","shape":[1],"data_offsets":[0,8]}})", "12345678"));
  EXPECT_MENTIONS(e, "tensor 'w': unsupported dtype \"F64\"; supported: BF16, F16, F32, U8, F8_E4M3, I32, I64");
  e = open_error(raw_file(R"({"w":{"dtype":"F8_E4M3FN","shape":[1],"data_offsets":[0,1]}})", "x"));
  EXPECT_MENTIONS(e, "unsupported dtype \"F8_E4M3FN\"");
  EXPECT_MENTIONS(e, "spelled \"F8_E4M3\"");
}

TEST_F(SafetensorsTest, RejectsNegativeDimension) {
  std::string e = open_error(raw_file(R"({"w":{"dtype":"U8","shape":[2,-3],"data_offsets":[0,6]}})", "123456"));
  EXPECT_MENTIONS(e, "tensor 'w': shape [2,-3] has negative dimension -3");
}

TEST_F(SafetensorsTest, RejectsNumelOverflow) {
  std::string e = open_error(raw_file(
      R"({"w":{"dtype":"I64","shape":[4294967296,4294967296],"data_offsets":[0,0]}})", ""));
  EXPECT_MENTIONS(e, "tensor 'w': shape [4294967296, 4294967296] of I64 overflows");
  e = open_error(raw_file(R"({"w":{"dtype":"U8","shape":[18446744073709551615],"data_offsets":[0,0]}})", ""));
  EXPECT_MENTIONS(e, "tensor 'w': shape [18446744073709551615]: dimension 18446744073709551615 overflows int64");
}

TEST_F(SafetensorsTest, RejectsEndBeforeBegin) {
  std::string e = open_error(raw_file(R"({"w":{"dtype":"U8","shape":[1],"data_offsets":[2,1]}})", "xyz"));
  EXPECT_MENTIONS(e, "tensor 'w': data_offsets [2, 1]: end is before begin");
}

TEST_F(SafetensorsTest, RejectsOffsetsOutsideData) {
  // Header is 56 bytes: the data section starts at file offset 64 and holds 4 bytes.
  std::string header = R"({"w":{"dtype":"F32","shape":[2],"data_offsets":[0,8]}})";
  header.resize(56, ' ');
  std::string e = open_error(raw_file(header, "abcd"));
  EXPECT_MENTIONS(e, "tensor 'w': data_offsets [0, 8] run past the end of the data section, which is 4 bytes");
  EXPECT_MENTIONS(e, "file offsets 64 to 68");
  EXPECT_MENTIONS(e, "would end at file offset 72");
}

TEST_F(SafetensorsTest, RejectsTruncatedFile) {
  // A good file cut short in the middle of its second tensor.
  const std::string path = (dir_ / "full.safetensors").string();
  write_tensors(path, {{"a", DType::F32, {4}}, {"b", DType::BF16, {8}}}, {random_bytes(16, 1), random_bytes(16, 2)});
  std::string bytes = read_file(path);
  std::string e = open_error(std::string_view(bytes).substr(0, bytes.size() - 5));
  EXPECT_MENTIONS(e, "tensor 'b': data_offsets [16, 32] run past the end of the data section, which is 27 bytes");
  EXPECT_MENTIONS(e, "truncated");
}

TEST_F(SafetensorsTest, RejectsOverlappingTensors) {
  std::string e = open_error(raw_file(
      R"({"a":{"dtype":"U8","shape":[4],"data_offsets":[0,4]},"b":{"dtype":"U8","shape":[4],"data_offsets":[2,6]}})",
      "123456"));
  EXPECT_MENTIONS(e, "tensor 'b' data_offsets [2, 6] (file offset ");
  EXPECT_MENTIONS(e, "overlap tensor 'a' data_offsets [0, 4]");
}

TEST_F(SafetensorsTest, RejectsGapBetweenTensors) {
  std::string header =
      R"({"a":{"dtype":"U8","shape":[2],"data_offsets":[0,2]},"b":{"dtype":"U8","shape":[2],"data_offsets":[4,6]}})";
  header.resize(112, ' ');
  std::string e = open_error(raw_file(header, "123456"));
  EXPECT_MENTIONS(e, "gap in the data section: bytes [2, 4) (file offset 122) before tensor 'b' belong to no tensor");
}

TEST_F(SafetensorsTest, RejectsGapAtStart) {
  std::string e = open_error(raw_file(R"({"a":{"dtype":"U8","shape":[2],"data_offsets":[1,3]}})", "123"));
  EXPECT_MENTIONS(e, "gap in the data section: bytes [0, 1)");
  EXPECT_MENTIONS(e, "before tensor 'a'");
}

TEST_F(SafetensorsTest, RejectsTrailingBytes) {
  std::string header = R"({"a":{"dtype":"U8","shape":[2],"data_offsets":[0,2]}})";
  header.resize(56, ' ');
  std::string e = open_error(raw_file(header, "12345"));
  EXPECT_MENTIONS(e, "3 trailing bytes after the last tensor");
  EXPECT_MENTIONS(e, "tensors end at 2 (file offset 66)");
  EXPECT_MENTIONS(open_error(raw_file("{}", "x")), "1 trailing bytes");
}

TEST_F(SafetensorsTest, RejectsSpanDisagreeingWithShapeAndDtype) {
  std::string header = R"({"w":{"dtype":"BF16","shape":[2,3],"data_offsets":[0,6]}})";
  header.resize(64, ' ');
  std::string e = open_error(raw_file(header, "123456"));
  EXPECT_MENTIONS(e, "tensor 'w': data_offsets [0, 6] (file offset 72) span 6 bytes");
  EXPECT_MENTIONS(e, "shape [2, 3] of BF16 (2 bytes each) needs 12 bytes");
}

TEST_F(SafetensorsTest, RejectsBadMetadata) {
  EXPECT_MENTIONS(open_error(raw_file(R"({"__metadata__":{"a":1}})", "")),
                  "\"__metadata__\" must be an object of string to string; key 'a' holds a number");
  EXPECT_MENTIONS(open_error(raw_file(R"({"__metadata__":"x"})", "")),
                  "\"__metadata__\" must be an object of string to string, got a string");
}

TEST_F(SafetensorsTest, RejectsMissingFile) {
  const std::string path = (dir_ / "nope.safetensors").string();
  Expected<File> f = File::open(path);
  ASSERT_FALSE(f.ok());
  EXPECT_MENTIONS(f.error().message, path + ": cannot open");
}

// ---------------------------------------------------------------------------------------------
// Index and checkpoints

TEST_F(SafetensorsTest, IndexWritesLikeHuggingFaceAndReadsBack) {
  const std::string path = (dir_ / "model.safetensors.index.json").string();
  Index index;
  index.weight_map = {{"model.norm.weight", "model-00002-of-00002.safetensors"},
                      {"lm_head.weight", "model-00002-of-00002.safetensors"},
                      {"model.embed_tokens.weight", "model-00001-of-00002.safetensors"}};
  index.metadata = {{"total_size", "1"}};  // overridden by the argument
  ASSERT_TRUE(write_index(path, index, 123456).ok());
  EXPECT_EQ(read_file(path),
            "{\n"
            "  \"metadata\": {\n"
            "    \"total_size\": 123456\n"
            "  },\n"
            "  \"weight_map\": {\n"
            "    \"lm_head.weight\": \"model-00002-of-00002.safetensors\",\n"
            "    \"model.embed_tokens.weight\": \"model-00001-of-00002.safetensors\",\n"
            "    \"model.norm.weight\": \"model-00002-of-00002.safetensors\"\n"
            "  }\n"
            "}\n");
  Expected<Index> back = read_index(path);
  ASSERT_TRUE(back.ok()) << back.error().message;
  EXPECT_EQ(back->weight_map, index.weight_map);
  EXPECT_EQ(back->metadata.at("total_size"), "123456");
}

TEST_F(SafetensorsTest, IndexAcceptsStringTotalSizeAndMissingMetadata) {
  const std::string path = (dir_ / "i.json").string();
  write_file(path, R"({"metadata": {"total_size": "42", "format": "pt", "n": 3}, "weight_map": {"a": "s.safetensors"}})");
  Expected<Index> i = read_index(path);
  ASSERT_TRUE(i.ok()) << i.error().message;
  EXPECT_EQ(i->metadata.at("total_size"), "42");
  EXPECT_EQ(i->metadata.at("format"), "pt");
  EXPECT_EQ(i->metadata.at("n"), "3");
  write_file(path, R"({"weight_map": {}})");
  EXPECT_TRUE(read_index(path).ok());
}

TEST_F(SafetensorsTest, IndexErrorsNameTheFile) {
  const std::string path = (dir_ / "i.json").string();
  write_file(path, R"({"weight_map": {"a": 1}})");
  Expected<Index> i = read_index(path);
  ASSERT_FALSE(i.ok());
  EXPECT_MENTIONS(i.error().message, path + ": \"weight_map\" maps tensor 'a' to a number");
  write_file(path, R"({"metadata": {}})");
  EXPECT_MENTIONS(read_index(path).error().message, path + ": missing \"weight_map\"");
  write_file(path, R"({"weight_map": {})");
  EXPECT_MENTIONS(read_index(path).error().message, path + ": not valid JSON at byte 17");
  write_file(path, R"({"metadata": {"total_size": -4}, "weight_map": {}})");
  EXPECT_MENTIONS(read_index(path).error().message, path + ": \"metadata\".\"total_size\" must be");
}

class CheckpointTest : public SafetensorsTest {
 protected:
  // Writes shards "s1" {a, b} and "s2" {c, d} plus an index mapping them there (unless told otherwise).
  void make(std::optional<Index> index = {}) {
    write_tensors((dir_ / "model-00001-of-00002.safetensors").string(),
                  {{"b", DType::F32, {2, 2}}, {"a", DType::BF16, {3}}}, {random_bytes(16, 1), random_bytes(6, 2)});
    write_tensors((dir_ / "model-00002-of-00002.safetensors").string(),
                  {{"c", DType::U8, {5}}, {"d", DType::I64, {}}}, {random_bytes(5, 3), random_bytes(8, 4)});
    if (!index) {
      index.emplace();
      index->weight_map = {{"a", "model-00001-of-00002.safetensors"},
                           {"b", "model-00001-of-00002.safetensors"},
                           {"c", "model-00002-of-00002.safetensors"},
                           {"d", "model-00002-of-00002.safetensors"}};
    }
    ASSERT_TRUE(write_index(index_path(), *index, 35).ok());
  }
  std::string index_path() const { return (dir_ / "model.safetensors.index.json").string(); }
  std::string open_error() {
    Expected<Checkpoint> c = Checkpoint::open(dir_.string());
    if (c.ok()) {
      ADD_FAILURE() << "opened " << dir_;
      return "";
    }
    return c.error().message;
  }
};

TEST_F(CheckpointTest, OpensSingleFile) {
  write_tensors((dir_ / "model.safetensors").string(), {{"x", DType::F16, {3}}, {"y", DType::U8, {2}}},
                {random_bytes(6, 1), random_bytes(2, 2)});
  Expected<Checkpoint> c = Checkpoint::open(dir_.string());
  ASSERT_TRUE(c.ok()) << c.error().message;
  EXPECT_FALSE(c->sharded());
  ASSERT_EQ(c->files().size(), 1u);
  ASSERT_EQ(c->tensors().size(), 2u);
  EXPECT_EQ(c->tensors()[0].entry->name, "x");
  ASSERT_NE(c->find("y"), nullptr);
  EXPECT_EQ(c->find("y")->file, &c->files()[0]);
  EXPECT_EQ(c->find("z"), nullptr);
}

TEST_F(CheckpointTest, OpensShardsInOrderAndRefsSurviveMoves) {
  make();
  Expected<Checkpoint> c = Checkpoint::open(dir_.string());
  ASSERT_TRUE(c.ok()) << c.error().message;
  EXPECT_TRUE(c->sharded());
  ASSERT_EQ(c->files().size(), 2u);
  EXPECT_EQ(fs::path(c->files()[0].path()).filename(), "model-00001-of-00002.safetensors");
  Checkpoint moved = std::move(*c);
  Checkpoint again;
  again = std::move(moved);
  std::vector<std::string> names;
  for (const Checkpoint::Ref& r : again.tensors()) {
    names.push_back(r.entry->name);
    EXPECT_EQ(r.file->find(r.entry->name), r.entry);
    EXPECT_EQ(r.file->bytes(*r.entry).size(), r.entry->nbytes());
  }
  EXPECT_EQ(names, (std::vector<std::string>{"b", "a", "c", "d"}));  // (file, offset)
  ASSERT_NE(again.find("c"), nullptr);
  EXPECT_EQ(again.find("c")->file, &again.files()[1]);
}

TEST_F(CheckpointTest, RejectsIndexNamingMissingShard) {
  Index index;
  index.weight_map = {{"a", "model-00001-of-00002.safetensors"}, {"b", "model-00001-of-00002.safetensors"},
                      {"c", "model-00002-of-00002.safetensors"}, {"d", "model-00002-of-00002.safetensors"},
                      {"e", "model-00003-of-00002.safetensors"}};
  make(index);
  std::string e = open_error();
  EXPECT_MENTIONS(e, index_path() + ": shard 'model-00003-of-00002.safetensors' (holding tensor 'e'");
  EXPECT_MENTIONS(e, "does not exist: " + (dir_ / "model-00003-of-00002.safetensors").string());
}

TEST_F(CheckpointTest, RejectsIndexNamingTensorNotInItsShard) {
  Index index;
  index.weight_map = {{"a", "model-00001-of-00002.safetensors"}, {"b", "model-00001-of-00002.safetensors"},
                      {"c", "model-00001-of-00002.safetensors"}, {"d", "model-00002-of-00002.safetensors"}};
  make(index);
  std::string e = open_error();
  EXPECT_MENTIONS(e, index_path() + ": tensor 'c' is mapped to shard 'model-00001-of-00002.safetensors', but " +
                         (dir_ / "model-00001-of-00002.safetensors").string() + " has no tensor of that name");
}

TEST_F(CheckpointTest, RejectsShardTensorTheIndexDoesNotName) {
  Index index;
  index.weight_map = {{"a", "model-00001-of-00002.safetensors"}, {"b", "model-00001-of-00002.safetensors"},
                      {"c", "model-00002-of-00002.safetensors"}};
  make(index);
  std::string e = open_error();
  EXPECT_MENTIONS(e, (dir_ / "model-00002-of-00002.safetensors").string() + ": holds tensor 'd' (file offset ");
  EXPECT_MENTIONS(e, index_path() + " does not name");
}

TEST_F(CheckpointTest, RejectsTensorInTwoShards) {
  make();
  write_tensors((dir_ / "model-00002-of-00002.safetensors").string(),
                {{"c", DType::U8, {5}}, {"d", DType::I64, {}}, {"a", DType::BF16, {3}}},
                {random_bytes(5, 3), random_bytes(8, 4), random_bytes(6, 5)});
  std::string e = open_error();
  EXPECT_MENTIONS(e, index_path() + ": tensor 'a' appears in two shards, 'model-00001-of-00002.safetensors' "
                     "(where the index maps it) and 'model-00002-of-00002.safetensors'");
}

TEST_F(CheckpointTest, RejectsShardNameOutsideDir) {
  Index index;
  index.weight_map = {{"a", "../model.safetensors"}};
  make(index);
  EXPECT_MENTIONS(open_error(), index_path() + ": tensor 'a' is mapped to '../model.safetensors'");
}

TEST_F(CheckpointTest, BadShardErrorNamesTheShard) {
  make();
  write_file(dir_ / "model-00002-of-00002.safetensors", "abc");
  EXPECT_MENTIONS(open_error(), (dir_ / "model-00002-of-00002.safetensors").string() + ": file is 3 bytes");
}

TEST_F(CheckpointTest, RejectsDirWithoutModel) {
  EXPECT_MENTIONS(open_error(), dir_.string() + ": no model.safetensors.index.json or model.safetensors");
  Expected<Checkpoint> c = Checkpoint::open((dir_ / "absent").string());
  ASSERT_FALSE(c.ok());
  EXPECT_MENTIONS(c.error().message, (dir_ / "absent").string() + ": not a directory");
}

// ---------------------------------------------------------------------------------------------
// A real checkpoint

TEST(SafetensorsRealFile, Stories260KOpens) {
  const fs::path dir = fs::path(FP4C_SHARED_DIR) / "models" / "stories260K";
  const fs::path path = dir / "model.safetensors";
  if (!fs::exists(path)) GTEST_SKIP() << path << " is absent";
  Expected<File> f = File::open(path.string());
  ASSERT_TRUE(f.ok()) << f.error().message;
  EXPECT_FALSE(f->tensors().empty());
  uint64_t end = 0;
  for (const TensorEntry& t : f->tensors()) {
    EXPECT_EQ(t.begin, end) << t.name;
    end = t.end;
    EXPECT_EQ(static_cast<uint64_t>(t.numel()) * dtype_size(t.dtype), t.nbytes()) << t.name;
  }
  EXPECT_EQ(f->data_offset() + end, f->file_size());
  Expected<Checkpoint> c = Checkpoint::open(dir.string());
  ASSERT_TRUE(c.ok()) << c.error().message;
  EXPECT_EQ(c->tensors().size(), f->tensors().size());
}

}  // namespace
}  // namespace fp4c::safetensors
