// XXH3-128 compiled for AVX2 (about twice the speed of the SSE2 build Debian ships), used by
// formats/hash.cpp when the CPU has AVX2. The XXH_INLINE_ALL copy of xxHash is file-local, so it
// does not clash with the library's symbols.
#ifdef __clang__   // clang ignores GCC's pragma: the same as an attribute on every function below
#pragma clang attribute push(__attribute__((target("avx2"))), apply_to = function)
#else
#pragma GCC target("avx2")
#endif
#include <immintrin.h>
#define XXH_INLINE_ALL
#define XXH_VECTOR XXH_AVX2
#include <xxhash.h>

#include <new>

#include "formats/hash.h"

namespace fp4c::hash::detail {

void* avx2_create() {
  auto* s = static_cast<XXH3_state_t*>(::operator new(sizeof(XXH3_state_t), std::align_val_t(64)));
  XXH3_INITSTATE(s);
  XXH3_128bits_reset(s);
  return s;
}
void avx2_free(void* s) { ::operator delete(s, std::align_val_t(64)); }
void avx2_update(void* s, const void* data, size_t n) { XXH3_128bits_update(static_cast<XXH3_state_t*>(s), data, n); }
Digest avx2_digest(const void* s) {
  XXH128_hash_t h = XXH3_128bits_digest(static_cast<const XXH3_state_t*>(s));
  return {h.high64, h.low64};
}
Digest avx2_oneshot(const void* data, size_t n) {
  XXH128_hash_t h = XXH3_128bits(data, n);
  return {h.high64, h.low64};
}

}  // namespace fp4c::hash::detail

#ifdef __clang__
#pragma clang attribute pop
#endif
