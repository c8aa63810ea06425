// The decoder forward, layer by layer over all sequences at once: RMSNorm, q/k/v (+ biases), RoPE and
// causal GQA attention, o, residual, RMSNorm, gate/up, SiLU(gate) * up, down, residual. Every Linear
// runs as one GEMM over all tokens of all sequences, its weight converted once per call.
#include "runtime/forward.h"

#include <omp.h>

#include <algorithm>
#include <bit>
#include <cmath>
#include <cstring>
#include <deque>
#include <mutex>
#include <optional>
#include <string>

#include "runtime/activation_quant.h"
#include "runtime/attention.h"
#include "runtime/elementwise.h"
#include "runtime/matmul.h"
#include "runtime/moe.h"
#include "runtime/thread_scope.h"
#include "runtime/workspace.h"

namespace fp4c::runtime {
namespace {

// Rows of the up projection per GEMM (see Forward::layer).
constexpr int64_t kUpChunkRows = 2048;

Status check_linear(const LinearParams& p, int64_t out, int64_t in, const std::string& what) {
  if (p.out != out || p.in != in)
    return make_error(what + ": shape " + shape_str(p.out, p.in) + ", expected " + shape_str(out, in));
  if (int64_t(p.weight.size()) != out * in)
    return make_error(what + ": " + std::to_string(p.weight.size()) + " weights for shape " + shape_str(out, in));
  if (!p.bias.empty() && int64_t(p.bias.size()) != out)
    return make_error(what + ": " + std::to_string(p.bias.size()) + " biases for " + std::to_string(out) + " outputs");
  if (p.input_mxfp4) {
    if (p.input_global_scale)
      return make_error(what + ": an input is quantized to NVFP4 (input global scale) or MXFP4, not both");
    if (in % 32 != 0)
      return make_error(what + ": MXFP4 input quantization needs in_features % 32 == 0, got " + std::to_string(in));
  }
  if (p.input_global_scale) {
    if (in % 16 != 0)
      return make_error(what + ": W4A4 input quantization needs in_features % 16 == 0, got " + std::to_string(in));
    if (!(*p.input_global_scale > 0.0f) || !std::isfinite(*p.input_global_scale))
      return make_error(what + ": input global scale must be finite and > 0, got " +
                        std::to_string(*p.input_global_scale));
  }
  return {};
}

Status check_vector(const std::vector<float>& v, int64_t n, const std::string& what) {
  if (int64_t(v.size()) != n)
    return make_error(what + ": " + std::to_string(v.size()) + " elements, expected " + std::to_string(n));
  return {};
}

Status check_offsets(const Activations& acts, const std::string& what) {
  if (acts.offsets.empty()) return {};
  if (acts.offsets.front() != 0) return make_error(what + ": sequence offsets must start at 0");
  for (size_t s = 1; s < acts.offsets.size(); ++s)
    if (acts.offsets[s] < acts.offsets[s - 1])
      return make_error(what + ": sequence offsets decrease at sequence " + std::to_string(s - 1));
  return {};
}

// Offsets well formed and hidden states [tokens, hidden].
Status check_activations(const Activations& acts, int64_t hidden, const std::string& what) {
  FP4C_TRY(check_offsets(acts, what));
  const int64_t T = acts.tokens();
  if (int64_t(acts.hidden.size()) != T * hidden)
    return make_error(what + ": hidden states hold " + std::to_string(acts.hidden.size()) + " floats, expected " +
                      shape_str(T, hidden));
  return {};
}

// The input of a group of Linears that read the same activations, as each one's GEMM takes it:
// fake-quantized with its input global scale (W4A4) and rounded to BF16 for Precision::BF16, made
// once per distinct scale. When every member has the same scale, quantization overwrites x (the
// activations are dead once the group ran). The first variant lives in the workspace's buffers.
class GemmInputs {
 public:
  GemmInputs(float* x, int64_t rows, int64_t cols, Precision precision, ForwardWorkspace& ws,
             std::initializer_list<const LinearParams*> group)
      : x_(x), rows_(rows), cols_(cols), precision_(precision), ws_(ws) {
    for (const LinearParams* p : group) in_place_ &= key(*p) == key(*group.begin()[0]);
  }

  const void* get(const LinearParams& p) {
    const uint64_t k = key(p);
    for (const Entry& e : entries_)
      if (e.key == k) return e.data;
    const size_t n = size_t(rows_ * cols_);
    const bool first = entries_.empty();
    Entry e{k, {}, {}, nullptr};
    const float* f32 = x_;
    if (p.input_global_scale) {
      float* dst = x_;
      if (!in_place_) {
        if (first) {
          dst = ws_.quantized.get<float>(n);
        } else {
          e.quantized.resize(n);
          dst = e.quantized.data();
        }
      }
      fake_quantize_nvfp4(x_, rows_, cols_, *p.input_global_scale, dst);
      f32 = dst;
    } else if (p.input_mxfp4) {
      float* dst = x_;
      if (!in_place_) {
        if (first) {
          dst = ws_.quantized.get<float>(n);
        } else {
          e.quantized.resize(n);
          dst = e.quantized.data();
        }
      }
      fake_quantize_mxfp4(x_, rows_, cols_, dst);
      f32 = dst;
    }
    e.data = f32;
    if (precision_ == Precision::BF16) {
      uint16_t* dst;
      if (first) {
        dst = ws_.gemm_input.get<uint16_t>(n);
      } else {
        e.bf16.resize(n);
        dst = e.bf16.data();
      }
      round_to_bf16(f32, dst, int64_t(n));
      e.data = dst;
      e.quantized = {};
    }
    entries_.push_back(std::move(e));
    return entries_.back().data;
  }

 private:
  // An NVFP4 input scale's bit pattern, or values no float has: no input quantization, MXFP4.
  static uint64_t key(const LinearParams& p) {
    if (p.input_mxfp4) return uint64_t(2) << 32;
    return p.input_global_scale ? std::bit_cast<uint32_t>(*p.input_global_scale) : uint64_t(1) << 32;
  }
  struct Entry {
    uint64_t key;
    std::vector<float> quantized;
    std::vector<uint16_t> bf16;
    const void* data;
  };
  float* x_;
  int64_t rows_, cols_;
  Precision precision_;
  ForwardWorkspace& ws_;
  bool in_place_ = true;
  std::vector<Entry> entries_;
};

}  // namespace

// The converted weights the hold_converted_* tokens keep: per held object (a LayerParams or an lm_head's
// LinearParams), PreparedLinears keyed by the Linear's address and the row count each was made for, at
// most `row_counts` per Linear (the oldest goes first).
struct HeldLinears {
  struct Owner {
    const void* object;
    Precision precision;
    size_t row_counts;
  };
  struct Entry {
    const void* owner;
    const LinearParams* linear;
    PreparedLinear prepared;
  };
  std::vector<Owner> owners;
  std::deque<Entry> linears;   // a deque: pointers to the others stay valid as entries come and go

  const Owner* find(const void* object, Precision precision) const {
    for (const Owner& o : owners)
      if (o.object == object && o.precision == precision) return &o;
    return nullptr;
  }
  void drop(const void* object) {
    std::erase_if(owners, [&](const Owner& o) { return o.object == object; });
    std::erase_if(linears, [&](const Entry& e) { return e.owner == object; });
  }
};

namespace {

// The Linear converted for `rows` rows: the held one when `owner` (held in `held`, or null) keeps it
// for that row count, else a fresh conversion (kept under `owner`, else in `local`).
Expected<const PreparedLinear*> prepared_linear(const LinearParams& p, int64_t rows, Precision precision,
                                                HeldLinears& held, const HeldLinears::Owner* owner,
                                                std::optional<PreparedLinear>& local) {
  if (owner)
    for (auto& e : held.linears)
      if (e.owner == owner->object && e.linear == &p && e.prepared.rows() == rows) return &e.prepared;
  if (!owner) {
    FP4C_ASSIGN(PreparedLinear fresh, PreparedLinear::create(p, rows, precision));
    local.emplace(std::move(fresh));
    return &*local;
  }
  // The oldest conversion goes before the new one is made: at most row_counts of them in memory.
  size_t kept = 0;
  for (const auto& e : held.linears) kept += e.owner == owner->object && e.linear == &p;
  if (kept >= owner->row_counts) {
    const auto oldest = std::find_if(held.linears.begin(), held.linears.end(), [&](const HeldLinears::Entry& e) {
      return e.owner == owner->object && e.linear == &p;
    });
    held.linears.erase(oldest);
  }
  FP4C_ASSIGN(PreparedLinear fresh, PreparedLinear::create(p, rows, precision));
  held.linears.push_back({owner->object, &p, std::move(fresh)});
  return &held.linears.back().prepared;
}

// y = the Linear applied to its prepared input; the weight is converted here (or found held).
Status run_linear(const LinearParams& p, GemmInputs& inputs, int64_t rows, Precision precision, HeldLinears& held,
                  const HeldLinears::Owner* owner, float* y) {
  std::optional<PreparedLinear> local;
  FP4C_ASSIGN(const PreparedLinear* prepared, prepared_linear(p, rows, precision, held, owner, local));
  return prepared->run(inputs.get(p), y);
}

}  // namespace

Forward::Forward(const ir::ModelConfig& config, ForwardOptions options)
    : config_(config), options_(options), workspace_(std::make_shared<ForwardWorkspace>()),
      held_(std::make_shared<HeldLinears>()) {}

std::shared_ptr<void> Forward::hold(const void* object, size_t row_counts) const {
  {
    std::lock_guard lock(workspace_->mutex);
    held_->drop(object);
    held_->owners.push_back({object, options_.precision, row_counts});
  }
  // The token: dropping it frees what was converted for the object.
  auto workspace = workspace_;
  auto held = held_;
  return std::shared_ptr<void>(const_cast<void*>(object), [workspace, held](void* p) {
    std::lock_guard lock(workspace->mutex);
    held->drop(p);
  });
}

std::shared_ptr<void> Forward::hold_converted_weights(const LayerParams& params) const { return hold(&params, 1); }

std::shared_ptr<void> Forward::hold_converted_head(const LinearParams& lm_head) const { return hold(&lm_head, 1); }

void Forward::release_memory() const {
  std::lock_guard lock(workspace_->mutex);
  workspace_->release();
}

namespace {

Status allocate_hidden(Activations& acts, size_t n, const SpillPolicy& spill) {
  try {
    acts.hidden = HiddenStates(SpillAllocator<float>(std::make_shared<const SpillPolicy>(spill)));
    acts.hidden.resize(n);
  } catch (const std::bad_alloc&) {
    return make_error("cannot allocate " + std::to_string(n * sizeof(float)) + " bytes of hidden states" +
                      (spill.memory_budget > 0 ? " in a temporary file under " +
                                                     (spill.directory.empty() ? std::string("$TMPDIR") : spill.directory)
                                               : std::string()));
  }
  return {};
}

Status check_token_ids(const std::vector<std::vector<int32_t>>& sequences, int64_t vocab) {
  for (size_t s = 0; s < sequences.size(); ++s)
    for (size_t p = 0; p < sequences[s].size(); ++p) {
      const int32_t id = sequences[s][p];
      if (id < 0 || id >= vocab)
        return make_error("sequence " + std::to_string(s) + ", position " + std::to_string(p) + ": token id " +
                          std::to_string(id) + " outside the vocabulary (vocab_size " + std::to_string(vocab) + ")");
    }
  return {};
}

// Dynamic (NTK) RoPE is the default RoPE up to max_position_embeddings and rescales its base beyond;
// the rescaling is not implemented, so longer sequences are refused by name.
Status check_dynamic_rope(const std::vector<std::vector<int32_t>>& sequences, const ir::ModelConfig& c) {
  if (c.rope_scaling.type != "dynamic") return {};
  for (size_t s = 0; s < sequences.size(); ++s)
    if (int64_t(sequences[s].size()) > c.max_position_embeddings)
      return make_error("sequence " + std::to_string(s) + " has " + std::to_string(sequences[s].size()) +
                        " tokens, more than max_position_embeddings " + std::to_string(c.max_position_embeddings) +
                        ", past which dynamic RoPE rescales its base (not implemented)");
  return {};
}

// Gemma: the embedding rows multiplied by float32(sqrt(hidden_size)).
void scale_embeddings(Activations& acts, const ir::ModelConfig& c) {
  if (c.embedding_scale == 0) return;
  const float s = c.embedding_scale;
  const int64_t n = int64_t(acts.hidden.size());
  float* h = acts.hidden.data();
#pragma omp parallel for simd schedule(static) if (n >= (1 << 16))
  for (int64_t i = 0; i < n; ++i) h[i] *= s;
}

}  // namespace

Expected<std::vector<float>> WeightSource::embedding_rows(std::span<const int32_t> ids, int64_t hidden) {
  FP4C_ASSIGN(auto table, embedding());
  std::vector<float> out(ids.size() * size_t(hidden));
  for (size_t i = 0; i < ids.size(); ++i) {
    if ((size_t(ids[i]) + 1) * size_t(hidden) > table.size())
      return make_error("embedding: token id " + std::to_string(ids[i]) + " outside the table");
    std::memcpy(&out[i * size_t(hidden)], &table[size_t(ids[i]) * size_t(hidden)], size_t(hidden) * sizeof(float));
  }
  return out;
}

Expected<Activations> Forward::embed(WeightSource& weights, const std::vector<std::vector<int32_t>>& sequences) const {
  const int64_t H = config_.hidden_size, V = config_.vocab_size;
  FP4C_TRY(check_token_ids(sequences, V));
  FP4C_TRY(check_dynamic_rope(sequences, config_));
  std::vector<int32_t> unique;
  for (const auto& seq : sequences) unique.insert(unique.end(), seq.begin(), seq.end());
  std::sort(unique.begin(), unique.end());
  unique.erase(std::unique(unique.begin(), unique.end()), unique.end());
  FP4C_ASSIGN(auto rows, weights.embedding_rows(unique, H));
  if (int64_t(rows.size()) != int64_t(unique.size()) * H)
    return make_error("embedding rows: " + std::to_string(rows.size()) + " elements, expected " +
                      shape_str(int64_t(unique.size()), H));
  Activations acts;
  acts.offsets.push_back(0);
  for (const auto& seq : sequences) acts.offsets.push_back(acts.offsets.back() + int64_t(seq.size()));
  FP4C_TRY(allocate_hidden(acts, size_t(acts.tokens() * H), options_.spill));
  for (size_t s = 0; s < sequences.size(); ++s)
    for (size_t p = 0; p < sequences[s].size(); ++p) {
      const size_t row = size_t(std::lower_bound(unique.begin(), unique.end(), sequences[s][p]) - unique.begin());
      std::memcpy(&acts.hidden[size_t((acts.offsets[s] + int64_t(p)) * H)], &rows[row * size_t(H)],
                  size_t(H) * sizeof(float));
    }
  scale_embeddings(acts, config_);
  return acts;
}

Expected<Activations> Forward::embed(const std::vector<float>& embedding,
                                     const std::vector<std::vector<int32_t>>& sequences) const {
  const int64_t H = config_.hidden_size, V = config_.vocab_size;
  if (int64_t(embedding.size()) != V * H)
    return make_error("embedding: " + std::to_string(embedding.size()) + " elements, expected " + shape_str(V, H));
  Activations acts;
  acts.offsets.reserve(sequences.size() + 1);
  acts.offsets.push_back(0);
  FP4C_TRY(check_token_ids(sequences, V));
  FP4C_TRY(check_dynamic_rope(sequences, config_));
  for (size_t s = 0; s < sequences.size(); ++s) {
    acts.offsets.push_back(acts.offsets.back() + int64_t(sequences[s].size()));
  }
  ThreadScope threads(options_.threads);
  FP4C_TRY(allocate_hidden(acts, size_t(acts.tokens() * H), options_.spill));
  const int64_t nseq = int64_t(sequences.size());
#pragma omp parallel for schedule(dynamic, 1) if (acts.tokens() * H >= (1 << 16))
  for (int64_t s = 0; s < nseq; ++s)
    for (size_t p = 0; p < sequences[size_t(s)].size(); ++p)
      std::memcpy(&acts.hidden[size_t((acts.offsets[size_t(s)] + int64_t(p)) * H)],
                  &embedding[size_t(sequences[size_t(s)][p]) * size_t(H)], size_t(H) * sizeof(float));
  scale_embeddings(acts, config_);
  return acts;
}

Status Forward::layer(int index, const LayerParams& params, Activations& acts, const LinearHook& hook) const {
  const ir::ModelConfig& c = config_;
  const int64_t H = c.hidden_size, I = c.intermediate_size, nH = c.num_attention_heads,
                nKV = c.num_key_value_heads, hd = c.head_dim;
  const int64_t Dq = nH * hd, Dkv = nKV * hd;
  const std::string where = "layer " + std::to_string(index);
  FP4C_TRY(check_rope_type(c));
  FP4C_TRY(check_vector(params.input_norm, H, where + " input norm"));
  FP4C_TRY(check_vector(params.post_norm, H, where + " post-attention norm"));
  FP4C_TRY(check_head_norms(params, hd, where));
  if (!params.attn_out_norm.empty()) FP4C_TRY(check_vector(params.attn_out_norm, H, where + " attention output norm"));
  if (!params.mlp_out_norm.empty()) FP4C_TRY(check_vector(params.mlp_out_norm, H, where + " MLP output norm"));
  FP4C_TRY(check_linear(params.q, Dq, H, where + " q"));
  FP4C_TRY(check_linear(params.k, Dkv, H, where + " k"));
  FP4C_TRY(check_linear(params.v, Dkv, H, where + " v"));
  FP4C_TRY(check_linear(params.o, H, Dq, where + " o"));
  const bool sparse = c.moe_layer(index);
  if (sparse) {
    FP4C_TRY(check_moe_params(c, params, where));
    for (const auto& e : params.experts)
      for (const LinearParams* l : {&e.gate, &e.up, &e.down}) FP4C_TRY(check_linear(*l, l->out, l->in, where + " expert"));
  } else {
    FP4C_TRY(check_linear(params.gate, I, H, where + " gate"));
    FP4C_TRY(check_linear(params.up, I, H, where + " up"));
    FP4C_TRY(check_linear(params.down, H, I, where + " down"));
  }
  FP4C_TRY(check_activations(acts, H, where));
  const int64_t T = acts.tokens();
  if (T == 0) return {};
  std::lock_guard lock(workspace_->mutex);
  ForwardWorkspace& ws = *workspace_;
  ThreadScope threads(options_.threads);
  const Precision prec = options_.precision;
  float* hidden = acts.hidden.data();
  HeldLinears& held = *held_;
  const HeldLinears::Owner* owner = held.find(&params, prec);

  // Attention block.
  float* xn = ws.normed.get<float>(size_t(T * H));
  rms_norm(hidden, params.input_norm.data(), T, H, c.rms_norm_eps, xn);
  if (hook) hook(LinearInput{index, ir::Role::Q, xn, T, H});
  float* attn = ws.attn.get<float>(size_t(T * Dq));
  {
    float* q = ws.q.get<float>(size_t(T * Dq));
    float* k = ws.k.get<float>(size_t(T * Dkv));
    float* v = ws.v.get<float>(size_t(T * Dkv));
    GemmInputs in(xn, T, H, prec, ws, {&params.q, &params.k, &params.v});
    FP4C_TRY(run_linear(params.q, in, T, prec, held, owner, q));
    FP4C_TRY(run_linear(params.k, in, T, prec, held, owner, k));
    FP4C_TRY(run_linear(params.v, in, T, prec, held, owner, v));
    apply_head_norms(params.q_norm, params.k_norm, q, k, T, nH, nKV, hd, c.rms_norm_eps);
    const std::vector<double> inv_freq = rope_inv_freq(c, index);
    if (c.rope_scaling.type != "longrope") {
      FP4C_TRY(causal_attention(q, k, v, acts.offsets, attention_shape(c, index), inv_freq, prec, attn,
                                &ws.attention));
    } else {
      // LongRoPE: the long factors for a sequence longer than original_max_position_embeddings, the short
      // ones otherwise; each run of consecutive sequences on one side attends with its frequencies.
      const std::vector<double> long_freq = rope_inv_freq_long(c);
      const auto& off = acts.offsets;
      const auto is_long = [&](size_t s) { return uses_long_rope(c, off[s + 1] - off[s]); };
      for (size_t s = 0; s + 1 < off.size();) {
        size_t e = s + 1;
        while (e + 1 < off.size() && is_long(e) == is_long(s)) ++e;
        FP4C_TRY(causal_attention(q, k, v, std::span<const int64_t>(off.data() + s, e - s + 1),
                                  attention_shape(c, index), is_long(s) ? long_freq : inv_freq, prec, attn,
                                  &ws.attention));
        s = e;
      }
    }
  }
  if (hook) hook(LinearInput{index, ir::Role::O, attn, T, Dq});
  {
    GemmInputs in(attn, T, Dq, prec, ws, {&params.o});
    FP4C_TRY(run_linear(params.o, in, T, prec, held, owner, xn));
  }
  if (!params.attn_out_norm.empty()) rms_norm(xn, params.attn_out_norm.data(), T, H, c.rms_norm_eps, xn);
  add_inplace(hidden, xn, T * H);

  // MLP block.
  rms_norm(hidden, params.post_norm.data(), T, H, c.rms_norm_eps, xn);
  if (sparse) {
    // The experts' inputs, made per call (each expert's rows differ): fake-quantized (W4A4) and rounded to BF16.
    std::vector<float> quantized;
    std::vector<uint16_t> bf16;
    const MoeLinear run = [&](int e, MoePart part, const float* x, int64_t rows, float* y) -> Status {
      const LinearParams& p = part == MoePart::Router ? params.router
                              : part == MoePart::Gate ? params.experts[size_t(e)].gate
                              : part == MoePart::Up   ? params.experts[size_t(e)].up
                                                      : params.experts[size_t(e)].down;
      const size_t n = size_t(rows * p.in);
      const float* f = x;
      if (p.input_global_scale) {
        quantized.resize(n);
        fake_quantize_nvfp4(x, rows, p.in, *p.input_global_scale, quantized.data());
        f = quantized.data();
      } else if (p.input_mxfp4) {
        quantized.resize(n);
        fake_quantize_mxfp4(x, rows, p.in, quantized.data());
        f = quantized.data();
      }
      const void* in = f;
      if (prec == Precision::BF16) {
        bf16.resize(n);
        round_to_bf16(f, bf16.data(), int64_t(n));
        in = bf16.data();
      }
      FP4C_ASSIGN(PreparedLinear prepared, PreparedLinear::create(p, rows, prec));
      return prepared.run(in, y);
    };
    float* moe_out = ws.attn.get<float>(size_t(T * H));
    MoeWorkspace moe_ws;
    FP4C_TRY(moe_mlp(c, index, xn, T, run, hook, options_.moe_all_experts, moe_ws, moe_out));
    if (!params.mlp_out_norm.empty()) rms_norm(moe_out, params.mlp_out_norm.data(), T, H, c.rms_norm_eps, moe_out);
    add_inplace(hidden, moe_out, T * H);
    return {};
  }
  if (hook) hook(LinearInput{index, ir::Role::Gate, xn, T, H});
  float* gate = ws.gate.get<float>(size_t(T * I));
  {
    GemmInputs in(xn, T, H, prec, ws, {&params.gate, &params.up});
    FP4C_TRY(run_linear(params.gate, in, T, prec, held, owner, gate));
    // up runs in row chunks, each folded into gate at once: a chunk-sized buffer instead of a
    // second [tokens, intermediate] one (620 MB for a 7B model over 8192 tokens).
    const int64_t chunk = std::min(T, kUpChunkRows);
    std::optional<PreparedLinear> up_local;
    FP4C_ASSIGN(const PreparedLinear* up, prepared_linear(params.up, chunk, prec, held, owner, up_local));
    const auto* src = static_cast<const std::byte*>(in.get(params.up));
    const size_t row_bytes = size_t(H) * (prec == Precision::BF16 ? sizeof(uint16_t) : sizeof(float));
    float* up_out = ws.up.get<float>(size_t(chunk * I));
    for (int64_t r = 0; r < T; r += chunk) {
      const int64_t n = std::min(chunk, T - r);
      FP4C_TRY(up->run(src + size_t(r) * row_bytes, n, up_out));
      activation_mul(c.hidden_act, gate + r * I, up_out, n * I);
    }
  }
  if (hook) hook(LinearInput{index, ir::Role::Down, gate, T, I});
  {
    GemmInputs in(gate, T, I, prec, ws, {&params.down});
    FP4C_TRY(run_linear(params.down, in, T, prec, held, owner, xn));
  }
  if (!params.mlp_out_norm.empty()) rms_norm(xn, params.mlp_out_norm.data(), T, H, c.rms_norm_eps, xn);
  add_inplace(hidden, xn, T * H);
  return {};
}

Status Forward::head(const std::vector<float>& final_norm, const LinearParams& lm_head, const Activations& acts,
                     const std::function<void(int64_t, const float*, int64_t)>& sink, int64_t chunk_rows) const {
  return head_impl(final_norm, lm_head, nullptr, acts, sink, chunk_rows);
}

Status Forward::head_consuming(const std::vector<float>& final_norm, LinearParams&& lm_head, const Activations& acts,
                               const std::function<void(int64_t, const float*, int64_t)>& sink,
                               int64_t chunk_rows) const {
  return head_impl(final_norm, lm_head, &lm_head, acts, sink, chunk_rows);
}

// `consumed` (lm_head itself, or null) has its weights freed once they are converted.
Status Forward::head_impl(const std::vector<float>& final_norm, const LinearParams& lm_head, LinearParams* consumed,
                          const Activations& acts, const std::function<void(int64_t, const float*, int64_t)>& sink,
                          int64_t chunk_rows) const {
  const int64_t H = config_.hidden_size, V = config_.vocab_size;
  FP4C_TRY(check_vector(final_norm, H, "final norm"));
  FP4C_TRY(check_linear(lm_head, V, H, "lm_head"));
  if (chunk_rows <= 0) return make_error("head: chunk_rows must be positive, got " + std::to_string(chunk_rows));
  FP4C_TRY(check_activations(acts, H, "head"));
  const int64_t T = acts.tokens();
  if (T == 0) return {};
  std::lock_guard lock(workspace_->mutex);
  ForwardWorkspace& ws = *workspace_;
  ThreadScope threads(options_.threads);
  const Precision prec = options_.precision;
  const int64_t chunk = std::min(chunk_rows, T);
  std::optional<PreparedLinear> local;
  const HeldLinears::Owner* owner = consumed ? nullptr : held_->find(&lm_head, prec);
  FP4C_ASSIGN(const PreparedLinear* prepared, prepared_linear(lm_head, chunk, prec, *held_, owner, local));
  if (consumed) std::vector<float>().swap(consumed->weight);
  // The last chunk is padded with zero rows, so that one primitive serves every chunk.
  float* xn = ws.normed.get<float>(size_t(chunk * H));
  float* logits = ws.gate.get<float>(size_t(chunk * V));
  for (int64_t r = 0; r < T; r += chunk) {
    const int64_t n = std::min(chunk, T - r);
    if (n < chunk) std::fill(xn, xn + chunk * H, 0.0f);
    rms_norm(&acts.hidden[size_t(r * H)], final_norm.data(), n, H, config_.rms_norm_eps, xn);
    GemmInputs in(xn, chunk, H, prec, ws, {&lm_head});
    FP4C_TRY(prepared->run(in.get(lm_head), logits));
    softcap_logits(logits, n * V, config_.final_logit_softcapping);
    sink(r, logits, n);
  }
  return {};
}

}  // namespace fp4c::runtime
