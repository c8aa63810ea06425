#include "passes/stats.h"

#include <zlib.h>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <fstream>
#include <limits>
#include <cstdio>
#include <span>
#include <string_view>

#include "formats/hash.h"

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
  return under ? under->find(layer, role) : nullptr;
}

std::shared_ptr<const ActivationStats> overlay_stats(std::shared_ptr<const ActivationStats> base,
                                                     std::vector<SiteStats> replaced) {
  if (replaced.empty()) return base;
  auto out = std::make_shared<ActivationStats>();
  out->model_key = base->model_key;
  out->calibration_key = base->calibration_key;
  out->precision = base->precision;
  out->sites = std::move(replaced);
  out->under = std::move(base);
  return out;
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

// File layout (version 2): "FP4CST02", the serialized StatsFile's size (u64), the method of what
// follows (u8: 0 stored, 1 zlib), the XXH3-128 of the serialized bytes (16 bytes, high word first),
// then the payload. Second moments are symmetric and stored as their upper triangle. Payloads above
// kStoreAbove are stored as they are: float64 second moments hardly compress (zlib level 6 took tens
// of seconds on a 7-layer 0.5B model's 600 MB and saved a few percent) and the checksum guards them.
// Version 1 files (the size, then a zlib stream, full second moments) are still read.
namespace {
constexpr char kMagic[8] = {'F', 'P', '4', 'C', 'S', 'T', '0', '2'};
constexpr size_t kHeader = 8 + 8 + 1 + 16;
constexpr uint64_t kStoreAbove = uint64_t(32) << 20;

Expected<std::string> read_whole_file(const std::string& path) {
  std::FILE* f = std::fopen(path.c_str(), "rb");
  if (!f) return make_error(path + ": cannot open statistics file");
  std::string bytes;
  char buf[1 << 16];
  if (std::fseek(f, 0, SEEK_END) == 0) {
    const long n = std::ftell(f);
    if (n > 0) bytes.reserve(size_t(n));
    std::fseek(f, 0, SEEK_SET);
  }
  size_t got;
  while ((got = std::fread(buf, 1, sizeof buf, f)) > 0) bytes.append(buf, got);
  const bool failed = std::ferror(f);
  std::fclose(f);
  if (failed) return make_error(path + ": read error");
  return bytes;
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
    if (!s.second_moment.empty()) {
      const size_t c = s.absmax.size();
      if (s.second_moment.size() != c * c)
        return make_error(path + ": second moments of layer " + std::to_string(s.layer) + " are not " +
                          std::to_string(c) + "x" + std::to_string(c));
      auto* upper = p->mutable_second_moment_upper();
      upper->Reserve(int(c * (c + 1) / 2));
      for (size_t a = 0; a < c; ++a)
        for (size_t b = a; b < c; ++b) upper->AddAlreadyReserved(s.second_moment[a * c + b]);
    }
  }
  std::string raw;
  if (!f.SerializeToString(&raw)) return make_error(path + ": cannot serialize statistics");
  const hash::Digest digest = hash::xxh3_128(std::as_bytes(std::span(raw.data(), raw.size())));
  std::string header(kHeader, '\0');
  std::memcpy(header.data(), kMagic, 8);
  const uint64_t size = raw.size();
  std::memcpy(header.data() + 8, &size, 8);
  for (int i = 0; i < 8; ++i) {
    header[17 + i] = char(digest.high >> (56 - 8 * i));
    header[25 + i] = char(digest.low >> (56 - 8 * i));
  }
  std::string zipped;
  const std::string* payload = &raw;
  if (size <= kStoreAbove) {
    uLongf n = compressBound(raw.size());
    zipped.resize(n);
    if (compress2(reinterpret_cast<Bytef*>(zipped.data()), &n, reinterpret_cast<const Bytef*>(raw.data()),
                  raw.size(), 6) != Z_OK)
      return make_error(path + ": zlib compression failed");
    zipped.resize(n);
    header[16] = 1;
    payload = &zipped;
  }
  const std::string tmp = path + ".tmp";
  {
    std::ofstream out(tmp, std::ios::binary);
    out.write(header.data(), std::streamsize(header.size()));
    out.write(payload->data(), std::streamsize(payload->size()));
    if (!out) return make_error(tmp + ": write failed");
  }
  if (std::rename(tmp.c_str(), path.c_str()) != 0) return make_error(path + ": cannot move statistics into place");
  return {};
}

Expected<ActivationStats> load_stats(const std::string& path) {
  FP4C_ASSIGN(std::string bytes, read_whole_file(path));
  stats::StatsFile f;
  if (bytes.size() >= 8 && std::memcmp(bytes.data(), kMagic, 8) == 0) {
    if (bytes.size() < kHeader)
      return make_error(path + ": statistics file truncated at offset " + std::to_string(bytes.size()));
    uint64_t size;
    std::memcpy(&size, bytes.data() + 8, 8);
    const uint8_t method = uint8_t(bytes[16]);
    hash::Digest want;
    for (int i = 0; i < 8; ++i) {
      want.high = (want.high << 8) | uint8_t(bytes[17 + i]);
      want.low = (want.low << 8) | uint8_t(bytes[25 + i]);
    }
    std::string_view payload(bytes.data() + kHeader, bytes.size() - kHeader);
    std::string raw;
    if (method == 0) {
      if (payload.size() != size)
        return make_error(path + ": statistics file truncated or padded: " + std::to_string(payload.size()) +
                          " bytes after the header at offset " + std::to_string(kHeader) + ", expected " +
                          std::to_string(size));
    } else if (method == 1) {
      if (size > (uint64_t(1) << 36)) return make_error(path + ": implausible statistics size " + std::to_string(size));
      raw.resize(size);
      uLongf n = size;
      if (uncompress(reinterpret_cast<Bytef*>(raw.data()), &n, reinterpret_cast<const Bytef*>(payload.data()),
                     payload.size()) != Z_OK || n != size)
        return make_error(path + ": corrupt statistics file (zlib stream at offset " + std::to_string(kHeader) + ")");
      payload = raw;
    } else {
      return make_error(path + ": unknown storage method " + std::to_string(method) + " at offset 16");
    }
    if (hash::xxh3_128(std::as_bytes(std::span(payload.data(), payload.size()))) != want)
      return make_error(path + ": corrupt statistics file (checksum of the " + std::to_string(size) +
                        " bytes at offset " + std::to_string(kHeader) + " differs)");
    if (!f.ParseFromArray(payload.data(), int(payload.size()))) return make_error(path + ": not a statistics file");
  } else {
    // Version 1.
    if (bytes.size() < 8) return make_error(path + ": statistics file truncated at offset " + std::to_string(bytes.size()));
    uint64_t size;
    std::memcpy(&size, bytes.data(), 8);
    if (size > (uint64_t(1) << 36)) return make_error(path + ": implausible statistics size " + std::to_string(size));
    std::string raw(size, '\0');
    uLongf n = size;
    if (uncompress(reinterpret_cast<Bytef*>(raw.data()), &n, reinterpret_cast<const Bytef*>(bytes.data() + 8),
                   bytes.size() - 8) != Z_OK || n != size)
      return make_error(path + ": corrupt statistics file (zlib stream at offset 8)");
    if (!f.ParseFromString(raw)) return make_error(path + ": not a statistics file");
  }
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
    if (!p.second_moment_upper().empty()) {
      const size_t c = s.absmax.size();
      if (size_t(p.second_moment_upper().size()) != c * (c + 1) / 2)
        return make_error(path + ": second moments of layer " + std::to_string(s.layer) + " have " +
                          std::to_string(p.second_moment_upper().size()) + " values, expected " +
                          std::to_string(c * (c + 1) / 2));
      s.second_moment.resize(c * c);
      const double* u = p.second_moment_upper().data();
      for (size_t a = 0; a < c; ++a)
        for (size_t b = a; b < c; ++b) s.second_moment[a * c + b] = s.second_moment[b * c + a] = *u++;
    }
    if (s.min.size() != s.absmax.size() || s.max.size() != s.absmax.size() ||
        s.mean_square.size() != s.absmax.size())
      return make_error(path + ": inconsistent statistics for layer " + std::to_string(s.layer));
    out.sites.push_back(std::move(s));
  }
  return out;
}

}  // namespace fp4c::passes
