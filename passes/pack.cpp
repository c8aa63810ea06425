#include "passes/pack.h"

#include <algorithm>
#include <cmath>
#include <condition_variable>
#include <cstring>
#include <map>
#include <memory>
#include <mutex>
#include <thread>

#include "formats/convert.h"
#include "formats/mxfp4.h"
#include "formats/mmap_advice.h"
#include "runtime/checkpoint_weights.h"

namespace fp4c::passes {
namespace {

// The part of a lazy kept tensor made at a time (a multiple of every GGUF block's float32 size).
constexpr uint64_t kMadeChunkBytes = 8ull << 20;

std::span<const std::byte> as_bytes_of(const std::vector<uint8_t>& v) {
  return std::as_bytes(std::span<const uint8_t>(v));
}

int64_t count_nonfinite(std::span<const std::byte> bytes, DType dtype) {
  if (dtype == DType::BF16)
    return nvfp4::count_nonfinite_bf16(
        {reinterpret_cast<const uint16_t*>(bytes.data()), bytes.size() / 2});
  if (dtype == DType::F32)  // read in place (a GGUF's dequantized tensors are F32): no converted copy
    return nvfp4::count_nonfinite_f32({reinterpret_cast<const float*>(bytes.data()), bytes.size() / 4});
  if (dtype != DType::F16) return 0;
  int64_t n = 0;
  for (float v : to_f32(bytes, dtype)) n += !std::isfinite(v);
  return n;
}

float amax_of(std::span<const std::byte> bytes, DType dtype) {
  if (dtype == DType::BF16)
    return nvfp4::amax_bf16({reinterpret_cast<const uint16_t*>(bytes.data()), bytes.size() / 2});
  if (dtype == DType::F32) return nvfp4::amax_f32({reinterpret_cast<const float*>(bytes.data()), bytes.size() / 4});
  auto v = to_f32(bytes, dtype);
  return nvfp4::amax_f32(v);
}

std::string location(const safetensors::Checkpoint::Ref& r) {
  return r.file->path() + ", tensor '" + r.entry->name + "' at file offset " +
         std::to_string(r.file->data_offset() + r.entry->begin);
}

Error nonfinite_error(const safetensors::Checkpoint::Ref& r) {
  auto bytes = r.file->bytes(*r.entry);
  int64_t n = count_nonfinite(bytes, r.entry->dtype);
  return make_error(location(r) + ": " + std::to_string(n) + " NaN or Inf value" +
                    (n == 1 ? "" : "s") + " in a weight; refusing to quantize it");
}

// Buffers for rewritten tensors, reused from tensor to tensor: no zero-filling and no fresh pages to
// fault in for every tensor (which cost more than the rewrite itself).
class ScratchPool {
 public:
  struct Buffer {
    std::unique_ptr<std::byte[]> data;
    size_t capacity = 0, size = 0;
    std::span<const std::byte> view() const { return {data.get(), size}; }
  };
  // The smallest free buffer that holds n bytes, or a new one.
  Buffer take(size_t n) {
    size_t best = free_.size();
    for (size_t i = 0; i < free_.size(); ++i)
      if (free_[i].capacity >= n && (best == free_.size() || free_[i].capacity < free_[best].capacity)) best = i;
    Buffer b;
    if (best < free_.size()) {
      b = std::move(free_[best]);
      free_.erase(free_.begin() + long(best));
    } else {
      b.data = std::make_unique_for_overwrite<std::byte[]>(n);
      b.capacity = n;
    }
    b.size = n;
    return b;
  }
  void give(Buffer b) {
    if (b.data) free_.push_back(std::move(b));
  }

 private:
  std::vector<Buffer> free_;
};

// The bytes of a checkpoint tensor: a view into its file or, for a lazy image (a GGUF's), the tensor made
// into a buffer of `pool` (held in `hold` until the caller gives it back), never in the image: a streaming
// pass then faults in no fresh pages per tensor.
std::span<const std::byte> source_of(const safetensors::Checkpoint::Ref& r, ScratchPool& pool,
                                     ScratchPool::Buffer& hold) {
  if (!r.file->lazy()) return r.file->bytes(*r.entry);
  hold = pool.take(r.entry->nbytes());
  r.file->produce(*r.entry, {hold.data.get(), hold.size});
  return hold.view();
}

// Gives a held buffer back to its pool at the end of a scope.
struct Held {
  ScratchPool& pool;
  ScratchPool::Buffer buffer;
  ~Held() { pool.give(std::move(buffer)); }
};

// A tensor a pass rewrote (SmoothQuant): its source values with the rewrite applied, stored in its
// own dtype as a framework would hold the rewritten model.
ScratchPool::Buffer rewritten_bytes(const ir::Model& model, ir::TensorId id, std::span<const std::byte> bytes,
                                    DType dtype, ScratchPool& pool) {
  ScratchPool::Buffer out = pool.take(bytes.size());
  if (dtype == DType::BF16) {  // one fused pass, bit-equal to the general path below
    runtime::apply_transform_bf16(model, id, reinterpret_cast<const uint16_t*>(bytes.data()),
                                  reinterpret_cast<uint16_t*>(out.data.get()), int64_t(bytes.size() / 2));
    return out;
  }
  auto values = to_f32(bytes, dtype);
  runtime::apply_transform(model, id, values);
  convert_from_f32(values.data(), dtype, int64_t(values.size()), out.data.get());
  return out;
}

// A kept tensor's bytes in the dtype the artifact stores it in (ir::TensorInfo::kept_as): the bytes themselves,
// or converted into `out` (F32 to BF16: nearest, ties to even). A finite value the conversion makes Inf is an
// error naming the tensor.
Expected<std::span<const std::byte>> kept_bytes(const safetensors::Checkpoint::Ref& r, const ir::TensorInfo& t,
                                                std::span<const std::byte> bytes, ScratchPool& pool,
                                                ScratchPool::Buffer& out) {
  if (t.kept_dtype() == t.dtype) return bytes;
  const int64_t n = int64_t(bytes.size() / dtype_size(t.dtype));
  pool.give(std::move(out));
  out = pool.take(size_t(n) * dtype_size(t.kept_dtype()));
  if (t.dtype == DType::F32) {
    convert_from_f32(reinterpret_cast<const float*>(bytes.data()), t.kept_dtype(), n, out.data.get());
  } else {
    const auto values = to_f32(bytes, t.dtype);
    convert_from_f32(values.data(), t.kept_dtype(), n, out.data.get());
  }
  if (count_nonfinite(out.view(), t.kept_dtype()) != 0)
    return make_error(location(r) + ": a value overflows " + std::string(dtype_name(t.kept_dtype())) +
                      ", the dtype the artifact stores this tensor in");
  return out.view();
}

ir::WeightError to_weight_error(const nvfp4::ErrorStats& e) {
  return {e.relative_mse(), e.sqnr_db(), e.max_abs_err};
}

// Streams each checkpoint file's XXH3-128 as its tensors are visited in offset order; a file whose
// tensors are not visited contiguously is hashed again from disk at the end.
class InputHashes {
 public:
  explicit InputHashes(const safetensors::Checkpoint& c) : c_(c), state_(c.files().size()) {}

  void visit(const safetensors::File* f, std::span<const std::byte> tensor_bytes) {
    State& s = state_[index_of(f)];
    const uint64_t offset = uint64_t(tensor_bytes.data() - f->raw().data());
    if (!s.started) {
      s.started = true;
      s.next = f->data_offset();
      s.hasher.update(f->raw().first(f->data_offset()));
    }
    if (offset != s.next) s.broken = true;
    if (s.broken) return;
    s.hasher.update(tensor_bytes);
    s.next = offset + tensor_bytes.size();
  }

  Expected<std::vector<hash::Digest>> finish() const {
    std::vector<hash::Digest> out;
    for (size_t i = 0; i < state_.size(); ++i) {
      const State& s = state_[i];
      const safetensors::File& f = c_.files()[i];
      if (s.started && !s.broken && s.next == f.file_size()) {
        out.push_back(s.hasher.digest());
      } else if (f.lazy()) {  // an image fp4c makes as it is read (a GGUF's): its source file is hashed
        out.push_back({});
      } else if (f.in_memory()) {  // an image fp4c made (no file to read again)
        hash::Hasher h;
        h.update(f.raw());
        out.push_back(h.digest());
      } else {
        FP4C_ASSIGN(auto d, hash::hash_file(f.path()));
        out.push_back(d);
      }
    }
    return out;
  }

 private:
  struct State {
    hash::Hasher hasher;
    bool started = false;
    bool broken = false;
    uint64_t next = 0;
  };
  size_t index_of(const safetensors::File* f) const { return size_t(f - c_.files().data()); }
  const safetensors::Checkpoint& c_;
  std::vector<State> state_;
};

// A thread that walks the tensors in file order ahead of the quantizer: it maps each piece in (one
// populate call instead of a page fault per page) and feeds the input-file hashes, so neither sits
// on the quantizer's path. It stays at most `window` bytes ahead of what the quantizer has finished,
// bounding the resident set, except to complete what the quantizer is waiting for.
class ReadAhead {
 public:
  ReadAhead(std::span<const safetensors::Checkpoint::Ref> refs, InputHashes& hashes, uint64_t chunk,
            uint64_t window)
      : refs_(refs), hashes_(hashes), chunk_(chunk), window_(window) {
    ends_.reserve(refs.size());
    uint64_t pos = 0;
    for (const auto& r : refs) ends_.push_back(pos += r.entry->nbytes());
    thread_ = std::thread([this] { run(); });
  }
  ~ReadAhead() {
    {
      std::lock_guard lock(mu_);
      stop_ = true;
    }
    cv_.notify_all();
    thread_.join();
  }
  // Position of the end of tensor i (plus `within` bytes of tensor i) in the stream.
  uint64_t position(size_t i, uint64_t within) const { return (i ? ends_[i - 1] : 0) + within; }
  // Blocks until everything before stream position `pos` has been read ahead.
  void wait_until(uint64_t pos) {
    std::unique_lock lock(mu_);
    required_ = std::max(required_, pos);
    cv_.notify_all();
    cv_.wait(lock, [&] { return done_ >= pos; });
  }
  // The quantizer is finished with everything before `pos`.
  void consumed(uint64_t pos) {
    {
      std::lock_guard lock(mu_);
      consumed_ = pos;
    }
    cv_.notify_all();
  }

 private:
  void run() {
    uint64_t pos = 0;
    for (size_t i = 0; i < refs_.size(); ++i) {
      if (refs_[i].file->lazy()) {  // made by the quantizer's own thread, nothing to read ahead
        pos += refs_[i].entry->nbytes();
        {
          std::lock_guard lock(mu_);
          done_ = pos;
        }
        cv_.notify_all();
        continue;
      }
      const auto bytes = refs_[i].file->bytes(*refs_[i].entry);
      for (uint64_t off = 0; off < bytes.size(); off += chunk_) {
        const auto piece = bytes.subspan(off, std::min<uint64_t>(chunk_, bytes.size() - off));
        {
          std::unique_lock lock(mu_);
          cv_.wait(lock, [&] { return stop_ || pos < required_ || pos < consumed_ + window_; });
          if (stop_) return;
        }
        advise_populate(piece);
        hashes_.visit(refs_[i].file, piece);
        pos += piece.size();
        {
          std::lock_guard lock(mu_);
          done_ = pos;
        }
        cv_.notify_all();
      }
      if (bytes.empty()) hashes_.visit(refs_[i].file, bytes);
    }
  }

  std::span<const safetensors::Checkpoint::Ref> refs_;
  InputHashes& hashes_;
  const uint64_t chunk_, window_;
  std::vector<uint64_t> ends_;
  std::mutex mu_;
  std::condition_variable cv_;
  uint64_t done_ = 0, consumed_ = 0, required_ = 0;
  bool stop_ = false;
  std::thread thread_;
};

// An MXFP4 Linear: no global scale, so no fused-group pass; the rewritten weight (smoothquant) is
// materialized in its dtype first, as the rewritten model holds it. Only the MXFP4 scale rule of
// formats/mxfp4.h (the pipeline's checks refuse other quantizers for MXFP4).
Status pack_mxfp4(ir::Model& model, ir::TensorId id, const safetensors::Checkpoint::Ref& ref, ReadAhead& ahead,
                  ScratchPool& scratch, ir::ArtifactSink& sink) {
  const ir::TensorInfo& t = model.tensors[id];
  Held made{scratch, {}};
  const auto source_bytes = source_of(ref, scratch, made.buffer);
  ahead.wait_until(ahead.position(id, source_bytes.size()));
  auto bytes = source_bytes;
  ScratchPool::Buffer rewritten;
  if (model.transformed(id)) {
    rewritten = rewritten_bytes(model, id, bytes, t.dtype, scratch);
    bytes = rewritten.view();
  }
  const float own_amax = amax_of(bytes, t.dtype);
  if (!std::isfinite(own_amax)) {
    if (model.transformed(id) && count_nonfinite(source_bytes, t.dtype) == 0)
      return make_error(location(ref) + ": rewriting it (smoothquant) gave a NaN or Inf");
    return nonfinite_error(ref);
  }
  const int64_t rows = t.shape[0], cols = t.shape[1];
  std::vector<uint8_t> packed(size_t(rows * cols / 2)), scales(size_t(rows * cols / mxfp4::kBlock));
  nvfp4::ErrorStats err;
  if (t.dtype == DType::BF16) {
    mxfp4::quantize_bf16(reinterpret_cast<const uint16_t*>(bytes.data()), rows, cols, packed.data(), scales.data(),
                         mxfp4::kDefaultRule, &err);
  } else {
    auto values = to_f32(bytes, t.dtype);
    mxfp4::quantize_f32(values.data(), rows, cols, packed.data(), scales.data(), mxfp4::kDefaultRule, &err);
  }
  ref.file->release(source_bytes);
  ahead.consumed(ahead.position(id, source_bytes.size()));
  scratch.give(std::move(rewritten));
  FP4C_TRY(sink.put(id, ir::TensorPart::PackedWeight, as_bytes_of(packed)));
  FP4C_TRY(sink.put(id, ir::TensorPart::BlockScales, as_bytes_of(scales)));
  ir::PackedWeight info;
  info.weight_amax = own_amax;
  info.group_amax = own_amax;
  info.error = to_weight_error(err);
  model.annotations.packed[id] = info;
  return {};
}

}  // namespace

Expected<PackResult> pack_weights(ir::Model& model, const safetensors::Checkpoint& checkpoint,
                                  std::span<const safetensors::Checkpoint::Ref> refs,
                                  ir::ArtifactSink& sink, const PackOptions& options) {
  const auto& decisions = model.annotations.decision;
  if (decisions.size() != model.tensors.size())
    return make_error("pack: the weight plan has not run");
  model.annotations.packed.assign(model.tensors.size(), std::nullopt);

  PackResult result;
  InputHashes input_hashes(checkpoint);
  std::map<const ir::FusedGroup*, float> group_amax;
  ScratchPool scratch;
  // The per-Linear choice of the auto pass, else the pipeline's.
  std::vector<Quantizer> chosen(model.tensors.size(), options.quantizer);
  for (ir::TensorId id = 0; id < model.tensors.size() && id < model.annotations.choice.size(); ++id)
    if (const auto& c = model.annotations.choice[id]) {
      auto q = parse_quantizer(c->chosen.quantizer);
      if (!q) return make_error("pack: " + model.tensors[id].name + ": unknown quantizer '" + c->chosen.quantizer + "'");
      q->gptq.damp = options.quantizer.gptq.damp;
      if (!q->order_in_name) q->gptq.act_order = options.quantizer.gptq.act_order;   // as the choosing pass ran them
      q->gptq.asym_alpha = options.quantizer.gptq.asym_alpha;
      chosen[id] = *q;
    }
  const auto quantizer_of = [&](ir::TensorId id) -> const Quantizer& { return chosen[id]; };
  std::map<ir::TensorId, ScratchPool::Buffer> rewritten_members;
  // Later members of a fused group made from a lazy source (a GGUF's) for the group's amax, kept until their
  // turn so each is made once.
  std::map<ir::TensorId, ScratchPool::Buffer> made_members;
  std::vector<uint8_t> packed, scales;
  {  // the read-ahead thread lives for the loop
    ReadAhead ahead(refs, input_hashes, options.copy_chunk_bytes, options.read_ahead_bytes);

    for (ir::TensorId id = 0; id < model.tensors.size(); ++id) {
      const ir::TensorInfo& t = model.tensors[id];
      const auto& ref = refs[id];
      const bool rewritten = model.transformed(id);
      // Kept as it came from a lazy source (a GGUF's dequantized embedding): made a chunk at a time below,
      // never whole (no buffer of its float32 size to fault in).
      const bool made_in_chunks = ref.file->lazy() && !ir::is_fp4(decisions[id].format) && !rewritten &&
                                  !made_members.contains(id);
      Held made{scratch, {}};
      std::span<const std::byte> source_bytes;
      if (auto it = made_members.find(id); it != made_members.end()) {  // made already for its group's amax
        made.buffer = std::move(it->second);
        made_members.erase(it);
        source_bytes = made.buffer.view();
      } else if (!made_in_chunks) {
        source_bytes = source_of(ref, scratch, made.buffer);
      }
      auto bytes = source_bytes;
      result.bytes_read += made_in_chunks ? ref.entry->nbytes() : bytes.size();

      if (rewritten && t.dtype != DType::BF16 && t.dtype != DType::F16 && t.dtype != DType::F32)
        return make_error(location(ref) + ": a pass rewrote this tensor, but it is not BF16, F16 or F32");
      if (!ir::is_fp4(decisions[id].format) && rewritten) {
        // Kept, but rewritten (a smoothed norm): converted, rewritten and stored in its dtype.
        ahead.wait_until(ahead.position(id, bytes.size()));
        if (count_nonfinite(bytes, t.dtype) != 0) return nonfinite_error(ref);
        auto out = rewritten_bytes(model, id, bytes, t.dtype, scratch);
        if (count_nonfinite(out.view(), t.dtype) != 0)
          return make_error(location(ref) + ": rewriting it (smoothquant) gave a NaN or Inf");
        Held stored{scratch, {}};
        FP4C_ASSIGN(auto written, kept_bytes(ref, t, out.view(), scratch, stored.buffer));
        FP4C_TRY(sink.put(id, ir::TensorPart::Source, written));
        scratch.give(std::move(out));
        ref.file->release(bytes);
        ahead.consumed(ahead.position(id, bytes.size()));
        continue;
      }
      if (decisions[id].format == ir::Format::MXFP4) {
        FP4C_TRY(pack_mxfp4(model, id, ref, ahead, scratch, sink));
        continue;
      }
      if (decisions[id].format != ir::Format::NVFP4) {
        // Kept as it came (in the dtype the artifact stores it in): copied in chunks, released behind the copy.
        Held stored{scratch, {}};
        if (made_in_chunks) {
          const uint64_t total = ref.entry->nbytes(), step = std::min(options.copy_chunk_bytes, kMadeChunkBytes);
          if (total == 0) FP4C_TRY(sink.put(id, ir::TensorPart::Source, {}));
          Held part{scratch, scratch.take(size_t(std::min(step, total)))};
          for (uint64_t off = 0; off < total; off += step) {
            const std::span<std::byte> chunk(part.buffer.data.get(), size_t(std::min(step, total - off)));
            ref.file->produce(*ref.entry, chunk, off);
            if (count_nonfinite(chunk, t.dtype) != 0) return nonfinite_error(ref);
            FP4C_ASSIGN(auto written, kept_bytes(ref, t, chunk, scratch, stored.buffer));
            FP4C_TRY(sink.put(id, ir::TensorPart::Source, written));
            ahead.consumed(ahead.position(id, off + chunk.size()));
          }
          continue;
        }
        if (bytes.empty()) FP4C_TRY(sink.put(id, ir::TensorPart::Source, bytes));
        for (uint64_t off = 0; off < bytes.size(); off += options.copy_chunk_bytes) {
          auto chunk = bytes.subspan(off, std::min<uint64_t>(options.copy_chunk_bytes, bytes.size() - off));
          ahead.wait_until(ahead.position(id, off + chunk.size()));
          if (count_nonfinite(chunk, t.dtype) != 0) return nonfinite_error(ref);
          FP4C_ASSIGN(auto written, kept_bytes(ref, t, chunk, scratch, stored.buffer));
          FP4C_TRY(sink.put(id, ir::TensorPart::Source, written));
          ref.file->release(chunk);
          ahead.consumed(ahead.position(id, off + chunk.size()));
        }
        continue;
      }
      ahead.wait_until(ahead.position(id, bytes.size()));
      // A rewritten weight (smoothquant) is quantized as the rewritten model holds it: BF16 under the max
      // rule row by row as the quantizer reaches each row (streamed), otherwise materialized first.
      const auto streamed = [&](ir::TensorId m) {
        const Quantizer& q = quantizer_of(m);
        return model.transformed(m) && model.tensors[m].dtype == DType::BF16 && q.kind == Quantizer::Kind::Rule &&
               q.rule == nvfp4::ScaleRule::Max;
      };
      const auto as_bf16 = [](std::span<const std::byte> b) { return reinterpret_cast<const uint16_t*>(b.data()); };
      ScratchPool::Buffer rewritten_weight;
      if (rewritten && !streamed(id)) {
        auto it = rewritten_members.find(id);
        if (it != rewritten_members.end()) {
          rewritten_weight = std::move(it->second);
          rewritten_members.erase(it);
        } else {
          rewritten_weight = rewritten_bytes(model, id, bytes, t.dtype, scratch);
        }
        bytes = rewritten_weight.view();
      }

      // The global scale comes from the amax of the whole fused group (NVFP4.md §3).
      const float own_amax = streamed(id) ? runtime::transformed_amax_bf16(model, id, as_bf16(bytes),
                                                                             int64_t(bytes.size() / 2))
                                          : amax_of(bytes, t.dtype);
      if (!std::isfinite(own_amax)) return nonfinite_error(ref);
      float amax = own_amax;
      if (const ir::FusedGroup* g = model.group_of(id)) {
        auto it = group_amax.find(g);
        if (it == group_amax.end()) {
          for (ir::TensorId m : g->members) {
            const auto& mref = refs[m];
            float a = own_amax;
            Held member{scratch, {}};
            if (m != id && streamed(m)) {
              const auto mb = source_of(mref, scratch, member.buffer);
              a = runtime::transformed_amax_bf16(model, m, as_bf16(mb), int64_t(mb.size() / 2));
              if (m > id && member.buffer.data) made_members[m] = std::move(member.buffer);
            } else if (m != id && model.transformed(m)) {
              // Kept until that member's turn, so it is rewritten once.
              auto& kept = rewritten_members[m];
              kept = rewritten_bytes(model, m, source_of(mref, scratch, member.buffer), model.tensors[m].dtype, scratch);
              a = amax_of(kept.view(), model.tensors[m].dtype);
            } else if (m != id) {
              a = amax_of(source_of(mref, scratch, member.buffer), model.tensors[m].dtype);
              if (m > id && member.buffer.data) made_members[m] = std::move(member.buffer);
            }
            if (!std::isfinite(a)) return nonfinite_error(mref);
            amax = std::max(amax, a);
          }
          it = group_amax.emplace(g, amax).first;
        }
        amax = it->second;
      }
      const float G = nvfp4::global_scale(amax);

      const int64_t rows = t.shape[0], cols = t.shape[1];
      packed.resize(size_t(rows * cols / 2));
      scales.resize(size_t(rows * cols / nvfp4::kBlock));
      nvfp4::ErrorStats err;
      const Quantizer& quantizer = quantizer_of(id);
      if (quantizer.kind != Quantizer::Kind::Rule || quantizer.rule != nvfp4::ScaleRule::Max) {
        const SiteStats* site = weight_input_stats(options.stats, t);
        auto values = to_f32(bytes, t.dtype);
        const auto& pre = id < model.annotations.prequantized.size() ? model.annotations.prequantized[id]
                                                                      : std::optional<ir::Prequantized>();
        const auto same_weight = [&] {
          const hash::Digest d = hash::xxh3_128(std::as_bytes(std::span(values)));
          return d.high == pre->weight_hash_high && d.low == pre->weight_hash_low;
        };
        if (pre && pre->quantizer == quantizer.name() && pre->global_scale == G &&
            pre->zero_scale == uint8_t(options.zero_scale) && pre->packed.size() == packed.size() &&
            pre->scales.size() == scales.size() && same_weight()) {
          // The auto pass quantized exactly this weight with this quantizer already.
          std::copy(pre->packed.begin(), pre->packed.end(), packed.begin());
          std::copy(pre->scales.begin(), pre->scales.end(), scales.begin());
          err.sum_sq_err = pre->sum_sq_err;
          err.sum_sq_ref = pre->sum_sq_ref;
          err.max_abs_err = pre->max_abs_err;
          err.count = pre->count;
        } else {
          FP4C_TRY(quantize_weight(quantizer, values.data(), rows, cols, G, site, t.module, packed.data(),
                                   scales.data(), options.zero_scale, &err));
        }
      } else if (streamed(id)) {
        const uint16_t* src = as_bf16(bytes);
        nvfp4::quantize_bf16_rows(
            [&](int64_t r, uint16_t* out) { runtime::transform_bf16_row(model, id, r, src + r * cols, out); }, rows,
            cols, G, packed.data(), scales.data(), options.zero_scale, &err);
      } else if (t.dtype == DType::BF16) {
        nvfp4::quantize_bf16(reinterpret_cast<const uint16_t*>(bytes.data()), rows, cols, G,
                             packed.data(), scales.data(), options.zero_scale, &err);
      } else if (t.dtype == DType::F32) {
        nvfp4::quantize_f32(reinterpret_cast<const float*>(bytes.data()), rows, cols, G, packed.data(), scales.data(),
                            options.zero_scale, &err);
      } else {
        auto values = to_f32(bytes, t.dtype);
        nvfp4::quantize_f32(values.data(), rows, cols, G, packed.data(), scales.data(), options.zero_scale, &err);
      }
      ref.file->release(source_bytes);
      ahead.consumed(ahead.position(id, source_bytes.size()));
      scratch.give(std::move(rewritten_weight));

      FP4C_TRY(sink.put(id, ir::TensorPart::PackedWeight, as_bytes_of(packed)));
      FP4C_TRY(sink.put(id, ir::TensorPart::BlockScales, as_bytes_of(scales)));
      FP4C_TRY(sink.put(id, ir::TensorPart::WeightGlobalScale,
                        std::as_bytes(std::span<const float>(&G, 1))));
      std::optional<float> input_scale;
      if (decisions[id].input_amax) {
        input_scale = nvfp4::global_scale(*decisions[id].input_amax);
        FP4C_TRY(sink.put(id, ir::TensorPart::InputGlobalScale,
                          std::as_bytes(std::span<const float>(&*input_scale, 1))));
      }

      ir::PackedWeight info;
      info.weight_amax = own_amax;
      info.group_amax = amax;
      info.weight_global_scale = G;
      info.input_global_scale = input_scale;
      info.error = to_weight_error(err);
      model.annotations.packed[id] = info;
    }
  }  // the read-ahead thread has finished every file's hash

  FP4C_ASSIGN(result.input_file_hashes, input_hashes.finish());
  return result;
}

}  // namespace fp4c::passes
