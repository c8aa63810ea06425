// XXH3-128 as fp4c computes it (an AVX2 build where the CPU has it) equals the xxHash library's,
// one-shot and streamed in arbitrary chunks.
#include <gtest/gtest.h>
#include <xxhash.h>

#include <random>
#include <vector>

#include "formats/hash.h"

namespace fp4c {
namespace {

TEST(Hash, EqualsTheLibraryOneShotAndStreamed) {
  const uint64_t seed = std::random_device{}();
  SCOPED_TRACE("seed " + std::to_string(seed));
  std::mt19937_64 rng(seed);
  for (size_t n : {size_t(0), size_t(1), size_t(16), size_t(17), size_t(128), size_t(129), size_t(240), size_t(241),
                   size_t(1023), size_t(4096), size_t(100003), size_t(1) << 20}) {
    std::vector<std::byte> data(n);
    for (auto& b : data) b = std::byte(rng());
    XXH128_hash_t want = XXH3_128bits(data.data(), n);
    const hash::Digest got = hash::xxh3_128(data);
    EXPECT_EQ(got.high, want.high64) << n;
    EXPECT_EQ(got.low, want.low64) << n;
    hash::Hasher h;
    for (size_t off = 0; off < n;) {
      const size_t step = std::min<size_t>(n - off, 1 + rng() % 5000);
      h.update(std::span(data).subspan(off, step));
      off += step;
    }
    EXPECT_EQ(h.digest(), got) << n;
  }
  EXPECT_EQ(hash::xxh3_128({}).hex().size(), 32u);
}

}  // namespace
}  // namespace fp4c
