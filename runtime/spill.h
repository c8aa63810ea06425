// Storage for the hidden states of a whole calibration set: on the heap up to a budget, beyond it in
// an unlinked temporary file mapped shared, so that the kernel can write the pages out and drop them
// under memory pressure instead of the process running out of memory.
#pragma once

#include <cstddef>
#include <cstdint>
#include <memory>
#include <new>
#include <string>
#include <type_traits>
#include <vector>

namespace fp4c::runtime {

struct SpillPolicy {
  uint64_t memory_budget = 0;   // bytes; an allocation above it goes to a file. 0: never spill.
  std::string directory;        // where the temporary file is made; empty: $TMPDIR or /tmp
};

// Maps `bytes` of a fresh unlinked temporary file; throws std::bad_alloc when that fails.
void* spill_allocate(const SpillPolicy& policy, size_t bytes);
void spill_deallocate(void* p, size_t bytes);

template <class T>
class SpillAllocator {
 public:
  using value_type = T;
  // The policy travels with the storage it allocated.
  using propagate_on_container_copy_assignment = std::true_type;
  using propagate_on_container_move_assignment = std::true_type;
  using propagate_on_container_swap = std::true_type;
  SpillAllocator() = default;
  explicit SpillAllocator(std::shared_ptr<const SpillPolicy> policy) : policy_(std::move(policy)) {}
  template <class U>
  SpillAllocator(const SpillAllocator<U>& o) : policy_(o.policy()) {}  // NOLINT

  T* allocate(size_t n) {
    if (spills(n)) return static_cast<T*>(spill_allocate(*policy_, n * sizeof(T)));
    return std::allocator<T>().allocate(n);
  }
  void deallocate(T* p, size_t n) {
    if (spills(n)) return spill_deallocate(p, n * sizeof(T));
    std::allocator<T>().deallocate(p, n);
  }
  const std::shared_ptr<const SpillPolicy>& policy() const { return policy_; }
  template <class U>
  bool operator==(const SpillAllocator<U>& o) const { return policy_ == o.policy(); }

 private:
  // The same rule at allocation and release, so each block is returned the way it was taken.
  bool spills(size_t n) const {
    return policy_ && policy_->memory_budget > 0 && n * sizeof(T) > policy_->memory_budget;
  }
  std::shared_ptr<const SpillPolicy> policy_;
};

using HiddenStates = std::vector<float, SpillAllocator<float>>;

}  // namespace fp4c::runtime
