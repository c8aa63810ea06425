// How an NVFP4 Linear's parts are named and stored in a Hugging Face layout. compressed-tensors
// (NVFP4.md §4) and ModelOpt (§5) hold the same packed codes and block scales; they differ only in the
// names of the parts and in the global scales: compressed-tensors stores G and Gx as [1] tensors,
// ModelOpt their reciprocals 1/G (`weight_scale_2`) and 1/Gx (`input_scale`) as 0-dim tensors.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

namespace fp4c::backends {

struct QuantizedNames {
  std::string layout;                 // for messages: "compressed-tensors", "modelopt"
  std::string packed;                 // suffixes appended to the module name
  std::string block_scales;
  std::string weight_global;
  std::string input_global;
  std::vector<int64_t> global_shape;  // shape of the two global-scale tensors
  bool reciprocal_globals = false;    // stored value is 1/G, 1/Gx
};

inline QuantizedNames compressed_tensors_names() {
  return {"compressed-tensors", ".weight_packed", ".weight_scale", ".weight_global_scale", ".input_global_scale",
          {1}, false};
}

inline QuantizedNames modelopt_names() {
  return {"modelopt", ".weight", ".weight_scale", ".weight_scale_2", ".input_scale", {}, true};
}

}  // namespace fp4c::backends
