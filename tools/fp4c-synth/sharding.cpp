#include "sharding.h"

#include <algorithm>
#include <cctype>
#include <charconv>
#include <cmath>
#include <cstdio>

namespace fp4c::synth {

Expected<uint64_t> parse_size(std::string_view text) {
  auto bad = [&] {
    return make_error("invalid size '" + std::string(text) +
                      "': expected a number of bytes, optionally with a unit (KB, MB, GB, TB, KiB, MiB, GiB, TiB)");
  };
  std::string_view s = text;
  while (!s.empty() && std::isspace(uint8_t(s.front()))) s.remove_prefix(1);
  while (!s.empty() && std::isspace(uint8_t(s.back()))) s.remove_suffix(1);
  size_t digits = 0;
  while (digits < s.size() && (std::isdigit(uint8_t(s[digits])) || s[digits] == '.')) ++digits;
  if (digits == 0) return bad();
  double value = 0;
  const auto [ptr, ec] = std::from_chars(s.data(), s.data() + digits, value);
  if (ec != std::errc() || ptr != s.data() + digits) return bad();
  std::string unit;
  for (char c : s.substr(digits))
    if (!std::isspace(uint8_t(c))) unit += char(std::toupper(uint8_t(c)));
  struct Unit { const char* name; double bytes; };
  static constexpr Unit kUnits[] = {
      {"", 1}, {"B", 1}, {"KB", 1e3}, {"MB", 1e6}, {"GB", 1e9}, {"TB", 1e12},
      {"KIB", 1024.0}, {"MIB", 1048576.0}, {"GIB", 1073741824.0}, {"TIB", 1099511627776.0}};
  for (const Unit& u : kUnits) {
    if (unit != u.name) continue;
    const double bytes = std::floor(value * u.bytes);
    if (!(bytes >= 1) || bytes > 1.8e19) return bad();
    return uint64_t(bytes);
  }
  return bad();
}

std::vector<Shard> plan_shards(const std::vector<PlannedTensor>& tensors, uint64_t max_shard_size) {
  std::vector<Shard> shards;
  Shard current;
  for (size_t i = 0; i < tensors.size(); ++i) {
    const uint64_t size = tensors[i].nbytes();
    if (size > max_shard_size) {
      shards.push_back({"", {i}, size});
      continue;
    }
    if (current.nbytes + size > max_shard_size) {
      shards.push_back(std::move(current));
      current = {};
    }
    current.tensors.push_back(i);
    current.nbytes += size;
  }
  if (!current.tensors.empty()) shards.push_back(std::move(current));
  for (size_t k = 0; k < shards.size(); ++k) {
    std::sort(shards[k].tensors.begin(), shards[k].tensors.end(),
              [&](size_t a, size_t b) { return tensors[a].name < tensors[b].name; });
    if (shards.size() == 1) {
      shards[k].file = "model.safetensors";
    } else {
      char name[64];
      std::snprintf(name, sizeof name, "model-%05zu-of-%05zu.safetensors", k + 1, shards.size());
      shards[k].file = name;
    }
  }
  return shards;
}

}  // namespace fp4c::synth
