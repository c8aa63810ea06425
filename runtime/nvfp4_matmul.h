// y[m, n] = x[m, k] . W[n, k]^T (+ bias) with W an NVFP4 weight as an artifact stores it (packed E2M1
// codes, FP8 E4M3 block scales, a global scale): the CPU's fused-dequant product. Every weight is
// exactly the value nvfp4::dequantize / ArtifactReader::dequantize gives (e2m1 * (e4m3 / G), or
// (e2m1 * e4m3) * weight_scale_2 when that is set), decoded inside the kernel; products accumulate in
// FP32. The whole float weight is never materialized: the GEMV-style kernels decode 16 weights at a
// time in registers and reuse them for up to 6 rows of x; the tiled kernel (large M) decodes 128 rows
// of W at a time into a float tile and multiplies it with oneDNN.
//
// In the GEMV kernels each y[m, n] is computed by one thread in an order fixed by the kernel, so their
// results do not depend on the thread count (tested); the tiled kernel sums in oneDNN's order, like the
// runtime's other products. Kernels may differ from each other in the last bits.
#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "base/expected.h"
#include "runtime/weights.h"

namespace fp4c::runtime {

enum class Nvfp4Kernel : uint8_t {
  Auto,     // by row count and CPU: the best GEMV kernel for m <= nvfp4_tiled_min_rows(), else Tiled
  Avx512,   // GEMV-style, 16 lanes (needs AVX-512F/BW/VL/DQ)
  Avx2,     // GEMV-style, 8 lanes (needs AVX2 and FMA)
  Scalar,   // GEMV-style, plain C++
  Tiled,    // tiles of W decoded to float, multiplied by oneDNN's f32 matmul
};

const char* to_string(Nvfp4Kernel kernel);
// Whether this CPU (and build) can run `kernel`.
bool nvfp4_kernel_available(Nvfp4Kernel kernel);
// The GEMV kernel Auto uses on this CPU.
Nvfp4Kernel nvfp4_best_gemv_kernel();
// The row count from which Auto switches to the tiled kernel (chosen by measurement: see nvfp4_matmul.cpp).
int64_t nvfp4_tiled_min_rows();

class Nvfp4Matmul {
 public:
  // Checks the sizes (codes out*in/2 bytes, scales out*in/16, in % 16 == 0, bias empty or [out]) and
  // keeps the weight (moved in). `what` names the Linear in errors.
  static Expected<Nvfp4Matmul> create(PackedNvfp4 weight, int64_t out, int64_t in, std::vector<float> bias = {},
                                      const std::string& what = "nvfp4 matmul");
  Nvfp4Matmul(Nvfp4Matmul&&) noexcept;
  Nvfp4Matmul& operator=(Nvfp4Matmul&&) noexcept;
  ~Nvfp4Matmul();

  // x: rows x in floats, row-major; y: rows x out floats. OpenMP over output columns (the calling
  // thread's team size). An unavailable kernel is an error.
  Status run(const float* x, int64_t rows, float* y, Nvfp4Kernel kernel = Nvfp4Kernel::Auto) const;

  int64_t out() const;
  int64_t in() const;
  // Bytes held: packed codes, block scales, the scale table and the bias.
  uint64_t bytes() const;

 struct Impl;  // opaque (public so that the kernels in the .cpp can name it)

 private:
  explicit Nvfp4Matmul(std::unique_ptr<Impl> impl);
  std::unique_ptr<Impl> impl_;
};

}  // namespace fp4c::runtime
