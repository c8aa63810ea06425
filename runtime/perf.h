// Speed and memory of a device, measured in the run that reports them: the device's ceilings, the
// matrix multiplies of a model's Linear shapes (BF16 against NVFP4), and the two serving decision cases
// (steady-512-output-128, prefill-2048-output-128) with a BF16 model and with an artifact. Implemented
// for the CPU (runtime/perf_cpu.cpp) and for CUDA (runtime/cuda/); fp4c-verify reports both the same way.
#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "base/expected.h"
#include "ir/model.h"
#include "runtime/weights.h"

namespace fp4c::runtime {

struct DeviceInfo {
  std::string kind;                 // "cpu" or "cuda"
  std::string name;                 // the CPU model or the GPU's name
  int compute_capability = 0;       // CUDA: 90, 100, ...; CPU: 0
  int threads = 0;                  // CPU: threads used; CUDA: multiprocessors
  // How NVFP4 products run here: "native" (block-scaled FP4 tensor cores), "emulated" (the same numbers
  // without FP4 hardware) or, on the CPU, "fused-dequant" (packed bytes decoded inside the kernel).
  std::string fp4_path;
  uint64_t memory_total = 0, memory_free = 0;   // bytes (CPU: MemTotal, MemAvailable)
};

// Ceilings measured in the same run, for the figures to be read against.
struct Ceilings {
  double bandwidth_gbs = 0;         // streaming read bandwidth of device memory, GB/s (1e9 B/s)
  double bf16_tflops = 0;           // dense BF16 GEMM (FP32 accumulation) on a large square problem
  double fp4_tflops = 0;            // native NVFP4 GEMM where the device has one; 0 otherwise
  std::string how;                  // what was run to measure them
};

// y[m, n] = x[m, k] . W[n, k]^T with random weights and inputs (fresh seed each run).
struct MatmulCase {
  int64_t m = 0, n = 0, k = 0;
  bool w4a4 = false;                // NVFP4 activations too (quantized in blocks of 16 as a serving engine does)
};

struct MatmulFigures {
  MatmulCase shape;
  int repetitions = 0;
  double bf16_seconds = 0, fp4_seconds = 0;   // medians over the repetitions
  // Bytes moved (weights as stored + x + y) over time, and 2mnk over time.
  double bf16_gbs = 0, fp4_gbs = 0;
  double bf16_tflops = 0, fp4_tflops = 0;
  std::string fp4_path;             // as DeviceInfo::fp4_path, for this product
};

struct ServingSpec {
  std::string name;                 // "steady-512-output-128" or "prefill-2048-output-128"
  int64_t prompt = 512;             // prompt tokens per request
  int64_t output = 128;             // generated tokens per request (greedy)
  int batch = 1;                    // requests run together
};

struct ServingFigures {
  ServingSpec spec;
  double ttft_seconds = 0;          // prefill of every prompt of the batch to its first token
  double decode_p50_seconds = 0, decode_p95_seconds = 0, decode_p99_seconds = 0;  // per decode step
  double tokens_per_second = 0;     // generated tokens of the batch / whole run
  double requests_per_second = 0;   // batch / whole run
  uint64_t memory_used = 0;         // device memory in use at the peak (CPU: the process's peak RSS)
  uint64_t memory_free = 0;         // device memory left then (CPU: MemAvailable)
  uint64_t weight_bytes = 0;        // of the weights as the device holds them
  uint64_t kv_cache_bytes = 0;      // of the batch's KV cache at its longest
};

class PerfDevice {
 public:
  virtual ~PerfDevice() = default;
  virtual DeviceInfo info() const = 0;
  virtual Expected<Ceilings> ceilings() = 0;
  // The BF16 product and the NVFP4 one of one shape, each timed `repetitions` times after a warm-up.
  virtual Expected<MatmulFigures> matmul(const MatmulCase& shape, int repetitions) = 0;
  // Greedy generation of spec.batch requests of random prompt ids with `weights` (a BF16 checkpoint,
  // or an artifact whose NVFP4 Linears carry LinearParams::packed; W4A4 when their input global scale
  // is set), timed as described by ServingFigures.
  virtual Expected<ServingFigures> serve(WeightSource& weights, const ir::ModelConfig& config, const ServingSpec& spec) = 0;
};

// "cpu", "cuda" or "cuda:N". CUDA without a usable GPU, or in a build without CUDA, is an error saying so.
Expected<std::unique_ptr<PerfDevice>> make_perf_device(const std::string& device, int threads);

}  // namespace fp4c::runtime
