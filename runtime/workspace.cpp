#include "runtime/workspace.h"

#include <sys/mman.h>

#include <cstdlib>
#include <new>

namespace fp4c::runtime {

namespace {
constexpr size_t kHugePage = size_t(2) << 20;
}

void Buffer::Free::operator()(void* p) const { std::free(p); }

void Buffer::reserve(size_t bytes) {
  if (bytes <= capacity_) return;
  data_.reset();
  capacity_ = 0;
  const size_t align = bytes >= kHugePage ? kHugePage : 64;
  const size_t size = (bytes + align - 1) / align * align;
  void* p = std::aligned_alloc(align, size);
  if (!p) throw std::bad_alloc();
#ifdef MADV_HUGEPAGE
  if (align == kHugePage) ::madvise(p, size, MADV_HUGEPAGE);  // advice only: failure is harmless
#endif
  data_.reset(p);
  capacity_ = size;
}

void Buffer::release() {
  data_.reset();
  capacity_ = 0;
}

void ForwardWorkspace::release() {
  for (Buffer* b : {&normed, &q, &k, &v, &attn, &gate, &up, &gemm_input, &quantized}) b->release();
  for (Buffer* b : {&attention.rope_cos, &attention.rope_sin, &attention.q, &attention.k, &attention.v})
    b->release();
  attention.threads.clear();
}

}  // namespace fp4c::runtime
