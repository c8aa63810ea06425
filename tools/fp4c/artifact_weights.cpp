#include "tools/fp4c/artifact_weights.h"

namespace fp4c::tools {

detail::ArtifactRefs ArtifactWeights::refs_for(const ir::Model& reference,
                                               const backends::compressed_tensors::ArtifactReader& artifact) {
  detail::ArtifactRefs r;
  for (ir::TensorId id = 0; id < reference.tensors.size(); ++id) {
    const auto& t = artifact.tensor(id);
    // A quantized Linear's ref points at its packed codes; read_weight() never reads them as floats.
    r.refs.push_back(t.quantized ? *t.packed : *t.source);
  }
  return r;
}

ArtifactWeights::ArtifactWeights(const ir::Model& reference,
                                 const backends::compressed_tensors::ArtifactReader& artifact)
    : detail::ArtifactRefs(refs_for(reference, artifact)),
      runtime::CheckpointWeights(reference, detail::ArtifactRefs::refs, /*release_pages=*/false),
      reference_(reference),
      artifact_(artifact) {}

Expected<std::vector<float>> ArtifactWeights::read_weight(ir::TensorId id, bool release) const {
  if (artifact_.tensor(id).quantized) return artifact_.dequantize(id, reference_);
  return runtime::CheckpointWeights::read_weight(id, release);
}

std::optional<float> ArtifactWeights::input_global_scale(ir::TensorId id) const {
  return artifact_.tensor(id).input_global_scale;
}

}  // namespace fp4c::tools
