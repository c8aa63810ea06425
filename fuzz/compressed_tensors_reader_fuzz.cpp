// The compressed-tensors artifact reader (backends::compressed_tensors::ArtifactReader::open):
// config.json's quantization_config (NVFP4 W4A16/W4A4, MXFP4) and the artifact's safetensors checked
// against a reference model (fuzz/tiny_reference.h); every quantized Linear of an artifact that
// opens is dequantized from its packed bytes.
//
// Input parts (fuzz_support.h): 0 config.json; 1 model.safetensors (absent when the part is).
#include <cstddef>
#include <cstdint>

#include "backends/compressed_tensors/reader.h"
#include "fuzz_support.h"
#include "tiny_reference.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const auto& scratch = fp4c::fuzz::Scratch::get();
  const auto& reference = fp4c::fuzz::tiny_reference();
  const auto parts = fp4c::fuzz::split_parts(data, size, 2);
  const std::string dir = scratch.subdir("artifact");
  scratch.write("artifact/config.json", parts[0]);
  if (parts.size() > 1) scratch.write("artifact/model.safetensors", parts[1]);
  auto r = fp4c::backends::compressed_tensors::ArtifactReader::open(dir, reference);
  if (!r.ok()) return 0;
  for (fp4c::ir::TensorId id = 0; id < reference.tensors.size(); ++id)
    if (r->tensor(id).quantized) (void)r->dequantize(id, reference);
  return 0;
}
