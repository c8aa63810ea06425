// Reading a calibration file as stored, hashing it, and gunzipping it when it is gzip.
#include <zlib.h>

#include <cerrno>
#include <cstdio>
#include <cstring>
#include <memory>
#include <vector>

#include "frontend/calibration.h"

namespace fp4c::frontend {
namespace {

struct FileCloser {
  void operator()(std::FILE* f) const { std::fclose(f); }
};

Error too_large(const std::string& path, uint64_t max_bytes, const char* verb) {
  return make_error(path + ": " + verb + " more than " + std::to_string(max_bytes) +
                    " bytes of text, the limit of a calibration or evaluation set (--max-calib-bytes raises it)");
}

// Streaming gunzip of one or more concatenated members.
class Gunzip {
 public:
  Gunzip(const std::string& path, uint64_t max_bytes) : path_(path), max_bytes_(max_bytes) {}
  ~Gunzip() {
    if (started_) inflateEnd(&zs_);
  }
  Gunzip(const Gunzip&) = delete;
  Gunzip& operator=(const Gunzip&) = delete;

  // Feeds the stored bytes that start at file offset `offset`; appends what they decompress to.
  Status feed(const unsigned char* in, size_t n, uint64_t offset, std::string& out) {
    if (!started_) {
      zs_ = {};
      if (inflateInit2(&zs_, 16 + MAX_WBITS) != Z_OK)
        return make_error(path_ + ": cannot start zlib's inflate");
      started_ = true;
    }
    zs_.next_in = const_cast<unsigned char*>(in);
    zs_.avail_in = static_cast<uInt>(n);
    while (zs_.avail_in > 0) {
      if (member_done_) {  // more bytes after a member: they must be the next member
        inflateReset(&zs_);
        member_done_ = false;
      }
      zs_.next_out = buf_;
      zs_.avail_out = sizeof buf_;
      const uInt avail_in_before = zs_.avail_in;
      int rc = inflate(&zs_, Z_NO_FLUSH);
      const size_t produced = sizeof buf_ - zs_.avail_out;
      if (out.size() + produced > max_bytes_) return too_large(path_, max_bytes_, "decompresses to");
      out.append(reinterpret_cast<const char*>(buf_), produced);
      if (rc == Z_STREAM_END) {
        member_done_ = true;
        continue;
      }
      const bool progress = produced > 0 || zs_.avail_in != avail_in_before;
      if (rc == Z_OK || (rc == Z_BUF_ERROR && progress)) continue;
      const uint64_t at = offset + static_cast<uint64_t>(zs_.next_in - in);
      std::string why = zs_.msg ? zs_.msg : (rc == Z_MEM_ERROR ? "out of memory" : "inflate error " + std::to_string(rc));
      return make_error(path_ + ": corrupt gzip stream at compressed byte offset " + std::to_string(at) +
                        " (" + why + ")");
    }
    return {};
  }

  // At the end of the file: a member must not be left open.
  Status finish(uint64_t size) const {
    if (!member_done_)
      return make_error(path_ + ": corrupt gzip stream: truncated at compressed byte offset " +
                        std::to_string(size) + " (the file ends inside a gzip member)");
    return {};
  }

 private:
  std::string path_;
  uint64_t max_bytes_;
  z_stream zs_{};
  bool started_ = false;
  bool member_done_ = false;
  unsigned char buf_[1 << 16];
};

}  // namespace

Expected<SourceBytes> read_source(const std::string& path, uint64_t max_bytes) {
  std::unique_ptr<std::FILE, FileCloser> f(std::fopen(path.c_str(), "rb"));
  if (!f) return make_error(path + ": cannot open calibration set: " + std::strerror(errno));
  SourceBytes src;
  hash::Hasher hasher;
  std::vector<unsigned char> buf(1 << 20);
  std::unique_ptr<Gunzip> gunzip;
  uint64_t offset = 0;
  for (;;) {
    size_t n = std::fread(buf.data(), 1, buf.size(), f.get());
    if (n == 0) break;
    hasher.update({reinterpret_cast<const std::byte*>(buf.data()), n});
    if (offset == 0 && n >= 2 && buf[0] == 0x1f && buf[1] == 0x8b) {
      src.gzip = true;
      gunzip = std::make_unique<Gunzip>(path, max_bytes);
    }
    if (gunzip) {
      FP4C_TRY(gunzip->feed(buf.data(), n, offset, src.data));
    } else {
      if (src.data.size() + n > max_bytes) return too_large(path, max_bytes, "holds");
      src.data.append(reinterpret_cast<const char*>(buf.data()), n);
    }
    offset += n;
  }
  if (std::ferror(f.get()))
    return make_error(path + ": read error at offset " + std::to_string(offset) + ": " + std::strerror(errno));
  if (gunzip) FP4C_TRY(gunzip->finish(offset));
  src.stored_hash = hasher.digest();
  src.stored_size = offset;
  return src;
}

}  // namespace fp4c::frontend
