// Reads a compressed-tensors NVFP4 artifact back against the reference model it was made from: for
// every source tensor, where its bytes are (kept tensors) or its packed codes, block scales and
// global scales (NVFP4 Linears). Used by `fp4c eval` and the verifier.
#pragma once

#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "backends/quantized_names.h"
#include "formats/safetensors.h"
#include "base/expected.h"
#include "ir/model.h"

namespace fp4c::backends::compressed_tensors {

struct ArtifactTensor {
  bool quantized = false;
  // Kept tensors: the tensor as stored (same name as in the source).
  std::optional<safetensors::Checkpoint::Ref> source;
  // NVFP4 Linears.
  std::optional<safetensors::Checkpoint::Ref> packed, scales;
  bool mxfp4 = false;                        // MXFP4 (E8M0 U8 scales [out, in/32], no global scales)
  bool input_mxfp4 = false;                  // MXFP4 W4A4: inputs quantized per block at run time
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
  // quantized Linear. An MXFP4 artifact (quantization_config's format mxfp4-pack-quantized) has
  // weight_packed U8 [out, in/2] and weight_scale U8 [out, in/32] per quantized Linear, no global
  // scales. Errors name the artifact file and tensor. A Linear the reference holds as a row slice of a fused
  // tensor (ir::TensorInfo::stored_in) is read from that fused tensor's rows, its global scales the fused one's.
  static Expected<ArtifactReader> open(const std::string& dir, const ir::Model& reference);
  // The same checks for a layout's names (backends/quantized_names.h): a Linear weight is NVFP4 when
  // its block scales are present, and then its packed codes and weight global scale must be too (and,
  // when `w4a4`, its input global scale). The ModelOpt reader calls it after reading its config.
  static Expected<ArtifactReader> open_tensors(const std::string& dir, const ir::Model& reference,
                                               const QuantizedNames& names, bool w4a4, bool mxfp4 = false);
  const ArtifactTensor& tensor(ir::TensorId id) const { return tensors_[id]; }
  bool w4a4() const { return w4a4_; }
  bool mxfp4() const { return mxfp4_; }
  const safetensors::Checkpoint& files() const { return files_; }
  const QuantizedNames& names() const { return names_; }
  // Dense float32 weight of a quantized Linear, dequantized from its packed bytes: fp4 * s / G, or
  // for ModelOpt fp4 * s * weight_scale_2 (fp4 * s is exact; one rounding); MXFP4: fp4 * 2^(s - 127).
  std::vector<float> dequantize(ir::TensorId id, const ir::Model& reference) const;

 private:
  safetensors::Checkpoint files_;
  std::vector<ArtifactTensor> tensors_;
  // Row slices of fused tensors (Phi-3's qkv_proj): each member's rows of the fused packed codes, scales or
  // kept weight, which its refs point to.
  std::vector<std::unique_ptr<safetensors::TensorEntry>> slices_;
  bool w4a4_ = false;
  bool mxfp4_ = false;
  QuantizedNames names_;
};

}  // namespace fp4c::backends::compressed_tensors
