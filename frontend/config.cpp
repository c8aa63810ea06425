#include "frontend/config.h"

#include <cerrno>
#include <cmath>
#include <cstring>
#include <fstream>
#include <algorithm>
#include <limits>
#include <nlohmann/json.hpp>
#include <optional>
#include <sstream>

#include "formats/json_input.h"
#include "frontend/architecture.h"

namespace fp4c::frontend {
namespace {

using nlohmann::json;

using json_input::type_of;

// Typed access to one JSON object; every error names the file and the key. A key present with
// the value null counts as absent, as transformers writes optional fields that way.
class Reader {
 public:
  Reader(const json& obj, const std::string& path, std::string prefix = "")
      : obj_(obj), path_(path), prefix_(std::move(prefix)) {}

  Error error(const std::string& what) const { return make_error(path_ + ": " + what); }
  std::string key_name(std::string_view key) const {
    return "'" + prefix_ + std::string(key) + "'";
  }
  Error missing(std::string_view key) const {
    return error("missing required key " + key_name(key));
  }
  Error mistyped(std::string_view key, std::string_view want, const json& v) const {
    return error("key " + key_name(key) + " must be " + std::string(want) + ", got " + type_of(v));
  }

  // Present at all, null included (an explicit null can differ from the config class's default).
  bool has(std::string_view key) const { return obj_.find(key) != obj_.end(); }

  const json* get(std::string_view key) const {
    auto it = obj_.find(key);
    if (it == obj_.end() || it->is_null()) return nullptr;
    return &*it;
  }

  Expected<std::optional<int64_t>> opt_int(std::string_view key) const {
    const json* v = get(key);
    if (!v) return std::optional<int64_t>();
    if (!v->is_number_integer()) return mistyped(key, "an integer", *v);
    if (v->is_number_unsigned() &&
        v->get<uint64_t>() > uint64_t(std::numeric_limits<int64_t>::max()))
      return error("key " + key_name(key) + " is out of range");
    return std::optional<int64_t>(v->get<int64_t>());
  }
  Expected<int64_t> int_(std::string_view key) const {
    FP4C_ASSIGN(auto v, opt_int(key));
    if (!v) return missing(key);
    return *v;
  }
  // A size: a strictly positive integer.
  Expected<int64_t> size(std::string_view key) const {
    FP4C_ASSIGN(int64_t v, int_(key));
    if (v <= 0)
      return error("key " + key_name(key) + " must be positive, got " + std::to_string(v));
    return v;
  }
  Expected<std::optional<int64_t>> opt_size(std::string_view key) const {
    FP4C_ASSIGN(auto v, opt_int(key));
    if (v && *v <= 0)
      return error("key " + key_name(key) + " must be positive, got " + std::to_string(*v));
    return v;
  }

  Expected<std::optional<double>> opt_number(std::string_view key) const {
    const json* v = get(key);
    if (!v) return std::optional<double>();
    if (!v->is_number()) return mistyped(key, "a number", *v);
    return std::optional<double>(v->get<double>());
  }
  Expected<double> number(std::string_view key) const {
    FP4C_ASSIGN(auto v, opt_number(key));
    if (!v) return missing(key);
    return *v;
  }
  Expected<double> positive(std::string_view key, std::optional<double> fallback) const {
    FP4C_ASSIGN(auto v, opt_number(key));
    if (!v) v = fallback;
    if (!v) return missing(key);
    if (!(*v > 0)) {
      std::ostringstream s;
      s << "key " << key_name(key) << " must be positive, got " << *v;
      return error(s.str());
    }
    return *v;
  }

  Expected<std::optional<bool>> opt_bool(std::string_view key) const {
    const json* v = get(key);
    if (!v) return std::optional<bool>();
    if (!v->is_boolean()) return mistyped(key, "a boolean", *v);
    return std::optional<bool>(v->get<bool>());
  }

  Expected<std::optional<std::string>> opt_string(std::string_view key) const {
    const json* v = get(key);
    if (!v) return std::optional<std::string>();
    if (!v->is_string()) return mistyped(key, "a string", *v);
    return std::optional<std::string>(v->get<std::string>());
  }

 private:
  const json& obj_;
  const std::string& path_;
  std::string prefix_;
};

std::string supported_list() {
  std::string out;
  for (std::string_view a : supported_architectures()) {
    if (!out.empty()) out += ", ";
    out += a;
  }
  return out;
}

Expected<std::string> read_architecture(const Reader& r, const json& root) {
  auto it = root.find("architectures");
  if (it == root.end() || it->is_null()) return r.missing("architectures");
  if (!it->is_array()) return r.mistyped("architectures", "an array", *it);
  if (it->size() != 1)
    return r.error("key 'architectures' must hold exactly one entry, got " +
                   std::to_string(it->size()));
  const json& a = (*it)[0];
  if (!a.is_string()) return r.error("key 'architectures' must hold a string, got " + type_of(a));
  std::string arch = a.get<std::string>();
  if (!is_supported_architecture(arch))
    return r.error("unsupported architecture " + arch + " (supported: " + supported_list() + ")");
  return arch;
}

// YaRN (Qwen3 and Qwen2.5 long context, DeepSeek): as transformers 5's _compute_yarn_parameters resolves it.
// original_max_position_embeddings from the object, else the config's top-level key, else
// max_position_embeddings; factor from the object, else max_position_embeddings / original.
Expected<ir::RopeScaling> read_yarn(const Reader& r, const std::string& key, const ir::ModelConfig& c) {
  ir::RopeScaling rs;
  rs.type = "yarn";
  FP4C_ASSIGN(auto original, r.opt_size("original_max_position_embeddings"));
  rs.original_max_position_embeddings = original.value_or(c.original_max_position_embeddings > 0
                                                               ? c.original_max_position_embeddings
                                                               : c.max_position_embeddings);
  FP4C_ASSIGN(auto factor, r.opt_number("factor"));
  if (factor && !(*factor > 0)) return r.error("key '" + key + ".factor' must be positive");
  rs.factor = factor ? *factor : double(c.max_position_embeddings) / double(rs.original_max_position_embeddings);
  FP4C_ASSIGN(auto fast, r.opt_number("beta_fast"));
  FP4C_ASSIGN(auto slow, r.opt_number("beta_slow"));
  // transformers: `get("beta_fast") or 32` (a 0 also means the default).
  rs.beta_fast = fast && *fast != 0 ? *fast : 32.0;
  rs.beta_slow = slow && *slow != 0 ? *slow : 1.0;
  if (!(rs.beta_fast > 0) || !(rs.beta_slow > 0))
    return r.error("keys '" + key + ".beta_fast' and '" + key + ".beta_slow' must be positive");
  FP4C_ASSIGN(auto truncate, r.opt_bool("truncate"));
  rs.truncate = truncate.value_or(true);
  auto mscale_of = [](double scale, double m) { return scale <= 1 ? 1.0 : 0.1 * m * std::log(scale) + 1.0; };
  FP4C_ASSIGN(auto attention, r.opt_number("attention_factor"));
  FP4C_ASSIGN(auto mscale, r.opt_number("mscale"));
  FP4C_ASSIGN(auto mscale_all, r.opt_number("mscale_all_dim"));
  if (attention) {
    if (!(*attention > 0)) return r.error("key '" + key + ".attention_factor' must be positive");
    rs.attention_factor = *attention;
  } else if (mscale && mscale_all && *mscale != 0 && *mscale_all != 0) {
    rs.attention_factor = mscale_of(rs.factor, *mscale) / mscale_of(rs.factor, *mscale_all);
  } else {
    rs.attention_factor = mscale_of(rs.factor, 1.0);
  }
  return rs;
}

// LongRoPE (Phi-3 128k, Phi-4-mini): as transformers 5's _compute_longrope_parameters resolves it.
// original_max_position_embeddings: the config's top-level key first (Phi-3 keeps it there), else the
// object's, else max_position_embeddings; factor from the object, else max_position_embeddings / original;
// attention factor given, else 1 for factor <= 1, else sqrt(1 + ln(factor) / ln(original)).
Expected<ir::RopeScaling> read_longrope(const Reader& r, const json& obj, const std::string& key,
                                        const ir::ModelConfig& c) {
  ir::RopeScaling rs;
  rs.type = "longrope";
  FP4C_ASSIGN(auto original, r.opt_size("original_max_position_embeddings"));
  rs.original_max_position_embeddings = c.original_max_position_embeddings > 0 ? c.original_max_position_embeddings
                                                                               : original.value_or(c.max_position_embeddings);
  FP4C_ASSIGN(auto factor, r.opt_number("factor"));
  if (factor && !(*factor > 0)) return r.error("key '" + key + ".factor' must be positive");
  rs.factor = factor ? *factor : double(c.max_position_embeddings) / double(rs.original_max_position_embeddings);
  FP4C_ASSIGN(auto attention, r.opt_number("attention_factor"));
  if (attention) {
    if (!(*attention > 0)) return r.error("key '" + key + ".attention_factor' must be positive");
    rs.attention_factor = *attention;
  } else {
    rs.attention_factor = rs.factor <= 1.0 ? 1.0
                                           : std::sqrt(1 + std::log(rs.factor) /
                                                               std::log(double(rs.original_max_position_embeddings)));
  }
  for (const char* name : {"short_factor", "long_factor"}) {
    const json* v = r.get(name);
    if (!v) return r.missing(name);
    if (!v->is_array()) return r.mistyped(name, "a list of numbers", *v);
    std::vector<double>& out = std::string(name) == "short_factor" ? rs.short_factor : rs.long_factor;
    for (const json& e : *v) {
      if (!e.is_number() || !(e.get<double>() > 0))
        return r.error("key '" + key + "." + name + "' must hold positive numbers");
      out.push_back(e.get<double>());
    }
    if (int64_t(out.size()) != c.rope_dim() / 2)
      return r.error("key '" + key + "." + name + "' has " + std::to_string(out.size()) +
                     " entries, expected rotary_dim / 2 = " + std::to_string(c.rope_dim() / 2));
  }
  (void)obj;
  return rs;
}

// The RoPE type and its parameters from one object: transformers 4's `rope_scaling` or transformers 5's
// `rope_parameters` (which also holds rope_theta). "default" (or none) is plain RoPE; linear, dynamic,
// llama3, yarn and longrope are implemented; every other type changes the math in a way fp4c does not
// implement, and is refused by name.
Expected<ir::RopeScaling> read_rope_object(const json& obj, const std::string& path, const std::string& key,
                                           const ir::ModelConfig& c) {
  ir::RopeScaling rs;
  Reader r(obj, path, key + ".");
  FP4C_ASSIGN(auto rope_type, r.opt_string("rope_type"));
  if (!rope_type) {
    FP4C_ASSIGN(auto type, r.opt_string("type"));
    rope_type = type;
  }
  if (!rope_type) {
    if (key == "rope_parameters") return rs;   // transformers 5 may leave it out for default RoPE
    return r.missing("rope_type");
  }
  if (c.architecture == "Phi3ForCausalLM") {
    // Phi3Config reads "su" and "yarn" as longrope and accepts only default and longrope.
    if (*rope_type == "su" || *rope_type == "yarn") rope_type = "longrope";
    if (*rope_type != "default" && *rope_type != "longrope")
      return r.error("unsupported RoPE type '" + *rope_type + "' in key '" + key +
                     "': Phi3ForCausalLM accepts default and longrope (su and yarn are read as longrope)");
  }
  if (*rope_type == "default") return rs;
  if (*rope_type == "linear" || *rope_type == "dynamic") {
    // linear: every frequency divided by the factor. dynamic (NTK): the base grows only once a sequence
    // passes max_position_embeddings, so within it the frequencies are the default ones; the runtime
    // refuses longer sequences.
    rs.type = *rope_type;
    FP4C_ASSIGN(rs.factor, r.positive("factor", std::nullopt));
    return rs;
  }
  if (*rope_type == "yarn") return read_yarn(r, key, c);
  if (*rope_type == "longrope") return read_longrope(r, obj, key, c);
  if (*rope_type != "llama3")
    return r.error("unsupported RoPE type '" + *rope_type + "' in key '" + key +
                   "' (supported: default, linear, dynamic, llama3, yarn, longrope); fp4c would compute another model");
  rs.type = *rope_type;
  FP4C_ASSIGN(rs.factor, r.positive("factor", std::nullopt));
  FP4C_ASSIGN(rs.low_freq_factor, r.positive("low_freq_factor", std::nullopt));
  FP4C_ASSIGN(rs.high_freq_factor, r.positive("high_freq_factor", std::nullopt));
  FP4C_ASSIGN(rs.original_max_position_embeddings, r.size("original_max_position_embeddings"));
  if (!(rs.low_freq_factor < rs.high_freq_factor))
    return r.error("key '" + key + ".low_freq_factor' must be below '" + key + ".high_freq_factor'");
  return rs;
}

// rope_theta and the RoPE type, in either form: transformers 4 writes `rope_theta` and `rope_scaling`,
// transformers 5 one `rope_parameters` object holding both (SmolLM2-135M-Instruct saved by transformers
// 5: {"rope_theta": 100000.0, "rope_type": "default"}, no top-level rope_theta). Both forms at once must
// agree. Without either, transformers' own default, 10000.
// Gemma 3: RoPE per layer type. transformers 5 writes rope_parameters {"full_attention": {...},
// "sliding_attention": {...}}; transformers 4 rope_theta (default 1e6) and rope_scaling for the full layers,
// rope_local_base_freq (default 1e4) for the sliding ones. The sliding layers' RoPE must be the default type.
Status read_gemma_rope(const Reader& r, const std::string& path, ir::ModelConfig& c) {
  const json* params = r.get("rope_parameters");
  const json* scaling = r.get("rope_scaling");
  if (scaling && !scaling->is_object()) return r.mistyped("rope_scaling", "an object or null", *scaling);
  FP4C_ASSIGN(auto top_theta, r.opt_number("rope_theta"));
  FP4C_ASSIGN(auto local_theta, r.opt_number("rope_local_base_freq"));
  c.rope_theta = top_theta.value_or(1e6);
  c.sliding_rope_theta = local_theta.value_or(1e4);
  c.rope_source = top_theta ? "rope_theta" : "default";
  if (scaling) {
    FP4C_ASSIGN(c.rope_scaling, read_rope_object(*scaling, path, "rope_scaling", c));
  }
  if (!params) return {};
  if (!params->is_object()) return r.mistyped("rope_parameters", "an object or null", *params);
  for (const auto& [k, v] : params->items())
    if (k != "full_attention" && k != "sliding_attention")
      return r.error("key 'rope_parameters' of a Gemma 3 config must be keyed by layer type (full_attention, "
                     "sliding_attention), got '" + k + "'");
  for (const char* type : {"full_attention", "sliding_attention"}) {
    auto it = params->find(type);
    if (it == params->end() || it->is_null()) continue;
    if (!it->is_object()) return r.mistyped(std::string("rope_parameters.") + type, "an object", *it);
    const std::string key = std::string("rope_parameters.") + type;
    Reader p(*it, path, key + ".");
    FP4C_ASSIGN(auto theta, p.opt_number("rope_theta"));
    if (theta && !(*theta > 0)) return r.error("key '" + key + ".rope_theta' must be positive");
    FP4C_ASSIGN(ir::RopeScaling rs, read_rope_object(*it, path, key, c));
    if (std::string(type) == "full_attention") {
      if (theta) {
        c.rope_theta = *theta;
        c.rope_source = "rope_parameters";
      }
      c.rope_scaling = rs;
    } else {
      if (!rs.type.empty())
        return r.error("key '" + key + ".rope_type' = '" + rs.type +
                       "': scaled RoPE on the sliding layers is not implemented (only the default type)");
      if (theta) c.sliding_rope_theta = *theta;
    }
  }
  return {};
}

Status read_rope(const Reader& r, const std::string& path, ir::ModelConfig& c) {
  if (c.architecture == "Gemma3ForCausalLM") return read_gemma_rope(r, path, c);
  FP4C_ASSIGN(auto top_theta, r.opt_number("rope_theta"));
  const json* params = r.get("rope_parameters");
  const json* scaling = r.get("rope_scaling");
  if (scaling && !scaling->is_object()) return r.mistyped("rope_scaling", "an object or null", *scaling);
  if (params) {
    if (!params->is_object()) return r.mistyped("rope_parameters", "an object or null", *params);
    // Gemma 3 keys it by layer type ({"full_attention": {...}, "sliding_attention": {...}}).
    for (const auto& [k, v] : params->items())
      if (v.is_object())
        return r.error("key 'rope_parameters' holds per-layer-type parameters ('" + k +
                       "'): RoPE per layer type is implemented for Gemma3ForCausalLM only");
    Reader p(*params, path, "rope_parameters.");
    FP4C_ASSIGN(auto theta, p.opt_number("rope_theta"));
    if (theta && top_theta && *theta != *top_theta)
      return r.error("keys 'rope_theta' and 'rope_parameters.rope_theta' disagree");
    if (theta) {
      FP4C_ASSIGN(c.rope_theta, p.positive("rope_theta", std::nullopt));
      c.rope_source = "rope_parameters";
    }
    FP4C_ASSIGN(c.rope_scaling, read_rope_object(*params, path, "rope_parameters", c));
    if (scaling) {
      FP4C_ASSIGN(auto other, read_rope_object(*scaling, path, "rope_scaling", c));
      if (other.type != c.rope_scaling.type || other.factor != c.rope_scaling.factor)
        return r.error("keys 'rope_scaling' and 'rope_parameters' disagree");
    }
  } else if (scaling) {
    FP4C_ASSIGN(c.rope_scaling, read_rope_object(*scaling, path, "rope_scaling", c));
  }
  if (c.rope_source.empty()) {
    // The config classes' own defaults: MixtralConfig's default_theta 1e6, the others' 10000.
    FP4C_ASSIGN(c.rope_theta, r.positive("rope_theta", c.architecture == "MixtralForCausalLM" ? 1e6 : 10000.0));
    c.rope_source = top_theta ? "rope_theta" : "default";
  }
  return {};
}

// Keys whose computation fp4c does not implement: refused by name when they would change the math.
Status refuse_unimplemented(const Reader& r, const ir::ModelConfig& c) {
  // transformers 5.25's Gemma3 attention keeps attn_logit_softcapping but passes no softcap to its attention
  // function, so the scores are never capped there (Gemma 2 capped them); fp4c cannot tell which model a config
  // setting it means, and refuses it. No other architecture fp4c reads has either key.
  if (r.get("attn_logit_softcapping"))
    return r.error("key 'attn_logit_softcapping': transformers' " + c.architecture +
                   " does not apply attention soft-capping (Gemma3 stores the key without using it); fp4c refuses a "
                   "config it cannot tell the meaning of");
  if (c.architecture != "Gemma3ForCausalLM" && r.get("final_logit_softcapping"))
    return r.error("key 'final_logit_softcapping' is not read by " + c.architecture +
                   "; fp4c refuses a config it cannot tell the meaning of");
  if (c.architecture != "Gemma3ForCausalLM" && r.get("query_pre_attn_scalar"))
    return r.error("key 'query_pre_attn_scalar' is not read by " + c.architecture +
                   "'s attention; fp4c refuses a config it cannot tell the meaning of");
  FP4C_ASSIGN(auto bidirectional, r.opt_bool("use_bidirectional_attention"));
  if (bidirectional.value_or(false))
    return r.error("key 'use_bidirectional_attention': bidirectional attention is not implemented");
  return {};
}

// partial_rotary_factor: top-level (transformers 4) or in rope_parameters (transformers 5; it wins, as Phi3Config's
// setdefault keeps it). Of the architectures fp4c reads only Phi3ForCausalLM applies it (its apply_rotary_pos_emb
// rotates the first rotary_dim dimensions and passes the rest); Llama-style attention cannot, so a factor other
// than 1 is refused there by name. rotary_dim = int(head_dim * factor), which must be even and positive.
Status read_partial_rotary(const Reader& r, const std::string& path, ir::ModelConfig& c) {
  FP4C_ASSIGN(auto top, r.opt_number("partial_rotary_factor"));
  std::optional<double> factor = top;
  const json* params = r.get("rope_parameters");
  if (params && params->is_object() && c.architecture != "Gemma3ForCausalLM") {
    Reader p(*params, path, "rope_parameters.");
    FP4C_ASSIGN(auto inner, p.opt_number("partial_rotary_factor"));
    if (inner && top && *inner != *top)
      return r.error("keys 'partial_rotary_factor' and 'rope_parameters.partial_rotary_factor' disagree");
    if (inner) factor = inner;
  } else if (params && params->is_object()) {
    for (const auto& [k, v] : params->items())
      if (v.is_object() && v.contains("partial_rotary_factor") && !v["partial_rotary_factor"].is_null() &&
          !(v["partial_rotary_factor"].is_number() && v["partial_rotary_factor"].get<double>() == 1.0))
        return r.error("key 'rope_parameters." + k + ".partial_rotary_factor': partial rotary embeddings are not "
                       "applied by " + c.architecture);
  }
  const double f = factor.value_or(1.0);
  if (f == 1.0) return {};
  if (c.architecture != "Phi3ForCausalLM") {
    std::ostringstream s;
    s << "key 'partial_rotary_factor' = " << f << ": " << c.architecture
      << " rotates the whole head; partial rotary embeddings are applied for Phi3ForCausalLM only";
    return r.error(s.str());
  }
  if (!(f > 0 && f <= 1)) {
    std::ostringstream s;
    s << "key 'partial_rotary_factor' = " << f << " must be in (0, 1]";
    return r.error(s.str());
  }
  const int64_t dim = int64_t(double(c.head_dim) * f);   // Python's int(): toward zero
  if (dim <= 0 || dim % 2 != 0) {
    std::ostringstream s;
    s << "key 'partial_rotary_factor' = " << f << " gives rotary_dim int(" << c.head_dim << " * " << f << ") = " << dim
      << ", which must be even and positive (RoPE rotates pairs)";
    return r.error(s.str());
  }
  c.partial_rotary_factor = f;
  c.rotary_dim = dim;
  return {};
}

// The MLP's activation: hidden_act (Llama, Qwen, Mistral) or hidden_activation (Gemma 3), SiLU or GELU with
// the tanh approximation (gelu_pytorch_tanh; "gelu_new" is the same function).
Status read_activation(const Reader& r, ir::ModelConfig& c) {
  const bool gemma = c.architecture == "Gemma3ForCausalLM";
  const std::string key = gemma ? "hidden_activation" : "hidden_act";
  FP4C_ASSIGN(auto act, r.opt_string(key));
  std::string a = act.value_or(gemma ? "gelu_pytorch_tanh" : "silu");
  if (a == "gelu_new") a = "gelu_pytorch_tanh";
  if (a != "silu" && a != "gelu_pytorch_tanh")
    return r.error("key '" + key + "': unsupported activation '" + a + "' (supported: silu, gelu_pytorch_tanh)");
  c.hidden_act = a;
  if (gemma) {
    FP4C_ASSIGN(auto other, r.opt_string("hidden_act"));   // Gemma3's MLP does not read it
    (void)other;
  } else {
    FP4C_ASSIGN(auto other, r.opt_string("hidden_activation"));
    if (other && *other != a)
      return r.error("key 'hidden_activation' = '" + *other + "' is not read by " + c.architecture +
                     " (it reads hidden_act = '" + a + "'); fp4c refuses a config it cannot tell the meaning of");
  }
  return {};
}

// Which layers use a sliding window, in the three ways configs say it.
Status read_sliding_window(const Reader& r, ir::ModelConfig& c) {
  FP4C_ASSIGN(auto window, r.opt_size("sliding_window"));
  FP4C_ASSIGN(auto use, r.opt_bool("use_sliding_window"));
  const int64_t L = c.num_hidden_layers;
  c.sliding_layers.assign(size_t(L), false);
  if (const json* types = r.get("layer_types")) {
    if (!types->is_array()) return r.mistyped("layer_types", "a list", *types);
    if (int64_t(types->size()) != L)
      return r.error("key 'layer_types' has " + std::to_string(types->size()) + " entries, but num_hidden_layers is " +
                     std::to_string(L));
    for (int64_t i = 0; i < L; ++i) {
      const json& t = (*types)[size_t(i)];
      if (!t.is_string()) return r.error("key 'layer_types' must hold strings, got " + type_of(t));
      const std::string s = t.get<std::string>();
      if (s == "sliding_attention") c.sliding_layers[size_t(i)] = true;
      else if (s != "full_attention")
        return r.error("key 'layer_types': unsupported layer type '" + s +
                       "' (supported: full_attention, sliding_attention)");
    }
  } else if (c.architecture == "Qwen2ForCausalLM" || c.architecture == "Qwen3ForCausalLM") {
    // Qwen2 and Qwen3: sliding only with use_sliding_window, and only from layer max_window_layers on.
    // Their config classes' own defaults: max_window_layers 28, sliding_window 4096.
    if (use.value_or(false)) {
      FP4C_ASSIGN(auto from, r.opt_int("max_window_layers"));
      for (int64_t i = std::max<int64_t>(from.value_or(28), 0); i < L; ++i) c.sliding_layers[size_t(i)] = true;
      if (!window && !r.has("sliding_window")) window = 4096;
    }
  } else if (c.architecture == "Gemma3ForCausalLM") {
    // Gemma3TextConfig: without layer_types, every sliding_window_pattern-th layer (default 6) is full, the
    // others slide; the window's default is 4096.
    FP4C_ASSIGN(auto pattern, r.opt_size("sliding_window_pattern"));
    const int64_t every = pattern.value_or(6);
    for (int64_t i = 0; i < L; ++i) c.sliding_layers[size_t(i)] = (i + 1) % every != 0;
    if (!window && !r.has("sliding_window")) window = 4096;
  } else if (c.architecture == "Qwen3MoeForCausalLM") {
    // Qwen3MoeConfig: sliding_window (default 4096) only with use_sliding_window, then on every layer (it has no
    // max_window_layers).
    if (use.value_or(false)) {
      if (!window && !r.has("sliding_window")) window = 4096;
      if (window) c.sliding_layers.assign(size_t(L), true);
    }
  } else if (c.architecture == "Phi3ForCausalLM" || c.architecture == "MixtralForCausalLM") {
    // Phi-3 and Mixtral: every layer when sliding_window is set (their configs' default is None: full attention).
    if (window) c.sliding_layers.assign(size_t(L), true);
  } else if (c.architecture == "MistralForCausalLM") {
    // Mistral: every layer. MistralConfig's default window is 4096; an explicit null means none. (Llama's
    // attention ignores the key, so a Llama config's window is not used.)
    if (!window && !r.has("sliding_window")) window = 4096;
    if (window) c.sliding_layers.assign(size_t(L), true);
  }
  if (c.architecture == "Gemma3ForCausalLM" && !window && !r.has("sliding_window")) window = 4096;
  const bool any = std::find(c.sliding_layers.begin(), c.sliding_layers.end(), true) != c.sliding_layers.end();
  if (any) {
    if (!window) return r.error("sliding-window layers without a key 'sliding_window'");
    c.sliding_window = window;
  }
  return {};
}


// Mixture of experts (MixtralForCausalLM, Qwen3MoeForCausalLM). Each key that changes the computation is read;
// the training-only ones (router_jitter_noise: noise on the router input in training mode only;
// router_aux_loss_coef and output_router_logits: the load-balancing loss) do not change a forward in eval mode
// and are accepted as they are. Dense architectures refuse the MoE keys that would make them sparse.
Status read_moe(const Reader& r, ir::ModelConfig& c) {
  const bool mixtral = c.architecture == "MixtralForCausalLM";
  const bool qwen3moe = c.architecture == "Qwen3MoeForCausalLM";
  if (!mixtral && !qwen3moe) {
    for (const char* key : {"num_local_experts", "num_experts"}) {
      FP4C_ASSIGN(auto n, r.opt_int(key));
      if (n && *n > 0)
        return r.error(std::string("key '") + key + "' = " + std::to_string(*n) + ": " + c.architecture +
                       " has no experts; fp4c refuses a config it cannot tell the meaning of");
    }
    return {};
  }
  // transformers 5 maps num_experts onto num_local_experts for both classes (and writes num_local_experts);
  // hub configs write num_local_experts (Mixtral) or num_experts (Qwen3-MoE).
  FP4C_ASSIGN(auto local, r.opt_size("num_local_experts"));
  FP4C_ASSIGN(auto experts, r.opt_size("num_experts"));
  if (local && experts && *local != *experts)
    return r.error("keys 'num_local_experts' (" + std::to_string(*local) + ") and 'num_experts' (" +
                   std::to_string(*experts) + ") disagree");
  const int64_t fallback = mixtral ? 8 : 128;   // MixtralConfig's and Qwen3MoeConfig's defaults
  c.num_experts = local ? *local : experts ? *experts : fallback;
  const char* experts_key = local ? "num_local_experts" : experts ? "num_experts" : "num_experts (default)";
  FP4C_ASSIGN(auto topk, r.opt_size("num_experts_per_tok"));
  c.num_experts_per_tok = topk.value_or(mixtral ? 2 : 8);
  if (c.num_experts_per_tok > c.num_experts)
    return r.error("key 'num_experts_per_tok' = " + std::to_string(c.num_experts_per_tok) + " exceeds the " +
                   std::to_string(c.num_experts) + " experts of key '" + experts_key + "'");
  const int64_t L = c.num_hidden_layers;
  c.moe_layers.assign(size_t(L), true);
  if (mixtral) {
    c.norm_topk_prob = true;   // Mixtral's router always renormalizes its top-k probabilities
    c.moe_intermediate_size = c.intermediate_size;
    for (const char* key : {"moe_intermediate_size", "decoder_sparse_step", "mlp_only_layers", "norm_topk_prob"})
      if (r.get(key))
        return r.error(std::string("key '") + key + "' is not read by MixtralForCausalLM (every layer is sparse, "
                       "experts of intermediate_size, top-k always renormalized); fp4c refuses a config it "
                       "cannot tell the meaning of");
    return {};
  }
  FP4C_ASSIGN(auto norm, r.opt_bool("norm_topk_prob"));
  c.norm_topk_prob = norm.value_or(false);
  FP4C_ASSIGN(auto moe_inter, r.opt_size("moe_intermediate_size"));
  c.moe_intermediate_size = moe_inter.value_or(768);
  FP4C_ASSIGN(auto step, r.opt_size("decoder_sparse_step"));
  const int64_t every = step.value_or(1);
  std::vector<bool> dense(size_t(L), false);
  if (const json* only = r.get("mlp_only_layers")) {
    if (!only->is_array()) return r.mistyped("mlp_only_layers", "a list", *only);
    for (const json& v : *only) {
      if (!v.is_number_integer()) return r.error("key 'mlp_only_layers' must hold integers, got " + type_of(v));
      const int64_t l = v.get<int64_t>();
      if (l < 0 || l >= L)
        return r.error("key 'mlp_only_layers' holds layer " + std::to_string(l) + ", outside [0, " +
                       std::to_string(L) + ")");
      dense[size_t(l)] = true;
    }
  }
  for (int64_t l = 0; l < L; ++l) c.moe_layers[size_t(l)] = !dense[size_t(l)] && (l + 1) % every == 0;
  return {};
}

Expected<std::vector<int64_t>> read_eos(const Reader& r, const json& root) {
  std::vector<int64_t> out;
  const json* v = r.get("eos_token_id");
  if (!v) return out;
  if (v->is_number_integer()) {
    FP4C_ASSIGN(auto id, r.opt_int("eos_token_id"));
    out.push_back(*id);
    return out;
  }
  if (!v->is_array()) return r.mistyped("eos_token_id", "an integer or a list of integers", *v);
  for (const json& e : *v) {
    if (!e.is_number_integer())
      return r.error(
          "key 'eos_token_id' must be an integer or a list of integers, got a list holding " +
          type_of(e));
    out.push_back(e.get<int64_t>());
  }
  return out;
}

Expected<ir::ModelConfig> parse_object(const json& root, const std::string& path) {
  Reader r(root, path);
  ir::ModelConfig c;
  FP4C_ASSIGN(c.architecture, read_architecture(r, root));
  FP4C_ASSIGN(auto model_type, r.opt_string("model_type"));
  c.model_type = model_type.value_or("");

  FP4C_ASSIGN(c.hidden_size, r.size("hidden_size"));
  FP4C_ASSIGN(c.intermediate_size, r.size("intermediate_size"));
  FP4C_ASSIGN(c.num_hidden_layers, r.size("num_hidden_layers"));
  FP4C_ASSIGN(c.num_attention_heads, r.size("num_attention_heads"));
  FP4C_ASSIGN(auto kv_heads, r.opt_size("num_key_value_heads"));
  c.num_key_value_heads = kv_heads.value_or(c.num_attention_heads);
  FP4C_ASSIGN(auto head_dim, r.opt_size("head_dim"));
  FP4C_ASSIGN(c.vocab_size, r.size("vocab_size"));
  FP4C_ASSIGN(c.max_position_embeddings, r.size("max_position_embeddings"));

  // An explicit head_dim may differ from hidden/heads (q_proj then is not square); without one,
  // the heads must split hidden_size evenly.
  if (head_dim) {
    c.head_dim = *head_dim;
  } else if (c.architecture == "Qwen3ForCausalLM") {
    c.head_dim = 128;   // Qwen3Config's own default, whatever hidden_size / num_attention_heads is
  } else if (c.architecture == "Gemma3ForCausalLM") {
    c.head_dim = 256;   // Gemma3TextConfig's own default
  } else {
    if (c.hidden_size % c.num_attention_heads != 0)
      return r.error("hidden_size " + std::to_string(c.hidden_size) +
                     " is not divisible by num_attention_heads " +
                     std::to_string(c.num_attention_heads));
    c.head_dim = c.hidden_size / c.num_attention_heads;
  }
  if (c.head_dim % 2 != 0)
    return r.error("head_dim " + std::to_string(c.head_dim) + " must be even (RoPE rotates pairs)");
  if (c.num_attention_heads % c.num_key_value_heads != 0)
    return r.error("num_attention_heads " + std::to_string(c.num_attention_heads) +
                   " is not divisible by num_key_value_heads " +
                   std::to_string(c.num_key_value_heads));

  // The norm epsilon changes every forward; a silent default would be wrong for half the models.
  FP4C_ASSIGN(c.rms_norm_eps, r.positive("rms_norm_eps", std::nullopt));
  FP4C_ASSIGN(auto original_max, r.opt_size("original_max_position_embeddings"));
  c.original_max_position_embeddings = original_max.value_or(0);
  FP4C_TRY(read_partial_rotary(r, path, c));
  FP4C_TRY(read_rope(r, path, c));
  FP4C_TRY(refuse_unimplemented(r, c));
  FP4C_TRY(read_activation(r, c));
  FP4C_TRY(read_sliding_window(r, c));
  FP4C_TRY(read_moe(r, c));

  FP4C_ASSIGN(auto tie, r.opt_bool("tie_word_embeddings"));
  const bool gemma = c.architecture == "Gemma3ForCausalLM";
  c.tie_word_embeddings = tie.value_or(gemma);   // Gemma3TextConfig ties by default, the others do not
  if (gemma) {
    c.norm_plus_one = true;
    c.embedding_scale = float(std::sqrt(double(c.hidden_size)));
    FP4C_ASSIGN(c.query_pre_attn_scalar, r.positive("query_pre_attn_scalar", 256.0));
  }
  FP4C_ASSIGN(auto bias, r.opt_bool("attention_bias"));
  c.attention_bias = bias.value_or(false);
  if (c.architecture == "Qwen2ForCausalLM")
    c.attention_bias = true;  // Qwen2 always has q/k/v biases
  if (c.architecture == "MistralForCausalLM" || c.architecture == "Phi3ForCausalLM" ||
      c.architecture == "MixtralForCausalLM")
    c.attention_bias = false;  // Mistral's, Phi-3's and Mixtral's attention have none, whatever the key says
  if (gemma) {
    FP4C_ASSIGN(auto cap, r.opt_number("final_logit_softcapping"));
    if (cap && !(*cap > 0)) return r.error("key 'final_logit_softcapping' must be positive");
    c.final_logit_softcapping = cap.value_or(0);
  }
  // Only Llama's MLP reads mlp_bias; the others have no MLP biases whatever the key says.
  FP4C_ASSIGN(auto mlp_bias, r.opt_bool("mlp_bias"));
  c.mlp_bias = c.architecture == "LlamaForCausalLM" && mlp_bias.value_or(false);

  FP4C_ASSIGN(c.bos_token_id, r.opt_int("bos_token_id"));
  FP4C_ASSIGN(c.eos_token_ids, read_eos(r, root));
  // transformers >= 4.56 writes "dtype" where older versions wrote "torch_dtype".
  FP4C_ASSIGN(auto dtype, r.opt_string("torch_dtype"));
  if (!dtype) {
    FP4C_ASSIGN(auto new_dtype, r.opt_string("dtype"));
    dtype = new_dtype;
  }
  c.torch_dtype = dtype.value_or("");
  return c;
}

}  // namespace

Expected<ir::ModelConfig> parse_config(const std::string& text, const std::string& path) {
  FP4C_ASSIGN(json root, json_input::parse(text, path));
  if (!root.is_object())
    return make_error(path + ": expected a JSON object at the top level, got " + type_of(root));
  try {
    return parse_object(root, path);
  } catch (const json::exception& e) {  // every access is type-checked first; this is a backstop
    return make_error(path + ": " + e.what());
  }
}

Expected<ir::ModelConfig> read_config(const std::string& path) {
  FP4C_ASSIGN(std::string text, json_input::read_text(path));
  return parse_config(text, path);
}

}  // namespace fp4c::frontend
