// Checks that an artifact directory is what its manifest says it is (every output file and tensor
// hash, no file the manifest does not list) and that the manifest was made from a given reference
// checkpoint (its input hashes equal the reference directory's files). `fp4c inspect --verify` and
// fp4c-verify both call these.
#pragma once

#include <string>
#include <vector>

#include "manifest.pb.h"

namespace fp4c::backends {

// Written beside the manifest by fp4c-verify; not an output of the artifact, so not listed in the
// manifest and not a stray file.
inline constexpr const char* kVerificationFile = "verification.json";

struct HashCheck {
  int files = 0;                       // files hashed
  int tensors = 0;                     // tensors hashed
  std::vector<std::string> problems;   // one sentence each, naming the file (and tensor)
  bool ok() const { return problems.empty(); }
};

// Recomputes every output file hash (and size) and every output tensor hash of `m` in `dir`, and
// reports files in `dir` the manifest does not list (besides the manifest, kVerificationFile and the
// temporary "verification.json.tmp-PID" a killed fp4c-verify may leave).
HashCheck check_artifact_hashes(const manifest::Manifest& m, const std::string& dir);

// Recomputes the hash of every input file the manifest records, in `reference_dir`, and reports
// reference checkpoint files (config.json, the index, every *.safetensors) the manifest does not
// record: a manifest made from another checkpoint fails one or the other.
HashCheck check_reference_inputs(const manifest::Manifest& m, const std::string& reference_dir);

}  // namespace fp4c::backends
