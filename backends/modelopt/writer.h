// The ModelOpt Hugging Face layout (NVFP4.md §5), which TensorRT-LLM, vLLM (`modelopt_fp4`) and SGLang
// load: per NVFP4 Linear P, `P.weight` (U8 [out, in/2], the packed codes), `P.weight_scale` (F8_E4M3
// [out, in/16]), `P.weight_scale_2` (F32 [], 1/G) and, for W4A4, `P.input_scale` (F32 [], 1/Gx);
// `hf_quant_config.json` and its mirror in config.json's `quantization_config`.
//
// The packed codes and block scales are the compressed-tensors writer's bytes: the same plan_layout,
// Writer and pack pass, given LayoutOptions::names = modelopt_names() (backends/quantized_names.h).
#pragma once

#include <string>
#include <vector>

#include "backends/artifact.h"
#include "backends/compressed_tensors/writer.h"
#include "base/expected.h"
#include "ir/model.h"

namespace fp4c::backends::modelopt {

inline constexpr const char* kQuantConfigFile = "hf_quant_config.json";

// "lm_head" and every Linear kept in BF16, sorted (ModelOpt's `exclude_modules`).
std::vector<std::string> exclude_modules(const ir::Model& model);

// hf_quant_config.json's document: {"producer": {"name": "fp4c", "version": V}, "quantization":
// {"quant_algo": "NVFP4" (W4A4) or "W4A16_NVFP4", "kv_cache_quant_algo": null, "group_size": 16,
// "exclude_modules": [...]}}.
std::string hf_quant_config(const ir::Model& model, bool w4a4, const std::string& producer_version);

// Writes dir/hf_quant_config.json and dir/config.json: the source config.json plus a
// `quantization_config` holding the same document and "quant_method": "modelopt" (vLLM reads
// config.json's quantization_config first and picks `modelopt_fp4` from quant_method and quant_algo).
Expected<std::vector<WrittenFile>> write_configs(const std::string& source_config_path, const std::string& dir,
                                                 const ir::Model& model, bool w4a4,
                                                 const std::string& producer_version);

}  // namespace fp4c::backends::modelopt
