#include "checkpoint_writer.h"

#include <future>
#include <vector>

#include "formats/safetensors.h"
#include "sharding.h"

namespace fp4c::synth {

namespace {

// 8 MiB of BF16 per chunk: large enough for the threads and the disk, small enough for the cache.
constexpr size_t kChunkElements = size_t(4) << 20;

// Two buffers: one is filled while the other is in Writer::write on a helper thread.
class ChunkPipeline {
 public:
  ChunkPipeline() : buffers_{std::vector<uint16_t>(kChunkElements), std::vector<uint16_t>(kChunkElements)} {}
  ~ChunkPipeline() { (void)drain(); }

  uint16_t* buffer() { return buffers_[current_].data(); }

  // Hands the first n elements of buffer() to the writer; buffer() is then the other one.
  Status submit(safetensors::Writer& writer, size_t n) {
    FP4C_TRY(drain());
    const auto* bytes = reinterpret_cast<const std::byte*>(buffers_[current_].data());
    pending_ = std::async(std::launch::async, [&writer, bytes, n] {
      return writer.write(std::span<const std::byte>(bytes, n * sizeof(uint16_t)));
    });
    current_ ^= 1;
    return {};
  }

  Status drain() {
    if (!pending_.valid()) return {};
    return pending_.get();
  }

 private:
  std::vector<uint16_t> buffers_[2];
  int current_ = 0;
  std::future<Status> pending_;
};

Status write_shard(const std::string& path, const std::vector<PlannedTensor>& plan, const Shard& shard,
                   const WeightOptions& opts, const std::vector<int64_t>& hidden_outliers,
                   const std::atomic<bool>& cancel) {
  std::vector<safetensors::TensorSpec> specs;
  for (size_t i : shard.tensors) specs.push_back({plan[i].name, DType::BF16, plan[i].shape});
  FP4C_ASSIGN(auto writer, safetensors::Writer::create(path, std::move(specs), {{"format", "pt"}}));
  ChunkPipeline pipeline;  // declared after the writer: finishes its write before the writer goes
  for (size_t i : shard.tensors) {
    const TensorSource source(plan[i], opts, hidden_outliers);
    const auto n = uint64_t(plan[i].numel());
    for (uint64_t begin = 0; begin < n; begin += kChunkElements) {
      if (cancel.load(std::memory_order_relaxed)) return make_error("interrupted");
      const uint64_t end = std::min<uint64_t>(n, begin + kChunkElements);
      source.fill(begin, end, pipeline.buffer());
      FP4C_TRY(pipeline.submit(writer, size_t(end - begin)));
    }
  }
  FP4C_TRY(pipeline.drain());
  return writer.finish();
}

}  // namespace

Expected<WriteSummary> write_weights(const std::string& dir, const ModelSpec& spec,
                                     const WeightOptions& opts, uint64_t max_shard_size,
                                     const std::atomic<bool>& cancel) {
  const std::vector<PlannedTensor> plan = plan_tensors(spec);
  const std::vector<Shard> shards = plan_shards(plan, max_shard_size);
  const std::vector<int64_t> hidden_outliers = hidden_outlier_channels(opts, spec.preset.hidden_size);
  WriteSummary summary;
  safetensors::Index index;
  for (const Shard& shard : shards) {
    FP4C_TRY(write_shard(dir + "/" + shard.file, plan, shard, opts, hidden_outliers, cancel));
    for (size_t i : shard.tensors) index.weight_map[plan[i].name] = shard.file;
    summary.tensor_bytes += shard.nbytes;
  }
  summary.tensors = plan.size();
  summary.files = shards.size();
  if (shards.size() > 1)
    FP4C_TRY(safetensors::write_index(dir + "/model.safetensors.index.json", index, summary.tensor_bytes));
  return summary;
}

}  // namespace fp4c::synth
