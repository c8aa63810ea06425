// RoPE frequencies of each type fp4c implements, against the definitions transformers uses
// (modeling_rope_utils: default theta^(-2i/d); linear: default / factor; dynamic: default up to
// max_position_embeddings; llama3: Meta's smooth blend between the scaled and unscaled bands).
#include <gtest/gtest.h>

#include <cmath>
#include <numbers>

#include "runtime/attention.h"

namespace fp4c::runtime {
namespace {

ir::ModelConfig config(double theta, int64_t head_dim) {
  ir::ModelConfig c;
  c.rope_theta = theta;
  c.head_dim = head_dim;
  c.max_position_embeddings = 2048;
  return c;
}

TEST(Rope, DefaultLinearAndDynamicFrequencies) {
  ir::ModelConfig c = config(100000.0, 64);
  const auto def = rope_inv_freq(c);
  ASSERT_EQ(def.size(), 32u);
  for (size_t i = 0; i < def.size(); ++i) EXPECT_DOUBLE_EQ(def[i], std::pow(100000.0, -double(2 * i) / 64.0)) << i;
  c.rope_scaling.type = "linear";
  c.rope_scaling.factor = 4.0;
  const auto lin = rope_inv_freq(c);
  for (size_t i = 0; i < def.size(); ++i) EXPECT_DOUBLE_EQ(lin[i], def[i] / 4.0) << i;
  c.rope_scaling.type = "dynamic";
  EXPECT_EQ(rope_inv_freq(c), def) << "within max_position_embeddings, dynamic NTK is the default RoPE";
}

TEST(Rope, Llama3KeepsHighFrequenciesAndScalesLowOnes) {
  ir::ModelConfig c = config(500000.0, 128);
  const auto def = rope_inv_freq(c);
  c.rope_scaling = {"llama3", 8.0, 1.0, 4.0, 8192};
  const auto l3 = rope_inv_freq(c);
  for (size_t i = 0; i < def.size(); ++i) {
    const double wavelen = 2 * std::numbers::pi / def[i];
    if (wavelen < 8192.0 / 4.0) EXPECT_DOUBLE_EQ(l3[i], def[i]) << i;              // high frequencies kept
    else if (wavelen > 8192.0 / 1.0) EXPECT_DOUBLE_EQ(l3[i], def[i] / 8.0) << i;   // low ones divided
    else EXPECT_TRUE(l3[i] < def[i] && l3[i] > def[i] / 8.0) << i;                  // blended between
  }
}

}  // namespace
}  // namespace fp4c::runtime
