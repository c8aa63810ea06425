// fp4c-synth end to end: determinism across runs and thread counts, config values, tensor names and
// shapes against the architecture, weight statistics, tokenizer structure, sharding, refusal to
// overwrite. Tiny presets only (each run is a fraction of a second).
#include <gtest/gtest.h>
#include <sys/wait.h>
#include <xxhash.h>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <map>
#include <set>
#include <sstream>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "formats/bf16.h"
#include "formats/safetensors.h"

namespace {

namespace fs = std::filesystem;
using nlohmann::json;

std::string synth_bin() {
  if (const char* env = std::getenv("FP4C_SYNTH_BIN")) return env;
  return std::string(FP4C_BINARY_DIR) + "/fp4c-synth";
}

// One scratch directory per test process, removed at exit.
const fs::path& scratch() {
  static const fs::path dir = [] {
    std::string templ = (fs::temp_directory_path() / "fp4c-synth-test-XXXXXX").string();
    if (!::mkdtemp(templ.data())) std::abort();
    return fs::path(templ);
  }();
  static const struct Cleanup {
    ~Cleanup() { std::error_code ec; fs::remove_all(dir, ec); }
  } cleanup;
  return dir;
}

struct RunResult {
  int status = -1;
  std::string output;
};

RunResult run_synth(const std::string& args) {
  const std::string cmd = "'" + synth_bin() + "' " + args + " 2>&1";
  RunResult r;
  std::FILE* p = ::popen(cmd.c_str(), "r");
  if (!p) return r;
  char buf[4096];
  size_t n;
  while ((n = std::fread(buf, 1, sizeof buf, p)) > 0) r.output.append(buf, n);
  const int st = ::pclose(p);
  r.status = WIFEXITED(st) ? WEXITSTATUS(st) : -1;
  return r;
}

// Generates into scratch()/name once per process.
fs::path generate(const std::string& name, const std::string& args) {
  static std::set<std::string> done;
  const fs::path dir = scratch() / name;
  if (done.insert(name).second) {
    const RunResult r = run_synth(args + " --out '" + dir.string() + "'");
    EXPECT_EQ(r.status, 0) << r.output;
  }
  return dir;
}

fs::path tiny() { return generate("tiny", "--preset tiny --threads 1"); }

std::string read_file(const fs::path& p) {
  std::ifstream in(p, std::ios::binary);
  std::stringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

json read_json(const fs::path& p) { return json::parse(read_file(p)); }

std::string file_hash(const fs::path& p) {
  const std::string bytes = read_file(p);
  const XXH128_hash_t h = XXH3_128bits(bytes.data(), bytes.size());
  char hex[33];
  std::snprintf(hex, sizeof hex, "%016llx%016llx", (unsigned long long)h.high64, (unsigned long long)h.low64);
  return hex;
}

std::map<std::string, std::string> dir_hashes(const fs::path& dir) {
  std::map<std::string, std::string> out;
  for (const auto& e : fs::directory_iterator(dir)) out[e.path().filename().string()] = file_hash(e.path());
  return out;
}

std::vector<std::string> leftovers(const fs::path& parent) {  // staging or set-aside directories
  std::vector<std::string> out;
  for (const auto& e : fs::directory_iterator(parent)) {
    const std::string name = e.path().filename().string();
    if (name.starts_with(".")) out.push_back(name);
  }
  return out;
}

std::vector<float> values(const fp4c::safetensors::Checkpoint& ck, const std::string& name) {
  const auto* ref = ck.find(name);
  if (!ref) return {};
  const auto bytes = ref->file->bytes(*ref->entry);
  std::vector<float> out(bytes.size() / 2);
  for (size_t i = 0; i < out.size(); ++i) {
    uint16_t b;
    std::memcpy(&b, bytes.data() + 2 * i, 2);
    out[i] = fp4c::bf16::to_float(b);
  }
  return out;
}

std::vector<uint8_t> raw_bytes(const fp4c::safetensors::Checkpoint& ck, const std::string& name) {
  const auto* ref = ck.find(name);
  if (!ref) return {};
  const auto bytes = ref->file->bytes(*ref->entry);
  const auto* p = reinterpret_cast<const uint8_t*>(bytes.data());
  return {p, p + bytes.size()};
}

double kurtosis(const std::vector<float>& x) {
  double mean = 0;
  for (float v : x) mean += v;
  mean /= double(x.size());
  double m2 = 0, m4 = 0;
  for (float v : x) {
    const double d = v - mean;
    m2 += d * d;
    m4 += d * d * d * d;
  }
  m2 /= double(x.size());
  m4 /= double(x.size());
  return m4 / (m2 * m2);
}

double median(std::vector<double> v) {
  std::nth_element(v.begin(), v.begin() + long(v.size() / 2), v.end());
  return v[v.size() / 2];
}

// Largest per-input-channel RMS over the median one, for a [rows, cols] matrix.
double column_outlier_ratio(const std::vector<float>& w, int64_t rows, int64_t cols) {
  std::vector<double> ss(size_t(cols), 0.0);
  for (int64_t r = 0; r < rows; ++r)
    for (int64_t c = 0; c < cols; ++c) ss[size_t(c)] += double(w[size_t(r * cols + c)]) * w[size_t(r * cols + c)];
  for (double& s : ss) s = std::sqrt(s / double(rows));
  return *std::max_element(ss.begin(), ss.end()) / median(ss);
}

double norm_outlier_ratio(const std::vector<float>& g) {
  std::vector<double> a(g.begin(), g.end());
  for (double& v : a) v = std::abs(v);
  return *std::max_element(a.begin(), a.end()) / median(a);
}

// The tensors a Qwen2 / Llama checkpoint must hold, derived from its config.
std::map<std::string, std::vector<int64_t>> expected_tensors(const json& cfg) {
  const int64_t h = cfg["hidden_size"], inter = cfg["intermediate_size"], v = cfg["vocab_size"];
  const int64_t heads = cfg["num_attention_heads"], kv = cfg["num_key_value_heads"];
  const int64_t hd = h / heads;
  const bool qwen = cfg["model_type"] == "qwen2";
  std::map<std::string, std::vector<int64_t>> t;
  t["model.embed_tokens.weight"] = {v, h};
  for (int64_t i = 0; i < cfg["num_hidden_layers"].get<int64_t>(); ++i) {
    const std::string l = "model.layers." + std::to_string(i) + ".";
    t[l + "input_layernorm.weight"] = {h};
    t[l + "post_attention_layernorm.weight"] = {h};
    t[l + "self_attn.q_proj.weight"] = {heads * hd, h};
    t[l + "self_attn.k_proj.weight"] = {kv * hd, h};
    t[l + "self_attn.v_proj.weight"] = {kv * hd, h};
    t[l + "self_attn.o_proj.weight"] = {h, heads * hd};
    if (qwen) {
      t[l + "self_attn.q_proj.bias"] = {heads * hd};
      t[l + "self_attn.k_proj.bias"] = {kv * hd};
      t[l + "self_attn.v_proj.bias"] = {kv * hd};
    }
    t[l + "mlp.gate_proj.weight"] = {inter, h};
    t[l + "mlp.up_proj.weight"] = {inter, h};
    t[l + "mlp.down_proj.weight"] = {h, inter};
  }
  t["model.norm.weight"] = {h};
  if (!cfg["tie_word_embeddings"].get<bool>()) t["lm_head.weight"] = {v, h};
  return t;
}

// GPT-2's bytes_to_unicode, written independently of the tool.
std::vector<std::string> gpt2_byte_symbols() {
  auto utf8 = [](uint32_t c) {
    std::string s;
    if (c < 0x80) s += char(c);
    else { s += char(0xC0 | (c >> 6)); s += char(0x80 | (c & 0x3F)); }
    return s;
  };
  std::vector<std::string> out(256);
  int n = 0;
  for (int b = 0; b < 256; ++b) {
    const bool printable = (b >= 33 && b <= 126) || (b >= 161 && b <= 172) || (b >= 174 && b <= 255);
    out[size_t(b)] = utf8(printable ? uint32_t(b) : uint32_t(256 + n++));
  }
  return out;
}

// ---- tests --------------------------------------------------------------------------------------

TEST(SynthTest, ByteIdenticalAcrossRunsAndThreadCounts) {
  const auto a = dir_hashes(tiny());
  const auto b = dir_hashes(generate("tiny-t2", "--preset tiny --threads 2"));
  const auto c = dir_hashes(generate("tiny-t2-again", "--preset tiny --threads 2"));
  const std::set<std::string> files = {"config.json", "generation_config.json", "model.safetensors",
                                       "tokenizer.json", "tokenizer_config.json"};
  std::set<std::string> names;
  for (const auto& [k, v] : a) names.insert(k);
  EXPECT_EQ(names, files);
  EXPECT_EQ(a, b);
  EXPECT_EQ(b, c);
  const auto other = dir_hashes(generate("tiny-seed1", "--preset tiny --seed 1"));
  EXPECT_NE(a.at("model.safetensors"), other.at("model.safetensors"));
  EXPECT_EQ(a.at("tokenizer.json"), other.at("tokenizer.json"));
}

TEST(SynthTest, ConfigHasQwen2Values) {
  const json cfg = read_json(tiny() / "config.json");
  const json tok = read_json(tiny() / "tokenizer.json");
  EXPECT_EQ(cfg["architectures"], json::array({"Qwen2ForCausalLM"}));
  EXPECT_EQ(cfg["model_type"], "qwen2");
  EXPECT_EQ(cfg["hidden_size"], 128);
  EXPECT_EQ(cfg["intermediate_size"], 352);
  EXPECT_EQ(cfg["num_hidden_layers"], 2);
  EXPECT_EQ(cfg["num_attention_heads"], 4);
  EXPECT_EQ(cfg["num_key_value_heads"], 2);
  EXPECT_EQ(cfg["max_position_embeddings"], 2048);
  EXPECT_EQ(cfg["tie_word_embeddings"], true);
  EXPECT_EQ(cfg["torch_dtype"], "bfloat16");
  EXPECT_EQ(cfg["hidden_act"], "silu");
  EXPECT_DOUBLE_EQ(cfg["rope_theta"].get<double>(), 1000000.0);
  EXPECT_DOUBLE_EQ(cfg["rms_norm_eps"].get<double>(), 1e-6);
  EXPECT_FALSE(cfg.contains("rope_scaling"));
  // vocab_size: the tokenizer's size rounded up to a multiple of 64.
  const int64_t tokenizer_size = int64_t(tok["model"]["vocab"].size() + tok["added_tokens"].size());
  EXPECT_EQ(cfg["vocab_size"].get<int64_t>(), (tokenizer_size + 63) / 64 * 64);
  int64_t endoftext = -1;
  for (const auto& t : tok["added_tokens"])
    if (t["content"] == "<|endoftext|>") endoftext = t["id"];
  EXPECT_EQ(cfg["bos_token_id"], endoftext);
  EXPECT_EQ(cfg["eos_token_id"], endoftext);
  const json gen = read_json(tiny() / "generation_config.json");
  EXPECT_EQ(gen["bos_token_id"], endoftext);
  EXPECT_EQ(gen["eos_token_id"], endoftext);
}

TEST(SynthTest, TensorsMatchTheArchitecture) {
  const json cfg = read_json(tiny() / "config.json");
  auto ck = fp4c::safetensors::Checkpoint::open(tiny().string());
  ASSERT_TRUE(ck.ok()) << ck.error().message;
  EXPECT_FALSE(ck->sharded());
  std::map<std::string, std::vector<int64_t>> got;
  for (const auto& ref : ck->tensors()) {
    EXPECT_EQ(ref.entry->dtype, fp4c::DType::BF16) << ref.entry->name;
    got[ref.entry->name] = ref.entry->shape;
  }
  EXPECT_EQ(got, expected_tensors(cfg));
  EXPECT_EQ(ck->files()[0].metadata().at("format"), "pt");
  // Laid out sorted by name, as the safetensors library writes.
  std::vector<std::string> order;
  for (const auto& t : ck->files()[0].tensors()) order.push_back(t.name);
  EXPECT_TRUE(std::is_sorted(order.begin(), order.end()));
}

TEST(SynthTest, WeightsAreHeavyTailedWithPlantedOutliers) {
  const json cfg = read_json(tiny() / "config.json");
  auto ck = fp4c::safetensors::Checkpoint::open(tiny().string());
  ASSERT_TRUE(ck.ok()) << ck.error().message;
  for (const auto& [name, shape] : expected_tensors(cfg)) {
    SCOPED_TRACE(name);
    const std::vector<float> w = values(*ck, name);
    ASSERT_EQ(int64_t(w.size()), shape.size() == 2 ? shape[0] * shape[1] : shape[0]);
    for (float v : w) ASSERT_TRUE(std::isfinite(v));
    if (name.ends_with("norm.weight")) {
      std::vector<double> g(w.begin(), w.end());
      EXPECT_GT(*std::min_element(g.begin(), g.end()), 0.0);
      EXPECT_NEAR(median(g), 1.0, 0.3);
      EXPECT_GT(norm_outlier_ratio(w), 8.0);  // 10-50x channels
    } else if (name.ends_with(".bias")) {
      EXPECT_LT(*std::max_element(w.begin(), w.end()), 0.5f);
    } else if (name == "model.embed_tokens.weight") {
      EXPECT_GT(kurtosis(w), 3.0);
    } else {  // Linear
      EXPECT_GT(kurtosis(w), 3.0);
      EXPECT_GT(column_outlier_ratio(w, shape[0], shape[1]), 4.0);  // 5-20x input channels
    }
  }
  // The same hidden channels are large in every norm (as in real models).
  std::set<size_t> argmax;
  for (const auto& [name, shape] : expected_tensors(cfg)) {
    if (!name.ends_with("norm.weight")) continue;
    const std::vector<float> g = values(*ck, name);
    argmax.insert(size_t(std::max_element(g.begin(), g.end()) - g.begin()));
  }
  EXPECT_EQ(argmax.size(), 1u);
}

TEST(SynthTest, OutliersOffLeavesHeavyTailsOnly) {
  const fs::path dir = generate("tiny-plain", "--preset tiny --outliers off");
  const json cfg = read_json(dir / "config.json");
  auto ck = fp4c::safetensors::Checkpoint::open(dir.string());
  ASSERT_TRUE(ck.ok()) << ck.error().message;
  for (const auto& [name, shape] : expected_tensors(cfg)) {
    SCOPED_TRACE(name);
    const std::vector<float> w = values(*ck, name);
    if (name.ends_with("norm.weight")) {
      EXPECT_LT(norm_outlier_ratio(w), 3.0);
    } else if (shape.size() == 2 && name != "model.embed_tokens.weight") {
      EXPECT_GT(kurtosis(w), 3.0);
      EXPECT_LT(column_outlier_ratio(w, shape[0], shape[1]), 3.0);
    }
  }
}

TEST(SynthTest, TokenizerIsQwen2ByteLevelBpe) {
  const json tok = read_json(tiny() / "tokenizer.json");
  const json& model = tok["model"];
  EXPECT_EQ(model["type"], "BPE");
  EXPECT_EQ(model["byte_fallback"], false);
  const json& vocab = model["vocab"];
  // Ids are 0..n-1, each once.
  std::vector<bool> seen(vocab.size(), false);
  for (const auto& [token, id] : vocab.items()) {
    ASSERT_TRUE(id.is_number_integer());
    ASSERT_LT(id.get<size_t>(), vocab.size()) << token;
    EXPECT_FALSE(seen[id.get<size_t>()]) << token;
    seen[id.get<size_t>()] = true;
  }
  for (const std::string& s : gpt2_byte_symbols()) EXPECT_TRUE(vocab.contains(s)) << s;
  EXPECT_EQ(vocab["!"], 0);   // printable bytes first, as in GPT-2's and Qwen2's vocabularies
  EXPECT_EQ(vocab["\xC4\xA0"], 220);  // 'Ġ', the space byte
  const json& merges = model["merges"];
  EXPECT_GE(merges.size(), 1000u);
  EXPECT_LE(merges.size(), 5000u);
  for (const auto& m : merges) {
    const std::string s = m.get<std::string>();
    const size_t sp = s.find(' ');
    ASSERT_NE(sp, std::string::npos) << s;
    const std::string a = s.substr(0, sp), b = s.substr(sp + 1);
    EXPECT_TRUE(vocab.contains(a)) << s;
    EXPECT_TRUE(vocab.contains(b)) << s;
    EXPECT_TRUE(vocab.contains(a + b)) << s;
  }
  const json& added = tok["added_tokens"];
  ASSERT_EQ(added.size(), 3u);
  const char* specials[] = {"<|endoftext|>", "<|im_start|>", "<|im_end|>"};
  for (size_t k = 0; k < 3; ++k) {
    EXPECT_EQ(added[k]["content"], specials[k]);
    EXPECT_EQ(added[k]["id"], vocab.size() + k);
    EXPECT_EQ(added[k]["special"], true);
  }
  const json& pre = tok["pre_tokenizer"];
  EXPECT_EQ(pre["type"], "Sequence");
  ASSERT_EQ(pre["pretokenizers"].size(), 2u);
  const json& split = pre["pretokenizers"][0];
  EXPECT_EQ(split["type"], "Split");
  EXPECT_EQ(split["pattern"]["Regex"],
            R"((?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+)");
  EXPECT_EQ(split["behavior"], "Isolated");
  const json& bl = pre["pretokenizers"][1];
  EXPECT_EQ(bl["type"], "ByteLevel");
  EXPECT_EQ(bl["add_prefix_space"], false);
  EXPECT_EQ(bl["use_regex"], false);
  EXPECT_EQ(tok["decoder"]["type"], "ByteLevel");
  const json cfg = read_json(tiny() / "tokenizer_config.json");
  EXPECT_EQ(cfg["tokenizer_class"], "Qwen2Tokenizer");
  EXPECT_EQ(cfg["eos_token"], "<|endoftext|>");
  EXPECT_EQ(cfg["added_tokens_decoder"][std::to_string(vocab.size())]["content"], "<|endoftext|>");
}

TEST(SynthTest, TinyLlamaIsUntiedWithoutBiasesAndLlama3Rope) {
  const fs::path dir = generate("tiny-llama", "--preset tiny-llama");
  const json cfg = read_json(dir / "config.json");
  EXPECT_EQ(cfg["architectures"], json::array({"LlamaForCausalLM"}));
  EXPECT_EQ(cfg["model_type"], "llama");
  EXPECT_EQ(cfg["intermediate_size"], 344);
  EXPECT_EQ(cfg["tie_word_embeddings"], false);
  EXPECT_EQ(cfg["rope_scaling"]["rope_type"], "llama3");
  EXPECT_DOUBLE_EQ(cfg["rope_scaling"]["factor"].get<double>(), 8.0);
  EXPECT_DOUBLE_EQ(cfg["rope_scaling"]["low_freq_factor"].get<double>(), 1.0);
  EXPECT_DOUBLE_EQ(cfg["rope_scaling"]["high_freq_factor"].get<double>(), 4.0);
  EXPECT_EQ(cfg["rope_scaling"]["original_max_position_embeddings"], 8192);
  auto ck = fp4c::safetensors::Checkpoint::open(dir.string());
  ASSERT_TRUE(ck.ok()) << ck.error().message;
  std::map<std::string, std::vector<int64_t>> got;
  for (const auto& ref : ck->tensors()) got[ref.entry->name] = ref.entry->shape;
  EXPECT_EQ(got, expected_tensors(cfg));
  EXPECT_TRUE(got.count("lm_head.weight"));
  // Presets draw independent values, even for tensors of the same name and shape.
  auto qwen = fp4c::safetensors::Checkpoint::open(tiny().string());
  ASSERT_TRUE(qwen.ok()) << qwen.error().message;
  EXPECT_NE(raw_bytes(*ck, "model.layers.0.self_attn.q_proj.weight"),
            raw_bytes(*qwen, "model.layers.0.self_attn.q_proj.weight"));
  const json tok = read_json(dir / "tokenizer.json");
  EXPECT_EQ(tok["added_tokens"][0]["content"], "<|begin_of_text|>");
  EXPECT_EQ(cfg["bos_token_id"], tok["added_tokens"][0]["id"]);
  EXPECT_EQ(tok["added_tokens"][1]["content"], "<|end_of_text|>");
  EXPECT_EQ(cfg["eos_token_id"], tok["added_tokens"][1]["id"]);
}

// tiny-moe: a Qwen3-MoE checkpoint fp4c classifies (router, 8 experts per layer as transformers saves them).
TEST(SynthTest, TinyMoeIsAQwen3MoeCheckpoint) {
  const fs::path dir = generate("tiny-moe", "--preset tiny-moe");
  const json cfg = read_json(dir / "config.json");
  EXPECT_EQ(cfg["architectures"], json::array({"Qwen3MoeForCausalLM"}));
  EXPECT_EQ(cfg["num_experts"], 8);
  EXPECT_EQ(cfg["num_experts_per_tok"], 2);
  EXPECT_EQ(cfg["moe_intermediate_size"], 64);
  EXPECT_EQ(cfg["norm_topk_prob"], true);
  auto ck = fp4c::safetensors::Checkpoint::open(dir.string());
  ASSERT_TRUE(ck.ok()) << ck.error().message;
  std::map<std::string, std::vector<int64_t>> got;
  for (const auto& ref : ck->tensors()) got[ref.entry->name] = ref.entry->shape;
  EXPECT_EQ(got.at("model.layers.1.mlp.gate.weight"), (std::vector<int64_t>{8, 128}));
  EXPECT_EQ(got.at("model.layers.1.mlp.experts.7.down_proj.weight"), (std::vector<int64_t>{128, 64}));
  EXPECT_FALSE(got.count("model.layers.0.mlp.gate_proj.weight"));
  const std::string cmd = std::string(FP4C_BINARY_DIR) + "/fp4c quantize --quiet --scheme w4a16 --model '" +
                          dir.string() + "' --out '" + (dir.parent_path() / "tiny-moe-w4a16").string() + "' 2>&1";
  EXPECT_EQ(std::system(cmd.c_str()), 0) << cmd;
}

TEST(SynthTest, ShardsLikeHuggingFace) {
  const fs::path dir = generate("tiny-sharded", "--preset tiny --max-shard-size 300KB");
  EXPECT_FALSE(fs::exists(dir / "model.safetensors"));
  const json index = read_json(dir / "model.safetensors.index.json");
  std::set<std::string> shard_files;
  for (const auto& [tensor, file] : index["weight_map"].items()) shard_files.insert(file.get<std::string>());
  ASSERT_GT(shard_files.size(), 2u);
  const size_t n = shard_files.size();
  size_t k = 1;
  for (const std::string& f : shard_files) {
    char expect[64];
    std::snprintf(expect, sizeof expect, "model-%05zu-of-%05zu.safetensors", k++, n);
    EXPECT_EQ(f, expect);
  }
  auto ck = fp4c::safetensors::Checkpoint::open(dir.string());
  ASSERT_TRUE(ck.ok()) << ck.error().message;
  EXPECT_TRUE(ck->sharded());
  uint64_t total = 0;
  for (const auto& ref : ck->tensors()) total += ref.entry->nbytes();
  EXPECT_EQ(index["metadata"]["total_size"].get<uint64_t>(), total);
  // A shard holds at most 300 KB of tensors, unless it is one tensor larger than that.
  for (const auto& f : ck->files()) {
    uint64_t bytes = 0;
    for (const auto& t : f.tensors()) bytes += t.nbytes();
    EXPECT_TRUE(bytes <= 300000 || f.tensors().size() == 1) << f.path();
  }
  // Same tensors, same bytes as the single-file checkpoint.
  auto single = fp4c::safetensors::Checkpoint::open(tiny().string());
  ASSERT_TRUE(single.ok()) << single.error().message;
  ASSERT_EQ(ck->tensors().size(), single->tensors().size());
  for (const auto& ref : single->tensors())
    EXPECT_EQ(raw_bytes(*ck, ref.entry->name), raw_bytes(*single, ref.entry->name)) << ref.entry->name;
}

TEST(SynthTest, LayersOverrideKeepsEachTensorsValues) {
  const fs::path dir = generate("tiny-1layer", "--preset tiny --layers 1");
  const json cfg = read_json(dir / "config.json");
  EXPECT_EQ(cfg["num_hidden_layers"], 1);
  auto one = fp4c::safetensors::Checkpoint::open(dir.string());
  auto two = fp4c::safetensors::Checkpoint::open(tiny().string());
  ASSERT_TRUE(one.ok() && two.ok());
  EXPECT_EQ(one->find("model.layers.1.mlp.up_proj.weight"), nullptr);
  for (const auto& ref : one->tensors())
    EXPECT_EQ(raw_bytes(*one, ref.entry->name), raw_bytes(*two, ref.entry->name)) << ref.entry->name;
}

TEST(SynthTest, RefusesToOverwriteWithoutForce) {
  const fs::path parent = scratch() / "overwrite";
  const fs::path out = parent / "model";
  fs::create_directories(out);
  std::ofstream(out / "marker") << "keep me";
  RunResult r = run_synth("--preset tiny --out '" + out.string() + "'");
  EXPECT_NE(r.status, 0);
  EXPECT_NE(r.output.find("already exists"), std::string::npos) << r.output;
  EXPECT_TRUE(fs::exists(out / "marker"));
  EXPECT_FALSE(fs::exists(out / "config.json"));
  r = run_synth("--preset tiny --force --out '" + out.string() + "'");
  EXPECT_EQ(r.status, 0) << r.output;
  EXPECT_FALSE(fs::exists(out / "marker"));
  EXPECT_EQ(dir_hashes(out), dir_hashes(tiny()));
  EXPECT_TRUE(leftovers(parent).empty());
}

TEST(SynthTest, BadArgumentsFailCleanly) {
  const fs::path parent = scratch() / "bad";
  fs::create_directories(parent);
  const std::string out = (parent / "model").string();
  RunResult r = run_synth("--preset no-such-model --out '" + out + "'");
  EXPECT_NE(r.status, 0);
  r = run_synth("--preset tiny --max-shard-size 12XB --out '" + out + "'");
  EXPECT_NE(r.status, 0);
  EXPECT_NE(r.output.find("12XB"), std::string::npos) << r.output;
  r = run_synth("--preset tiny --layers 0 --out '" + out + "'");
  EXPECT_NE(r.status, 0);
  r = run_synth("--preset tiny");
  EXPECT_NE(r.status, 0);
  EXPECT_FALSE(fs::exists(out));
  EXPECT_TRUE(leftovers(parent).empty());
}

}  // namespace
