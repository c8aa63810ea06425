#include "checkpoint_writer.h"

#include <algorithm>
#include <memory>
#include <vector>

#include "formats/safetensors.h"
#include "sharding.h"

namespace fp4c::synth {

namespace {

// 32 MiB of BF16 per chunk. A chunk may hold pieces of several tensors (norms and biases are
// small), so the threads meet at a barrier only once per 32 MiB: OpenMP threads spin while they
// wait, which costs dearly when other processes share the cores.
constexpr size_t kChunkElements = size_t(16) << 20;
constexpr uint64_t kPiece = 65536;  // the unit of work shared out among the threads

// Streams tensors into a writer with exactly the OpenMP team's threads (no helper thread to
// oversubscribe the cores): while one thread writes chunk k, the others generate chunk k+1, and the
// writing thread joins them when it is done.
class ChunkPipeline {
 public:
  explicit ChunkPipeline(safetensors::Writer& writer, const std::atomic<bool>& cancel)
      : writer_(writer), cancel_(cancel) {
    for (auto& b : buffers_) b = std::make_unique_for_overwrite<uint16_t[]>(kChunkElements);
  }

  // Queues all of source's elements, generating and writing every chunk that fills up.
  Status add(std::shared_ptr<const TensorSource> source, uint64_t numel) {
    for (uint64_t begin = 0; begin < numel;) {
      const uint64_t end = std::min<uint64_t>(numel, begin + (kChunkElements - filled_));
      for (uint64_t lo = begin; lo < end; lo += kPiece)
        pieces_.push_back({source.get(), lo, std::min(end, lo + kPiece), filled_ + size_t(lo - begin)});
      sources_.push_back(source);
      filled_ += size_t(end - begin);
      begin = end;
      if (filled_ == kChunkElements) FP4C_TRY(step());
    }
    return {};
  }

  Status finish() {
    if (filled_ > 0) FP4C_TRY(step());
    FP4C_TRY(write_pending());
    return writer_.finish();
  }

 private:
  struct Piece {
    const TensorSource* source;
    uint64_t begin, end;  // elements of the source
    size_t out;           // offset in the chunk
  };

  Status step() {
    if (cancel_.load(std::memory_order_relaxed)) return make_error("interrupted");
    uint16_t* out = buffers_[current_].get();
    const auto n = int64_t(pieces_.size());
    Status written;
#pragma omp parallel
    {
#pragma omp single nowait
      written = write_pending();
#pragma omp for schedule(dynamic, 1)
      for (int64_t k = 0; k < n; ++k) {
        const Piece& p = pieces_[size_t(k)];
        p.source->fill(p.begin, p.end, out + p.out);
      }
    }
    pending_ = filled_;
    filled_ = 0;
    current_ ^= 1;
    pieces_.clear();
    sources_.clear();
    return written;
  }

  Status write_pending() {
    if (pending_ == 0) return {};
    const auto* bytes = reinterpret_cast<const std::byte*>(buffers_[current_ ^ 1].get());
    const size_t n = pending_;
    pending_ = 0;
    return writer_.write(std::span<const std::byte>(bytes, n * sizeof(uint16_t)));
  }

  safetensors::Writer& writer_;
  const std::atomic<bool>& cancel_;
  std::unique_ptr<uint16_t[]> buffers_[2];
  int current_ = 0;      // the buffer being assembled
  size_t filled_ = 0;    // elements of it queued
  size_t pending_ = 0;   // elements of the other buffer not yet written
  std::vector<Piece> pieces_;
  std::vector<std::shared_ptr<const TensorSource>> sources_;  // alive until their pieces are made
};

Status write_shard(const std::string& path, const std::vector<PlannedTensor>& plan, const Shard& shard,
                   const WeightOptions& opts, const std::vector<int64_t>& hidden_outliers,
                   const std::atomic<bool>& cancel) {
  std::vector<safetensors::TensorSpec> specs;
  for (size_t i : shard.tensors) specs.push_back({plan[i].name, DType::BF16, plan[i].shape});
  FP4C_ASSIGN(auto writer, safetensors::Writer::create(path, std::move(specs), {{"format", "pt"}}));
  ChunkPipeline pipeline(writer, cancel);
  for (size_t i : shard.tensors)
    FP4C_TRY(pipeline.add(std::make_shared<const TensorSource>(plan[i], opts, hidden_outliers),
                          uint64_t(plan[i].numel())));
  return pipeline.finish();
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
