#include "backends/verify_hashes.h"

#include <algorithm>
#include <filesystem>
#include <map>
#include <set>

#include "backends/manifest.h"
#include "formats/hash.h"
#include "formats/safetensors.h"

namespace fp4c::backends {
namespace {
namespace fs = std::filesystem;

// Hashes dir/record.path() and compares hash and size; `what` says whose file it is in messages.
void check_file(const manifest::FileRecord& record, const std::string& dir, const std::string& what,
                HashCheck& out) {
  const std::string p = (fs::path(dir) / record.path()).string();
  uint64_t size = 0;
  auto h = hash::hash_file(p, &size);
  ++out.files;
  if (!h) {
    out.problems.push_back(h.error().message);
  } else if (h->hex() != record.hash().hex() || size != record.bytes()) {
    out.problems.push_back(p + ": " + what + " file hash " + h->hex() + " (" + std::to_string(size) +
                           " bytes) differs from the manifest's " + record.hash().hex() + " (" +
                           std::to_string(record.bytes()) + " bytes)");
  }
}

}  // namespace

HashCheck check_artifact_hashes(const manifest::Manifest& m, const std::string& dir) {
  HashCheck out;
  std::set<std::string> listed{kManifestFile, kVerificationFile};
  for (const auto& f : m.outputs()) {
    listed.insert(f.path());
    check_file(f, dir, "artifact", out);
  }
  std::error_code ec;
  std::vector<std::string> strays;
  // fp4c-verify's own temporary file, left behind only by a verification killed while writing.
  const std::string verify_tmp = std::string(kVerificationFile) + ".tmp-";
  for (const auto& e : fs::directory_iterator(dir, ec)) {
    const std::string name = e.path().filename().string();
    if (!listed.count(name) && name.rfind(verify_tmp, 0) != 0) strays.push_back(name);
  }
  if (ec) out.problems.push_back(dir + ": cannot list the directory: " + ec.message());
  std::sort(strays.begin(), strays.end());
  for (const auto& s : strays) out.problems.push_back((fs::path(dir) / s).string() + ": file not listed in the manifest");

  std::map<std::string, safetensors::File> opened;
  for (const auto& t : m.output_tensors()) {
    const std::string p = (fs::path(dir) / t.file()).string();
    auto it = opened.find(t.file());
    if (it == opened.end()) {
      auto f = safetensors::File::open(p);
      if (!f) {
        out.problems.push_back(f.error().message);
        continue;
      }
      it = opened.emplace(t.file(), std::move(*f)).first;
    }
    const auto* e = it->second.find(t.name());
    ++out.tensors;
    if (!e) {
      out.problems.push_back(p + ": tensor '" + t.name() + "' listed in the manifest is missing");
      continue;
    }
    const auto h = hash::xxh3_128(it->second.bytes(*e));
    if (h.hex() != t.hash().hex())
      out.problems.push_back(p + ": tensor '" + t.name() + "' hash " + h.hex() + " differs from the manifest's " +
                             t.hash().hex());
  }
  return out;
}

HashCheck check_reference_inputs(const manifest::Manifest& m, const std::string& reference_dir) {
  HashCheck out;
  std::set<std::string> recorded;
  for (const auto& f : m.inputs()) {
    recorded.insert(f.path());
    check_file(f, reference_dir, "reference", out);
  }
  if (m.inputs().empty()) out.problems.push_back("the manifest records no input files");
  std::error_code ec;
  std::vector<std::string> unrecorded;
  for (const auto& e : fs::directory_iterator(reference_dir, ec)) {
    const std::string name = e.path().filename().string();
    const bool checkpoint_file = name == "config.json" || name == "model.safetensors.index.json" ||
                                 e.path().extension() == ".safetensors";
    if (checkpoint_file && !recorded.count(name)) unrecorded.push_back(name);
  }
  if (ec) out.problems.push_back(reference_dir + ": cannot list the directory: " + ec.message());
  std::sort(unrecorded.begin(), unrecorded.end());
  for (const auto& s : unrecorded)
    out.problems.push_back((fs::path(reference_dir) / s).string() +
                           ": reference checkpoint file not among the manifest's inputs");
  return out;
}

}  // namespace fp4c::backends
