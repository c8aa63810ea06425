// GGUF: dequantization bit for bit against gguf-py's numpy dequantizers (testdata/gguf/dequant.gguf,
// written by test/formats/gguf_vectors.py), metadata of every value type, and one test per bad input.
#include "formats/gguf.h"

#include <gtest/gtest.h>
#include <unistd.h>

#include <omp.h>

#include <algorithm>
#include <bit>
#include <cmath>
#include <random>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <string>

namespace fp4c::gguf {
namespace {

namespace fs = std::filesystem;
// The message holds `sub` (printed in full when not).
#define EXPECT_HAS(message, sub)                                          \
  do {                                                                    \
    const std::string m_ = (message);                                     \
    EXPECT_NE(m_.find(sub), std::string::npos) << m_ << "\n  lacks: " << (sub); \
  } while (0)

const std::string kVectors = std::string(FP4C_SOURCE_DIR) + "/testdata/gguf/dequant.gguf";

// --- the reference vectors ---------------------------------------------------------------------------

TEST(GgufVectors, EveryBlockFormatDequantizesBitForBitAsGgufPy) {
  auto f = File::open(kVectors);
  ASSERT_TRUE(f.ok()) << f.error().message;
  const TensorType types[] = {TensorType::Q4_0, TensorType::Q4_1, TensorType::Q5_0, TensorType::Q5_1,
                              TensorType::Q8_0, TensorType::Q4_K, TensorType::Q5_K, TensorType::Q6_K,
                              TensorType::F16,  TensorType::BF16};
  for (TensorType type : types) {
    const std::string name(type_traits(type)->name);
    SCOPED_TRACE(name);
    const TensorInfo* q = f->find(name);
    const TensorInfo* e = f->find(name + ".expected");
    ASSERT_NE(q, nullptr);
    ASSERT_NE(e, nullptr);
    EXPECT_EQ(q->type, type);
    EXPECT_EQ(e->type, TensorType::F32);
    EXPECT_EQ(q->shape(), e->shape());
    EXPECT_GE(q->numel, 512);
    auto got = f->to_f32(*q);
    auto want = f->to_f32(*e);
    ASSERT_TRUE(got.ok()) << got.error().message;
    ASSERT_TRUE(want.ok()) << want.error().message;
    ASSERT_EQ(got->size(), want->size());
    int64_t differ = 0, nonzero = 0;
    for (size_t i = 0; i < got->size(); ++i) {
      differ += std::bit_cast<uint32_t>((*got)[i]) != std::bit_cast<uint32_t>((*want)[i]);
      nonzero += (*want)[i] != 0.0f;
    }
    EXPECT_EQ(differ, 0);
    EXPECT_GT(nonzero, int64_t(got->size() / 2));  // the vectors are not trivially zero
  }
}

TEST(GgufVectors, HeaderAndShapes) {
  auto f = File::open(kVectors);
  ASSERT_TRUE(f.ok()) << f.error().message;
  EXPECT_EQ(f->version(), 3u);
  EXPECT_EQ(f->alignment(), 32u);
  EXPECT_EQ(f->data_offset() % 32, 0u);
  const TensorInfo* t = f->find("F32.3d");
  ASSERT_NE(t, nullptr);
  EXPECT_EQ(t->ne, (std::vector<int64_t>{4, 3, 2}));
  EXPECT_EQ(t->shape(), (std::vector<int64_t>{2, 3, 4}));
  auto v = f->to_f32(*t);
  ASSERT_TRUE(v.ok());
  for (size_t i = 0; i < v->size(); ++i) EXPECT_EQ((*v)[i], float(i));
  const TensorInfo* q = f->find("Q4_K");
  ASSERT_NE(q, nullptr);
  EXPECT_EQ(q->shape(), (std::vector<int64_t>{3, 512}));
  EXPECT_EQ(q->nbytes, 3u * 2 * 144);
  EXPECT_EQ(f->bytes(*q).size(), q->nbytes);
}

TEST(GgufVectors, MetadataOfEveryValueType) {
  auto f = File::open(kVectors);
  ASSERT_TRUE(f.ok()) << f.error().message;
  auto integer = [&](const char* k) { return f->get_integer(k)->value(); };
  EXPECT_EQ(integer("test.u8"), 200);
  EXPECT_EQ(integer("test.i8"), -100);
  EXPECT_EQ(integer("test.u16"), 60000);
  EXPECT_EQ(integer("test.i16"), -30000);
  EXPECT_EQ(integer("test.u32"), 4000000000);
  EXPECT_EQ(integer("test.i32"), -2000000000);
  EXPECT_EQ(integer("test.i64"), -9000000000000000000);
  EXPECT_EQ(f->find_key("test.u64")->u, 18000000000000000000ull);
  auto too_big = f->get_integer("test.u64");
  ASSERT_FALSE(too_big.ok());
  EXPECT_HAS(too_big.error().message, "'test.u64'");
  EXPECT_EQ(f->get_number("test.f32")->value(), double(0.1f));
  EXPECT_EQ(f->get_number("test.f64")->value(), 0.1);
  EXPECT_EQ(f->get_bool("test.bool")->value(), true);
  EXPECT_EQ(f->get_string("test.string")->value(), "héllo ▁world");
  EXPECT_EQ(f->get_string("general.architecture")->value(), "llama");
  EXPECT_FALSE(f->get_string("test.absent")->has_value());
  auto wrong = f->get_string("test.u8");
  ASSERT_FALSE(wrong.ok());
  EXPECT_HAS(wrong.error().message, "'test.u8' at byte ");
  EXPECT_HAS(wrong.error().message, "is a u8, not a string");

  const Value* a = f->find_key("test.array_u8");
  ASSERT_NE(a, nullptr);
  EXPECT_EQ(a->type, ValueType::Array);
  EXPECT_EQ(a->elem_type, ValueType::U8);
  ASSERT_EQ(a->count, 3u);
  EXPECT_EQ(a->integer_at(2), 255);
  const Value* i32 = f->find_key("test.array_i32");
  EXPECT_EQ(i32->integer_at(0), -1);
  EXPECT_EQ(i32->integer_at(2), 7);
  EXPECT_FALSE(i32->integer_at(3).has_value());
  const Value* f32 = f->find_key("test.array_f32");
  EXPECT_EQ(f32->number_at(1), -2.25);
  EXPECT_FALSE(f32->integer_at(0).has_value());
  EXPECT_EQ(f->find_key("test.array_bool")->integer_at(0), 1);
  const Value* s = f->find_key("test.array_string");
  EXPECT_EQ(s->strings, (std::vector<std::string>{"a", "", "ü"}));
  const Value* n = f->find_key("test.array_nested");
  ASSERT_EQ(n->elem_type, ValueType::Array);
  ASSERT_EQ(n->arrays.size(), 2u);
  EXPECT_EQ(n->arrays[0].strings, (std::vector<std::string>{"x", "y"}));
  EXPECT_EQ(n->arrays[1].strings, (std::vector<std::string>{"z"}));
}

TEST(GgufDequantize, RefusesTypesAndSizesItDoesNotRead) {
  std::vector<std::byte> src(84);
  std::vector<float> dst(256);
  Status s = dequantize(TensorType::Q2_K, src, dst);
  ASSERT_FALSE(s.ok());
  EXPECT_HAS(s.error().message, "Q2_K is not read by fp4c");
  std::vector<std::byte> short_src(17);
  std::vector<float> dst32(32);
  s = dequantize(TensorType::Q4_0, short_src, dst32);
  ASSERT_FALSE(s.ok());
  EXPECT_HAS(s.error().message, "17 bytes for 32 elements");
}

// The vectorized paths (Q4_1, Q8_0 on AVX-512 machines) against the per-block loops, bit for bit, on random
// blocks: random f16 scales (every pattern, NaN, Inf and subnormals included) and random quants, runs long
// enough to go parallel and short ones, at 1 and 2 threads.
TEST(GgufDequantize, VectorizedPathsEqualThePerBlockLoops) {
  const uint32_t seed = std::random_device{}();
  SCOPED_TRACE(testing::Message() << "seed " << seed);
  std::mt19937_64 rng(seed);
  const int threads_before = omp_get_max_threads();
  for (TensorType type : {TensorType::Q4_1, TensorType::Q8_0, TensorType::Q4_0, TensorType::Q6_K}) {
    const auto tr = type_traits(type);
    ASSERT_TRUE(tr);
    for (size_t blocks : {size_t(1), size_t(3), size_t(5000)}) {
      std::vector<std::byte> src(blocks * tr->type_size);
      for (auto& b : src) b = std::byte(rng());
      std::vector<float> want(blocks * tr->block_size), got(want.size());
      ASSERT_TRUE(dequantize_reference(type, src, want).ok());
      for (int threads : {1, 2}) {
        omp_set_num_threads(threads);
        std::fill(got.begin(), got.end(), -7.0f);
        ASSERT_TRUE(dequantize(type, src, got).ok());
        for (size_t i = 0; i < got.size(); ++i) {
          if (std::isnan(want[i]) && std::isnan(got[i])) continue;  // a NaN scale: the payload may differ
          ASSERT_EQ(std::bit_cast<uint32_t>(got[i]), std::bit_cast<uint32_t>(want[i]))
              << tr->name << " element " << i << " of " << blocks << " blocks, " << threads << " thread(s)";
        }
      }
    }
  }
  omp_set_num_threads(threads_before);
}

// --- hostile inputs ----------------------------------------------------------------------------------

// Builds GGUF bytes field by field, so that each test can lie in exactly one place.
struct Builder {
  std::string b;
  Builder& u32(uint32_t v) { return raw(&v, 4); }
  Builder& u64(uint64_t v) { return raw(&v, 8); }
  Builder& u8(uint8_t v) { return raw(&v, 1); }
  Builder& str(std::string_view s) { u64(s.size()); b += s; return *this; }
  Builder& raw(const void* p, size_t n) { b.append(static_cast<const char*>(p), n); return *this; }
  Builder& header(uint64_t tensors, uint64_t kvs, uint32_t version = 3) {
    b += "GGUF";
    return u32(version).u64(tensors).u64(kvs);
  }
  Builder& kv_u32(std::string_view key, uint32_t v) { return str(key).u32(4).u32(v); }
  Builder& kv_string(std::string_view key, std::string_view v) { return str(key).u32(8).str(v); }
  Builder& tensor(std::string_view name, std::vector<uint64_t> ne, uint32_t type, uint64_t offset) {
    str(name).u32(uint32_t(ne.size()));
    for (uint64_t d : ne) u64(d);
    return u32(type).u64(offset);
  }
  Builder& pad(size_t align = 32) {
    while (b.size() % align) b += '\0';
    return *this;
  }
  Builder& data(size_t n, char c = '\x01') { b.append(n, c); return *this; }
};

// A valid file: two F32 tensors of 4 and 8 elements (16 and 32 bytes), one key.
std::string valid_file() {
  Builder g;
  g.header(2, 1).kv_string("general.architecture", "llama");
  g.tensor("a", {4}, 0, 0).tensor("b", {4, 2}, 0, 32);
  g.pad().data(16).pad().data(32);
  return g.b;
}

class GgufHostile : public ::testing::Test {
 protected:
  void SetUp() override {
    const auto* info = ::testing::UnitTest::GetInstance()->current_test_info();
    dir_ = fs::path(FP4C_BINARY_DIR) / "test-tmp" / "gguf" / (std::string(info->name()) + "-" + std::to_string(::getpid()));
    fs::remove_all(dir_);
    fs::create_directories(dir_);
  }
  void TearDown() override {
    if (!HasFailure()) fs::remove_all(dir_);
  }
  std::string write(std::string_view contents, const std::string& name = "bad.gguf") {
    const std::string p = (dir_ / name).string();
    std::ofstream(p, std::ios::binary).write(contents.data(), std::streamsize(contents.size()));
    return p;
  }
  // The error File::open gives (fails the test if it opens); it must name the file.
  std::string open_error(std::string_view contents) {
    const std::string p = write(contents);
    auto f = File::open(p);
    if (f.ok()) {
      ADD_FAILURE() << "opened";
      return "";
    }
    EXPECT_HAS(f.error().message, p + ": ");
    return f.error().message;
  }
  fs::path dir_;
};

TEST_F(GgufHostile, ValidFileOpens) {
  auto f = File::open(write(valid_file()));
  ASSERT_TRUE(f.ok()) << f.error().message;
  ASSERT_EQ(f->tensors().size(), 2u);
  EXPECT_EQ(f->tensors()[1].shape(), (std::vector<int64_t>{2, 4}));
  EXPECT_EQ(f->bytes(f->tensors()[1]).size(), 32u);
}

TEST_F(GgufHostile, EveryTruncationIsAnError) {
  const std::string good = valid_file();
  for (size_t n = 0; n < good.size(); ++n) {
    SCOPED_TRACE(n);
    auto f = File::open(write(good.substr(0, n)));
    EXPECT_FALSE(f.ok());
  }
  EXPECT_HAS(open_error(good.substr(0, good.size() - 1)), "tensor 'b' (info at byte ");
  EXPECT_HAS(open_error(good.substr(0, good.size() - 1)), "runs past the end of the file");
  EXPECT_HAS(open_error(good.substr(0, 30)), "metadata count 1 at byte 16 cannot fit in the 6 bytes left");
  EXPECT_HAS(open_error(good.substr(0, good.size() - 40)), "(truncated file?)");
  EXPECT_HAS(open_error(good.substr(0, 10)), "shorter than the 24-byte header");
}

TEST_F(GgufHostile, BadMagicAndVersions) {
  std::string bad = valid_file();
  bad[0] = 'X';
  EXPECT_HAS(open_error(bad), "not a GGUF file: bytes 0-3 are \"XGUF\"");
  Builder v1;
  v1.header(0, 0, 1).pad();
  EXPECT_HAS(open_error(v1.b), "GGUF version 1 at byte 4; fp4c reads versions 2 and 3");
  Builder v4;
  v4.header(0, 0, 4).pad();
  EXPECT_HAS(open_error(v4.b), "GGUF version 4");
  Builder be;
  be.header(0, 0, 0x03000000).pad();
  EXPECT_HAS(open_error(be.b), "big-endian");
  Builder v2;
  v2.header(0, 0, 2).pad();
  EXPECT_TRUE(File::open(write(v2.b)).ok());
}

TEST_F(GgufHostile, LyingCountsAreRefusedBeforeAllocating) {
  Builder kv;
  kv.header(0, uint64_t(1) << 60).pad();
  EXPECT_HAS(open_error(kv.b), "metadata count 1152921504606846976 at byte 16 cannot fit");
  Builder t;
  t.header(uint64_t(-1), 0).pad();
  EXPECT_HAS(open_error(t.b), "tensor count 18446744073709551615 at byte 8 cannot fit");
  Builder s;
  s.header(0, 1).str("k").u32(8).u64(uint64_t(1) << 62).pad();
  EXPECT_HAS(open_error(s.b), "metadata key 'k': string length 4611686018427387904 at byte 37 runs past");
  Builder a;
  a.header(0, 1).str("arr").u32(9).u32(4).u64(uint64_t(1) << 40).pad();
  EXPECT_HAS(open_error(a.b), "metadata key 'arr': array of 1099511627776 u32 at byte 43");
  Builder sa;  // each string element needs at least its 8-byte length
  sa.header(0, 1).str("arr").u32(9).u32(8).u64(100).data(16);
  EXPECT_HAS(open_error(sa.b), "array of 100 string");
  Builder key;
  key.header(0, 1).u64(70000).data(70010, 'k');
  EXPECT_HAS(open_error(key.b), "metadata entry 0 key: string length 70000 at byte 24 exceeds the limit");
}

TEST_F(GgufHostile, NestedArraysAreBounded) {
  Builder g;
  g.header(0, 1).str("deep").u32(9);
  for (int i = 0; i < 20; ++i) g.u32(9).u64(1);
  g.u32(0).u64(1).u8(0).pad();
  EXPECT_HAS(open_error(g.b), "metadata key 'deep' element 0 element 0");
  EXPECT_HAS(open_error(g.b), "arrays nested deeper than 8");
  Builder ok;  // depth 3 is fine
  ok.header(0, 1).str("n").u32(9).u32(9).u64(1).u32(9).u64(1).u32(0).u64(2).u8(7).u8(9).pad();
  auto f = File::open(write(ok.b));
  ASSERT_TRUE(f.ok()) << f.error().message;
  EXPECT_EQ(f->find_key("n")->arrays[0].arrays[0].integer_at(1), 9);
}

TEST_F(GgufHostile, DuplicateKeysAndTensorNames) {
  Builder k;
  k.header(0, 2).kv_u32("x", 1).kv_u32("x", 2).pad();
  EXPECT_HAS(open_error(k.b), "metadata key 'x' at byte 41 appears twice");
  Builder t;
  t.header(2, 0).tensor("w", {4}, 0, 0).tensor("w", {4}, 0, 32).pad().data(64);
  EXPECT_HAS(open_error(t.b), "tensor 'w' (info at byte 57): a second tensor of this name");
}

TEST_F(GgufHostile, UnknownTypes) {
  Builder v;
  v.header(0, 1).str("k").u32(13).u32(0).pad();
  EXPECT_HAS(open_error(v.b), "metadata key 'k': unknown value type 13 at byte 33");
  Builder t;
  t.header(1, 0).tensor("w", {32}, 5, 0).pad().data(32);
  EXPECT_HAS(open_error(t.b), "tensor 'w' (info at byte 24): unknown tensor type 5 at byte 45");
  // A known type fp4c does not dequantize opens, and reading it is a clear error.
  Builder q;
  q.header(1, 0).tensor("w", {256}, 10, 0).pad().data(84).pad();
  auto f = File::open(write(q.b));
  ASSERT_TRUE(f.ok()) << f.error().message;
  auto v2 = f->to_f32(f->tensors()[0]);
  ASSERT_FALSE(v2.ok());
  EXPECT_HAS(v2.error().message, "tensor 'w' (data at byte 64): type Q2_K is not read by fp4c");
  Builder b;
  b.header(0, 1).str("flag").u32(7).u8(2).pad();
  EXPECT_HAS(open_error(b.b), "metadata key 'flag': bool at byte 40 is 2, not 0 or 1");
}

TEST_F(GgufHostile, BadDimensions) {
  Builder zero;
  zero.header(1, 0).tensor("w", {}, 0, 0).pad();
  EXPECT_HAS(open_error(zero.b), "n_dims 0 at byte 33 is not between 1 and 4");
  Builder five;
  five.header(1, 0).tensor("w", {1, 1, 1, 1, 1}, 0, 0).pad().data(32);
  EXPECT_HAS(open_error(five.b), "n_dims 5");
  Builder z;
  z.header(1, 0).tensor("w", {4, 0}, 0, 0).pad();
  EXPECT_HAS(open_error(z.b), "ne[1] at byte 45 is 0, not a positive dimension");
  Builder neg;
  neg.header(1, 0).tensor("w", {uint64_t(-4)}, 0, 0).pad();
  EXPECT_HAS(open_error(neg.b), "ne[0] at byte 37 is -4");
  Builder big;
  big.header(1, 0).tensor("w", {uint64_t(1) << 40, uint64_t(1) << 40}, 0, 0).pad();
  EXPECT_HAS(open_error(big.b), "tensor 'w' (info at byte 24): dimensions 1099511627776 x 1099511627776 overflow int64");
  Builder bytes;  // numel fits int64, its bytes do not fit 64 bits
  bytes.header(1, 0).tensor("w", {uint64_t(1) << 62}, 0, 0).pad();
  EXPECT_HAS(open_error(bytes.b), "overflow 64 bits of bytes");
  Builder block;
  block.header(1, 0).tensor("w", {48}, 8, 0).pad().data(64);
  EXPECT_HAS(open_error(block.b), "ne[0] = 48 is not a multiple of Q8_0's block size 32");
  Builder name;
  name.header(1, 0).tensor(std::string(64, 'n'), {4}, 0, 0).pad().data(32);
  EXPECT_HAS(open_error(name.b), "name is 64 bytes, longer than ggml's limit of 63");
}

TEST_F(GgufHostile, DataOffsets) {
  Builder mis;
  mis.header(1, 0).tensor("w", {4}, 0, 8).pad().data(64);
  EXPECT_HAS(open_error(mis.b), "tensor 'w' (info at byte 24): data offset 8 is not a multiple of the alignment 32");
  Builder gap;
  gap.header(2, 0).tensor("a", {4}, 0, 0).tensor("b", {4}, 0, 64).pad().data(96);
  EXPECT_HAS(open_error(gap.b), "tensor 'b' (info at byte 57): data offset 64 (file byte 160), but the tensors "
                                           "before it end at data offset 32");
  Builder overlap;
  overlap.header(2, 0).tensor("a", {16}, 0, 0).tensor("b", {4}, 0, 32).pad().data(96);
  EXPECT_HAS(open_error(overlap.b), "tensor 'b'");
  EXPECT_HAS(open_error(overlap.b), "end at data offset 64");
  Builder past;
  past.header(1, 0).tensor("w", {64}, 0, 0).pad().data(100);
  EXPECT_HAS(open_error(past.b), "F32 data of 256 bytes at file byte 64 runs past the end of the file at byte 164");
  Builder far;
  far.header(1, 0).tensor("w", {4}, 0, uint64_t(-32)).pad().data(32);
  EXPECT_HAS(open_error(far.b), "data offset 18446744073709551584 (file byte past the end)");
}

TEST_F(GgufHostile, Alignment) {
  Builder ok;  // 64-byte alignment: the data section and each tensor on 64
  ok.header(2, 1).kv_u32("general.alignment", 64).tensor("a", {4}, 0, 0).tensor("b", {4}, 0, 64).pad(64).data(16).pad(64).data(16);
  auto f = File::open(write(ok.b));
  ASSERT_TRUE(f.ok()) << f.error().message;
  EXPECT_EQ(f->alignment(), 64u);
  EXPECT_EQ(f->data_offset(), 128u);
  Builder npot;
  npot.header(0, 1).kv_u32("general.alignment", 48).pad();
  EXPECT_HAS(open_error(npot.b), "metadata key 'general.alignment' at byte 53 is 48, not a power of two");
  Builder wrong;
  wrong.header(0, 1).str("general.alignment").u32(10).u64(32).pad();
  EXPECT_HAS(open_error(wrong.b), "'general.alignment' at byte 53 is a u64, not a u32");
}

TEST_F(GgufHostile, RandomCorruptionNeverCrashes) {
  // Flip bytes of a real file (the reference vectors' header part): every outcome is a value.
  std::ifstream in(kVectors, std::ios::binary);
  std::string good((std::istreambuf_iterator<char>(in)), {});
  ASSERT_GT(good.size(), 4096u);
  uint64_t state = 12345;
  int errors = 0;
  for (int trial = 0; trial < 300; ++trial) {
    std::string bad = good;
    for (int k = 0; k < 3; ++k) {
      state = state * 6364136223846793005ull + 1442695040888963407ull;
      bad[(state >> 33) % 1800] = char(state >> 13);
    }
    auto f = File::open(write(bad));
    if (!f.ok()) {
      ++errors;
      continue;
    }
    for (const TensorInfo& t : f->tensors()) {
      auto v = f->to_f32(t);
      if (v.ok()) {
        EXPECT_EQ(int64_t(v->size()), t.numel);
      }
    }
  }
  EXPECT_GT(errors, 100);
}

}  // namespace
}  // namespace fp4c::gguf
