// What fp4c and fp4c-verify share at the command-line edge: the command line for the manifest, and
// the options of a calibration or evaluation set, parsed into pipeline::TokenSetOptions.
#pragma once

#include <CLI/CLI.hpp>

#include <cstdint>
#include <string>

#include "base/expected.h"
#include "pipeline/pass.h"
#include "pipeline/token_sets.h"

namespace fp4c::tools {

struct CommandLine {
  int argc;
  char** argv;
  std::string joined() const;   // for the manifest
};

// The token-set options as typed on the command line.
struct TokenSetFlags {
  int64_t samples = 0;
  int64_t seq_len = 0;
  uint64_t seed = 0;
  std::string packing = "records";
  std::string max_bytes;          // --max-calib-bytes (empty: the default)
  std::string max_record_bytes;   // --max-record-bytes (empty: the default)
};

// Declares `samples_flag`, --seq-len, --seed, --packing, --max-calib-bytes and --max-record-bytes on `sub`.
void add_token_set_options(CLI::App* sub, TokenSetFlags& o, const std::string& samples_flag);

// The flags as the library takes them; errors name the flag.
Expected<pipeline::TokenSetOptions> token_set_options(const TokenSetFlags& flags);

// What a command tells the person at the terminal while the library works: notes and warnings on
// stderr (always), and, when stderr is a terminal and `progress`, a line per forward
// "<what>: layer i of n, T tokens/s, S s left".
pipeline::Reporter terminal_reporter(bool progress);

// "\rlayer i of n" on stderr, for an evaluation's progress callback.
std::function<void(int, int)> layer_progress();

}  // namespace fp4c::tools
