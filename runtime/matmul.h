// Matrix multiplies through oneDNN's matmul primitive (brgemm kernels: AVX-512, AVX512-BF16 or AMX,
// whichever the CPU has). A Linear's weight is converted once into the layout and type the primitive
// wants (BF16 for Precision::BF16) and then multiplies any number of activation matrices of the
// row count it was prepared for.
#pragma once

#include <cstdint>
#include <memory>

#include "base/expected.h"
#include "runtime/forward.h"

namespace fp4c::runtime {

// y[rows, out] = x[rows, in] W^T + b, FP32 accumulation and output. For Precision::F32 x is float;
// for Precision::BF16 x holds BF16 bits (round_to_bf16) and W is rounded to BF16 (nearest even).
class PreparedLinear {
 public:
  // Converts `w`'s weight (and copies its bias); `w` need not outlive the result.
  static Expected<PreparedLinear> create(const LinearParams& w, int64_t rows, Precision precision);
  PreparedLinear(PreparedLinear&&) noexcept;
  PreparedLinear& operator=(PreparedLinear&&) noexcept;
  ~PreparedLinear();

  // x: rows x in elements (float or BF16 bits per the precision), row-major; y: rows x out floats.
  Status run(const void* x, float* y) const;
  // The same for another row count, with the same converted weight (a primitive for that count is
  // made on first use and kept).
  Status run(const void* x, int64_t rows, float* y) const;
  int64_t rows() const;

 private:
  struct Impl;
  explicit PreparedLinear(std::unique_ptr<Impl> impl);
  std::unique_ptr<Impl> impl_;
};

// C[M, N] = op(A) op(B) in float32 (FP32 accumulation) through oneDNN's matmul: op(A) is A [M, K] row-major,
// or, with a_transposed, A stored as [K, M] row-major; op(B) is B [K, N], or, with b_transposed, B stored as
// [N, K]. For the gradients of a layer (runtime/layer_grad.h): dW = dY^T X, dX = dY W. A primitive per shape
// (oneDNN's cache keeps them).
Status gemm_f32(int64_t M, int64_t N, int64_t K, const float* A, bool a_transposed, const float* B, bool b_transposed,
                float* C);

}  // namespace fp4c::runtime
