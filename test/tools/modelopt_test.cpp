// `fp4c quantize --format modelopt`: the ModelOpt Hugging Face layout (NVFP4.md §5) on a synthetic
// model, W4A16 and W4A4. Tensor names, dtypes and shapes; weight_scale_2 = 1/G and input_scale = 1/Gx;
// hf_quant_config.json and config.json as vLLM's ModelOpt loader reads them; the packed bytes and block
// scales equal the compressed-tensors artifact's, tensor by tensor; `fp4c eval` gives the same figures
// on both layouts; `fp4c inspect --verify` passes; bad artifacts fail with errors naming file and tensor.
#include <gtest/gtest.h>
#include <nlohmann/json.hpp>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <map>
#include <set>

#include "backends/artifact_reader.h"
#include "backends/manifest.h"
#include "formats/safetensors.h"
#include "frontend/checkpoint.h"
#include "test/support/tiny_checkpoint.h"

namespace fp4c::testing {
namespace {

using Tensors = std::map<std::string, const safetensors::Checkpoint::Ref*>;

float scalar(const safetensors::Checkpoint::Ref& r) {
  float v;
  std::memcpy(&v, r.file->bytes(*r.entry).data(), 4);
  return v;
}

std::span<const std::byte> bytes(const safetensors::Checkpoint::Ref& r) { return r.file->bytes(*r.entry); }

bool same_bytes(const safetensors::Checkpoint::Ref& a, const safetensors::Checkpoint::Ref& b) {
  const auto x = bytes(a), y = bytes(b);
  return x.size() == y.size() && std::memcmp(x.data(), y.data(), x.size()) == 0;
}

nlohmann::json read_json(const fs::path& p) { return nlohmann::json::parse(read_file(p)); }

bool ends_with(const std::string& s, const std::string& suffix) {
  return s.size() >= suffix.size() && s.compare(s.size() - suffix.size(), suffix.size(), suffix) == 0;
}

// One synthetic model quantized into both layouts with the same options.
struct BothLayouts : SynthModel {
  fs::path ct = tmp.path / "ct", mo = tmp.path / "mo";
  bool w4a4;
  // Keeps one fused group (k_proj drags q and v along) and one lone Linear in BF16.
  const std::string ignore = " --ignore 'layers\\.1\\.self_attn\\.k_proj' --ignore 'layers\\.0\\.mlp\\.down_proj$'";
  explicit BothLayouts(bool w4a4_) : w4a4(w4a4_) {
    const std::string common = "quantize --quiet --model " + model.string() + ignore +
                               (w4a4 ? " --calib " + calib.string() : std::string()) + " --out ";
    auto r = fp4c(common + ct.string());
    EXPECT_EQ(r.exit_code, 0) << r.out;
    r = fp4c(common + mo.string() + " --format modelopt");
    EXPECT_EQ(r.exit_code, 0) << r.out;
  }
};

void check_layout(const BothLayouts& b) {
  auto ct = safetensors::Checkpoint::open(b.ct.string());
  auto mo = safetensors::Checkpoint::open(b.mo.string());
  ASSERT_TRUE(ct.ok()) << ct.error().message;
  ASSERT_TRUE(mo.ok()) << mo.error().message;

  // Every compressed-tensors tensor has its ModelOpt counterpart, and there is nothing else.
  size_t quantized = 0, expected_mo_tensors = 0;
  std::map<std::string, float> weight_scale_2, input_scale;   // by module
  for (const auto& r : ct->tensors()) {
    const std::string& name = r.entry->name;
    ++expected_mo_tensors;
    if (ends_with(name, ".weight_packed")) {
      const std::string m = name.substr(0, name.size() - std::string(".weight_packed").size());
      ++quantized;
      const auto* w = mo->find(m + ".weight");
      ASSERT_NE(w, nullptr) << m;
      EXPECT_EQ(w->entry->dtype, DType::U8) << m;
      EXPECT_EQ(w->entry->shape, r.entry->shape) << m;
      EXPECT_TRUE(same_bytes(*w, r)) << m << ": packed codes differ";
    } else if (ends_with(name, ".weight_scale")) {
      const auto* s = mo->find(name);
      ASSERT_NE(s, nullptr) << name;
      EXPECT_EQ(s->entry->dtype, DType::F8_E4M3) << name;
      EXPECT_EQ(s->entry->shape, r.entry->shape) << name;
      EXPECT_TRUE(same_bytes(*s, r)) << name << ": block scales differ";
    } else if (ends_with(name, ".weight_global_scale") || ends_with(name, ".input_global_scale")) {
      const bool input = ends_with(name, ".input_global_scale");
      const std::string m = name.substr(0, name.rfind('.'));
      const auto* s = mo->find(m + (input ? ".input_scale" : ".weight_scale_2"));
      ASSERT_NE(s, nullptr) << name;
      EXPECT_EQ(s->entry->dtype, DType::F32) << name;
      EXPECT_EQ(s->entry->shape, std::vector<int64_t>{}) << name << ": ModelOpt's scales are 0-dim";
      const float g = scalar(r);
      EXPECT_EQ(scalar(*s), 1.0f / g) << name << ": ModelOpt stores the reciprocal, rounded once in float32";
      (input ? input_scale : weight_scale_2)[m] = scalar(*s);
    } else {
      const auto* s = mo->find(name);   // kept in BF16: as it came
      ASSERT_NE(s, nullptr) << name;
      EXPECT_EQ(s->entry->dtype, r.entry->dtype) << name;
      EXPECT_EQ(s->entry->shape, r.entry->shape) << name;
      EXPECT_TRUE(same_bytes(*s, r)) << name;
    }
  }
  EXPECT_EQ(mo->tensors().size(), expected_mo_tensors);
  EXPECT_GT(quantized, 0u);
  EXPECT_EQ(input_scale.size(), b.w4a4 ? quantized : 0u);
  EXPECT_EQ(weight_scale_2.size(), quantized);

  // Fused groups share one weight_scale_2 and one input_scale (vLLM takes the max of q/k/v and warns
  // when they differ).
  for (const auto& [m, v] : weight_scale_2) {
    for (const auto& [a, siblings] : std::map<std::string, std::vector<std::string>>{
             {"self_attn.q_proj", {"self_attn.k_proj", "self_attn.v_proj"}}, {"mlp.gate_proj", {"mlp.up_proj"}}}) {
      if (!ends_with(m, a)) continue;
      const std::string prefix = m.substr(0, m.size() - a.size());
      for (const auto& s : siblings) {
        ASSERT_TRUE(weight_scale_2.count(prefix + s)) << prefix + s;
        EXPECT_EQ(weight_scale_2[prefix + s], v) << prefix + s;
        if (b.w4a4) {
          EXPECT_EQ(input_scale[prefix + s], input_scale[m]) << prefix + s;
        }
      }
    }
  }
  // The BF16-kept Linears stay under their own names.
  for (const char* m : {"model.layers.1.self_attn.q_proj", "model.layers.1.self_attn.k_proj",
                        "model.layers.1.self_attn.v_proj", "model.layers.0.mlp.down_proj"}) {
    const auto* w = mo->find(std::string(m) + ".weight");
    ASSERT_NE(w, nullptr) << m;
    EXPECT_EQ(w->entry->dtype, DType::BF16) << m;
    EXPECT_EQ(mo->find(std::string(m) + ".weight_scale"), nullptr) << m;
  }

  // hf_quant_config.json: what vLLM's ModelOpt NVFP4 config requires.
  const auto q = read_json(b.mo / "hf_quant_config.json");
  EXPECT_EQ(q["producer"]["name"], "fp4c");
  auto manifest = backends::read_manifest((b.mo / backends::kManifestFile).string());
  ASSERT_TRUE(manifest.ok()) << manifest.error().message;
  EXPECT_EQ(q["producer"]["version"], manifest->tool_version());
  EXPECT_EQ(manifest->options().format(), "modelopt");
  const auto& quant = q["quantization"];
  EXPECT_EQ(quant["quant_algo"], b.w4a4 ? "NVFP4" : "W4A16_NVFP4");
  EXPECT_EQ(quant["group_size"], 16);
  ASSERT_TRUE(quant.contains("kv_cache_quant_algo"));
  EXPECT_TRUE(quant["kv_cache_quant_algo"].is_null());
  const auto exclude = quant["exclude_modules"].get<std::vector<std::string>>();
  EXPECT_TRUE(std::is_sorted(exclude.begin(), exclude.end()));
  EXPECT_EQ(std::set<std::string>(exclude.begin(), exclude.end()).size(), exclude.size());
  // The same modules as compressed-tensors' ignore list, which names lm_head and every BF16 Linear.
  const auto ct_config = read_json(b.ct / "config.json");
  auto ignore = ct_config["quantization_config"]["ignore"].get<std::vector<std::string>>();
  std::sort(ignore.begin(), ignore.end());
  EXPECT_EQ(exclude, ignore);
  for (const char* m : {"lm_head", "model.layers.0.mlp.down_proj", "model.layers.1.self_attn.k_proj",
                        "model.layers.1.self_attn.q_proj", "model.layers.1.self_attn.v_proj"})
    EXPECT_NE(std::find(exclude.begin(), exclude.end(), m), exclude.end()) << m;
  // No quantized Linear is excluded.
  for (const auto& [m, v] : weight_scale_2)
    EXPECT_EQ(std::find(exclude.begin(), exclude.end(), m), exclude.end()) << m;

  // config.json: the source's keys unchanged, plus quantization_config = hf_quant_config.json with
  // quant_method "modelopt" (vLLM reads config.json's quantization_config before hf_quant_config.json;
  // ModelOptNvFp4Config.override_quantization_method wants quant_method starting with "modelopt" and
  // "NVFP4" in quantization.quant_algo, then from_config its "quantization" object).
  auto config = read_json(b.mo / "config.json");
  auto source = read_json(b.model / "config.json");
  auto mirror = config["quantization_config"];
  config.erase("quantization_config");
  EXPECT_EQ(config, source);
  EXPECT_EQ(mirror["quant_method"], "modelopt");
  mirror.erase("quant_method");
  EXPECT_EQ(mirror, q);
  for (const char* field : {"quant_algo", "group_size", "kv_cache_quant_algo", "exclude_modules"})
    EXPECT_TRUE(mirror["quantization"].contains(field)) << field;

  // The manifest's hashes hold.
  auto r = fp4c("inspect --verify " + b.mo.string());
  EXPECT_EQ(r.exit_code, 0) << r.out;
}

TEST(ModelOpt, W4A16Layout) {
  BothLayouts b(false);
  check_layout(b);
}

TEST(ModelOpt, W4A4Layout) {
  BothLayouts b(true);
  check_layout(b);
}

// The two layouts dequantize to the same weights up to one float32 rounding: compressed-tensors gives
// fp4 * fl(s / G), ModelOpt (as it defines) fl(fp4 * s * weight_scale_2) with weight_scale_2 = fl(1/G).
// Each is within one rounding of the exact fp4 * s / G, so they differ by at most one ulp.
void check_weights(const BothLayouts& b) {
  auto ref = frontend::open_checkpoint(b.model.string());
  ASSERT_TRUE(ref.ok()) << ref.error().message;
  auto ct = backends::open_artifact(b.ct.string(), ref->model);
  auto mo = backends::open_artifact(b.mo.string(), ref->model);
  ASSERT_TRUE(ct.ok()) << ct.error().message;
  ASSERT_TRUE(mo.ok()) << mo.error().message;
  EXPECT_EQ(ct->w4a4(), b.w4a4);
  EXPECT_EQ(mo->w4a4(), b.w4a4);
  int64_t elements = 0, equal = 0;
  for (ir::TensorId id = 0; id < ref->model.tensors.size(); ++id) {
    ASSERT_EQ(ct->tensor(id).quantized, mo->tensor(id).quantized) << ref->model.tensors[id].name;
    if (!ct->tensor(id).quantized) continue;
    const auto x = ct->dequantize(id, ref->model), y = mo->dequantize(id, ref->model);
    ASSERT_EQ(x.size(), y.size());
    for (size_t i = 0; i < x.size(); ++i) {
      const float ulp = std::nextafter(std::max(std::abs(x[i]), std::abs(y[i])), INFINITY) -
                        std::max(std::abs(x[i]), std::abs(y[i]));
      ASSERT_LE(std::abs(x[i] - y[i]), ulp) << ref->model.tensors[id].name << "[" << i << "]";
      equal += x[i] == y[i];
    }
    elements += int64_t(x.size());
    // W4A4: the input global scale read back is 1/input_scale, Gx or a neighbour of it.
    const auto gx = ct->tensor(id).input_global_scale, gx2 = mo->tensor(id).input_global_scale;
    ASSERT_EQ(gx.has_value(), gx2.has_value());
    if (gx) {
      EXPECT_LE(std::abs(*gx - *gx2), std::nextafter(*gx, INFINITY) - *gx) << ref->model.tensors[id].name;
    }
  }
  std::printf("note: %lld of %lld dequantized weights equal bit for bit\n", static_cast<long long>(equal),
              static_cast<long long>(elements));
}

// fp4c eval reads both layouts to nearly the same figures. Not exactly: the weights differ in their last
// bit where the two dequantization rules round differently (above), and W4A4 activations use
// Gx' = fl(1/input_scale), which differs from Gx in its last bit for about one value in six. Perplexity
// and recovery then move by less than 1e-7 relative; the KL figures of this random synthetic model
// (perplexity ~3500, nearly flat distributions) by up to 1e-5 relative (measured: 7e-6 for the W4A16
// KL p99), since KL is a small difference of large log-probabilities.
void check_eval(const BothLayouts& b) {
  auto eval = [&](const fs::path& artifact) {
    auto r = fp4c("eval --json --model " + b.model.string() + " --artifact " + artifact.string() + " --data " +
                  b.eval.string());
    EXPECT_EQ(r.exit_code, 0) << r.out;
    return r.exit_code == 0 ? nlohmann::json::parse(r.out) : nlohmann::json();
  };
  const auto ct = eval(b.ct), mo = eval(b.mo);
  ASSERT_FALSE(ct.is_null());
  ASSERT_FALSE(mo.is_null());
  EXPECT_EQ(ct["predictions"], mo["predictions"]);
  EXPECT_EQ(ct["reference_perplexity"], mo["reference_perplexity"]);
  for (const char* k : {"perplexity", "recovery", "top1_agreement", "kl_mean", "kl_median", "kl_p99"}) {
    const double x = ct[k].get<double>(), y = mo[k].get<double>();
    const double tolerance = std::string(k).starts_with("kl_") ? 2e-5 : 1e-6;
    EXPECT_NEAR(y, x, tolerance * std::abs(x)) << k;
    if (x != y) std::printf("note: %s differs in the last bits: %.17g vs %.17g (%.3g relative)\n", k, x, y,
                            std::abs(x - y) / std::abs(x));
  }
  // eval recorded its figures in the ModelOpt manifest, and the hashes still hold.
  auto m = backends::read_manifest((b.mo / backends::kManifestFile).string());
  ASSERT_TRUE(m.ok());
  EXPECT_EQ(m->accuracy_size(), 1);
  auto r = fp4c("inspect --verify " + b.mo.string());
  EXPECT_EQ(r.exit_code, 0) << r.out;
}

TEST(ModelOpt, EvalMatchesCompressedTensorsW4A16) {
  BothLayouts b(false);
  check_weights(b);
  check_eval(b);
}

TEST(ModelOpt, EvalMatchesCompressedTensorsW4A4) {
  BothLayouts b(true);
  check_weights(b);
  check_eval(b);
}

// On a real model (stories260K) W4A16 agrees as closely; W4A4 does not: its activations are
// fake-quantized to FP4, a discontinuous function, so the last-bit differences (3 of its 30 input global
// scales and 6 of its 30 weight global scales do not survive float32's 1/(1/x)) flip some activation
// codes, and perplexity moves by 3e-4 relative (4.70336 vs 4.70479; the input scales alone: 7e-5).
// vLLM serves the two layouts with the same reciprocals (ModelOpt: 1/input_scale), so the difference
// is the layouts', not the reader's.
TEST(ModelOpt, Stories260KEvalAgreesWithCompressedTensors) {
  const fs::path stories = fs::path(FP4C_SHARED_DIR) / "models" / "stories260K";
  if (!fs::exists(stories / "model.safetensors")) GTEST_SKIP() << "no " << stories;
  TempDir tmp;
  for (const bool w4a4 : {false, true}) {
    std::map<std::string, nlohmann::json> figures;
    for (const std::string format : {"compressed-tensors", "modelopt"}) {
      const auto out = tmp.path / (format + (w4a4 ? "-w4a4" : "-w4a16"));
      auto r = fp4c("quantize --quiet --model " + stories.string() + " --out " + out.string() + " --format " + format +
                    (w4a4 ? " --calib " + (stories / "calib.jsonl").string() : std::string()));
      ASSERT_EQ(r.exit_code, 0) << r.out;
      r = fp4c("eval --json --model " + stories.string() + " --artifact " + out.string() + " --data " +
               (stories / "eval.jsonl").string());
      ASSERT_EQ(r.exit_code, 0) << r.out;
      figures[format] = nlohmann::json::parse(r.out);
    }
    const double x = figures["compressed-tensors"]["perplexity"].get<double>();
    const double y = figures["modelopt"]["perplexity"].get<double>();
    std::printf("note: stories260K %s perplexity %.9g (compressed-tensors) vs %.9g (modelopt), %.3g relative\n",
                w4a4 ? "W4A4" : "W4A16", x, y, std::abs(x - y) / x);
    EXPECT_NEAR(y, x, (w4a4 ? 1e-3 : 1e-6) * x);
  }
}

TEST(ModelOpt, UnknownFormatIsRefused) {
  SynthModel s;
  auto r = fp4c("quantize --model " + s.model.string() + " --out " + (s.tmp.path / "o").string() +
                " --format gguf");
  EXPECT_NE(r.exit_code, 0);
  EXPECT_NE(r.out.find("--format"), std::string::npos) << r.out;
  EXPECT_FALSE(fs::exists(s.tmp.path / "o"));
}

// A copy of a shard with one tensor dropped or changed.
struct Edit {
  std::string name;
  bool drop = false;
  std::optional<DType> dtype;
  std::optional<std::vector<int64_t>> shape;
};

void rewrite_shard(const fs::path& path, const Edit& edit) {
  std::vector<safetensors::TensorSpec> specs;
  std::vector<std::vector<std::byte>> data;
  bool found = false;
  {
    auto f = safetensors::File::open(path.string());
    ASSERT_TRUE(f.ok()) << f.error().message;
    for (const auto& t : f->tensors()) {
      safetensors::TensorSpec spec{t.name, t.dtype, t.shape};
      auto b = f->bytes(t);
      std::vector<std::byte> v(b.begin(), b.end());
      if (t.name == edit.name) {
        found = true;
        if (edit.drop) continue;
        if (edit.dtype) spec.dtype = *edit.dtype;
        if (edit.shape) spec.shape = *edit.shape;
        v.resize(spec.nbytes());
      }
      specs.push_back(spec);
      data.push_back(std::move(v));
    }
  }
  ASSERT_TRUE(found) << edit.name;
  fs::remove(path);
  auto w = safetensors::Writer::create(path.string(), specs, {{"format", "pt"}});
  ASSERT_TRUE(w.ok()) << w.error().message;
  for (const auto& v : data) ASSERT_TRUE(w->write(v).ok());
  ASSERT_TRUE(w->finish().ok());
}

TEST(ModelOpt, BadArtifactsFailNamingFileAndTensor) {
  BothLayouts b(true);
  auto ref = frontend::open_checkpoint(b.model.string());
  ASSERT_TRUE(ref.ok()) << ref.error().message;
  {
    auto good = backends::open_artifact(b.mo.string(), ref->model);
    ASSERT_TRUE(good.ok()) << good.error().message;
    EXPECT_TRUE(good->w4a4());
    EXPECT_TRUE(backends::is_modelopt_artifact(b.mo.string()));
    EXPECT_FALSE(backends::is_modelopt_artifact(b.ct.string()));
  }
  auto broken = b.tmp.path / "broken";
  auto copy = [&] {
    fs::remove_all(broken);
    fs::copy(b.mo, broken, fs::copy_options::recursive);
  };
  auto expect_error = [&](const std::vector<std::string>& parts) {
    auto a = backends::open_artifact(broken.string(), ref->model);
    ASSERT_FALSE(a.ok());
    for (const auto& p : parts) EXPECT_NE(a.error().message.find(p), std::string::npos) << a.error().message;
  };
  const std::string m = "model.layers.0.self_attn.o_proj";
  const fs::path shard = broken / "model.safetensors";
  ASSERT_TRUE(fs::exists(b.mo / "model.safetensors"));

  copy();
  rewrite_shard(shard, {m + ".weight_scale_2", true});
  expect_error({"model.safetensors", m + ".weight_scale", "has no '" + m + ".weight_scale_2'"});

  copy();
  rewrite_shard(shard, {m + ".weight_scale_2", false, DType::F32, std::vector<int64_t>{1}});
  expect_error({"model.safetensors", m + ".weight_scale_2", "expected one F32 value of shape []", "F32 [1]"});

  copy();
  rewrite_shard(shard, {m + ".weight_scale_2", false, DType::BF16, std::vector<int64_t>{}});
  expect_error({"model.safetensors", m + ".weight_scale_2", "found BF16 []"});

  copy();
  rewrite_shard(shard, {m + ".weight", false, DType::U8, std::vector<int64_t>{1, 8}});
  expect_error({"model.safetensors", "'" + m + ".weight'", "expected U8 ["});

  copy();
  rewrite_shard(shard, {m + ".weight_scale", false, DType::F32, std::nullopt});
  expect_error({"model.safetensors", m + ".weight_scale", "expected F8_E4M3"});

  copy();
  rewrite_shard(shard, {m + ".input_scale", true});
  expect_error({"W4A4", m + ".input_scale", "is missing"});

  // hf_quant_config.json.
  const fs::path hq = broken / "hf_quant_config.json";
  struct Bad {
    std::string text, expect;
  } bad[] = {
      {"{\"producer\": ", "malformed JSON"},
      {"[]", "malformed JSON"},
      {R"({"quantization": {}})", "'producer'"},
      {R"({"producer": {"name": "x"}})", "no 'quantization' object"},
      {R"({"producer": {"name": "x"}, "quantization": {"quant_algo": "NVFP4", "kv_cache_quant_algo": null,
          "exclude_modules": []}})",
       "'quantization' has no 'group_size'"},
      {R"({"producer": {"name": "x"}, "quantization": {"quant_algo": "NVFP4", "group_size": 16,
          "exclude_modules": []}})",
       "'quantization' has no 'kv_cache_quant_algo'"},
      {R"({"producer": {"name": "x"}, "quantization": {"quant_algo": "NVFP4", "group_size": 16,
          "kv_cache_quant_algo": null}})",
       "'quantization' has no 'exclude_modules'"},
      {R"({"producer": {"name": "x"}, "quantization": {"quant_algo": "FP8", "group_size": 16,
          "kv_cache_quant_algo": null, "exclude_modules": []}})",
       "quant_algo \"FP8\" is not NVFP4 or W4A16_NVFP4"},
      {R"({"producer": {"name": "x"}, "quantization": {"quant_algo": "NVFP4", "group_size": 32,
          "kv_cache_quant_algo": null, "exclude_modules": []}})",
       "group_size 32 is not 16"},
      {R"({"producer": {"name": "x"}, "quantization": {"quant_algo": "NVFP4", "group_size": 16,
          "kv_cache_quant_algo": null, "exclude_modules": "lm_head"}})",
       "exclude_modules is not a list"},
  };
  copy();
  for (const auto& c : bad) {
    write_text(hq, c.text);
    expect_error({"hf_quant_config.json", c.expect});
  }

  // Through the command: the error reaches the user with the file and tensor named.
  copy();
  rewrite_shard(shard, {m + ".weight_scale_2", true});
  auto r = fp4c("eval --model " + b.model.string() + " --artifact " + broken.string() + " --data " + b.eval.string());
  EXPECT_NE(r.exit_code, 0);
  EXPECT_NE(r.out.find(m + ".weight_scale_2"), std::string::npos) << r.out;
  EXPECT_NE(r.out.find("model.safetensors"), std::string::npos) << r.out;
}

}  // namespace
}  // namespace fp4c::testing
