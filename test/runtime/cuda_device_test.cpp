// Asking for CUDA where it cannot run: without a GPU (or without a driver, or in a build without CUDA)
// every entry point is an error value with a clear message, never a crash. Runs in CI (no GPU there);
// on a machine with a GPU it checks the out-of-range device instead.
#include <gtest/gtest.h>

#include "runtime/cuda/cuda_api.h"
#include "runtime/device.h"

namespace fp4c::runtime {
namespace {

ir::ModelConfig small_config() {
  ir::ModelConfig c;
  c.architecture = "LlamaForCausalLM";
  c.hidden_size = 64;
  c.intermediate_size = 96;
  c.num_hidden_layers = 1;
  c.num_attention_heads = 4;
  c.num_key_value_heads = 2;
  c.head_dim = 16;
  c.vocab_size = 80;
  return c;
}

TEST(CudaDevice, NoUsableGpuIsAClearError) {
  auto count = cuda::device_count();
  if (count.ok()) GTEST_SKIP() << *count << " CUDA device(s) present";
  const std::string why = count.error().message;
  std::printf("cuda::device_count(): %s\n", why.c_str());
  EXPECT_FALSE(why.empty());
  if (cuda::built())
    EXPECT_NE(why.find("no usable CUDA device"), std::string::npos) << why;
  else
    EXPECT_NE(why.find("built without CUDA"), std::string::npos) << why;
  EXPECT_EQ(cuda_status(), why);

  for (const char* device : {"cuda", "cuda:0", "cuda:3"}) {
    auto engine = make_engine(device, small_config(), {});
    ASSERT_FALSE(engine.ok()) << device;
    EXPECT_EQ(engine.error().message, why) << device;
  }
  auto direct = cuda::make_engine(0, small_config(), {});
  ASSERT_FALSE(direct.ok());
  EXPECT_EQ(direct.error().message, why);
  auto perf = cuda::make_perf_device(0);
  ASSERT_FALSE(perf.ok());
  EXPECT_EQ(perf.error().message, why);
  // And asking again gives the same answer (nothing sticky broke).
  EXPECT_EQ(cuda::device_count().error().message, why);
}

TEST(CudaDevice, BadDeviceNamesAndIndices) {
  EXPECT_EQ(make_engine("cuda:x", small_config(), {}).error().message,
            "unknown device 'cuda:x' (expected cpu, cuda or cuda:N)");
  auto count = cuda::device_count();
  if (!count.ok()) GTEST_SKIP() << count.error().message;
  auto engine = make_engine("cuda:" + std::to_string(*count), small_config(), {});
  ASSERT_FALSE(engine.ok());
  EXPECT_NE(engine.error().message.find("visible"), std::string::npos) << engine.error().message;
  EXPECT_FALSE(cuda::make_engine(*count, small_config(), {}).ok());
  EXPECT_FALSE(cuda::make_perf_device(-1).ok());
}

}  // namespace
}  // namespace fp4c::runtime
