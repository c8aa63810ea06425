// fp4c-verify refuses what it cannot vouch for, with exit code 2 and a message naming the file (and
// tensor): an artifact whose bytes disagree with its manifest, a file the manifest does not list, a
// manifest made from another model, a W4A4 artifact missing an input global scale (its manifest made
// consistent, so that only the structural check can catch it), an evaluation set with ids outside
// the vocabulary, a CUDA device where there is none, a directory that is not an artifact.
#include <gtest/gtest.h>

#include <google/protobuf/util/json_util.h>

#include <cstring>

#include "backends/manifest.h"
#include "backends/verify_hashes.h"
#include "formats/hash.h"
#include "formats/safetensors.h"
#include "test/support/tiny_checkpoint.h"
#include "test/support/verify_support.h"
#include "tools/fp4c-verify/verify.h"

namespace fp4c::testing {
namespace {

// One synthetic model quantized W4A4 (calibrated on its text) for the whole suite; each test copies
// the artifact before spoiling it.
class VerifyBadInput : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    synth = new SynthModel;
    artifact = new fs::path(synth->tmp.path / "w4a4");
    auto r = fp4c("quantize --quiet --model " + synth->model.string() + " --calib " + synth->calib.string() +
                  " --out " + artifact->string());
    ASSERT_EQ(r.exit_code, 0) << r.out;
  }
  static void TearDownTestSuite() {
    delete artifact;
    delete synth;
  }
  // A writable copy of the artifact.
  fs::path copy_artifact() {
    const fs::path dir = tmp.path / "artifact";
    fs::copy(*artifact, dir, fs::copy_options::recursive);
    for (const auto& e : fs::directory_iterator(dir))
      fs::permissions(e.path(), fs::perms::owner_write, fs::perm_options::add);
    return dir;
  }
  std::string args(const fs::path& art, const fs::path& reference, const fs::path& eval) {
    return "--no-speed --artifact " + art.string() + " --reference " + reference.string() + " --eval " +
           eval.string();
  }
  std::string args(const fs::path& art) { return args(art, synth->model, synth->eval); }

  static SynthModel* synth;
  static fs::path* artifact;
  TempDir tmp;
};
SynthModel* VerifyBadInput::synth = nullptr;
fs::path* VerifyBadInput::artifact = nullptr;

TEST_F(VerifyBadInput, ATamperedShardIsRefusedNamingIt) {
  const fs::path dir = copy_artifact();
  std::string bytes = read_file(dir / "model.safetensors");
  bytes[bytes.size() - 100] ^= 0x5a;
  write_text(dir / "model.safetensors", bytes);
  auto r = fp4c_verify(args(dir));
  EXPECT_EQ(r.exit_code, verify::kExitRefused) << r.out;
  EXPECT_NE(r.out.find("the artifact does not match its manifest"), std::string::npos) << r.out;
  EXPECT_NE(r.out.find((dir / "model.safetensors").string() + ": artifact file hash"), std::string::npos) << r.out;
  // The tensor whose bytes changed is named too.
  EXPECT_NE(r.out.find("hash"), std::string::npos) << r.out;
  EXPECT_NE(r.out.find("differs from the manifest's"), std::string::npos) << r.out;
  // The refusal is recorded, so no earlier pass can outlive it.
  const auto v = read_verification(dir / backends::kVerificationFile);
  EXPECT_EQ(v.verdict(), "refused");
  EXPECT_EQ(v.exit_code(), verify::kExitRefused);
  EXPECT_FALSE(v.hash_check().passed());
  EXPECT_GE(v.hash_check().problems_size(), 2);   // the file and the tensor
  EXPECT_FALSE(v.has_accuracy());
}

TEST_F(VerifyBadInput, AFileTheManifestDoesNotListIsRefused) {
  const fs::path dir = copy_artifact();
  write_text(dir / "extra.safetensors", "not listed");
  auto r = fp4c_verify(args(dir));
  EXPECT_EQ(r.exit_code, verify::kExitRefused) << r.out;
  EXPECT_NE(r.out.find((dir / "extra.safetensors").string() + ": file not listed in the manifest"), std::string::npos)
      << r.out;
}

// A temporary verification file left by a killed fp4c-verify is not an unlisted artifact file.
TEST_F(VerifyBadInput, ALeftoverTemporaryVerificationFileIsNotAStray) {
  const fs::path dir = copy_artifact();
  write_text(dir / "verification.json.tmp-12345", "{");
  auto r = fp4c_verify(args(dir));
  EXPECT_EQ(r.exit_code, verify::kExitPass) << r.out;
}

TEST_F(VerifyBadInput, AManifestOfAnotherModelIsRefused) {
  // Same preset and shapes, another seed: config.json is the same, the weights are not.
  const fs::path other = tmp.path / "other";
  auto s = run(tool_path("FP4C_SYNTH_BIN", "fp4c-synth") + " --preset tiny --seed 7 --out " + other.string());
  ASSERT_EQ(s.exit_code, 0) << s.out;
  auto r = fp4c_verify(args(*artifact, other, synth->eval));
  EXPECT_EQ(r.exit_code, verify::kExitRefused) << r.out;
  EXPECT_NE(r.out.find("the manifest was not made from the reference " + other.string()), std::string::npos) << r.out;
  EXPECT_NE(r.out.find((other / "model.safetensors").string() + ": reference file hash"), std::string::npos) << r.out;
  // Nothing of the artifact changed but verification.json.
  auto v = fp4c("inspect --verify " + artifact->string());
  EXPECT_EQ(v.exit_code, 0) << v.out;
}

// Rewrites dir/model.safetensors without `drop`, and makes the manifest agree (as a faulty producer's
// would), so that the hash check passes and the artifact's structure is what is refused.
void drop_tensor_consistently(const fs::path& dir, const std::string& drop) {
  const fs::path shard = dir / "model.safetensors";
  const fs::path rewritten = dir / "rewritten.tmp";
  {
    auto f = safetensors::File::open(shard.string());
    ASSERT_TRUE(f.ok()) << f.error().message;
    ASSERT_NE(f->find(drop), nullptr) << drop;
    std::vector<safetensors::TensorSpec> specs;
    for (const auto& t : f->tensors())
      if (t.name != drop) specs.push_back({t.name, t.dtype, t.shape});
    auto w = safetensors::Writer::create(rewritten.string(), specs, f->metadata());
    ASSERT_TRUE(w.ok()) << w.error().message;
    for (const auto& t : f->tensors()) {
      if (t.name == drop) continue;
      ASSERT_TRUE(w->write(f->bytes(t)).ok());
    }
    ASSERT_TRUE(w->finish().ok());
  }
  fs::rename(rewritten, shard);
  const std::string mpath = (dir / backends::kManifestFile).string();
  auto m = backends::read_manifest(mpath);
  ASSERT_TRUE(m.ok()) << m.error().message;
  uint64_t size = 0;
  auto h = hash::hash_file(shard.string(), &size);
  ASSERT_TRUE(h.ok());
  for (auto& f : *m->mutable_outputs())
    if (f.path() == "model.safetensors") {
      f.set_bytes(size);
      *f.mutable_hash() = backends::to_proto(*h);
    }
  auto* ts = m->mutable_output_tensors();
  for (int i = 0; i < ts->size(); ++i)
    if (ts->Get(i).name() == drop) {
      ts->DeleteSubrange(i, 1);
      break;
    }
  ASSERT_TRUE(backends::write_manifest(*m, mpath).ok());
  ASSERT_TRUE(backends::check_artifact_hashes(*m, dir.string()).ok());
}

TEST_F(VerifyBadInput, AW4A4ArtifactMissingAnInputGlobalScaleIsRefused) {
  const fs::path dir = copy_artifact();
  drop_tensor_consistently(dir, "model.layers.1.self_attn.o_proj.input_global_scale");
  auto r = fp4c_verify(args(dir));
  EXPECT_EQ(r.exit_code, verify::kExitRefused) << r.out;
  EXPECT_NE(r.out.find("W4A4 artifact has no input global scale for 'model.layers.1.self_attn.o_proj' (tensor "
                       "'model.layers.1.self_attn.o_proj.input_global_scale' is missing)"),
            std::string::npos)
      << r.out;
  const auto v = read_verification(dir / backends::kVerificationFile);
  EXPECT_TRUE(v.hash_check().passed());
  EXPECT_EQ(v.verdict(), "refused");
}

TEST_F(VerifyBadInput, AnEvaluationSetWithIdsOutsideTheVocabularyIsRefused) {
  const fs::path eval = tmp.path / "eval.jsonl";
  write_text(eval, "{\"input_ids\": [1, 5, 9, 12]}\n{\"input_ids\": [3, 4, 1000000, 7]}\n");
  auto r = fp4c_verify(args(*artifact, synth->model, eval));
  EXPECT_EQ(r.exit_code, verify::kExitRefused) << r.out;
  EXPECT_NE(r.out.find(eval.string()), std::string::npos) << r.out;
  EXPECT_NE(r.out.find("1000000"), std::string::npos) << r.out;
  EXPECT_NE(r.out.find("outside the vocabulary"), std::string::npos) << r.out;
}

TEST_F(VerifyBadInput, CudaWithoutAGpuIsAClearRefusal) {
  for (const std::string device : {"cuda", "cuda:3"}) {
    auto r = fp4c_verify(args(*artifact) + " --device " + device);
    if (r.exit_code == 0) GTEST_SKIP() << "this machine has a usable GPU";
    EXPECT_EQ(r.exit_code, verify::kExitRefused) << r.out;
    EXPECT_NE(r.out.find("refused: --device " + device + ": "), std::string::npos) << r.out;
    // Either this build has no CUDA, or the GPUs it sees are fewer.
    EXPECT_TRUE(r.out.find("built without CUDA") != std::string::npos || r.out.find("CUDA device") != std::string::npos ||
                r.out.find("visible") != std::string::npos)
        << r.out;
  }
  auto r = fp4c_verify(args(*artifact) + " --device tpu");
  EXPECT_EQ(r.exit_code, verify::kExitRefused) << r.out;
  EXPECT_NE(r.out.find("unknown device 'tpu' (expected cpu, cuda or cuda:N)"), std::string::npos) << r.out;
}

TEST_F(VerifyBadInput, ADirectoryWithoutAManifestIsRefusedAndNothingIsWritten) {
  auto r = fp4c_verify(args(synth->model));   // the reference itself, not an artifact
  EXPECT_EQ(r.exit_code, verify::kExitRefused) << r.out;
  EXPECT_NE(r.out.find((synth->model / backends::kManifestFile).string() + ": cannot open the manifest"),
            std::string::npos)
      << r.out;
  EXPECT_FALSE(fs::exists(synth->model / backends::kVerificationFile));
}

TEST_F(VerifyBadInput, BadOptionsAreRefusals) {
  auto r = fp4c_verify("--artifact " + artifact->string());   // no --reference, no --eval
  EXPECT_EQ(r.exit_code, verify::kExitRefused) << r.out;
  r = fp4c_verify(args(*artifact) + " --precision f16");
  EXPECT_EQ(r.exit_code, verify::kExitRefused) << r.out;
  EXPECT_NE(r.out.find("--precision"), std::string::npos) << r.out;
  r = fp4c_verify(args(*artifact) + " --batch 0");
  EXPECT_EQ(r.exit_code, verify::kExitRefused) << r.out;
  EXPECT_NE(r.out.find("--batch 0: must be at least 1"), std::string::npos) << r.out;
}

}  // namespace
}  // namespace fp4c::testing
