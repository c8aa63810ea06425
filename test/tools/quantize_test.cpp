// End to end: `fp4c quantize` on small checkpoints written by the test, the artifact it makes, the
// manifest, determinism across thread counts, and every bad input the issue names.
#include <gtest/gtest.h>
#include <nlohmann/json.hpp>

#include <cstring>
#include <set>

#include "backends/manifest.h"
#include "formats/nvfp4.h"
#include "formats/safetensors.h"
#include "test/support/tiny_checkpoint.h"

namespace fp4c::testing {
namespace {

std::span<const uint16_t> as_u16(std::span<const std::byte> b) {
  return {reinterpret_cast<const uint16_t*>(b.data()), b.size() / 2};
}

class QuantizeTest : public ::testing::Test {
 protected:
  TempDir tmp;
  fs::path model = tmp.path / "model";
  fs::path out = tmp.path / "out";
  uint64_t seed = std::random_device{}();

  void make(const TinyShape& s = {}, int shards = 1) {
    SCOPED_TRACE("seed " + std::to_string(seed));
    write_checkpoint(model, s, tiny_tensors(s, seed), shards);
  }
  // No output directory and no staging directory left behind.
  void expect_nothing_written() {
    EXPECT_FALSE(fs::exists(out));
    for (const auto& e : fs::directory_iterator(tmp.path))
      EXPECT_EQ(e.path().filename().string().find(".out.fp4c-tmp"), std::string::npos) << e.path();
  }
  RunResult quantize(const std::string& extra = "") {
    return fp4c("quantize --model " + model.string() + " --out " + out.string() + " " + extra);
  }
};

TEST_F(QuantizeTest, W4A16ArtifactMatchesTheReferenceEncoder) {
  TinyShape s;
  s.intermediate = 172;   // down_proj cannot be NVFP4
  make(s);
  auto r = quantize("--threads 2");
  ASSERT_EQ(r.exit_code, 0) << r.out;

  auto src = safetensors::File::open((model / "model.safetensors").string());
  auto dst = safetensors::File::open((out / "model.safetensors").string());
  ASSERT_TRUE(src.ok() && dst.ok());

  for (int layer = 0; layer < s.layers; ++layer) {
    const std::string p = "model.layers." + std::to_string(layer) + ".";
    // Fused groups share one global scale, from the max amax of the group.
    for (std::vector<std::string> group : {std::vector<std::string>{"self_attn.q_proj", "self_attn.k_proj", "self_attn.v_proj"},
                                           std::vector<std::string>{"mlp.gate_proj", "mlp.up_proj"}}) {
      float amax = 0;
      for (const auto& m : group) amax = std::max(amax, nvfp4::amax_bf16(as_u16(src->bytes(*src->find(p + m + ".weight")))));
      const float G = nvfp4::global_scale(amax);
      for (const auto& m : group) {
        const auto* w = src->find(p + m + ".weight");
        const auto* packed = dst->find(p + m + ".weight_packed");
        const auto* scales = dst->find(p + m + ".weight_scale");
        const auto* gs = dst->find(p + m + ".weight_global_scale");
        ASSERT_TRUE(packed && scales && gs) << m;
        EXPECT_EQ(packed->dtype, DType::U8);
        EXPECT_EQ(scales->dtype, DType::F8_E4M3);
        EXPECT_EQ(gs->dtype, DType::F32);
        EXPECT_EQ(packed->shape, (std::vector<int64_t>{w->shape[0], w->shape[1] / 2}));
        EXPECT_EQ(scales->shape, (std::vector<int64_t>{w->shape[0], w->shape[1] / 16}));
        EXPECT_EQ(gs->shape, (std::vector<int64_t>{1}));
        float stored;
        std::memcpy(&stored, dst->bytes(*gs).data(), 4);
        EXPECT_EQ(stored, G) << m;
        std::vector<uint8_t> ref_packed(packed->nbytes()), ref_scales(scales->nbytes());
        nvfp4::quantize_bf16_ref(as_u16(src->bytes(*w)).data(), w->shape[0], w->shape[1], G, ref_packed.data(),
                                 ref_scales.data());
        EXPECT_EQ(0, std::memcmp(ref_packed.data(), dst->bytes(*packed).data(), ref_packed.size())) << m;
        EXPECT_EQ(0, std::memcmp(ref_scales.data(), dst->bytes(*scales).data(), ref_scales.size())) << m;
        EXPECT_EQ(dst->find(p + m + ".weight"), nullptr);
        EXPECT_EQ(dst->find(p + m + ".input_global_scale"), nullptr);  // W4A16
      }
    }
    // Kept tensors are copied byte for byte.
    for (const std::string& name : {p + "mlp.down_proj.weight", p + "input_layernorm.weight"}) {
      const auto* a = src->find(name);
      const auto* b = dst->find(name);
      ASSERT_TRUE(a && b) << name;
      EXPECT_EQ(b->dtype, DType::BF16);
      ASSERT_EQ(a->nbytes(), b->nbytes());
      EXPECT_EQ(0, std::memcmp(src->bytes(*a).data(), dst->bytes(*b).data(), a->nbytes())) << name;
    }
  }
  ASSERT_NE(dst->find("lm_head.weight"), nullptr);
  ASSERT_NE(dst->find("model.embed_tokens.weight"), nullptr);

  // config.json: the source keys plus quantization_config as NVFP4.md §4 gives it.
  auto config = nlohmann::json::parse(read_file(out / "config.json"));
  EXPECT_EQ(config["hidden_size"], s.hidden);
  const auto& q = config["quantization_config"];
  EXPECT_EQ(q["quant_method"], "compressed-tensors");
  EXPECT_EQ(q["format"], "nvfp4-pack-quantized");
  EXPECT_EQ(q["quantization_status"], "compressed");
  const auto& g = q["config_groups"]["group_0"];
  EXPECT_EQ(g["format"], "nvfp4-pack-quantized");
  EXPECT_EQ(g["targets"], nlohmann::json({"Linear"}));
  EXPECT_EQ(g["weights"]["num_bits"], 4);
  EXPECT_EQ(g["weights"]["type"], "float");
  EXPECT_EQ(g["weights"]["strategy"], "tensor_group");
  EXPECT_EQ(g["weights"]["group_size"], 16);
  EXPECT_EQ(g["weights"]["dynamic"], false);
  EXPECT_EQ(g["weights"]["scale_dtype"], "torch.float8_e4m3fn");
  EXPECT_TRUE(g["input_activations"].is_null());
  std::vector<std::string> ignore = q["ignore"];
  EXPECT_EQ(ignore, (std::vector<std::string>{"lm_head", "model.layers.0.mlp.down_proj", "model.layers.1.mlp.down_proj"}));
  // Keys of quantization_config come sorted.
  std::string text = read_file(out / "config.json");
  EXPECT_LT(text.find("\"config_groups\""), text.find("\"format\": \"nvfp4-pack-quantized\",\n    \"global"));
  EXPECT_TRUE(fs::exists(out / "generation_config.json"));

  // The manifest records decisions, errors, hashes and costs.
  auto m = backends::read_manifest((out / backends::kManifestFile).string());
  ASSERT_TRUE(m.ok()) << m.error().message;
  EXPECT_EQ(m->architecture(), "LlamaForCausalLM");
  EXPECT_EQ(m->options().scheme(), "w4a16");
  EXPECT_EQ(m->options().threads(), 2);
  int quantized = 0;
  for (const auto& t : m->tensors()) {
    if (t.format() == "nvfp4") {
      ++quantized;
      EXPECT_GT(t.weight_error().sqnr_db(), 10);
      EXPECT_GT(t.weight_global_scale(), 0);
    } else if (t.role() == "down") {
      EXPECT_EQ(t.skip().kind(), "in_features_not_multiple_of_16");
      EXPECT_NE(t.skip().detail().find("172"), std::string::npos);
    } else if (t.role() == "lm_head") {
      EXPECT_EQ(t.skip().kind(), "lm_head");
    }
  }
  EXPECT_EQ(quantized, 6 * s.layers);  // q, k, v, o, gate, up
  EXPECT_GE(m->inputs_size(), 2);
  EXPECT_EQ(m->output_tensors_size(), 3 * 6 * s.layers + (int(m->tensors_size()) - 6 * s.layers));
  EXPECT_GT(m->memory().artifact_bytes(), 0u);
  EXPECT_LT(m->memory().artifact_bytes(), m->memory().source_bytes());
  EXPECT_GE(m->build_cost().stages_size(), 3);

  auto v = fp4c("inspect " + out.string() + " --verify");
  EXPECT_EQ(v.exit_code, 0) << v.out;
  auto j = fp4c("inspect " + out.string() + " --json --top 3");
  ASSERT_EQ(j.exit_code, 0) << j.out;
  auto rows = nlohmann::json::parse(j.out);
  ASSERT_EQ(rows.size(), 3u);
  EXPECT_LE(rows[0]["sqnr_db"].get<double>(), rows[1]["sqnr_db"].get<double>());
}

TEST_F(QuantizeTest, QwenBiasesAndTiedEmbeddingsAreKept) {
  TinyShape s;
  s.architecture = "Qwen2ForCausalLM";
  s.tied = true;
  make(s);
  auto r = quantize();
  ASSERT_EQ(r.exit_code, 0) << r.out;
  auto dst = safetensors::File::open((out / "model.safetensors").string());
  ASSERT_TRUE(dst.ok());
  EXPECT_NE(dst->find("model.layers.0.self_attn.q_proj.bias"), nullptr);
  EXPECT_NE(dst->find("model.layers.0.self_attn.q_proj.weight_packed"), nullptr);
  EXPECT_EQ(dst->find("lm_head.weight"), nullptr);
  auto config = nlohmann::json::parse(read_file(out / "config.json"));
  EXPECT_EQ(config["quantization_config"]["ignore"], nlohmann::json({"lm_head"}));
}

TEST_F(QuantizeTest, SameBytesWithOneOrTwoThreadsAndAcrossRuns) {
  make({}, 2);
  auto out1 = tmp.path / "t1", out2 = tmp.path / "t2", out3 = tmp.path / "t3";
  for (auto [dir, threads] : {std::pair{out1, 1}, std::pair{out2, 2}, std::pair{out3, 2}}) {
    auto r = fp4c("quantize --model " + model.string() + " --out " + dir.string() + " --threads " + std::to_string(threads));
    ASSERT_EQ(r.exit_code, 0) << r.out;
  }
  std::set<std::string> names;
  for (const auto& e : fs::directory_iterator(out1)) names.insert(e.path().filename().string());
  EXPECT_TRUE(names.count("model-00001-of-00002.safetensors"));
  EXPECT_TRUE(names.count("model.safetensors.index.json"));
  for (const auto& name : names) {
    if (name == backends::kManifestFile) continue;   // holds timings and the command line
    EXPECT_EQ(read_file(out1 / name), read_file(out2 / name)) << name;
    EXPECT_EQ(read_file(out2 / name), read_file(out3 / name)) << name;
  }
  auto m1 = backends::read_manifest((out1 / backends::kManifestFile).string());
  auto m2 = backends::read_manifest((out2 / backends::kManifestFile).string());
  ASSERT_TRUE(m1.ok() && m2.ok());
  ASSERT_EQ(m1->output_tensors_size(), m2->output_tensors_size());
  for (int i = 0; i < m1->output_tensors_size(); ++i)
    EXPECT_EQ(m1->output_tensors(i).hash().hex(), m2->output_tensors(i).hash().hex());
  for (int i = 0; i < m1->tensors_size(); ++i)
    EXPECT_EQ(m1->tensors(i).weight_error().sqnr_db(), m2->tensors(i).weight_error().sqnr_db());
}

TEST_F(QuantizeTest, ShardsLikeTheSourceOrBySize) {
  make({}, 3);
  auto r = quantize();
  ASSERT_EQ(r.exit_code, 0) << r.out;
  auto index = nlohmann::json::parse(read_file(out / "model.safetensors.index.json"));
  std::set<std::string> files;
  for (auto& [k, v] : index["weight_map"].items()) files.insert(v.get<std::string>());
  EXPECT_EQ(files, (std::set<std::string>{"model-00001-of-00003.safetensors", "model-00002-of-00003.safetensors",
                                           "model-00003-of-00003.safetensors"}));
  EXPECT_TRUE(index["weight_map"].contains("model.layers.0.self_attn.q_proj.weight_packed"));

  auto by_size = tmp.path / "by-size";
  r = fp4c("quantize --model " + model.string() + " --out " + by_size.string() + " --max-shard-size 20KB");
  ASSERT_EQ(r.exit_code, 0) << r.out;
  index = nlohmann::json::parse(read_file(by_size / "model.safetensors.index.json"));
  files.clear();
  for (auto& [k, v] : index["weight_map"].items()) files.insert(v.get<std::string>());
  EXPECT_GT(files.size(), 2u);
  for (const auto& f : files) {
    EXPECT_NE(f.find("-of-"), std::string::npos);
    auto sf = safetensors::File::open((by_size / f).string());
    ASSERT_TRUE(sf.ok()) << sf.error().message;
  }
  EXPECT_EQ(fp4c("inspect " + by_size.string() + " --verify").exit_code, 0);
}

TEST_F(QuantizeTest, IgnoreKeepsMatchingLinearsAndTheirFusedGroup) {
  make();
  auto r = quantize("--ignore 'layers\\.1\\.self_attn\\.k_proj' --ignore 'o_proj$'");
  ASSERT_EQ(r.exit_code, 0) << r.out;
  auto config = nlohmann::json::parse(read_file(out / "config.json"));
  std::vector<std::string> ignore = config["quantization_config"]["ignore"];
  std::set<std::string> s(ignore.begin(), ignore.end());
  for (const char* m : {"model.layers.1.self_attn.k_proj", "model.layers.1.self_attn.q_proj",
                        "model.layers.1.self_attn.v_proj", "model.layers.0.self_attn.o_proj",
                        "model.layers.1.self_attn.o_proj"})
    EXPECT_TRUE(s.count(m)) << m;
  EXPECT_FALSE(s.count("model.layers.0.self_attn.q_proj"));
  auto m = backends::read_manifest((out / backends::kManifestFile).string());
  ASSERT_TRUE(m.ok());
  for (const auto& t : m->tensors()) {
    if (t.module() == "model.layers.1.self_attn.q_proj") {
      EXPECT_EQ(t.skip().kind(), "fused_with_skipped");
    }
    if (t.module() == "model.layers.1.self_attn.k_proj") {
      EXPECT_EQ(t.skip().kind(), "user_ignore");
    }
  }
  r = fp4c("quantize --model " + model.string() + " --out " + (tmp.path / "bad").string() + " --ignore '(('");
  EXPECT_NE(r.exit_code, 0);
  EXPECT_NE(r.out.find("invalid regular expression"), std::string::npos) << r.out;
}

TEST_F(QuantizeTest, DryRunWritesNothing) {
  make();
  auto r = quantize("--dry-run");
  ASSERT_EQ(r.exit_code, 0) << r.out;
  EXPECT_NE(r.out.find("projected artifact"), std::string::npos) << r.out;
  EXPECT_NE(r.out.find("model.layers.0.self_attn.q_proj.weight"), std::string::npos);
  expect_nothing_written();
}

TEST_F(QuantizeTest, ExistingOutputIsRefusedUnlessForced) {
  make();
  fs::create_directories(out);
  write_text(out / "keep.txt", "x");
  auto r = quantize();
  EXPECT_NE(r.exit_code, 0);
  EXPECT_NE(r.out.find("already exists"), std::string::npos) << r.out;
  EXPECT_TRUE(fs::exists(out / "keep.txt"));
  r = quantize("--force");
  ASSERT_EQ(r.exit_code, 0) << r.out;
  EXPECT_FALSE(fs::exists(out / "keep.txt"));
  EXPECT_TRUE(fs::exists(out / "model.safetensors"));
}

TEST_F(QuantizeTest, VerifyFindsATamperedTensor) {
  make();
  ASSERT_EQ(quantize().exit_code, 0);
  auto path = out / "model.safetensors";
  fs::permissions(path, fs::perms::owner_write, fs::perm_options::add);
  std::string bytes = read_file(path);
  bytes[bytes.size() - 100] ^= 0x5a;
  write_text(path, bytes);
  auto r = fp4c("inspect " + out.string() + " --verify");
  EXPECT_NE(r.exit_code, 0);
  EXPECT_NE(r.out.find("model.safetensors"), std::string::npos) << r.out;
  EXPECT_NE(r.out.find("differs from the manifest"), std::string::npos) << r.out;
}

// ---- Bad input: a clear message, a non-zero exit, no output directory left behind. ----

TEST_F(QuantizeTest, NaNInAWeightNamesTensorAndCount) {
  TinyShape s;
  auto tensors = tiny_tensors(s, seed);
  for (auto& t : tensors)
    if (t.name == "model.layers.1.mlp.up_proj.weight") {
      t.bf16[5] = 0x7fc0;   // NaN
      t.bf16[77] = 0xff80;  // -Inf
    }
  write_checkpoint(model, s, tensors);
  auto r = quantize();
  EXPECT_NE(r.exit_code, 0);
  EXPECT_NE(r.out.find("model.layers.1.mlp.up_proj.weight"), std::string::npos) << r.out;
  EXPECT_NE(r.out.find("2 NaN or Inf values"), std::string::npos) << r.out;
  EXPECT_NE(r.out.find("model.safetensors"), std::string::npos) << r.out;
  expect_nothing_written();
}

TEST_F(QuantizeTest, NaNInAKeptTensorIsAnErrorToo) {
  TinyShape s;
  auto tensors = tiny_tensors(s, seed);
  for (auto& t : tensors)
    if (t.name == "model.norm.weight") t.bf16[3] = 0x7fc0;
  write_checkpoint(model, s, tensors);
  auto r = quantize();
  EXPECT_NE(r.exit_code, 0);
  EXPECT_NE(r.out.find("model.norm.weight"), std::string::npos) << r.out;
  expect_nothing_written();
}

TEST_F(QuantizeTest, TruncatedShard) {
  make({}, 2);
  auto shard = model / "model-00002-of-00002.safetensors";
  fs::resize_file(shard, fs::file_size(shard) - 1000);
  auto r = quantize();
  EXPECT_NE(r.exit_code, 0);
  EXPECT_NE(r.out.find("model-00002-of-00002.safetensors"), std::string::npos) << r.out;
  expect_nothing_written();
}

TEST_F(QuantizeTest, HeaderLengthPastTheEnd) {
  make();
  auto path = model / "model.safetensors";
  std::string bytes = read_file(path);
  uint64_t n = bytes.size() + 10;
  std::memcpy(bytes.data(), &n, 8);
  write_text(path, bytes);
  auto r = quantize();
  EXPECT_NE(r.exit_code, 0);
  EXPECT_NE(r.out.find("model.safetensors"), std::string::npos) << r.out;
  expect_nothing_written();
}

TEST_F(QuantizeTest, MalformedHeaderJson) {
  make();
  auto path = model / "model.safetensors";
  std::string bytes = read_file(path);
  bytes[9] = ',';  // '{"' becomes '{,'
  write_text(path, bytes);
  auto r = quantize();
  EXPECT_NE(r.exit_code, 0);
  EXPECT_NE(r.out.find("model.safetensors"), std::string::npos) << r.out;
  expect_nothing_written();
}

// Rewrites the header of model.safetensors through `edit` (on the JSON) keeping the data section.
void edit_header(const fs::path& path, const std::function<void(nlohmann::ordered_json&)>& edit) {
  std::string bytes = read_file(path);
  uint64_t n;
  std::memcpy(&n, bytes.data(), 8);
  auto header = nlohmann::ordered_json::parse(bytes.substr(8, n));
  edit(header);
  std::string h = header.dump();
  while (h.size() % 8) h += ' ';
  uint64_t m = h.size();
  std::string out(8, '\0');
  std::memcpy(out.data(), &m, 8);
  write_text(path, out + h + bytes.substr(8 + n));
}

TEST_F(QuantizeTest, OffsetsOutsideOverlappingOrDisagreeing) {
  const std::string t = "model.layers.0.self_attn.q_proj.weight";
  struct Case {
    std::string what;
    std::function<void(nlohmann::ordered_json&)> edit;
  };
  std::vector<Case> cases{
      {"outside", [&](auto& h) { h[t]["data_offsets"][1] = 1u << 30; }},
      {"overlap", [&](auto& h) { h[t]["data_offsets"][0] = h[t]["data_offsets"][0].template get<uint64_t>() - 16; }},
      {"shape", [&](auto& h) { h[t]["shape"][0] = 65; }},
      {"dtype", [&](auto& h) { h[t]["dtype"] = "F64"; }},
  };
  for (const auto& c : cases) {
    SCOPED_TRACE(c.what);
    fs::remove_all(model);
    make();
    edit_header(model / "model.safetensors", c.edit);
    auto r = quantize();
    EXPECT_NE(r.exit_code, 0);
    EXPECT_NE(r.out.find("model.safetensors"), std::string::npos) << r.out;
    EXPECT_NE(r.out.find(t), std::string::npos) << r.out;
    expect_nothing_written();
  }
}

TEST_F(QuantizeTest, IndexNamingAMissingShardOrTensor) {
  make({}, 2);
  std::string index = read_file(model / "model.safetensors.index.json");
  fs::remove(model / "model-00002-of-00002.safetensors");
  auto r = quantize();
  EXPECT_NE(r.exit_code, 0);
  EXPECT_NE(r.out.find("model-00002-of-00002.safetensors"), std::string::npos) << r.out;
  expect_nothing_written();

  fs::remove_all(model);
  make({}, 2);
  index = read_file(model / "model.safetensors.index.json");
  auto j = nlohmann::json::parse(index);
  j["weight_map"]["model.layers.9.mlp.up_proj.weight"] = "model-00001-of-00002.safetensors";
  write_text(model / "model.safetensors.index.json", j.dump());
  r = quantize();
  EXPECT_NE(r.exit_code, 0);
  EXPECT_NE(r.out.find("model.layers.9.mlp.up_proj.weight"), std::string::npos) << r.out;
  expect_nothing_written();
}

TEST_F(QuantizeTest, ConfigMissingMalformedOrUnsupported) {
  make();
  fs::remove(model / "config.json");
  auto r = quantize();
  EXPECT_NE(r.exit_code, 0);
  EXPECT_NE(r.out.find("config.json"), std::string::npos) << r.out;
  expect_nothing_written();

  write_text(model / "config.json", "{\"architectures\": [\"LlamaForCausalLM\"], \"hidden_size\": 64,");
  r = quantize();
  EXPECT_NE(r.exit_code, 0);
  EXPECT_NE(r.out.find("config.json"), std::string::npos) << r.out;
  expect_nothing_written();

  TinyShape s;
  std::string cfg = tiny_config(s);
  cfg.replace(cfg.find("LlamaForCausalLM"), 16, "GPTNeoXForCausalLM");
  write_text(model / "config.json", cfg);
  r = quantize();
  EXPECT_NE(r.exit_code, 0);
  EXPECT_NE(r.out.find("unsupported architecture GPTNeoXForCausalLM (supported: Gemma3ForCausalLM, LlamaForCausalLM, MistralForCausalLM, MixtralForCausalLM, Phi3ForCausalLM, Qwen2ForCausalLM, Qwen3ForCausalLM, Qwen3MoeForCausalLM)"),
            std::string::npos) << r.out;
  expect_nothing_written();
}

}  // namespace
}  // namespace fp4c::testing
