#include "backends/artifact.h"

#include <unistd.h>

#include <filesystem>
#include <system_error>

namespace fp4c::backends {
namespace fs = std::filesystem;

Expected<StagingDir> StagingDir::create(const std::string& destination, bool force) {
  std::error_code ec;
  fs::path dest = fs::path(destination).lexically_normal();
  if (dest.filename().empty()) dest = dest.parent_path();
  if (fs::exists(dest, ec) && !force)
    return make_error(dest.string() + ": output directory already exists (use --force to replace it)");
  fs::path parent = dest.has_parent_path() ? dest.parent_path() : fs::path(".");
  if (!fs::is_directory(parent, ec))
    return make_error(dest.string() + ": parent directory " + parent.string() + " does not exist");
  fs::path staging = parent / ("." + dest.filename().string() + ".fp4c-tmp-" + std::to_string(getpid()));
  fs::remove_all(staging, ec);
  if (!fs::create_directory(staging, ec))
    return make_error(staging.string() + ": cannot create staging directory: " + ec.message());
  return StagingDir(dest.string(), staging.string(), force);
}

StagingDir::StagingDir(StagingDir&& o) noexcept
    : destination_(std::move(o.destination_)), staging_(std::move(o.staging_)), force_(o.force_),
      committed_(o.committed_) {
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
