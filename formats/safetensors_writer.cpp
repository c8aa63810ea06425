// safetensors writing: header first, then the data streamed through a large buffer and hashed.
#include <fcntl.h>
#include <unistd.h>


#include <algorithm>
#include <bit>
#include <cerrno>
#include <cstring>
#include <set>
#include <string>
#include <utility>

#include <nlohmann/json.hpp>

#include "formats/hash.h"
#include "formats/safetensors.h"

namespace fp4c::safetensors {
namespace {

constexpr size_t kBufferSize = size_t{8} << 20;

std::string shape_string(std::span<const int64_t> shape) {
  std::string s = "[";
  for (size_t i = 0; i < shape.size(); ++i) s += (i ? ", " : "") + std::to_string(shape[i]);
  return s + "]";
}

}  // namespace

// The header JSON, compact, "__metadata__" first, tensors in spec order with keys in the order the
// official library writes them; padded with spaces to a multiple of 8 bytes.
Expected<std::string> header_json(const std::string& path, const std::vector<TensorSpec>& specs,
                                   const std::map<std::string, std::string>& metadata) {
  nlohmann::ordered_json header = nlohmann::ordered_json::object();
  if (!metadata.empty()) {
    nlohmann::ordered_json meta = nlohmann::ordered_json::object();
    for (const auto& [k, v] : metadata) meta[k] = v;
    header["__metadata__"] = std::move(meta);
  }
  std::set<std::string_view> names;
  uint64_t offset = 0;
  for (const TensorSpec& s : specs) {
    const std::string where = path + ": tensor '" + s.name + "': ";
    if (s.name == "__metadata__") return make_error(where + "the name is reserved for the metadata");
    if (!names.insert(s.name).second) return make_error(where + "declared twice");
    std::optional<uint64_t> nbytes = checked_nbytes(s.dtype, s.shape);
    if (!nbytes)
      return make_error(where + "shape " + shape_string(s.shape) + " has a negative dimension or overflows");
    if (*nbytes > UINT64_MAX - offset) return make_error(where + "the data section would exceed 2^64 bytes");
    nlohmann::ordered_json entry = nlohmann::ordered_json::object();
    entry["dtype"] = std::string(dtype_name(s.dtype));
    entry["shape"] = s.shape;
    entry["data_offsets"] = {offset, offset + *nbytes};
    header[s.name] = std::move(entry);
    offset += *nbytes;
  }
  std::string text;
  try {
    text = header.dump();
  } catch (const nlohmann::json::type_error& e) {  // a name or metadata string that is not UTF-8
    return make_error(path + ": cannot write the header: " + e.what());
  }
  text.append((8 - text.size() % 8) % 8, ' ');
  return text;
}

uint64_t TensorSpec::nbytes() const { return checked_nbytes(dtype, shape).value_or(0); }

struct Writer::Impl {
  std::string path;
  int fd = -1;
  std::vector<TensorSpec> specs;
  std::vector<uint64_t> ends;  // end offset of each spec's data in the data section
  uint64_t header_bytes = 0;   // 8 + header length
  uint64_t data_total = 0;
  uint64_t data_written = 0;
  std::unique_ptr<std::byte[]> buffer = std::make_unique_for_overwrite<std::byte[]>(kBufferSize);
  size_t used = 0;
  hash::Hasher hash;
  std::array<uint8_t, 16> digest{};
  bool finished = false;
  std::optional<Error> failed;

  ~Impl() {
    if (fd >= 0) {  // never finished: do not leave a half-written file behind
      ::close(fd);
      ::unlink(path.c_str());
    }
  }

  Status fail(Error e) {
    failed = e;
    return e;
  }

  // Writes straight to the file, hashing what goes out (so the hash follows file order).
  Status write_out(const std::byte* p, size_t n) {
    hash.update({p, n});
    while (n > 0) {
      ssize_t w = ::write(fd, p, std::min<size_t>(n, size_t{1} << 30));
      if (w < 0) {
        const int err = errno;
        if (err == EINTR) continue;
        return fail(make_error(path + ": write failed at file offset " +
                               std::to_string(header_bytes + data_written) + ": " + std::strerror(err)));
      }
      p += w;
      n -= static_cast<size_t>(w);
    }
    return {};
  }

  Status flush() {
    if (used == 0) return {};
    size_t n = std::exchange(used, 0);
    return write_out(buffer.get(), n);
  }

  Status append(const std::byte* p, size_t n) {
    if (n == 0) return {};  // p may be null
    if (used + n < kBufferSize) {
      std::memcpy(buffer.get() + used, p, n);
      used += n;
      return {};
    }
    // Top up the buffer, flush it; a large remainder goes out directly without a copy.
    size_t head = kBufferSize - used;
    std::memcpy(buffer.get() + used, p, head);
    used = kBufferSize;
    FP4C_TRY(flush());
    p += head;
    n -= head;
    if (n >= kBufferSize) return write_out(p, n);
    std::memcpy(buffer.get(), p, n);
    used = n;
    return {};
  }

  // The spec whose bytes start at or after data offset `at` (the next incomplete tensor).
  size_t spec_at(uint64_t at) const {
    return static_cast<size_t>(std::upper_bound(ends.begin(), ends.end(), at) - ends.begin());
  }
};

Expected<Writer> Writer::create(const std::string& path, std::vector<TensorSpec> specs,
                                const std::map<std::string, std::string>& metadata) {
  FP4C_ASSIGN(std::string header, header_json(path, specs, metadata));
  auto impl = std::make_unique<Impl>();
  impl->path = path;
  impl->specs = std::move(specs);
  for (const TensorSpec& s : impl->specs) {
    impl->data_total += s.nbytes();
    impl->ends.push_back(impl->data_total);
  }
  impl->fd = ::open(path.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
  if (impl->fd < 0) {
    const int err = errno;
    return make_error(path + ": cannot create: " + std::strerror(err));
  }

  uint64_t len = header.size();
  if constexpr (std::endian::native == std::endian::big) len = __builtin_bswap64(len);
  std::byte prefix[8];
  std::memcpy(prefix, &len, 8);
  FP4C_TRY(impl->append(prefix, 8));
  FP4C_TRY(impl->append(reinterpret_cast<const std::byte*>(header.data()), header.size()));
  impl->header_bytes = 8 + header.size();
  return Writer(std::move(impl));
}

Writer::Writer(std::unique_ptr<Impl> impl) : impl_(std::move(impl)) {}
Writer::Writer(Writer&&) noexcept = default;
Writer& Writer::operator=(Writer&&) noexcept = default;
Writer::~Writer() = default;

Status Writer::write(std::span<const std::byte> chunk) {
  Impl& w = *impl_;
  if (w.failed) return *w.failed;
  if (w.finished) return make_error(w.path + ": write of " + std::to_string(chunk.size()) + " bytes after finish()");
  const uint64_t left = w.data_total - w.data_written;
  if (chunk.size() > left) {
    std::string msg = w.path + ": write of " + std::to_string(chunk.size()) + " bytes at data offset " +
                      std::to_string(w.data_written) + " exceeds the declared data (" +
                      std::to_string(w.data_total) + " bytes, " + std::to_string(left) + " left";
    if (size_t i = w.spec_at(w.data_written); i < w.specs.size())
      msg += ", in tensor '" + w.specs[i].name + "' and after";
    return w.fail(make_error(msg + ")"));
  }
  FP4C_TRY(w.append(chunk.data(), chunk.size()));
  w.data_written += chunk.size();
  return {};
}

Status Writer::finish() {
  Impl& w = *impl_;
  if (w.failed) return *w.failed;
  if (w.finished) return make_error(w.path + ": finish() called twice");
  if (w.data_written < w.data_total) {
    size_t i = w.spec_at(w.data_written);
    const TensorSpec& s = w.specs[i];
    const uint64_t begin = w.ends[i] - s.nbytes();
    return w.fail(make_error(w.path + ": finish() after " + std::to_string(w.data_written) + " of " +
                             std::to_string(w.data_total) + " data bytes: tensor '" + s.name + "' got " +
                             std::to_string(w.data_written - begin) + " of its " + std::to_string(s.nbytes()) +
                             " bytes"));
  }
  FP4C_TRY(w.flush());
  int fd = std::exchange(w.fd, -1);
  if (::close(fd) != 0) {
    const int err = errno;
    ::unlink(w.path.c_str());
    return w.fail(make_error(w.path + ": close failed: " + std::strerror(err)));
  }
  w.digest = hash::to_canonical(w.hash.digest());
  w.finished = true;
  return {};
}

const std::string& Writer::path() const { return impl_->path; }
uint64_t Writer::bytes_written() const { return impl_->header_bytes + impl_->data_written; }
std::array<uint8_t, 16> Writer::file_hash() const { return impl_->digest; }

}  // namespace fp4c::safetensors
