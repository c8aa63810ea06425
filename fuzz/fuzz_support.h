// Shared by the libFuzzer harnesses (fuzz/*_fuzz.cpp): a private scratch directory for parsers that
// read files, and the multi-file input container.
//
// Multi-file inputs: a harness whose parser reads several files (a directory) takes one input split
// at the separator line "\n=====\n" into parts, in an order the harness documents (part 0 first;
// missing parts are absent files or empty text). Seeds stay readable where the formats are text.
#pragma once

#include <unistd.h>

#include <cstdint>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <string>
#include <string_view>
#include <vector>

namespace fp4c::fuzz {

inline constexpr std::string_view kPartSeparator = "\n=====\n";

inline std::vector<std::string_view> split_parts(const uint8_t* data, size_t size, size_t max_parts) {
  std::string_view in(reinterpret_cast<const char*>(data), size);
  std::vector<std::string_view> parts;
  while (parts.size() + 1 < max_parts) {
    const size_t at = in.find(kPartSeparator);
    if (at == std::string_view::npos) break;
    parts.push_back(in.substr(0, at));
    in.remove_prefix(at + kPartSeparator.size());
  }
  parts.push_back(in);
  return parts;
}

// A directory of this process's own, on tmpfs where there is one (/dev/shm), else under $TMPDIR;
// removed when the process exits normally (a crash leaves it for the reproducer's inspection).
class Scratch {
 public:
  static Scratch& get() {
    static Scratch s;
    return s;
  }
  const std::filesystem::path& dir() const { return dir_; }
  // Writes `bytes` to dir()/name (replacing it) and returns the path.
  std::string write(const std::string& name, std::string_view bytes) const {
    const auto p = dir_ / name;
    std::ofstream out(p, std::ios::binary | std::ios::trunc);
    out.write(bytes.data(), std::streamsize(bytes.size()));
    out.close();
    if (!out) std::abort();   // the harness's own failure (disk full?), not a finding in fp4c
    return p.string();
  }
  std::string write(const std::string& name, const uint8_t* data, size_t size) const {
    return write(name, std::string_view(reinterpret_cast<const char*>(data), size));
  }
  // Removes every file in dir() (a multi-file harness starts each input from an empty directory).
  void clear() const {
    std::error_code ec;
    for (const auto& e : std::filesystem::directory_iterator(dir_, ec)) std::filesystem::remove_all(e.path(), ec);
  }
  // A fresh subdirectory of dir() (created empty).
  std::string subdir(const std::string& name) const {
    const auto p = dir_ / name;
    std::error_code ec;
    std::filesystem::remove_all(p, ec);
    std::filesystem::create_directories(p);
    return p.string();
  }
  ~Scratch() {
    std::error_code ec;
    std::filesystem::remove_all(dir_, ec);
  }

 private:
  Scratch() {
    std::error_code ec;
    std::filesystem::path base = "/dev/shm";
    if (!std::filesystem::is_directory(base, ec) || ::access(base.c_str(), W_OK) != 0)
      base = std::filesystem::temp_directory_path();
    dir_ = base / ("fp4c-fuzz-" + std::to_string(::getpid()));
    std::filesystem::remove_all(dir_, ec);
    std::filesystem::create_directories(dir_);
  }
  std::filesystem::path dir_;
};

}  // namespace fp4c::fuzz
