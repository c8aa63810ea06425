// The CUDA entry points in a build without CUDA (FP4C_CUDA off): every request for a GPU is a clear
// error. A CUDA build compiles runtime/cuda/ instead of this file.
#ifndef FP4C_WITH_CUDA

#include "runtime/cuda/cuda_api.h"

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

}  // namespace fp4c::runtime::cuda

#endif
