// GGUF containers (llama.cpp / ggml), versions 2 and 3, little-endian: memory-mapped strict reading and
// the ggml block formats' reference dequantization to float32.
// Layout: "GGUF", u32 version, u64 tensor count, u64 metadata count, the metadata (key, u32 type, value),
// the tensor infos (name, u32 n_dims, u64 ne[n_dims], u32 type, u64 offset), padding to
// `general.alignment` (32 by default), then the data section the offsets are relative to.
#pragma once

#include <cstddef>
#include <cstdint>
#include <map>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "base/expected.h"

namespace fp4c::gguf {

// Metadata value types (gguf_type).
enum class ValueType : uint32_t {
  U8 = 0, I8 = 1, U16 = 2, I16 = 3, U32 = 4, I32 = 5, F32 = 6, Bool = 7, String = 8, Array = 9,
  U64 = 10, I64 = 11, F64 = 12,
};
std::string_view value_type_name(ValueType t);

// Tensor element types (ggml_type) that fp4c knows the layout of. Reading as they are: F32, F16, BF16;
// dequantized to F32: Q4_0, Q4_1, Q5_0, Q5_1, Q8_0, Q4_K, Q5_K, Q6_K. The others are known so that a
// file holding them opens (and its layout is checked), and refused when such a tensor is read.
enum class TensorType : uint32_t {
  F32 = 0, F16 = 1, Q4_0 = 2, Q4_1 = 3, Q5_0 = 6, Q5_1 = 7, Q8_0 = 8, Q8_1 = 9, Q2_K = 10, Q3_K = 11,
  Q4_K = 12, Q5_K = 13, Q6_K = 14, Q8_K = 15, IQ2_XXS = 16, IQ2_XS = 17, IQ3_XXS = 18, IQ1_S = 19,
  IQ4_NL = 20, IQ3_S = 21, IQ2_S = 22, IQ4_XS = 23, I8 = 24, I16 = 25, I32 = 26, I64 = 27, F64 = 28,
  IQ1_M = 29, BF16 = 30, TQ1_0 = 34, TQ2_0 = 35, MXFP4 = 39,
};

struct TypeTraits {
  std::string_view name;  // as ggml spells it ("Q4_K", "BF16")
  uint32_t block_size;    // elements per block (1 for plain types)
  uint32_t type_size;     // bytes per block
  bool dequantizable;     // fp4c reads it (as it is, or dequantized to F32)
};
// nullopt for a type id fp4c does not know.
std::optional<TypeTraits> type_traits(TensorType t);
// Whether fp4c dequantizes it (a block format), as opposed to reading it as it is (F32, F16, BF16).
bool is_block_quantized(TensorType t);

// A metadata value. Scalars hold one of u/i/f (bool in u); strings `str`; arrays their element type,
// count and elements: numbers and bools as their little-endian bytes in the mapping (`raw`), strings in
// `strings`, nested arrays in `arrays`.
struct Value {
  ValueType type = ValueType::U8;
  uint64_t offset = 0;  // file offset of the value (after its type)
  uint64_t u = 0;
  int64_t i = 0;
  double f = 0;
  std::string str;
  ValueType elem_type = ValueType::U8;
  uint64_t count = 0;
  std::span<const std::byte> raw;
  std::vector<std::string> strings;
  std::vector<Value> arrays;

  bool is_integer() const;   // any integer type (not bool)
  bool is_number() const;    // integer or float
  // The value as int64 / double, if it is a number that fits (an integer for integer()).
  std::optional<int64_t> integer() const;
  std::optional<double> number() const;
  // Element i of a numeric or bool array, as int64 / double (nullopt for other element types or when an
  // unsigned 64-bit element does not fit int64).
  std::optional<int64_t> integer_at(uint64_t i) const;
  std::optional<double> number_at(uint64_t i) const;
};

struct TensorInfo {
  std::string name;
  TensorType type = TensorType::F32;
  std::vector<int64_t> ne;   // ggml order: ne[0] is the contiguous (innermost) dimension
  uint64_t offset = 0;       // relative to the data section
  uint64_t nbytes = 0;
  int64_t numel = 0;
  uint64_t info_offset = 0;  // file offset of this tensor's info record (for messages)
  // Row-major shape as safetensors and Hugging Face write it: ne reversed.
  std::vector<int64_t> shape() const;
};

// Limits beyond what the file size bounds: nesting depth of arrays, dimensions (ggml's GGML_MAX_DIMS),
// tensor name length (ggml's GGML_MAX_NAME, terminator included).
inline constexpr int kMaxArrayDepth = 8;
inline constexpr uint32_t kMaxDims = 4;
inline constexpr uint64_t kMaxNameLength = 63;

// A read-only, memory-mapped GGUF file, validated strictly on open: magic and version (2 or 3; a
// big-endian file is refused), every count bounded by the bytes left before anything is allocated,
// every string and array inside the file, known value and tensor types, no duplicate keys or tensor
// names, general.alignment a power of two (u32), dimensions positive with no overflow and the first a
// multiple of the block size, tensor data at aligned offsets laid out as ggml lays them (each at the
// padded end of the one before, in info order) and inside the file. Errors name the file, the key or
// tensor and the byte offset.
class File {
 public:
  static Expected<File> open(const std::string& path);
  File(File&&) noexcept;
  File& operator=(File&&) noexcept;
  ~File();

  const std::string& path() const { return path_; }
  uint32_t version() const { return version_; }
  uint64_t file_size() const { return file_size_; }
  uint64_t data_offset() const { return data_offset_; }
  uint32_t alignment() const { return alignment_; }
  // Tensors in the order of their infos (also the order of their data).
  const std::vector<TensorInfo>& tensors() const { return tensors_; }
  const TensorInfo* find(std::string_view name) const;
  // Metadata keys in file order, and lookup.
  const std::vector<std::pair<std::string, Value>>& metadata() const { return metadata_; }
  const Value* find_key(std::string_view key) const;
  // Typed lookups: nullopt when absent; an error (naming key, type and offset) when of another type.
  Expected<std::optional<std::string>> get_string(std::string_view key) const;
  Expected<std::optional<int64_t>> get_integer(std::string_view key) const;
  Expected<std::optional<double>> get_number(std::string_view key) const;
  Expected<std::optional<bool>> get_bool(std::string_view key) const;

  // The bytes of a tensor (a view into the mapping).
  std::span<const std::byte> bytes(const TensorInfo& t) const;
  std::span<const std::byte> raw() const;
  // The tensor as float32: F32 copied, F16/BF16 converted, block formats dequantized as ggml does.
  // An error naming the file, tensor and offset for a type fp4c does not read.
  Expected<std::vector<float>> to_f32(const TensorInfo& t) const;
  // Hands the tensor's whole pages back to the kernel (streaming).
  void release(const TensorInfo& t) const;

 private:
  File() = default;
  std::string path_;
  uint32_t version_ = 0;
  uint64_t file_size_ = 0;
  uint64_t data_offset_ = 0;
  uint32_t alignment_ = 32;
  const std::byte* map_ = nullptr;
  std::vector<TensorInfo> tensors_;
  std::map<std::string, size_t, std::less<>> by_name_;
  std::vector<std::pair<std::string, Value>> metadata_;
  std::map<std::string, size_t, std::less<>> by_key_;
};

// Dequantizes n elements of a block format (n a multiple of its block size; src holds n / block_size
// blocks) to float32, as ggml-quants.c's dequantize_row_<type> does, bit for bit. F32, F16 and BF16 are
// converted. An error for a type it does not read or sizes that do not match.
Status dequantize(TensorType type, std::span<const std::byte> src, std::span<float> dst);
// The same, one block at a time through the plain per-block loops only (the reference the vectorized
// Q4_1 and Q8_0 paths of `dequantize` are tested against).
Status dequantize_reference(TensorType type, std::span<const std::byte> src, std::span<float> dst);

}  // namespace fp4c::gguf
