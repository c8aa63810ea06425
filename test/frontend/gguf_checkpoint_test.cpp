// GGUF as a checkpoint source: the tiny GGUF models of testdata/gguf (test/frontend/gguf_tiny_models.py)
// read as the Hugging Face checkpoints they came from (same names, values, config and evaluation
// figures), quantized with the source recorded in the manifest; bad sources refused by name.
#include "frontend/gguf_checkpoint.h"

#include <gtest/gtest.h>
#include <unistd.h>

#include <bit>
#include <cstring>
#include <filesystem>
#include <fstream>

#include "formats/convert.h"
#include "formats/gguf.h"
#include "formats/safetensors.h"
#include "frontend/checkpoint.h"
#include "pipeline/evaluate.h"
#include "pipeline/quantize.h"
#include "runtime/checkpoint_weights.h"

namespace fp4c::frontend {
namespace {

namespace fs = std::filesystem;

const fs::path kData = fs::path(FP4C_SOURCE_DIR) / "testdata" / "gguf";

#define EXPECT_HAS(message, sub)                                                    \
  do {                                                                              \
    const std::string m_ = (message);                                               \
    EXPECT_NE(m_.find(sub), std::string::npos) << m_ << "\n  lacks: " << (sub);     \
  } while (0)

std::vector<float> values(const safetensors::Checkpoint::Ref& r) {
  return to_f32(r.file->bytes(*r.entry), r.entry->dtype);
}

// Every tensor of the GGUF's image equals the Hugging Face checkpoint's, name for name, value for value.
void expect_same_tensors(const std::string& gguf, const std::string& hf) {
  auto g = open_checkpoint(gguf);
  ASSERT_TRUE(g.ok()) << g.error().message;
  auto h = open_checkpoint(hf);
  ASSERT_TRUE(h.ok()) << h.error().message;
  EXPECT_EQ(g->source_format, SourceFormat::Gguf);
  EXPECT_EQ(h->source_format, SourceFormat::Safetensors);
  EXPECT_EQ(g->model.tied_lm_head, h->model.tied_lm_head);
  const ir::ModelConfig &a = g->model.config, &b = h->model.config;
  EXPECT_EQ(a.architecture, b.architecture);
  EXPECT_EQ(a.hidden_size, b.hidden_size);
  EXPECT_EQ(a.intermediate_size, b.intermediate_size);
  EXPECT_EQ(a.num_hidden_layers, b.num_hidden_layers);
  EXPECT_EQ(a.num_attention_heads, b.num_attention_heads);
  EXPECT_EQ(a.num_key_value_heads, b.num_key_value_heads);
  EXPECT_EQ(a.head_dim, b.head_dim);
  EXPECT_EQ(a.vocab_size, b.vocab_size);
  EXPECT_EQ(a.max_position_embeddings, b.max_position_embeddings);
  EXPECT_EQ(float(a.rms_norm_eps), float(b.rms_norm_eps));
  EXPECT_EQ(a.rope_theta, b.rope_theta);
  EXPECT_EQ(a.tie_word_embeddings, b.tie_word_embeddings);
  EXPECT_EQ(a.attention_bias, b.attention_bias);
  EXPECT_EQ(a.bos_token_id, b.bos_token_id);
  EXPECT_EQ(a.eos_token_ids, b.eos_token_ids);
  EXPECT_EQ(a.rope_dim(), b.rope_dim());
  EXPECT_EQ(a.rope_scaling.type, b.rope_scaling.type);
  EXPECT_EQ(a.rope_scaling.short_factor, b.rope_scaling.short_factor);
  EXPECT_EQ(a.rope_scaling.long_factor, b.rope_scaling.long_factor);
  EXPECT_EQ(a.rope_scaling.original_max_position_embeddings, b.rope_scaling.original_max_position_embeddings);
  EXPECT_EQ(a.rope_scaling.attention_factor, b.rope_scaling.attention_factor);
  EXPECT_EQ(a.sliding_window, b.sliding_window);
  EXPECT_EQ(a.sliding_layers, b.sliding_layers);
  ASSERT_EQ(g->model.tensors.size(), h->model.tensors.size());
  for (size_t i = 0; i < g->model.tensors.size(); ++i) {
    const auto& t = g->model.tensors[i];
    SCOPED_TRACE(t.name);
    // By IR name: a fused tensor's slices (Phi-3) are IR tensors of both, read through their refs.
    const auto id = h->model.find(t.name);
    ASSERT_TRUE(id.has_value());
    const auto* other = &h->refs[*id];
    EXPECT_EQ(t.shape, other->entry->shape);
    EXPECT_EQ(t.stored_in.has_value(), h->model.tensors[*id].stored_in.has_value());
    const std::vector<float> x = values(g->refs[i]), y = values(*other);
    ASSERT_EQ(x.size(), y.size());
    int64_t differ = 0;
    for (size_t k = 0; k < x.size(); ++k) differ += std::bit_cast<uint32_t>(x[k]) != std::bit_cast<uint32_t>(y[k]);
    EXPECT_EQ(differ, 0);
  }
}

TEST(GgufCheckpoint, TinyLlamaIsItsCheckpointQkUnpermutedAndDequantized) {
  expect_same_tensors((kData / "tiny-llama" / "model.gguf").string(), (kData / "tiny-llama" / "hf").string());
  auto g = open_checkpoint((kData / "tiny-llama" / "model.gguf").string());
  ASSERT_TRUE(g.ok());
  EXPECT_TRUE(g->model.tied_lm_head);
  EXPECT_EQ(g->dequantized_types, (std::vector<std::string>{"Q4_0", "Q4_1", "Q5_0", "Q5_1", "Q8_0"}));
  EXPECT_EQ(g->source_path, (kData / "tiny-llama" / "model.gguf").string());
}

TEST(GgufCheckpoint, TinyQwen2IsItsCheckpointWithBiasesAndUntiedHead) {
  expect_same_tensors((kData / "tiny-qwen2" / "model.gguf").string(), (kData / "tiny-qwen2" / "hf").string());
  auto g = open_checkpoint((kData / "tiny-qwen2").string());  // a directory holding one .gguf
  ASSERT_TRUE(g.ok()) << g.error().message;
  EXPECT_FALSE(g->model.tied_lm_head);
  EXPECT_TRUE(g->model.config.attention_bias);
  EXPECT_TRUE(g->dequantized_types.empty());
}

TEST(GgufCheckpoint, TinyQwen3IsItsCheckpointWithQkNormsAndKeyLength) {
  expect_same_tensors((kData / "tiny-qwen3" / "model.gguf").string(), (kData / "tiny-qwen3" / "hf").string());
}

// Gemma 3: llama.cpp's 1 + w norms give back the checkpoint's w, its norm names map to the pre/post layout, and
// the attention shape it derives (every sixth layer full, the others sliding with RoPE base 10000, GELU, the
// query scale) is written as Gemma3TextConfig's keys.
TEST(GgufCheckpoint, TinyGemma3IsItsCheckpointNormsShiftedBack) {
  expect_same_tensors((kData / "tiny-gemma3" / "model.gguf").string(), (kData / "tiny-gemma3" / "hf").string());
  auto g = open_checkpoint((kData / "tiny-gemma3" / "model.gguf").string());
  ASSERT_TRUE(g.ok()) << g.error().message;
  const ir::ModelConfig& c = g->model.config;
  EXPECT_EQ(c.architecture, "Gemma3ForCausalLM");
  EXPECT_TRUE(c.tie_word_embeddings);
  EXPECT_EQ(c.head_dim, 16);
  EXPECT_EQ(g->dequantized_types, (std::vector<std::string>{"Q8_0"}));
  auto h = open_checkpoint((kData / "tiny-gemma3" / "hf").string());
  ASSERT_TRUE(h.ok()) << h.error().message;
  EXPECT_EQ(c.hidden_act, h->model.config.hidden_act);
  EXPECT_EQ(c.sliding_layers, h->model.config.sliding_layers);
  EXPECT_EQ(c.sliding_layers, (std::vector<bool>{true, true, true, true, true, false}));
  EXPECT_EQ(c.sliding_window, h->model.config.sliding_window);
  EXPECT_EQ(c.sliding_rope_theta, h->model.config.sliding_rope_theta);
  EXPECT_EQ(c.query_pre_attn_scalar, h->model.config.query_pre_attn_scalar);
  EXPECT_EQ(c.rope_scaling.type, "linear");
  EXPECT_EQ(c.rope_scaling.factor, 2.0);
}

// Phi-3 as llama.cpp writes it: fused attn_qkv / ffn_up (gate|up), LongRoPE factors as tensors, partial rotary
// from rope.dimension_count, the sliding window from attention.sliding_window.
TEST(GgufCheckpoint, TinyPhi3IsItsCheckpointFusedWithLongRopeAndPartialRotary) {
  expect_same_tensors((kData / "tiny-phi3" / "model.gguf").string(), (kData / "tiny-phi3" / "hf").string());
  auto g = open_checkpoint((kData / "tiny-phi3" / "model.gguf").string());
  ASSERT_TRUE(g.ok()) << g.error().message;
  const ir::ModelConfig& c = g->model.config;
  EXPECT_EQ(c.architecture, "Phi3ForCausalLM");
  EXPECT_EQ(c.rotary_dim, 12);
  EXPECT_EQ(c.rope_scaling.type, "longrope");
  EXPECT_EQ(c.rope_scaling.original_max_position_embeddings, 32);
  EXPECT_EQ(c.rope_scaling.long_factor, (std::vector<double>{1.0, 1.5, 2.5, 4.0, 6.0, 9.0}));
  EXPECT_EQ(c.sliding_window, 24);
  EXPECT_TRUE(g->model.tied_lm_head);
  const auto q = g->model.find("model.layers.1.self_attn.v_proj.weight");
  ASSERT_TRUE(q);
  ASSERT_TRUE(g->model.tensors[*q].stored_in);
  EXPECT_EQ(g->model.tensors[*q].stored_in->tensor, "model.layers.1.self_attn.qkv_proj.weight");
  EXPECT_EQ(g->model.tensors[*q].stored_in->row_begin, 96);
  EXPECT_EQ(g->dequantized_types, (std::vector<std::string>{"Q8_0"}));
}

// Qwen3-MoE as llama.cpp writes it: each projection's experts stacked in one [experts, rows, cols] tensor, read as
// the per-expert tensors of the Hugging Face checkpoint; routing as llama.cpp runs it (softmax, top-k renormalized).
TEST(GgufCheckpoint, TinyQwen3MoeIsItsCheckpointExpertsUnstacked) {
  expect_same_tensors((kData / "tiny-qwen3moe" / "model.gguf").string(), (kData / "tiny-qwen3moe" / "hf").string());
  auto g = open_checkpoint((kData / "tiny-qwen3moe" / "model.gguf").string());
  ASSERT_TRUE(g.ok()) << g.error().message;
  const ir::ModelConfig& c = g->model.config;
  EXPECT_EQ(c.architecture, "Qwen3MoeForCausalLM");
  EXPECT_EQ(c.num_experts, 4);
  EXPECT_EQ(c.num_experts_per_tok, 2);
  EXPECT_TRUE(c.norm_topk_prob);
  EXPECT_EQ(g->dequantized_types, (std::vector<std::string>{"Q8_0"}));
  const auto e3 = g->model.find("model.layers.1.mlp.experts.3.up_proj.weight");
  ASSERT_TRUE(e3);
  EXPECT_EQ(g->model.tensors[*e3].expert, 3);
}

TEST(GgufCheckpoint, TheImageIsRemovedWithTheLastOwner) {
  std::string dir;
  {
    auto g = open_checkpoint((kData / "tiny-llama" / "model.gguf").string());
    ASSERT_TRUE(g.ok());
    dir = g->dir;
    // A small image is made in memory: the directory holds the config and tokenizer files only.
    ASSERT_EQ(g->files.files().size(), 1u);
    EXPECT_TRUE(g->files.files()[0].in_memory());
    EXPECT_FALSE(fs::exists(fs::path(dir) / "model.safetensors"));
    EXPECT_TRUE(fs::exists(fs::path(dir) / "config.json"));
  }
  EXPECT_FALSE(fs::exists(dir));
}

// The image in memory (each tensor made when first read) is, byte for byte, the model.safetensors the disk image
// writes (header included), for every architecture's tiny GGUF (block formats dequantized, Q/K rows unpermuted,
// Gemma's norms shifted, tensors as they are).
TEST(GgufCheckpoint, TheImageInMemoryIsTheDiskImageByteForByte) {
  for (const char* name : {"tiny-llama", "tiny-qwen2", "tiny-qwen3", "tiny-gemma3", "tiny-phi3", "tiny-qwen3moe"}) {
    SCOPED_TRACE(name);
    const std::string gguf = (kData / name / "model.gguf").string();
    auto mem = write_gguf_image(gguf, ImageStorage::Memory);
    ASSERT_TRUE(mem.ok()) << mem.error().message;
    auto disk = write_gguf_image(gguf, ImageStorage::Disk);
    ASSERT_TRUE(disk.ok()) << disk.error().message;
    ASSERT_TRUE(mem->weights.has_value());
    EXPECT_FALSE(disk->weights.has_value());
    EXPECT_FALSE(fs::exists(fs::path(mem->dir->path()) / "model.safetensors"));
    auto file = safetensors::File::open((fs::path(disk->dir->path()) / "model.safetensors").string());
    ASSERT_TRUE(file.ok()) << file.error().message;
    EXPECT_FALSE(file->in_memory());
    EXPECT_TRUE(mem->weights->in_memory());
    ASSERT_TRUE(mem->weights->lazy());
    // Made straight into a caller's buffer (pack's way) or in the image when first read, each tensor is the
    // disk image's.
    ASSERT_EQ(mem->weights->tensors().size(), file->tensors().size());
    for (size_t i = 0; i < file->tensors().size(); ++i) {
      const auto& e = mem->weights->tensors()[i];
      SCOPED_TRACE(e.name);
      std::vector<std::byte> made(e.nbytes());
      mem->weights->produce(e, made);
      const auto want = file->bytes(file->tensors()[i]);
      ASSERT_EQ(made.size(), want.size());
      EXPECT_EQ(std::memcmp(made.data(), want.data(), want.size()), 0);
      // And a part at a time: steps of whole 32-element blocks (dequantized from their own blocks), of 7 bytes
      // (cut from the whole) and the tail.
      for (uint64_t step : {uint64_t(128), uint64_t(7), uint64_t(e.nbytes())}) {
        if (step == 0) continue;
        std::vector<std::byte> parts(e.nbytes());
        for (uint64_t off = 0; off < parts.size(); off += step)
          mem->weights->produce(e, std::span(parts).subspan(off, std::min<uint64_t>(step, parts.size() - off)), off);
        EXPECT_EQ(std::memcmp(parts.data(), want.data(), want.size()), 0) << "steps of " << step;
      }
      const auto read = mem->weights->bytes(e);
      EXPECT_EQ(std::memcmp(read.data(), want.data(), want.size()), 0);
    }
    const auto a = mem->weights->raw(), b = file->raw();
    ASSERT_EQ(a.size(), b.size());
    EXPECT_EQ(std::memcmp(a.data(), b.data(), a.size()), 0);
    // release() leaves an image in memory readable (there is no file to read its pages again from).
    const auto& first = mem->weights->tensors().front();
    const std::vector<std::byte> before(mem->weights->bytes(first).begin(), mem->weights->bytes(first).end());
    mem->weights->release(first);
    EXPECT_TRUE(std::equal(before.begin(), before.end(), mem->weights->bytes(first).begin()));
  }
}

// Readers that hand pages back behind themselves (the calibration forward, pack) leave an image in memory
// intact: a second read of every tensor gives the first read's values (dropped anonymous pages would read
// back as zeros).
TEST(GgufCheckpoint, ReleasingAnImageInMemoryKeepsItsValues) {
  auto g = open_checkpoint((kData / "tiny-llama" / "model.gguf").string());
  ASSERT_TRUE(g.ok()) << g.error().message;
  ASSERT_TRUE(g->files.files()[0].in_memory());
  for (ir::TensorId id = 0; id < g->model.tensors.size(); ++id) {
    SCOPED_TRACE(g->model.tensors[id].name);
    auto first = runtime::read_tensor(g->model, g->refs[id], id, /*release=*/true);
    ASSERT_TRUE(first.ok()) << first.error().message;
    g->refs[id].file->release(g->refs[id].file->bytes(*g->refs[id].entry));
    auto second = runtime::read_tensor(g->model, g->refs[id], id, /*release=*/true);
    ASSERT_TRUE(second.ok()) << second.error().message;
    EXPECT_EQ(*first, *second);
    float amax = 0;
    for (float v : *first) amax = std::max(amax, std::abs(v));
    EXPECT_GT(amax, 0.0f);
  }
}

// The forward over an evaluation set gives the same figures from the GGUF as from its checkpoint.
double reference_perplexity(const std::string& model) {
  pipeline::EvalRequest r;
  r.model = model;
  r.data = (kData / "tiny_eval.jsonl").string();
  r.threads = 1;
  auto out = pipeline::run_evaluation(r);
  EXPECT_TRUE(out.ok()) << out.error().message;
  return out.ok() ? out->result.reference_perplexity : -1;
}

TEST(GgufCheckpoint, EvaluatesAsItsCheckpoint) {
  for (const char* m : {"tiny-llama", "tiny-qwen2", "tiny-qwen3", "tiny-gemma3", "tiny-phi3", "tiny-qwen3moe"}) {
    SCOPED_TRACE(m);
    const double from_gguf = reference_perplexity((kData / m / "model.gguf").string());
    const double from_hf = reference_perplexity((kData / m / "hf").string());
    EXPECT_GT(from_hf, 1.0);
    EXPECT_EQ(std::bit_cast<uint64_t>(from_gguf), std::bit_cast<uint64_t>(from_hf)) << from_gguf << " vs " << from_hf;
  }
}

class GgufSource : public ::testing::Test {
 protected:
  void SetUp() override {
    const auto* info = ::testing::UnitTest::GetInstance()->current_test_info();
    dir_ = fs::path(FP4C_BINARY_DIR) / "test-tmp" / "gguf_checkpoint" /
           (std::string(info->name()) + "-" + std::to_string(::getpid()));
    fs::remove_all(dir_);
    fs::create_directories(dir_);
  }
  void TearDown() override {
    if (!HasFailure()) fs::remove_all(dir_);
  }
  fs::path dir_;
};

TEST_F(GgufSource, QuantizeRecordsTheSourceAndItsDequantizedTypes) {
  pipeline::QuantizeRequest r;
  r.model = (kData / "tiny-llama" / "model.gguf").string();
  r.out = (dir_ / "out").string();
  r.scheme = passes::Scheme::W4A16;
  r.threads = 1;
  auto q = pipeline::quantize(r);
  ASSERT_TRUE(q.ok()) << q.error().message;
  const auto& m = q->manifest;
  EXPECT_EQ(m.source().format(), "gguf");
  EXPECT_EQ(m.source().file(), "model.gguf");
  ASSERT_EQ(m.source().dequantized_types_size(), 5);
  EXPECT_EQ(m.source().dequantized_types(0), "Q4_0");
  EXPECT_EQ(m.source().dequantized_types(4), "Q8_0");
  ASSERT_EQ(m.inputs_size(), 1);
  EXPECT_EQ(m.inputs(0).path(), "model.gguf");
  EXPECT_EQ(m.inputs(0).bytes(), fs::file_size(r.model));
  EXPECT_TRUE(fs::exists(dir_ / "out" / "config.json"));
  EXPECT_GT(q->quantized, 0u);
  // Its embedding is Q8_0, so it is written as a bfloat16 model: every kept tensor BF16, the nearest (ties to
  // even) of the image's F32 value, and the config says so.
  EXPECT_EQ(m.source().kept_tensors_written_as(), "BF16");
  {
    std::ifstream in(dir_ / "out" / "config.json");
    const std::string config((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
    EXPECT_HAS(config, "\"bfloat16\"");
    EXPECT_EQ(config.find("float32"), std::string::npos) << config;
  }
  auto src = open_checkpoint(r.model);
  ASSERT_TRUE(src.ok()) << src.error().message;
  auto art = safetensors::File::open((dir_ / "out" / "model.safetensors").string());
  ASSERT_TRUE(art.ok()) << art.error().message;
  int kept = 0;
  for (const auto& e : art->tensors()) {
    const auto id = src->model.find(e.name);
    if (!id || src->refs[*id].entry->shape != e.shape) continue;  // a packed weight or its scales
    SCOPED_TRACE(e.name);
    ++kept;
    ASSERT_EQ(src->model.tensors[*id].dtype, DType::F32);
    EXPECT_EQ(e.dtype, DType::BF16);
    const std::vector<float> f32 = values(src->refs[*id]);
    std::vector<std::byte> want(f32.size() * 2);
    convert_from_f32(f32.data(), DType::BF16, int64_t(f32.size()), want.data());
    const auto got = art->bytes(e);
    ASSERT_EQ(got.size(), want.size());
    EXPECT_EQ(std::memcmp(got.data(), want.data(), want.size()), 0);
  }
  EXPECT_GE(kept, 3);  // the embedding and the norms
  // And evaluated against the GGUF reference.
  pipeline::EvalRequest e;
  e.model = r.model;
  e.artifact = r.out;
  e.data = (kData / "tiny_eval.jsonl").string();
  e.threads = 1;
  auto ev = pipeline::run_evaluation(e);
  ASSERT_TRUE(ev.ok()) << ev.error().message;
  EXPECT_GT(ev->result.recovery, 0.5);
  // A safetensors source records none.
  pipeline::QuantizeRequest h = r;
  h.model = (kData / "tiny-llama" / "hf").string();
  h.out = (dir_ / "out-hf").string();
  auto qh = pipeline::quantize(h);
  ASSERT_TRUE(qh.ok()) << qh.error().message;
  EXPECT_FALSE(qh->manifest.has_source());
}

// A kept F32 value that BF16 cannot hold (finite, above its largest) is a named error, not an Inf in the
// artifact, and nothing is left in --out.
TEST_F(GgufSource, AKeptValueTheWrittenDtypeCannotHoldIsRefusedByName) {
  const fs::path from = kData / "tiny-llama" / "model.gguf";
  std::ifstream in(from, std::ios::binary);
  std::string bytes((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  auto g = gguf::File::open(from.string());
  ASSERT_TRUE(g.ok()) << g.error().message;
  const gguf::TensorInfo* norm = g->find("output_norm.weight");
  ASSERT_NE(norm, nullptr);
  ASSERT_EQ(norm->type, gguf::TensorType::F32);
  const float big = 3.4e38f;  // finite in F32; BF16's largest is 3.3895e38, so it rounds to Inf
  std::memcpy(bytes.data() + g->data_offset() + norm->offset + 2 * sizeof(float), &big, sizeof big);
  const fs::path p = dir_ / "big.gguf";
  std::ofstream(p, std::ios::binary) << bytes;
  pipeline::QuantizeRequest r;
  r.model = p.string();
  r.out = (dir_ / "out").string();
  r.scheme = passes::Scheme::W4A16;
  r.threads = 1;
  auto q = pipeline::quantize(r);
  ASSERT_FALSE(q.ok());
  EXPECT_HAS(q.error().message, "tensor 'model.norm.weight'");
  EXPECT_HAS(q.error().message, "a value overflows BF16, the dtype the artifact stores this tensor in");
  EXPECT_FALSE(fs::exists(dir_ / "out"));
}

// GGUF bytes with the given metadata (string or u32 values) and F32 tensors (ne, data of numel floats).
struct Gguf {
  std::string b, kv, infos, data;
  uint64_t n_kv = 0, n_t = 0;
  static std::string str(std::string_view s) {
    uint64_t n = s.size();
    return std::string(reinterpret_cast<const char*>(&n), 8) + std::string(s);
  }
  template <typename T>
  static std::string pod(T v) { return std::string(reinterpret_cast<const char*>(&v), sizeof v); }
  Gguf& s(std::string_view k, std::string_view v) { kv += str(k) + pod(uint32_t(8)) + str(v); ++n_kv; return *this; }
  Gguf& u(std::string_view k, uint32_t v) { kv += str(k) + pod(uint32_t(4)) + pod(v); ++n_kv; return *this; }
  Gguf& f(std::string_view k, float v) { kv += str(k) + pod(uint32_t(6)) + pod(v); ++n_kv; return *this; }
  Gguf& t(std::string_view name, std::vector<uint64_t> ne) {
    uint64_t n = 1;
    infos += str(name) + pod(uint32_t(ne.size()));
    for (uint64_t d : ne) { infos += pod(d); n *= d; }
    infos += pod(uint32_t(0)) + pod(uint64_t(data.size()));
    data += std::string(n * 4, '\0');
    while (data.size() % 32) data += '\0';
    ++n_t;
    return *this;
  }
  std::string bytes() const {
    std::string out = "GGUF" + pod(uint32_t(3)) + pod(n_t) + pod(n_kv) + kv + infos;
    while (out.size() % 32) out += '\0';
    return out + data;
  }
};

Gguf tiny_llama_metadata(std::string_view arch = "llama") {
  Gguf g;
  const std::string p = std::string(arch) + ".";
  g.s("general.architecture", arch).u(p + "embedding_length", 32).u(p + "feed_forward_length", 32);
  g.u(p + "block_count", 1).u(p + "attention.head_count", 2).u(p + "context_length", 64);
  g.f(p + "attention.layer_norm_rms_epsilon", 1e-5f).u(p + "vocab_size", 16);
  return g;
}

TEST_F(GgufSource, BadSourcesAreRefusedByName) {
  auto write = [&](const std::string& name, const std::string& bytes) {
    const std::string p = (dir_ / name).string();
    std::ofstream(p, std::ios::binary) << bytes;
    return p;
  };
  auto error = [&](const std::string& path) {
    auto c = open_checkpoint(path);
    if (c.ok()) {
      ADD_FAILURE() << path << " opened";
      return std::string();
    }
    return c.error().message;
  };
  std::string p = write("falcon.gguf", tiny_llama_metadata("falcon").bytes());
  EXPECT_HAS(error(p), p + ": metadata key 'general.architecture' is 'falcon'; fp4c reads GGUF architectures llama, qwen2, qwen3, gemma3, phi3, qwen3moe");
  // Mixture-of-experts metadata: what routing needs is required, a router fp4c does not run is refused.
  p = write("moe-no-count.gguf", tiny_llama_metadata("qwen3moe").bytes());
  EXPECT_HAS(error(p), p + ": missing metadata key 'qwen3moe.expert_count'");
  p = write("moe-no-used.gguf", tiny_llama_metadata().u("llama.expert_count", 4).bytes());
  EXPECT_HAS(error(p), p + ": missing metadata key 'llama.expert_used_count'");
  p = write("moe-sigmoid.gguf", tiny_llama_metadata("qwen3moe").u("qwen3moe.expert_count", 4)
                                    .u("qwen3moe.expert_used_count", 2).u("qwen3moe.expert_gating_func", 2).bytes());
  EXPECT_HAS(error(p), p + ": metadata key 'qwen3moe.expert_gating_func' = 2: fp4c's router is a softmax (1)");
  Gguf no_eps;
  no_eps.s("general.architecture", "llama").u("llama.embedding_length", 32).u("llama.feed_forward_length", 32);
  no_eps.u("llama.block_count", 1).u("llama.attention.head_count", 2).u("llama.context_length", 64);
  p = write("noeps.gguf", no_eps.bytes());
  EXPECT_HAS(error(p), p + ": missing metadata key 'llama.attention.layer_norm_rms_epsilon'");
  Gguf mistyped = tiny_llama_metadata();
  mistyped.s("llama.rope.freq_base", "10000");
  p = write("mistyped.gguf", mistyped.bytes());
  EXPECT_HAS(error(p), "metadata key 'llama.rope.freq_base' at byte ");
  EXPECT_HAS(error(p), "is a string, not a number");
  p = write("unknown.gguf", tiny_llama_metadata().t("token_embd.weight", {32, 16}).t("blk.0.attn_qkv.weight", {32, 96}).bytes());
  EXPECT_HAS(error(p), p + ": tensor 'blk.0.attn_qkv.weight' (data at byte ");
  EXPECT_HAS(error(p), "no Hugging Face name for it in fp4c's table for GGUF architecture 'llama'");
  p = write("missing.gguf", tiny_llama_metadata().t("token_embd.weight", {32, 16}).t("output_norm.weight", {32}).bytes());
  EXPECT_HAS(error(p), "missing.gguf");   // the classification names what is missing
  const std::string whole = tiny_llama_metadata().t("token_embd.weight", {32, 16}).bytes();
  p = write("truncated.gguf", whole.substr(0, whole.size() - 8));
  EXPECT_HAS(error(p), p + ": tensor 'token_embd.weight' (info at byte ");
  EXPECT_HAS(error(p), "runs past the end of the file");
  fs::create_directories(dir_ / "two");
  write("two/a.gguf", tiny_llama_metadata().bytes());
  write("two/b.gguf", tiny_llama_metadata().bytes());
  EXPECT_HAS(error((dir_ / "two").string()), "holds 2 GGUF files (a.gguf, b.gguf); give --model the one to read");
  p = write("plain.bin", "not a model at all");
  EXPECT_HAS(error(p), p + ": not a checkpoint directory or a GGUF file");
}

}  // namespace
}  // namespace fp4c::frontend
