// safetensors reading: map the file, validate the header strictly, hand out views of tensor bytes.
#include <fcntl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <bit>
#include <cerrno>
#include <cstring>
#include <limits>
#include <mutex>
#include <string>
#include <tuple>
#include <utility>

#include <nlohmann/json.hpp>

#include "formats/json_input.h"
#include "formats/mmap_advice.h"
#include "formats/safetensors.h"

namespace fp4c::safetensors {
namespace {

using nlohmann::json;

// The official library refuses headers above this size; so do we, before parsing garbage.
constexpr uint64_t kMaxHeaderSize = 100'000'000;

std::string shape_string(std::span<const int64_t> shape) {
  std::string s = "[";
  for (size_t i = 0; i < shape.size(); ++i) s += (i ? ", " : "") + std::to_string(shape[i]);
  return s + "]";
}

std::string offsets_string(uint64_t begin, uint64_t end) {
  return "[" + std::to_string(begin) + ", " + std::to_string(end) + "]";
}

std::string supported_dtypes() {
  std::string s;
  for (DType t : {DType::BF16, DType::F16, DType::F32, DType::U8, DType::F8_E4M3, DType::I32, DType::I64})
    s += (s.empty() ? "" : ", ") + std::string(dtype_name(t));
  return s;
}

uint64_t load_le64(const std::byte* p) {
  uint64_t v;
  std::memcpy(&v, p, 8);
  if constexpr (std::endian::native == std::endian::big) v = __builtin_bswap64(v);
  return v;
}

struct Parsed {
  std::vector<TensorEntry> tensors;
  std::map<std::string, std::string> metadata;
};

// Parses the JSON header, rejecting duplicate keys at any depth (nlohmann would keep the last).
Expected<json> parse_json(const std::string& path, const char* begin, const char* end) {
  json j;
  json_input::Options options;
  options.base_offset = 8;   // the header starts after its 8-byte length
  options.unique_keys = true;
  if (auto f = json_input::parse_into(std::string_view(begin, size_t(end - begin)), j, options)) {
    if (!f->offset) return make_error(path + ": header has " + f->reason);
    return make_error(path + ": header is not valid JSON at file offset " + std::to_string(*f->offset) + ": " +
                      f->reason);
  }
  return j;
}

Status parse_metadata(const std::string& path, const json& value, std::map<std::string, std::string>& out) {
  if (!value.is_object())
    return make_error(path + ": \"__metadata__\" must be an object of string to string, got a " +
                      value.type_name());
  for (const auto& [k, v] : value.items()) {
    if (!v.is_string())
      return make_error(path + ": \"__metadata__\" must be an object of string to string; key '" + k +
                        "' holds a " + v.type_name());
    out.emplace(k, v.get<std::string>());
  }
  return {};
}

Expected<TensorEntry> parse_entry(const std::string& path, uint64_t data_offset, uint64_t data_size,
                                  const std::string& name, const json& value) {
  const std::string where = path + ": tensor '" + name + "': ";
  if (!value.is_object()) return make_error(where + "entry is a " + value.type_name() + ", not an object");
  TensorEntry t;
  t.name = name;

  auto dtype_it = value.find("dtype");
  if (dtype_it == value.end()) return make_error(where + "missing \"dtype\"");
  if (!dtype_it->is_string())
    return make_error(where + "\"dtype\" is a " + dtype_it->type_name() + ", not a string");
  const std::string dtype = dtype_it->get<std::string>();
  std::optional<DType> dt = dtype_from_name(dtype);
  if (!dt) {
    std::string hint;
    if (dtype.find("E4M3") != std::string::npos || dtype.find("FP8") != std::string::npos ||
        dtype.find("fp8") != std::string::npos)
      hint = " (FP8 E4M3 is spelled \"F8_E4M3\" in safetensors)";
    return make_error(where + "unsupported dtype \"" + dtype + "\"; supported: " + supported_dtypes() + hint);
  }
  t.dtype = *dt;

  auto shape_it = value.find("shape");
  if (shape_it == value.end()) return make_error(where + "missing \"shape\"");
  if (!shape_it->is_array())
    return make_error(where + "\"shape\" is a " + shape_it->type_name() + ", not an array");
  for (const json& d : *shape_it) {
    if (!d.is_number_integer())
      return make_error(where + "\"shape\" holds a " + std::string(d.type_name()) + " (" + d.dump() +
                        "), not an integer");
    if (!d.is_number_unsigned())
      return make_error(where + "shape " + shape_it->dump() + " has negative dimension " + d.dump());
    uint64_t u = d.get<uint64_t>();
    if (u > static_cast<uint64_t>(std::numeric_limits<int64_t>::max()))
      return make_error(where + "shape " + shape_it->dump() + ": dimension " + d.dump() + " overflows int64");
    t.shape.push_back(static_cast<int64_t>(u));
  }

  auto off_it = value.find("data_offsets");
  if (off_it == value.end()) return make_error(where + "missing \"data_offsets\"");
  if (!off_it->is_array() || off_it->size() != 2)
    return make_error(where + "\"data_offsets\" must be an array of two integers, got " + off_it->dump());
  for (const json& o : *off_it) {
    if (!o.is_number_integer())
      return make_error(where + "\"data_offsets\" must be an array of two integers, got " + off_it->dump());
    if (!o.is_number_unsigned())
      return make_error(where + "\"data_offsets\" " + off_it->dump() + " holds a negative offset");
  }
  t.begin = (*off_it)[0].get<uint64_t>();
  t.end = (*off_it)[1].get<uint64_t>();
  const std::string offsets = "data_offsets " + offsets_string(t.begin, t.end);
  if (t.end < t.begin) return make_error(where + offsets + ": end is before begin");
  if (t.end > data_size)
    return make_error(where + offsets + " run past the end of the data section, which is " +
                      std::to_string(data_size) + " bytes (file offsets " + std::to_string(data_offset) +
                      " to " + std::to_string(data_offset + data_size) + "): the tensor would end at file offset " +
                      std::to_string(data_offset + t.end) + " (truncated file?)");

  std::optional<uint64_t> expected = checked_nbytes(t.dtype, t.shape);
  if (!expected)
    return make_error(where + "shape " + shape_string(t.shape) + " of " + dtype + " overflows (numel x " +
                      std::to_string(dtype_size(t.dtype)) + " bytes does not fit in int64)");
  if (*expected != t.nbytes())
    return make_error(where + offsets + " (file offset " + std::to_string(data_offset + t.begin) + ") span " +
                      std::to_string(t.nbytes()) + " bytes, but shape " + shape_string(t.shape) + " of " + dtype +
                      " (" + std::to_string(dtype_size(t.dtype)) + " bytes each) needs " +
                      std::to_string(*expected) + " bytes");
  return t;
}

// Validates the header of the mapped file [map, map + size), size >= 8.
Expected<Parsed> parse_header(const std::string& path, const std::byte* map, uint64_t size) {
  const uint64_t header_len = load_le64(map);
  if (header_len > size - 8)
    return make_error(path + ": header length " + std::to_string(header_len) +
                      " (bytes 0-7) runs past the end of the file: the header would end at byte " +
                      (header_len > std::numeric_limits<uint64_t>::max() - 8 ? std::string("> 2^64")
                                                                            : std::to_string(8 + header_len)) +
                      ", but the file is " + std::to_string(size) + " bytes");
  if (header_len > kMaxHeaderSize)
    return make_error(path + ": header length " + std::to_string(header_len) + " exceeds the limit of " +
                      std::to_string(kMaxHeaderSize) + " bytes");
  const uint64_t data_offset = 8 + header_len;
  const uint64_t data_size = size - data_offset;

  const char* h = reinterpret_cast<const char*>(map + 8);
  FP4C_ASSIGN(json header, parse_json(path, h, h + header_len));
  if (!header.is_object())
    return make_error(path + ": header is a JSON " + std::string(header.type_name()) + ", not an object");

  Parsed out;
  for (const auto& [name, value] : header.items()) {
    if (name == "__metadata__") {
      FP4C_TRY(parse_metadata(path, value, out.metadata));
      continue;
    }
    FP4C_ASSIGN(TensorEntry t, parse_entry(path, data_offset, data_size, name, value));
    out.tensors.push_back(std::move(t));
  }

  // The tensors must tile [0, data_size) exactly, as the official library requires.
  std::sort(out.tensors.begin(), out.tensors.end(), [](const TensorEntry& a, const TensorEntry& b) {
    return std::tie(a.begin, a.end, a.name) < std::tie(b.begin, b.end, b.name);
  });
  uint64_t cursor = 0;
  const TensorEntry* prev = nullptr;
  for (const TensorEntry& t : out.tensors) {
    if (t.begin < cursor)
      return make_error(path + ": tensor '" + t.name + "' data_offsets " + offsets_string(t.begin, t.end) +
                        " (file offset " + std::to_string(data_offset + t.begin) + ") overlap tensor '" +
                        prev->name + "' data_offsets " + offsets_string(prev->begin, prev->end));
    if (t.begin > cursor)
      return make_error(path + ": gap in the data section: bytes [" + std::to_string(cursor) + ", " +
                        std::to_string(t.begin) + ")" +
                        " (file offset " + std::to_string(data_offset + cursor) + ") before tensor '" + t.name +
                        "' belong to no tensor");
    cursor = t.end;
    prev = &t;
  }
  if (cursor != data_size)
    return make_error(path + ": " + std::to_string(data_size - cursor) + " trailing bytes after the last tensor: " +
                      "the data section is " + std::to_string(data_size) + " bytes but the tensors end at " +
                      std::to_string(cursor) + " (file offset " + std::to_string(data_offset + cursor) + ")");
  return out;
}

}  // namespace

std::optional<uint64_t> checked_nbytes(DType dtype, std::span<const int64_t> shape) {
  int64_t numel = 1;
  for (int64_t d : shape) {
    if (d < 0 || __builtin_mul_overflow(numel, d, &numel)) return std::nullopt;
  }
  int64_t bytes;
  if (__builtin_mul_overflow(numel, static_cast<int64_t>(dtype_size(dtype)), &bytes)) return std::nullopt;
  return static_cast<uint64_t>(bytes);
}

int64_t TensorEntry::numel() const {
  int64_t n = 1;
  for (int64_t d : shape) n *= d;
  return n;
}

TensorEntry row_slice(const TensorEntry& whole, std::string name, int64_t row_begin, int64_t rows) {
  TensorEntry e;
  e.name = std::move(name);
  e.dtype = whole.dtype;
  e.shape = whole.shape;
  e.shape.at(0) = rows;
  const uint64_t row_bytes = whole.shape[0] > 0 ? whole.nbytes() / uint64_t(whole.shape[0]) : 0;
  e.begin = whole.begin + uint64_t(row_begin) * row_bytes;
  e.end = e.begin + uint64_t(rows) * row_bytes;
  return e;
}

Expected<File> File::open(const std::string& path) {
  int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) {
    const int err = errno;
    return make_error(path + ": cannot open: " + std::strerror(err));
  }
  struct stat st {};
  if (::fstat(fd, &st) != 0) {
    int err = errno;
    ::close(fd);
    return make_error(path + ": cannot stat: " + std::strerror(err));
  }
  if (!S_ISREG(st.st_mode)) {
    ::close(fd);
    return make_error(path + ": not a regular file");
  }
  const uint64_t size = static_cast<uint64_t>(st.st_size);
  if (size < 8) {
    ::close(fd);
    return make_error(path + ": file is " + std::to_string(size) +
                      " bytes, shorter than the 8-byte header length that starts a safetensors file");
  }
  void* p = ::mmap(nullptr, size, PROT_READ, MAP_PRIVATE, fd, 0);
  int err = errno;
  ::close(fd);  // the mapping keeps the file
  if (p == MAP_FAILED) return make_error(path + ": cannot mmap " + std::to_string(size) + " bytes: " + std::strerror(err));

  return adopt(path, static_cast<const std::byte*>(p), size, /*in_memory=*/false);
}

Expected<File> File::adopt(std::string path, const std::byte* map, uint64_t size, bool in_memory) {
  File f;  // owns the mapping from here on
  f.path_ = std::move(path);
  f.map_ = map;
  f.file_size_ = size;
  f.in_memory_ = in_memory;
  FP4C_ASSIGN(Parsed parsed, parse_header(f.path_, f.map_, size));
  f.data_offset_ = 8 + load_le64(f.map_);
  f.tensors_ = std::move(parsed.tensors);
  f.metadata_ = std::move(parsed.metadata);
  for (size_t i = 0; i < f.tensors_.size(); ++i) f.by_name_.emplace(f.tensors_[i].name, i);
  return f;
}

File::File(File&& other) noexcept
    : path_(std::move(other.path_)),
      in_memory_(other.in_memory_),
      lazy_(std::move(other.lazy_)),
      file_size_(other.file_size_),
      data_offset_(other.data_offset_),
      map_(std::exchange(other.map_, nullptr)),
      tensors_(std::move(other.tensors_)),
      by_name_(std::move(other.by_name_)),
      metadata_(std::move(other.metadata_)) {
  other.file_size_ = 0;
  other.data_offset_ = 0;
}

File& File::operator=(File&& other) noexcept {
  if (this != &other) {
    if (map_) ::munmap(const_cast<std::byte*>(map_), file_size_);
    path_ = std::move(other.path_);
    in_memory_ = other.in_memory_;
    lazy_ = std::move(other.lazy_);
    file_size_ = std::exchange(other.file_size_, 0);
    data_offset_ = std::exchange(other.data_offset_, 0);
    map_ = std::exchange(other.map_, nullptr);
    tensors_ = std::move(other.tensors_);
    by_name_ = std::move(other.by_name_);
    metadata_ = std::move(other.metadata_);
  }
  return *this;
}

File::~File() {
  if (map_) ::munmap(const_cast<std::byte*>(map_), file_size_);
}

const TensorEntry* File::find(std::string_view name) const {
  auto it = by_name_.find(name);
  return it == by_name_.end() ? nullptr : &tensors_[it->second];
}

struct File::Lazy {
  MemoryFile::Producer producer;
  std::unique_ptr<std::once_flag[]> made;
};

// The tensor of this file whose bytes hold `t`'s: t itself, or for an entry describing part of a tensor (the
// row slices of a fused tensor) the one it lies in.
size_t File::index_of(const TensorEntry& t) const {
  if (&t >= tensors_.data() && &t < tensors_.data() + tensors_.size()) return size_t(&t - tensors_.data());
  auto it = std::upper_bound(tensors_.begin(), tensors_.end(), t.begin,
                             [](uint64_t at, const TensorEntry& e) { return at < e.begin; });
  return size_t(it - tensors_.begin()) - 1;  // tensors start at 0, so one starts at or before t.begin
}

std::span<const std::byte> File::bytes(const TensorEntry& t) const {
  if (lazy_) {
    const size_t i = index_of(t);
    const TensorEntry& whole = tensors_[i];
    std::call_once(lazy_->made[i], [&] {
      lazy_->producer(i, 0, {const_cast<std::byte*>(map_) + data_offset_ + whole.begin, whole.nbytes()});
    });
  }
  return {map_ + data_offset_ + t.begin, t.nbytes()};
}

void File::produce(const TensorEntry& t, std::span<std::byte> out, uint64_t offset) const {
  if (lazy_ && &t >= tensors_.data() && &t < tensors_.data() + tensors_.size()) {
    lazy_->producer(size_t(&t - tensors_.data()), offset, out);
    return;
  }
  const auto b = bytes(t).subspan(offset, out.size());  // part of a tensor: made in the image once, then copied
  std::memcpy(out.data(), b.data(), b.size());
}

std::span<const std::byte> File::raw() const { return {map_, file_size_}; }

void File::release(const TensorEntry& t) const {
  // Only whole pages inside the tensor, so a neighbour still in use is not dropped with it.
  release(bytes(t));
}

void File::release(std::span<const std::byte> part) const {
  if (in_memory_) return;  // anonymous pages dropped would read back as zeros
  advise_dontneed(part);
}

Expected<MemoryFile> MemoryFile::create(std::string label, const std::vector<TensorSpec>& specs,
                                        const std::map<std::string, std::string>& metadata) {
  FP4C_ASSIGN(std::string header, header_json(label, specs, metadata));
  MemoryFile m;
  m.label_ = std::move(label);
  m.data_offset_ = 8 + header.size();
  uint64_t offset = 0;
  for (const TensorSpec& s : specs) {  // header_json checked every size and their sum
    m.entries_.emplace_back(offset, offset + s.nbytes());
    offset += s.nbytes();
  }
  if (offset > std::numeric_limits<uint64_t>::max() - m.data_offset_)
    return make_error(m.label_ + ": the image would exceed 2^64 bytes");
  m.size_ = m.data_offset_ + offset;
  void* p = ::mmap(nullptr, m.size_, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
  if (p == MAP_FAILED)
    return make_error(m.label_ + ": cannot map " + std::to_string(m.size_) + " bytes of memory for the image: " +
                      std::strerror(errno));
  m.map_ = static_cast<std::byte*>(p);
  uint64_t len = header.size();
  if constexpr (std::endian::native == std::endian::big) len = __builtin_bswap64(len);
  std::memcpy(m.map_, &len, 8);
  std::memcpy(m.map_ + 8, header.data(), header.size());
  return m;
}

MemoryFile::MemoryFile(MemoryFile&& o) noexcept
    : label_(std::move(o.label_)),
      map_(std::exchange(o.map_, nullptr)),
      size_(std::exchange(o.size_, 0)),
      data_offset_(o.data_offset_),
      entries_(std::move(o.entries_)) {}

MemoryFile& MemoryFile::operator=(MemoryFile&& o) noexcept {
  if (this != &o) {
    if (map_) ::munmap(map_, size_);
    label_ = std::move(o.label_);
    map_ = std::exchange(o.map_, nullptr);
    size_ = std::exchange(o.size_, 0);
    data_offset_ = o.data_offset_;
    entries_ = std::move(o.entries_);
  }
  return *this;
}

MemoryFile::~MemoryFile() {
  if (map_) ::munmap(map_, size_);
}

std::span<std::byte> MemoryFile::tensor(size_t i) {
  const auto [begin, end] = entries_.at(i);
  return {map_ + data_offset_ + begin, size_t(end - begin)};
}

Expected<File> MemoryFile::finish_lazy(Producer producer) {
  if (!map_) return make_error(label_ + ": the image was already handed over");
  const uint64_t size = std::exchange(size_, 0);
  FP4C_ASSIGN(File f, File::adopt(label_, std::exchange(map_, nullptr), size, /*in_memory=*/true));
  // Specs were laid out in order, so the File's tensors (in offset order) are the specs' order.
  f.lazy_ = std::make_shared<File::Lazy>();
  f.lazy_->producer = std::move(producer);
  f.lazy_->made = std::make_unique<std::once_flag[]>(f.tensors_.size());
  return f;
}

Expected<File> MemoryFile::finish() {
  if (!map_) return make_error(label_ + ": the image was already handed over");
  ::mprotect(map_, size_, PROT_READ);  // read-only from here on, as a mapped file is
  const uint64_t size = std::exchange(size_, 0);
  return File::adopt(label_, std::exchange(map_, nullptr), size, /*in_memory=*/true);
}

}  // namespace fp4c::safetensors
