// Hidden states beyond the memory budget live in a temporary file, and the forward computes the same
// numbers from there.
#include <gtest/gtest.h>

#include <fstream>
#include <random>
#include <sstream>

#include "frontend/checkpoint.h"
#include "passes/stats.h"
#include "runtime/checkpoint_weights.h"
#include "runtime/spill.h"
#include "test/support/tiny_checkpoint.h"

namespace fp4c::testing {
namespace {

int spill_mappings() {
  std::ifstream maps("/proc/self/maps");
  std::string line;
  int n = 0;
  while (std::getline(maps, line)) n += line.find("fp4c-activations-") != std::string::npos;
  return n;
}

TEST(Spill, BeyondTheBudgetTheHiddenStatesLiveInAFile) {
  auto policy = std::make_shared<const runtime::SpillPolicy>(runtime::SpillPolicy{1024, ""});
  const int before = spill_mappings();
  {
    runtime::HiddenStates small{runtime::SpillAllocator<float>(policy)};
    small.resize(100);   // 400 bytes: on the heap
    EXPECT_EQ(spill_mappings(), before);
    runtime::HiddenStates big{runtime::SpillAllocator<float>(policy)};
    big.resize(100000);  // 400 kB: in a file
    EXPECT_EQ(spill_mappings(), before + 1);
    for (size_t i = 0; i < big.size(); ++i) big[i] = float(i);
    EXPECT_EQ(big[99999], 99999.0f);
  }
  EXPECT_EQ(spill_mappings(), before);

  runtime::SpillPolicy nowhere{1, "/nonexistent/dir"};
  runtime::Forward f([] {
    ir::ModelConfig c;
    c.hidden_size = 16; c.vocab_size = 4; c.num_hidden_layers = 1; c.num_attention_heads = 1;
    c.num_key_value_heads = 1; c.head_dim = 16; c.intermediate_size = 16; c.max_position_embeddings = 8;
    return c;
  }(), {runtime::Precision::F32, 0, nowhere});
  std::vector<float> table(64, 0.5f);
  auto acts = f.embed(table, {{1, 2, 3}});
  ASSERT_FALSE(acts.ok());
  EXPECT_NE(acts.error().message.find("/nonexistent/dir"), std::string::npos) << acts.error().message;
}

TEST(Spill, StatisticsAreTheSameFromAFile) {
  TempDir tmp;
  const uint64_t seed = std::random_device{}();
  SCOPED_TRACE("seed " + std::to_string(seed));
  TinyShape shape;
  write_checkpoint(tmp.path / "m", shape, tiny_tensors(shape, seed));
  auto ckpt = frontend::open_checkpoint((tmp.path / "m").string());
  ASSERT_TRUE(ckpt.ok()) << ckpt.error().message;
  std::mt19937_64 rng(seed);
  std::vector<std::vector<int32_t>> seqs(4, std::vector<int32_t>(33));
  for (auto& s : seqs)
    for (auto& id : s) id = int32_t(rng() % uint64_t(shape.vocab));

  auto collect = [&](uint64_t budget) {
    runtime::Forward forward(ckpt->model.config, {runtime::Precision::F32, 0, {budget, tmp.path.string()}});
    runtime::CheckpointWeights w(ckpt->model, ckpt->refs, false);
    int most = 0;   // spill mappings seen while the model runs
    auto s = passes::collect_stats(forward, w, seqs, {}, [&](int, int) { most = std::max(most, spill_mappings()); });
    EXPECT_EQ(most > 0, budget > 0);
    EXPECT_TRUE(s.ok());
    return std::move(s).value();
  };
  const auto in_memory = collect(0);
  const auto from_file = collect(64);
  ASSERT_EQ(in_memory.sites.size(), from_file.sites.size());
  for (size_t i = 0; i < in_memory.sites.size(); ++i) {
    EXPECT_EQ(in_memory.sites[i].absmax, from_file.sites[i].absmax);
    EXPECT_EQ(in_memory.sites[i].mean_square, from_file.sites[i].mean_square);
  }
}

}  // namespace
}  // namespace fp4c::testing
