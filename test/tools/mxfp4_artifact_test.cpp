// `fp4c quantize --scheme mxfp4a16 / mxfp4`: the compressed-tensors mxfp4-pack-quantized layout on a
// synthetic model (names, dtypes, shapes, no global scales, config.json as compressed-tensors' MXFP4
// presets), the packed bytes and E8M0 scales equal to the reference quantizer's on the source weights,
// read back and dequantized, `fp4c eval` and `inspect --verify` on the artifacts, and the errors: a
// Linear whose in_features is not a multiple of 32 stays BF16 with its reason, NVFP4-only options are
// refused, and a mis-shaped or NaN weight_scale names the file and tensor.
#include <gtest/gtest.h>
#include <nlohmann/json.hpp>

#include <cmath>
#include <cstring>

#include "backends/artifact_reader.h"
#include "backends/manifest.h"
#include "formats/bf16.h"
#include "formats/mxfp4.h"
#include "formats/safetensors.h"
#include "frontend/checkpoint.h"
#include "test/support/tiny_checkpoint.h"

namespace fp4c::testing {
namespace {

nlohmann::json read_json(const fs::path& p) { return nlohmann::json::parse(read_file(p)); }

std::span<const std::byte> bytes(const safetensors::Checkpoint::Ref& r) { return r.file->bytes(*r.entry); }

struct Quantized : SynthModel {
  fs::path out;
  bool w4a4;
  explicit Quantized(bool w4a4_) : out(tmp.path / (w4a4_ ? "mx-a4" : "mx-a16")), w4a4(w4a4_) {
    auto r = fp4c("quantize --quiet --model " + model.string() + " --scheme " + (w4a4 ? "mxfp4" : "mxfp4a16") +
                  " --out " + out.string());
    EXPECT_EQ(r.exit_code, 0) << r.out;
  }
};

void check_layout(const Quantized& q) {
  auto src = frontend::open_checkpoint(q.model.string());
  ASSERT_TRUE(src.ok()) << src.error().message;
  auto art = safetensors::Checkpoint::open(q.out.string());
  ASSERT_TRUE(art.ok()) << art.error().message;
  auto reader = backends::open_artifact(q.out.string(), src->model);
  ASSERT_TRUE(reader.ok()) << reader.error().message;
  EXPECT_TRUE(reader->mxfp4());
  EXPECT_EQ(reader->w4a4(), q.w4a4);

  int quantized = 0;
  for (ir::TensorId id = 0; id < src->model.tensors.size(); ++id) {
    const ir::TensorInfo& t = src->model.tensors[id];
    if (!reader->tensor(id).quantized) continue;
    ++quantized;
    const int64_t rows = t.shape[0], cols = t.shape[1];
    const auto* packed = art->find(t.module + ".weight_packed");
    const auto* scales = art->find(t.module + ".weight_scale");
    ASSERT_NE(packed, nullptr) << t.module;
    ASSERT_NE(scales, nullptr) << t.module;
    EXPECT_EQ(packed->entry->dtype, DType::U8);
    EXPECT_EQ(packed->entry->shape, (std::vector<int64_t>{rows, cols / 2}));
    EXPECT_EQ(scales->entry->dtype, DType::U8);
    EXPECT_EQ(scales->entry->shape, (std::vector<int64_t>{rows, cols / 32}));
    EXPECT_EQ(art->find(t.module + ".weight_global_scale"), nullptr) << t.module;
    EXPECT_EQ(art->find(t.module + ".input_global_scale"), nullptr) << t.module;
    EXPECT_EQ(reader->tensor(id).input_mxfp4, q.w4a4);
    EXPECT_FALSE(reader->tensor(id).input_global_scale);

    // The bytes are the reference quantizer's on the source BF16 weight.
    ASSERT_EQ(t.dtype, DType::BF16);
    const auto sb = src->refs[id].file->bytes(*src->refs[id].entry);
    std::vector<uint8_t> p(size_t(rows * cols / 2)), s(size_t(rows * cols / 32));
    mxfp4::quantize_bf16_ref(reinterpret_cast<const uint16_t*>(sb.data()), rows, cols, p.data(), s.data(),
                             mxfp4::kDefaultRule);
    ASSERT_EQ(std::memcmp(bytes(*packed).data(), p.data(), p.size()), 0) << t.module;
    ASSERT_EQ(std::memcmp(bytes(*scales).data(), s.data(), s.size()), 0) << t.module;
    // Read back: fp4 * 2^(scale - 127).
    std::vector<float> expect(size_t(rows * cols));
    mxfp4::dequantize(p.data(), s.data(), rows, cols, expect.data());
    EXPECT_EQ(reader->dequantize(id, src->model), expect) << t.module;
  }
  EXPECT_EQ(quantized, 14);   // every Linear of the tiny preset but lm_head

  // config.json: compressed-tensors' MXFP4 preset, format mxfp4-pack-quantized.
  const auto c = read_json(q.out / "config.json")["quantization_config"];
  EXPECT_EQ(c["format"], "mxfp4-pack-quantized");
  EXPECT_EQ(c["quant_method"], "compressed-tensors");
  const auto& g = c["config_groups"]["group_0"];
  EXPECT_EQ(g["format"], "mxfp4-pack-quantized");
  for (const char* k : {"weights", "input_activations"}) {
    if (!q.w4a4 && std::string(k) == "input_activations") {
      EXPECT_TRUE(g[k].is_null());
      continue;
    }
    const auto& a = g[k];
    EXPECT_EQ(a["num_bits"], 4) << k;
    EXPECT_EQ(a["type"], "float") << k;
    EXPECT_EQ(a["strategy"], "group") << k;
    EXPECT_EQ(a["group_size"], 32) << k;
    EXPECT_EQ(a["scale_dtype"], "torch.uint8") << k;
    EXPECT_EQ(a["symmetric"], true) << k;
    EXPECT_EQ(a["dynamic"], std::string(k) == "input_activations") << k;
  }

  // The manifest: scheme, per-tensor format and weight error, 4.25 bits per quantized weight.
  auto m = backends::read_manifest((q.out / backends::kManifestFile).string());
  ASSERT_TRUE(m.ok()) << m.error().message;
  EXPECT_EQ(m->options().scheme(), q.w4a4 ? "mxfp4" : "mxfp4a16");
  int mx = 0;
  for (const auto& r : m->tensors())
    if (r.format() == "mxfp4") {
      ++mx;
      EXPECT_GT(r.weight_error().relative_mse(), 0.0) << r.name();
      EXPECT_LT(r.weight_error().relative_mse(), 0.1) << r.name();
      EXPECT_EQ(r.weight_global_scale(), 0.0f) << r.name();   // none recorded
    }
  EXPECT_EQ(mx, 14);
  EXPECT_NEAR(m->memory().effective_bits_per_weight(), 4.25, 1e-9);

  auto r = fp4c("inspect --verify " + q.out.string());
  EXPECT_EQ(r.exit_code, 0) << r.out;
  r = fp4c("inspect " + q.out.string());
  EXPECT_EQ(r.exit_code, 0) << r.out;
  EXPECT_NE(r.out.find(" mxfp4 "), std::string::npos) << r.out;
}

TEST(Mxfp4Artifact, W4A16Layout) { check_layout(Quantized(false)); }
TEST(Mxfp4Artifact, W4A4Layout) { check_layout(Quantized(true)); }

// fp4c eval reads both; W4A4 quantizes the activations too, so its figures differ from W4A16's on the
// same weights.
TEST(Mxfp4Artifact, Eval) {
  Quantized a16(false);
  const fs::path a4 = a16.tmp.path / "mx-a4";
  ASSERT_EQ(fp4c("quantize --quiet --model " + a16.model.string() + " --scheme mxfp4 --out " + a4.string()).exit_code,
            0);
  auto eval = [&](const fs::path& artifact) {
    auto r = fp4c("eval --json --model " + a16.model.string() + " --artifact " + artifact.string() + " --data " +
                  a16.eval.string());
    EXPECT_EQ(r.exit_code, 0) << r.out;
    return r.exit_code == 0 ? nlohmann::json::parse(r.out) : nlohmann::json();
  };
  const auto x = eval(a16.out), y = eval(a4);
  ASSERT_FALSE(x.is_null());
  ASSERT_FALSE(y.is_null());
  for (const auto* j : {&x, &y}) {
    EXPECT_TRUE(std::isfinite((*j)["perplexity"].get<double>()));
    EXPECT_GT((*j)["recovery"].get<double>(), 0.5);
    EXPECT_GT((*j)["kl_mean"].get<double>(), 0.0);
  }
  EXPECT_EQ(x["reference_perplexity"], y["reference_perplexity"]);
  EXPECT_NE(x["perplexity"], y["perplexity"]);
  EXPECT_GT(y["kl_mean"].get<double>(), x["kl_mean"].get<double>());   // quantized activations cost more
}

// Same inputs, same bytes, whatever the thread count (smoothquant too: its rewrite feeds the packer).
TEST(Mxfp4Artifact, ByteIdenticalAcrossThreadCounts) {
  SynthModel s;
  for (const std::string& recipe : {std::string(), " --calib " + s.calib.string() + " --recipe smoothquant"}) {
    std::string files[2];
    for (int threads : {1, 2}) {
      const fs::path out = s.tmp.path / ("t" + std::to_string(threads));
      auto r = fp4c("quantize --quiet --force --model " + s.model.string() + " --scheme mxfp4 --threads " +
                    std::to_string(threads) + recipe + " --out " + out.string());
      ASSERT_EQ(r.exit_code, 0) << r.out;
      files[threads - 1] = read_file(out / "model.safetensors") + read_file(out / "config.json");
    }
    EXPECT_FALSE(files[0].empty());
    EXPECT_TRUE(files[0] == files[1]) << "recipe" << recipe;
  }
}

TEST(Mxfp4Artifact, InFeaturesNotMultipleOf32StaysBf16) {
  TempDir tmp;
  TinyShape s;   // intermediate 176: a multiple of 16, not of 32
  ASSERT_NE(s.intermediate % 32, 0);
  write_checkpoint(tmp.path / "m", s, tiny_tensors(s, 7));
  const fs::path out = tmp.path / "a";
  auto r = fp4c("quantize --quiet --model " + (tmp.path / "m").string() + " --scheme mxfp4a16 --out " + out.string());
  ASSERT_EQ(r.exit_code, 0) << r.out;
  auto m = backends::read_manifest((out / backends::kManifestFile).string());
  ASSERT_TRUE(m.ok()) << m.error().message;
  int down = 0, mx = 0;
  for (const auto& t : m->tensors()) {
    if (t.role() == "down") {
      ++down;
      EXPECT_EQ(t.format(), "bf16");
      EXPECT_EQ(t.skip().kind(), "in_features_not_multiple_of_32");
      EXPECT_EQ(t.skip().detail(), "in_features 176 is not a multiple of 32");
    }
    mx += t.format() == "mxfp4";
  }
  EXPECT_EQ(down, s.layers);
  EXPECT_GT(mx, 0);
  const auto ignore = read_json(out / "config.json")["quantization_config"]["ignore"];
  EXPECT_NE(std::find(ignore.begin(), ignore.end(), "model.layers.0.mlp.down_proj"), ignore.end());
  // NVFP4 quantizes the same Linear (176 % 16 == 0).
  r = fp4c("quantize --quiet --model " + (tmp.path / "m").string() + " --scheme w4a16 --out " +
           (tmp.path / "n").string());
  ASSERT_EQ(r.exit_code, 0) << r.out;
  auto n = backends::read_manifest((tmp.path / "n" / backends::kManifestFile).string());
  ASSERT_TRUE(n.ok());
  for (const auto& t : n->tensors()) {
    if (t.role() == "down") {
      EXPECT_EQ(t.format(), "nvfp4");
    }
  }
}

TEST(Mxfp4Artifact, Nvfp4OnlyOptionsAreRefused) {
  SynthModel s;
  const std::string base = "quantize --model " + s.model.string() + " --out " + (s.tmp.path / "x").string();
  auto r = fp4c(base + " --scheme mxfp4 --format modelopt");
  EXPECT_NE(r.exit_code, 0);
  EXPECT_NE(r.out.find("--format modelopt with --scheme mxfp4: fp4c writes ModelOpt's Hugging Face layout for NVFP4 "
                       "only"),
            std::string::npos)
      << r.out;
  r = fp4c(base + " --scheme mxfp4a16 --passes 'blockscale{rule=mse},pack'");
  EXPECT_NE(r.exit_code, 0);
  EXPECT_NE(r.out.find("--scheme mxfp4a16: blockscale{rule=mse} is NVFP4-only"), std::string::npos) << r.out;
  r = fp4c(base + " --scheme mxfp4 --calib " + s.calib.string() + " --recipe best");
  EXPECT_NE(r.exit_code, 0);
  EXPECT_NE(r.out.find("blockscale{rule=weighted} is NVFP4-only"), std::string::npos) << r.out;
  r = fp4c(base + " --scheme mxfp4a16 --calib " + s.calib.string() + " --passes 'stats{second_moments=true},gptq,blockscale,pack'");
  EXPECT_NE(r.exit_code, 0);
  EXPECT_NE(r.out.find("pass 'gptq' is NVFP4-only"), std::string::npos) << r.out;
  EXPECT_FALSE(fs::exists(s.tmp.path / "x"));
  // A recipe that only rewrites and measures works under MXFP4, with --calib.
  r = fp4c(base + " --quiet --scheme mxfp4 --calib " + s.calib.string() + " --recipe smoothquant");
  EXPECT_EQ(r.exit_code, 0) << r.out;
}

// Rewrites model.safetensors of an artifact with one tensor replaced.
void replace_tensor(const fs::path& dir, const std::string& name, DType dtype, std::vector<int64_t> shape,
                    const std::vector<std::byte>& data) {
  const fs::path path = dir / "model.safetensors";
  std::vector<safetensors::TensorSpec> specs;
  std::vector<std::vector<std::byte>> contents;
  {
    auto c = safetensors::Checkpoint::open(dir.string());
    ASSERT_TRUE(c.ok()) << c.error().message;
    for (const auto& r : c->tensors()) {
      if (r.entry->name == name) {
        specs.push_back({name, dtype, shape});
        contents.push_back(data);
      } else {
        specs.push_back({r.entry->name, r.entry->dtype, r.entry->shape});
        const auto b = bytes(r);
        contents.emplace_back(b.begin(), b.end());
      }
    }
  }
  const fs::path tmp = dir / "model.safetensors.tmp";
  auto w = safetensors::Writer::create(tmp.string(), specs);
  ASSERT_TRUE(w.ok()) << w.error().message;
  for (const auto& c : contents) ASSERT_TRUE(w->write(c).ok());
  ASSERT_TRUE(w->finish().ok());
  fs::rename(tmp, path);
}

TEST(Mxfp4Artifact, BadWeightScaleNamesFileAndTensor) {
  Quantized q(false);
  auto src = frontend::open_checkpoint(q.model.string());
  ASSERT_TRUE(src.ok());
  const std::string name = "model.layers.0.self_attn.o_proj.weight_scale";
  std::vector<int64_t> shape;
  std::vector<std::byte> original;
  {
    auto c = safetensors::Checkpoint::open(q.out.string());
    ASSERT_TRUE(c.ok());
    const auto* s = c->find(name);
    ASSERT_NE(s, nullptr);
    shape = s->entry->shape;
    const auto b = bytes(*s);
    original.assign(b.begin(), b.end());
  }
  const std::string file = (q.out / "model.safetensors").string();
  // Truncated: one block scale per row missing.
  std::vector<int64_t> short_shape{shape[0], shape[1] - 1};
  replace_tensor(q.out, name, DType::U8, short_shape,
                 std::vector<std::byte>(size_t(short_shape[0] * short_shape[1]), std::byte{127}));
  auto r = backends::open_artifact(q.out.string(), src->model);
  ASSERT_FALSE(r.ok());
  EXPECT_EQ(r.error().message, file + ": tensor '" + name + "': expected U8 (E8M0) [" + std::to_string(shape[0]) +
                                   ", " + std::to_string(shape[1]) + "], found U8 [" + std::to_string(shape[0]) +
                                   ", " + std::to_string(shape[1] - 1) + "]");
  auto e = fp4c("eval --model " + q.model.string() + " --artifact " + q.out.string() + " --data " + q.eval.string());
  EXPECT_NE(e.exit_code, 0);
  EXPECT_NE(e.out.find(name), std::string::npos) << e.out;
  // Right shape, but an E8M0 NaN byte.
  auto nan = original;
  nan[5] = std::byte{0xFF};
  replace_tensor(q.out, name, DType::U8, shape, nan);
  r = backends::open_artifact(q.out.string(), src->model);
  ASSERT_FALSE(r.ok());
  EXPECT_NE(r.error().message.find(file + ": tensor '" + name + "': block scale 5 (file offset "), std::string::npos)
      << r.error().message;
  EXPECT_NE(r.error().message.find("is 0xFF, E8M0's NaN"), std::string::npos) << r.error().message;
  // FP8 scales where MXFP4's U8 belong.
  replace_tensor(q.out, name, DType::F8_E4M3, shape, original);
  r = backends::open_artifact(q.out.string(), src->model);
  ASSERT_FALSE(r.ok());
  EXPECT_NE(r.error().message.find("found F8_E4M3"), std::string::npos) << r.error().message;
}

}  // namespace
}  // namespace fp4c::testing
