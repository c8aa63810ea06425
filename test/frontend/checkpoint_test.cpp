#include "frontend/checkpoint.h"

#include <gtest/gtest.h>

#include <cstring>
#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>

namespace fp4c::frontend {
namespace {

namespace fs = std::filesystem;
using nlohmann::json;

const std::string kStories = std::string(FP4C_SHARED_DIR) + "/models/stories260K";

struct Tensor {
  std::string name;
  std::vector<int64_t> shape;
};

// A tiny checkpoint directory written byte by byte (not with our own writer): config.json and a
// BF16 model.safetensors holding `tensors` in the given order, filled with a counter.
class TinyCheckpoint {
 public:
  explicit TinyCheckpoint(const std::string& name) : dir_(testing::TempDir() + "fp4c_" + name) {
    fs::remove_all(dir_);
    fs::create_directories(dir_);
  }
  ~TinyCheckpoint() { fs::remove_all(dir_); }
  const std::string& dir() const { return dir_; }

  void write_config(const json& config) const {
    std::ofstream(dir_ + "/config.json") << config.dump(2);
  }

  void write_tensors(const std::vector<Tensor>& tensors,
                     const std::string& file = "model.safetensors") const {
    json header = {{"__metadata__", {{"format", "pt"}}}};
    uint64_t offset = 0;
    for (const Tensor& t : tensors) {
      uint64_t n = 2;
      for (int64_t d : t.shape) n *= uint64_t(d);
      header[t.name] = {
          {"dtype", "BF16"}, {"shape", t.shape}, {"data_offsets", {offset, offset + n}}};
      offset += n;
    }
    std::string text = header.dump();
    while (text.size() % 8) text += ' ';
    std::ofstream out(dir_ + "/" + file, std::ios::binary);
    uint64_t len = text.size();
    char le[8];
    for (int i = 0; i < 8; ++i) le[i] = char((len >> (8 * i)) & 0xff);
    out.write(le, 8);
    out << text;
    for (uint64_t i = 0; i < offset; ++i) out.put(char(i % 251));
  }

 private:
  std::string dir_;
};

json tiny_config() {
  return {{"architectures", {"LlamaForCausalLM"}},
          {"hidden_size", 16},
          {"intermediate_size", 32},
          {"num_hidden_layers", 1},
          {"num_attention_heads", 2},
          {"num_key_value_heads", 1},
          {"vocab_size", 8},
          {"max_position_embeddings", 64},
          {"rms_norm_eps", 1e-5},
          {"tie_word_embeddings", true}};
}

// One layer of tiny_config(), in a deliberately unsorted order.
std::vector<Tensor> tiny_tensors() {
  const std::string p = "model.layers.0.";
  return {{"model.norm.weight", {16}},
          {p + "mlp.down_proj.weight", {16, 32}},
          {"model.embed_tokens.weight", {8, 16}},
          {p + "self_attn.q_proj.weight", {16, 16}},
          {p + "self_attn.k_proj.weight", {8, 16}},
          {p + "self_attn.v_proj.weight", {8, 16}},
          {p + "self_attn.o_proj.weight", {16, 16}},
          {p + "mlp.gate_proj.weight", {32, 16}},
          {p + "mlp.up_proj.weight", {32, 16}},
          {p + "input_layernorm.weight", {16}},
          {p + "post_attention_layernorm.weight", {16}}};
}

TEST(OpenCheckpoint, Stories260K) {
  if (!fs::exists(kStories + "/model.safetensors")) GTEST_SKIP() << kStories << " is absent";
  auto ck = open_checkpoint(kStories);
  ASSERT_TRUE(ck.ok()) << ck.error().message;
  const ir::Model& m = ck->model;
  EXPECT_EQ(ck->dir, kStories);
  EXPECT_EQ(m.config.architecture, "LlamaForCausalLM");
  EXPECT_EQ(m.config.intermediate_size, 172);
  EXPECT_EQ(m.config.num_hidden_layers, 5);
  EXPECT_TRUE(m.config.tie_word_embeddings);
  EXPECT_TRUE(m.tied_lm_head);
  EXPECT_FALSE(m.find("lm_head.weight"));
  EXPECT_EQ(m.tensors.size(), size_t(1 + 5 * 9 + 1));
  EXPECT_EQ(m.fused_groups.size(), 10u);
  EXPECT_EQ(m.sites.size(), 10u);
  EXPECT_EQ(m.linear_weights().size(), size_t(5 * 7));
  EXPECT_FALSE(ck->files.sharded());

  ASSERT_EQ(ck->refs.size(), m.tensors.size());
  for (size_t i = 0; i < m.tensors.size(); ++i) {
    const auto& t = m.tensors[i];
    const auto& ref = ck->refs[i];
    ASSERT_NE(ref.file, nullptr);
    ASSERT_NE(ref.entry, nullptr);
    EXPECT_EQ(ref.entry->name, t.name);
    EXPECT_EQ(ref.entry->shape, t.shape);
    EXPECT_EQ(t.dtype, DType::BF16);
    int64_t numel = 1;
    for (int64_t d : t.shape) numel *= d;
    EXPECT_EQ(ref.file->bytes(*ref.entry).size(), size_t(numel) * 2);
  }
  // The checkpoint's own order: the embedding is stored first, the final norm last.
  EXPECT_EQ(m.tensors.front().name, "model.embed_tokens.weight");
  EXPECT_EQ(m.tensors.back().name, "model.norm.weight");
  const auto& down = m.tensors[*m.find("model.layers.4.mlp.down_proj.weight")];
  EXPECT_EQ(down.role, ir::Role::Down);
  EXPECT_EQ(down.layer, 4);
  EXPECT_EQ(down.shape, (std::vector<int64_t>{64, 172}));
  const auto& k = m.tensors[*m.find("model.layers.0.self_attn.k_proj.weight")];
  EXPECT_EQ(k.shape, (std::vector<int64_t>{32, 64}));
}

TEST(OpenCheckpoint, RefsFollowTheModelAfterMoves) {
  TinyCheckpoint ck("checkpoint_test_refs");
  ck.write_config(tiny_config());
  ck.write_tensors(tiny_tensors());
  auto opened = open_checkpoint(ck.dir());
  ASSERT_TRUE(opened.ok()) << opened.error().message;
  LoadedCheckpoint moved = std::move(opened).value();
  const ir::Model& m = moved.model;
  ASSERT_EQ(m.tensors.size(), tiny_tensors().size());
  EXPECT_TRUE(m.tied_lm_head);
  ASSERT_EQ(moved.refs.size(), m.tensors.size());
  for (size_t i = 0; i < m.tensors.size(); ++i) {
    EXPECT_EQ(m.tensors[i].name, tiny_tensors()[i].name);  // the file's order, not sorted by name
    EXPECT_EQ(moved.refs[i].entry->name, m.tensors[i].name);
    EXPECT_EQ(moved.refs[i].file, &moved.files.files()[0]);
  }
  // The data are views into the mapping: the first byte of each tensor is its offset mod 251.
  const auto& norm = moved.refs[*m.find("model.norm.weight")];
  auto bytes = norm.file->bytes(*norm.entry);
  ASSERT_EQ(bytes.size(), 32u);
  EXPECT_EQ(uint8_t(bytes[0]), uint8_t(norm.entry->begin % 251));
}

TEST(OpenCheckpoint, Sharded) {
  TinyCheckpoint ck("checkpoint_test_sharded");
  ck.write_config(tiny_config());
  auto tensors = tiny_tensors();
  std::vector<Tensor> first(tensors.begin(), tensors.begin() + 5),
      second(tensors.begin() + 5, tensors.end());
  ck.write_tensors(first, "model-00001-of-00002.safetensors");
  ck.write_tensors(second, "model-00002-of-00002.safetensors");
  json index = {{"metadata", {{"total_size", 1234}}}, {"weight_map", json::object()}};
  for (const auto& t : first) index["weight_map"][t.name] = "model-00001-of-00002.safetensors";
  for (const auto& t : second) index["weight_map"][t.name] = "model-00002-of-00002.safetensors";
  std::ofstream(ck.dir() + "/model.safetensors.index.json") << index.dump(2);

  auto opened = open_checkpoint(ck.dir());
  ASSERT_TRUE(opened.ok()) << opened.error().message;
  EXPECT_TRUE(opened->files.sharded());
  ASSERT_EQ(opened->files.files().size(), 2u);
  const ir::Model& m = opened->model;
  ASSERT_EQ(m.tensors.size(), tensors.size());
  ASSERT_EQ(opened->refs.size(), tensors.size());
  for (size_t i = 0; i < m.tensors.size(); ++i) {
    EXPECT_EQ(opened->refs[i].entry->name, m.tensors[i].name);
    const auto* want = &opened->files.files()[0];
    if (i >= first.size()) want = &opened->files.files()[1];
    EXPECT_EQ(opened->refs[i].file, want) << m.tensors[i].name;
  }
}

TEST(OpenCheckpointError, MissingDirectory) {
  auto ck = open_checkpoint("/nonexistent/fp4c/model");
  ASSERT_FALSE(ck.ok());
  EXPECT_EQ(ck.error().message, "/nonexistent/fp4c/model: not a checkpoint directory");
}

TEST(OpenCheckpointError, MissingConfig) {
  TinyCheckpoint ck("checkpoint_test_noconfig");
  ck.write_tensors(tiny_tensors());
  auto opened = open_checkpoint(ck.dir());
  ASSERT_FALSE(opened.ok());
  EXPECT_NE(opened.error().message.find(ck.dir() + "/config.json: cannot open"), std::string::npos)
      << opened.error().message;
}

TEST(OpenCheckpointError, BadConfig) {
  TinyCheckpoint ck("checkpoint_test_badconfig");
  json c = tiny_config();
  c.erase("vocab_size");
  ck.write_config(c);
  ck.write_tensors(tiny_tensors());
  auto opened = open_checkpoint(ck.dir());
  ASSERT_FALSE(opened.ok());
  EXPECT_EQ(opened.error().message, ck.dir() + "/config.json: missing required key 'vocab_size'");
}

TEST(OpenCheckpointError, NoSafetensors) {
  TinyCheckpoint ck("checkpoint_test_noweights");
  ck.write_config(tiny_config());
  auto opened = open_checkpoint(ck.dir());
  ASSERT_FALSE(opened.ok());
  EXPECT_NE(opened.error().message.find(ck.dir()), std::string::npos) << opened.error().message;
}

TEST(OpenCheckpointError, UnknownTensor) {
  TinyCheckpoint ck("checkpoint_test_unknown");
  ck.write_config(tiny_config());
  auto tensors = tiny_tensors();
  tensors.push_back({"model.layers.0.mlp.experts.0.weight", {4}});
  ck.write_tensors(tensors);
  auto opened = open_checkpoint(ck.dir());
  ASSERT_FALSE(opened.ok());
  EXPECT_EQ(opened.error().message, ck.dir() +
                                        ": unknown tensor 'model.layers.0.mlp.experts.0.weight'"
                                        " (not in the LlamaForCausalLM table)");
}

TEST(OpenCheckpointError, ShapeMismatch) {
  TinyCheckpoint ck("checkpoint_test_shape");
  ck.write_config(tiny_config());
  auto tensors = tiny_tensors();
  tensors[1].shape = {32, 16};  // down_proj stored transposed
  ck.write_tensors(tensors);
  auto opened = open_checkpoint(ck.dir());
  ASSERT_FALSE(opened.ok());
  EXPECT_EQ(opened.error().message, ck.dir() +
                                        ": tensor 'model.layers.0.mlp.down_proj.weight' has "
                                        "shape [32, 16], expected [16, 32]");
}

}  // namespace
}  // namespace fp4c::frontend
