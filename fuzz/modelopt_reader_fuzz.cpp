// The ModelOpt artifact reader (backends::modelopt::open): hf_quant_config.json (producer,
// quant_algo, group_size, kv_cache_quant_algo, exclude_modules) and the artifact's safetensors
// (packed codes, block scales, 0-dim weight_scale_2 and input_scale) checked against a reference
// model (fuzz/tiny_reference.h); every quantized Linear of an artifact that opens is dequantized.
//
// Input parts (fuzz_support.h): 0 hf_quant_config.json; 1 model.safetensors; 2 config.json (absent
// when the part is).
#include <cstddef>
#include <cstdint>

#include "backends/modelopt/reader.h"
#include "fuzz_support.h"
#include "tiny_reference.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const auto& scratch = fp4c::fuzz::Scratch::get();
  const auto& reference = fp4c::fuzz::tiny_reference();
  const auto parts = fp4c::fuzz::split_parts(data, size, 3);
  const std::string dir = scratch.subdir("artifact");
  scratch.write("artifact/hf_quant_config.json", parts[0]);
  if (parts.size() > 1) scratch.write("artifact/model.safetensors", parts[1]);
  if (parts.size() > 2) scratch.write("artifact/config.json", parts[2]);
  auto r = fp4c::backends::modelopt::open(dir, reference);
  if (!r.ok()) return 0;
  for (fp4c::ir::TensorId id = 0; id < reference.tensors.size(); ++id)
    if (r->tensor(id).quantized) (void)r->dequantize(id, reference);
  return 0;
}
