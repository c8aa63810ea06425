#include "runtime/device.h"

#include <charconv>

#include "runtime/cuda/cuda_api.h"

namespace fp4c::runtime {

namespace {

// "cuda" -> 0, "cuda:N" -> N; anything else is not a CUDA device.
Expected<int> cuda_index(const std::string& device) {
  if (device == "cuda") return 0;
  int n = -1;
  const char* b = device.data() + 5;
  const char* e = device.data() + device.size();
  if (device.size() > 5 && device.compare(0, 5, "cuda:") == 0) {
    auto [p, ec] = std::from_chars(b, e, n);
    if (ec == std::errc() && p == e && n >= 0) return n;
  }
  return make_error("unknown device '" + device + "' (expected cpu, cuda or cuda:N)");
}

Expected<int> usable_cuda_device(const std::string& device) {
  FP4C_ASSIGN(const int index, cuda_index(device));
  FP4C_ASSIGN(const int count, cuda::device_count());
  if (index >= count)
    return make_error("device " + device + ": " + std::to_string(count) + " CUDA device" + (count == 1 ? "" : "s") +
                      " visible");
  return index;
}

}  // namespace

Expected<std::unique_ptr<Engine>> make_engine(const std::string& device, const ir::ModelConfig& config,
                                              const ForwardOptions& options) {
  if (device == "cpu") return std::unique_ptr<Engine>(std::make_unique<Forward>(config, options));
  FP4C_ASSIGN(const int index, usable_cuda_device(device));
  return cuda::make_engine(index, config, options);
}

std::string cuda_status() {
  auto n = cuda::device_count();
  if (!n) return n.error().message;
  return std::to_string(*n) + " CUDA device" + (*n == 1 ? "" : "s");
}

}  // namespace fp4c::runtime
