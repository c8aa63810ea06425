// Reads a compressed-tensors NVFP4 artifact back against the reference model it was made from: for
// every source tensor, where its bytes are (kept tensors) or its packed codes, block scales and
// global scales (NVFP4 Linears). Used by `fp4c eval` and the verifier.
#pragma once

#include <optional>
#include <string>
#include <vector>

#include "backends/quantized_names.h"
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
  float weight_global_scale = 1;             // G (ModelOpt: 1 / weight_scale_2, in float32)
  std::optional<float> input_global_scale;   // Gx (ModelOpt: 1 / input_scale, in float32)
  // ModelOpt: the stored weight_scale_2 (1/G); dequantize() multiplies by it, as ModelOpt defines.
  std::optional<float> weight_scale_2;
};

class ArtifactReader {
 public:
  // Opens dir's safetensors and checks them against `reference`: every source tensor is present
  // either as itself or as an NVFP4 Linear with the right dtypes and shapes; a W4A4 artifact
  // (config.json's quantization_config has input_activations) has an input global scale for every
  // quantized Linear. Errors name the artifact file and tensor.
  static Expected<ArtifactReader> open(const std::string& dir, const ir::Model& reference);
  // The same checks for a layout's names (backends/quantized_names.h): a Linear weight is NVFP4 when
  // its block scales are present, and then its packed codes and weight global scale must be too (and,
  // when `w4a4`, its input global scale). The ModelOpt reader calls it after reading its config.
  static Expected<ArtifactReader> open_tensors(const std::string& dir, const ir::Model& reference,
                                               const QuantizedNames& names, bool w4a4);
  const ArtifactTensor& tensor(ir::TensorId id) const { return tensors_[id]; }
  bool w4a4() const { return w4a4_; }
  const safetensors::Checkpoint& files() const { return files_; }
  const QuantizedNames& names() const { return names_; }
  // Dense float32 weight of a quantized Linear, dequantized from its packed bytes: fp4 * s / G, or
  // for ModelOpt fp4 * s * weight_scale_2 (fp4 * s is exact; one rounding).
  std::vector<float> dequantize(ir::TensorId id, const ir::Model& reference) const;

 private:
  safetensors::Checkpoint files_;
  std::vector<ArtifactTensor> tensors_;
  bool w4a4_ = false;
  QuantizedNames names_;
};

}  // namespace fp4c::backends::compressed_tensors
