// The CUDA entry points in a build without CUDA (FP4C_CUDA off): every request for a GPU is a clear
// error. A CUDA build compiles runtime/cuda/ instead of this file.
#ifndef FP4C_WITH_CUDA

#include "runtime/cuda/cuda_api.h"
#include "runtime/cuda/kernel_checks.h"

namespace fp4c::runtime::cuda {

namespace {
const char* const kAbsent = "this fp4c was built without CUDA (configure with -DFP4C_CUDA=ON and nvcc on PATH)";
}

Expected<int> device_count() { return make_error(kAbsent); }
Expected<std::unique_ptr<Engine>> make_engine(int, const ir::ModelConfig&, const ForwardOptions&) {
  return make_error(kAbsent);
}
Expected<std::unique_ptr<PerfDevice>> make_perf_device(int) { return make_error(kAbsent); }
bool built() { return false; }

namespace check {
Expected<std::vector<float>> fake_quantize(const std::vector<float>&, int64_t, int64_t, float) { return make_error(kAbsent); }
Expected<Fp4Activations> quantize_fp4(const std::vector<float>&, int64_t, int64_t, float) { return make_error(kAbsent); }
Expected<std::vector<float>> nvfp4_dequantize(const PackedNvfp4&, int64_t, int64_t) { return make_error(kAbsent); }
Expected<std::vector<float>> nvfp4_gemm(const std::vector<float>&, int64_t, const PackedNvfp4&, int64_t, int64_t,
                                        const std::vector<float>&, bool) {
  return make_error(kAbsent);
}
}  // namespace check

}  // namespace fp4c::runtime::cuda

#endif
