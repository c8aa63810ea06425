// Picks the engine a command runs on: "cpu" (runtime::Forward) or "cuda" / "cuda:N" (runtime/cuda/).
// Asking for CUDA where there is no usable GPU, or in a build without CUDA, is an error that says
// which, never a crash.
#pragma once

#include <memory>
#include <string>

#include "base/expected.h"
#include "runtime/engine.h"
#include "runtime/forward.h"

namespace fp4c::runtime {

Expected<std::unique_ptr<Engine>> make_engine(const std::string& device, const ir::ModelConfig& config,
                                              const ForwardOptions& options);

std::string cuda_status();

}  // namespace fp4c::runtime
