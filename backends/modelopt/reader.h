// Reads a ModelOpt NVFP4 artifact (NVFP4.md §5) back against its reference model, into the same
// ArtifactReader the compressed-tensors layout gives: global scales as G = 1/weight_scale_2 and
// Gx = 1/input_scale, dequantization as ModelOpt defines it (fp4 * weight_scale * weight_scale_2).
#pragma once

#include <string>

#include "backends/compressed_tensors/reader.h"

namespace fp4c::backends::modelopt {

// Checks hf_quant_config.json (producer, quant_algo NVFP4 or W4A16_NVFP4, group_size 16, and the
// kv_cache_quant_algo and exclude_modules vLLM requires), then every tensor (names, dtypes, shapes,
// 0-dim F32 weight_scale_2 and, for NVFP4, input_scale). Errors name the file and the field or tensor.
Expected<compressed_tensors::ArtifactReader> open(const std::string& dir, const ir::Model& reference);

}  // namespace fp4c::backends::modelopt
