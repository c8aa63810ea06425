// Sharded checkpoints: model.safetensors.index.json reading/writing, and opening a checkpoint dir.
#include <cerrno>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <set>
#include <sstream>
#include <string>
#include <system_error>

#include <nlohmann/json.hpp>

#include "formats/json_input.h"
#include "formats/safetensors.h"

namespace fp4c::safetensors {
namespace {

namespace fs = std::filesystem;
using nlohmann::json;

constexpr const char* kIndexName = "model.safetensors.index.json";
constexpr const char* kSingleName = "model.safetensors";

bool is_decimal(const std::string& s) {
  return !s.empty() && s.size() <= 20 && s.find_first_not_of("0123456789") == std::string::npos;
}

// A shard name from an index must stay inside the checkpoint directory.
bool is_safe_shard_name(const std::string& name) {
  fs::path p(name);
  if (name.empty() || p.is_absolute()) return false;
  for (const fs::path& part : p)
    if (part == "..") return false;
  return true;
}

}  // namespace

Expected<Index> read_index(const std::string& path) {
  FP4C_ASSIGN(const std::string text, json_input::read_text(path));
  json j;
  json_input::Options options;
  options.unique_keys = true;   // a tensor mapped twice would be read from whichever came last
  if (auto f = json_input::parse_into(text, j, options)) {
    if (!f->offset) return make_error(path + ": index has " + f->reason);
    return make_error(path + ": not valid JSON at byte " + std::to_string(*f->offset) + ": " + f->reason);
  }
  if (!j.is_object()) return make_error(path + ": index is a JSON " + std::string(j.type_name()) + ", not an object");

  Index index;
  if (auto m = j.find("metadata"); m != j.end() && !m->is_null()) {
    if (!m->is_object())
      return make_error(path + ": \"metadata\" is a " + std::string(m->type_name()) + ", not an object");
    for (const auto& [k, v] : m->items()) {
      if (k == "total_size") {
        if (v.is_number_unsigned()) {
          index.metadata[k] = std::to_string(v.get<uint64_t>());
        } else if (v.is_string() && is_decimal(v.get<std::string>())) {
          index.metadata[k] = v.get<std::string>();
        } else {
          return make_error(path + ": \"metadata\".\"total_size\" must be a non-negative integer or a string of "
                            "digits, got " + v.dump());
        }
      } else {
        index.metadata[k] = v.is_string() ? v.get<std::string>() : v.dump();
      }
    }
  }
  auto wm = j.find("weight_map");
  if (wm == j.end()) return make_error(path + ": missing \"weight_map\"");
  if (!wm->is_object())
    return make_error(path + ": \"weight_map\" is a " + std::string(wm->type_name()) + ", not an object");
  for (const auto& [tensor, shard] : wm->items()) {
    if (!shard.is_string())
      return make_error(path + ": \"weight_map\" maps tensor '" + tensor + "' to a " + shard.type_name() +
                        ", not a shard file name");
    index.weight_map[tensor] = shard.get<std::string>();
  }
  return index;
}

Status write_index(const std::string& path, const Index& index, uint64_t total_size) {
  json meta = json::object();
  for (const auto& [k, v] : index.metadata) meta[k] = v;
  meta["total_size"] = total_size;
  json weight_map = json::object();  // std::map underneath: keys come out sorted
  for (const auto& [tensor, shard] : index.weight_map) weight_map[tensor] = shard;
  json j = json::object();
  j["metadata"] = std::move(meta);
  j["weight_map"] = std::move(weight_map);
  std::string text;
  try {
    text = j.dump(2, ' ', /*ensure_ascii=*/true) + "\n";  // json.dumps(indent=2, sort_keys=True) as HF
  } catch (const json::type_error& e) {
    return make_error(path + ": cannot write the index: " + e.what());
  }
  std::ofstream out(path, std::ios::binary | std::ios::trunc);
  if (!out) {
    const int err = errno;
    return make_error(path + ": cannot create: " + std::strerror(err));
  }
  out.write(text.data(), static_cast<std::streamsize>(text.size()));
  out.close();
  if (!out) return make_error(path + ": write failed");
  return {};
}

Expected<Checkpoint> Checkpoint::open(const std::string& dir) {
  std::error_code ec;
  const fs::path index_path = fs::path(dir) / kIndexName;
  const fs::path single_path = fs::path(dir) / kSingleName;
  Checkpoint ck;

  if (fs::exists(index_path, ec)) {
    const std::string index_file = index_path.string();
    FP4C_ASSIGN(Index index, read_index(index_file));
    // Shards in name order; the first tensor naming each one, for the error if it is missing.
    std::map<std::string, std::string> shards;
    for (const auto& [tensor, shard] : index.weight_map) {
      if (!is_safe_shard_name(shard))
        return make_error(index_file + ": tensor '" + tensor + "' is mapped to '" + shard +
                          "', which is not a file name inside " + dir);
      shards.emplace(shard, tensor);
    }
    ck.files_.reserve(shards.size());
    for (const auto& [shard, tensor] : shards) {
      const fs::path shard_path = fs::path(dir) / shard;
      if (!fs::exists(shard_path, ec))
        return make_error(index_file + ": shard '" + shard + "' (holding tensor '" + tensor + "', among others) " +
                          "does not exist: " + shard_path.string());
      FP4C_ASSIGN(File f, File::open(shard_path.string()));
      ck.files_.push_back(std::move(f));
    }
    std::map<std::string, const File*, std::less<>> shard_file;
    {
      size_t i = 0;
      for (const auto& [shard, tensor] : shards) shard_file[shard] = &ck.files_[i++];
    }
    for (const auto& [tensor, shard] : index.weight_map) {
      const File* f = shard_file.at(shard);
      if (!f->find(tensor))
        return make_error(index_file + ": tensor '" + tensor + "' is mapped to shard '" + shard + "', but " +
                          f->path() + " has no tensor of that name");
    }
    // Every tensor named by the index is where it says; anything else in a shard is an extra or a copy.
    for (const auto& [shard, f] : shard_file) {
      for (const TensorEntry& t : f->tensors()) {
        auto it = index.weight_map.find(t.name);
        if (it == index.weight_map.end())
          return make_error(f->path() + ": holds tensor '" + t.name + "' (file offset " +
                            std::to_string(f->data_offset() + t.begin) + ") that " + index_file + " does not name");
        if (it->second != shard)
          return make_error(index_file + ": tensor '" + t.name + "' appears in two shards, '" + it->second +
                            "' (where the index maps it) and '" + shard + "' (" + f->path() + ", file offset " +
                            std::to_string(f->data_offset() + t.begin) + ")");
      }
    }
    ck.sharded_ = true;
  } else if (fs::exists(single_path, ec)) {
    FP4C_ASSIGN(File f, File::open(single_path.string()));
    ck.files_.push_back(std::move(f));
  } else if (!fs::is_directory(dir, ec)) {
    return make_error(dir + ": not a directory");
  } else {
    return make_error(dir + ": no " + kIndexName + " or " + kSingleName + " in this directory");
  }

  // files_ is complete: its storage does not move again, so pointers into it stay valid.
  for (const File& f : ck.files_)
    for (const TensorEntry& t : f.tensors()) ck.refs_.push_back(Ref{&f, &t});
  for (size_t i = 0; i < ck.refs_.size(); ++i) ck.by_name_.emplace(ck.refs_[i].entry->name, i);
  return ck;
}

Checkpoint Checkpoint::of_file(File file) {
  Checkpoint ck;
  ck.files_.push_back(std::move(file));
  for (const File& f : ck.files_)
    for (const TensorEntry& t : f.tensors()) ck.refs_.push_back(Ref{&f, &t});
  for (size_t i = 0; i < ck.refs_.size(); ++i) ck.by_name_.emplace(ck.refs_[i].entry->name, i);
  return ck;
}

const Checkpoint::Ref* Checkpoint::find(std::string_view name) const {
  auto it = by_name_.find(name);
  return it == by_name_.end() ? nullptr : &refs_[it->second];
}

}  // namespace fp4c::safetensors
