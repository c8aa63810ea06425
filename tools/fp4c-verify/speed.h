// The speed and memory section of fp4c-verify, measured through a runtime::PerfDevice (runtime/perf.h):
// the device's ceilings; every distinct shape of the artifact's NVFP4 Linears at decode (M = 1, 8, 32)
// and prefill (M = 512, 2048) sizes, BF16 against NVFP4 (W4A4 when the artifact is); the two serving
// decision cases with the BF16 reference and with the artifact side by side. Every figure carries the
// device and the FP4 path it was measured with.
#pragma once

#include <cstdint>
#include <functional>
#include <string>
#include <vector>

#include "backends/compressed_tensors/reader.h"
#include "frontend/checkpoint.h"
#include "base/expected.h"
#include "manifest.pb.h"
#include "runtime/perf.h"

namespace fp4c::verify {

struct SpeedOptions {
  int batch = 1;
  int repetitions = 10;
  std::vector<int64_t> decode_m{1, 8, 32}, prefill_m{512, 2048};
  // Empty: the two decision cases, steady-512-output-128 and prefill-2048-output-128, at `batch`.
  std::vector<runtime::ServingSpec> serving;
  std::function<void(const std::string&)> progress;   // may be empty: told what is measured next
};

// One distinct Linear shape of the artifact's NVFP4 Linears, with the roles that have it.
struct LinearShape {
  int64_t n = 0, k = 0;                 // out_features, in_features
  std::vector<std::string> roles;       // e.g. {"q", "o"}
};
std::vector<LinearShape> nvfp4_linear_shapes(const ir::Model& reference,
                                             const backends::compressed_tensors::ArtifactReader& artifact);

// "cpu: <model> (N threads)" or "cuda <name> (sm_90, N SMs)".
std::string device_label(const runtime::DeviceInfo& info);

std::vector<runtime::ServingSpec> decision_cases(int batch);

Expected<manifest::Performance> measure_performance(runtime::PerfDevice& device,
                                                    const frontend::LoadedCheckpoint& reference,
                                                    const backends::compressed_tensors::ArtifactReader& artifact,
                                                    const SpeedOptions& options);

}  // namespace fp4c::verify
