#include "frontend/gguf_checkpoint.h"

#include <unistd.h>

#include <algorithm>
#include <cmath>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <limits>
#include <set>

#include <nlohmann/json.hpp>

#include "formats/convert.h"
#include "formats/safetensors.h"
#include "frontend/gguf_tokenizer.h"

namespace fp4c::frontend {
namespace {

namespace fs = std::filesystem;
using nlohmann::json;

// general.architecture -> the Hugging Face class. `permuted_qk`: llama.cpp's convert_hf_to_gguf.py
// (LlamaModel.permute) reorders the rows of q_proj and k_proj within each head, for its RoPE kernels;
// undone here. A new architecture is a row here (and its tensors in kLayerNames if it has others).
// `gemma`: llama.cpp's Gemma3Model stores every RMSNorm weight as 1 + w (Gemma3RMSNorm multiplies by 1 + w;
// llama.cpp's kernel by the weight), names the norms of the pre/post layout its own way, and derives the
// attention shape from its hyperparameters (see gguf_config_json).
struct GgufArchitecture {
  std::string_view gguf;
  std::string_view hf;
  std::string_view model_type;
  bool permuted_qk;
  bool qkv_bias;  // q/k/v biases (the HF config says so; Qwen2 always has them)
  bool gemma = false;
  // Phi-3: llama.cpp keeps the checkpoint's fused tensors, attn_qkv (q|k|v) and ffn_up (gate|up, as gate_up_proj),
  // unpermuted; LongRoPE's factors are the tensors rope_factors_short/long.
  bool fused = false;
};
constexpr GgufArchitecture kArchitectures[] = {
    {"llama", "LlamaForCausalLM", "llama", true, false},
    {"qwen2", "Qwen2ForCausalLM", "qwen2", false, true},
    {"qwen3", "Qwen3ForCausalLM", "qwen3", false, false},
    {"gemma3", "Gemma3ForCausalLM", "gemma3_text", false, false, true, false},
    {"phi3", "Phi3ForCausalLM", "phi3", false, false, false, true},
    {"qwen3moe", "Qwen3MoeForCausalLM", "qwen3_moe", false, false},
};

// Mixture-of-experts layers as llama.cpp writes them (its convert_hf_to_gguf.py stacks each layer's experts into
// one 3-D tensor per projection, experts outermost) and as the Hugging Face checkpoint names them, per class:
// the router, and each expert's gate, up and down.
struct GgufMoeNames {
  std::string_view hf;          // the Hugging Face class
  std::string_view router;      // per layer
  std::string_view experts;     // per layer, followed by "{e}."
  std::string_view gate, up, down;
};
constexpr GgufMoeNames kMoeNames[] = {
    {"MixtralForCausalLM", "block_sparse_moe.gate.weight", "block_sparse_moe.experts.", "w1.weight", "w3.weight",
     "w2.weight"},
    {"Qwen3MoeForCausalLM", "mlp.gate.weight", "mlp.experts.", "gate_proj.weight", "up_proj.weight",
     "down_proj.weight"},
};

// The fused architectures' layer tensors (looked up before kLayerNames).
constexpr std::pair<std::string_view, std::string_view> kFusedLayerNames[] = {
    {"attn_qkv.weight", "self_attn.qkv_proj.weight"},
    {"ffn_up.weight", "mlp.gate_up_proj.weight"},
};
// LongRoPE's factors (Phi-3): config values, not tensors of the image.
constexpr std::string_view kRopeFactorTensors[] = {"rope_factors_short.weight", "rope_factors_long.weight"};

// GGUF tensor names -> Hugging Face's (llama.cpp's gguf-py/gguf/tensor_mapping.py, the other way).
constexpr std::pair<std::string_view, std::string_view> kGlobalNames[] = {
    {"token_embd.weight", "model.embed_tokens.weight"},
    {"output_norm.weight", "model.norm.weight"},
    {"output.weight", "lm_head.weight"},
};
constexpr std::pair<std::string_view, std::string_view> kLayerNames[] = {
    {"attn_norm.weight", "input_layernorm.weight"},
    {"attn_q.weight", "self_attn.q_proj.weight"},
    {"attn_q.bias", "self_attn.q_proj.bias"},
    {"attn_k.weight", "self_attn.k_proj.weight"},
    {"attn_k.bias", "self_attn.k_proj.bias"},
    {"attn_v.weight", "self_attn.v_proj.weight"},
    {"attn_v.bias", "self_attn.v_proj.bias"},
    {"attn_output.weight", "self_attn.o_proj.weight"},
    {"attn_q_norm.weight", "self_attn.q_norm.weight"},   // qwen3
    {"attn_k_norm.weight", "self_attn.k_norm.weight"},
    {"ffn_norm.weight", "post_attention_layernorm.weight"},
    {"ffn_gate.weight", "mlp.gate_proj.weight"},
    {"ffn_up.weight", "mlp.up_proj.weight"},
    {"ffn_down.weight", "mlp.down_proj.weight"},
};

// Gemma 3's four norms per layer (llama.cpp's names for them differ from the Llama layout's: its ffn_norm
// is Gemma's pre_feedforward_layernorm, not post_attention_layernorm).
constexpr std::pair<std::string_view, std::string_view> kGemmaLayerNames[] = {
    {"ffn_norm.weight", "pre_feedforward_layernorm.weight"},
    {"post_attention_norm.weight", "post_attention_layernorm.weight"},
    {"post_ffw_norm.weight", "post_feedforward_layernorm.weight"},
};

// A Gemma RMSNorm weight (input, post-attention, pre/post-feedforward, final, q/k norms), stored as 1 + w.
bool gemma_norm(const GgufArchitecture& arch, std::string_view hf) {
  return arch.gemma && hf.ends_with("norm.weight");
}

std::string supported_architectures_list() {
  std::string s;
  for (const auto& a : kArchitectures) s += (s.empty() ? "" : ", ") + std::string(a.gguf);
  return s;
}

// The Hugging Face name of a GGUF tensor; nullopt for a name no table has.
std::optional<std::string> hf_name(std::string_view name, const GgufArchitecture& arch) {
  for (const auto& [g, h] : kGlobalNames)
    if (name == g) return std::string(h);
  if (!name.starts_with("blk.")) return std::nullopt;
  const std::string_view rest = name.substr(4);
  const size_t dot = rest.find('.');
  if (dot == std::string_view::npos || dot == 0 || dot > 9) return std::nullopt;
  const std::string_view index = rest.substr(0, dot);
  if (!std::all_of(index.begin(), index.end(), [](char c) { return c >= '0' && c <= '9'; })) return std::nullopt;
  if (index.size() > 1 && index[0] == '0') return std::nullopt;
  if (arch.gemma)
    for (const auto& [g, h] : kGemmaLayerNames)
      if (rest.substr(dot + 1) == g) return "model.layers." + std::string(index) + "." + std::string(h);
  if (arch.fused)
    for (const auto& [g, h] : kFusedLayerNames)
      if (rest.substr(dot + 1) == g) return "model.layers." + std::string(index) + "." + std::string(h);
  for (const auto& [g, h] : kLayerNames)
    if (rest.substr(dot + 1) == g) return "model.layers." + std::string(index) + "." + std::string(h);
  return std::nullopt;
}

// Undoes convert_hf_to_gguf.py's permute(w, n_head, n_head): within each head of d rows, GGUF row
// 2j + t holds Hugging Face row t * d/2 + j. Rows are whole (dequantized or plain) rows of bytes; `out` is
// resized to `bytes`' size.
void unpermute_rows(std::span<const std::byte> bytes, int64_t rows, int64_t heads, std::span<std::byte> out) {
  const size_t row_bytes = bytes.size() / size_t(rows);
  const int64_t d = rows / heads, half = d / 2;
  for (int64_t h = 0; h < heads; ++h)
    for (int64_t t = 0; t < 2; ++t)
      for (int64_t j = 0; j < half; ++j)
        std::memcpy(out.data() + size_t(h * d + t * half + j) * row_bytes,
                    bytes.data() + size_t(h * d + 2 * j + t) * row_bytes, row_bytes);
}

}  // namespace

Expected<std::shared_ptr<ScratchDir>> ScratchDir::create(const std::string& prefix) {
  std::error_code ec;
  fs::path base = fs::temp_directory_path(ec);
  if (ec) base = "/tmp";
  std::string templ = (base / (prefix + "XXXXXX")).string();
  if (!::mkdtemp(templ.data()))
    return make_error(templ + ": cannot create a scratch directory: " + std::strerror(errno));
  return std::shared_ptr<ScratchDir>(new ScratchDir(templ));
}

ScratchDir::~ScratchDir() {
  std::error_code ec;
  fs::remove_all(path_, ec);
}

Expected<std::optional<std::string>> find_gguf(const std::string& model) {
  std::error_code ec;
  if (fs::is_regular_file(model, ec)) {
    std::ifstream in(model, std::ios::binary);
    char magic[4] = {};
    in.read(magic, 4);
    if (in.gcount() == 4 && std::memcmp(magic, "GGUF", 4) == 0) return std::optional<std::string>(model);
    if (fs::path(model).extension() == ".gguf") return std::optional<std::string>(model);  // the reader says why not
    return make_error(model + ": not a checkpoint directory or a GGUF file");
  }
  if (!fs::is_directory(model, ec)) return std::optional<std::string>();
  if (fs::exists(fs::path(model) / "config.json", ec)) return std::optional<std::string>();
  std::vector<std::string> found;
  for (const auto& e : fs::directory_iterator(model, ec))
    if (e.path().extension() == ".gguf" && e.is_regular_file(ec)) found.push_back(e.path().string());
  std::sort(found.begin(), found.end());
  if (found.empty()) return std::optional<std::string>();
  if (found.size() > 1) {
    std::string names;
    for (const auto& f : found) names += (names.empty() ? "" : ", ") + fs::path(f).filename().string();
    return make_error(model + ": holds " + std::to_string(found.size()) + " GGUF files (" + names +
                      "); give --model the one to read");
  }
  return std::optional<std::string>(found[0]);
}

// What llama.cpp's Gemma 3 (llama-model.cpp, LLM_ARCH_GEMMA3) takes from its hyperparameters rather than the
// metadata, written as Gemma3TextConfig's keys (the transformers 4 form the config reader reads):
// - GELU (tanh) gating; RMSNorm eps from the metadata;
// - with `attention.sliding_window`, every sixth layer full attention and the others sliding over that
//   window with RoPE base 10000 (the sliding layers are never scaled); without it, every layer full;
// - RoPE base and linear scaling of the full layers from `rope.freq_base` / `rope.scaling.*`;
// - query scale 1/sqrt(head_dim), except for the 62-layer (27B) model: 1/sqrt(hidden / heads);
// - `final_logit_softcapping` when the metadata has it.
Status gemma_config(const gguf::File& f, json& c) {
  const std::string p = "gemma3.";
  c["hidden_act"] = "gelu_pytorch_tanh";
  const int64_t layers = c["num_hidden_layers"].get<int64_t>();
  const int64_t heads = c["num_attention_heads"].get<int64_t>();
  const int64_t hidden = c["hidden_size"].get<int64_t>();
  const int64_t head_dim = c.contains("head_dim") ? c["head_dim"].get<int64_t>() : 256;  // Gemma3TextConfig's
  c["head_dim"] = head_dim;
  c["query_pre_attn_scalar"] = layers == 62 ? hidden / std::max<int64_t>(heads, 1) : head_dim;
  FP4C_ASSIGN(auto window, f.get_integer(p + "attention.sliding_window"));
  if (f.find_key(p + "attention.sliding_window_pattern")) {
    FP4C_ASSIGN(auto pattern, f.get_integer(p + "attention.sliding_window_pattern"));
    if (!pattern || *pattern != 6)
      return make_error(f.path() + ": metadata key '" + p + "attention.sliding_window_pattern': fp4c reads Gemma 3 "
                        "GGUFs with llama.cpp's pattern (every sixth layer full), given as the integer 6 or not at all");
  }
  if (window && *window > 0) {
    c["sliding_window"] = *window;
    c["sliding_window_pattern"] = 6;
    c["rope_local_base_freq"] = 10000.0;
  } else {
    c["layer_types"] = json::array();
    for (int64_t i = 0; i < layers; ++i) c["layer_types"].push_back("full_attention");
  }
  if (!c.contains("rope_theta")) c["rope_theta"] = 1000000.0;  // what llama.cpp's converter writes by default
  FP4C_ASSIGN(auto softcap, f.get_number(p + "final_logit_softcapping"));
  if (softcap && *softcap != 0) c["final_logit_softcapping"] = *softcap;
  FP4C_ASSIGN(auto attn_softcap, f.get_number(p + "attn_logit_softcapping"));
  if (attn_softcap && *attn_softcap != 0) c["attn_logit_softcapping"] = *attn_softcap;
  return {};
}

Expected<std::string> gguf_config_json(const gguf::File& f) {
  const std::string& path = f.path();
  FP4C_ASSIGN(auto arch_name, f.get_string("general.architecture"));
  if (!arch_name) return make_error(path + ": missing metadata key 'general.architecture'");
  const GgufArchitecture* arch = nullptr;
  for (const auto& a : kArchitectures)
    if (a.gguf == *arch_name) arch = &a;
  if (!arch)
    return make_error(path + ": metadata key 'general.architecture' is '" + *arch_name +
                      "'; fp4c reads GGUF architectures " + supported_architectures_list());
  const std::string p = *arch_name + ".";
  json c;
  c["architectures"] = json::array({std::string(arch->hf)});
  c["model_type"] = std::string(arch->model_type);
  // Required sizes; the config reader checks their values (positive, heads dividing, ...).
  const std::pair<const char*, const char*> sizes[] = {
      {"embedding_length", "hidden_size"},       {"feed_forward_length", "intermediate_size"},
      {"block_count", "num_hidden_layers"},      {"attention.head_count", "num_attention_heads"},
      {"context_length", "max_position_embeddings"}};
  for (const auto& [key, hf] : sizes) {
    FP4C_ASSIGN(auto v, f.get_integer(p + key));
    if (!v) return make_error(path + ": missing metadata key '" + p + key + "'");
    c[hf] = *v;
  }
  FP4C_ASSIGN(auto kv_heads, f.get_integer(p + "attention.head_count_kv"));
  if (kv_heads) c["num_key_value_heads"] = *kv_heads;
  FP4C_ASSIGN(auto key_length, f.get_integer(p + "attention.key_length"));
  FP4C_ASSIGN(auto value_length, f.get_integer(p + "attention.value_length"));
  if (key_length && value_length && *key_length != *value_length)
    return make_error(path + ": metadata keys '" + p + "attention.key_length' (" + std::to_string(*key_length) +
                      ") and '" + p + "attention.value_length' (" + std::to_string(*value_length) +
                      ") differ; fp4c's attention has one head size");
  if (key_length) c["head_dim"] = *key_length;
  FP4C_ASSIGN(auto eps, f.get_number(p + "attention.layer_norm_rms_epsilon"));
  if (!eps) return make_error(path + ": missing metadata key '" + p + "attention.layer_norm_rms_epsilon'");
  c["rms_norm_eps"] = *eps;
  FP4C_ASSIGN(auto theta, f.get_number(p + "rope.freq_base"));
  if (theta) c["rope_theta"] = *theta;
  // Partial rotary embeddings: the config reader refuses a factor other than 1.
  FP4C_ASSIGN(auto rope_dims, f.get_integer(p + "rope.dimension_count"));
  if (rope_dims) {
    const int64_t heads = c["num_attention_heads"].get<int64_t>();
    const int64_t head_dim = key_length ? *key_length : c["hidden_size"].get<int64_t>() / std::max<int64_t>(heads, 1);
    if (*rope_dims != head_dim) c["partial_rotary_factor"] = double(*rope_dims) / double(head_dim);
  }
  FP4C_ASSIGN(auto scaling, f.get_string(p + "rope.scaling.type"));
  if (!scaling) {
    FP4C_ASSIGN(auto old, f.get_string(p + "rope_scaling.type"));
    scaling = old;
  }
  if (scaling && *scaling != "none") {
    FP4C_ASSIGN(auto factor, f.get_number(p + "rope.scaling.factor"));
    json rs = {{"rope_type", *scaling}};
    if (factor) rs["factor"] = *factor;
    c["rope_scaling"] = rs;  // linear is read; yarn and the others are refused by name
  }
  if (arch->fused) {
    // Phi-3 long context: LongRoPE with the factor tensors llama.cpp writes, and its original context length.
    const gguf::TensorInfo* shorts = f.find("rope_factors_short.weight");
    const gguf::TensorInfo* longs = f.find("rope_factors_long.weight");
    if ((shorts == nullptr) != (longs == nullptr))
      return make_error(path + ": tensor 'rope_factors_" + std::string(shorts ? "long" : "short") +
                        ".weight' is missing beside its pair (Phi-3's LongRoPE factors)");
    if (shorts) {
      json rs = {{"rope_type", "longrope"}};
      for (const auto* t : {shorts, longs}) {
        if (t->type != gguf::TensorType::F32 || t->ne.size() != 1)
          return make_error(path + ": tensor '" + t->name + "' must be a 1-D F32 vector of LongRoPE factors");
        const auto bytes = f.bytes(*t);
        std::vector<double> v(size_t(t->numel));
        for (size_t i = 0; i < v.size(); ++i) {
          float x;
          std::memcpy(&x, bytes.data() + i * sizeof(float), sizeof x);
          v[i] = x;
        }
        rs[t == shorts ? "short_factor" : "long_factor"] = v;
      }
      FP4C_ASSIGN(auto original, f.get_integer(p + "rope.scaling.original_context_length"));
      if (!original)
        return make_error(path + ": missing metadata key '" + p +
                          "rope.scaling.original_context_length' beside the LongRoPE factor tensors");
      c["original_max_position_embeddings"] = *original;
      // llama.cpp stores transformers' attention factor sqrt(1 + ln(s) / ln(original)), s = context / original, as
      // a float32: that value is left for the config reader to compute in double; another one is kept.
      FP4C_ASSIGN(auto attn_factor, f.get_number(p + "rope.scaling.attn_factor"));
      const double scale = c["max_position_embeddings"].get<double>() / double(*original);
      const double computed = scale <= 1 ? 1.0 : std::sqrt(1 + std::log(scale) / std::log(double(*original)));
      if (attn_factor && float(*attn_factor) != float(computed)) rs["attention_factor"] = *attn_factor;
      if (c.contains("rope_scaling"))
        return make_error(path + ": metadata key '" + p + "rope.scaling.type' beside Phi-3's LongRoPE factor tensors");
      c["rope_scaling"] = rs;
    }
    FP4C_ASSIGN(auto window, f.get_integer(p + "attention.sliding_window"));
    if (window && *window > 0) c["sliding_window"] = *window;
  }
  if (f.find("rope_freqs.weight"))
    return make_error(path + ": tensor 'rope_freqs.weight': RoPE frequency factors as a tensor (llama.cpp's form of "
                      "Llama 3 rope scaling) are not read by fp4c");
  FP4C_ASSIGN(auto experts, f.get_integer(p + "expert_count"));
  if (arch->gguf == "qwen3moe" && !(experts && *experts > 0))
    return make_error(path + ": missing metadata key '" + p + "expert_count'");
  if (experts && *experts > 0) {
    // llama.cpp routes with a softmax over every expert, the top expert_used_count renormalized (build_moe_ffn with
    // norm_w): Mixtral's routing, and Qwen3-MoE's with norm_topk_prob; every layer sparse.
    FP4C_ASSIGN(auto used, f.get_integer(p + "expert_used_count"));
    if (!used) return make_error(path + ": missing metadata key '" + p + "expert_used_count'");
    FP4C_ASSIGN(auto gating, f.get_integer(p + "expert_gating_func"));
    if (gating && *gating != 1)   // llama.cpp's LLAMA_EXPERT_GATING_FUNC_TYPE_SOFTMAX
      return make_error(path + ": metadata key '" + p + "expert_gating_func' = " + std::to_string(*gating) +
                        ": fp4c's router is a softmax (1)");
    FP4C_ASSIGN(auto weights_norm, f.get_bool(p + "expert_weights_norm"));
    if (weights_norm && !*weights_norm && arch->gguf == "llama")
      return make_error(path + ": metadata key '" + p + "expert_weights_norm' is false: Mixtral renormalizes its "
                        "top-k routing weights");
    if (arch->gguf == "llama") {
      c["architectures"] = json::array({"MixtralForCausalLM"});
      c["model_type"] = "mixtral";
      c["num_local_experts"] = *experts;
      c["num_experts_per_tok"] = *used;
    } else if (arch->gguf == "qwen3moe") {
      c["num_experts"] = *experts;
      c["num_experts_per_tok"] = *used;
      c["norm_topk_prob"] = weights_norm.value_or(true);
      c["decoder_sparse_step"] = 1;
      c["mlp_only_layers"] = json::array();
      FP4C_ASSIGN(auto expert_ffn, f.get_integer(p + "expert_feed_forward_length"));
      if (!expert_ffn) return make_error(path + ": missing metadata key '" + p + "expert_feed_forward_length'");
      c["moe_intermediate_size"] = *expert_ffn;
    } else {
      return make_error(path + ": metadata key '" + p + "expert_count': mixture-of-experts GGUF models of architecture '" +
                        *arch_name + "' are not read by fp4c (it reads llama's (Mixtral) and qwen3moe)");
    }
  }
  FP4C_ASSIGN(auto vocab, f.get_integer(p + "vocab_size"));
  if (!vocab) {
    if (const gguf::Value* tokens = f.find_key("tokenizer.ggml.tokens"); tokens && tokens->type == gguf::ValueType::Array)
      vocab = int64_t(tokens->count);
    else if (const gguf::TensorInfo* e = f.find("token_embd.weight"); e && e->ne.size() == 2)
      vocab = e->ne[1];
  }
  if (!vocab) return make_error(path + ": no vocabulary size: no key '" + p + "vocab_size', 'tokenizer.ggml.tokens' or tensor 'token_embd.weight'");
  c["vocab_size"] = *vocab;
  c["tie_word_embeddings"] = f.find("output.weight") == nullptr;
  if (arch->qkv_bias) c["attention_bias"] = true;
  c["hidden_act"] = "silu";
  if (arch->gemma) FP4C_TRY(gemma_config(f, c));
  FP4C_ASSIGN(auto bos, f.get_integer("tokenizer.ggml.bos_token_id"));
  if (bos) c["bos_token_id"] = *bos;
  FP4C_ASSIGN(auto eos, f.get_integer("tokenizer.ggml.eos_token_id"));
  if (eos) c["eos_token_id"] = *eos;
  // The dtype the unquantized tensors keep: the embedding's, as the image holds it; a block format's
  // dequantization makes a bfloat16 model, as every serving engine runs NVFP4 models (vLLM would run a
  // float32 config in float16), and the artifact's kept tensors are written so (ir::TensorInfo::kept_as).
  std::string dtype = "float32";
  if (const gguf::TensorInfo* e = f.find("token_embd.weight")) {
    if (e->type == gguf::TensorType::F16) dtype = "float16";
    if (e->type == gguf::TensorType::BF16 || gguf::is_block_quantized(e->type)) dtype = "bfloat16";
  }
  c["torch_dtype"] = dtype;
  return c.dump(2) + "\n";
}

std::string gguf_generation_config_json(const gguf::File& f) {
  json g;
  for (const auto& [key, hf] : {std::pair{"tokenizer.ggml.bos_token_id", "bos_token_id"},
                                std::pair{"tokenizer.ggml.eos_token_id", "eos_token_id"},
                                std::pair{"tokenizer.ggml.padding_token_id", "pad_token_id"}}) {
    auto v = f.get_integer(key);
    if (v && *v) g[hf] = **v;
  }
  return g.dump(2) + "\n";
}

uint64_t memory_image_limit() {
  // Half the memory the kernel says is available without swapping (MemAvailable), read at the time.
  std::ifstream meminfo("/proc/meminfo");
  std::string key;
  uint64_t kb = 0;
  std::string unit;
  while (meminfo >> key >> kb >> unit)
    if (key == "MemAvailable:") return kb * 1024 / 2;
  return 0;  // unknown: on disk
}

Expected<GgufImage> write_gguf_image(const std::string& path, ImageStorage storage) {
  FP4C_ASSIGN(gguf::File f, gguf::File::open(path));
  FP4C_ASSIGN(std::string config_text, gguf_config_json(f));
  const json config = json::parse(config_text);
  GgufImage image;
  image.gguf_path = path;
  image.gguf_architecture = *f.get_string("general.architecture").value();
  const GgufArchitecture* arch = nullptr;
  for (const auto& a : kArchitectures)
    if (a.gguf == image.gguf_architecture) arch = &a;

  // Names, dtypes and shapes first: the image's header is written before any data.
  std::vector<safetensors::TensorSpec> specs;
  std::set<std::string> dequantized;
  std::vector<const gguf::TensorInfo*> written;   // the tensors of the image, in the GGUF's order
  std::vector<std::pair<int64_t, int64_t>> expert_of;   // (expert, experts) of each: (-1, 1) for a whole tensor
  const GgufMoeNames* moe = nullptr;
  for (const auto& m : kMoeNames)
    if (config["architectures"][0].get<std::string>() == m.hf) moe = &m;
  for (const gguf::TensorInfo& t : f.tensors()) {
    const std::string where = path + ": tensor '" + t.name + "' (data at byte " +
                              std::to_string(f.data_offset() + t.offset) + ")";
    if (arch->fused && std::find(std::begin(kRopeFactorTensors), std::end(kRopeFactorTensors), t.name) !=
                           std::end(kRopeFactorTensors))
      continue;   // read into config.json above
    if (moe && t.name.starts_with("blk.")) {
      // blk.{i}.ffn_gate_inp (the router) and blk.{i}.ffn_{gate,up,down}_exps: [experts, rows, cols], one image
      // tensor per expert.
      const std::string_view rest = std::string_view(t.name).substr(4);
      const size_t dot = rest.find('.');
      const std::string layer(rest.substr(0, dot));
      const std::string_view what = dot == std::string_view::npos ? "" : rest.substr(dot + 1);
      const std::string prefix = "model.layers." + layer + ".";
      if (what == "ffn_gate_inp.weight") {
        specs.push_back({prefix + std::string(moe->router), t.type == gguf::TensorType::F16    ? DType::F16
                                                            : t.type == gguf::TensorType::BF16 ? DType::BF16
                                                                                               : DType::F32,
                         t.shape()});
        if (gguf::is_block_quantized(t.type)) dequantized.insert(std::string(gguf::type_traits(t.type)->name));
        written.push_back(&t);
        expert_of.emplace_back(-1, 1);
        continue;
      }
      std::string_view proj;
      if (what == "ffn_gate_exps.weight") proj = moe->gate;
      if (what == "ffn_up_exps.weight") proj = moe->up;
      if (what == "ffn_down_exps.weight") proj = moe->down;
      if (!proj.empty()) {
        const std::vector<int64_t> shape = t.shape();
        if (shape.size() != 3 || shape[0] <= 0)
          return make_error(where + ": expected [experts, rows, cols], got " + std::to_string(shape.size()) +
                            " dimensions");
        if (t.type != gguf::TensorType::F32 && t.type != gguf::TensorType::F16 && t.type != gguf::TensorType::BF16 &&
            !gguf::is_block_quantized(t.type))
          return make_error(where + ": type " + std::string(gguf::type_traits(t.type)->name) + " is not read by fp4c");
        if (gguf::is_block_quantized(t.type)) dequantized.insert(std::string(gguf::type_traits(t.type)->name));
        const DType dtype = t.type == gguf::TensorType::F16    ? DType::F16
                            : t.type == gguf::TensorType::BF16 ? DType::BF16
                                                               : DType::F32;
        for (int64_t e = 0; e < shape[0]; ++e) {
          specs.push_back({prefix + std::string(moe->experts) + std::to_string(e) + "." + std::string(proj), dtype,
                           {shape[1], shape[2]}});
          written.push_back(&t);
          expert_of.emplace_back(e, shape[0]);
        }
        continue;
      }
    }
    std::optional<std::string> name = hf_name(t.name, *arch);
    if (!name)
      return make_error(where + ": no Hugging Face name for it in fp4c's table for GGUF architecture '" +
                        image.gguf_architecture + "'");
    DType dtype = DType::F32;
    if (gemma_norm(*arch, *name)) dtype = DType::F32;  // w = stored - 1, in float32
    else if (t.type == gguf::TensorType::F16) dtype = DType::F16;
    else if (t.type == gguf::TensorType::BF16) dtype = DType::BF16;
    else if (gguf::is_block_quantized(t.type)) dequantized.insert(std::string(gguf::type_traits(t.type)->name));
    else if (t.type != gguf::TensorType::F32)
      return make_error(where + ": type " + std::string(gguf::type_traits(t.type)->name) +
                        " is not read by fp4c (it reads F32, F16, BF16, Q4_0, Q4_1, Q5_0, Q5_1, Q8_0, Q4_K, Q5_K, Q6_K)");
    specs.push_back({*name, dtype, t.shape()});
    written.push_back(&t);
    expert_of.emplace_back(-1, 1);
  }
  image.dequantized_types.assign(dequantized.begin(), dequantized.end());

  const std::string stem = fs::path(path).stem().string().substr(0, 40);
  FP4C_ASSIGN(image.dir, ScratchDir::create("fp4c-gguf-" + stem + "-"));
  const fs::path dir = image.dir->path();
  {
    std::ofstream out(dir / "config.json", std::ios::binary);
    out << config_text;
    if (!out) return make_error((dir / "config.json").string() + ": cannot write");
  }
  // The tokenizer as Hugging Face files (read by load_tokenizer, copied into artifacts), and the generation
  // defaults transformers would write. A tokenizer fp4c cannot read does not stop the image (input_ids data
  // sets need none): the reason goes where load_tokenizer finds it.
  auto write_text = [&](const char* name, const std::string& text) -> Status {
    std::ofstream out(dir / name, std::ios::binary);
    out << text;
    if (!out) return make_error((dir / name).string() + ": cannot write");
    return {};
  };
  if (gguf_has_tokenizer(f)) {
    auto files = gguf_tokenizer_files(f);
    if (files) {
      FP4C_TRY(write_text("tokenizer.json", files->tokenizer_json));
      FP4C_TRY(write_text("tokenizer_config.json", files->tokenizer_config_json));
    } else {
      FP4C_TRY(write_text("fp4c-tokenizer-error.txt", files.error().message));
    }
  } else {
    FP4C_TRY(write_text("fp4c-tokenizer-error.txt", path + ": no tokenizer (no metadata key 'tokenizer.ggml.model')"));
  }
  FP4C_TRY(write_text("generation_config.json", gguf_generation_config_json(f)));
  std::map<std::string, std::string> metadata = {{"format", "pt"}, {"fp4c.source", path}, {"fp4c.source_format", "gguf"}};
  uint64_t image_bytes = 0;
  for (const auto& s : specs) image_bytes += s.nbytes();
  const bool in_memory = storage == ImageStorage::Memory ||
                         (storage == ImageStorage::Auto && image_bytes <= memory_image_limit());

  // How each tensor of the image is made from the GGUF's: as it is, dequantized, its Q/K rows unpermuted,
  // Gemma's norms shifted back. Checked here, so that making one cannot fail later.
  struct Recipe {
    size_t source;  // the GGUF tensor it is made from
    gguf::TensorType type;
    bool block = false, shift = false;
    int64_t permute_heads = 0;  // > 0: undo llama.cpp's Q/K permutation over that many heads
    uint64_t byte_begin = 0, bytes = 0;   // the part of the GGUF tensor it is (one expert of a stacked tensor)
    int64_t numel = 0;
  };
  const int64_t heads = config["num_attention_heads"].get<int64_t>();
  const int64_t kv_heads = config.contains("num_key_value_heads") ? config["num_key_value_heads"].get<int64_t>() : heads;
  auto recipes = std::make_shared<std::vector<Recipe>>();
  for (size_t i = 0; i < written.size(); ++i) {
    const gguf::TensorInfo& t = *written[i];
    const std::string& name = specs[i].name;
    Recipe r{size_t(written[i] - f.tensors().data()), t.type, gguf::is_block_quantized(t.type),
             gemma_norm(*arch, name), 0};
    const auto [expert, experts] = expert_of[i];
    if (t.nbytes % uint64_t(experts) != 0 || t.numel % experts != 0)
      return make_error(path + ": tensor '" + t.name + "': " + std::to_string(t.nbytes) + " bytes do not split into " +
                        std::to_string(experts) + " experts");
    r.bytes = t.nbytes / uint64_t(experts);
    r.byte_begin = expert < 0 ? 0 : uint64_t(expert) * r.bytes;
    r.numel = t.numel / experts;
    const bool q = name.ends_with("self_attn.q_proj.weight") || name.ends_with("self_attn.q_proj.bias");
    const bool k = name.ends_with("self_attn.k_proj.weight") || name.ends_with("self_attn.k_proj.bias");
    if (arch->permuted_qk && (q || k)) {
      const int64_t rows = t.shape()[0];
      const int64_t h = q ? heads : kv_heads;
      if (h <= 0 || rows % h != 0 || (rows / h) % 2 != 0)
        return make_error(path + ": tensor '" + t.name + "': " + std::to_string(rows) + " rows do not split into " +
                          std::to_string(h) + " heads of an even size (undoing llama.cpp's Q/K permutation)");
      r.permute_heads = h;
    }
    if (r.block || r.shift) {  // the dequantizer's own checks of type and size, on an empty output
      const auto traits = gguf::type_traits(t.type);
      if (!traits || r.numel % traits->block_size != 0 ||
          r.bytes != uint64_t(r.numel / traits->block_size) * traits->type_size)
        return make_error(path + ": tensor '" + t.name + "' (data at byte " +
                          std::to_string(f.data_offset() + t.offset) + "): " + std::to_string(t.nbytes) +
                          " bytes do not hold " + std::to_string(t.numel) + " elements of its type");
    }
    recipes->push_back(r);
  }
  auto gf = std::make_shared<gguf::File>(std::move(f));
  // Writes image tensor i's bytes [offset, offset + out.size()) into `out`. Reentrant: tensors may be made
  // from several threads. A part of a block format is dequantized from its own blocks when it starts and ends
  // on block boundaries (a kept embedding made a chunk at a time); any other part is cut from the whole.
  auto produce = [gf, recipes](size_t i, uint64_t offset, std::span<std::byte> out) {
    const Recipe& r = (*recipes)[i];
    const gguf::TensorInfo& t = gf->tensors()[r.source];
    const std::span<const std::byte> src = gf->bytes(t).subspan(r.byte_begin, r.bytes);
    const bool made = r.block || r.shift;
    const uint64_t whole = made ? uint64_t(r.numel) * sizeof(float) : r.bytes;
    // Dequantizes (and shifts) the elements [first, first + values.size()) from their blocks in `from`.
    const auto dequantize = [&](std::span<const std::byte> from, std::span<float> values) {
      if (!gguf::dequantize(r.type, from, values).ok()) {  // checked above; NaN would be refused by name
        std::fill(values.begin(), values.end(), std::numeric_limits<float>::quiet_NaN());
      }
      if (r.shift)  // Gemma's norms: the checkpoint's w from llama.cpp's 1 + w
        for (float& v : values) v -= 1.0f;
    };
    // The whole tensor into `to` (its image size).
    const auto make_whole = [&](std::span<std::byte> to) {
      if (r.permute_heads == 0 && !made) {
        std::memcpy(to.data(), src.data(), to.size());
        return;
      }
      const int64_t rows = t.shape()[0], cols = rows > 0 ? r.numel / rows : 0;
      const auto traits = gguf::type_traits(r.type);
      if (made && r.permute_heads > 0 && traits && cols % traits->block_size == 0) {
        // Each row dequantized straight into its unpermuted place.
        const int64_t d = rows / r.permute_heads, half = d / 2;
        const size_t src_row = size_t(cols) / traits->block_size * traits->type_size;
#pragma omp parallel for schedule(static) if (r.numel >= (1 << 16))
        for (int64_t hf = 0; hf < rows; ++hf) {  // row h*d + t*half + j of the checkpoint is GGUF row h*d + 2j + t
          const int64_t h = hf / d, w = hf % d, tt = w / half, j = w % half, g = h * d + 2 * j + tt;
          dequantize(src.subspan(size_t(g) * src_row, src_row),
                     {reinterpret_cast<float*>(to.data()) + hf * cols, size_t(cols)});
        }
        return;
      }
      std::vector<std::byte> staged;
      std::span<std::byte> target = to;
      if (r.permute_heads > 0) {
        staged.resize(to.size());
        target = staged;
      }
      if (made)
        dequantize(src, {reinterpret_cast<float*>(target.data()), size_t(r.numel)});
      else
        std::memcpy(target.data(), src.data(), target.size());
      if (r.permute_heads > 0) unpermute_rows(staged, t.shape()[0], r.permute_heads, to);
    };
    if (offset != 0 || out.size() != whole) {  // a part
      if (r.permute_heads == 0 && !made) {
        std::memcpy(out.data(), src.data() + offset, out.size());
        return;
      }
      const auto traits = gguf::type_traits(r.type);
      const uint64_t bs = traits ? traits->block_size : 0, first = offset / sizeof(float),
                     count = out.size() / sizeof(float);
      if (r.permute_heads == 0 && bs > 0 && offset % sizeof(float) == 0 && out.size() % sizeof(float) == 0 &&
          first % bs == 0 && count % bs == 0) {
        dequantize(src.subspan(first / bs * traits->type_size, count / bs * traits->type_size),
                   {reinterpret_cast<float*>(out.data()), size_t(count)});
        return;
      }
      std::vector<std::byte> all(whole);
      make_whole(all);
      std::memcpy(out.data(), all.data() + offset, out.size());
      return;
    }
    make_whole(out);
  };

  if (in_memory) {
    // The image in memory carries the path the file on disk would have (the artifact names its shards after
    // the source's files), though nothing is written there; each tensor is made when first read.
    FP4C_ASSIGN(auto mem, safetensors::MemoryFile::create((dir / "model.safetensors").string(), specs, metadata));
    FP4C_ASSIGN(safetensors::File file, mem.finish_lazy(produce));
    image.weights.emplace(std::move(file));
  } else {
    // Through one buffer reused from tensor to tensor (no fresh pages to fault in for each).
    FP4C_ASSIGN(auto w, safetensors::Writer::create((dir / "model.safetensors").string(), specs, metadata));
    std::vector<std::byte> buffer;
    for (size_t i = 0; i < specs.size(); ++i) {
      const Recipe& r = (*recipes)[i];
      const gguf::TensorInfo& t = gf->tensors()[r.source];
      if (!r.block && !r.shift && r.permute_heads == 0) {
        FP4C_TRY(w.write(gf->bytes(t).subspan(r.byte_begin, r.bytes)));  // as it is
      } else {
        buffer.resize(specs[i].nbytes());
        produce(i, 0, buffer);
        FP4C_TRY(w.write(buffer));
      }
      if (r.byte_begin + r.bytes == t.nbytes) gf->release(t);   // its last part
    }
    FP4C_TRY(w.finish());
  }
  return image;
}

}  // namespace fp4c::frontend
