#include "formats/mmap_advice.h"

#include <sys/mman.h>
#include <unistd.h>

#include <cstdint>

namespace fp4c {
namespace {

uintptr_t page_size() {
  static const uintptr_t p = uintptr_t(sysconf(_SC_PAGESIZE));
  return p;
}

}  // namespace

void advise_populate(std::span<const std::byte> bytes) {
  if (bytes.empty()) return;
  const uintptr_t p = page_size();
  uintptr_t begin = reinterpret_cast<uintptr_t>(bytes.data()) & ~(p - 1);
  uintptr_t end = reinterpret_cast<uintptr_t>(bytes.data()) + bytes.size();
#ifdef MADV_POPULATE_READ
  if (madvise(reinterpret_cast<void*>(begin), end - begin, MADV_POPULATE_READ) == 0) return;
#endif
  // Older kernels: touch one byte per page.
  volatile const char* c = reinterpret_cast<const char*>(begin);
  for (uintptr_t a = begin; a < end; a += p) (void)c[a - begin];
}

void advise_dontneed(std::span<const std::byte> bytes) {
  const uintptr_t p = page_size();
  uintptr_t begin = (reinterpret_cast<uintptr_t>(bytes.data()) + p - 1) & ~(p - 1);
  uintptr_t end = (reinterpret_cast<uintptr_t>(bytes.data()) + bytes.size()) & ~(p - 1);
  if (end > begin) madvise(reinterpret_cast<void*>(begin), end - begin, MADV_DONTNEED);
}

}  // namespace fp4c
