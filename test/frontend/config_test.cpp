#include "frontend/config.h"

#include <gtest/gtest.h>

#include <cmath>

#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>

namespace fp4c::frontend {
namespace {

using nlohmann::json;

const std::string kConfigs = std::string(FP4C_SOURCE_DIR) + "/testdata/configs/";
const std::string kPath = "ckpt/config.json";

// A small valid Llama config that each error test breaks in one place.
json base_config() {
  return json::parse(R"({
    "architectures": ["LlamaForCausalLM"],
    "model_type": "llama",
    "hidden_size": 64,
    "intermediate_size": 172,
    "num_hidden_layers": 2,
    "num_attention_heads": 8,
    "num_key_value_heads": 4,
    "vocab_size": 512,
    "max_position_embeddings": 512,
    "rms_norm_eps": 1e-5,
    "rope_theta": 10000.0,
    "tie_word_embeddings": true,
    "bos_token_id": 1,
    "eos_token_id": 2,
    "torch_dtype": "bfloat16"
  })");
}

Expected<ir::ModelConfig> parse(const json& j) { return parse_config(j.dump(), kPath); }

// The error message of a config that must fail.
std::string error_of(const json& j) {
  auto c = parse(j);
  EXPECT_FALSE(c.ok()) << j.dump();
  return c.ok() ? "" : c.error().message;
}

TEST(Config, Qwen25_05B) {
  auto c = read_config(kConfigs + "qwen2.5-0.5b-instruct.json");
  ASSERT_TRUE(c.ok()) << c.error().message;
  EXPECT_EQ(c->architecture, "Qwen2ForCausalLM");
  EXPECT_EQ(c->model_type, "qwen2");
  EXPECT_EQ(c->hidden_size, 896);
  EXPECT_EQ(c->intermediate_size, 4864);
  EXPECT_EQ(c->num_hidden_layers, 24);
  EXPECT_EQ(c->num_attention_heads, 14);
  EXPECT_EQ(c->num_key_value_heads, 2);
  EXPECT_EQ(c->head_dim, 64);
  EXPECT_EQ(c->vocab_size, 151936);
  EXPECT_EQ(c->max_position_embeddings, 32768);
  EXPECT_DOUBLE_EQ(c->rms_norm_eps, 1e-6);
  EXPECT_DOUBLE_EQ(c->rope_theta, 1e6);
  EXPECT_TRUE(c->rope_scaling.type.empty());
  EXPECT_TRUE(c->tie_word_embeddings);
  EXPECT_TRUE(c->attention_bias);  // Qwen2 always, though the config has no such key
  EXPECT_EQ(c->bos_token_id, 151643);
  EXPECT_EQ(c->eos_token_ids, std::vector<int64_t>{151645});
  EXPECT_EQ(c->torch_dtype, "bfloat16");
}

TEST(Config, Qwen25_7B) {
  auto c = read_config(kConfigs + "qwen2.5-7b-instruct.json");
  ASSERT_TRUE(c.ok()) << c.error().message;
  EXPECT_EQ(c->hidden_size, 3584);
  EXPECT_EQ(c->intermediate_size, 18944);
  EXPECT_EQ(c->num_hidden_layers, 28);
  EXPECT_EQ(c->num_attention_heads, 28);
  EXPECT_EQ(c->num_key_value_heads, 4);
  EXPECT_EQ(c->head_dim, 128);
  EXPECT_EQ(c->vocab_size, 152064);
  EXPECT_FALSE(c->tie_word_embeddings);
  EXPECT_TRUE(c->attention_bias);
}

TEST(Config, Llama31_8B) {
  auto c = read_config(kConfigs + "llama-3.1-8b.json");
  ASSERT_TRUE(c.ok()) << c.error().message;
  EXPECT_EQ(c->architecture, "LlamaForCausalLM");
  EXPECT_EQ(c->hidden_size, 4096);
  EXPECT_EQ(c->intermediate_size, 14336);
  EXPECT_EQ(c->num_key_value_heads, 8);
  EXPECT_EQ(c->head_dim, 128);
  EXPECT_EQ(c->vocab_size, 128256);
  EXPECT_EQ(c->max_position_embeddings, 131072);
  EXPECT_DOUBLE_EQ(c->rms_norm_eps, 1e-5);
  EXPECT_DOUBLE_EQ(c->rope_theta, 500000.0);
  EXPECT_EQ(c->rope_scaling.type, "llama3");
  EXPECT_DOUBLE_EQ(c->rope_scaling.factor, 8.0);
  EXPECT_DOUBLE_EQ(c->rope_scaling.low_freq_factor, 1.0);
  EXPECT_DOUBLE_EQ(c->rope_scaling.high_freq_factor, 4.0);
  EXPECT_EQ(c->rope_scaling.original_max_position_embeddings, 8192);
  EXPECT_FALSE(c->attention_bias);
  EXPECT_FALSE(c->tie_word_embeddings);
  EXPECT_EQ(c->bos_token_id, 128000);
  EXPECT_EQ(c->eos_token_ids, std::vector<int64_t>{128001});
}

TEST(Config, Llama31_8BInstructEosList) {
  auto c = read_config(kConfigs + "llama-3.1-8b-instruct.json");
  ASSERT_TRUE(c.ok()) << c.error().message;
  EXPECT_EQ(c->eos_token_ids, (std::vector<int64_t>{128001, 128008, 128009}));
}

TEST(Config, Mistral7Bv03) {
  auto c = read_config(kConfigs + "mistral-7b-v0.3.json");
  ASSERT_TRUE(c.ok()) << c.error().message;
  EXPECT_EQ(c->architecture, "MistralForCausalLM");
  EXPECT_EQ(c->model_type, "mistral");
  EXPECT_EQ(c->vocab_size, 32768);
  EXPECT_EQ(c->head_dim, 128);
  EXPECT_EQ(c->num_key_value_heads, 8);
  EXPECT_DOUBLE_EQ(c->rope_theta, 1e6);
  EXPECT_FALSE(c->attention_bias);
  EXPECT_EQ(c->bos_token_id, 1);
  EXPECT_EQ(c->eos_token_ids, std::vector<int64_t>{2});
}

TEST(Config, Stories260K) {
  std::string path = std::string(FP4C_SHARED_DIR) + "/models/stories260K/config.json";
  if (!std::filesystem::exists(path)) GTEST_SKIP() << path << " is absent";
  auto c = read_config(path);
  ASSERT_TRUE(c.ok()) << c.error().message;
  EXPECT_EQ(c->hidden_size, 64);
  EXPECT_EQ(c->intermediate_size, 172);
  EXPECT_EQ(c->num_hidden_layers, 5);
  EXPECT_EQ(c->head_dim, 8);
  EXPECT_TRUE(c->tie_word_embeddings);
}

TEST(Config, Defaults) {
  json j = base_config();
  for (const char* k : {"num_key_value_heads", "rope_theta", "tie_word_embeddings", "bos_token_id",
                        "eos_token_id", "torch_dtype", "model_type"})
    j.erase(k);
  j["head_dim"] = nullptr;  // null reads as absent
  auto c = parse(j);
  ASSERT_TRUE(c.ok()) << c.error().message;
  EXPECT_EQ(c->num_key_value_heads, 8);
  EXPECT_EQ(c->head_dim, 8);
  EXPECT_DOUBLE_EQ(c->rope_theta, 10000.0);
  EXPECT_FALSE(c->tie_word_embeddings);
  EXPECT_FALSE(c->attention_bias);
  EXPECT_FALSE(c->bos_token_id.has_value());
  EXPECT_TRUE(c->eos_token_ids.empty());
  EXPECT_EQ(c->torch_dtype, "");
  EXPECT_EQ(c->model_type, "");
}

TEST(Config, ExplicitHeadDimNeedNotMatchHidden) {
  json j = base_config();
  j["hidden_size"] = 80;  // 80 / 8 = 10, but q_proj is 8 * 16 rows
  j["head_dim"] = 16;
  auto c = parse(j);
  ASSERT_TRUE(c.ok()) << c.error().message;
  EXPECT_EQ(c->head_dim, 16);
}

// A key absent from config.json takes its config class's default: Qwen3Config's head_dim is 128, whatever
// hidden_size / num_attention_heads is; its attention_bias false; sliding only with use_sliding_window.
TEST(Config, Qwen3Defaults) {
  json j = base_config();
  j["architectures"] = {"Qwen3ForCausalLM"};
  j["model_type"] = "qwen3";
  auto c = parse(j);
  ASSERT_TRUE(c.ok()) << c.error().message;
  EXPECT_EQ(c->head_dim, 128);
  EXPECT_FALSE(c->attention_bias);
  EXPECT_FALSE(c->sliding_window.has_value());
  j["head_dim"] = 8;
  EXPECT_EQ(parse(j)->head_dim, 8);
  j["use_sliding_window"] = true;
  j["max_window_layers"] = 1;
  c = parse(j);
  ASSERT_TRUE(c.ok()) << c.error().message;
  EXPECT_EQ(c->sliding_window, 4096);
  EXPECT_EQ(c->sliding_layers, (std::vector<bool>{false, true}));
  j["attention_bias"] = true;
  EXPECT_TRUE(parse(j)->attention_bias);
}

// YaRN resolved as transformers 5's _compute_yarn_parameters: original_max_position_embeddings from the object,
// else max_position_embeddings; the attention factor 0.1 ln(factor) + 1 unless given (or from mscale ratios).
TEST(Config, Yarn) {
  json j = base_config();
  j["rope_scaling"] = {{"rope_type", "yarn"}, {"factor", 4.0}, {"original_max_position_embeddings", 128}};
  auto c = parse(j);
  ASSERT_TRUE(c.ok()) << c.error().message;
  EXPECT_EQ(c->rope_scaling.type, "yarn");
  EXPECT_EQ(c->rope_scaling.original_max_position_embeddings, 128);
  EXPECT_DOUBLE_EQ(c->rope_scaling.attention_factor, 0.1 * std::log(4.0) + 1.0);
  EXPECT_EQ(c->rope_scaling.beta_fast, 32.0);
  EXPECT_EQ(c->rope_scaling.beta_slow, 1.0);
  EXPECT_TRUE(c->rope_scaling.truncate);
  j["rope_scaling"] = {{"rope_type", "yarn"}, {"factor", 4.0}, {"attention_factor", 1.5}, {"truncate", false}};
  c = parse(j);
  ASSERT_TRUE(c.ok()) << c.error().message;
  EXPECT_EQ(c->rope_scaling.original_max_position_embeddings, 512);
  EXPECT_EQ(c->rope_scaling.attention_factor, 1.5);
  EXPECT_FALSE(c->rope_scaling.truncate);
  j["rope_scaling"] = {{"rope_type", "yarn"}, {"factor", 4.0}, {"mscale", 2.0}, {"mscale_all_dim", 1.0}};
  c = parse(j);
  ASSERT_TRUE(c.ok()) << c.error().message;
  EXPECT_DOUBLE_EQ(c->rope_scaling.attention_factor, (0.2 * std::log(4.0) + 1.0) / (0.1 * std::log(4.0) + 1.0));
  j["rope_scaling"] = {{"rope_type", "yarn"}, {"original_max_position_embeddings", 128}};   // factor 512 / 128
  EXPECT_EQ(parse(j)->rope_scaling.factor, 4.0);
}

// Gemma 3 (text), as Gemma3TextConfig resolves a config: head_dim 256, query_pre_attn_scalar 256, tied,
// GeGLU, every 6th layer full (sliding_window_pattern), window 4096, RoPE bases 1e6 / 1e4; the norms (1 + w),
// the embedding times float32(sqrt(hidden)).
TEST(Config, Gemma3Defaults) {
  json j = base_config();
  j["architectures"] = {"Gemma3ForCausalLM"};
  j["model_type"] = "gemma3_text";
  j.erase("tie_word_embeddings");
  j.erase("rope_theta");
  j["num_hidden_layers"] = 7;
  auto c = parse(j);
  ASSERT_TRUE(c.ok()) << c.error().message;
  EXPECT_EQ(c->head_dim, 256);
  EXPECT_EQ(c->query_pre_attn_scalar, 256.0);
  EXPECT_TRUE(c->tie_word_embeddings);
  EXPECT_EQ(c->hidden_act, "gelu_pytorch_tanh");
  EXPECT_EQ(c->sliding_window, 4096);
  EXPECT_EQ(c->sliding_layers, (std::vector<bool>{true, true, true, true, true, false, true}));
  EXPECT_EQ(c->rope_theta, 1e6);
  EXPECT_EQ(c->sliding_rope_theta, 1e4);
  EXPECT_TRUE(c->norm_plus_one);
  EXPECT_EQ(c->embedding_scale, float(std::sqrt(64.0)));
  // transformers 4's keys.
  j["rope_theta"] = 5e5;
  j["rope_local_base_freq"] = 100.0;
  j["sliding_window_pattern"] = 2;
  j["rope_scaling"] = {{"rope_type", "linear"}, {"factor", 8.0}};
  c = parse(j);
  ASSERT_TRUE(c.ok()) << c.error().message;
  EXPECT_EQ(c->rope_theta, 5e5);
  EXPECT_EQ(c->sliding_rope_theta, 100.0);
  EXPECT_EQ(c->rope_scaling.type, "linear");
  EXPECT_EQ(c->sliding_layers, (std::vector<bool>{true, false, true, false, true, false, true}));
  // transformers 5's, per layer type; a scaled RoPE on the sliding layers is refused by name.
  j.erase("rope_theta");
  j.erase("rope_local_base_freq");
  j.erase("rope_scaling");
  j["rope_parameters"] = {{"full_attention", {{"rope_type", "default"}, {"rope_theta", 2e6}}},
                          {"sliding_attention", {{"rope_type", "default"}, {"rope_theta", 20.0}}}};
  c = parse(j);
  ASSERT_TRUE(c.ok()) << c.error().message;
  EXPECT_EQ(c->rope_theta, 2e6);
  EXPECT_EQ(c->sliding_rope_theta, 20.0);
  j["rope_parameters"]["sliding_attention"]["rope_type"] = "linear";
  j["rope_parameters"]["sliding_attention"]["factor"] = 2.0;
  EXPECT_EQ(error_of(j), kPath + ": key 'rope_parameters.sliding_attention.rope_type' = 'linear': scaled RoPE on "
                                 "the sliding layers is not implemented (only the default type)");
  j["rope_parameters"] = {{"global", {{"rope_type", "default"}}}};
  EXPECT_EQ(error_of(j), kPath + ": key 'rope_parameters' of a Gemma 3 config must be keyed by layer type "
                                 "(full_attention, sliding_attention), got 'global'");
}

// LongRoPE as transformers 5 resolves it: the top-level original_max_position_embeddings first (Phi-3),
// factor max_position_embeddings / original, attention factor sqrt(1 + ln(factor) / ln(original)).
TEST(Config, LongRope) {
  json j = base_config();   // head_dim 8: 4 factors
  j["rope_scaling"] = {{"rope_type", "longrope"}, {"short_factor", {1.0, 1.0, 1.5, 2.0}},
                       {"long_factor", {1.0, 2.0, 3.0, 4.0}}};
  j["original_max_position_embeddings"] = 128;
  auto c = parse(j);
  ASSERT_TRUE(c.ok()) << c.error().message;
  EXPECT_EQ(c->rope_scaling.type, "longrope");
  EXPECT_EQ(c->rope_scaling.original_max_position_embeddings, 128);
  EXPECT_EQ(c->rope_scaling.factor, 4.0);   // 512 / 128
  EXPECT_DOUBLE_EQ(c->rope_scaling.attention_factor, std::sqrt(1 + std::log(4.0) / std::log(128.0)));
  EXPECT_EQ(c->rope_scaling.long_factor, (std::vector<double>{1.0, 2.0, 3.0, 4.0}));
  j.erase("original_max_position_embeddings");
  EXPECT_EQ(parse(j)->rope_scaling.factor, 1.0);
  EXPECT_EQ(parse(j)->rope_scaling.attention_factor, 1.0);
}

TEST(Config, AttentionBias) {
  json j = base_config();
  j["attention_bias"] = true;
  EXPECT_TRUE(parse(j)->attention_bias);
  j["architectures"] = {"MistralForCausalLM"};
  EXPECT_FALSE(parse(j)->attention_bias);   // Mistral's attention reads no attention_bias
  j["architectures"] = {"Qwen2ForCausalLM"};
  j["attention_bias"] = false;
  EXPECT_TRUE(parse(j)->attention_bias);
}

TEST(Config, NewDtypeKey) {
  json j = base_config();
  j.erase("torch_dtype");
  j["dtype"] = "float16";
  EXPECT_EQ(parse(j)->torch_dtype, "float16");
}

TEST(Config, RopeScalingNullAndDefault) {
  json j = base_config();
  j["rope_scaling"] = nullptr;
  EXPECT_TRUE(parse(j)->rope_scaling.type.empty());
  j["rope_scaling"] = {{"rope_type", "default"}};
  EXPECT_TRUE(parse(j)->rope_scaling.type.empty());
}

TEST(Config, RopeScalingLegacyTypeKey) {
  json j = base_config();
  j["rope_scaling"] = {{"type", "llama3"},
                       {"factor", 32.0},
                       {"low_freq_factor", 1.0},
                       {"high_freq_factor", 4.0},
                       {"original_max_position_embeddings", 8192}};
  auto c = parse(j);
  ASSERT_TRUE(c.ok()) << c.error().message;
  EXPECT_EQ(c->rope_scaling.type, "llama3");
  EXPECT_DOUBLE_EQ(c->rope_scaling.factor, 32.0);
}

// --- errors -----------------------------------------------------------------------------------

// transformers 5 writes RoPE as one rope_parameters object and no rope_theta (SmolLM2-135M-Instruct:
// {"rope_theta": 100000.0, "rope_type": "default"}); fp4c used to read 10000 there without a word.
TEST(Config, RopeParametersOfTransformers5) {
  json j = base_config();
  j.erase("rope_theta");
  j["rope_parameters"] = {{"rope_theta", 100000.0}, {"rope_type", "default"}};
  auto c = parse(j);
  ASSERT_TRUE(c.ok()) << c.error().message;
  EXPECT_DOUBLE_EQ(c->rope_theta, 100000.0);
  EXPECT_EQ(c->rope_source, "rope_parameters");
  EXPECT_TRUE(c->rope_scaling.type.empty());
  // Llama 3 scaling written the transformers 5 way.
  j["rope_parameters"] = {{"rope_theta", 500000.0}, {"rope_type", "llama3"}, {"factor", 8.0},
                          {"low_freq_factor", 1.0}, {"high_freq_factor", 4.0},
                          {"original_max_position_embeddings", 8192}};
  c = parse(j);
  ASSERT_TRUE(c.ok()) << c.error().message;
  EXPECT_DOUBLE_EQ(c->rope_theta, 500000.0);
  EXPECT_EQ(c->rope_scaling.type, "llama3");
  EXPECT_DOUBLE_EQ(c->rope_scaling.factor, 8.0);
  EXPECT_EQ(c->rope_scaling.original_max_position_embeddings, 8192);
  // Both forms, agreeing: fine; the top-level one alone: where it came from is recorded.
  j["rope_theta"] = 500000.0;
  EXPECT_TRUE(parse(j).ok());
  j = base_config();
  EXPECT_EQ(parse(j)->rope_source, "rope_theta");
  j.erase("rope_theta");
  EXPECT_EQ(parse(j)->rope_source, "default");
  EXPECT_DOUBLE_EQ(parse(j)->rope_theta, 10000.0);   // LlamaConfig's own default
}

// Every key that would change the computation and is not implemented is refused by name.
TEST(ConfigError, UnimplementedFormsAreRefusedByName) {
  json j = base_config();
  j["rope_parameters"] = {{"rope_theta", 10000.0}, {"rope_type", "su"}, {"factor", 4.0}};
  EXPECT_NE(error_of(j).find("unsupported RoPE type 'su' in key 'rope_parameters' (supported: default, linear, "
                             "dynamic, llama3, yarn, longrope)"),
            std::string::npos) << error_of(j);
  for (const char* type : {"su", "mrope"}) {
    j = base_config();
    j["rope_scaling"] = {{"rope_type", type}, {"factor", 2.0}};
    EXPECT_NE(error_of(j).find(std::string("unsupported RoPE type '") + type + "' in key 'rope_scaling'"),
              std::string::npos) << type;
  }
  j = base_config();
  j["rope_theta"] = 20000.0;
  j["rope_parameters"] = {{"rope_theta", 10000.0}, {"rope_type", "default"}};
  EXPECT_EQ(error_of(j), kPath + ": keys 'rope_theta' and 'rope_parameters.rope_theta' disagree");
  j = base_config();
  j["rope_parameters"] = {{"full_attention", {{"rope_theta", 1e6}, {"rope_type", "default"}}},
                          {"sliding_attention", {{"rope_theta", 1e4}, {"rope_type", "default"}}}};
  EXPECT_NE(error_of(j).find("per-layer-type parameters ('full_attention'): RoPE per layer type is implemented for "
                             "Gemma3ForCausalLM only"),
            std::string::npos) << error_of(j);
  j = base_config();
  j["partial_rotary_factor"] = 0.5;
  EXPECT_EQ(error_of(j), kPath + ": key 'partial_rotary_factor' = 0.5: LlamaForCausalLM rotates the whole head; "
                                 "partial rotary embeddings are applied for Phi3ForCausalLM only");
  j["partial_rotary_factor"] = 1.0;
  EXPECT_TRUE(parse(j).ok());
  j = base_config();
  j["rope_parameters"] = {{"rope_theta", 10000.0}, {"rope_type", "default"}, {"partial_rotary_factor", 0.5}};
  EXPECT_NE(error_of(j).find("partial rotary embeddings are applied for Phi3ForCausalLM only"), std::string::npos);
  // attn_logit_softcapping: transformers 5.25's Gemma3 never applies it; refused everywhere.
  for (const char* arch : {"LlamaForCausalLM", "Gemma3ForCausalLM"}) {
    j = base_config();
    j["architectures"] = {arch};
    j["attn_logit_softcapping"] = 50.0;
    EXPECT_NE(error_of(j).find("key 'attn_logit_softcapping': transformers' " + std::string(arch) +
                               " does not apply attention soft-capping"),
              std::string::npos) << error_of(j);
  }
  j = base_config();
  j["final_logit_softcapping"] = 30.0;
  EXPECT_EQ(error_of(j), kPath + ": key 'final_logit_softcapping' is not read by LlamaForCausalLM; fp4c refuses a "
                                 "config it cannot tell the meaning of");
  j["architectures"] = {"Gemma3ForCausalLM"};
  ASSERT_TRUE(parse(j).ok()) << error_of(j);
  EXPECT_EQ(parse(j)->final_logit_softcapping, 30.0);
  j["final_logit_softcapping"] = -1.0;
  EXPECT_EQ(error_of(j), kPath + ": key 'final_logit_softcapping' must be positive");
  j["final_logit_softcapping"] = nullptr;   // transformers' default: none
  EXPECT_EQ(parse(j)->final_logit_softcapping, 0.0);
  j = base_config();
  j["query_pre_attn_scalar"] = 30.0;
  EXPECT_EQ(error_of(j), kPath + ": key 'query_pre_attn_scalar' is not read by LlamaForCausalLM's attention; fp4c "
                                 "refuses a config it cannot tell the meaning of");
  j = base_config();
  j["hidden_activation"] = "gelu_pytorch_tanh";   // a Llama reads hidden_act (silu)
  EXPECT_EQ(error_of(j), kPath + ": key 'hidden_activation' = 'gelu_pytorch_tanh' is not read by LlamaForCausalLM "
                                 "(it reads hidden_act = 'silu'); fp4c refuses a config it cannot tell the meaning of");
  j = base_config();
  j["hidden_act"] = "gelu_pytorch_tanh";
  EXPECT_EQ(parse(j)->hidden_act, "gelu_pytorch_tanh");
  j = base_config();
  j["use_bidirectional_attention"] = true;
  EXPECT_EQ(error_of(j), kPath + ": key 'use_bidirectional_attention': bidirectional attention is not implemented");
  j = base_config();
  j["layer_types"] = {"full_attention"};
  EXPECT_EQ(error_of(j), kPath + ": key 'layer_types' has 1 entries, but num_hidden_layers is 2");
  j["layer_types"] = {"full_attention", "chunked_attention"};
  EXPECT_NE(error_of(j).find("unsupported layer type 'chunked_attention'"), std::string::npos);
  j["layer_types"] = {"full_attention", "sliding_attention"};
  EXPECT_EQ(error_of(j), kPath + ": sliding-window layers without a key 'sliding_window'");
}

TEST(Config, LinearAndDynamicRope) {
  json j = base_config();
  j["rope_scaling"] = {{"rope_type", "linear"}, {"factor", 2.0}};
  auto c = parse(j);
  ASSERT_TRUE(c.ok()) << c.error().message;
  EXPECT_EQ(c->rope_scaling.type, "linear");
  EXPECT_DOUBLE_EQ(c->rope_scaling.factor, 2.0);
  j["rope_scaling"] = {{"type", "dynamic"}, {"factor", 4.0}};
  c = parse(j);
  ASSERT_TRUE(c.ok()) << c.error().message;
  EXPECT_EQ(c->rope_scaling.type, "dynamic");
  j["rope_scaling"] = {{"type", "linear"}};
  EXPECT_EQ(error_of(j), kPath + ": missing required key 'rope_scaling.factor'");
}

TEST(Config, SlidingWindowsInEachForm) {
  // Mistral: every layer.
  json j = base_config();
  j["architectures"] = {"MistralForCausalLM"};
  j["sliding_window"] = 16;
  auto c = parse(j);
  ASSERT_TRUE(c.ok()) << c.error().message;
  EXPECT_EQ(c->sliding_window, 16);
  EXPECT_EQ(c->sliding_layers, (std::vector<bool>{true, true}));
  j["sliding_window"] = nullptr;
  EXPECT_FALSE(parse(j)->sliding_window.has_value());
  j.erase("sliding_window");   // absent: MistralConfig's default, 4096
  EXPECT_EQ(parse(j)->sliding_window, 4096);
  // Llama's attention ignores the key (so does fp4c).
  j = base_config();
  j["sliding_window"] = 16;
  EXPECT_FALSE(parse(j)->sliding_window.has_value());
  // Qwen2: only with use_sliding_window, from max_window_layers on.
  j = base_config();
  j["architectures"] = {"Qwen2ForCausalLM"};
  j["sliding_window"] = 32;
  j["use_sliding_window"] = false;
  j["max_window_layers"] = 1;
  EXPECT_FALSE(parse(j)->sliding_window.has_value());
  j["use_sliding_window"] = true;
  c = parse(j);
  ASSERT_TRUE(c.ok()) << c.error().message;
  EXPECT_EQ(c->sliding_window, 32);
  EXPECT_EQ(c->sliding_layers, (std::vector<bool>{false, true}));
  // Qwen2Config's defaults where the keys are absent: max_window_layers 28 (so no layer of this 2-layer
  // model slides), sliding_window 4096.
  j.erase("max_window_layers");
  EXPECT_FALSE(parse(j)->sliding_window.has_value());
  j["num_hidden_layers"] = 30;
  j.erase("sliding_window");
  c = parse(j);
  ASSERT_TRUE(c.ok()) << c.error().message;
  EXPECT_EQ(c->sliding_window, 4096);
  EXPECT_TRUE(c->sliding_layers[28] && c->sliding_layers[29] && !c->sliding_layers[27]);
  // layer_types (transformers 5) says it per layer.
  j = base_config();
  j["sliding_window"] = 8;
  j["layer_types"] = {"sliding_attention", "full_attention"};
  c = parse(j);
  ASSERT_TRUE(c.ok()) << c.error().message;
  EXPECT_EQ(c->sliding_layers, (std::vector<bool>{true, false}));
}

TEST(ConfigError, MissingFile) {
  auto c = read_config("/nonexistent/dir/config.json");
  ASSERT_FALSE(c.ok());
  EXPECT_NE(c.error().message.find("/nonexistent/dir/config.json: cannot open"), std::string::npos)
      << c.error().message;
}

TEST(ConfigError, NumberOverflowIsAnErrorNotAnAbort) {
  // json::out_of_range used to escape the parse_error handler and abort the process.
  auto c = parse_config(R"({"hidden_size": 64, "rope_theta": 1e400})", kPath);
  ASSERT_FALSE(c.ok());
  EXPECT_EQ(c.error().message, kPath + ": malformed JSON at byte 34: number 1e400 is outside the range of a double");
  c = parse_config(std::string(200, '{'), kPath);
  ASSERT_FALSE(c.ok());
  EXPECT_NE(c.error().message.find("nested deeper than 64 levels"), std::string::npos) << c.error().message;
}

TEST(ConfigError, MalformedJson) {
  // The second comma is the 20th byte: offset 19.
  auto c = parse_config(R"({"hidden_size": 64,, "x": 1})", kPath);
  ASSERT_FALSE(c.ok());
  EXPECT_NE(c.error().message.find(kPath + ": malformed JSON at byte 19"), std::string::npos)
      << c.error().message;
}

TEST(ConfigError, MalformedJsonFile) {
  std::string path = testing::TempDir() + "fp4c_config_test_malformed.json";
  std::ofstream(path) << "{\"architectures\": [\"LlamaForCausalLM\"";
  auto c = read_config(path);
  std::filesystem::remove(path);
  ASSERT_FALSE(c.ok());
  // Offsets count from 0; the end of input is one past the last byte (37 bytes).
  EXPECT_NE(c.error().message.find(path + ": malformed JSON at byte 37"), std::string::npos)
      << c.error().message;
}

TEST(ConfigError, EmptyText) {
  auto c = parse_config("", kPath);
  ASSERT_FALSE(c.ok());
  EXPECT_NE(c.error().message.find(kPath + ": malformed JSON at byte"), std::string::npos);
}

TEST(ConfigError, NotAnObject) {
  EXPECT_EQ(parse_config("[1, 2]", kPath).error().message,
            kPath + ": expected a JSON object at the top level, got array");
}

TEST(ConfigError, MissingRequiredKeys) {
  for (const char* key :
       {"architectures", "hidden_size", "intermediate_size", "num_hidden_layers",
        "num_attention_heads", "vocab_size", "max_position_embeddings", "rms_norm_eps"}) {
    json j = base_config();
    j.erase(key);
    EXPECT_EQ(error_of(j), kPath + ": missing required key '" + key + "'");
    j[key] = nullptr;
    EXPECT_EQ(error_of(j), kPath + ": missing required key '" + key + "'");
  }
}

TEST(ConfigError, WrongTypes) {
  struct Case {
    const char* key;
    json value;
    const char* message;
  };
  const Case cases[] = {
      {"hidden_size", "64", "key 'hidden_size' must be an integer, got string"},
      {"hidden_size", 64.5, "key 'hidden_size' must be an integer, got number"},
      {"num_key_value_heads", true, "key 'num_key_value_heads' must be an integer, got boolean"},
      {"head_dim", json::array({8}), "key 'head_dim' must be an integer, got array"},
      {"vocab_size", json::object(), "key 'vocab_size' must be an integer, got object"},
      {"rms_norm_eps", "1e-5", "key 'rms_norm_eps' must be a number, got string"},
      {"rope_theta", "x", "key 'rope_theta' must be a number, got string"},
      {"tie_word_embeddings", "yes", "key 'tie_word_embeddings' must be a boolean, got string"},
      {"attention_bias", 1, "key 'attention_bias' must be a boolean, got integer"},
      {"bos_token_id", "1", "key 'bos_token_id' must be an integer, got string"},
      {"eos_token_id", "2",
       "key 'eos_token_id' must be an integer or a list of integers, got string"},
      {"eos_token_id", json::array({2, "3"}),
       "key 'eos_token_id' must be an integer or a list of integers, got a list holding string"},
      {"torch_dtype", 16, "key 'torch_dtype' must be a string, got integer"},
      {"architectures", "LlamaForCausalLM", "key 'architectures' must be an array, got string"},
      {"architectures", json::array({1}), "key 'architectures' must hold a string, got integer"},
      {"rope_scaling", "llama3", "key 'rope_scaling' must be an object or null, got string"},
      {"hidden_size", 18446744073709551615ull, "key 'hidden_size' is out of range"},
  };
  for (const Case& c : cases) {
    json j = base_config();
    j[c.key] = c.value;
    EXPECT_EQ(error_of(j), kPath + ": " + c.message);
  }
}

TEST(ConfigError, ArchitectureCount) {
  json j = base_config();
  j["architectures"] = json::array();
  EXPECT_EQ(error_of(j), kPath + ": key 'architectures' must hold exactly one entry, got 0");
  j["architectures"] = {"LlamaForCausalLM", "MistralForCausalLM"};
  EXPECT_EQ(error_of(j), kPath + ": key 'architectures' must hold exactly one entry, got 2");
}

TEST(ConfigError, UnsupportedArchitecture) {
  json j = base_config();
  j["architectures"] = {"GPT2LMHeadModel"};
  EXPECT_EQ(error_of(j), kPath +
                             ": unsupported architecture GPT2LMHeadModel (supported: "
                             "Gemma3ForCausalLM, LlamaForCausalLM, MistralForCausalLM, MixtralForCausalLM, Phi3ForCausalLM, Qwen2ForCausalLM, Qwen3ForCausalLM, Qwen3MoeForCausalLM)");
}

TEST(ConfigError, NonPositiveSizes) {
  for (const char* key :
       {"hidden_size", "intermediate_size", "num_hidden_layers", "num_attention_heads",
        "num_key_value_heads", "head_dim", "vocab_size", "max_position_embeddings"}) {
    for (int v : {0, -4}) {
      json j = base_config();
      j[key] = v;
      EXPECT_EQ(error_of(j),
                kPath + ": key '" + key + "' must be positive, got " + std::to_string(v));
    }
  }
  json j = base_config();
  j["rms_norm_eps"] = 0.0;
  EXPECT_EQ(error_of(j), kPath + ": key 'rms_norm_eps' must be positive, got 0");
  j = base_config();
  j["rope_theta"] = -1.0;
  EXPECT_EQ(error_of(j), kPath + ": key 'rope_theta' must be positive, got -1");
}

TEST(ConfigError, HeadsDoNotDivideHidden) {
  json j = base_config();
  j["hidden_size"] = 100;
  j["num_attention_heads"] = 3;
  j["num_key_value_heads"] = 1;
  EXPECT_EQ(error_of(j), kPath + ": hidden_size 100 is not divisible by num_attention_heads 3");
}

TEST(ConfigError, KvHeadsDoNotDivideHeads) {
  json j = base_config();
  j["num_key_value_heads"] = 3;
  EXPECT_EQ(error_of(j),
            kPath + ": num_attention_heads 8 is not divisible by num_key_value_heads 3");
}

TEST(ConfigError, OddHeadDim) {
  json j = base_config();
  j["head_dim"] = 7;
  EXPECT_EQ(error_of(j), kPath + ": head_dim 7 must be even (RoPE rotates pairs)");
}

TEST(ConfigError, RopeScaling) {
  json j = base_config();
  j["rope_scaling"] = {{"rope_type", "su"}, {"factor", 4.0}};
  EXPECT_EQ(error_of(j), kPath + ": unsupported RoPE type 'su' in key 'rope_scaling' (supported: default, linear, "
                                 "dynamic, llama3, yarn, longrope); fp4c would compute another model");
  j["rope_scaling"] = {{"type", "longrope"}, {"factor", 2.0}};
  EXPECT_EQ(error_of(j), kPath + ": missing required key 'rope_scaling.short_factor'");
  j["rope_scaling"] = {{"type", "longrope"}, {"short_factor", {1.0, 2.0}}, {"long_factor", {1.0, 2.0, 3.0, 4.0}}};
  EXPECT_EQ(error_of(j), kPath + ": key 'rope_scaling.short_factor' has 2 entries, expected rotary_dim / 2 = 4");
  j["rope_scaling"] = {{"rope_type", "yarn"}, {"factor", 4.0}, {"beta_fast", -1.0}};
  EXPECT_EQ(error_of(j), kPath + ": keys 'rope_scaling.beta_fast' and 'rope_scaling.beta_slow' must be positive");
  j["rope_scaling"] = {{"factor", 2.0}};
  EXPECT_EQ(error_of(j), kPath + ": missing required key 'rope_scaling.rope_type'");
  j["rope_scaling"] = {{"rope_type", "llama3"},
                       {"low_freq_factor", 1.0},
                       {"high_freq_factor", 4.0},
                       {"original_max_position_embeddings", 8192}};
  EXPECT_EQ(error_of(j), kPath + ": missing required key 'rope_scaling.factor'");
  j["rope_scaling"]["factor"] = "8";
  EXPECT_EQ(error_of(j), kPath + ": key 'rope_scaling.factor' must be a number, got string");
  j["rope_scaling"]["factor"] = 8.0;
  j["rope_scaling"]["original_max_position_embeddings"] = 8192.5;
  EXPECT_EQ(error_of(j), kPath +
                             ": key 'rope_scaling.original_max_position_embeddings' must be an "
                             "integer, got number");
  j["rope_scaling"]["original_max_position_embeddings"] = 8192;
  j["rope_scaling"]["low_freq_factor"] = 4.0;
  EXPECT_EQ(error_of(j), kPath +
                             ": key 'rope_scaling.low_freq_factor' must be below "
                             "'rope_scaling.high_freq_factor'");
}

TEST(ConfigError, UnsupportedFeatures) {
  json j = base_config();
  j["hidden_act"] = "gelu";
  EXPECT_EQ(error_of(j),
            kPath + ": key 'hidden_act': unsupported activation 'gelu' (supported: silu, gelu_pytorch_tanh)");
}

// Biases as each architecture's attention and MLP read the keys: Llama's attention_bias gives q, k, v and o
// biases and mlp_bias gate, up and down ones; Mistral has none whatever the keys say; only Llama reads
// mlp_bias.
TEST(Config, BiasKeysPerArchitecture) {
  json j = base_config();
  j["mlp_bias"] = true;
  j["attention_bias"] = true;
  auto c = parse(j);
  ASSERT_TRUE(c.ok()) << c.error().message;
  EXPECT_TRUE(c->mlp_bias);
  EXPECT_TRUE(c->attention_bias);
  j["architectures"] = {"MistralForCausalLM"};
  c = parse(j);
  ASSERT_TRUE(c.ok()) << c.error().message;
  EXPECT_FALSE(c->mlp_bias);
  EXPECT_FALSE(c->attention_bias);
  j["architectures"] = {"Qwen3ForCausalLM"};
  c = parse(j);
  ASSERT_TRUE(c.ok()) << c.error().message;
  EXPECT_FALSE(c->mlp_bias);
  EXPECT_TRUE(c->attention_bias);
}


// A Phi-3 config as transformers 5 writes it (Phi-4-mini's partial rotary and longrope in rope_parameters).
json phi3_config() {
  json j = base_config();
  j["architectures"] = {"Phi3ForCausalLM"};
  j["model_type"] = "phi3";
  j["hidden_size"] = 64;
  j["num_attention_heads"] = 4;
  j["num_key_value_heads"] = 2;
  j.erase("rope_theta");
  j.erase("tie_word_embeddings");
  j["original_max_position_embeddings"] = 32;
  j["pad_token_id"] = nullptr;
  j["resid_pdrop"] = 0.1;   // training only
  j["embd_pdrop"] = 0.1;
  j["sliding_window"] = nullptr;
  j["rope_parameters"] = {{"rope_theta", 10000.0}, {"rope_type", "longrope"}, {"partial_rotary_factor", 0.75},
                          {"short_factor", {1.0, 1.0, 1.0, 1.0, 1.0, 1.0}},
                          {"long_factor", {1.0, 2.0, 3.0, 4.0, 5.0, 6.0}}};
  return j;
}

TEST(Config, Phi3PartialRotaryLongropeAndWindow) {
  json j = phi3_config();
  auto c = parse(j);
  ASSERT_TRUE(c.ok()) << c.error().message;
  EXPECT_EQ(c->head_dim, 16);
  EXPECT_EQ(c->rotary_dim, 12);   // int(16 * 0.75)
  EXPECT_EQ(c->rope_dim(), 12);
  EXPECT_EQ(c->partial_rotary_factor, 0.75);
  EXPECT_EQ(c->rope_scaling.type, "longrope");
  EXPECT_EQ(c->rope_scaling.original_max_position_embeddings, 32);
  EXPECT_EQ(c->rope_scaling.long_factor.size(), 6u);
  EXPECT_FALSE(c->sliding_window);
  EXPECT_FALSE(c->tie_word_embeddings);   // Phi3Config's default
  EXPECT_FALSE(c->attention_bias);
  // transformers 4's form: the factor at the top level.
  j = phi3_config();
  j["rope_parameters"].erase("partial_rotary_factor");
  j["partial_rotary_factor"] = 0.75;
  c = parse(j);
  ASSERT_TRUE(c.ok()) << c.error().message;
  EXPECT_EQ(c->rotary_dim, 12);
  j["rope_parameters"]["partial_rotary_factor"] = 0.5;
  EXPECT_EQ(error_of(j), kPath + ": keys 'partial_rotary_factor' and 'rope_parameters.partial_rotary_factor' disagree");
  // The factor lists follow rotary_dim / 2, not head_dim / 2.
  j = phi3_config();
  j["rope_parameters"]["short_factor"] = json::array({1.0, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0});
  EXPECT_NE(error_of(j).find("has 8 entries, expected rotary_dim / 2 = 6"), std::string::npos) << error_of(j);
  // An odd rotary_dim: int(16 * 0.7) = 11.
  j = phi3_config();
  j["rope_parameters"]["partial_rotary_factor"] = 0.7;
  EXPECT_NE(error_of(j).find("gives rotary_dim int(16 * 0.7) = 11, which must be even and positive"), std::string::npos)
      << error_of(j);
  j["rope_parameters"]["partial_rotary_factor"] = 1.5;
  EXPECT_NE(error_of(j).find("must be in (0, 1]"), std::string::npos) << error_of(j);
  j["rope_parameters"]["partial_rotary_factor"] = 0.0;
  EXPECT_NE(error_of(j).find("must be in (0, 1]"), std::string::npos) << error_of(j);
  // Every layer slides when sliding_window is set.
  j = phi3_config();
  j["sliding_window"] = 16;
  c = parse(j);
  ASSERT_TRUE(c.ok()) << c.error().message;
  EXPECT_EQ(c->sliding_window, 16);
  EXPECT_EQ(c->sliding_layers, std::vector<bool>({true, true}));
  // Phi3Config reads su and yarn as longrope, and refuses other types.
  j = phi3_config();
  j["rope_parameters"]["rope_type"] = "su";
  c = parse(j);
  ASSERT_TRUE(c.ok()) << c.error().message;
  EXPECT_EQ(c->rope_scaling.type, "longrope");
  j["rope_parameters"]["rope_type"] = "linear";
  j["rope_parameters"]["factor"] = 2.0;
  EXPECT_NE(error_of(j).find("Phi3ForCausalLM accepts default and longrope"), std::string::npos) << error_of(j);
  // attention_bias is not read by Phi-3's attention (its qkv_proj has no bias).
  j = phi3_config();
  j["attention_bias"] = true;
  EXPECT_FALSE(parse(j)->attention_bias);
}

}  // namespace
}  // namespace fp4c::frontend
