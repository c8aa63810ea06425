// The tensors of an artifact: which names, dtypes, shapes and shards it holds (the plan, from the IR's
// decisions alone), and the writer that streams the pack pass's bytes into safetensors shards. Both
// layouts fp4c writes share them; the names of the NVFP4 parts are the layout's (QuantizedNames:
// compressed-tensors' or ModelOpt's).
#pragma once

#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "backends/artifact.h"
#include "backends/quantized_names.h"
#include "formats/safetensors.h"
#include "ir/artifact.h"
#include "ir/model.h"

namespace fp4c::backends {

// One tensor of the artifact and the source piece it holds.
struct PlannedTensor {
  std::string name;
  DType dtype;
  std::vector<int64_t> shape;
  ir::TensorId source;
  ir::TensorPart part;
  uint64_t nbytes = 0;
  size_t shard = 0;
  // A fused tensor (ir::TensorInfo::stored_in): the part arrives from each member in turn, (member, bytes), and
  // is stored concatenated (rows in member order); with `shared_value` (the global scales, one per fused group)
  // every member sends the same value and it is stored once. Empty: the part of `source` alone.
  std::vector<std::pair<ir::TensorId, uint64_t>> pieces;
  bool shared_value = false;
};

struct PlannedShard {
  std::string file_name;
  uint64_t bytes = 0;   // tensor bytes
};

struct Plan {
  std::vector<PlannedTensor> tensors;   // in the order the pack pass produces them
  std::vector<PlannedShard> shards;
  bool write_index = false;
  QuantizedNames names;   // the layout's; the writer stores reciprocal global scales when it says so
  uint64_t total_bytes() const;
};

struct LayoutOptions {
  // Shard by size (HF naming model-0000i-of-0000N.safetensors); otherwise shard like the source.
  std::optional<uint64_t> max_shard_size;
  // For sharding like the source: the file name of each tensor's source shard, and whether the source
  // had an index.
  std::vector<std::string> source_file_of_tensor;
  bool source_sharded = false;
  // Names and storage of the NVFP4 parts; the ModelOpt backend gives its own (backends/modelopt).
  QuantizedNames names = compressed_tensors_names();
};

// The names, dtypes, shapes and shards of every artifact tensor, from the IR's decisions alone (no
// weight is read): what --dry-run reports and what the writer checks the bytes it receives against.
Plan plan_layout(const ir::Model& model, const LayoutOptions& options);

// Streams the pack pass's output into safetensors shards in `dir`, then the index. With
// plan.names.reciprocal_globals (ModelOpt) a global scale G arrives and 1/G is stored. The parts of a fused
// tensor's members are gathered in memory until the last member's arrive, then written as the fused tensors
// (an error if the members' global scales differ).
class ArtifactWriter final : public ir::ArtifactSink {
 public:
  ArtifactWriter(std::string dir, Plan plan);
  ~ArtifactWriter() override;
  Status put(ir::TensorId id, ir::TensorPart part, std::span<const std::byte> bytes) override;
  // Checks every planned byte arrived, closes the last shard and writes the index when sharded.
  Status finish();
  const std::vector<WrittenFile>& files() const { return files_; }
  const std::vector<WrittenTensor>& tensors() const { return written_; }
  uint64_t bytes_written() const { return bytes_written_; }
  const Plan& plan() const { return plan_; }

 private:
  Status open_shard(size_t shard);
  Status close_shard();
  Status write_planned(std::span<const std::byte> bytes);   // into plan_.tensors[cursor_]
  Status put_fused(ir::TensorId id, ir::TensorPart part, std::span<const std::byte> bytes);
  struct FusedPending {
    std::vector<std::byte> bytes;
    size_t piece = 0;         // the member piece expected next
    uint64_t in_piece = 0;    // its bytes received so far
  };
  std::vector<FusedPending> fused_;   // the fused block starting at cursor_, while it arrives
  std::string dir_;
  Plan plan_;
  size_t cursor_ = 0;          // the planned tensor receiving bytes
  uint64_t received_ = 0;      // bytes of it so far
  std::optional<size_t> open_shard_index_;
  std::unique_ptr<safetensors::Writer> shard_;
  hash::Hasher tensor_hash_;
  std::vector<WrittenFile> files_;
  std::vector<WrittenTensor> written_;
  uint64_t bytes_written_ = 0;
};

}  // namespace fp4c::backends
