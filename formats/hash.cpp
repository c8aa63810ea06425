#include "formats/hash.h"

#include <xxhash.h>

#include <cerrno>
#include <cstdio>
#include <cstring>
#include <vector>

namespace fp4c::hash {

std::string Digest::hex() const {
  char buf[33];
  std::snprintf(buf, sizeof buf, "%016llx%016llx", static_cast<unsigned long long>(high),
                static_cast<unsigned long long>(low));
  return buf;
}

Digest xxh3_128(std::span<const std::byte> bytes) {
  XXH128_hash_t h = XXH3_128bits(bytes.data(), bytes.size());
  return {h.high64, h.low64};
}

Digest from_canonical(const uint8_t bytes[16]) {
  Digest d;
  for (int i = 0; i < 8; ++i) d.high = (d.high << 8) | bytes[i];
  for (int i = 8; i < 16; ++i) d.low = (d.low << 8) | bytes[i];
  return d;
}

struct Hasher::State {
  XXH3_state_t* s = XXH3_createState();
  ~State() { XXH3_freeState(s); }
};

Hasher::Hasher() : state_(std::make_unique<State>()) { XXH3_128bits_reset(state_->s); }
Hasher::~Hasher() = default;
Hasher::Hasher(Hasher&&) noexcept = default;
Hasher& Hasher::operator=(Hasher&&) noexcept = default;

void Hasher::update(std::span<const std::byte> bytes) {
  XXH3_128bits_update(state_->s, bytes.data(), bytes.size());
}

Digest Hasher::digest() const {
  XXH128_hash_t h = XXH3_128bits_digest(state_->s);
  return {h.high64, h.low64};
}

Expected<Digest> hash_file(const std::string& path, uint64_t* size) {
  std::FILE* f = std::fopen(path.c_str(), "rb");
  if (!f) return make_error(path + ": cannot open for hashing: " + std::strerror(errno));
  Hasher h;
  std::vector<std::byte> buf(1 << 22);
  uint64_t total = 0;
  size_t n;
  while ((n = std::fread(buf.data(), 1, buf.size(), f)) > 0) {
    h.update({buf.data(), n});
    total += n;
  }
  bool failed = std::ferror(f);
  std::fclose(f);
  if (failed) return make_error(path + ": read error while hashing at offset " + std::to_string(total));
  if (size) *size = total;
  return h.digest();
}

}  // namespace fp4c::hash
