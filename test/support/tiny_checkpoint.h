// Small Hugging Face checkpoints written on the fly for tests: a Llama-shaped config and BF16 tensors
// with random heavy-tailed values, optionally sharded, plus helpers to run the fp4c binary.
#pragma once

#include <gtest/gtest.h>

#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <map>
#include <random>
#include <string>
#include <vector>

#include "formats/bf16.h"
#include "formats/safetensors.h"

namespace fp4c::testing {

namespace fs = std::filesystem;

struct TinyShape {
  std::string architecture = "LlamaForCausalLM";
  int hidden = 64;
  int intermediate = 176;   // a multiple of 16; use e.g. 172 for a down_proj that must stay BF16
  int layers = 2;
  int heads = 4;
  int kv_heads = 2;
  int vocab = 96;
  bool tied = false;
};

struct TinyTensor {
  std::string name;
  std::vector<int64_t> shape;
  std::vector<uint16_t> bf16;
};

inline std::vector<TinyTensor> tiny_tensors(const TinyShape& s, uint64_t seed) {
  std::mt19937_64 rng(seed);
  std::student_t_distribution<float> t(5.0f);
  const int hd = s.hidden / s.heads;
  std::vector<TinyTensor> out;
  auto add = [&](std::string name, std::vector<int64_t> shape, float scale, float offset) {
    TinyTensor tt{std::move(name), shape, {}};
    int64_t n = 1;
    for (auto d : shape) n *= d;
    tt.bf16.resize(size_t(n));
    for (auto& v : tt.bf16) v = bf16::from_float(offset + scale * t(rng));
    out.push_back(std::move(tt));
  };
  add("model.embed_tokens.weight", {s.vocab, s.hidden}, 0.02f, 0);
  for (int i = 0; i < s.layers; ++i) {
    const std::string p = "model.layers." + std::to_string(i) + ".";
    add(p + "input_layernorm.weight", {s.hidden}, 0.05f, 1);
    add(p + "mlp.down_proj.weight", {s.hidden, s.intermediate}, 0.03f, 0);
    add(p + "mlp.gate_proj.weight", {s.intermediate, s.hidden}, 0.03f, 0);
    add(p + "mlp.up_proj.weight", {s.intermediate, s.hidden}, 0.03f, 0);
    add(p + "post_attention_layernorm.weight", {s.hidden}, 0.05f, 1);
    if (s.architecture == "Qwen2ForCausalLM") {
      add(p + "self_attn.k_proj.bias", {s.kv_heads * hd}, 0.01f, 0);
    }
    add(p + "self_attn.k_proj.weight", {s.kv_heads * hd, s.hidden}, 0.05f, 0);
    add(p + "self_attn.o_proj.weight", {s.hidden, s.heads * hd}, 0.05f, 0);
    if (s.architecture == "Qwen2ForCausalLM") add(p + "self_attn.q_proj.bias", {s.heads * hd}, 0.01f, 0);
    add(p + "self_attn.q_proj.weight", {s.heads * hd, s.hidden}, 0.05f, 0);
    if (s.architecture == "Qwen2ForCausalLM") add(p + "self_attn.v_proj.bias", {s.kv_heads * hd}, 0.01f, 0);
    add(p + "self_attn.v_proj.weight", {s.kv_heads * hd, s.hidden}, 0.05f, 0);
  }
  add("model.norm.weight", {s.hidden}, 0.05f, 1);
  if (!s.tied) add("lm_head.weight", {s.vocab, s.hidden}, 0.02f, 0);
  return out;
}

// tiny_tensors with channels 3, 17 and 40 of every norm whose name contains `norm` made 30x larger: planted
// activation outlier channels at the Linears that norm feeds.
inline std::vector<TinyTensor> planted_outliers(const TinyShape& shape, uint64_t seed,
                                                const std::string& norm = "input_layernorm") {
  auto tensors = tiny_tensors(shape, seed);
  for (auto& t : tensors)
    if (t.name.find(norm) != std::string::npos)
      for (size_t j : {size_t(3), size_t(17), size_t(40)}) t.bf16[j] = bf16::from_float(30 * bf16::to_float(t.bf16[j]));
  return tensors;
}

inline std::string tiny_config(const TinyShape& s) {
  char buf[1024];
  std::snprintf(buf, sizeof buf,
                "{\n  \"architectures\": [\"%s\"],\n  \"model_type\": \"%s\",\n  \"hidden_size\": %d,\n"
                "  \"intermediate_size\": %d,\n  \"num_hidden_layers\": %d,\n  \"num_attention_heads\": %d,\n"
                "  \"num_key_value_heads\": %d,\n  \"vocab_size\": %d,\n  \"max_position_embeddings\": 256,\n"
                "  \"rms_norm_eps\": 1e-05,\n  \"rope_theta\": 10000.0,\n  \"tie_word_embeddings\": %s,\n"
                "  \"torch_dtype\": \"bfloat16\",\n  \"bos_token_id\": 1,\n  \"eos_token_id\": 2\n}\n",
                s.architecture.c_str(), s.architecture == "Qwen2ForCausalLM" ? "qwen2" : "llama", s.hidden,
                s.intermediate, s.layers, s.heads, s.kv_heads, s.vocab, s.tied ? "true" : "false");
  return buf;
}

inline void write_text(const fs::path& p, const std::string& text) {
  std::ofstream out(p, std::ios::binary);
  out << text;
}

inline void write_safetensors(const fs::path& p, const std::vector<TinyTensor>& tensors) {
  std::vector<safetensors::TensorSpec> specs;
  for (const auto& t : tensors) specs.push_back({t.name, DType::BF16, t.shape});
  auto w = safetensors::Writer::create(p.string(), specs, {{"format", "pt"}});
  ASSERT_TRUE(w.ok()) << w.error().message;
  for (const auto& t : tensors) {
    auto st = w->write(std::as_bytes(std::span<const uint16_t>(t.bf16)));
    ASSERT_TRUE(st.ok()) << st.error().message;
  }
  auto st = w->finish();
  ASSERT_TRUE(st.ok()) << st.error().message;
}

// Writes dir/config.json and the tensors, in `shards` files (with an index) when shards > 1.
inline void write_checkpoint(const fs::path& dir, const TinyShape& s, const std::vector<TinyTensor>& tensors,
                             int shards = 1) {
  fs::create_directories(dir);
  write_text(dir / "config.json", tiny_config(s));
  write_text(dir / "generation_config.json", "{\"bos_token_id\": 1, \"eos_token_id\": 2}\n");
  if (shards == 1) {
    write_safetensors(dir / "model.safetensors", tensors);
    return;
  }
  std::string map;
  uint64_t total = 0;
  const size_t per = (tensors.size() + shards - 1) / shards;
  for (int k = 0; k < shards; ++k) {
    char name[64];
    std::snprintf(name, sizeof name, "model-%05d-of-%05d.safetensors", k + 1, shards);
    std::vector<TinyTensor> part(tensors.begin() + std::min(tensors.size(), k * per),
                                 tensors.begin() + std::min(tensors.size(), (k + 1) * per));
    write_safetensors(dir / name, part);
    for (const auto& t : part) {
      map += std::string(map.empty() ? "" : ",\n") + "    \"" + t.name + "\": \"" + name + "\"";
      total += t.bf16.size() * 2;
    }
  }
  write_text(dir / "model.safetensors.index.json",
             "{\n  \"metadata\": {\"total_size\": " + std::to_string(total) + "},\n  \"weight_map\": {\n" + map +
                 "\n  }\n}\n");
}

// A fresh temporary directory, removed at destruction.
struct TempDir {
  fs::path path;
  TempDir() {
    std::random_device rd;
    path = fs::temp_directory_path() / ("fp4c-test-" + std::to_string(rd()) + std::to_string(rd()));
    fs::create_directories(path);
  }
  ~TempDir() {
    std::error_code ec;
    fs::remove_all(path, ec);
  }
};

struct RunResult {
  int exit_code;
  std::string out;   // stdout and stderr together
};

inline std::string tool_path(const char* env, const char* fallback) {
  const char* p = std::getenv(env);
  return p ? p : std::string(FP4C_BINARY_DIR) + "/" + fallback;
}

// Runs a shell command line, capturing its output.
inline RunResult run(const std::string& cmd) {
  RunResult r{0, {}};
  FILE* p = popen((cmd + " 2>&1").c_str(), "r");
  if (!p) return {-1, "popen failed"};
  char buf[4096];
  size_t n;
  while ((n = fread(buf, 1, sizeof buf, p)) > 0) r.out.append(buf, n);
  int st = pclose(p);
  r.exit_code = WIFEXITED(st) ? WEXITSTATUS(st) : -1;
  return r;
}

inline RunResult fp4c(const std::string& args) { return run(tool_path("FP4C_BIN", "fp4c") + " " + args); }

inline std::string read_file(const fs::path& p) {
  std::ifstream in(p, std::ios::binary);
  return std::string(std::istreambuf_iterator<char>(in), {});
}

// A model made by `fp4c-synth --preset tiny` (Qwen2-shaped, planted outlier channels) in a fresh temporary
// directory, with a short calibration text and a separate evaluation text.
struct SynthModel {
  TempDir tmp;
  fs::path model = tmp.path / "tiny";
  fs::path calib = tmp.path / "calib.txt";
  fs::path eval = tmp.path / "eval.txt";
  SynthModel() {
    auto synth = run(tool_path("FP4C_SYNTH_BIN", "fp4c-synth") + " --preset tiny --out " + model.string());
    EXPECT_EQ(synth.exit_code, 0) << synth.out;
    write_text(calib,
               "The quick brown fox jumps over the lazy dog.\n\nfor (int i = 0; i < n; ++i) sum += x[i];\n\n"
               "Quantization maps many values onto few; calibration decides which.\n\n"
               "A block of sixteen values shares one scale, and a tensor shares one more.\n");
    write_text(eval,
               "Evaluation text is kept apart from calibration text.\n\nPerplexity is exp of the mean negative "
               "log likelihood.\n\nThe reference runs beside the candidate, layer by layer.\n\nKL divergence "
               "compares whole next-token distributions.\n");
  }
};

}  // namespace fp4c::testing
