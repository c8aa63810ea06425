// What every backend produces, and the staging directory an artifact is built in.
#pragma once

#include <cstdint>
#include <span>
#include <string>
#include <vector>

#include "formats/hash.h"
#include "base/dtype.h"
#include "base/expected.h"

namespace fp4c::backends {

struct WrittenFile {
  std::string name;       // relative to the artifact directory
  uint64_t bytes = 0;
  hash::Digest hash;
};

struct WrittenTensor {
  std::string name;
  DType dtype;
  std::vector<int64_t> shape;
  std::string file;
  hash::Digest hash;
};

// An artifact is built in a hidden sibling of its destination and renamed into place only when
// complete; if it is never committed, the destructor removes it. So no half-written artifact is ever
// left at the destination, whatever fails.
//
// The staging directory is ".<name>.fp4c-tmp-<pid>" beside the destination. A run killed outright
// (SIGKILL, power loss) cannot remove its own; the next run to the same destination removes every
// such directory whose process is gone (`removed()` lists them, for the tool to say so). A process
// that is alive, or a pid this machine has reused, keeps its directory: concurrent runs never touch
// each other's. (Pids are per machine: two machines building into one shared directory each see the
// other's runs as dead.)
class StagingDir {
 public:
  // Refuses an existing destination unless `force`. Errors name the directory.
  static Expected<StagingDir> create(const std::string& destination, bool force);
  // Staging directories of dead runs that create() removed.
  const std::vector<std::string>& removed() const { return removed_; }
  StagingDir(StagingDir&&) noexcept;
  StagingDir& operator=(StagingDir&&) = delete;
  ~StagingDir();
  const std::string& path() const { return staging_; }
  const std::string& destination() const { return destination_; }
  // Moves the staging directory into place (replacing the destination when forced).
  Status commit();

 private:
  StagingDir(std::string destination, std::string staging, bool force)
      : destination_(std::move(destination)), staging_(std::move(staging)), force_(force) {}
  std::string destination_;
  std::string staging_;
  bool force_ = false;
  bool committed_ = false;
  std::vector<std::string> removed_;
};

// The tokenizer and generation files a loader needs next to the weights.
std::span<const char* const> auxiliary_file_names();

// Copies the tokenizer and generation files a loader needs next to the weights (those present in
// src_dir among tokenizer.json, tokenizer_config.json, tokenizer.model, special_tokens_map.json,
// added_tokens.json, vocab.json, merges.txt, generation_config.json, chat_template.jinja).
// Returns the copies, hashed.
Expected<std::vector<WrittenFile>> copy_auxiliary_files(const std::string& src_dir,
                                                        const std::string& dst_dir);

}  // namespace fp4c::backends
