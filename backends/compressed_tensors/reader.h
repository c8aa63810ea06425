// Reads a compressed-tensors NVFP4 artifact back against the reference model it was made from: for
// every source tensor, where its bytes are (kept tensors) or its packed codes, block scales and
// global scales (NVFP4 Linears). Used by `fp4c eval` and the verifier.
#pragma once

#include <optional>
#include <string>
#include <vector>

#include "formats/safetensors.h"
#include "ir/expected.h"
#include "ir/model.h"

namespace fp4c::backends::compressed_tensors {

struct ArtifactTensor {
  bool quantized = false;
  // Kept tensors: the tensor as stored (same name as in the source).
  std::optional<safetensors::Checkpoint::Ref> source;
  // NVFP4 Linears.
  std::optional<safetensors::Checkpoint::Ref> packed, scales;
  float weight_global_scale = 1;
  std::optional<float> input_global_scale;
};

class ArtifactReader {
 public:
  // Opens dir's safetensors and checks them against `reference`: every source tensor is present
  // either as itself or as an NVFP4 Linear with the right dtypes and shapes; a W4A4 artifact
  // (config.json's quantization_config has input_activations) has an input global scale for every
  // quantized Linear. Errors name the artifact file and tensor.
  static Expected<ArtifactReader> open(const std::string& dir, const ir::Model& reference);
  const ArtifactTensor& tensor(ir::TensorId id) const { return tensors_[id]; }
  bool w4a4() const { return w4a4_; }
  const safetensors::Checkpoint& files() const { return files_; }
  // Dense float32 weight of a quantized Linear, dequantized from its packed bytes.
  std::vector<float> dequantize(ir::TensorId id, const ir::Model& reference) const;

 private:
  safetensors::Checkpoint files_;
  std::vector<ArtifactTensor> tensors_;
  bool w4a4_ = false;
};

}  // namespace fp4c::backends::compressed_tensors
