// The runtime's weights read from an fp4c artifact: kept tensors as stored, NVFP4 Linears
// dequantized from their packed bytes, with their input global scale for W4A4 activations.
#pragma once

#include <vector>

#include "backends/compressed_tensors/reader.h"
#include "runtime/checkpoint_weights.h"

namespace fp4c::pipeline {

namespace detail {
// Built before the CheckpointWeights base, which keeps a span over it.
struct ArtifactRefs {
  std::vector<safetensors::Checkpoint::Ref> refs;
};
}  // namespace detail

class ArtifactWeights : private detail::ArtifactRefs, public runtime::CheckpointWeights {
 public:
  // With `with_packed`, NVFP4 Linears carry their packed bytes too (LinearParams::packed), for an
  // engine that multiplies them directly.
  ArtifactWeights(const ir::Model& reference, const backends::compressed_tensors::ArtifactReader& artifact,
                  bool with_packed = false);

 protected:
  Expected<std::vector<float>> read_weight(ir::TensorId id, bool release) const override;
  std::optional<float> input_global_scale(ir::TensorId id) const override;
  bool input_mxfp4(ir::TensorId id) const override;
  std::optional<runtime::PackedNvfp4> packed(ir::TensorId id) const override;

 private:
  static detail::ArtifactRefs refs_for(const ir::Model& reference,
                                       const backends::compressed_tensors::ArtifactReader& artifact);
  const ir::Model& reference_;
  const backends::compressed_tensors::ArtifactReader& artifact_;
  bool with_packed_;
};

}  // namespace fp4c::pipeline
