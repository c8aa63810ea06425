// The CUDA runtime's entry points that need no kernel: whether there is a GPU, and what it is. cudart
// loads the driver lazily, so a machine without a driver or without a GPU shows up here as an error
// value from the first call, never as a crash.
#include "runtime/cuda/common.cuh"
#include "runtime/cuda/cuda_api.h"

namespace fp4c::runtime::cuda {

Expected<int> device_count() {
  int n = 0;
  const cudaError_t e = cudaGetDeviceCount(&n);
  if (e != cudaSuccess) {
    cudaGetLastError();  // clear the sticky-free error so later calls start clean
    return cuda_error("no usable CUDA device", e);
  }
  if (n <= 0) return make_error("no usable CUDA device: cudaGetDeviceCount found none");
  return n;
}

Expected<DeviceDescription> select_device(int device) {
  FP4C_ASSIGN(const int n, device_count());
  if (device < 0 || device >= n)
    return make_error("CUDA device " + std::to_string(device) + " does not exist (" + std::to_string(n) + " visible)");
  FP4C_CUDA_TRY("cudaSetDevice(" + std::to_string(device) + ")", cudaSetDevice(device));
  cudaDeviceProp prop{};
  FP4C_CUDA_TRY("cudaGetDeviceProperties(" + std::to_string(device) + ")", cudaGetDeviceProperties(&prop, device));
  return DeviceDescription{prop.name, prop.major * 10 + prop.minor, prop.multiProcessorCount};
}

std::string device_label(int device, const DeviceDescription& d) {
  return "cuda:" + std::to_string(device) + " " + d.name + " (sm_" + std::to_string(d.sm) + ")";
}

bool built() { return true; }

}  // namespace fp4c::runtime::cuda
