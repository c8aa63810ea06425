// The stats pass's input second moments X^T X / n: equal to a plain float64 computation on the inputs
// the runtime hands its hooks, symmetric, and the same at 1 and 2 threads.
#include <gtest/gtest.h>
#include <omp.h>

#include <cmath>
#include <map>
#include <random>

#include "frontend/checkpoint.h"
#include "passes/stats.h"
#include "runtime/checkpoint_weights.h"
#include "test/support/tiny_checkpoint.h"
#include "test/support/tiny_runtime.h"

namespace fp4c::testing {
namespace {

TEST(SecondMoments, EqualAPlainComputationAndDoNotDependOnThreads) {
  const uint64_t seed = std::random_device{}();
  SCOPED_TRACE("seed " + std::to_string(seed));
  TempDir tmp;
  TinyShape shape;
  shape.intermediate = 336;   // more columns than one tile of the kernel handles at once
  write_checkpoint(tmp.path / "m", shape, tiny_tensors(shape, seed));
  auto ckpt = frontend::open_checkpoint((tmp.path / "m").string());
  ASSERT_TRUE(ckpt.ok()) << ckpt.error().message;
  // More tokens than one tile of rows (256).
  std::vector<std::vector<int32_t>> seqs;
  std::mt19937_64 rng(seed);
  for (int s = 0; s < 6; ++s) {
    std::vector<int32_t> ids(size_t(50 + 13 * s));
    for (auto& id : ids) id = int32_t(rng() % uint64_t(shape.vocab));
    seqs.push_back(ids);
  }
  runtime::Forward forward(ckpt->model.config, {});
  runtime::CheckpointWeights w(ckpt->model, ckpt->refs, false);

  // The inputs of every site, as the hooks see them.
  std::map<std::pair<int, ir::Role>, std::pair<std::vector<float>, int64_t>> inputs;
  auto acts = forward.embed(w, seqs);
  ASSERT_TRUE(acts.ok());
  for (int l = 0; l < shape.layers; ++l) {
    auto p = w.layer(l);
    ASSERT_TRUE(p.ok());
    ASSERT_TRUE(forward
                    .layer(l, *p, *acts,
                           [&](const runtime::LinearInput& in) {
                             inputs[{in.layer, in.role}] = {std::vector<float>(in.x, in.x + in.rows * in.cols), in.cols};
                           })
                    .ok());
  }

  const int saved = omp_get_max_threads();
  std::vector<passes::ActivationStats> runs;
  for (int threads : {1, 2}) {
    omp_set_num_threads(threads);
    auto st = passes::collect_stats(forward, w, seqs, {.second_moments = true});
    ASSERT_TRUE(st.ok()) << st.error().message;
    runs.push_back(std::move(*st));
  }
  omp_set_num_threads(saved);

  for (const auto& site : runs[0].sites) {
    SCOPED_TRACE("layer " + std::to_string(site.layer) + " " + std::string(ir::role_name(site.role)));
    const auto& [x, cols] = inputs.at({site.layer, site.role});
    const int64_t n = int64_t(x.size()) / cols;
    ASSERT_EQ(site.second_moment.size(), size_t(cols * cols));
    ASSERT_GT(n, 256);
    double worst = 0;
    for (int64_t i = 0; i < cols; ++i)
      for (int64_t j = 0; j < cols; ++j) {
        double ref = 0, scale = 0;
        for (int64_t r = 0; r < n; ++r) {
          ref += double(x[size_t(r * cols + i)]) * double(x[size_t(r * cols + j)]);
          scale += std::fabs(double(x[size_t(r * cols + i)]) * double(x[size_t(r * cols + j)]));
        }
        ref /= double(n);
        scale /= double(n);
        const double got = site.second_moment[size_t(i * cols + j)];
        worst = std::max(worst, std::fabs(got - ref) / std::max(scale, 1e-300));
        ASSERT_EQ(got, site.second_moment[size_t(j * cols + i)]);
      }
    EXPECT_LT(worst, 1e-12);   // float64 sums in another order
    const auto* other = runs[1].find(site.layer, site.role);
    ASSERT_NE(other, nullptr);
    EXPECT_EQ(site.second_moment, other->second_moment);
  }
}

}  // namespace
}  // namespace fp4c::testing
