// The compressed-tensors artifact (NVFP4.md §4), the layout vLLM loads as "nvfp4-pack-quantized"; MXFP4
// Linears (§6) as "mxfp4-pack-quantized": weight_packed U8 [out, in/2], weight_scale U8 (E8M0) [out, in/32].
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

namespace fp4c::backends::compressed_tensors {

// One tensor of the artifact and the source piece it holds.
struct PlannedTensor {
  std::string name;
  DType dtype;
  std::vector<int64_t> shape;
  ir::TensorId source;
  ir::TensorPart part;
  uint64_t nbytes = 0;
  size_t shard = 0;
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

// The module names compressed-tensors must leave alone: "lm_head" first, then every Linear kept in
// BF16, in model order.
std::vector<std::string> ignore_list(const ir::Model& model);

// Streams the pack pass's output into safetensors shards in `dir`, then the index. With
// plan.names.reciprocal_globals (ModelOpt) a global scale G arrives and 1/G is stored.
class Writer final : public ir::ArtifactSink {
 public:
  Writer(std::string dir, Plan plan);
  ~Writer() override;
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
