#include "backends/artifact.h"

#include <signal.h>
#include <unistd.h>

#include <cerrno>

#include <filesystem>
#include <system_error>

namespace fp4c::backends {
namespace fs = std::filesystem;

namespace {

constexpr const char* kStagingTag = ".fp4c-tmp-";

bool process_alive(pid_t pid) { return ::kill(pid, 0) == 0 || errno == EPERM; }

// Removes ".<name>.fp4c-tmp-<pid>" and ".<name>.fp4c-tmp-<pid>.old" in `parent` whose pid is not
// running; returns them.
std::vector<std::string> remove_dead_staging(const fs::path& parent, const std::string& name) {
  std::vector<std::string> removed;
  const std::string prefix = "." + name + kStagingTag;
  std::error_code ec;
  std::vector<fs::path> dead;
  for (fs::directory_iterator it(parent, ec), end; !ec && it != end; it.increment(ec)) {
    const std::string entry = it->path().filename().string();
    if (entry.size() <= prefix.size() || entry.compare(0, prefix.size(), prefix) != 0) continue;
    std::string rest = entry.substr(prefix.size());
    if (rest.size() > 4 && rest.compare(rest.size() - 4, 4, ".old") == 0) rest.resize(rest.size() - 4);
    if (rest.empty() || rest.size() > 9 || rest.find_first_not_of("0123456789") != std::string::npos) continue;
    const auto pid = pid_t(std::stol(rest));
    if (pid <= 0 || pid == ::getpid() || process_alive(pid)) continue;
    dead.push_back(it->path());
  }
  for (const fs::path& p : dead) {
    fs::remove_all(p, ec);
    if (!ec) removed.push_back(p.string());
  }
  return removed;
}

}  // namespace

Expected<StagingDir> StagingDir::create(const std::string& destination, bool force) {
  std::error_code ec;
  fs::path dest = fs::path(destination).lexically_normal();
  if (dest.filename().empty()) dest = dest.parent_path();
  if (fs::exists(dest, ec) && !force)
    return make_error(dest.string() + ": output directory already exists (use --force to replace it)");
  fs::path parent = dest.has_parent_path() ? dest.parent_path() : fs::path(".");
  if (!fs::is_directory(parent, ec))
    return make_error(dest.string() + ": parent directory " + parent.string() + " does not exist");
  std::vector<std::string> removed = remove_dead_staging(parent, dest.filename().string());
  fs::path staging = parent / ("." + dest.filename().string() + kStagingTag + std::to_string(getpid()));
  fs::remove_all(staging, ec);
  if (!fs::create_directory(staging, ec))
    return make_error(staging.string() + ": cannot create staging directory: " + ec.message());
  StagingDir dir(dest.string(), staging.string(), force);
  dir.removed_ = std::move(removed);
  return dir;
}

StagingDir::StagingDir(StagingDir&& o) noexcept
    : destination_(std::move(o.destination_)), staging_(std::move(o.staging_)), force_(o.force_),
      committed_(o.committed_), removed_(std::move(o.removed_)) {
  o.committed_ = true;  // the moved-from object owns nothing
}

StagingDir::~StagingDir() {
  if (committed_) return;
  std::error_code ec;
  fs::remove_all(staging_, ec);
}

Status StagingDir::commit() {
  std::error_code ec;
  fs::path dest(destination_);
  fs::path old;
  if (fs::exists(dest, ec)) {
    if (!force_) return make_error(destination_ + ": output directory appeared while building; not replacing it");
    old = fs::path(staging_ + ".old");
    fs::rename(dest, old, ec);
    if (ec) return make_error(destination_ + ": cannot move the existing directory aside: " + ec.message());
  }
  fs::rename(staging_, dest, ec);
  if (ec) {
    if (!old.empty()) fs::rename(old, dest, ec);
    return make_error(destination_ + ": cannot move the finished artifact into place: " + ec.message());
  }
  committed_ = true;
  if (!old.empty()) fs::remove_all(old, ec);
  return {};
}

std::span<const char* const> auxiliary_file_names() {
  static const char* const kFiles[] = {"tokenizer.json",     "tokenizer_config.json", "tokenizer.model",
                                       "special_tokens_map.json", "added_tokens.json", "vocab.json",
                                       "merges.txt",         "generation_config.json", "chat_template.jinja"};
  return kFiles;
}

Expected<std::vector<WrittenFile>> copy_auxiliary_files(const std::string& src_dir,
                                                        const std::string& dst_dir) {
  std::vector<WrittenFile> out;
  for (const char* name : auxiliary_file_names()) {
    fs::path src = fs::path(src_dir) / name;
    std::error_code ec;
    if (!fs::is_regular_file(src, ec)) continue;
    fs::path dst = fs::path(dst_dir) / name;
    fs::copy_file(src, dst, fs::copy_options::overwrite_existing, ec);
    if (ec) return make_error(src.string() + ": cannot copy to " + dst.string() + ": " + ec.message());
    WrittenFile f;
    f.name = name;
    FP4C_ASSIGN(f.hash, hash::hash_file(dst.string(), &f.bytes));
    out.push_back(std::move(f));
  }
  return out;
}

}  // namespace fp4c::backends
