// The CUDA runtime's entry points, as the rest of fp4c sees them (no CUDA header needed). In a build
// without CUDA (FP4C_CUDA off) they are defined by runtime/cuda_absent.cpp and return errors saying so.
#pragma once

#include <memory>
#include <string>

#include "base/expected.h"
#include "runtime/engine.h"
#include "runtime/forward.h"
#include "runtime/perf.h"

namespace fp4c::runtime::cuda {

// Number of usable GPUs, or an error naming why there is none (no driver, no device, ...).
Expected<int> device_count();
Expected<std::unique_ptr<Engine>> make_engine(int device, const ir::ModelConfig& config, const ForwardOptions& options);
Expected<std::unique_ptr<PerfDevice>> make_perf_device(int device);
bool built();

}  // namespace fp4c::runtime::cuda
