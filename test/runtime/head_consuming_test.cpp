// Forward::head_consuming (eval's reference-only head: lm_head's float weights freed once converted)
// gives the logits of Forward::head bit for bit, at F32 and BF16 and with a padded last chunk.
#include <gtest/gtest.h>

#include <cmath>
#include <vector>

#include "runtime/forward.h"
#include "test/support/forward_reference.h"

namespace fp4c::runtime {
namespace {

using namespace fp4c::testing::reference;

std::vector<float> logits(const Forward& fwd, const TinyModel& m, const Activations& acts, bool consuming,
                          int64_t chunk_rows) {
  const int64_t V = m.config.vocab_size;
  std::vector<float> out(size_t(acts.tokens() * V), NAN);
  auto sink = [&](int64_t first, const float* l, int64_t rows) {
    std::copy(l, l + rows * V, out.begin() + first * V);
  };
  Status st;
  if (consuming) {
    LinearParams head = m.lm_head;
    st = fwd.head_consuming(m.final_norm, std::move(head), acts, sink, chunk_rows);
    EXPECT_TRUE(head.weight.empty()) << "lm_head's float weights were not freed";
  } else {
    st = fwd.head(m.final_norm, m.lm_head, acts, sink, chunk_rows);
  }
  EXPECT_TRUE(st.ok()) << st.error().message;
  return out;
}

TEST(HeadConsuming, SameLogitsAsHead) {
  const TinyModel m = tiny_model(false, 7);
  const auto seqs = tiny_sequences(m.config.vocab_size);
  for (Precision p : {Precision::F32, Precision::BF16}) {
    Forward fwd(m.config, {p});
    auto acts = fwd.embed(m.embedding, seqs);
    ASSERT_TRUE(acts.ok()) << acts.error().message;
    for (int l = 0; l < m.config.num_hidden_layers; ++l) ASSERT_TRUE(fwd.layer(l, m.layers[size_t(l)], *acts).ok());
    for (int64_t chunk : {int64_t(7), int64_t(256)}) {
      SCOPED_TRACE(std::string(precision_name(p)) + ", chunks of " + std::to_string(chunk));
      const auto want = logits(fwd, m, *acts, false, chunk);
      const auto got = logits(fwd, m, *acts, true, chunk);
      EXPECT_EQ(got, want);
    }
  }
}

}  // namespace
}  // namespace fp4c::runtime
