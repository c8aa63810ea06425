#include "formats/hash.h"

#include <xxhash.h>

#include <cerrno>
#include <cstdio>
#include <cstring>
#include <vector>

namespace fp4c::hash {

namespace detail {
void* avx2_create();
void avx2_free(void* s);
void avx2_update(void* s, const void* data, size_t n);
Digest avx2_digest(const void* s);
Digest avx2_oneshot(const void* data, size_t n);
}  // namespace detail

namespace {
bool use_avx2() {
  static const bool yes = __builtin_cpu_supports("avx2");
  return yes;
}
}  // namespace

std::string Digest::hex() const {
  char buf[33];
  std::snprintf(buf, sizeof buf, "%016llx%016llx", static_cast<unsigned long long>(high),
                static_cast<unsigned long long>(low));
  return buf;
}

Digest xxh3_128(std::span<const std::byte> bytes) {
  if (use_avx2()) return detail::avx2_oneshot(bytes.data(), bytes.size());
  XXH128_hash_t h = XXH3_128bits(bytes.data(), bytes.size());
  return {h.high64, h.low64};
}

Digest from_canonical(const uint8_t bytes[16]) {
  Digest d;
  for (int i = 0; i < 8; ++i) d.high = (d.high << 8) | bytes[i];
  for (int i = 8; i < 16; ++i) d.low = (d.low << 8) | bytes[i];
  return d;
}

std::array<uint8_t, 16> to_canonical(const Digest& d) {
  std::array<uint8_t, 16> out;
  for (int i = 0; i < 8; ++i) {
    out[size_t(i)] = uint8_t(d.high >> (56 - 8 * i));
    out[size_t(8 + i)] = uint8_t(d.low >> (56 - 8 * i));
  }
  return out;
}

// The library's state, or the AVX2 build's (same algorithm, same digests).
struct Hasher::State {
  XXH3_state_t* s = nullptr;
  void* avx2 = nullptr;
  State() {
    if (use_avx2()) {
      avx2 = detail::avx2_create();
    } else {
      s = XXH3_createState();
      XXH3_128bits_reset(s);
    }
  }
  ~State() {
    if (avx2) detail::avx2_free(avx2);
    if (s) XXH3_freeState(s);
  }
};

Hasher::Hasher() : state_(std::make_unique<State>()) {}
Hasher::~Hasher() = default;
Hasher::Hasher(Hasher&&) noexcept = default;
Hasher& Hasher::operator=(Hasher&&) noexcept = default;

void Hasher::update(std::span<const std::byte> bytes) {
  if (state_->avx2) return detail::avx2_update(state_->avx2, bytes.data(), bytes.size());
  XXH3_128bits_update(state_->s, bytes.data(), bytes.size());
}

Digest Hasher::digest() const {
  if (state_->avx2) return detail::avx2_digest(state_->avx2);
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
