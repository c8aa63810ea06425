// Small pieces the runtime's CPU files share.
#pragma once

#include <omp.h>

#include <cstdint>
#include <string>

namespace fp4c::runtime {

// The calling thread's OpenMP thread count for one call (oneDNN reads it too), restored afterwards;
// threads <= 0 leaves it as it is.
class ThreadScope {
 public:
  explicit ThreadScope(int threads) : saved_(omp_get_max_threads()), set_(threads > 0) {
    if (set_) omp_set_num_threads(threads);
  }
  ~ThreadScope() {
    if (set_) omp_set_num_threads(saved_);
  }
  ThreadScope(const ThreadScope&) = delete;
  ThreadScope& operator=(const ThreadScope&) = delete;

 private:
  int saved_;
  bool set_;
};

// "[rows, cols]" for error messages.
inline std::string shape_str(int64_t rows, int64_t cols) {
  return "[" + std::to_string(rows) + ", " + std::to_string(cols) + "]";
}

}  // namespace fp4c::runtime
