#include "backends/artifact_layout.h"

#include <cstdio>
#include <cstring>
#include <filesystem>
#include <map>

namespace fp4c::backends {
namespace fs = std::filesystem;

uint64_t Plan::total_bytes() const {
  uint64_t n = 0;
  for (const auto& t : tensors) n += t.nbytes;
  return n;
}

namespace {

uint64_t bytes_of(DType d, const std::vector<int64_t>& shape) {
  uint64_t n = dtype_size(d);
  for (int64_t s : shape) n *= uint64_t(s);
  return n;
}

void add(std::vector<PlannedTensor>& out, std::string name, DType d, std::vector<int64_t> shape,
         ir::TensorId id, ir::TensorPart part) {
  const uint64_t n = bytes_of(d, shape);
  out.push_back({std::move(name), d, std::move(shape), id, part, n, 0});
}

std::string shard_name(size_t i, size_t n) {
  if (n == 1) return "model.safetensors";
  char buf[64];
  std::snprintf(buf, sizeof buf, "model-%05zu-of-%05zu.safetensors", i + 1, n);
  return buf;
}

// The members of the fused tensor whose first slice is `first`: the consecutive slices of the same tensor.
std::vector<ir::TensorId> fused_members(const ir::Model& model, ir::TensorId first) {
  std::vector<ir::TensorId> out;
  for (ir::TensorId j = first; j < model.tensors.size(); ++j) {
    const auto& s = model.tensors[j].stored_in;
    if (!s || s->tensor != model.tensors[first].stored_in->tensor || (j > first && s->row_begin == 0)) break;
    out.push_back(j);
  }
  return out;
}

void plan_fused(Plan& plan, const ir::Model& model, ir::TensorId first, const QuantizedNames& n) {
  const ir::TensorInfo& t = model.tensors[first];
  const std::vector<ir::TensorId> members = fused_members(model, first);
  const ir::Decision& d = model.annotations.decision[first];
  const int64_t rows = t.stored_in->rows_total, in = t.shape[1];
  const std::string& module = t.stored_in->module;
  // One planned tensor whose pieces are every member's `part`, each `row_bytes` per row (or one shared value).
  const auto fused = [&](std::string name, DType dt, std::vector<int64_t> shape, ir::TensorPart part,
                         uint64_t row_bytes, bool shared) {
    add(plan.tensors, std::move(name), dt, std::move(shape), first, part);
    PlannedTensor& pt = plan.tensors.back();
    pt.shared_value = shared;
    for (ir::TensorId m : members)
      pt.pieces.emplace_back(m, shared ? pt.nbytes : uint64_t(model.tensors[m].shape[0]) * row_bytes);
  };
  if (d.format == ir::Format::MXFP4) {
    fused(module + n.packed, DType::U8, {rows, in / 2}, ir::TensorPart::PackedWeight, uint64_t(in / 2), false);
    fused(module + n.block_scales, DType::U8, {rows, in / 32}, ir::TensorPart::BlockScales, uint64_t(in / 32), false);
  } else if (d.format == ir::Format::NVFP4) {
    fused(module + n.packed, DType::U8, {rows, in / 2}, ir::TensorPart::PackedWeight, uint64_t(in / 2), false);
    fused(module + n.block_scales, DType::F8_E4M3, {rows, in / 16}, ir::TensorPart::BlockScales, uint64_t(in / 16), false);
    fused(module + n.weight_global, DType::F32, n.global_shape, ir::TensorPart::WeightGlobalScale, 0, true);
    if (d.input_amax)
      fused(module + n.input_global, DType::F32, n.global_shape, ir::TensorPart::InputGlobalScale, 0, true);
  } else {
    fused(t.stored_in->tensor, t.kept_dtype(), {rows, in}, ir::TensorPart::Source,
          uint64_t(in) * dtype_size(t.kept_dtype()), false);
  }
}

}  // namespace

Plan plan_layout(const ir::Model& model, const LayoutOptions& options) {
  Plan plan;
  plan.names = options.names;
  // Per source tensor, the artifact tensors it becomes (they always share a shard).
  std::vector<std::pair<size_t, size_t>> ranges;
  for (ir::TensorId id = 0; id < model.tensors.size(); ++id) {
    const ir::TensorInfo& t = model.tensors[id];
    const size_t first = plan.tensors.size();
    if (t.stored_in) {
      // A fused tensor, planned at its first slice with the decision of that slice (a fused group is quantized
      // or kept as a whole: FusedWithSkipped, one input scale); the other slices plan nothing of their own.
      if (t.stored_in->row_begin == 0) plan_fused(plan, model, id, options.names);
      ranges.emplace_back(first, plan.tensors.size());
      continue;
    }
    if (model.annotations.decision[id].format == ir::Format::MXFP4) {
      // compressed-tensors' mxfp4-pack-quantized: E8M0 scales as U8, no global scales.
      const int64_t out = t.shape[0], in = t.shape[1];
      const QuantizedNames& n = options.names;
      add(plan.tensors, t.module + n.packed, DType::U8, {out, in / 2}, id, ir::TensorPart::PackedWeight);
      add(plan.tensors, t.module + n.block_scales, DType::U8, {out, in / 32}, id, ir::TensorPart::BlockScales);
    } else if (model.annotations.decision[id].format == ir::Format::NVFP4) {
      const int64_t out = t.shape[0], in = t.shape[1];
      const QuantizedNames& n = options.names;
      add(plan.tensors, t.module + n.packed, DType::U8, {out, in / 2}, id, ir::TensorPart::PackedWeight);
      add(plan.tensors, t.module + n.block_scales, DType::F8_E4M3, {out, in / 16}, id, ir::TensorPart::BlockScales);
      add(plan.tensors, t.module + n.weight_global, DType::F32, n.global_shape, id, ir::TensorPart::WeightGlobalScale);
      if (model.annotations.decision[id].input_amax)
        add(plan.tensors, t.module + n.input_global, DType::F32, n.global_shape, id, ir::TensorPart::InputGlobalScale);
    } else {
      add(plan.tensors, t.name, t.kept_dtype(), t.shape, id, ir::TensorPart::Source);
    }
    ranges.emplace_back(first, plan.tensors.size());
  }

  if (options.max_shard_size) {
    // Greedy by size in production order; a source tensor's pieces never straddle shards.
    size_t shard = 0;
    uint64_t filled = 0;
    for (auto [b, e] : ranges) {
      uint64_t n = 0;
      for (size_t i = b; i < e; ++i) n += plan.tensors[i].nbytes;
      if (filled > 0 && filled + n > *options.max_shard_size) {
        ++shard;
        filled = 0;
      }
      for (size_t i = b; i < e; ++i) plan.tensors[i].shard = shard;
      filled += n;
    }
    const size_t count = plan.tensors.empty() ? 1 : shard + 1;
    for (size_t i = 0; i < count; ++i) plan.shards.push_back({shard_name(i, count), 0});
    plan.write_index = count > 1;
  } else {
    // Like the source: the same file names, each holding what its source file held.
    std::map<std::string, size_t> index;
    for (size_t r = 0; r < ranges.size(); ++r) {
      const std::string& file = options.source_file_of_tensor.at(r);
      auto [it, inserted] = index.emplace(file, plan.shards.size());
      if (inserted) plan.shards.push_back({file, 0});
      for (size_t i = ranges[r].first; i < ranges[r].second; ++i) plan.tensors[i].shard = it->second;
    }
    if (plan.shards.empty()) plan.shards.push_back({"model.safetensors", 0});
    plan.write_index = options.source_sharded || plan.shards.size() > 1;
  }
  for (const auto& t : plan.tensors) plan.shards[t.shard].bytes += t.nbytes;
  return plan;
}

ArtifactWriter::ArtifactWriter(std::string dir, Plan plan) : dir_(std::move(dir)), plan_(std::move(plan)) {}
ArtifactWriter::~ArtifactWriter() = default;

Status ArtifactWriter::open_shard(size_t shard) {
  std::vector<safetensors::TensorSpec> specs;
  for (const auto& t : plan_.tensors)
    if (t.shard == shard) specs.push_back({t.name, t.dtype, t.shape});
  const std::string path = (fs::path(dir_) / plan_.shards[shard].file_name).string();
  FP4C_ASSIGN(auto w, safetensors::Writer::create(path, std::move(specs), {{"format", "pt"}}));
  shard_ = std::make_unique<safetensors::Writer>(std::move(w));
  open_shard_index_ = shard;
  return {};
}

Status ArtifactWriter::close_shard() {
  if (!shard_) return {};
  FP4C_TRY(shard_->finish());
  const auto digest = shard_->file_hash();
  files_.push_back({plan_.shards[*open_shard_index_].file_name, shard_->bytes_written(),
                    hash::from_canonical(digest.data())});
  bytes_written_ += shard_->bytes_written();
  shard_.reset();
  return {};
}

Status ArtifactWriter::put(ir::TensorId id, ir::TensorPart part, std::span<const std::byte> bytes) {
  const std::string who = plan_.names.layout + " writer: ";
  if (cursor_ >= plan_.tensors.size()) return make_error(who + "received more tensors than planned");
  const PlannedTensor& pt = plan_.tensors[cursor_];
  if (!pt.pieces.empty()) return put_fused(id, part, bytes);
  if (pt.source != id || pt.part != part)
    return make_error(who + "expected " + pt.name + " (" +
                      std::string(ir::tensor_part_name(pt.part)) + "), received " +
                      std::string(ir::tensor_part_name(part)) + " of tensor #" + std::to_string(id));
  return write_planned(bytes);
}

Status ArtifactWriter::put_fused(ir::TensorId id, ir::TensorPart part, std::span<const std::byte> bytes) {
  const std::string who = plan_.names.layout + " writer: ";
  // The block: the planned tensors from cursor_ on that share the first member (one fused tensor's parts).
  const ir::TensorId head = plan_.tensors[cursor_].pieces.front().first;
  size_t end = cursor_;
  while (end < plan_.tensors.size() && !plan_.tensors[end].pieces.empty() &&
         plan_.tensors[end].pieces.front().first == head)
    ++end;
  if (fused_.empty()) fused_.resize(end - cursor_);
  size_t k = cursor_;
  while (k < end && plan_.tensors[k].part != part) ++k;
  if (k == end)
    return make_error(who + "fused tensor " + plan_.tensors[cursor_].name + ": received " +
                      std::string(ir::tensor_part_name(part)) + " of tensor #" + std::to_string(id) +
                      ", which it has no part for");
  const PlannedTensor& pt = plan_.tensors[k];
  FusedPending& f = fused_[k - cursor_];
  if (f.piece >= pt.pieces.size() || pt.pieces[f.piece].first != id)
    return make_error(who + pt.name + ": expected the piece of tensor #" +
                      (f.piece < pt.pieces.size() ? std::to_string(pt.pieces[f.piece].first) : std::string("(none)")) +
                      ", received tensor #" + std::to_string(id));
  const uint64_t piece_bytes = pt.pieces[f.piece].second;
  if (f.in_piece + bytes.size() > piece_bytes)
    return make_error(who + pt.name + ": tensor #" + std::to_string(id) + " sent " +
                      std::to_string(f.in_piece + bytes.size()) + " bytes, planned " + std::to_string(piece_bytes));
  f.bytes.insert(f.bytes.end(), bytes.begin(), bytes.end());
  f.in_piece += bytes.size();
  if (f.in_piece == piece_bytes) {
    ++f.piece;
    f.in_piece = 0;
  }
  for (size_t i = cursor_; i < end; ++i)
    if (fused_[i - cursor_].piece < plan_.tensors[i].pieces.size()) return {};
  // Every member arrived: write the block in plan order.
  std::vector<FusedPending> done = std::move(fused_);
  fused_.clear();
  for (size_t i = 0; i < done.size(); ++i) {
    const PlannedTensor& p = plan_.tensors[cursor_];
    std::span<const std::byte> out(done[i].bytes);
    if (p.shared_value) {
      for (size_t m = 1; m < p.pieces.size(); ++m)
        if (std::memcmp(out.data(), out.data() + m * p.nbytes, p.nbytes) != 0)
          return make_error(who + p.name + ": the fused members' " + std::string(ir::tensor_part_name(p.part)) +
                            " values differ (tensor #" + std::to_string(p.pieces[0].first) + " and #" +
                            std::to_string(p.pieces[m].first) + "); a fused tensor has one");
      out = out.first(p.nbytes);
    }
    FP4C_TRY(write_planned(out));
  }
  return {};
}

Status ArtifactWriter::write_planned(std::span<const std::byte> bytes) {
  const std::string who = plan_.names.layout + " writer: ";
  const PlannedTensor& pt = plan_.tensors[cursor_];
  const ir::TensorPart part = pt.part;
  if (received_ + bytes.size() > pt.nbytes)
    return make_error(who + pt.name + " received " +
                      std::to_string(received_ + bytes.size()) + " bytes, planned " + std::to_string(pt.nbytes));
  if (!open_shard_index_ || *open_shard_index_ != pt.shard) {
    FP4C_TRY(close_shard());
    FP4C_TRY(open_shard(pt.shard));
  }
  float reciprocal;
  if (plan_.names.reciprocal_globals &&
      (part == ir::TensorPart::WeightGlobalScale || part == ir::TensorPart::InputGlobalScale)) {
    // One float in one piece: the layout stores 1/G (ModelOpt's weight_scale_2, input_scale).
    if (bytes.size() != sizeof(float))
      return make_error(who + pt.name + ": a global scale arrives as one float, received " +
                        std::to_string(bytes.size()) + " bytes");
    float g;
    std::memcpy(&g, bytes.data(), sizeof g);
    reciprocal = 1.0f / g;
    bytes = std::as_bytes(std::span<const float>(&reciprocal, 1));
  }
  FP4C_TRY(shard_->write(bytes));
  tensor_hash_.update(bytes);
  received_ += bytes.size();
  if (received_ == pt.nbytes) {
    written_.push_back({pt.name, pt.dtype, pt.shape, plan_.shards[pt.shard].file_name, tensor_hash_.digest()});
    tensor_hash_ = hash::Hasher();
    received_ = 0;
    ++cursor_;
  }
  return {};
}

Status ArtifactWriter::finish() {
  if (cursor_ != plan_.tensors.size())
    return make_error(plan_.names.layout + " writer: " + plan_.tensors[cursor_].name + " and " +
                      std::to_string(plan_.tensors.size() - cursor_ - 1) + " more tensors never arrived");
  FP4C_TRY(close_shard());
  // A shard with no tensors (an empty model) is still written, so the layout is complete.
  for (size_t s = 0; s < plan_.shards.size(); ++s) {
    bool written = false;
    for (const auto& f : files_) written |= f.name == plan_.shards[s].file_name;
    if (!written) {
      FP4C_TRY(open_shard(s));
      FP4C_TRY(close_shard());
    }
  }
  if (plan_.write_index) {
    safetensors::Index index;
    for (const auto& t : plan_.tensors) index.weight_map[t.name] = plan_.shards[t.shard].file_name;
    const std::string path = (fs::path(dir_) / "model.safetensors.index.json").string();
    FP4C_TRY(safetensors::write_index(path, index, plan_.total_bytes()));
    WrittenFile f{"model.safetensors.index.json", 0, {}};
    FP4C_ASSIGN(f.hash, hash::hash_file(path, &f.bytes));
    files_.push_back(std::move(f));
  }
  return {};
}

}  // namespace fp4c::backends
