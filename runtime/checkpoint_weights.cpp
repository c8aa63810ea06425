#include "runtime/checkpoint_weights.h"

#include <algorithm>
#include <bit>
#include <cmath>
#include <cstring>

#include "formats/bf16.h"
#include "formats/convert.h"
#include "formats/mmap_advice.h"

namespace fp4c::runtime {
namespace {

std::optional<size_t> linear_slot(ir::Role r) {
  switch (r) {
    case ir::Role::Q: return 0;
    case ir::Role::K: return 1;
    case ir::Role::V: return 2;
    case ir::Role::O: return 3;
    case ir::Role::Gate: return 4;
    case ir::Role::Up: return 5;
    case ir::Role::Down: return 6;
    default: return std::nullopt;
  }
}

constexpr const char* kSlotNames[] = {"q", "k", "v", "o", "gate", "up", "down"};

}  // namespace

CheckpointWeights::CheckpointWeights(const ir::Model& model, std::span<const safetensors::Checkpoint::Ref> refs,
                                     bool release_pages)
    : model_(model), refs_(refs), release_pages_(release_pages) {
  if (refs.size() != model.tensors.size()) {
    error_ = "checkpoint weights: " + std::to_string(refs.size()) + " tensor refs for " +
             std::to_string(model.tensors.size()) + " IR tensors";
    return;
  }
  const int64_t n_layers = model.config.num_hidden_layers;
  layers_.resize(size_t(n_layers > 0 ? n_layers : 0));
  auto place = [&](std::optional<ir::TensorId>& slot, ir::TensorId id) {
    if (slot && error_.empty())
      error_ = "checkpoint weights: '" + model.tensors[id].name + "' and '" + model.tensors[*slot].name +
               "' have the same role";
    slot = id;
  };
  // Which norm feeds which Linears: the activation sites say (input norm -> q/k/v, post -> gate/up).
  std::vector<std::optional<ir::Role>> norm_feeds(model.tensors.size());
  for (const ir::ActivationSite& site : model.sites)
    if (!site.consumers.empty() && site.producer < model.tensors.size())
      norm_feeds[site.producer] = model.tensors[site.consumers.front()].role;

  for (ir::TensorId id = 0; id < model.tensors.size(); ++id) {
    const ir::TensorInfo& t = model.tensors[id];
    if (!t.layer) {
      if (t.role == ir::Role::Embedding) place(embedding_, id);
      else if (t.role == ir::Role::Norm) place(final_norm_, id);
      else if (t.role == ir::Role::LmHead) place(lm_head_, id);
      continue;
    }
    if (*t.layer < 0 || *t.layer >= n_layers) {
      if (error_.empty()) error_ = "checkpoint weights: '" + t.name + "' has layer " + std::to_string(*t.layer) +
                                   " outside [0, " + std::to_string(n_layers) + ")";
      continue;
    }
    LayerIds& l = layers_[size_t(*t.layer)];
    if (t.role == ir::Role::Norm) {
      if (norm_feeds[id] == ir::Role::Q) place(l.input_norm, id);
      else if (norm_feeds[id] == ir::Role::Gate) place(l.post_norm, id);
    } else if (t.role == ir::Role::QNorm) {
      place(l.q_norm, id);
    } else if (t.role == ir::Role::KNorm) {
      place(l.k_norm, id);
    } else if (t.role == ir::Role::AttnOutNorm) {
      place(l.attn_out_norm, id);
    } else if (t.role == ir::Role::MlpOutNorm) {
      place(l.mlp_out_norm, id);
    } else if (t.role == ir::Role::Router && t.kind == ir::ParamKind::Weight) {
      place(l.router, id);
    } else if (t.expert) {
      const auto slot = linear_slot(t.role);
      const int64_t E = model.config.num_experts;
      if (!slot || *slot < 4 || t.kind != ir::ParamKind::Weight || *t.expert < 0 || *t.expert >= E) {
        if (error_.empty()) error_ = "checkpoint weights: '" + t.name + "' is not an expert's gate, up or down weight "
                                     "of one of the " + std::to_string(E) + " experts";
        continue;
      }
      l.experts.resize(size_t(E));
      place(l.experts[size_t(*t.expert)][*slot - 4], id);
    } else if (auto slot = linear_slot(t.role)) {
      place(t.kind == ir::ParamKind::Weight ? l.weight[*slot] : l.bias[*slot], id);
    }
  }
}

void apply_transform(const ir::Model& model, ir::TensorId id, std::span<float> values) {
  if (!model.transformed(id)) return;
  const ir::TensorInfo& t = model.tensors[id];
  const auto& a = model.annotations;
  const std::vector<float>* col = id < a.channel_scale.size() && !a.channel_scale[id].empty() ? &a.channel_scale[id] : nullptr;
  const std::vector<float>* row = id < a.row_scale.size() && !a.row_scale[id].empty() ? &a.row_scale[id] : nullptr;
  const int64_t cols = t.shape.empty() ? 1 : t.shape.back();
  const int64_t rows = cols ? int64_t(values.size()) / cols : 0;
#pragma omp parallel for schedule(static) if (values.size() >= (1u << 18))
  for (int64_t r = 0; r < rows; ++r) {
    float* v = values.data() + r * cols;
    const float rs = row ? (*row)[size_t(r)] : 1.0f;
    if (col)
      for (int64_t c = 0; c < cols; ++c) v[c] *= (*col)[size_t(c)] * rs;
    else if (rs != 1.0f)
      for (int64_t c = 0; c < cols; ++c) v[c] *= rs;
  }
  round_to_dtype(values.data(), int64_t(values.size()), t.dtype);
}

namespace {

// bf16::from_float without branches, so that the loops below vectorize (the same bits).
inline uint16_t to_bf16(float f) {
  const uint32_t u = std::bit_cast<uint32_t>(f);
  const uint32_t rounded = (u + 0x7fffu + ((u >> 16) & 1u)) >> 16;
  const uint32_t nan = (u >> 16) | 0x40u;
  return uint16_t((u & 0x7fffffffu) > 0x7f800000u ? nan : rounded);
}

// out[c] = bf16(in[c] * (cs[c] * rs)), or bf16(in[c] * rs) without cs. One multiply and one rounding per
// element whatever the instruction set (no contraction), so every clone gives the same bits.
#if defined(__x86_64__) && defined(__GNUC__) && !defined(__clang__)
__attribute__((target_clones("avx512f", "avx2", "default"), optimize("fp-contract=off")))
#endif
void scale_row_bf16(const uint16_t* __restrict in, const float* __restrict cs, float rs, uint16_t* __restrict out,
                    int64_t cols) {
  if (cs) {
#pragma omp simd
    for (int64_t c = 0; c < cols; ++c) out[c] = to_bf16(bf16::to_float(in[c]) * (cs[c] * rs));
  } else {
#pragma omp simd
    for (int64_t c = 0; c < cols; ++c) out[c] = to_bf16(bf16::to_float(in[c]) * rs);
  }
}

struct RewriteScales {
  const std::vector<float>* col = nullptr;
  const std::vector<float>* row = nullptr;
  int64_t cols = 1;
  RewriteScales(const ir::Model& model, ir::TensorId id) {
    const auto& a = model.annotations;
    if (id < a.channel_scale.size() && !a.channel_scale[id].empty()) col = &a.channel_scale[id];
    if (id < a.row_scale.size() && !a.row_scale[id].empty()) row = &a.row_scale[id];
    const auto& shape = model.tensors[id].shape;
    cols = shape.empty() ? 1 : shape.back();
  }
  // Row r rewritten: out[c] = bf16(in[c] * (col[c] * row[r])), as apply_transform then storing BF16 gives.
  void apply(int64_t r, const uint16_t* __restrict in, uint16_t* __restrict out) const {
    const float rs = row ? (*row)[size_t(r)] : 1.0f;
    if (!col && rs == 1.0f) {
      std::memcpy(out, in, size_t(cols) * 2);
      return;
    }
    scale_row_bf16(in, col ? col->data() : nullptr, rs, out, cols);
  }
};

// max |x| of the rewritten tensor by rewriting each row (NaN sorts above Inf, as in nvfp4::amax_bf16).
float transformed_amax_general(const RewriteScales& s, const uint16_t* src, int64_t rows) {
  int16_t m = 0;
#pragma omp parallel if (rows * s.cols >= (1 << 16))
  {
    std::vector<uint16_t> row(size_t(s.cols));
#pragma omp for reduction(max : m) schedule(static)
    for (int64_t r = 0; r < rows; ++r) {
      s.apply(r, src + r * s.cols, row.data());
      for (int64_t c = 0; c < s.cols; ++c) {
        const int16_t v = int16_t(row[size_t(c)] & 0x7FFF);
        m = v > m ? v : m;
      }
    }
  }
  return bf16::to_float(uint16_t(m));
}

}  // namespace

void apply_transform_bf16(const ir::Model& model, ir::TensorId id, const uint16_t* src, uint16_t* dst, int64_t n) {
  const RewriteScales s(model, id);
  const int64_t rows = s.cols ? n / s.cols : 0;
#pragma omp parallel for schedule(static) if (n >= (1 << 16))
  for (int64_t r = 0; r < rows; ++r) s.apply(r, src + r * s.cols, dst + r * s.cols);
}

void transform_bf16_row(const ir::Model& model, ir::TensorId id, int64_t r, const uint16_t* src_row, uint16_t* dst) {
  RewriteScales(model, id).apply(r, src_row, dst);
}

std::vector<uint16_t> column_absmax_bits_bf16(const uint16_t* src, int64_t rows, int64_t cols) {
  std::vector<int16_t> colmax(size_t(cols), 0);
#pragma omp parallel if (rows * cols >= (1 << 16))
  {
    std::vector<int16_t> m(size_t(cols), 0);
    int16_t* __restrict mp = m.data();
#pragma omp for schedule(static)
    for (int64_t r = 0; r < rows; ++r) {
      const uint16_t* __restrict in = src + r * cols;
#pragma omp simd
      for (int64_t c = 0; c < cols; ++c) {
        const int16_t v = int16_t(in[c] & 0x7FFF);
        mp[c] = v > mp[c] ? v : mp[c];
      }
    }
#pragma omp critical
    for (int64_t c = 0; c < cols; ++c) colmax[size_t(c)] = std::max(colmax[size_t(c)], m[size_t(c)]);
  }
  return {colmax.begin(), colmax.end()};
}

float transformed_amax_bf16(const ir::Model& model, ir::TensorId id, const uint16_t* src, int64_t n) {
  const RewriteScales s(model, id);
  const int64_t cols = s.cols, rows = cols ? n / cols : 0;
  if (!s.row && s.col) {
    // Only columns scaled (the default SmoothQuant mappings): x -> bf16(x * s_j) is monotonic in |x| for s_j > 0,
    // so the rewritten amax is the largest bf16(max_i |x_ij| * s_j), from the source's column maxima (those
    // smoothquant recorded, else one integer column-max pass); no rewrite.
    const auto& cached = model.annotations.source_column_absmax_bits;
    const std::vector<uint16_t> computed = id < cached.size() && cached[id].size() == size_t(cols)
                                               ? std::vector<uint16_t>{}
                                               : column_absmax_bits_bf16(src, rows, cols);
    const std::vector<uint16_t>& colmax = computed.empty() ? cached[id] : computed;
    int16_t best = 0;
    for (int64_t c = 0; c < cols; ++c) {
      const uint16_t x = colmax[size_t(c)];
      const float scale = (*s.col)[size_t(c)];
      if (x > 0x7F80) return bf16::to_float(x);  // a NaN
      if (!(scale > 0.0f)) return transformed_amax_general(s, src, rows);
      const int16_t v = int16_t(bf16::from_float(bf16::to_float(x) * scale) & 0x7FFF);
      best = v > best ? v : best;
    }
    return bf16::to_float(uint16_t(best));
  }
  return transformed_amax_general(s, src, rows);
}

Expected<std::vector<float>> read_tensor(const ir::Model& model, const safetensors::Checkpoint::Ref& ref,
                                         ir::TensorId id, bool release) {
  const ir::TensorInfo& t = model.tensors[id];
  const std::span<const std::byte> bytes = ref.file->bytes(*ref.entry);
  const int64_t n = ref.entry->numel();
  const DType dtype = ref.entry->dtype;
  if (dtype != DType::BF16 && dtype != DType::F16 && dtype != DType::F32)
    return make_error(ref.file->path() + ": tensor '" + t.name + "' has dtype " + std::string(dtype_name(dtype)) +
                      "; the runtime reads BF16, F16 and F32");
  if (bytes.size() != uint64_t(n) * dtype_size(dtype))
    return make_error(ref.file->path() + ": tensor '" + t.name + "' holds " + std::to_string(bytes.size()) +
                      " bytes for " + std::to_string(n) + " elements");
  std::vector<float> out(static_cast<size_t>(n));
  if (release) {
    // In pieces, each one's pages handed back once converted: a large tensor (a 150k-vocabulary
    // embedding is 272 MB of BF16) is not resident twice over.
    const size_t width = dtype_size(dtype);
    const int64_t piece = int64_t((size_t(64) << 20) / width);
    for (int64_t i = 0; i < n; i += piece) {
      const int64_t m = std::min(piece, n - i);
      convert_to_f32(bytes.data() + size_t(i) * width, dtype, m, out.data() + i);
      ref.file->release(bytes.subspan(size_t(i) * width, size_t(m) * width));
    }
    ref.file->release(*ref.entry);   // the pages the pieces shared
  } else {
    convert_to_f32(bytes.data(), dtype, n, out.data());
  }
  int64_t nonfinite = 0;
#pragma omp parallel for simd reduction(+ : nonfinite) if (n >= (1 << 18))
  for (int64_t i = 0; i < n; ++i) nonfinite += !std::isfinite(out[size_t(i)]);
  if (nonfinite)
    return make_error(ref.file->path() + ": tensor '" + t.name + "' at file offset " +
                      std::to_string(ref.file->data_offset() + ref.entry->begin) + ": " + std::to_string(nonfinite) +
                      " NaN or Inf value" + (nonfinite == 1 ? "" : "s") + " in a weight");
  apply_transform(model, id, out);
  return out;
}

std::optional<float> CheckpointWeights::input_global_scale(ir::TensorId) const { return std::nullopt; }

std::optional<PackedNvfp4> CheckpointWeights::packed(ir::TensorId) const { return std::nullopt; }

bool CheckpointWeights::input_mxfp4(ir::TensorId) const { return false; }

Expected<std::vector<float>> CheckpointWeights::read_weight(ir::TensorId id, bool release) const {
  return read_tensor(model_, refs_[id], id, release);
}

Expected<LinearParams> CheckpointWeights::linear(ir::TensorId weight, std::optional<ir::TensorId> bias,
                                                 bool release) const {
  const ir::TensorInfo& t = model_.tensors[weight];
  if (t.shape.size() != 2) return make_error("checkpoint weights: '" + t.name + "' is not a matrix");
  LinearParams p;
  p.out = t.shape[0];
  p.in = t.shape[1];
  FP4C_ASSIGN(p.weight, read_weight(weight, release));
  p.input_global_scale = input_global_scale(weight);
  p.input_mxfp4 = input_mxfp4(weight);
  p.packed = packed(weight);
  if (bias) {
    FP4C_ASSIGN(p.bias, read_weight(*bias, release));
  }
  return p;
}

Expected<std::vector<float>> CheckpointWeights::embedding() {
  if (!error_.empty()) return make_error(error_);
  if (!embedding_) return make_error("checkpoint weights: the model has no embedding");
  return read_weight(*embedding_, false);
}

Expected<std::vector<float>> CheckpointWeights::embedding_rows(std::span<const int32_t> ids, int64_t hidden) {
  if (!error_.empty()) return make_error(error_);
  if (!embedding_) return make_error("checkpoint weights: the model has no embedding");
  const safetensors::Checkpoint::Ref& ref = refs_[*embedding_];
  const DType dtype = ref.entry->dtype;
  const auto& shape = ref.entry->shape;
  if (shape.size() != 2 || shape[1] != hidden || (dtype != DType::BF16 && dtype != DType::F16 && dtype != DType::F32))
    return WeightSource::embedding_rows(ids, hidden);
  const std::span<const std::byte> bytes = ref.file->bytes(*ref.entry);
  const size_t row_bytes = size_t(hidden) * dtype_size(dtype);
  std::vector<float> out(ids.size() * size_t(hidden));
  for (size_t i = 0; i < ids.size(); ++i) {
    if (ids[i] < 0 || ids[i] >= shape[0])
      return make_error(ref.file->path() + ": tensor '" + ref.entry->name + "': token id " + std::to_string(ids[i]) +
                        " outside its " + std::to_string(shape[0]) + " rows");
    convert_to_f32(bytes.data() + size_t(ids[i]) * row_bytes, dtype, hidden, &out[i * size_t(hidden)]);
  }
  if (release_pages_) ref.file->release(*ref.entry);
  return out;
}

Expected<std::vector<float>> CheckpointWeights::final_norm() {
  if (!error_.empty()) return make_error(error_);
  if (!final_norm_) return make_error("checkpoint weights: the model has no final norm");
  return norm(*final_norm_, false);
}

Expected<std::vector<float>> CheckpointWeights::norm(ir::TensorId id, bool release) const {
  FP4C_ASSIGN(std::vector<float> w, read_weight(id, release));
  if (model_.config.norm_plus_one)
    for (float& x : w) x = 1.0f + x;
  return w;
}

Expected<LinearParams> CheckpointWeights::lm_head() {
  if (!error_.empty()) return make_error(error_);
  if (lm_head_) return linear(*lm_head_, std::nullopt, release_pages_);
  if (!model_.tied_lm_head) return make_error("checkpoint weights: the model has no lm_head and it is not tied");
  if (!embedding_) return make_error("checkpoint weights: lm_head is tied to an embedding the model lacks");
  return linear(*embedding_, std::nullopt, release_pages_);
}

Expected<LayerParams> CheckpointWeights::layer(int index) {
  if (!error_.empty()) return make_error(error_);
  if (index < 0 || size_t(index) >= layers_.size())
    return make_error("checkpoint weights: layer " + std::to_string(index) + " outside [0, " +
                      std::to_string(layers_.size()) + ")");
  const LayerIds& ids = layers_[size_t(index)];
  const std::string where = "checkpoint weights: layer " + std::to_string(index) + " has no ";
  if (!ids.input_norm) return make_error(where + "input norm");
  if (!ids.post_norm) return make_error(where + "post-attention norm");
  LayerParams out;
  FP4C_ASSIGN(out.input_norm, norm(*ids.input_norm, release_pages_));
  FP4C_ASSIGN(out.post_norm, norm(*ids.post_norm, release_pages_));
  if (ids.q_norm.has_value() != ids.k_norm.has_value())
    return make_error(where + (ids.q_norm ? "key norm" : "query norm") + " (it has the other)");
  if (ids.q_norm) {
    FP4C_ASSIGN(out.q_norm, norm(*ids.q_norm, release_pages_));
    FP4C_ASSIGN(out.k_norm, norm(*ids.k_norm, release_pages_));
  }
  if (ids.attn_out_norm.has_value() != ids.mlp_out_norm.has_value())
    return make_error(where + (ids.attn_out_norm ? "MLP output norm" : "attention output norm") + " (it has the other)");
  if (ids.attn_out_norm) {
    FP4C_ASSIGN(out.attn_out_norm, norm(*ids.attn_out_norm, release_pages_));
    FP4C_ASSIGN(out.mlp_out_norm, norm(*ids.mlp_out_norm, release_pages_));
  }
  const bool sparse = model_.config.moe_layer(index);
  LinearParams* slots[kLinears] = {&out.q, &out.k, &out.v, &out.o, &out.gate, &out.up, &out.down};
  for (size_t s = 0; s < (sparse ? 4 : kLinears); ++s) {
    if (!ids.weight[s]) return make_error(where + kSlotNames[s] + " weight");
    FP4C_ASSIGN(*slots[s], linear(*ids.weight[s], ids.bias[s], release_pages_));
  }
  if (!sparse) return out;
  if (!ids.router) return make_error(where + "router");
  FP4C_ASSIGN(out.router, linear(*ids.router, std::nullopt, release_pages_));
  const int64_t E = model_.config.num_experts;
  if (int64_t(ids.experts.size()) != E) return make_error(where + "experts (expected " + std::to_string(E) + ")");
  out.experts.resize(size_t(E));
  for (int64_t e = 0; e < E; ++e) {
    LinearParams* ex[3] = {&out.experts[size_t(e)].gate, &out.experts[size_t(e)].up, &out.experts[size_t(e)].down};
    for (size_t s = 0; s < 3; ++s) {
      const auto& id = ids.experts[size_t(e)][s];
      if (!id) return make_error(where + "expert " + std::to_string(e) + " " + kSlotNames[4 + s] + " weight");
      FP4C_ASSIGN(*ex[s], linear(*id, std::nullopt, release_pages_));
    }
  }
  return out;
}

}  // namespace fp4c::runtime
