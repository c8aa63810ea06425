// Phi-3's fused qkv_proj / gate_up_proj: the frontend splits them into row slices that every pass sees as the
// unfused Linears, the artifact re-fuses them (one tensor, one global scale), the reader splits them again.
//
// The proof: one tiny model written twice, as a Llama (q/k/v/gate/up separate) and as a Phi-3 (the same rows
// fused), quantized with every built-in recipe and the passes no recipe runs; the Phi-3 artifact must hold
// exactly the Llama artifact's bytes, the fused tensors being the concatenation of the split ones (q|k|v,
// gate|up) with the split group's one global scale, and each artifact must evaluate to the same NLL.
#include <gtest/gtest.h>

#include <cstring>
#include <nlohmann/json.hpp>

#include "backends/artifact_layout.h"
#include "formats/safetensors.h"
#include "pipeline/evaluate.h"
#include "test/support/tiny_checkpoint.h"

namespace fp4c::testing {
namespace {

using nlohmann::json;

const TinyShape kShape{.architecture = "LlamaForCausalLM", .hidden = 64, .intermediate = 176, .layers = 2,
                       .heads = 4, .kv_heads = 2, .vocab = 96};

std::vector<uint16_t> concat(const std::vector<const TinyTensor*>& parts) {
  std::vector<uint16_t> out;
  for (const TinyTensor* t : parts) out.insert(out.end(), t->bf16.begin(), t->bf16.end());
  return out;
}

std::string ids_jsonl(uint64_t seed, int sequences, int length) {
  std::mt19937_64 rng(seed);
  std::string out;
  for (int s = 0; s < sequences; ++s) {
    out += "{\"input_ids\": [";
    for (int i = 0; i < length; ++i) out += (i ? ", " : "") + std::to_string(rng() % uint64_t(kShape.vocab));
    out += "]}\n";
  }
  return out;
}

// The same weights as a Llama checkpoint and as a Phi-3 one, with calibration and evaluation ids.
struct TwinModels {
  TempDir tmp;
  fs::path llama = tmp.path / "llama", phi3 = tmp.path / "phi3";
  fs::path calib = tmp.path / "calib.jsonl", eval = tmp.path / "eval.jsonl";
  TwinModels() {
    const auto tensors = tiny_tensors(kShape, 7);
    write_checkpoint(llama, kShape, tensors);
    std::map<std::string, const TinyTensor*> by_name;
    for (const auto& t : tensors) by_name[t.name] = &t;
    std::vector<TinyTensor> fused;
    for (const auto& t : tensors) {
      const bool split = t.name.find("q_proj") != std::string::npos || t.name.find("k_proj") != std::string::npos ||
                         t.name.find("v_proj") != std::string::npos || t.name.find("gate_proj") != std::string::npos ||
                         t.name.find("up_proj") != std::string::npos;
      if (!split) fused.push_back(t);
    }
    for (int l = 0; l < kShape.layers; ++l) {
      const std::string p = "model.layers." + std::to_string(l) + ".";
      const auto* q = by_name.at(p + "self_attn.q_proj.weight");
      const auto* k = by_name.at(p + "self_attn.k_proj.weight");
      const auto* v = by_name.at(p + "self_attn.v_proj.weight");
      const auto* g = by_name.at(p + "mlp.gate_proj.weight");
      const auto* u = by_name.at(p + "mlp.up_proj.weight");
      fused.push_back({p + "self_attn.qkv_proj.weight", {q->shape[0] + k->shape[0] + v->shape[0], kShape.hidden},
                       concat({q, k, v})});
      fused.push_back({p + "mlp.gate_up_proj.weight", {2 * g->shape[0], kShape.hidden}, concat({g, u})});
    }
    TinyShape phi = kShape;
    phi.architecture = "Phi3ForCausalLM";
    write_checkpoint(phi3, phi, fused);
    std::string config = read_file(phi3 / "config.json");
    const std::string from = "\"model_type\": \"llama\"";
    config.replace(config.find(from), from.size(), "\"model_type\": \"phi3\"");
    write_text(phi3 / "config.json", config);
    write_text(calib, ids_jsonl(11, 8, 32));
    write_text(eval, ids_jsonl(12, 3, 32));
  }
};

TwinModels& twins() {
  static TwinModels* t = new TwinModels();   // made once for every test of this file
  return *t;
}

std::vector<std::byte> bytes_of(const safetensors::Checkpoint& c, const std::string& name) {
  const auto* r = c.find(name);
  if (!r) return {};
  const auto b = r->file->bytes(*r->entry);
  return {b.begin(), b.end()};
}

// Every tensor of the Phi-3 artifact against the Llama artifact's: fused ones are the split ones concatenated
// (q|k|v, gate|up), their global scales the split group's one (equal in every member).
void expect_same_bytes_refused(const fs::path& llama_artifact, const fs::path& phi3_artifact, const std::string& what) {
  SCOPED_TRACE(what);
  auto a = safetensors::Checkpoint::open(llama_artifact.string());
  auto b = safetensors::Checkpoint::open(phi3_artifact.string());
  ASSERT_TRUE(a.ok()) << a.error().message;
  ASSERT_TRUE(b.ok()) << b.error().message;
  size_t expected_count = 0, fused_seen = 0;
  for (const auto& ref : b->tensors()) {
    const std::string& name = ref.entry->name;
    std::vector<std::string> parts;
    std::string fused_module;
    for (const auto& [module, split] :
         {std::pair<std::string, std::vector<std::string>>{"self_attn.qkv_proj", {"self_attn.q_proj", "self_attn.k_proj", "self_attn.v_proj"}},
          std::pair<std::string, std::vector<std::string>>{"mlp.gate_up_proj", {"mlp.gate_proj", "mlp.up_proj"}}})
      if (name.find("." + module) != std::string::npos) {
        fused_module = module;
        parts = split;
      }
    if (parts.empty()) {
      EXPECT_EQ(bytes_of(*b, name), bytes_of(*a, name)) << name;
      ++expected_count;
      continue;
    }
    ++fused_seen;
    const size_t at = name.find(fused_module);
    const std::string prefix = name.substr(0, at), suffix = name.substr(at + fused_module.size());
    std::vector<std::vector<std::byte>> pieces;
    for (const auto& p : parts) {
      pieces.push_back(bytes_of(*a, prefix + p + suffix));
      ASSERT_FALSE(pieces.back().empty()) << "the Llama artifact has no " << prefix + p + suffix;
    }
    expected_count += parts.size();
    const bool global = suffix == ".weight_global_scale" || suffix == ".input_global_scale" ||
                        suffix == ".weight_scale_2" || suffix == ".input_scale";
    if (global) {
      for (const auto& p : pieces) EXPECT_EQ(p, pieces[0]) << name << ": the split group's members differ";
      EXPECT_EQ(bytes_of(*b, name), pieces[0]) << name;
    } else {
      std::vector<std::byte> cat;
      for (const auto& p : pieces) cat.insert(cat.end(), p.begin(), p.end());
      EXPECT_EQ(bytes_of(*b, name), cat) << name << " is not its parts in order";
    }
  }
  EXPECT_GT(fused_seen, 0u);
  EXPECT_EQ(expected_count, a->tensors().size()) << "tensors of the Llama artifact unaccounted for";
}

double eval_nll(const fs::path& model, const fs::path& artifact, double* reference = nullptr) {
  pipeline::EvalRequest req;
  req.model = model.string();
  req.artifact = artifact.string();
  req.data = twins().eval.string();
  req.record_in_manifest = false;
  auto e = pipeline::run_evaluation(req);
  EXPECT_TRUE(e.ok()) << e.error().message;
  if (!e.ok() || !e->result.nll) return std::nan("");
  if (reference) *reference = e->result.reference_nll;
  return *e->result.nll;
}

struct Build {
  std::string name, args;
};

// Every built-in recipe and the passes no recipe runs (outliers, gptq, smoothquant's extra mappings), in both
// layouts and the MXFP4 scheme.
const std::vector<Build> kBuilds = {
    {"w4a16", "--scheme w4a16"},
    {"plain", "--recipe plain"},
    {"smoothquant", "--recipe smoothquant"},
    {"best", "--recipe best"},
    {"sensitive", "--recipe sensitive"},
    {"auto", "--recipe auto"},
    {"auto-5pct", "--recipe auto-5pct"},
    {"gptq+outliers", "--passes 'stats{second_moments=true},outliers,gptq,blockscale,pack'"},
    {"smoothquant-extra", "--passes 'stats,smoothquant{extra=true},stats,blockscale{rule=mse},pack'"},
    {"sensitivity-50pct", "--passes 'stats,sensitivity{budget=50%},blockscale,pack'"},
    {"ignore-qkv", "--recipe plain --ignore 'layers\\.0\\.self_attn\\.(q_proj|qkv_proj)'"},
    {"modelopt", "--recipe plain --format modelopt"},
    {"mxfp4", "--scheme mxfp4 --recipe plain"},
};

TEST(Phi3Fused, EveryPassGivesTheSplitModelsBytesAndTheArtifactEvaluatesTheSame) {
  TwinModels& t = twins();
  for (const Build& b : kBuilds) {
    SCOPED_TRACE(b.name);
    const fs::path la = t.tmp.path / ("llama-" + b.name), pa = t.tmp.path / ("phi3-" + b.name);
    const std::string calib = b.name == "w4a16" ? "" : " --calib " + t.calib.string();
    auto r1 = fp4c("quantize --quiet --threads 2 --model " + t.llama.string() + " --out " + la.string() + calib + " " + b.args);
    ASSERT_EQ(r1.exit_code, 0) << r1.out;
    auto r2 = fp4c("quantize --quiet --threads 2 --model " + t.phi3.string() + " --out " + pa.string() + calib + " " + b.args);
    ASSERT_EQ(r2.exit_code, 0) << r2.out;
    expect_same_bytes_refused(la, pa, b.name);
    // The manifest names the fused tensor each slice is stored in.
    const json m = json::parse(read_file(pa / "fp4c-manifest.json"));
    bool found = false;
    for (const auto& rec : m["tensors"])
      if (rec["name"] == "model.layers.1.self_attn.k_proj.weight") {
        found = true;
        EXPECT_EQ(rec["storedIn"], "model.layers.1.self_attn.qkv_proj.weight");
        EXPECT_EQ(rec["storedRow"], "64");   // int64 in protobuf's JSON: a string
      }
    EXPECT_TRUE(found);
    if (b.name == "plain") {   // inspect shows which rows each slice is
      auto ins = fp4c("inspect " + pa.string());
      EXPECT_EQ(ins.exit_code, 0) << ins.out;
      EXPECT_NE(ins.out.find("model.layers.1.self_attn.qkv_proj.weight = model.layers.1.self_attn.q_proj rows [0, 64), "
                             "model.layers.1.self_attn.k_proj rows [64, 96), model.layers.1.self_attn.v_proj rows [96, 128)"),
                std::string::npos) << ins.out;
    }
    if (b.name == "mxfp4" || b.name == "modelopt") continue;   // eval reads these too; once is enough here
    double ref_l = 0, ref_p = 0;
    const double nl = eval_nll(t.llama, la, &ref_l), np = eval_nll(t.phi3, pa, &ref_p);
    EXPECT_EQ(ref_l, ref_p) << "the BF16 models differ";
    EXPECT_EQ(nl, np) << "the artifacts evaluate differently";
    EXPECT_NE(nl, ref_l) << "quantization changed nothing";
  }
}

TEST(Phi3Fused, KeptFusedGroupIsListedUnderTheFusedModule) {
  TwinModels& t = twins();
  const fs::path pa = t.tmp.path / "phi3-ignore-config";
  auto r = fp4c("quantize --quiet --model " + t.phi3.string() + " --out " + pa.string() +
                " --scheme w4a16 --ignore 'layers\\.0\\.self_attn\\.k_proj'");
  ASSERT_EQ(r.exit_code, 0) << r.out;
  // k_proj alone matched; its fused group (q, v) stays with it, stored as the one BF16 qkv_proj.
  auto c = safetensors::Checkpoint::open(pa.string());
  ASSERT_TRUE(c.ok()) << c.error().message;
  const auto* kept = c->find("model.layers.0.self_attn.qkv_proj.weight");
  ASSERT_TRUE(kept);
  EXPECT_EQ(kept->entry->shape, (std::vector<int64_t>{128, 64}));
  EXPECT_EQ(kept->entry->dtype, DType::BF16);
  EXPECT_FALSE(c->find("model.layers.0.self_attn.qkv_proj.weight_packed"));
  EXPECT_TRUE(c->find("model.layers.1.self_attn.qkv_proj.weight_packed"));
  const json config = json::parse(read_file(pa / "config.json"));
  const auto& ignore = config["quantization_config"]["ignore"];
  EXPECT_NE(std::find(ignore.begin(), ignore.end(), "model.layers.0.self_attn.qkv_proj"), ignore.end()) << ignore;
  EXPECT_EQ(std::find(ignore.begin(), ignore.end(), "model.layers.0.self_attn.q_proj"), ignore.end()) << ignore;
}

// A Phi-3 checkpoint whose config contradicts its fused tensors, or whose partial rotary gives an odd rotary_dim:
// a named error, a non-zero exit, nothing written.
TEST(Phi3Fused, BadInputIsRefusedByNameAndWritesNothing) {
  TwinModels& t = twins();
  const std::string config = read_file(t.phi3 / "config.json");
  struct Bad { std::string name, from, to, message; };
  for (const Bad& b : {Bad{"kv-heads", "\"num_key_value_heads\": 2", "\"num_key_value_heads\": 4",
                           "tensor 'model.layers.0.self_attn.qkv_proj.weight' has shape [128, 64], expected [192, 64] "
                           "((num_attention_heads + 2 * num_key_value_heads) * head_dim rows"},
                       Bad{"intermediate", "\"intermediate_size\": 176", "\"intermediate_size\": 160",
                           "tensor 'model.layers.0.mlp.down_proj.weight' has shape [64, 176], expected [64, 160]"},
                       Bad{"odd-rotary", "\"rope_theta\": 10000.0,", "\"rope_theta\": 10000.0, \"partial_rotary_factor\": 0.7,",
                           "key 'partial_rotary_factor' = 0.7 gives rotary_dim int(16 * 0.7) = 11, which must be even"}}) {
    SCOPED_TRACE(b.name);
    TempDir tmp;
    const fs::path model = tmp.path / "model", out = tmp.path / "out";
    fs::create_directories(model);
    fs::copy_file(t.phi3 / "model.safetensors", model / "model.safetensors");
    std::string c = config;
    ASSERT_NE(c.find(b.from), std::string::npos) << c;
    c.replace(c.find(b.from), b.from.size(), b.to);
    write_text(model / "config.json", c);
    auto r = fp4c("quantize --quiet --model " + model.string() + " --out " + out.string() + " --scheme w4a16");
    EXPECT_NE(r.exit_code, 0);
    EXPECT_NE(r.out.find(b.message), std::string::npos) << r.out;
    EXPECT_FALSE(fs::exists(out));
  }
}

// The writer on its own: the pieces of a fused tensor must come member by member, and one global scale.
TEST(Phi3Fused, WriterRefusesFusedMembersThatDisagreeOrComeOutOfOrder) {
  ir::Model m;
  const std::string mod = "model.layers.0.self_attn.qkv_proj";
  int64_t row = 0;
  for (const auto& [name, role, rows] : {std::tuple{"q_proj", ir::Role::Q, 32}, std::tuple{"k_proj", ir::Role::K, 16},
                                          std::tuple{"v_proj", ir::Role::V, 16}}) {
    ir::TensorInfo t;
    t.module = std::string("model.layers.0.self_attn.") + name;
    t.name = t.module + ".weight";
    t.dtype = DType::BF16;
    t.shape = {rows, 32};
    t.role = role;
    t.layer = 0;
    t.stored_in = ir::TensorInfo::StoredSlice{mod + ".weight", mod, row, 64};
    row += rows;
    m.add(std::move(t));
  }
  m.annotations.decision.assign(3, ir::Decision{});
  backends::LayoutOptions o;
  o.source_file_of_tensor.assign(3, "model.safetensors");
  const backends::Plan plan = backends::plan_layout(m, o);
  ASSERT_EQ(plan.tensors.size(), 3u);
  EXPECT_EQ(plan.tensors[0].name, mod + ".weight_packed");
  EXPECT_EQ(plan.tensors[0].shape, (std::vector<int64_t>{64, 16}));
  EXPECT_EQ(plan.tensors[1].shape, (std::vector<int64_t>{64, 2}));
  EXPECT_EQ(plan.tensors[2].name, mod + ".weight_global_scale");
  const auto send = [](backends::ArtifactWriter& w, ir::TensorId id, int64_t rows, float global) -> Status {
    std::vector<std::byte> packed(size_t(rows * 16), std::byte(id + 1)), scales(size_t(rows * 2), std::byte(0x30));
    FP4C_TRY(w.put(id, ir::TensorPart::PackedWeight, packed));
    FP4C_TRY(w.put(id, ir::TensorPart::BlockScales, scales));
    return w.put(id, ir::TensorPart::WeightGlobalScale, std::as_bytes(std::span<const float>(&global, 1)));
  };
  {
    TempDir tmp;
    backends::ArtifactWriter w(tmp.path.string(), plan);
    ASSERT_TRUE(send(w, 0, 32, 100.f).ok());
    ASSERT_TRUE(send(w, 1, 16, 100.f).ok());
    ASSERT_TRUE(send(w, 2, 16, 100.f).ok());
    ASSERT_TRUE(w.finish().ok());
    auto c = safetensors::Checkpoint::open(tmp.path.string());
    ASSERT_TRUE(c.ok()) << c.error().message;
    const auto packed = bytes_of(*c, mod + ".weight_packed");
    ASSERT_EQ(packed.size(), 64u * 16);
    EXPECT_EQ(packed[0], std::byte(1));            // q's rows first
    EXPECT_EQ(packed[32 * 16], std::byte(2));      // then k's
    EXPECT_EQ(packed[48 * 16], std::byte(3));      // then v's
    float g = 0;
    std::memcpy(&g, bytes_of(*c, mod + ".weight_global_scale").data(), 4);
    EXPECT_EQ(g, 100.f);
  }
  {
    TempDir tmp;
    backends::ArtifactWriter w(tmp.path.string(), plan);
    ASSERT_TRUE(send(w, 0, 32, 100.f).ok());
    ASSERT_TRUE(send(w, 1, 16, 100.f).ok());
    auto st = send(w, 2, 16, 50.f);
    ASSERT_FALSE(st.ok());
    EXPECT_NE(st.error().message.find("the fused members' weight_global_scale values differ"), std::string::npos)
        << st.error().message;
  }
  {
    TempDir tmp;
    backends::ArtifactWriter w(tmp.path.string(), plan);
    auto st = send(w, 1, 16, 100.f);   // k before q
    ASSERT_FALSE(st.ok());
    EXPECT_NE(st.error().message.find("expected the piece of tensor #0, received tensor #1"), std::string::npos)
        << st.error().message;
  }
}

}  // namespace
}  // namespace fp4c::testing
