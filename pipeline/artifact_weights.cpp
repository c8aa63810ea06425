#include "pipeline/artifact_weights.h"

namespace fp4c::pipeline {

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
                                 const backends::compressed_tensors::ArtifactReader& artifact,
                                 bool with_packed)
    : detail::ArtifactRefs(refs_for(reference, artifact)),
      runtime::CheckpointWeights(reference, detail::ArtifactRefs::refs, /*release_pages=*/false),
      reference_(reference),
      artifact_(artifact),
      with_packed_(with_packed) {}

Expected<std::vector<float>> ArtifactWeights::read_weight(ir::TensorId id, bool release) const {
  if (artifact_.tensor(id).quantized) return artifact_.dequantize(id, reference_);
  return runtime::CheckpointWeights::read_weight(id, release);
}

std::optional<float> ArtifactWeights::input_global_scale(ir::TensorId id) const {
  return artifact_.tensor(id).input_global_scale;
}

bool ArtifactWeights::input_mxfp4(ir::TensorId id) const { return artifact_.tensor(id).input_mxfp4; }

std::optional<runtime::PackedNvfp4> ArtifactWeights::packed(ir::TensorId id) const {
  const auto& a = artifact_.tensor(id);
  if (!with_packed_ || !a.quantized || a.mxfp4) return std::nullopt;  // PackedNvfp4 is NVFP4 only
  runtime::PackedNvfp4 p;
  const auto codes = a.packed->file->bytes(*a.packed->entry);
  const auto scales = a.scales->file->bytes(*a.scales->entry);
  p.codes.assign(reinterpret_cast<const uint8_t*>(codes.data()), reinterpret_cast<const uint8_t*>(codes.data()) + codes.size());
  p.block_scales.assign(reinterpret_cast<const uint8_t*>(scales.data()),
                        reinterpret_cast<const uint8_t*>(scales.data()) + scales.size());
  p.global_scale = a.weight_global_scale;
  p.weight_scale_2 = a.weight_scale_2;
  return p;
}

}  // namespace fp4c::pipeline
