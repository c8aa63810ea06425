// A temporary sibling of an output directory: everything is written there, and it is renamed into
// place only when complete, so no half-written output is ever left under the final name.
#pragma once

#include <string>

#include "base/expected.h"

namespace fp4c::synth {

class StagingDir {
 public:
  // Creates ".<name>.tmp-XXXXXX" next to dest (and dest's parent directories if missing).
  static Expected<StagingDir> create(const std::string& dest);
  StagingDir(StagingDir&& other) noexcept;
  StagingDir& operator=(StagingDir&&) = delete;
  ~StagingDir();  // removes the staging directory unless it was committed

  const std::string& path() const { return path_; }

  // Renames the staging directory to dest. An existing dest is an error unless `replace`, in
  // which case it is moved aside first and removed once the new one is in place.
  Status commit(bool replace);

 private:
  StagingDir(std::string dest, std::string path) : dest_(std::move(dest)), path_(std::move(path)) {}
  std::string dest_;
  std::string path_;
  bool committed_ = false;
};

}  // namespace fp4c::synth
