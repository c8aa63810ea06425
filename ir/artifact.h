// The seam between the pass that produces an artifact's bytes and the backend that lays them out.
#pragma once

#include <cstddef>
#include <cstdint>
#include <span>
#include <string_view>

#include "base/expected.h"
#include "ir/model.h"

namespace fp4c::ir {

// The pieces a source tensor becomes. A BF16-kept tensor is one Source part; an NVFP4 Linear is
// PackedWeight, BlockScales, WeightGlobalScale and, for W4A4, InputGlobalScale. Each backend names
// and places them in its own layout.
enum class TensorPart : uint8_t { Source, PackedWeight, BlockScales, WeightGlobalScale, InputGlobalScale };
std::string_view tensor_part_name(TensorPart p);

// Receives the parts of every tensor, in model tensor order and, within a tensor, in the order above.
// A part may arrive in several chunks (consecutive puts with the same id and part).
class ArtifactSink {
 public:
  virtual ~ArtifactSink() = default;
  virtual Status put(TensorId id, TensorPart part, std::span<const std::byte> bytes) = 0;
};

}  // namespace fp4c::ir
