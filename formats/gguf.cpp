// GGUF reading: map the file, validate header, metadata and tensor infos strictly, hand out views.
#include <fcntl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <bit>
#include <cerrno>
#include <cstring>
#include <limits>
#include <utility>

#include "formats/gguf.h"
#include "formats/mmap_advice.h"

namespace fp4c::gguf {
namespace {

constexpr uint32_t kMagic = 0x46554747;  // "GGUF" read as a little-endian u32
constexpr uint64_t kMaxKeyLength = 65535;
// Smallest encodings, to bound counts by the bytes left: a key-value pair (key length, one key byte,
// type, a one-byte value) and a tensor info (name length, n_dims, one dimension, type, offset).
constexpr uint64_t kMinKeyValueBytes = 8 + 1 + 4 + 1;
constexpr uint64_t kMinTensorInfoBytes = 8 + 4 + 8 + 4 + 8;

std::optional<uint64_t> scalar_size(ValueType t) {
  switch (t) {
    case ValueType::U8: case ValueType::I8: case ValueType::Bool: return 1;
    case ValueType::U16: case ValueType::I16: return 2;
    case ValueType::U32: case ValueType::I32: case ValueType::F32: return 4;
    case ValueType::U64: case ValueType::I64: case ValueType::F64: return 8;
    default: return std::nullopt;
  }
}

bool known_value_type(uint32_t t) { return t <= uint32_t(ValueType::F64); }

uint64_t load_le(const std::byte* p, size_t n) {
  uint64_t v = 0;
  for (size_t i = 0; i < n; ++i) v |= uint64_t(uint8_t(p[i])) << (8 * i);
  return v;
}

// Reads the mapped file front to back; every read is checked against the end.
class Reader {
 public:
  Reader(const std::string& path, const std::byte* data, uint64_t size) : path_(path), data_(data), size_(size) {}
  uint64_t pos() const { return pos_; }
  uint64_t left() const { return size_ - pos_; }

  // `what` says what was being read, for the message ("metadata key 'x'").
  Expected<uint64_t> uint(size_t n, const std::string& what) {
    if (left() < n)
      return make_error(path_ + ": " + what + ": needs " + std::to_string(n) + " bytes at byte " +
                        std::to_string(pos_) + ", but the file ends at byte " + std::to_string(size_) +
                        " (truncated file?)");
    const uint64_t v = load_le(data_ + pos_, n);
    pos_ += n;
    return v;
  }
  Expected<std::string> string(const std::string& what, uint64_t max_length) {
    const uint64_t at = pos_;
    FP4C_ASSIGN(uint64_t len, uint(8, what + " (string length)"));
    if (len > left())
      return make_error(path_ + ": " + what + ": string length " + std::to_string(len) + " at byte " +
                        std::to_string(at) + " runs past the end of the file (" + std::to_string(left()) +
                        " bytes left)");
    if (len > max_length)
      return make_error(path_ + ": " + what + ": string length " + std::to_string(len) + " at byte " +
                        std::to_string(at) + " exceeds the limit of " + std::to_string(max_length));
    std::string s(reinterpret_cast<const char*>(data_ + pos_), size_t(len));
    pos_ += len;
    return s;
  }
  std::span<const std::byte> take(uint64_t n) {  // caller checked n <= left()
    std::span<const std::byte> s(data_ + pos_, size_t(n));
    pos_ += n;
    return s;
  }

 private:
  const std::string& path_;
  const std::byte* data_;
  uint64_t size_;
  uint64_t pos_ = 0;
};

Expected<Value> read_value(Reader& r, const std::string& path, const std::string& what, ValueType type, int depth);

Expected<ValueType> read_type(Reader& r, const std::string& path, const std::string& what) {
  const uint64_t at = r.pos();
  FP4C_ASSIGN(uint64_t t, r.uint(4, what + " (type)"));
  if (!known_value_type(uint32_t(t)))
    return make_error(path + ": " + what + ": unknown value type " + std::to_string(t) + " at byte " +
                      std::to_string(at) + " (GGUF value types are 0 to 12)");
  return ValueType(t);
}

Expected<Value> read_array(Reader& r, const std::string& path, const std::string& what, int depth) {
  Value v;
  v.type = ValueType::Array;
  v.offset = r.pos();
  if (depth >= kMaxArrayDepth)
    return make_error(path + ": " + what + ": arrays nested deeper than " + std::to_string(kMaxArrayDepth) +
                      " at byte " + std::to_string(v.offset));
  FP4C_ASSIGN(v.elem_type, read_type(r, path, what + " (array element type)"));
  const uint64_t count_at = r.pos();
  FP4C_ASSIGN(v.count, r.uint(8, what + " (array count)"));
  // Each element takes at least this many bytes: the count is checked before anything is allocated.
  const uint64_t min_elem = v.elem_type == ValueType::String  ? 8
                            : v.elem_type == ValueType::Array ? 4 + 8
                                                              : *scalar_size(v.elem_type);
  if (v.count > r.left() / min_elem)
    return make_error(path + ": " + what + ": array of " + std::to_string(v.count) + " " +
                      std::string(value_type_name(v.elem_type)) + " at byte " + std::to_string(count_at) +
                      " needs at least " + std::to_string(min_elem) + " bytes each, but only " +
                      std::to_string(r.left()) + " bytes are left in the file");
  if (auto size = scalar_size(v.elem_type)) {
    v.raw = r.take(v.count * *size);
    if (v.elem_type == ValueType::Bool)
      for (uint64_t i = 0; i < v.count; ++i)
        if (uint8_t(v.raw[i]) > 1)
          return make_error(path + ": " + what + ": bool element " + std::to_string(i) + " at byte " +
                            std::to_string(count_at + 8 + i) + " is " + std::to_string(uint8_t(v.raw[i])) +
                            ", not 0 or 1");
    return v;
  }
  if (v.elem_type == ValueType::String) {
    v.strings.reserve(size_t(v.count));
    for (uint64_t i = 0; i < v.count; ++i) {
      FP4C_ASSIGN(std::string s, r.string(what + " element " + std::to_string(i), std::numeric_limits<uint64_t>::max()));
      v.strings.push_back(std::move(s));
    }
    return v;
  }
  v.arrays.reserve(size_t(v.count));
  for (uint64_t i = 0; i < v.count; ++i) {
    FP4C_ASSIGN(Value e, read_array(r, path, what + " element " + std::to_string(i), depth + 1));
    v.arrays.push_back(std::move(e));
  }
  return v;
}

Expected<Value> read_value(Reader& r, const std::string& path, const std::string& what, ValueType type, int depth) {
  if (type == ValueType::Array) return read_array(r, path, what, depth);
  Value v;
  v.type = type;
  v.offset = r.pos();
  if (type == ValueType::String) {
    FP4C_ASSIGN(v.str, r.string(what, std::numeric_limits<uint64_t>::max()));
    return v;
  }
  const uint64_t n = *scalar_size(type);
  FP4C_ASSIGN(uint64_t bits, r.uint(n, what));
  switch (type) {
    case ValueType::U8: case ValueType::U16: case ValueType::U32: case ValueType::U64: v.u = bits; break;
    case ValueType::I8: v.i = int8_t(bits); break;
    case ValueType::I16: v.i = int16_t(bits); break;
    case ValueType::I32: v.i = int32_t(bits); break;
    case ValueType::I64: v.i = int64_t(bits); break;
    case ValueType::F32: v.f = std::bit_cast<float>(uint32_t(bits)); break;
    case ValueType::F64: v.f = std::bit_cast<double>(bits); break;
    case ValueType::Bool:
      if (bits > 1)
        return make_error(path + ": " + what + ": bool at byte " + std::to_string(v.offset) + " is " +
                          std::to_string(bits) + ", not 0 or 1");
      v.u = bits;
      break;
    default: break;
  }
  return v;
}

std::optional<int64_t> integer_of(ValueType t, uint64_t u, int64_t i) {
  switch (t) {
    case ValueType::U8: case ValueType::U16: case ValueType::U32: case ValueType::U64:
      if (u > uint64_t(std::numeric_limits<int64_t>::max())) return std::nullopt;
      return int64_t(u);
    case ValueType::I8: case ValueType::I16: case ValueType::I32: case ValueType::I64: return i;
    default: return std::nullopt;
  }
}

// Element i of a numeric array decoded into a scalar Value's fields.
Value element(const Value& a, uint64_t i) {
  Value e;
  e.type = a.elem_type;
  const std::optional<uint64_t> n = scalar_size(a.elem_type);
  if (!n || i >= a.count) {
    e.type = ValueType::String;  // not a number: the accessors say nullopt
    return e;
  }
  const uint64_t bits = load_le(a.raw.data() + i * *n, size_t(*n));
  switch (a.elem_type) {
    case ValueType::U8: case ValueType::U16: case ValueType::U32: case ValueType::U64: case ValueType::Bool:
      e.u = bits;
      break;
    case ValueType::I8: e.i = int8_t(bits); break;
    case ValueType::I16: e.i = int16_t(bits); break;
    case ValueType::I32: e.i = int32_t(bits); break;
    case ValueType::I64: e.i = int64_t(bits); break;
    case ValueType::F32: e.f = std::bit_cast<float>(uint32_t(bits)); break;
    case ValueType::F64: e.f = std::bit_cast<double>(bits); break;
    default: break;
  }
  return e;
}

std::string tensor_where(const std::string& path, const std::string& name, uint64_t at) {
  return path + ": tensor '" + name + "' (info at byte " + std::to_string(at) + ")";
}

struct Parsed {
  uint32_t version = 0;
  uint32_t alignment = 32;
  uint64_t data_offset = 0;
  std::vector<std::pair<std::string, Value>> metadata;
  std::map<std::string, size_t, std::less<>> by_key;
  std::vector<TensorInfo> tensors;
  std::map<std::string, size_t, std::less<>> by_name;
};

Expected<Parsed> parse(const std::string& path, const std::byte* map, uint64_t size) {
  Reader r(path, map, size);
  Parsed p;
  FP4C_ASSIGN(uint64_t magic, r.uint(4, "magic"));
  if (magic != kMagic) {
    std::string got;
    for (int i = 0; i < 4; ++i) {
      const uint8_t c = uint8_t(map[i]);
      got += c >= 0x20 && c < 0x7f ? std::string(1, char(c)) : "\\x" + std::string(1, "0123456789abcdef"[c >> 4]) +
                                                                 std::string(1, "0123456789abcdef"[c & 15]);
    }
    return make_error(path + ": not a GGUF file: bytes 0-3 are \"" + got + "\", not \"GGUF\"");
  }
  FP4C_ASSIGN(uint64_t version, r.uint(4, "version"));
  if (version == 0x02000000 || version == 0x03000000)
    return make_error(path + ": a big-endian GGUF file (version " + std::to_string(__builtin_bswap32(uint32_t(version))) +
                      " at byte 4, byte-swapped); fp4c reads little-endian GGUF files only");
  if (version != 2 && version != 3)
    return make_error(path + ": GGUF version " + std::to_string(version) + " at byte 4; fp4c reads versions 2 and 3" +
                      (version == 1 ? " (version 1 used 32-bit counts and is obsolete)" : ""));
  p.version = uint32_t(version);
  FP4C_ASSIGN(uint64_t n_tensors, r.uint(8, "tensor count"));
  FP4C_ASSIGN(uint64_t n_kv, r.uint(8, "metadata count"));
  if (n_kv > r.left() / kMinKeyValueBytes)
    return make_error(path + ": metadata count " + std::to_string(n_kv) + " at byte 16 cannot fit in the " +
                      std::to_string(r.left()) + " bytes left in the file (at least " +
                      std::to_string(kMinKeyValueBytes) + " bytes each)");
  if (n_tensors > r.left() / kMinTensorInfoBytes)
    return make_error(path + ": tensor count " + std::to_string(n_tensors) + " at byte 8 cannot fit in the " +
                      std::to_string(r.left()) + " bytes left in the file (at least " +
                      std::to_string(kMinTensorInfoBytes) + " bytes each)");

  p.metadata.reserve(size_t(n_kv));
  for (uint64_t k = 0; k < n_kv; ++k) {
    const uint64_t at = r.pos();
    FP4C_ASSIGN(std::string key, r.string("metadata entry " + std::to_string(k) + " key", kMaxKeyLength));
    const std::string what = "metadata key '" + key + "'";
    if (key.empty()) return make_error(path + ": metadata entry " + std::to_string(k) + " at byte " +
                                       std::to_string(at) + " has an empty key");
    if (p.by_key.count(key))
      return make_error(path + ": " + what + " at byte " + std::to_string(at) + " appears twice");
    FP4C_ASSIGN(ValueType type, read_type(r, path, what));
    FP4C_ASSIGN(Value v, read_value(r, path, what, type, 0));
    p.by_key.emplace(key, p.metadata.size());
    p.metadata.emplace_back(std::move(key), std::move(v));
  }
  if (auto it = p.by_key.find("general.alignment"); it != p.by_key.end()) {
    const Value& v = p.metadata[it->second].second;
    if (v.type != ValueType::U32)
      return make_error(path + ": metadata key 'general.alignment' at byte " + std::to_string(v.offset) + " is a " +
                        std::string(value_type_name(v.type)) + ", not a u32");
    if (v.u == 0 || (v.u & (v.u - 1)) != 0)
      return make_error(path + ": metadata key 'general.alignment' at byte " + std::to_string(v.offset) + " is " +
                        std::to_string(v.u) + ", not a power of two");
    p.alignment = uint32_t(v.u);
  }

  p.tensors.reserve(size_t(n_tensors));
  for (uint64_t k = 0; k < n_tensors; ++k) {
    TensorInfo t;
    t.info_offset = r.pos();
    FP4C_ASSIGN(t.name, r.string("tensor info " + std::to_string(k) + " name",
                                 std::numeric_limits<uint64_t>::max()));
    const std::string what = "tensor '" + t.name + "' (info at byte " + std::to_string(t.info_offset) + ")";
    const std::string where = path + ": " + what;
    if (t.name.size() > kMaxNameLength)
      return make_error(where + ": name is " + std::to_string(t.name.size()) + " bytes, longer than ggml's limit of " +
                        std::to_string(kMaxNameLength));
    if (p.by_name.count(t.name)) return make_error(where + ": a second tensor of this name");
    const uint64_t dims_at = r.pos();
    FP4C_ASSIGN(uint64_t n_dims, r.uint(4, what + " n_dims"));
    if (n_dims < 1 || n_dims > kMaxDims)
      return make_error(where + ": n_dims " + std::to_string(n_dims) + " at byte " + std::to_string(dims_at) +
                        " is not between 1 and " + std::to_string(kMaxDims));
    for (uint64_t d = 0; d < n_dims; ++d) {
      const uint64_t ne_at = r.pos();
      FP4C_ASSIGN(uint64_t ne, r.uint(8, what + " ne[" + std::to_string(d) + "]"));
      if (ne == 0 || ne > uint64_t(std::numeric_limits<int64_t>::max()))
        return make_error(where + ": ne[" + std::to_string(d) + "] at byte " + std::to_string(ne_at) + " is " +
                          (ne == 0 ? std::string("0") : std::to_string(int64_t(ne))) + ", not a positive dimension");
      t.ne.push_back(int64_t(ne));
    }
    const uint64_t type_at = r.pos();
    FP4C_ASSIGN(uint64_t type, r.uint(4, what + " type"));
    const std::optional<TypeTraits> tr = type_traits(TensorType(type));
    if (!tr)
      return make_error(where + ": unknown tensor type " + std::to_string(type) + " at byte " + std::to_string(type_at));
    t.type = TensorType(type);
    const uint64_t offset_at = r.pos();
    FP4C_ASSIGN(t.offset, r.uint(8, what + " offset"));
    int64_t numel = 1;
    for (int64_t d : t.ne)
      if (__builtin_mul_overflow(numel, d, &numel))
        return make_error(where + ": dimensions " + [&] {
          std::string s;
          for (int64_t e : t.ne) s += (s.empty() ? "" : " x ") + std::to_string(e);
          return s;
        }() + " overflow int64");
    t.numel = numel;
    if (t.ne[0] % tr->block_size != 0)
      return make_error(where + ": ne[0] = " + std::to_string(t.ne[0]) + " is not a multiple of " +
                        std::string(tr->name) + "'s block size " + std::to_string(tr->block_size));
    uint64_t nbytes;
    if (__builtin_mul_overflow(uint64_t(numel) / tr->block_size, uint64_t(tr->type_size), &nbytes))
      return make_error(where + ": its " + std::to_string(numel) + " elements of " + std::string(tr->name) +
                        " overflow 64 bits of bytes");
    t.nbytes = nbytes;
    (void)offset_at;
    p.by_name.emplace(t.name, p.tensors.size());
    p.tensors.push_back(std::move(t));
  }

  // The data section starts at the next multiple of the alignment.
  const uint64_t infos_end = r.pos();
  const uint64_t pad = (p.alignment - infos_end % p.alignment) % p.alignment;
  p.data_offset = infos_end + pad;
  if (p.data_offset > size)
    return make_error(path + ": the tensor infos end at byte " + std::to_string(infos_end) +
                      "; the data section would start at byte " + std::to_string(p.data_offset) +
                      " (aligned to " + std::to_string(p.alignment) + "), past the end of the file at byte " +
                      std::to_string(size) + (p.tensors.empty() ? "" : " (truncated file?)"));
  const uint64_t data_size = size - p.data_offset;
  // ggml lays the tensors out in info order, each at the aligned end of the one before.
  uint64_t expected = 0;
  for (const TensorInfo& t : p.tensors) {
    const std::string where = tensor_where(path, t.name, t.info_offset);
    if (t.offset % p.alignment != 0)
      return make_error(where + ": data offset " + std::to_string(t.offset) + " is not a multiple of the alignment " +
                        std::to_string(p.alignment));
    if (t.offset != expected)
      return make_error(where + ": data offset " + std::to_string(t.offset) + " (file byte " +
                        (t.offset > size ? std::string("past the end") : std::to_string(p.data_offset + t.offset)) +
                        "), but the tensors before it end at data offset " + std::to_string(expected) +
                        " (aligned): tensors must follow one another in the order of their infos");
    if (t.offset > data_size || t.nbytes > data_size - t.offset)
      return make_error(where + ": " + std::string(type_traits(t.type)->name) + " data of " + std::to_string(t.nbytes) +
                        " bytes at file byte " + std::to_string(p.data_offset + t.offset) + " runs past the end of the file at byte " +
                        std::to_string(size) + " (truncated file?)");
    const uint64_t padded = t.nbytes + (p.alignment - t.nbytes % p.alignment) % p.alignment;
    expected = t.offset + padded;  // no overflow: t.offset + t.nbytes <= size
  }
  return p;
}

}  // namespace

std::string_view value_type_name(ValueType t) {
  switch (t) {
    case ValueType::U8: return "u8";
    case ValueType::I8: return "i8";
    case ValueType::U16: return "u16";
    case ValueType::I16: return "i16";
    case ValueType::U32: return "u32";
    case ValueType::I32: return "i32";
    case ValueType::F32: return "f32";
    case ValueType::Bool: return "bool";
    case ValueType::String: return "string";
    case ValueType::Array: return "array";
    case ValueType::U64: return "u64";
    case ValueType::I64: return "i64";
    case ValueType::F64: return "f64";
  }
  return "?";
}

std::optional<TypeTraits> type_traits(TensorType t) {
  switch (t) {
    case TensorType::F32: return TypeTraits{"F32", 1, 4, true};
    case TensorType::F16: return TypeTraits{"F16", 1, 2, true};
    case TensorType::BF16: return TypeTraits{"BF16", 1, 2, true};
    case TensorType::Q4_0: return TypeTraits{"Q4_0", 32, 18, true};
    case TensorType::Q4_1: return TypeTraits{"Q4_1", 32, 20, true};
    case TensorType::Q5_0: return TypeTraits{"Q5_0", 32, 22, true};
    case TensorType::Q5_1: return TypeTraits{"Q5_1", 32, 24, true};
    case TensorType::Q8_0: return TypeTraits{"Q8_0", 32, 34, true};
    case TensorType::Q8_1: return TypeTraits{"Q8_1", 32, 40, false};
    case TensorType::Q2_K: return TypeTraits{"Q2_K", 256, 84, false};
    case TensorType::Q3_K: return TypeTraits{"Q3_K", 256, 110, false};
    case TensorType::Q4_K: return TypeTraits{"Q4_K", 256, 144, true};
    case TensorType::Q5_K: return TypeTraits{"Q5_K", 256, 176, true};
    case TensorType::Q6_K: return TypeTraits{"Q6_K", 256, 210, true};
    case TensorType::Q8_K: return TypeTraits{"Q8_K", 256, 292, false};
    case TensorType::IQ2_XXS: return TypeTraits{"IQ2_XXS", 256, 66, false};
    case TensorType::IQ2_XS: return TypeTraits{"IQ2_XS", 256, 74, false};
    case TensorType::IQ3_XXS: return TypeTraits{"IQ3_XXS", 256, 98, false};
    case TensorType::IQ1_S: return TypeTraits{"IQ1_S", 256, 50, false};
    case TensorType::IQ4_NL: return TypeTraits{"IQ4_NL", 32, 18, false};
    case TensorType::IQ3_S: return TypeTraits{"IQ3_S", 256, 110, false};
    case TensorType::IQ2_S: return TypeTraits{"IQ2_S", 256, 82, false};
    case TensorType::IQ4_XS: return TypeTraits{"IQ4_XS", 256, 136, false};
    case TensorType::I8: return TypeTraits{"I8", 1, 1, false};
    case TensorType::I16: return TypeTraits{"I16", 1, 2, false};
    case TensorType::I32: return TypeTraits{"I32", 1, 4, false};
    case TensorType::I64: return TypeTraits{"I64", 1, 8, false};
    case TensorType::F64: return TypeTraits{"F64", 1, 8, false};
    case TensorType::IQ1_M: return TypeTraits{"IQ1_M", 256, 56, false};
    case TensorType::TQ1_0: return TypeTraits{"TQ1_0", 256, 54, false};
    case TensorType::TQ2_0: return TypeTraits{"TQ2_0", 256, 66, false};
    case TensorType::MXFP4: return TypeTraits{"MXFP4", 32, 17, false};
  }
  return std::nullopt;
}

bool Value::is_integer() const { return integer_of(type, u, i).has_value() || type == ValueType::U64; }

bool Value::is_number() const { return is_integer() || type == ValueType::F32 || type == ValueType::F64; }

std::optional<int64_t> Value::integer() const { return integer_of(type, u, i); }

std::optional<double> Value::number() const {
  if (type == ValueType::F32 || type == ValueType::F64) return f;
  if (type == ValueType::U64) return double(u);
  if (auto v = integer()) return double(*v);
  return std::nullopt;
}

std::optional<int64_t> Value::integer_at(uint64_t k) const {
  if (type != ValueType::Array) return std::nullopt;
  const Value e = element(*this, k);
  if (e.type == ValueType::Bool) return int64_t(e.u);
  return e.integer();
}

std::optional<double> Value::number_at(uint64_t k) const {
  if (type != ValueType::Array) return std::nullopt;
  const Value e = element(*this, k);
  if (e.type == ValueType::Bool) return double(e.u);
  return e.number();
}

std::vector<int64_t> TensorInfo::shape() const { return {ne.rbegin(), ne.rend()}; }

Expected<File> File::open(const std::string& path) {
  int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) {
    const int err = errno;
    return make_error(path + ": cannot open: " + std::strerror(err));
  }
  struct stat st {};
  if (::fstat(fd, &st) != 0) {
    const int err = errno;
    ::close(fd);
    return make_error(path + ": cannot stat: " + std::strerror(err));
  }
  if (!S_ISREG(st.st_mode)) {
    ::close(fd);
    return make_error(path + ": not a regular file");
  }
  const uint64_t size = uint64_t(st.st_size);
  if (size < 24) {
    ::close(fd);
    return make_error(path + ": file is " + std::to_string(size) +
                      " bytes, shorter than the 24-byte header that starts a GGUF file (magic, version, counts)");
  }
  void* m = ::mmap(nullptr, size, PROT_READ, MAP_PRIVATE, fd, 0);
  const int err = errno;
  ::close(fd);  // the mapping keeps the file
  if (m == MAP_FAILED) return make_error(path + ": cannot mmap " + std::to_string(size) + " bytes: " + std::strerror(err));

  File f;  // owns the mapping from here on
  f.path_ = path;
  f.map_ = static_cast<const std::byte*>(m);
  f.file_size_ = size;
  FP4C_ASSIGN(Parsed p, parse(path, f.map_, size));
  f.version_ = p.version;
  f.alignment_ = p.alignment;
  f.data_offset_ = p.data_offset;
  f.metadata_ = std::move(p.metadata);
  f.by_key_ = std::move(p.by_key);
  f.tensors_ = std::move(p.tensors);
  f.by_name_ = std::move(p.by_name);
  return f;
}

File::File(File&& o) noexcept
    : path_(std::move(o.path_)),
      version_(o.version_),
      file_size_(std::exchange(o.file_size_, 0)),
      data_offset_(o.data_offset_),
      alignment_(o.alignment_),
      map_(std::exchange(o.map_, nullptr)),
      tensors_(std::move(o.tensors_)),
      by_name_(std::move(o.by_name_)),
      metadata_(std::move(o.metadata_)),
      by_key_(std::move(o.by_key_)) {}

File& File::operator=(File&& o) noexcept {
  if (this != &o) {
    if (map_) ::munmap(const_cast<std::byte*>(map_), file_size_);
    path_ = std::move(o.path_);
    version_ = o.version_;
    file_size_ = std::exchange(o.file_size_, 0);
    data_offset_ = o.data_offset_;
    alignment_ = o.alignment_;
    map_ = std::exchange(o.map_, nullptr);
    tensors_ = std::move(o.tensors_);
    by_name_ = std::move(o.by_name_);
    metadata_ = std::move(o.metadata_);
    by_key_ = std::move(o.by_key_);
  }
  return *this;
}

File::~File() {
  if (map_) ::munmap(const_cast<std::byte*>(map_), file_size_);
}

const TensorInfo* File::find(std::string_view name) const {
  auto it = by_name_.find(name);
  return it == by_name_.end() ? nullptr : &tensors_[it->second];
}

const Value* File::find_key(std::string_view key) const {
  auto it = by_key_.find(key);
  return it == by_key_.end() ? nullptr : &metadata_[it->second].second;
}

namespace {
Error wrong_type(const std::string& path, std::string_view key, const Value& v, const char* wanted) {
  return make_error(path + ": metadata key '" + std::string(key) + "' at byte " + std::to_string(v.offset) + " is a " +
                    std::string(value_type_name(v.type)) + ", not " + wanted);
}
}  // namespace

Expected<std::optional<std::string>> File::get_string(std::string_view key) const {
  const Value* v = find_key(key);
  if (!v) return std::optional<std::string>();
  if (v->type != ValueType::String) return wrong_type(path_, key, *v, "a string");
  return std::optional<std::string>(v->str);
}

Expected<std::optional<int64_t>> File::get_integer(std::string_view key) const {
  const Value* v = find_key(key);
  if (!v) return std::optional<int64_t>();
  if (auto i = v->integer()) return std::optional<int64_t>(*i);
  if (v->type == ValueType::U64)
    return make_error(path_ + ": metadata key '" + std::string(key) + "' at byte " + std::to_string(v->offset) +
                      " is " + std::to_string(v->u) + ", out of range");
  return wrong_type(path_, key, *v, "an integer");
}

Expected<std::optional<double>> File::get_number(std::string_view key) const {
  const Value* v = find_key(key);
  if (!v) return std::optional<double>();
  if (auto d = v->number()) return std::optional<double>(*d);
  return wrong_type(path_, key, *v, "a number");
}

Expected<std::optional<bool>> File::get_bool(std::string_view key) const {
  const Value* v = find_key(key);
  if (!v) return std::optional<bool>();
  if (v->type != ValueType::Bool) return wrong_type(path_, key, *v, "a bool");
  return std::optional<bool>(v->u != 0);
}

std::span<const std::byte> File::bytes(const TensorInfo& t) const {
  return {map_ + data_offset_ + t.offset, size_t(t.nbytes)};
}

std::span<const std::byte> File::raw() const { return {map_, size_t(file_size_)}; }

Expected<std::vector<float>> File::to_f32(const TensorInfo& t) const {
  const std::string where =
      path_ + ": tensor '" + t.name + "' (data at byte " + std::to_string(data_offset_ + t.offset) + "): ";
  const std::optional<TypeTraits> tr = type_traits(t.type);
  if (!tr || !tr->dequantizable)  // before allocating
    return make_error(where + "type " + std::string(tr ? tr->name : "?") +
                      " is not read by fp4c (it reads F32, F16, BF16, Q4_0, Q4_1, Q5_0, Q5_1, Q8_0, Q4_K, Q5_K, Q6_K)");
  std::vector<float> out(size_t(t.numel));
  if (Status s = dequantize(t.type, bytes(t), out); !s.ok()) return make_error(where + s.error().message);
  return out;
}

void File::release(const TensorInfo& t) const { advise_dontneed(bytes(t)); }

}  // namespace fp4c::gguf
