// Buffers the forward keeps between calls. A decoder layer over thousands of tokens needs several
// hundred MB of temporaries; allocating them afresh each layer costs more than the elementwise work
// itself (page faults and zeroing), so they are kept, uninitialised, and grown when too small.
#pragma once

#include <cstddef>
#include <cstdint>
#include <memory>
#include <mutex>
#include <vector>

namespace fp4c::runtime {

// Uninitialised storage that keeps its capacity; get() returns at least n elements of T, whose
// contents are unspecified (a larger request may move and drop them). Large buffers are backed by
// transparent huge pages where the kernel allows.
class Buffer {
 public:
  template <typename T>
  T* get(size_t n) {
    reserve(n * sizeof(T));
    return static_cast<T*>(data_.get());
  }
  void release();
  size_t capacity_bytes() const { return capacity_; }

 private:
  void reserve(size_t bytes);
  struct Free {
    void operator()(void* p) const;
  };
  std::unique_ptr<void, Free> data_;
  size_t capacity_ = 0;
};

// Per-thread temporaries of the attention (score and probability blocks, its output block, oneDNN's
// scratchpad).
struct AttentionThreadBuffers {
  Buffer scores, probs, out, scratchpad;
};

struct AttentionWorkspace {
  Buffer rope_cos, rope_sin, q, k, v;
  std::vector<AttentionThreadBuffers> threads;
};

// Everything Forward keeps; one call at a time uses it (the mutex serialises calls on one Forward
// and its copies).
struct ForwardWorkspace {
  std::mutex mutex;
  Buffer normed, q, k, v, attn, gate, up, gemm_input, quantized;
  AttentionWorkspace attention;
  void release();
};

}  // namespace fp4c::runtime
