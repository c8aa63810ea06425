#include "staging_dir.h"

#include <sys/stat.h>

#include <cerrno>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <vector>

namespace fp4c::synth {

namespace fs = std::filesystem;

namespace {

// mkdtemp on "<parent>/.<name>.<tag>-XXXXXX".
Expected<std::string> make_temp_dir(const fs::path& parent, const std::string& name, const char* tag) {
  std::string templ = (parent / ("." + name + "." + tag + "-XXXXXX")).string();
  std::vector<char> buf(templ.begin(), templ.end());
  buf.push_back('\0');
  if (!::mkdtemp(buf.data()))
    return make_error("cannot create a temporary directory in '" + parent.string() + "': " + std::strerror(errno));
  return std::string(buf.data());
}

}  // namespace

Expected<StagingDir> StagingDir::create(const std::string& dest) {
  fs::path d = fs::path(dest).lexically_normal();
  if (!d.has_filename()) d = d.parent_path();  // "out/" -> "out"
  if (d.empty() || d.filename() == "." || d.filename() == "..")
    return make_error("invalid output directory '" + dest + "'");
  std::error_code ec;
  const fs::path parent = fs::absolute(d, ec).parent_path();
  if (ec) return make_error("invalid output directory '" + dest + "': " + ec.message());
  fs::create_directories(parent, ec);
  if (ec) return make_error("cannot create '" + parent.string() + "': " + ec.message());
  FP4C_ASSIGN(std::string path, make_temp_dir(parent, d.filename().string(), "tmp"));
  ::chmod(path.c_str(), 0755);  // mkdtemp makes it 0700; a checkpoint is normally world-readable
  return StagingDir((parent / d.filename()).string(), std::move(path));
}

StagingDir::StagingDir(StagingDir&& other) noexcept
    : dest_(std::move(other.dest_)), path_(std::move(other.path_)), committed_(other.committed_) {
  other.committed_ = true;  // the moved-from object owns nothing
}

StagingDir::~StagingDir() {
  if (committed_ || path_.empty()) return;
  std::error_code ec;
  fs::remove_all(path_, ec);
}

Status StagingDir::commit(bool replace) {
  std::error_code ec;
  const fs::file_status st = fs::symlink_status(dest_, ec);
  std::string aside;
  if (fs::exists(st)) {
    if (!replace) return make_error("output directory '" + dest_ + "' already exists; pass --force to replace it");
    if (!fs::is_directory(st)) return make_error("'" + dest_ + "' exists and is not a directory; not replacing it");
    const fs::path p(dest_);
    FP4C_ASSIGN(aside, make_temp_dir(p.parent_path(), p.filename().string(), "old"));
    if (::rename(dest_.c_str(), aside.c_str()) != 0) {
      const std::string why = std::strerror(errno);
      fs::remove(aside, ec);
      return make_error("cannot move '" + dest_ + "' aside: " + why);
    }
  }
  if (::rename(path_.c_str(), dest_.c_str()) != 0) {
    const std::string why = std::strerror(errno);
    if (!aside.empty()) (void)::rename(aside.c_str(), dest_.c_str());  // put the old one back
    return make_error("cannot rename '" + path_ + "' to '" + dest_ + "': " + why);
  }
  committed_ = true;
  if (!aside.empty()) fs::remove_all(aside, ec);
  return {};
}

}  // namespace fp4c::synth
