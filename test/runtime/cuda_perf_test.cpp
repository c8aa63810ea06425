// The CUDA perf device (runtime/cuda/perf.cu) on a GPU: info, ceilings, one matrix multiply of each
// kind and a short serving run on a tiny model, checked for sane, consistent figures. Labelled `gpu`
// (left out of CI); skips when cuda::device_count() fails.
#include <gtest/gtest.h>

#include "runtime/cuda/cuda_api.h"
#include "test/support/forward_reference.h"

namespace fp4c::runtime {
namespace {

using namespace fp4c::testing::reference;

class TinySource final : public WeightSource {
 public:
  explicit TinySource(const TinyModel& m) : m_(m) {}
  Expected<std::vector<float>> embedding() override { return m_.embedding; }
  Expected<LayerParams> layer(int index) override { return m_.layers.at(size_t(index)); }
  Expected<std::vector<float>> final_norm() override { return m_.final_norm; }
  Expected<LinearParams> lm_head() override { return m_.lm_head; }

 private:
  const TinyModel& m_;
};

std::unique_ptr<PerfDevice> perf_device() {
  auto p = cuda::make_perf_device(0);
  EXPECT_TRUE(p.ok()) << p.error().message;
  return p.ok() ? std::move(*p) : nullptr;
}

#define SKIP_WITHOUT_GPU()                                                          \
  do {                                                                              \
    auto n = cuda::device_count();                                                  \
    if (!n.ok()) GTEST_SKIP() << "no GPU: " << n.error().message;                   \
  } while (0)

TEST(CudaPerf, InfoAndCeilings) {
  SKIP_WITHOUT_GPU();
  auto perf = perf_device();
  ASSERT_TRUE(perf);
  const DeviceInfo info = perf->info();
  EXPECT_EQ(info.kind, "cuda");
  EXPECT_FALSE(info.name.empty());
  EXPECT_GE(info.compute_capability, 70);
  EXPECT_GT(info.threads, 0);
  EXPECT_GT(info.memory_total, info.memory_free);
  EXPECT_EQ(info.fp4_path, info.compute_capability >= 100 ? "native" : "emulated");
  auto c = perf->ceilings();
  ASSERT_TRUE(c.ok()) << c.error().message;
  std::printf("%s sm_%d: %.0f GB/s, BF16 %.1f TFLOP/s, FP4 %.1f TFLOP/s (%s)\n", info.name.c_str(),
              info.compute_capability, c->bandwidth_gbs, c->bf16_tflops, c->fp4_tflops, c->how.c_str());
  EXPECT_GT(c->bandwidth_gbs, 100);
  EXPECT_GT(c->bf16_tflops, 10);
  if (info.compute_capability < 100) {
    EXPECT_EQ(c->fp4_tflops, 0);
  }
}

TEST(CudaPerf, MatmulBothPaths) {
  SKIP_WITHOUT_GPU();
  auto perf = perf_device();
  ASSERT_TRUE(perf);
  for (bool w4a4 : {false, true})
    for (int64_t m : {1, 512}) {
      auto f = perf->matmul({m, 1024, 2048, w4a4}, 5);
      ASSERT_TRUE(f.ok()) << f.error().message;
      std::printf("m %lld w4a4 %d: BF16 %.1f us (%.0f GB/s), NVFP4 %.1f us (%.0f GB/s, %s)\n", (long long)m, int(w4a4),
                  f->bf16_seconds * 1e6, f->bf16_gbs, f->fp4_seconds * 1e6, f->fp4_gbs, f->fp4_path.c_str());
      EXPECT_GT(f->bf16_seconds, 0);
      EXPECT_GT(f->fp4_seconds, 0);
      EXPECT_NEAR(f->bf16_tflops, 2.0 * double(m) * 1024 * 2048 / f->bf16_seconds / 1e12, 1e-9);
      EXPECT_EQ(f->repetitions, 5);
    }
  EXPECT_FALSE(perf->matmul({1, 64, 40, false}, 3).ok());  // k % 16 != 0
}

TEST(CudaPerf, ServeATinyModel) {
  SKIP_WITHOUT_GPU();
  auto perf = perf_device();
  ASSERT_TRUE(perf);
  TinyModel m = tiny_model(false, 21);
  TinySource source(m);
  const ServingSpec spec{"steady-16-output-6", 16, 6, 3};
  auto f = perf->serve(source, m.config, spec);
  ASSERT_TRUE(f.ok()) << f.error().message;
  EXPECT_GT(f->ttft_seconds, 0);
  EXPECT_GT(f->decode_p50_seconds, 0);
  EXPECT_LE(f->decode_p50_seconds, f->decode_p95_seconds);
  EXPECT_LE(f->decode_p95_seconds, f->decode_p99_seconds);
  EXPECT_GT(f->tokens_per_second, 0);
  EXPECT_NEAR(f->tokens_per_second / f->requests_per_second, 6.0, 1e-9);
  const ir::ModelConfig& c = m.config;
  EXPECT_EQ(f->kv_cache_bytes, uint64_t(2 * c.num_hidden_layers * 3 * (16 + 6) * c.num_key_value_heads * c.head_dim * 4));
  EXPECT_GT(f->weight_bytes, 0u);
  EXPECT_GT(f->memory_used, 0u);
  ServingSpec bad = spec;
  bad.batch = 0;
  EXPECT_FALSE(perf->serve(source, m.config, bad).ok());
}

}  // namespace
}  // namespace fp4c::runtime
