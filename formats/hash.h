// XXH3-128 digests, as the manifest records them (32 lowercase hex digits, high 64 bits first).
#pragma once

#include <array>
#include <cstddef>
#include <cstdint>
#include <memory>
#include <span>
#include <string>

#include "base/expected.h"

namespace fp4c::hash {

struct Digest {
  uint64_t high = 0;
  uint64_t low = 0;
  std::string hex() const;
  bool operator==(const Digest&) const = default;
};

Digest xxh3_128(std::span<const std::byte> bytes);
// From and to XXH3-128's canonical (big-endian) 16 bytes: high 64 bits first.
Digest from_canonical(const uint8_t bytes[16]);
std::array<uint8_t, 16> to_canonical(const Digest& d);

// Streaming XXH3-128.
class Hasher {
 public:
  Hasher();
  ~Hasher();
  Hasher(Hasher&&) noexcept;
  Hasher& operator=(Hasher&&) noexcept;
  void update(std::span<const std::byte> bytes);
  Digest digest() const;

 private:
  struct State;
  std::unique_ptr<State> state_;
};

// Hash of a whole file, read in chunks. Errors name the file.
Expected<Digest> hash_file(const std::string& path, uint64_t* size = nullptr);

}  // namespace fp4c::hash
