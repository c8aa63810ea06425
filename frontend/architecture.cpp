#include "frontend/architecture.h"

#include <algorithm>
#include <array>
#include <charconv>
#include <map>

namespace fp4c::frontend {
namespace {

using ir::ParamKind;
using ir::Role;

// The sizes a tensor dimension can be, as functions of the config.
enum class Dim : uint8_t { Hidden, Inter, Vocab, QOut, KvOut, Head, HalfHead, Experts, MoeInter };

int64_t dim_size(Dim d, const ir::ModelConfig& c) {
  switch (d) {
    case Dim::Hidden: return c.hidden_size;
    case Dim::Inter: return c.intermediate_size;
    case Dim::Vocab: return c.vocab_size;
    case Dim::QOut: return c.num_attention_heads * c.head_dim;
    case Dim::KvOut: return c.num_key_value_heads * c.head_dim;
    case Dim::Head: return c.head_dim;
    case Dim::HalfHead: return c.head_dim / 2;
    case Dim::Experts: return c.num_experts;
    case Dim::MoeInter: return c.moe_intermediate_size;
  }
  return -1;
}

struct ShapeSpec {
  size_t rank;
  std::array<Dim, 2> dims;
};
constexpr ShapeSpec vec(Dim a) { return {1, {a, a}}; }
constexpr ShapeSpec mat(Dim rows, Dim cols) { return {2, {rows, cols}}; }

enum class Scope : uint8_t {
  Global,  // the name is the full tensor name
  Layer,   // the name is relative to "model.layers.{i}."
  Expert,  // the name is relative to "model.layers.{i}.<experts prefix>{e}." (MoE)
};

// Which layers of a MoE model a per-layer tensor belongs to (ModelConfig::moe_layers).
enum class Only : uint8_t { Any, DenseLayer, SparseLayer };

enum class Presence : uint8_t {
  Required,
  AttentionBias,  // required when the architecture or the config has q/k/v biases, else not allowed
  OutputBias,     // o_proj's bias: required when the architecture gives o_proj one (attention_bias in Llama, Qwen3)
  MlpBias,        // gate/up/down biases: required when mlp_bias (Llama), else not allowed
  UnlessTied,     // required unless tie_word_embeddings; accepted either way when tied
  Optional,       // tolerated buffers, e.g. rotary inv_freq in old Llama checkpoints
};

struct TensorRule {
  Scope scope;
  std::string_view name;
  Role role;
  ParamKind kind;
  ShapeSpec shape;
  Presence presence;
  Only only = Only::Any;
};

// Linears that run as one GEMM, named relative to the layer (weights only).
struct GroupRule {
  std::array<std::string_view, 3> members;
  size_t size;
  bool dense_mlp = false;   // the dense MLP's gate/up: a sparse layer has its experts' groups instead
};

// A sparse MoE block (Mixtral, Qwen3-MoE): the experts' tensors are named "<experts>{e}.<rule name>" relative
// to the layer; each expert's gate and up form one fused group, fed by the MLP's norm (the site's consumers are
// every expert's gate and up, expert by expert); the router (Role::Router) reads the same input.
struct MoeRule {
  std::string_view experts;   // e.g. "block_sparse_moe.experts."
  std::span<const TensorRule> expert_tensors;
  std::array<std::string_view, 2> gate_up;   // names (relative to the expert) of its gate and up weights
};

// A norm feeding Linears, named relative to the layer.
struct SiteRule {
  std::string_view producer;
  GroupRule consumers;
};

// Which attention projections have biases: q/k/v/o when the config's attention_bias says so (Llama,
// Qwen3); q/k/v always and o never (Qwen2); none whatever the config says (Mistral's attention ignores
// attention_bias).
enum class BiasPolicy : uint8_t { FromConfig, QkvAlways, Never };

// A per-layer tensor the checkpoint stores fused (Phi-3): its rows are the parts' weights in order, each part
// entering the IR under its unfused name as a row slice (ir::TensorInfo::stored_in).
struct SplitPart {
  std::string_view name;   // relative to the layer, e.g. "self_attn.q_proj.weight"
  Role role;
  Dim rows;
};
struct SplitRule {
  std::string_view name;   // relative to the layer, e.g. "self_attn.qkv_proj.weight"
  std::array<SplitPart, 3> parts;
  size_t size;
  Dim cols;
  std::string_view rows_text;   // how the rows follow from the config, for errors
};

struct Architecture {
  std::string_view name;
  std::span<const TensorRule> tensors;
  std::span<const GroupRule> groups;
  std::span<const SiteRule> sites;
  BiasPolicy qkv_bias;
  std::span<const SplitRule> splits = {};
  const MoeRule* moe = nullptr;
};

// The Llama decoder layout, shared by Llama, Mistral and Qwen2 (which differ in the bias policy).
constexpr auto kLlamaTensors = [] {
  using enum Scope;
  using enum Role;
  using enum ParamKind;
  using enum Dim;
  using enum Presence;
  // clang-format off
  return std::to_array<TensorRule>({
  // scope  name                               role       kind    shape               presence
  {Global, "model.embed_tokens.weight",       Embedding, Weight, mat(Vocab, Hidden), Required},
  {Global, "model.norm.weight",               Norm,      Weight, vec(Hidden),        Required},
  {Global, "lm_head.weight",                  LmHead,    Weight, mat(Vocab, Hidden), UnlessTied},
  {Layer,  "input_layernorm.weight",          Norm,      Weight, vec(Hidden),        Required},
  {Layer,  "self_attn.q_proj.weight",         Q,         Weight, mat(QOut, Hidden),  Required},
  {Layer,  "self_attn.k_proj.weight",         K,         Weight, mat(KvOut, Hidden), Required},
  {Layer,  "self_attn.v_proj.weight",         V,         Weight, mat(KvOut, Hidden), Required},
  {Layer,  "self_attn.q_proj.bias",           Q,         Bias,   vec(QOut),          AttentionBias},
  {Layer,  "self_attn.k_proj.bias",           K,         Bias,   vec(KvOut),         AttentionBias},
  {Layer,  "self_attn.v_proj.bias",           V,         Bias,   vec(KvOut),         AttentionBias},
  {Layer,  "self_attn.o_proj.weight",         O,         Weight, mat(Hidden, QOut),  Required},
  {Layer,  "self_attn.o_proj.bias",           O,         Bias,   vec(Hidden),        OutputBias},
  {Layer,  "self_attn.rotary_emb.inv_freq",   Other,     Weight, vec(HalfHead),      Optional},
  {Layer,  "post_attention_layernorm.weight", Norm,      Weight, vec(Hidden),        Required},
  {Layer,  "mlp.gate_proj.weight",            Gate,      Weight, mat(Inter, Hidden), Required},
  {Layer,  "mlp.up_proj.weight",              Up,        Weight, mat(Inter, Hidden), Required},
  {Layer,  "mlp.down_proj.weight",            Down,      Weight, mat(Hidden, Inter), Required},
  {Layer,  "mlp.gate_proj.bias",              Gate,      Bias,   vec(Inter),         MlpBias},
  {Layer,  "mlp.up_proj.bias",                Up,        Bias,   vec(Inter),         MlpBias},
  {Layer,  "mlp.down_proj.bias",              Down,      Bias,   vec(Hidden),        MlpBias},
  });
  // clang-format on
}();

// Qwen3: the Llama layout with a per-head RMSNorm of the queries and keys before RoPE.
constexpr auto kQwen3Tensors = [] {
  using enum Scope;
  using enum Role;
  using enum ParamKind;
  using enum Dim;
  using enum Presence;
  std::array<TensorRule, kLlamaTensors.size() + 2> out{};
  for (size_t i = 0; i < kLlamaTensors.size(); ++i) out[i] = kLlamaTensors[i];
  out[kLlamaTensors.size()] = {Layer, "self_attn.q_norm.weight", QNorm, Weight, vec(Head), Required};
  out[kLlamaTensors.size() + 1] = {Layer, "self_attn.k_norm.weight", KNorm, Weight, vec(Head), Required};
  return out;
}();

// Gemma 3 (text): q/k norms, and four norms per layer: input_layernorm feeds q/k/v, post_attention_layernorm
// normalizes the attention output before the residual add, pre_feedforward_layernorm feeds gate/up,
// post_feedforward_layernorm normalizes the MLP output. No MLP biases.
constexpr auto kGemma3Tensors = [] {
  using enum Scope;
  using enum Role;
  using enum ParamKind;
  using enum Dim;
  using enum Presence;
  // clang-format off
  return std::to_array<TensorRule>({
  {Global, "model.embed_tokens.weight",         Embedding,   Weight, mat(Vocab, Hidden), Required},
  {Global, "model.norm.weight",                 Norm,        Weight, vec(Hidden),        Required},
  {Global, "lm_head.weight",                    LmHead,      Weight, mat(Vocab, Hidden), UnlessTied},
  {Layer,  "input_layernorm.weight",            Norm,        Weight, vec(Hidden),        Required},
  {Layer,  "self_attn.q_proj.weight",           Q,           Weight, mat(QOut, Hidden),  Required},
  {Layer,  "self_attn.k_proj.weight",           K,           Weight, mat(KvOut, Hidden), Required},
  {Layer,  "self_attn.v_proj.weight",           V,           Weight, mat(KvOut, Hidden), Required},
  {Layer,  "self_attn.q_proj.bias",             Q,           Bias,   vec(QOut),          AttentionBias},
  {Layer,  "self_attn.k_proj.bias",             K,           Bias,   vec(KvOut),         AttentionBias},
  {Layer,  "self_attn.v_proj.bias",             V,           Bias,   vec(KvOut),         AttentionBias},
  {Layer,  "self_attn.o_proj.weight",           O,           Weight, mat(Hidden, QOut),  Required},
  {Layer,  "self_attn.o_proj.bias",             O,           Bias,   vec(Hidden),        OutputBias},
  {Layer,  "self_attn.q_norm.weight",           QNorm,       Weight, vec(Head),          Required},
  {Layer,  "self_attn.k_norm.weight",           KNorm,       Weight, vec(Head),          Required},
  {Layer,  "post_attention_layernorm.weight",   AttnOutNorm, Weight, vec(Hidden),        Required},
  {Layer,  "pre_feedforward_layernorm.weight",  Norm,        Weight, vec(Hidden),        Required},
  {Layer,  "post_feedforward_layernorm.weight", MlpOutNorm,  Weight, vec(Hidden),        Required},
  {Layer,  "mlp.gate_proj.weight",              Gate,        Weight, mat(Inter, Hidden), Required},
  {Layer,  "mlp.up_proj.weight",                Up,          Weight, mat(Inter, Hidden), Required},
  {Layer,  "mlp.down_proj.weight",              Down,        Weight, mat(Hidden, Inter), Required},
  });
  // clang-format on
}();

// Phi-3: Llama's layer with q|k|v fused into qkv_proj and gate|up into gate_up_proj (transformers' Phi3Attention
// slices q, k, v from qkv_proj's output in that order; Phi3MLP chunks gate_up_proj's output into gate, up). No biases.
constexpr auto kPhi3Tensors = [] {
  using enum Scope;
  using enum Role;
  using enum ParamKind;
  using enum Dim;
  using enum Presence;
  // clang-format off
  return std::to_array<TensorRule>({
  {Global, "model.embed_tokens.weight",       Embedding, Weight, mat(Vocab, Hidden), Required},
  {Global, "model.norm.weight",               Norm,      Weight, vec(Hidden),        Required},
  {Global, "lm_head.weight",                  LmHead,    Weight, mat(Vocab, Hidden), UnlessTied},
  {Layer,  "input_layernorm.weight",          Norm,      Weight, vec(Hidden),        Required},
  {Layer,  "self_attn.o_proj.weight",         O,         Weight, mat(Hidden, QOut),  Required},
  {Layer,  "self_attn.rotary_emb.inv_freq",   Other,     Weight, vec(HalfHead),      Optional},
  {Layer,  "post_attention_layernorm.weight", Norm,      Weight, vec(Hidden),        Required},
  {Layer,  "mlp.down_proj.weight",            Down,      Weight, mat(Hidden, Inter), Required},
  });
  // clang-format on
}();
constexpr SplitRule kPhi3Splits[] = {
    {"self_attn.qkv_proj.weight",
     {{{"self_attn.q_proj.weight", Role::Q, Dim::QOut},
       {"self_attn.k_proj.weight", Role::K, Dim::KvOut},
       {"self_attn.v_proj.weight", Role::V, Dim::KvOut}}},
     3, Dim::Hidden, "(num_attention_heads + 2 * num_key_value_heads) * head_dim"},
    {"mlp.gate_up_proj.weight",
     {{{"mlp.gate_proj.weight", Role::Gate, Dim::Inter}, {"mlp.up_proj.weight", Role::Up, Dim::Inter}, {}}},
     2, Dim::Hidden, "2 * intermediate_size"},
};

constexpr GroupRule kQkv = {
    {"self_attn.q_proj.weight", "self_attn.k_proj.weight", "self_attn.v_proj.weight"}, 3};
constexpr GroupRule kGateUp = {{"mlp.gate_proj.weight", "mlp.up_proj.weight", ""}, 2, true};

// Mixtral: Mistral's attention (no biases), every layer sparse: block_sparse_moe.gate [experts, hidden] and
// experts w1 (gate), w3 (up), w2 (down).
constexpr auto kMixtralTensors = [] {
  using enum Scope;
  using enum Role;
  using enum ParamKind;
  using enum Dim;
  using enum Presence;
  // clang-format off
  return std::to_array<TensorRule>({
  {Global, "model.embed_tokens.weight",       Embedding, Weight, mat(Vocab, Hidden),   Required},
  {Global, "model.norm.weight",               Norm,      Weight, vec(Hidden),          Required},
  {Global, "lm_head.weight",                  LmHead,    Weight, mat(Vocab, Hidden),   UnlessTied},
  {Layer,  "input_layernorm.weight",          Norm,      Weight, vec(Hidden),          Required},
  {Layer,  "self_attn.q_proj.weight",         Q,         Weight, mat(QOut, Hidden),    Required},
  {Layer,  "self_attn.k_proj.weight",         K,         Weight, mat(KvOut, Hidden),   Required},
  {Layer,  "self_attn.v_proj.weight",         V,         Weight, mat(KvOut, Hidden),   Required},
  {Layer,  "self_attn.o_proj.weight",         O,         Weight, mat(Hidden, QOut),    Required},
  {Layer,  "self_attn.rotary_emb.inv_freq",   Other,     Weight, vec(HalfHead),        Optional},
  {Layer,  "post_attention_layernorm.weight", Norm,      Weight, vec(Hidden),          Required},
  {Layer,  "block_sparse_moe.gate.weight",    Router,    Weight, mat(Experts, Hidden), Required, Only::SparseLayer},
  });
  // clang-format on
}();
constexpr auto kMixtralExperts = [] {
  using enum Scope;
  using enum Role;
  using enum ParamKind;
  using enum Dim;
  using enum Presence;
  return std::to_array<TensorRule>({
      {Expert, "w1.weight", Gate, Weight, mat(MoeInter, Hidden), Required, Only::SparseLayer},
      {Expert, "w3.weight", Up, Weight, mat(MoeInter, Hidden), Required, Only::SparseLayer},
      {Expert, "w2.weight", Down, Weight, mat(Hidden, MoeInter), Required, Only::SparseLayer},
  });
}();
constexpr MoeRule kMixtralMoe = {"block_sparse_moe.experts.", kMixtralExperts, {"w1.weight", "w3.weight"}};

// Qwen3-MoE: Qwen3's layout; the dense MLP only on the layers mlp_only_layers / decoder_sparse_step leave dense,
// the sparse ones mlp.gate [experts, hidden] and experts gate_proj / up_proj / down_proj.
constexpr auto kQwen3MoeTensors = [] {
  using enum Scope;
  using enum Role;
  using enum ParamKind;
  using enum Dim;
  using enum Presence;
  std::array<TensorRule, kQwen3Tensors.size() + 1> out{};
  for (size_t i = 0; i < kQwen3Tensors.size(); ++i) {
    out[i] = kQwen3Tensors[i];
    if (out[i].name.starts_with("mlp.")) out[i].only = Only::DenseLayer;
  }
  out[kQwen3Tensors.size()] = {Layer, "mlp.gate.weight", Router, Weight, mat(Experts, Hidden), Required,
                               Only::SparseLayer};
  return out;
}();
constexpr auto kQwen3MoeExperts = [] {
  using enum Scope;
  using enum Role;
  using enum ParamKind;
  using enum Dim;
  using enum Presence;
  return std::to_array<TensorRule>({
      {Expert, "gate_proj.weight", Gate, Weight, mat(MoeInter, Hidden), Required, Only::SparseLayer},
      {Expert, "up_proj.weight", Up, Weight, mat(MoeInter, Hidden), Required, Only::SparseLayer},
      {Expert, "down_proj.weight", Down, Weight, mat(Hidden, MoeInter), Required, Only::SparseLayer},
  });
}();
constexpr MoeRule kQwen3MoeMoe = {"mlp.experts.", kQwen3MoeExperts, {"gate_proj.weight", "up_proj.weight"}};

constexpr GroupRule kLlamaGroups[] = {kQkv, kGateUp};
constexpr SiteRule kGemma3Sites[] = {
    {"input_layernorm.weight", kQkv},
    {"pre_feedforward_layernorm.weight", kGateUp},
};
constexpr SiteRule kLlamaSites[] = {  // (the MLP site of a sparse layer feeds its experts' gate/up instead)
    {"input_layernorm.weight", kQkv},
    {"post_attention_layernorm.weight", kGateUp},
};

// Sorted by name: the order of supported_architectures() and of error messages.
constexpr Architecture kArchitectures[] = {
    {"Gemma3ForCausalLM", kGemma3Tensors, kLlamaGroups, kGemma3Sites, BiasPolicy::FromConfig},
    {"LlamaForCausalLM", kLlamaTensors, kLlamaGroups, kLlamaSites, BiasPolicy::FromConfig},
    {"MistralForCausalLM", kLlamaTensors, kLlamaGroups, kLlamaSites, BiasPolicy::Never},
    {"MixtralForCausalLM", kMixtralTensors, kLlamaGroups, kLlamaSites, BiasPolicy::Never, {}, &kMixtralMoe},
    {"Phi3ForCausalLM", kPhi3Tensors, kLlamaGroups, kLlamaSites, BiasPolicy::Never, kPhi3Splits},
    {"Qwen2ForCausalLM", kLlamaTensors, kLlamaGroups, kLlamaSites, BiasPolicy::QkvAlways},
    {"Qwen3ForCausalLM", kQwen3Tensors, kLlamaGroups, kLlamaSites, BiasPolicy::FromConfig},
    {"Qwen3MoeForCausalLM", kQwen3MoeTensors, kLlamaGroups, kLlamaSites, BiasPolicy::FromConfig, {}, &kQwen3MoeMoe},
};

constexpr auto kArchitectureNames = [] {
  std::array<std::string_view, std::size(kArchitectures)> names{};
  for (size_t i = 0; i < names.size(); ++i) names[i] = kArchitectures[i].name;
  return names;
}();

constexpr std::string_view kLayerPrefix = "model.layers.";

const Architecture* find_architecture(std::string_view name) {
  for (const Architecture& a : kArchitectures)
    if (a.name == name) return &a;
  return nullptr;
}

std::string shape_str(std::span<const int64_t> shape) {
  std::string s = "[";
  for (size_t i = 0; i < shape.size(); ++i) {
    if (i) s += ", ";
    s += std::to_string(shape[i]);
  }
  return s + "]";
}

std::vector<int64_t> expected_shape(const ShapeSpec& spec, const ir::ModelConfig& c) {
  std::vector<int64_t> out;
  for (size_t i = 0; i < spec.rank; ++i) out.push_back(dim_size(spec.dims[i], c));
  return out;
}

std::string layer_name(int64_t layer, std::string_view rel) {
  return std::string(kLayerPrefix) + std::to_string(layer) + "." + std::string(rel);
}

// The owning module: the name without its last component (".weight", ".bias", ".inv_freq").
std::string module_of(std::string_view name) {
  size_t dot = name.rfind('.');
  return std::string(dot == std::string_view::npos ? name : name.substr(0, dot));
}

bool allowed_dtype(DType t) { return t == DType::BF16 || t == DType::F16 || t == DType::F32; }

struct Match {
  const TensorRule* rule = nullptr;
  const SplitRule* split = nullptr;   // a fused per-layer tensor instead of a rule
  std::optional<int64_t> layer;
  std::optional<int64_t> expert;
  bool bad_layer_index = false;
  bool bad_expert_index = false;  // "model.layers.X." with X not a canonical decimal in range
};

// The one place tensor names are matched: exact global names, or "model.layers.{i}." followed by
// an exact per-layer name.
class NameMatcher {
 public:
  explicit NameMatcher(const Architecture& arch) {
    for (const TensorRule& r : arch.tensors)
      (r.scope == Scope::Global ? global_ : layer_).emplace(r.name, &r);
    for (const SplitRule& r : arch.splits) split_.emplace(r.name, &r);
    if (arch.moe) {
      experts_ = arch.moe->experts;
      for (const TensorRule& r : arch.moe->expert_tensors) expert_.emplace(r.name, &r);
    }
  }

  // A decimal index as transformers writes it: digits, no leading zero.
  static std::optional<int64_t> parse_index(std::string_view digits) {
    int64_t v = 0;
    auto [end, ec] = std::from_chars(digits.data(), digits.data() + digits.size(), v);
    bool canonical =
        !digits.empty() && (digits.size() == 1 || digits[0] != '0') &&
        std::all_of(digits.begin(), digits.end(), [](char c) { return c >= '0' && c <= '9'; });
    if (!canonical || ec != std::errc() || end != digits.data() + digits.size()) return std::nullopt;
    return v;
  }

  Match match(std::string_view name) const {
    Match m;
    if (auto it = global_.find(name); it != global_.end()) {
      m.rule = it->second;
      return m;
    }
    if (!name.starts_with(kLayerPrefix)) return m;
    std::string_view rest = name.substr(kLayerPrefix.size());
    size_t dot = rest.find('.');
    if (dot == std::string_view::npos) return m;
    std::string_view digits = rest.substr(0, dot);
    std::string_view within = rest.substr(dot + 1);
    if (auto it = layer_.find(within); it != layer_.end()) {
      m.rule = it->second;
    } else if (auto split = split_.find(within); split != split_.end()) {
      m.split = split->second;
    } else {
      if (experts_.empty() || !within.starts_with(experts_)) return m;
      std::string_view e_rest = within.substr(experts_.size());
      size_t e_dot = e_rest.find('.');
      if (e_dot == std::string_view::npos) return m;
      auto e_it = expert_.find(e_rest.substr(e_dot + 1));
      if (e_it == expert_.end()) return m;
      auto e = parse_index(e_rest.substr(0, e_dot));
      m.rule = e_it->second;
      if (!e) {
        m.bad_expert_index = true;
        return m;
      }
      m.expert = *e;
    }
    auto layer = parse_index(digits);
    if (!layer) {
      m.bad_layer_index = true;
      return m;
    }
    m.layer = *layer;
    return m;
  }

 private:
  std::map<std::string_view, const TensorRule*, std::less<>> global_;
  std::map<std::string_view, const TensorRule*, std::less<>> layer_;
  std::map<std::string_view, const SplitRule*, std::less<>> split_;
  std::map<std::string_view, const TensorRule*, std::less<>> expert_;
  std::string_view experts_;
};

class Classifier {
 public:
  Classifier(const Architecture& arch, const ir::ModelConfig& config, const std::string& dir)
      : arch_(arch),
        config_(config),
        dir_(dir),
        matcher_(arch),
        qkv_bias_(arch.qkv_bias == BiasPolicy::QkvAlways ||
                  (arch.qkv_bias == BiasPolicy::FromConfig && config.attention_bias)),
        o_bias_(arch.qkv_bias == BiasPolicy::FromConfig && config.attention_bias),
        mlp_bias_(config.mlp_bias) {}

  Expected<ir::Model> run(std::span<const TensorHeader> tensors) {
    ir::Model model;
    model.config = config_;
    for (const TensorHeader& t : tensors) FP4C_TRY(add(model, t));
    FP4C_TRY(check_complete(model));
    FP4C_TRY(link(model));
    return model;
  }

 private:
  Error error(const std::string& what) const {
    return make_error(dir_.empty() ? what : dir_ + ": " + what);
  }
  std::string quoted(std::string_view name) const { return "'" + std::string(name) + "'"; }

  Status add(ir::Model& model, const TensorHeader& t) {
    Match m = matcher_.match(t.name);
    if (m.bad_layer_index)
      return error("tensor " + quoted(t.name) + " has a malformed layer index");
    if (m.bad_expert_index)
      return error("tensor " + quoted(t.name) + " has a malformed expert index");
    if (!m.rule && !m.split) {
      if (arch_.moe && (t.name.ends_with(".experts.gate_up_proj") || t.name.ends_with(".experts.down_proj")))
        return error("tensor " + quoted(t.name) + " holds every expert in one 3-D tensor (transformers' in-memory "
                     "form); fp4c reads the per-expert tensors save_pretrained writes (" +
                     std::string(arch_.moe->experts) + "{e}." + std::string(arch_.moe->gate_up[0]) + ", ...)");
      return error("unknown tensor " + quoted(t.name) + " (not in the " + std::string(arch_.name) +
                   " table)");
    }
    if (m.split) return add_split(model, t, *m.split, *m.layer);
    const TensorRule& r = *m.rule;
    if (m.layer && *m.layer >= config_.num_hidden_layers)
      return error("tensor " + quoted(t.name) + " has layer index " + std::to_string(*m.layer) +
                   ", but num_hidden_layers is " + std::to_string(config_.num_hidden_layers));
    if (m.expert && *m.expert >= config_.num_experts)
      return error("tensor " + quoted(t.name) + " has expert index " + std::to_string(*m.expert) +
                   ", but the config has " + std::to_string(config_.num_experts) + " experts");
    if (m.layer && r.only == Only::SparseLayer && !config_.moe_layer(*m.layer))
      return error("unexpected tensor " + quoted(t.name) + ": layer " + std::to_string(*m.layer) +
                   " is a dense MLP layer (mlp_only_layers / decoder_sparse_step)");
    if (m.layer && r.only == Only::DenseLayer && config_.moe_layer(*m.layer))
      return error("unexpected tensor " + quoted(t.name) + ": layer " + std::to_string(*m.layer) +
                   " is a sparse MoE layer (its MLP is a router and experts)");
    if (r.presence == Presence::AttentionBias && !qkv_bias_)
      return error("unexpected tensor " + quoted(t.name) + ": " + std::string(arch_.name) +
                   (arch_.qkv_bias == BiasPolicy::Never ? " has no q/k/v biases"
                                                       : " with attention_bias false has no q/k/v biases"));
    if (r.presence == Presence::OutputBias && !o_bias_)
      return error("unexpected tensor " + quoted(t.name) + ": " + std::string(arch_.name) +
                   (arch_.qkv_bias == BiasPolicy::FromConfig ? " with attention_bias false" : "") +
                   " has no o_proj bias");
    if (r.presence == Presence::MlpBias && !mlp_bias_)
      return error("unexpected tensor " + quoted(t.name) + ": " + std::string(arch_.name) +
                   " with mlp_bias false has no MLP biases");
    if (model.find(t.name)) return error("duplicate tensor " + quoted(t.name));
    if (!allowed_dtype(t.dtype))
      return error("tensor " + quoted(t.name) + " has dtype " + std::string(dtype_name(t.dtype)) +
                   "; weights must be BF16, F16 or F32");
    std::vector<int64_t> want = expected_shape(r.shape, config_);
    if (t.shape != want)
      return error("tensor " + quoted(t.name) + " has shape " + shape_str(t.shape) + ", expected " +
                   shape_str(want));

    ir::TensorInfo info;
    info.name = t.name;
    info.module = module_of(t.name);
    info.dtype = t.dtype;
    info.shape = t.shape;
    info.role = r.role;
    info.kind = r.kind;
    if (m.layer) info.layer = int(*m.layer);
    if (m.expert) info.expert = int(*m.expert);
    model.add(std::move(info));
    return {};
  }

  // A fused tensor: checked whole against the config (rows = the parts' rows), then entered as its parts, each a
  // row slice under its unfused name.
  Status add_split(ir::Model& model, const TensorHeader& t, const SplitRule& r, int64_t layer) {
    if (layer >= config_.num_hidden_layers)
      return error("tensor " + quoted(t.name) + " has layer index " + std::to_string(layer) +
                   ", but num_hidden_layers is " + std::to_string(config_.num_hidden_layers));
    if (!allowed_dtype(t.dtype))
      return error("tensor " + quoted(t.name) + " has dtype " + std::string(dtype_name(t.dtype)) +
                   "; weights must be BF16, F16 or F32");
    int64_t rows = 0;
    for (size_t i = 0; i < r.size; ++i) rows += dim_size(r.parts[i].rows, config_);
    const std::vector<int64_t> want{rows, dim_size(r.cols, config_)};
    if (t.shape != want)
      return error("tensor " + quoted(t.name) + " has shape " + shape_str(t.shape) + ", expected " + shape_str(want) +
                   " (" + std::string(r.rows_text) + " rows, as the fused parts of the config's shapes)");
    int64_t row = 0;
    for (size_t i = 0; i < r.size; ++i) {
      const SplitPart& part = r.parts[i];
      ir::TensorInfo info;
      info.name = layer_name(layer, part.name);
      if (model.find(info.name)) return error("duplicate tensor " + quoted(t.name));
      info.module = module_of(info.name);
      info.dtype = t.dtype;
      info.shape = {dim_size(part.rows, config_), want[1]};
      info.role = part.role;
      info.kind = ParamKind::Weight;
      info.layer = int(layer);
      info.stored_in = ir::TensorInfo::StoredSlice{t.name, module_of(t.name), row, rows};
      row += info.shape[0];
      model.add(std::move(info));
    }
    return {};
  }

  bool required(const TensorRule& r) const {
    switch (r.presence) {
      case Presence::Required: return true;
      case Presence::AttentionBias: return qkv_bias_;
      case Presence::OutputBias: return o_bias_;
      case Presence::MlpBias: return mlp_bias_;
      case Presence::UnlessTied: return !config_.tie_word_embeddings;
      case Presence::Optional: return false;
    }
    return true;
  }

  bool on_layer(const TensorRule& r, int64_t layer) const {
    if (r.only == Only::Any) return true;
    return (r.only == Only::SparseLayer) == config_.moe_layer(layer);
  }

  std::string expert_name(int64_t layer, int64_t expert, std::string_view rel) const {
    return layer_name(layer, std::string(arch_.moe->experts) + std::to_string(expert) + "." + std::string(rel));
  }

  Status missing(const std::string& name) const {
    return error("missing tensor " + quoted(name) + " (" + std::string(arch_.name) + ")");
  }

  Status check_complete(ir::Model& model) const {
    for (const TensorRule& r : arch_.tensors) {
      if (r.scope != Scope::Global) continue;
      bool present = model.find(r.name).has_value();
      if (!present && required(r)) return missing(std::string(r.name));
      if (r.presence == Presence::UnlessTied) model.tied_lm_head = !present;
    }
    for (int64_t layer = 0; layer < config_.num_hidden_layers; ++layer) {
      for (const TensorRule& r : arch_.tensors) {
        if (r.scope != Scope::Layer || !required(r) || !on_layer(r, layer)) continue;
        std::string name = layer_name(layer, r.name);
        if (!model.find(name)) return missing(name);
      }
      if (!arch_.moe || !config_.moe_layer(layer)) continue;
      for (int64_t e = 0; e < config_.num_experts; ++e)
        for (const TensorRule& r : arch_.moe->expert_tensors) {
          std::string name = expert_name(layer, e, r.name);
          if (!model.find(name)) return missing(name);
        }
    }
    for (int64_t layer = 0; layer < config_.num_hidden_layers; ++layer)
      for (const SplitRule& r : arch_.splits)
        if (!model.find(layer_name(layer, r.parts[0].name))) return missing(layer_name(layer, r.name));
    return {};
  }

  // Group members and site consumers are required weights, present once check_complete passed.
  Expected<std::vector<ir::TensorId>> ids(const ir::Model& model, int64_t layer,
                                          const GroupRule& g) const {
    std::vector<ir::TensorId> out;
    for (size_t i = 0; i < g.size; ++i) {
      std::string name = layer_name(layer, g.members[i]);
      auto id = model.find(name);
      if (!id) return missing(name).error();
      out.push_back(*id);
    }
    return out;
  }

  Status link(ir::Model& model) const {
    for (int64_t layer = 0; layer < config_.num_hidden_layers; ++layer) {
      const bool sparse = arch_.moe && config_.moe_layer(layer);
      // A sparse layer's experts: each one's {gate, up} group, and all of them, expert by expert, the MLP site's
      // consumers.
      std::vector<ir::TensorId> expert_inputs;
      for (int64_t e = 0; sparse && e < config_.num_experts; ++e) {
        std::vector<ir::TensorId> members;
        for (std::string_view rel : arch_.moe->gate_up) {
          std::string name = expert_name(layer, e, rel);
          auto id = model.find(name);
          if (!id) return missing(name);
          members.push_back(*id);
        }
        expert_inputs.insert(expert_inputs.end(), members.begin(), members.end());
        model.fused_groups.push_back(ir::FusedGroup{std::move(members)});
      }
      for (const GroupRule& g : arch_.groups) {
        if (sparse && g.dense_mlp) continue;
        FP4C_ASSIGN(auto members, ids(model, layer, g));
        model.fused_groups.push_back(ir::FusedGroup{std::move(members)});
      }
      for (const SiteRule& s : arch_.sites) {
        std::string producer = layer_name(layer, s.producer);
        auto id = model.find(producer);
        if (!id) return missing(producer);
        if (sparse && s.consumers.dense_mlp) {
          model.sites.push_back(ir::ActivationSite{*id, expert_inputs});
          continue;
        }
        FP4C_ASSIGN(auto consumers, ids(model, layer, s.consumers));
        model.sites.push_back(ir::ActivationSite{*id, std::move(consumers)});
      }
    }
    return {};
  }

  const Architecture& arch_;
  const ir::ModelConfig& config_;
  const std::string& dir_;
  NameMatcher matcher_;
  bool qkv_bias_, o_bias_, mlp_bias_;
};

}  // namespace

std::span<const std::string_view> supported_architectures() { return kArchitectureNames; }

bool is_supported_architecture(std::string_view arch) { return find_architecture(arch) != nullptr; }

Expected<ir::Model> classify(const ir::ModelConfig& config, std::span<const TensorHeader> tensors,
                             const std::string& checkpoint_dir) {
  const Architecture* arch = find_architecture(config.architecture);
  if (!arch) {
    std::string list;
    for (std::string_view a : supported_architectures())
      list += (list.empty() ? "" : ", ") + std::string(a);
    return make_error(checkpoint_dir + ": unsupported architecture " + config.architecture +
                      " (supported: " + list + ")");
  }
  return Classifier(*arch, config, checkpoint_dir).run(tensors);
}

}  // namespace fp4c::frontend
