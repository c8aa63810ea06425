// The compressed-tensors artifact (NVFP4.md §4), the layout vLLM loads as "nvfp4-pack-quantized"; MXFP4
// Linears (§6) as "mxfp4-pack-quantized": weight_packed U8 [out, in/2], weight_scale U8 (E8M0) [out, in/32].
#pragma once

#include <string>
#include <vector>

#include "backends/artifact.h"
#include "backends/artifact_layout.h"
#include "ir/model.h"

namespace fp4c::backends::compressed_tensors {

// The module names compressed-tensors must leave alone: "lm_head" first, then every Linear kept in
// BF16, in model order.
std::vector<std::string> ignore_list(const ir::Model& model);

// Writes dir/config.json: the source config.json with its keys in their order, plus a
// `quantization_config` (keys sorted) for NVFP4 (or, with `mxfp4`, MXFP4: format mxfp4-pack-quantized)
// weights and, for W4A4, input activations.
Expected<WrittenFile> write_config(const std::string& source_config_path, const std::string& dir,
                                   const ir::Model& model, bool w4a4, bool mxfp4 = false);

// Writes dir/config.json: the source config.json with its keys in their order, plus
// `quantization_config` (given as serialized JSON text; its key order is kept).
Expected<WrittenFile> write_config_with(const std::string& source_config_path, const std::string& dir,
                                        const std::string& quantization_config);

}  // namespace fp4c::backends::compressed_tensors
