// fp4c-verify as a function: the gate a release pipeline runs after `fp4c quantize`. In order: (a) the
// artifact matches its manifest (every output file and tensor hash, no unlisted file) and the manifest
// was made from the reference checkpoint (its input hashes); (b) accuracy, exactly as `fp4c eval`
// computes it (tools/fp4c/eval_run.h), on the chosen device; (c) speed and memory on that device
// (runtime/perf.h, tools/fp4c-verify/speed.h), unless turned off. The outcome is a Verification message (formats/manifest.proto),
// written as verification.json beside the manifest, a readable table, and an exit code.
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include "base/expected.h"
#include "manifest.pb.h"
#include "runtime/perf.h"
#include "tools/common/cli.h"

namespace fp4c::verify {

// Exit codes of fp4c-verify.
inline constexpr int kExitPass = 0;        // every check and threshold passed
inline constexpr int kExitThreshold = 1;   // verified, but a --min-recovery / --max-kl-* threshold failed
inline constexpr int kExitRefused = 2;     // inputs refused: hashes, a manifest of another model, a bad
                                           // artifact or evaluation set, an unusable device, bad options

struct VerifyRequest {
  std::string artifact;                    // the artifact directory (holds fp4c-manifest.json)
  std::string reference;                   // the BF16 checkpoint it was made from
  std::string eval;                        // evaluation set, as `fp4c eval --data` takes it
  std::string device = "cpu";              // "cpu", "cuda" or "cuda:N"
  std::optional<double> min_recovery, max_kl_mean, max_kl_p99;
  tools::TokenSetFlags tokens;             // --samples, --seq-len, --seed, --packing, limits
  std::string precision = "f32";
  std::string memory_budget = "4GiB";
  int threads = 0;                         // 0: all cores
  bool per_layer = true;                   // each quantized Linear's output error too
  // Speed and memory (runtime::PerfDevice).
  bool speed = true;
  int batch = 1;                           // requests of the serving cases
  int repetitions = 10;                    // timed repetitions of each matrix multiply
  std::vector<int64_t> decode_m{1, 8, 32}, prefill_m{512, 2048};
  std::vector<runtime::ServingSpec> serving;   // empty: the two decision cases at `batch`
  std::string command_line;                // recorded as given
  bool write_file = true;                  // verification.json beside the manifest
  bool progress = false;                   // "layer i of n" on stderr
};

struct VerifyOutcome {
  manifest::Verification record;
  int exit_code = kExitRefused;
  std::vector<std::string> failures;       // e.g. "FAIL recovery 0.8725 < --min-recovery 0.9"
  std::string refused;                     // why the inputs were refused (empty otherwise)
  std::string written;                     // the verification.json written, if any
  std::string table;                       // the readable report
};

// Never fails as a value: a refusal is an outcome (exit code kExitRefused, `refused` says why), and is
// recorded in verification.json too whenever the artifact's manifest could be read, so that an
// earlier passing verification.json cannot outlive a refused run.
VerifyOutcome run_verification(const VerifyRequest& request);

// The readable report of a record.
std::string render_table(const manifest::Verification& v);

// Writes `v` as JSON (protobuf's mapping, like the manifest) to `path` via a temporary file and a rename.
Status write_verification(const manifest::Verification& v, const std::string& path);

}  // namespace fp4c::verify
