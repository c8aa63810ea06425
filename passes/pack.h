// The pack pass: streams every tensor of the checkpoint once, in file order, into an artifact sink:
// NVFP4 Linears as packed codes, FP8 block scales and the fused group's global scale; MXFP4 Linears as
// packed codes and E8M0 block scales (formats/mxfp4.h's rule); the others as their source bytes. Weights are read through the mapping and released behind it, so memory stays
// bounded by the largest fused group, not the model.
#pragma once

#include <cstdint>
#include <optional>
#include <span>
#include <vector>

#include "formats/hash.h"
#include "formats/nvfp4.h"
#include "formats/nvfp4_rules.h"
#include "formats/safetensors.h"
#include "ir/artifact.h"
#include "base/expected.h"
#include "ir/model.h"
#include "passes/quantizers.h"
#include "passes/stats.h"

namespace fp4c::passes {

struct PackOptions {
  nvfp4::ZeroScale zero_scale = nvfp4::ZeroScale::CompressedTensors;
  uint64_t copy_chunk_bytes = 64ull << 20;   // pass-through tensors are copied and released in chunks
  uint64_t read_ahead_bytes = 256ull << 20;  // how far the read-ahead thread may run ahead
  // How every NVFP4 Linear is quantized, unless model.annotations.quantizer names another for it (auto).
  Quantizer quantizer;
  // For the quantizers that need them (weighted, localhessian, gptq): each Linear's input statistics.
  const ActivationStats* stats = nullptr;
};

struct PackResult {
  // XXH3-128 of each checkpoint file, in checkpoint.files() order, computed while streaming.
  std::vector<hash::Digest> input_file_hashes;
  uint64_t bytes_read = 0;
};

// Needs model.annotations.decision (plan_weights). Writes model.annotations.packed.
// `refs[id]` is where tensor `id` lives; model tensors must be in (file, offset) order, as the
// frontend gives them. Errors: NaN or Inf in a weight (naming tensor, count, file and offset), or
// whatever the sink reports.
Expected<PackResult> pack_weights(ir::Model& model, const safetensors::Checkpoint& checkpoint,
                                  std::span<const safetensors::Checkpoint::Ref> refs,
                                  ir::ArtifactSink& sink, const PackOptions& options = {});

}  // namespace fp4c::passes
