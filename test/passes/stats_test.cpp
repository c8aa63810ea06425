// The stats pass: statistics equal a direct computation over the hook's inputs, the file round-trips,
// and a corrupt file is an error.
#include <gtest/gtest.h>

#include <cmath>
#include <fstream>
#include <random>

#include "frontend/checkpoint.h"
#include "passes/stats.h"
#include "runtime/checkpoint_weights.h"
#include "test/support/tiny_checkpoint.h"

namespace fp4c::testing {
namespace {

TEST(StatsPass, MatchesADirectComputationOfEveryLinearInput) {
  TempDir tmp;
  const uint64_t seed = std::random_device{}();
  SCOPED_TRACE("seed " + std::to_string(seed));
  TinyShape shape;
  write_checkpoint(tmp.path / "m", shape, tiny_tensors(shape, seed));
  auto ckpt = frontend::open_checkpoint((tmp.path / "m").string());
  ASSERT_TRUE(ckpt.ok()) << ckpt.error().message;

  std::mt19937_64 rng(seed);
  std::vector<std::vector<int32_t>> seqs;
  for (int s = 0; s < 3; ++s) {
    std::vector<int32_t> ids(size_t(5 + 7 * s));
    for (auto& id : ids) id = int32_t(rng() % uint64_t(shape.vocab));
    seqs.push_back(ids);
  }

  runtime::Forward forward(ckpt->model.config, {});
  // What the hooks see, kept whole, to compute the statistics the slow obvious way.
  std::map<std::pair<int, ir::Role>, std::vector<float>> seen;
  std::map<std::pair<int, ir::Role>, int64_t> cols;
  {
    runtime::CheckpointWeights w(ckpt->model, ckpt->refs, false);
    auto emb = w.embedding();
    ASSERT_TRUE(emb.ok());
    auto acts = forward.embed(*emb, seqs);
    ASSERT_TRUE(acts.ok());
    for (int i = 0; i < shape.layers; ++i) {
      auto p = w.layer(i);
      ASSERT_TRUE(p.ok());
      ASSERT_TRUE(forward.layer(i, *p, *acts, [&](const runtime::LinearInput& in) {
        auto& v = seen[{in.layer, in.role}];
        v.insert(v.end(), in.x, in.x + in.rows * in.cols);
        cols[{in.layer, in.role}] = in.cols;
      }).ok());
    }
  }

  runtime::CheckpointWeights w(ckpt->model, ckpt->refs, false);
  auto stats = passes::collect_stats(forward, w, seqs, {.second_moments = true});
  ASSERT_TRUE(stats.ok()) << stats.error().message;
  ASSERT_EQ(stats->sites.size(), size_t(4 * shape.layers));
  for (const auto& s : stats->sites) {
    const auto& x = seen.at({s.layer, s.role});
    const int64_t c = cols.at({s.layer, s.role});
    const int64_t rows = int64_t(x.size()) / c;
    ASSERT_EQ(s.tokens, rows);
    ASSERT_EQ(s.cols(), c);
    for (int64_t j = 0; j < c; ++j) {
      float amax = 0, lo = INFINITY, hi = -INFINITY;
      double ms = 0;
      for (int64_t r = 0; r < rows; ++r) {
        const float v = x[size_t(r * c + j)];
        amax = std::max(amax, std::fabs(v));
        lo = std::min(lo, v);
        hi = std::max(hi, v);
        ms += double(v) * v;
      }
      EXPECT_EQ(s.absmax[size_t(j)], amax);
      EXPECT_EQ(s.min[size_t(j)], lo);
      EXPECT_EQ(s.max[size_t(j)], hi);
      EXPECT_NEAR(s.mean_square[size_t(j)], ms / double(rows), 1e-9 * (ms / double(rows)) + 1e-30);
    }
    // Second moments: a few entries against the direct sum, and symmetry.
    for (int64_t a : {int64_t(0), c / 3, c - 1})
      for (int64_t b : {int64_t(0), c / 2, c - 1}) {
        double m = 0;
        for (int64_t r = 0; r < rows; ++r) m += double(x[size_t(r * c + a)]) * x[size_t(r * c + b)];
        EXPECT_NEAR(s.second_moment[size_t(a * c + b)], m / double(rows), 1e-9 * std::fabs(m / double(rows)) + 1e-12);
        EXPECT_EQ(s.second_moment[size_t(a * c + b)], s.second_moment[size_t(b * c + a)]);
      }
  }

  // Round trip through the file, and a corrupt file.
  stats->model_key = "m";
  stats->calibration_key = "c";
  const std::string path = (tmp.path / "s.fp4c-stats").string();
  ASSERT_TRUE(passes::save_stats(*stats, path).ok());
  auto back = passes::load_stats(path);
  ASSERT_TRUE(back.ok()) << back.error().message;
  EXPECT_EQ(back->model_key, "m");
  ASSERT_EQ(back->sites.size(), stats->sites.size());
  for (size_t i = 0; i < back->sites.size(); ++i) {
    EXPECT_EQ(back->sites[i].absmax, stats->sites[i].absmax);
    EXPECT_EQ(back->sites[i].mean_square, stats->sites[i].mean_square);
    EXPECT_EQ(back->sites[i].second_moment, stats->sites[i].second_moment);
    EXPECT_EQ(back->sites[i].role, stats->sites[i].role);
  }
  std::string bytes = read_file(path);
  bytes[bytes.size() / 2] ^= 0x55;
  write_text(path, bytes);
  auto bad = passes::load_stats(path);
  ASSERT_FALSE(bad.ok());
  EXPECT_NE(bad.error().message.find(path), std::string::npos);
}

}  // namespace
}  // namespace fp4c::testing
