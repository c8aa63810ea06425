#include "passes/stats.h"

#include <zlib.h>

#include <algorithm>
#include <bit>
#include <memory>
#include <cmath>
#include <cstring>
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

const SiteStats* ActivationStats::find(int layer, ir::Role role, int expert) const {
  for (const auto& s : sites)
    if (s.layer == layer && s.role == role && s.expert == expert) return &s;
  return under ? under->find(layer, role, expert) : nullptr;
}

const SiteStats* weight_input_stats(const ActivationStats* stats, const ir::TensorInfo& t) {
  const auto role = input_site_role(t.role);
  if (!stats || !role || !t.layer) return nullptr;
  if (t.expert)
    if (const SiteStats* own = stats->find(*t.layer, *role, *t.expert); own && own->tokens >= kMinExpertTokens)
      return own;
  return stats->find(*t.layer, *role);
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

// File layout (version 3): "FP4CST03"; the serialized StatsFile's size (u64) and the size of what stores it
// (u64); its method (u8: 0 stored, 1 zlib); the XXH3-128 of the serialized bytes (16 bytes, high word
// first); the stored StatsFile; then the data section: each site's second moments, in site order, as
// the upper triangle of the symmetric matrix, row by row, float64 little-endian, its count and XXH3-128
// in the site's message. The message itself stays small (per-channel vectors): protobuf refuses messages
// over 2 GB, and the second moments of a 0.5B model's 24 layers are 2.5 GB. The file ends with the last
// site's values; anything after them is an error, as a missing byte is.
// Version 2 ("FP4CST02": the same header without the stored size, then a StatsFile carrying the upper
// triangles itself) and version 1 (the size, then a zlib stream, full second moments) are still read.
namespace {
constexpr char kMagic2[8] = {'F', 'P', '4', 'C', 'S', 'T', '0', '2'};
constexpr char kMagic3[8] = {'F', 'P', '4', 'C', 'S', 'T', '0', '3'};
constexpr size_t kHeader2 = 8 + 8 + 1 + 16;
constexpr size_t kHeader3 = 8 + 8 + 8 + 1 + 16;
constexpr uint64_t kStoreAbove = uint64_t(32) << 20;
constexpr uint64_t kMaxMessage = uint64_t(1) << 31;   // what protobuf parses

struct FileCloser {
  void operator()(std::FILE* f) const { if (f) std::fclose(f); }
};
using FilePtr = std::unique_ptr<std::FILE, FileCloser>;

hash::Digest get_digest(const char* in) { return hash::from_canonical(reinterpret_cast<const uint8_t*>(in)); }

// The rows of a site's second moments' upper triangle, as spans into the full matrix, in file order.
template <typename Fn>
bool for_each_upper_row(const SiteStats& s, Fn&& fn) {
  const size_t c = s.second_moment.empty() ? 0 : s.absmax.size();
  for (size_t a = 0; a < c; ++a)
    if (!fn(std::span<const double>(s.second_moment.data() + a * c + a, c - a))) return false;
  return true;
}

std::string site_name(int layer, const std::string& role) {
  return "the second moments of layer " + std::to_string(layer) + " (" + role + " input)";
}

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

// Inflates a zlib stream that claims to hold `size` bytes. Memory grows with what the stream really
// yields, never with the claim (a 100-byte file claiming 2 GiB allocates nothing); a stream that
// yields more or less than it claims is corrupt.
Expected<std::string> inflate_claimed(const std::string& path, std::string_view in, uint64_t size, size_t offset) {
  auto corrupt = [&] {
    return make_error(path + ": corrupt statistics file (zlib stream at offset " + std::to_string(offset) + ")");
  };
  z_stream zs{};
  if (inflateInit(&zs) != Z_OK) return make_error(path + ": cannot start zlib's inflate");
  std::unique_ptr<z_stream, int (*)(z_stream*)> guard(&zs, inflateEnd);
  std::string out;
  zs.next_in = reinterpret_cast<Bytef*>(const_cast<char*>(in.data()));
  zs.avail_in = 0;
  size_t fed = 0;
  int rc = Z_OK;
  while (rc != Z_STREAM_END) {
    if (zs.avail_in == 0 && fed < in.size()) {
      const size_t n = std::min<size_t>(in.size() - fed, size_t(1) << 30);
      zs.next_in = reinterpret_cast<Bytef*>(const_cast<char*>(in.data() + fed));
      zs.avail_in = uInt(n);
      fed += n;
    }
    const size_t chunk = size_t(std::min<uint64_t>(uint64_t(1) << 24, size + 1 - std::min<uint64_t>(out.size(), size)));
    const size_t before = out.size();
    out.resize(before + chunk);
    zs.next_out = reinterpret_cast<Bytef*>(out.data() + before);
    zs.avail_out = uInt(chunk);
    rc = inflate(&zs, Z_NO_FLUSH);
    out.resize(before + (chunk - zs.avail_out));
    if (out.size() > size) return corrupt();
    if (rc == Z_STREAM_END) break;
    if (rc != Z_OK && !(rc == Z_BUF_ERROR && zs.avail_in == 0 && fed < in.size())) return corrupt();
    if (rc == Z_OK && zs.avail_in == 0 && fed == in.size() && zs.avail_out != 0) return corrupt();  // truncated
  }
  if (out.size() != size) return corrupt();
  return out;
}

// Checks a stored (method 0) or zlib (method 1) payload against its size and checksum; returns the
// serialized message's bytes (a view of `payload` or of `inflated`).
Expected<std::string_view> unpack_message(const std::string& path, std::string_view payload, uint8_t method,
                                          uint64_t size, const hash::Digest& want, size_t offset,
                                          std::string& inflated) {
  if (method == 0) {
    if (payload.size() != size)
      return make_error(path + ": statistics file truncated or padded: " + std::to_string(payload.size()) +
                        " bytes after the header at offset " + std::to_string(offset) + ", expected " +
                        std::to_string(size));
  } else if (method == 1) {
    if (size > kMaxMessage) return make_error(path + ": implausible statistics size " + std::to_string(size));
    FP4C_ASSIGN(inflated, inflate_claimed(path, payload, size, offset));
    payload = inflated;
  } else {
    return make_error(path + ": unknown storage method " + std::to_string(method) + " at offset 16");
  }
  if (payload.size() > kMaxMessage) return make_error(path + ": implausible statistics size " + std::to_string(size));
  if (hash::xxh3_128(std::as_bytes(std::span(payload.data(), payload.size()))) != want)
    return make_error(path + ": corrupt statistics file (checksum of the " + std::to_string(size) +
                      " bytes at offset " + std::to_string(offset) + " differs)");
  return payload;
}

// The in-memory statistics from the message; second moments from the message's upper triangles
// (version 2) or full matrices (version 1). Version 3's data section is read by the caller.
Expected<ActivationStats> from_message(const std::string& path, const stats::StatsFile& f) {
  ActivationStats out;
  out.model_key = f.model_key();
  out.calibration_key = f.calibration_key();
  out.precision = f.precision();
  for (const auto& p : f.sites()) {
    SiteStats s;
    s.layer = p.layer();
    s.role = role_from_name(p.role());
    s.expert = p.expert_plus_one() - 1;
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

// `f` is the open file, at any position.
Expected<ActivationStats> load_v3(const std::string& path, FilePtr f) {
  uint64_t file_size = 0;
  if (std::fseek(f.get(), 0, SEEK_END) == 0) {
    const long end = std::ftell(f.get());
    if (end > 0) file_size = uint64_t(end);
  }
  if (std::fseek(f.get(), 0, SEEK_SET) != 0) return make_error(path + ": read error");
  char header[kHeader3];
  const size_t got = std::fread(header, 1, kHeader3, f.get());
  if (got < kHeader3) return make_error(path + ": statistics file truncated at offset " + std::to_string(got));
  uint64_t size, stored;
  std::memcpy(&size, header + 8, 8);
  std::memcpy(&stored, header + 16, 8);
  const uint8_t method = uint8_t(header[24]);
  const hash::Digest want = get_digest(header + 25);
  if (stored > kMaxMessage || size > kMaxMessage)
    return make_error(path + ": implausible statistics size " + std::to_string(std::max(size, stored)) +
                      " at offset 8");
  if (kHeader3 + stored > file_size)
    return make_error(path + ": statistics file truncated at offset " + std::to_string(file_size) + " (the " +
                      std::to_string(stored) + "-byte statistics record at offset " + std::to_string(kHeader3) + ")");
  std::string payload(stored, '\0');
  const size_t n = std::fread(payload.data(), 1, stored, f.get());
  if (n < stored)
    return make_error(path + ": statistics file truncated at offset " + std::to_string(kHeader3 + n) + " (the " +
                      std::to_string(stored) + "-byte statistics record at offset " + std::to_string(kHeader3) + ")");
  std::string inflated;
  FP4C_ASSIGN(std::string_view message, unpack_message(path, payload, method, size, want, kHeader3, inflated));
  stats::StatsFile msg;
  if (!msg.ParseFromArray(message.data(), int(message.size()))) return make_error(path + ": not a statistics file");
  FP4C_ASSIGN(ActivationStats out, from_message(path, msg));
  uint64_t offset = kHeader3 + stored;
  for (int i = 0; i < msg.sites_size(); ++i) {
    const auto& p = msg.sites(i);
    const uint64_t values = p.second_moment_upper_values();
    if (values == 0) continue;
    SiteStats& s = out.sites[size_t(i)];
    const std::string what = site_name(p.layer(), p.role());
    const uint64_t c = s.absmax.size();
    if (values != c * (c + 1) / 2)
      return make_error(path + ": " + what + " have " + std::to_string(values) + " values, expected " +
                        std::to_string(c * (c + 1) / 2));
    const uint64_t begin = offset;
    if (values > (file_size - begin) / 8)   // before allocating what a lying record claims
      return make_error(path + ": statistics file truncated at offset " + std::to_string(file_size) + " (" + what +
                        ", " + std::to_string(values * 8) + " bytes at offset " + std::to_string(begin) + ")");
    s.second_moment.assign(c * c, 0.0);
    hash::Hasher hasher;
    for (uint64_t a = 0; a < c; ++a) {
      double* row = s.second_moment.data() + a * c + a;
      const size_t count = size_t(c - a);
      const size_t read = std::fread(row, sizeof(double), count, f.get());
      if (read < count)
        return make_error(path + ": statistics file truncated at offset " + std::to_string(offset + read * 8) +
                          " (" + what + ", " + std::to_string(values * 8) + " bytes at offset " +
                          std::to_string(begin) + ")");
      hasher.update(std::as_bytes(std::span<const double>(row, count)));
      offset += count * 8;
    }
    if (hasher.digest() != hash::Digest{p.second_moment_hash_high(), p.second_moment_hash_low()})
      return make_error(path + ": corrupt statistics file (checksum of " + what + ", " +
                        std::to_string(values * 8) + " bytes at offset " + std::to_string(begin) + ", differs)");
    for (uint64_t a = 0; a < c; ++a)
      for (uint64_t b = a + 1; b < c; ++b) s.second_moment[b * c + a] = s.second_moment[a * c + b];
  }
  if (std::fgetc(f.get()) != EOF)
    return make_error(path + ": statistics file padded: bytes after the last value at offset " +
                      std::to_string(offset));
  if (std::ferror(f.get())) return make_error(path + ": read error");
  return out;
}
}  // namespace

Status save_stats(const ActivationStats& stats, const std::string& path) {
  static_assert(std::endian::native == std::endian::little, "the data section is float64 little-endian");
  stats::StatsFile f;
  f.set_model_key(stats.model_key);
  f.set_calibration_key(stats.calibration_key);
  f.set_precision(stats.precision);
  for (const auto& s : stats.sites) {
    auto* p = f.add_sites();
    p->set_layer(s.layer);
    p->set_role(std::string(ir::role_name(s.role)));
    p->set_expert_plus_one(s.expert + 1);
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
      hash::Hasher hasher;
      for_each_upper_row(s, [&](std::span<const double> row) {
        hasher.update(std::as_bytes(row));
        return true;
      });
      const hash::Digest d = hasher.digest();
      p->set_second_moment_upper_values(c * (c + 1) / 2);
      p->set_second_moment_hash_high(d.high);
      p->set_second_moment_hash_low(d.low);
    }
  }
  std::string raw;
  if (f.ByteSizeLong() > kMaxMessage || !f.SerializeToString(&raw))
    return make_error(path + ": cannot serialize statistics (" + std::to_string(f.ByteSizeLong()) +
                      " bytes of per-channel statistics)");
  const hash::Digest digest = hash::xxh3_128(std::as_bytes(std::span(raw.data(), raw.size())));
  std::string header(kHeader3, '\0');
  std::memcpy(header.data(), kMagic3, 8);
  const uint64_t size = raw.size();
  std::memcpy(header.data() + 8, &size, 8);
  const auto canonical = hash::to_canonical(digest);
  std::memcpy(header.data() + 25, canonical.data(), canonical.size());
  std::string zipped;
  const std::string* payload = &raw;
  if (size <= kStoreAbove) {
    uLongf n = compressBound(raw.size());
    zipped.resize(n);
    if (compress2(reinterpret_cast<Bytef*>(zipped.data()), &n, reinterpret_cast<const Bytef*>(raw.data()),
                  raw.size(), 6) != Z_OK)
      return make_error(path + ": zlib compression failed");
    zipped.resize(n);
    header[24] = 1;
    payload = &zipped;
  }
  const uint64_t stored = payload->size();
  std::memcpy(header.data() + 16, &stored, 8);
  const std::string tmp = path + ".tmp";
  {
    FilePtr out(std::fopen(tmp.c_str(), "wb"));
    if (!out) return make_error(tmp + ": cannot create");
    std::setvbuf(out.get(), nullptr, _IOFBF, size_t(8) << 20);
    bool ok = std::fwrite(header.data(), 1, header.size(), out.get()) == header.size() &&
              std::fwrite(payload->data(), 1, payload->size(), out.get()) == payload->size();
    for (const auto& s : stats.sites)
      ok = ok && for_each_upper_row(s, [&](std::span<const double> row) {
             return std::fwrite(row.data(), sizeof(double), row.size(), out.get()) == row.size();
           });
    ok = ok && std::fflush(out.get()) == 0;
    if (!ok) {
      out.reset();
      std::remove(tmp.c_str());
      return make_error(tmp + ": write failed");
    }
    if (std::fclose(out.release()) != 0) {
      std::remove(tmp.c_str());
      return make_error(tmp + ": write failed");
    }
  }
  if (std::rename(tmp.c_str(), path.c_str()) != 0) {
    std::remove(tmp.c_str());
    return make_error(path + ": cannot move statistics into place");
  }
  return {};
}

Expected<ActivationStats> load_stats(const std::string& path) {
  {
    FilePtr f(std::fopen(path.c_str(), "rb"));
    if (!f) return make_error(path + ": cannot open statistics file");
    std::setvbuf(f.get(), nullptr, _IOFBF, size_t(8) << 20);   // before the first read
    char magic[8];
    if (std::fread(magic, 1, 8, f.get()) == 8 && std::memcmp(magic, kMagic3, 8) == 0)
      return load_v3(path, std::move(f));
  }
  FP4C_ASSIGN(std::string bytes, read_whole_file(path));
  stats::StatsFile f;
  if (bytes.size() >= 8 && std::memcmp(bytes.data(), kMagic2, 8) == 0) {
    if (bytes.size() < kHeader2)
      return make_error(path + ": statistics file truncated at offset " + std::to_string(bytes.size()));
    uint64_t size;
    std::memcpy(&size, bytes.data() + 8, 8);
    std::string inflated;
    FP4C_ASSIGN(std::string_view message,
                unpack_message(path, std::string_view(bytes.data() + kHeader2, bytes.size() - kHeader2),
                               uint8_t(bytes[16]), size, get_digest(bytes.data() + 17), kHeader2, inflated));
    if (!f.ParseFromArray(message.data(), int(message.size()))) return make_error(path + ": not a statistics file");
  } else {
    // Version 1.
    if (bytes.size() < 8) return make_error(path + ": statistics file truncated at offset " + std::to_string(bytes.size()));
    uint64_t size;
    std::memcpy(&size, bytes.data(), 8);
    if (size > kMaxMessage) return make_error(path + ": implausible statistics size " + std::to_string(size));
    FP4C_ASSIGN(const std::string raw,
                inflate_claimed(path, std::string_view(bytes.data() + 8, bytes.size() - 8), size, 8));
    if (!f.ParseFromString(raw)) return make_error(path + ": not a statistics file");
  }
  return from_message(path, f);
}

}  // namespace fp4c::passes
