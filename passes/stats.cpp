#include "passes/stats.h"

#include <zlib.h>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <fstream>
#include <limits>
#include <sstream>

#include "stats.pb.h"

namespace fp4c::passes {

float SiteStats::tensor_absmax() const {
  float m = 0;
  for (float a : absmax) m = std::max(m, a);
  return m;
}

const SiteStats* ActivationStats::find(int layer, ir::Role role) const {
  for (const auto& s : sites)
    if (s.layer == layer && s.role == role) return &s;
  return nullptr;
}

std::optional<ir::Role> input_site_role(ir::Role role) {
  switch (role) {
    case ir::Role::Q: case ir::Role::K: case ir::Role::V: return ir::Role::Q;
    case ir::Role::Gate: case ir::Role::Up: return ir::Role::Gate;
    case ir::Role::O: return ir::Role::O;
    case ir::Role::Down: return ir::Role::Down;
    default: return std::nullopt;
  }
}

namespace {

ir::Role role_from_name(const std::string& s) {
  if (s == "o") return ir::Role::O;
  if (s == "gate") return ir::Role::Gate;
  if (s == "down") return ir::Role::Down;
  return ir::Role::Q;
}

}  // namespace

Status save_stats(const ActivationStats& stats, const std::string& path) {
  stats::StatsFile f;
  f.set_model_key(stats.model_key);
  f.set_calibration_key(stats.calibration_key);
  f.set_precision(stats.precision);
  for (const auto& s : stats.sites) {
    auto* p = f.add_sites();
    p->set_layer(s.layer);
    p->set_role(std::string(ir::role_name(s.role)));
    p->set_tokens(s.tokens);
    *p->mutable_absmax() = {s.absmax.begin(), s.absmax.end()};
    *p->mutable_min() = {s.min.begin(), s.min.end()};
    *p->mutable_max() = {s.max.begin(), s.max.end()};
    *p->mutable_mean_square() = {s.mean_square.begin(), s.mean_square.end()};
    *p->mutable_second_moment() = {s.second_moment.begin(), s.second_moment.end()};
  }
  std::string raw;
  if (!f.SerializeToString(&raw)) return make_error(path + ": cannot serialize statistics");
  uLongf n = compressBound(raw.size());
  std::string packed(n + 8, '\0');
  const uint64_t size = raw.size();
  std::memcpy(packed.data(), &size, 8);
  if (compress2(reinterpret_cast<Bytef*>(packed.data() + 8), &n, reinterpret_cast<const Bytef*>(raw.data()),
                raw.size(), 6) != Z_OK)
    return make_error(path + ": zlib compression failed");
  packed.resize(n + 8);
  const std::string tmp = path + ".tmp";
  {
    std::ofstream out(tmp, std::ios::binary);
    out << packed;
    if (!out) return make_error(tmp + ": write failed");
  }
  if (std::rename(tmp.c_str(), path.c_str()) != 0) return make_error(path + ": cannot move statistics into place");
  return {};
}

Expected<ActivationStats> load_stats(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) return make_error(path + ": cannot open statistics file");
  std::stringstream ss;
  ss << in.rdbuf();
  const std::string packed = ss.str();
  if (packed.size() < 8) return make_error(path + ": statistics file truncated at offset " + std::to_string(packed.size()));
  uint64_t size;
  std::memcpy(&size, packed.data(), 8);
  if (size > (uint64_t(1) << 36)) return make_error(path + ": implausible statistics size " + std::to_string(size));
  std::string raw(size, '\0');
  uLongf n = size;
  if (uncompress(reinterpret_cast<Bytef*>(raw.data()), &n, reinterpret_cast<const Bytef*>(packed.data() + 8),
                 packed.size() - 8) != Z_OK || n != size)
    return make_error(path + ": corrupt statistics file (zlib stream at offset 8)");
  stats::StatsFile f;
  if (!f.ParseFromString(raw)) return make_error(path + ": not a statistics file");
  ActivationStats out;
  out.model_key = f.model_key();
  out.calibration_key = f.calibration_key();
  out.precision = f.precision();
  for (const auto& p : f.sites()) {
    SiteStats s;
    s.layer = p.layer();
    s.role = role_from_name(p.role());
    s.tokens = p.tokens();
    s.absmax.assign(p.absmax().begin(), p.absmax().end());
    s.min.assign(p.min().begin(), p.min().end());
    s.max.assign(p.max().begin(), p.max().end());
    s.mean_square.assign(p.mean_square().begin(), p.mean_square().end());
    s.second_moment.assign(p.second_moment().begin(), p.second_moment().end());
    if (s.min.size() != s.absmax.size() || s.max.size() != s.absmax.size() ||
        s.mean_square.size() != s.absmax.size())
      return make_error(path + ": inconsistent statistics for layer " + std::to_string(s.layer));
    out.sites.push_back(std::move(s));
  }
  return out;
}

}  // namespace fp4c::passes
