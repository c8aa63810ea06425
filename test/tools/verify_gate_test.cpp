// fp4c-verify on good artifacts: the hash checks pass, the accuracy is literally `fp4c eval`'s, the
// thresholds set the exit code and say which failed, verification.json (a Verification message) is
// written beside the manifest without disturbing the artifact, and the ModelOpt layout works too.
#include <gtest/gtest.h>
#include <nlohmann/json.hpp>

#include <google/protobuf/util/json_util.h>

#include "backends/manifest.h"
#include "backends/verify_hashes.h"
#include "test/support/tiny_checkpoint.h"
#include "test/support/verify_support.h"
#include "tools/fp4c-verify/verify.h"

namespace fp4c::testing {
namespace {

// A synthetic model quantized W4A4 in both layouts, once for the suite.
class VerifyGate : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    synth = new SynthModel;
    ct = new fs::path(synth->tmp.path / "ct");
    mo = new fs::path(synth->tmp.path / "mo");
    const std::string common = "quantize --quiet --model " + synth->model.string() + " --calib " + synth->calib.string();
    auto r = fp4c(common + " --out " + ct->string());
    ASSERT_EQ(r.exit_code, 0) << r.out;
    r = fp4c(common + " --format modelopt --out " + mo->string());
    ASSERT_EQ(r.exit_code, 0) << r.out;
  }
  static void TearDownTestSuite() {
    delete ct;
    delete mo;
    delete synth;
  }
  static std::string args(const fs::path& art) {
    return "--no-speed --artifact " + art.string() + " --reference " + synth->model.string() + " --eval " +
           synth->eval.string();
  }
  static SynthModel* synth;
  static fs::path *ct, *mo;
};
SynthModel* VerifyGate::synth = nullptr;
fs::path* VerifyGate::ct = nullptr;
fs::path* VerifyGate::mo = nullptr;

TEST_F(VerifyGate, PassesAndRecordsFp4cEvalsFigures) {
  auto r = fp4c_verify(args(*ct));
  ASSERT_EQ(r.exit_code, verify::kExitPass) << r.out;
  EXPECT_NE(r.out.find("hashes     match"), std::string::npos) << r.out;
  EXPECT_NE(r.out.find("\nPASS"), std::string::npos) << r.out;

  const auto v = read_verification(*ct / backends::kVerificationFile);
  EXPECT_EQ(v.tool(), "fp4c-verify");
  EXPECT_EQ(v.verdict(), "pass");
  EXPECT_EQ(v.exit_code(), 0);
  EXPECT_EQ(v.format(), "compressed-tensors");
  EXPECT_EQ(v.scheme(), "w4a4");
  EXPECT_EQ(v.device(), "cpu");
  EXPECT_TRUE(v.hash_check().passed());
  EXPECT_GT(v.hash_check().artifact_tensors(), 10);
  EXPECT_GE(v.hash_check().reference_files(), 2);   // config.json and the shard at least
  EXPECT_EQ(v.manifest_hash().hex().size(), 32u);
  EXPECT_EQ(v.eval_hash().hex().size(), 32u);
  EXPECT_NE(v.command_line().find("--no-speed"), std::string::npos);
  EXPECT_FALSE(v.has_performance());   // --no-speed
  ASSERT_TRUE(v.has_accuracy());
  const auto& a = v.accuracy();
  EXPECT_EQ(a.device(), "cpu-f32");
  EXPECT_EQ(a.eval_hash().hex(), v.eval_hash().hex());
  EXPECT_GT(a.layers_size(), 0);

  // The same figures as fp4c eval's, to the last printed digit (one definition).
  auto e = fp4c("eval --json --no-manifest --model " + synth->model.string() + " --artifact " + ct->string() +
                " --data " + synth->eval.string());
  ASSERT_EQ(e.exit_code, 0) << e.out;
  const auto j = nlohmann::json::parse(e.out);
  EXPECT_EQ(a.perplexity_reference(), j["reference_perplexity"].get<double>());
  EXPECT_EQ(a.perplexity(), j["perplexity"].get<double>());
  EXPECT_EQ(a.recovery(), j["recovery"].get<double>());
  EXPECT_EQ(a.kl_mean(), j["kl_mean"].get<double>());
  EXPECT_EQ(a.kl_median(), j["kl_median"].get<double>());
  EXPECT_EQ(a.kl_p99(), j["kl_p99"].get<double>());
  EXPECT_EQ(a.top1_agreement(), j["top1_agreement"].get<double>());
  EXPECT_EQ(int64_t(a.tokens()), j["predictions"].get<int64_t>());

  // The artifact is untouched: its manifest records no accuracy, and every hash still holds with
  // verification.json beside it.
  auto m = backends::read_manifest((*ct / backends::kManifestFile).string());
  ASSERT_TRUE(m.ok());
  EXPECT_EQ(m->accuracy_size(), 0);
  auto insp = fp4c("inspect --verify " + ct->string());
  EXPECT_EQ(insp.exit_code, 0) << insp.out;
  // A second run verifies again with the first run's verification.json present.
  EXPECT_EQ(fp4c_verify(args(*ct)).exit_code, verify::kExitPass);
}

TEST_F(VerifyGate, ThresholdsSetTheExitCodeAndSayWhichFailed) {
  // The figures of a plain run (this test may run alone, in a fresh directory).
  ASSERT_EQ(fp4c_verify(args(*ct)).exit_code, 0);
  const auto base = read_verification(*ct / backends::kVerificationFile);
  const double rec = base.accuracy().recovery(), klm = base.accuracy().kl_mean(), klp = base.accuracy().kl_p99();
  ASSERT_GT(rec, 0.5);
  ASSERT_GT(klm, 0);

  char opts[256];
  std::snprintf(opts, sizeof opts, " --min-recovery %.6f --max-kl-mean %.6f --max-kl-p99 %.6f", rec - 0.01, klm * 1.5,
                klp * 1.5);
  auto r = fp4c_verify(args(*ct) + opts);
  EXPECT_EQ(r.exit_code, verify::kExitPass) << r.out;
  auto v = read_verification(*ct / backends::kVerificationFile);
  ASSERT_EQ(v.thresholds_size(), 3);
  for (const auto& t : v.thresholds()) EXPECT_TRUE(t.passed()) << t.name();

  std::snprintf(opts, sizeof opts, " --min-recovery %.6f --max-kl-mean %.6f", rec + 0.01, klm * 1.5);
  r = fp4c_verify(args(*ct) + opts);
  EXPECT_EQ(r.exit_code, verify::kExitThreshold) << r.out;
  char expected[128];
  std::snprintf(expected, sizeof expected, "FAIL recovery %.4f < --min-recovery %g", rec, rec + 0.01);
  EXPECT_NE(r.out.find(expected), std::string::npos) << expected << "\n" << r.out;
  EXPECT_EQ(r.out.find("FAIL kl_mean"), std::string::npos) << r.out;
  v = read_verification(*ct / backends::kVerificationFile);
  EXPECT_EQ(v.verdict(), "fail");
  EXPECT_EQ(v.exit_code(), verify::kExitThreshold);

  std::snprintf(opts, sizeof opts, " --max-kl-mean %.6f --max-kl-p99 %.6f", klm * 0.5, klp * 0.5);
  r = fp4c_verify(args(*ct) + opts);
  EXPECT_EQ(r.exit_code, verify::kExitThreshold) << r.out;
  EXPECT_NE(r.out.find("FAIL kl_mean"), std::string::npos) << r.out;
  EXPECT_NE(r.out.find("FAIL kl_p99"), std::string::npos) << r.out;
  EXPECT_EQ(r.out.find("FAIL recovery"), std::string::npos) << r.out;
}

TEST_F(VerifyGate, TheModelOptLayoutVerifiesWithTheSameFigures) {
  auto r = fp4c_verify(args(*mo) + " --json");
  ASSERT_EQ(r.exit_code, verify::kExitPass) << r.out;
  manifest::Verification v;
  ASSERT_TRUE(google::protobuf::util::JsonStringToMessage(r.out, &v).ok()) << r.out;
  EXPECT_EQ(v.format(), "modelopt");
  EXPECT_TRUE(v.hash_check().passed());
  // The same codes and block scales as the compressed-tensors artifact; reciprocal global scales
  // round differently in the last bit (tools/modelopt_test: within 1e-3).
  auto c = fp4c_verify(args(*ct) + " --json");
  ASSERT_EQ(c.exit_code, 0) << c.out;
  manifest::Verification w;
  ASSERT_TRUE(google::protobuf::util::JsonStringToMessage(c.out, &w).ok());
  EXPECT_NEAR(v.accuracy().perplexity(), w.accuracy().perplexity(), 1e-3 * w.accuracy().perplexity());
  EXPECT_EQ(v.accuracy().perplexity_reference(), w.accuracy().perplexity_reference());
}

// MXFP4 artifacts (W4A4 and weights only) verify too, with fp4c eval's figures.
TEST_F(VerifyGate, Mxfp4ArtifactsVerify) {
  for (const char* scheme : {"mxfp4", "mxfp4a16"}) {
    SCOPED_TRACE(scheme);
    const fs::path out = synth->tmp.path / scheme;
    auto q = fp4c("quantize --quiet --model " + synth->model.string() + " --calib " + synth->calib.string() +
                  " --scheme " + scheme + " --out " + out.string());
    ASSERT_EQ(q.exit_code, 0) << q.out;
    auto r = fp4c_verify(args(out) + " --json");
    ASSERT_EQ(r.exit_code, verify::kExitPass) << r.out;
    manifest::Verification v;
    ASSERT_TRUE(google::protobuf::util::JsonStringToMessage(r.out, &v).ok()) << r.out;
    auto e = fp4c("eval --json --model " + synth->model.string() + " --artifact " + out.string() + " --data " +
                  synth->eval.string());
    ASSERT_EQ(e.exit_code, 0) << e.out;
    const auto j = nlohmann::json::parse(e.out);
    EXPECT_DOUBLE_EQ(v.accuracy().perplexity(), j["perplexity"].get<double>()) << e.out;
  }
}

TEST_F(VerifyGate, TheLibraryCallGivesTheRecordAndTable) {
  verify::VerifyRequest q;
  q.artifact = ct->string();
  q.reference = synth->model.string();
  q.eval = synth->eval.string();
  q.write_file = false;
  q.speed = false;
  q.per_layer = false;
  q.min_recovery = 2.0;   // recovery can never reach it
  const auto out = verify::run_verification(q);
  EXPECT_EQ(out.exit_code, verify::kExitThreshold);
  ASSERT_EQ(out.failures.size(), 1u);
  EXPECT_EQ(out.failures[0].rfind("FAIL recovery ", 0), 0u) << out.failures[0];
  EXPECT_TRUE(out.written.empty());
  EXPECT_EQ(out.record.accuracy().layers_size(), 0);
  EXPECT_NE(out.table.find("FAIL     recovery"), std::string::npos) << out.table;
  EXPECT_NE(out.table.find("accuracy on cpu-f32"), std::string::npos) << out.table;
}

TEST_F(VerifyGate, TheAccuracyRecordIsTheSameWhateverTheThreadCount) {
  verify::VerifyRequest q;
  q.artifact = ct->string();
  q.reference = synth->model.string();
  q.eval = synth->eval.string();
  q.write_file = false;
  q.speed = false;
  std::string bytes[2];
  for (int threads : {1, 2}) {
    q.threads = threads;
    const auto out = verify::run_verification(q);
    ASSERT_EQ(out.exit_code, verify::kExitPass) << out.refused;
    ASSERT_GT(out.record.accuracy().layers_size(), 0);
    bytes[threads - 1] = out.record.accuracy().SerializeAsString();
  }
  EXPECT_EQ(bytes[0], bytes[1]);
}

TEST(VerificationFile, IsWrittenWholeByRename) {
  TempDir tmp;
  manifest::Verification v;
  v.set_tool("fp4c-verify");
  v.set_verdict("pass");
  v.mutable_accuracy()->set_recovery(0.95);
  const auto path = tmp.path / backends::kVerificationFile;
  write_text(path, "an older verification");
  ASSERT_TRUE(verify::write_verification(v, path.string()).ok());
  const auto back = read_verification(path);
  EXPECT_EQ(back.verdict(), "pass");
  EXPECT_EQ(back.accuracy().recovery(), 0.95);
  int files = 0;
  for (const auto& e : fs::directory_iterator(tmp.path)) ++files, (void)e;
  EXPECT_EQ(files, 1);   // no temporary left behind
  // A directory that does not exist: an error naming the path, nothing written.
  auto st = verify::write_verification(v, (tmp.path / "missing" / "verification.json").string());
  ASSERT_FALSE(st.ok());
  EXPECT_NE(st.error().message.find("missing"), std::string::npos);
}

}  // namespace
}  // namespace fp4c::testing
