// fp4c-verify's speed and memory section on the CPU PerfDevice, small: the distinct NVFP4 Linear shapes
// of an artifact, a row per shape and M with both timings, speed-up and fractions of the ceilings of
// the same run, every row and serving case labelled with the device and FP4 path; the serving cases
// with the BF16 reference and the artifact side by side; recorded in verification.json and the table.
#include <gtest/gtest.h>

#include <nlohmann/json.hpp>

#include <google/protobuf/util/json_util.h>

#include <set>

#include "backends/artifact_reader.h"
#include "backends/manifest.h"
#include "backends/verify_hashes.h"
#include "frontend/checkpoint.h"
#include "test/support/tiny_checkpoint.h"
#include "tools/fp4c-verify/speed.h"
#include "tools/fp4c-verify/verify.h"

namespace fp4c::testing {
namespace {

TEST(VerifySpeed, ShapesOfTheArtifactsNvfp4LinearsOnly) {
  TempDir tmp;
  TinyShape s;
  s.intermediate = 168;   // down_proj (in 168) stays BF16; gate/up (in 64) are NVFP4
  const fs::path model = tmp.path / "model", out = tmp.path / "w4a16";
  write_checkpoint(model, s, tiny_tensors(s, std::random_device{}()));
  auto r = fp4c("quantize --quiet --model " + model.string() + " --out " + out.string());
  ASSERT_EQ(r.exit_code, 0) << r.out;
  auto ckpt = frontend::open_checkpoint(model.string());
  ASSERT_TRUE(ckpt.ok()) << ckpt.error().message;
  auto art = backends::open_artifact(out.string(), ckpt->model);
  ASSERT_TRUE(art.ok()) << art.error().message;
  const auto shapes = verify::nvfp4_linear_shapes(ckpt->model, *art);
  // q and o are 64x64, k and v 32x64 (2 KV heads of 16), gate and up 168x64; down_proj is not NVFP4.
  ASSERT_EQ(shapes.size(), 3u);
  EXPECT_EQ(shapes[0].n, 32);
  EXPECT_EQ(shapes[0].roles, (std::vector<std::string>{"k", "v"}));
  EXPECT_EQ(shapes[1].n, 64);
  EXPECT_EQ(shapes[1].k, 64);
  EXPECT_EQ(std::set<std::string>(shapes[1].roles.begin(), shapes[1].roles.end()), (std::set<std::string>{"q", "o"}));
  EXPECT_EQ(shapes[2].n, 168);
  EXPECT_EQ(shapes[2].k, 64);
  EXPECT_EQ(std::set<std::string>(shapes[2].roles.begin(), shapes[2].roles.end()),
            (std::set<std::string>{"gate", "up"}));
}

// The one run with the speed section on: small M and serving sizes so that it stays quick.
TEST(VerifySpeed, ASmallRunRecordsLabelledFigures) {
  SynthModel synth;
  // The model with 64 positions, so that one serving case below fits and the other runs past them.
  const fs::path model = synth.tmp.path / "m64";
  fs::copy(synth.model, model, fs::copy_options::recursive);
  auto config = nlohmann::json::parse(read_file(model / "config.json"));
  config["max_position_embeddings"] = 64;
  write_text(model / "config.json", config.dump(2));
  const fs::path out = synth.tmp.path / "w4a4";
  auto r = fp4c("quantize --quiet --model " + model.string() + " --calib " + synth.calib.string() + " --out " +
                out.string());
  ASSERT_EQ(r.exit_code, 0) << r.out;
  verify::VerifyRequest q;
  q.artifact = out.string();
  q.reference = model.string();
  q.eval = synth.eval.string();
  q.per_layer = false;
  q.threads = 1;   // two threads on a loaded 2-core machine stall at every barrier (20 ms each): 15 s -> 5 s
  q.repetitions = 2;
  q.decode_m = {1, 8};
  q.prefill_m = {64};
  q.serving = {{"steady-48-output-4", 48, 4, 2}, {"prefill-96-output-4", 96, 4, 1}};
  const auto o = verify::run_verification(q);
  ASSERT_EQ(o.exit_code, verify::kExitPass) << o.refused << "\n" << o.table;
  ASSERT_TRUE(o.record.has_performance());
  const auto& p = o.record.performance();
  EXPECT_EQ(p.device_info().kind(), "cpu");
  EXPECT_EQ(p.fp4_path(), "fused-dequant");
  EXPECT_EQ(p.device().rfind("cpu: ", 0), 0u) << p.device();
  EXPECT_GT(p.ceilings().bandwidth_gbs(), 0);
  EXPECT_GT(p.ceilings().bf16_tflops(), 0);
  EXPECT_FALSE(p.ceilings().how().empty());

  // The tiny preset's NVFP4 shapes (hidden 128, 4 heads, 2 KV heads, intermediate 352): k/v 64x128,
  // q/o 128x128, down 128x352, gate/up 352x128; three M each.
  ASSERT_EQ(p.matmul_size(), 4 * 3);
  std::set<std::tuple<int64_t, int64_t, int64_t>> seen;
  for (const auto& x : p.matmul()) {
    seen.insert({x.m(), x.n(), x.k()});
    EXPECT_TRUE(x.w4a4());
    EXPECT_EQ(x.phase(), x.m() == 64 ? "prefill" : "decode");
    EXPECT_EQ(x.device(), p.device());
    EXPECT_EQ(x.fp4_path().rfind("fused-dequant", 0), 0u) << x.fp4_path();
    EXPECT_EQ(x.repetitions(), 2);
    EXPECT_GT(x.bf16_seconds(), 0);
    EXPECT_GT(x.fp4_seconds(), 0);
    EXPECT_DOUBLE_EQ(x.speedup(), x.bf16_seconds() / x.fp4_seconds());
    EXPECT_DOUBLE_EQ(x.bf16_bandwidth_fraction(), x.bf16_gbs() / p.ceilings().bandwidth_gbs());
    EXPECT_DOUBLE_EQ(x.fp4_compute_fraction(), x.fp4_tflops() / p.ceilings().bf16_tflops());   // no FP4 ceiling
    EXPECT_NEAR(x.bf16_tflops(), 2.0 * x.m() * x.n() * x.k() / x.bf16_seconds() / 1e12, 1e-9 + 1e-6 * x.bf16_tflops());
    EXPECT_GT(x.modules_size(), 0);
  }
  EXPECT_EQ(seen.size(), 12u);

  ASSERT_EQ(p.serving_size(), 2);
  for (const auto& s : p.serving()) {
    EXPECT_EQ(s.device(), p.device());
    EXPECT_EQ(s.fp4_path(), "fused-dequant");
    EXPECT_EQ(s.reference().model(), "bf16-reference");
    EXPECT_EQ(s.artifact().model(), "nvfp4-artifact");
    for (const auto* run : {&s.reference(), &s.artifact()}) {
      EXPECT_GT(run->ttft_seconds(), 0);
      EXPECT_GT(run->tokens_per_second(), 0);
      EXPECT_LE(run->decode_p50_seconds(), run->decode_p99_seconds());
      EXPECT_GT(run->kv_cache_bytes(), 0u);
    }
    // Packed NVFP4 weights take less memory than BF16 ones.
    EXPECT_LT(s.artifact().weight_bytes(), s.reference().weight_bytes());
    EXPECT_EQ(s.weight_bytes_saved(), int64_t(s.reference().weight_bytes()) - int64_t(s.artifact().weight_bytes()));
    EXPECT_DOUBLE_EQ(s.ttft_speedup(), s.reference().ttft_seconds() / s.artifact().ttft_seconds());
  }
  EXPECT_EQ(p.serving(0).batch(), 2);
  EXPECT_EQ(p.serving(0).prompt(), 48);
  // A case longer than the model's positions says so; one within them does not.
  for (const auto& s : p.serving())
    EXPECT_EQ(!s.note().empty(), s.prompt() + s.output() > 64) << s.name() << ": " << s.note();
  EXPECT_NE(o.table.find("note: 100 positions per request exceed the model's max_position_embeddings 64"),
            std::string::npos) << o.table;

  // In the table and in verification.json.
  EXPECT_NE(o.table.find("speed and memory on cpu: "), std::string::npos) << o.table;
  EXPECT_NE(o.table.find("NVFP4 bought:"), std::string::npos) << o.table;
  manifest::Verification v;
  ASSERT_TRUE(google::protobuf::util::JsonStringToMessage(read_file(out / backends::kVerificationFile), &v).ok());
  EXPECT_EQ(v.performance().matmul_size(), 12);
  EXPECT_EQ(v.performance().serving(1).name(), "prefill-96-output-4");
}

}  // namespace
}  // namespace fp4c::testing
