#include "runtime/spill.h"

#include <fcntl.h>
#include <sys/mman.h>
#include <unistd.h>

#include <cstdlib>

namespace fp4c::runtime {

void* spill_allocate(const SpillPolicy& policy, size_t bytes) {
  std::string dir = policy.directory;
  if (dir.empty()) {
    const char* t = std::getenv("TMPDIR");
    dir = t && *t ? t : "/tmp";
  }
  std::string path = dir + "/fp4c-activations-XXXXXX";
  const int fd = ::mkstemp(path.data());
  if (fd < 0) throw std::bad_alloc();
  ::unlink(path.c_str());  // the file lives as long as the mapping
  void* p = MAP_FAILED;
  if (::ftruncate(fd, off_t(bytes)) == 0)
    p = ::mmap(nullptr, bytes, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
  ::close(fd);
  if (p == MAP_FAILED) throw std::bad_alloc();
  return p;
}

void spill_deallocate(void* p, size_t bytes) { ::munmap(p, bytes); }

}  // namespace fp4c::runtime
