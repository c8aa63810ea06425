// The stats pass: statistics equal a direct computation over the hook's inputs, the file round-trips,
// and a corrupt file is an error.
#include <gtest/gtest.h>

#include <cmath>
#include <fstream>
#include <random>

#include <zlib.h>

#include <cstring>
#include <sys/resource.h>

#include "formats/hash.h"
#include "frontend/checkpoint.h"
#include "passes/stats.h"
#include "stats.pb.h"
#include "runtime/checkpoint_weights.h"
#include "test/support/tiny_checkpoint.h"

namespace fp4c::testing {
namespace {

TEST(StatsPass, MatchesADirectComputationOfEveryLinearInput) {
  TempDir tmp;
  const uint64_t seed = std::random_device{}();
  SCOPED_TRACE("seed " + std::to_string(seed));
  TinyShape shape;
  write_checkpoint(tmp.path / "m", shape, tiny_tensors(shape, seed));
  auto ckpt = frontend::open_checkpoint((tmp.path / "m").string());
  ASSERT_TRUE(ckpt.ok()) << ckpt.error().message;

  std::mt19937_64 rng(seed);
  std::vector<std::vector<int32_t>> seqs;
  for (int s = 0; s < 3; ++s) {
    std::vector<int32_t> ids(size_t(5 + 7 * s));
    for (auto& id : ids) id = int32_t(rng() % uint64_t(shape.vocab));
    seqs.push_back(ids);
  }

  runtime::Forward forward(ckpt->model.config, {});
  // What the hooks see, kept whole, to compute the statistics the slow obvious way.
  std::map<std::pair<int, ir::Role>, std::vector<float>> seen;
  std::map<std::pair<int, ir::Role>, int64_t> cols;
  {
    runtime::CheckpointWeights w(ckpt->model, ckpt->refs, false);
    auto emb = w.embedding();
    ASSERT_TRUE(emb.ok());
    auto acts = forward.embed(*emb, seqs);
    ASSERT_TRUE(acts.ok());
    for (int i = 0; i < shape.layers; ++i) {
      auto p = w.layer(i);
      ASSERT_TRUE(p.ok());
      ASSERT_TRUE(forward.layer(i, *p, *acts, [&](const runtime::LinearInput& in) {
        auto& v = seen[{in.layer, in.role}];
        v.insert(v.end(), in.x, in.x + in.rows * in.cols);
        cols[{in.layer, in.role}] = in.cols;
      }).ok());
    }
  }

  runtime::CheckpointWeights w(ckpt->model, ckpt->refs, false);
  auto stats = passes::collect_stats(forward, w, seqs, {.second_moments = true});
  ASSERT_TRUE(stats.ok()) << stats.error().message;
  ASSERT_EQ(stats->sites.size(), size_t(4 * shape.layers));
  for (const auto& s : stats->sites) {
    const auto& x = seen.at({s.layer, s.role});
    const int64_t c = cols.at({s.layer, s.role});
    const int64_t rows = int64_t(x.size()) / c;
    ASSERT_EQ(s.tokens, rows);
    ASSERT_EQ(s.cols(), c);
    for (int64_t j = 0; j < c; ++j) {
      float amax = 0, lo = INFINITY, hi = -INFINITY;
      double ms = 0;
      for (int64_t r = 0; r < rows; ++r) {
        const float v = x[size_t(r * c + j)];
        amax = std::max(amax, std::fabs(v));
        lo = std::min(lo, v);
        hi = std::max(hi, v);
        ms += double(v) * v;
      }
      EXPECT_EQ(s.absmax[size_t(j)], amax);
      EXPECT_EQ(s.min[size_t(j)], lo);
      EXPECT_EQ(s.max[size_t(j)], hi);
      EXPECT_NEAR(s.mean_square[size_t(j)], ms / double(rows), 1e-9 * (ms / double(rows)) + 1e-30);
    }
    // Second moments: a few entries against the direct sum, and symmetry.
    for (int64_t a : {int64_t(0), c / 3, c - 1})
      for (int64_t b : {int64_t(0), c / 2, c - 1}) {
        double m = 0;
        for (int64_t r = 0; r < rows; ++r) m += double(x[size_t(r * c + a)]) * x[size_t(r * c + b)];
        EXPECT_NEAR(s.second_moment[size_t(a * c + b)], m / double(rows), 1e-9 * std::fabs(m / double(rows)) + 1e-12);
        EXPECT_EQ(s.second_moment[size_t(a * c + b)], s.second_moment[size_t(b * c + a)]);
      }
  }

  // Round trip through the file, and a corrupt file.
  stats->model_key = "m";
  stats->calibration_key = "c";
  const std::string path = (tmp.path / "s.fp4c-stats").string();
  ASSERT_TRUE(passes::save_stats(*stats, path).ok());
  auto back = passes::load_stats(path);
  ASSERT_TRUE(back.ok()) << back.error().message;
  EXPECT_EQ(back->model_key, "m");
  ASSERT_EQ(back->sites.size(), stats->sites.size());
  for (size_t i = 0; i < back->sites.size(); ++i) {
    EXPECT_EQ(back->sites[i].absmax, stats->sites[i].absmax);
    EXPECT_EQ(back->sites[i].mean_square, stats->sites[i].mean_square);
    EXPECT_EQ(back->sites[i].second_moment, stats->sites[i].second_moment);
    EXPECT_EQ(back->sites[i].role, stats->sites[i].role);
  }
  std::string bytes = read_file(path);
  bytes[bytes.size() / 2] ^= 0x55;
  write_text(path, bytes);
  auto bad = passes::load_stats(path);
  ASSERT_FALSE(bad.ok());
  EXPECT_NE(bad.error().message.find(path), std::string::npos);
}

// Version 3 statistics files keep second moments out of the protobuf message (which protobuf caps at
// 2 GB; a 0.5B model's 24 layers have 2.5 GB of them) in a checksummed data section: round trip, the
// message stays small, a flipped byte, a truncated and a padded file; and versions 2 (upper triangles
// inside the message, stored with a checksum) and 1 (a zlib stream of full second moments) still read.
TEST(StatsFile, SecondMomentsLiveOutsideTheMessageAndOlderVersionsStillRead) {
  TempDir tmp;
  const uint64_t seed = std::random_device{}();
  SCOPED_TRACE("seed " + std::to_string(seed));
  std::mt19937_64 rng(seed);
  std::normal_distribution<double> nd;
  passes::ActivationStats stats;
  stats.model_key = "model";
  stats.calibration_key = "calib";
  stats.precision = "f32";
  for (int64_t c : {int64_t(48), int64_t(2912)}) {   // the second: upper triangle ~34 MB
    passes::SiteStats s;
    s.layer = int(c % 7);
    s.role = c == 48 ? ir::Role::Q : ir::Role::Down;
    s.tokens = 100;
    for (int64_t j = 0; j < c; ++j) {
      s.absmax.push_back(float(std::fabs(nd(rng))));
      s.min.push_back(-s.absmax.back());
      s.max.push_back(s.absmax.back());
      s.mean_square.push_back(std::fabs(nd(rng)));
    }
    s.second_moment.assign(size_t(c * c), 0);
    for (int64_t a = 0; a < c; ++a)
      for (int64_t b = a; b < c; ++b) s.second_moment[size_t(a * c + b)] = s.second_moment[size_t(b * c + a)] = nd(rng);
    stats.sites.push_back(std::move(s));
  }
  const std::string path = (tmp.path / "big.fp4c-stats").string();
  ASSERT_TRUE(passes::save_stats(stats, path).ok());
  const std::string bytes = read_file(path);
  ASSERT_EQ(bytes.substr(0, 8), "FP4CST03");
  uint64_t message_size = 0;
  std::memcpy(&message_size, bytes.data() + 8, 8);
  EXPECT_LT(message_size, uint64_t(200000)) << "per-channel vectors only, not the second moments";
  const size_t upper = size_t(48 * 49 / 2 + 2912 * 2913 / 2) * 8;
  EXPECT_GT(bytes.size(), upper);
  EXPECT_LT(bytes.size(), upper + (1 << 20)) << "the upper triangles only";
  auto back = passes::load_stats(path);
  ASSERT_TRUE(back.ok()) << back.error().message;
  ASSERT_EQ(back->sites.size(), 2u);
  EXPECT_EQ(back->precision, "f32");
  for (size_t i = 0; i < 2; ++i) {
    EXPECT_EQ(back->sites[i].second_moment, stats.sites[i].second_moment);
    EXPECT_EQ(back->sites[i].absmax, stats.sites[i].absmax);
    EXPECT_EQ(back->sites[i].role, stats.sites[i].role);
    EXPECT_EQ(back->sites[i].layer, stats.sites[i].layer);
  }

  std::string flipped = bytes;
  flipped[bytes.size() - 1000 - size_t(rng() % 100000)] ^= 0x10;
  write_text(path, flipped);
  auto bad = passes::load_stats(path);
  ASSERT_FALSE(bad.ok());
  EXPECT_NE(bad.error().message.find("checksum"), std::string::npos) << bad.error().message;
  EXPECT_NE(bad.error().message.find("layer 0 (down input)"), std::string::npos) << bad.error().message;
  EXPECT_NE(bad.error().message.find(path), std::string::npos);

  write_text(path, bytes.substr(0, bytes.size() - 5));
  bad = passes::load_stats(path);
  ASSERT_FALSE(bad.ok());
  EXPECT_NE(bad.error().message.find("truncated"), std::string::npos) << bad.error().message;

  write_text(path, bytes.substr(0, 60));
  bad = passes::load_stats(path);
  ASSERT_FALSE(bad.ok());
  EXPECT_NE(bad.error().message.find("truncated"), std::string::npos) << bad.error().message;

  write_text(path, bytes + "x");
  bad = passes::load_stats(path);
  ASSERT_FALSE(bad.ok());
  EXPECT_NE(bad.error().message.find("padded"), std::string::npos) << bad.error().message;

  {
    // A record that claims a million channels' second moments (4 TB) behind a valid checksum: refused as
    // truncated before anything that size is allocated.
    stats::StatsFile f;
    auto* p = f.add_sites();
    p->set_layer(3);
    p->set_role("down");
    const int64_t c = 1000000;
    for (int64_t j = 0; j < c; ++j) {
      p->add_absmax(1);
      p->add_min(-1);
      p->add_max(1);
      p->add_mean_square(1);
    }
    p->set_second_moment_upper_values(uint64_t(c) * uint64_t(c + 1) / 2);
    const std::string raw = f.SerializeAsString();
    const hash::Digest d = hash::xxh3_128(std::as_bytes(std::span(raw.data(), raw.size())));
    std::string v3(41, '\0');
    std::memcpy(v3.data(), "FP4CST03", 8);
    const uint64_t size = raw.size();
    std::memcpy(v3.data() + 8, &size, 8);
    std::memcpy(v3.data() + 16, &size, 8);
    const auto canonical = hash::to_canonical(d);
    std::memcpy(v3.data() + 25, canonical.data(), canonical.size());
    write_text(path, v3 + raw + std::string(64, '\1'));
    auto lying = passes::load_stats(path);
    ASSERT_FALSE(lying.ok());
    EXPECT_NE(lying.error().message.find("truncated"), std::string::npos) << lying.error().message;
    EXPECT_NE(lying.error().message.find("layer 3 (down input)"), std::string::npos) << lying.error().message;
  }

  {
    // Version 2: "FP4CST02", the message's size, method 0 (stored), its XXH3-128, the message with upper triangles.
    stats::StatsFile f;
    f.set_model_key("model");
    f.set_calibration_key("calib");
    const auto& s1 = stats.sites[1];
    auto* p = f.add_sites();
    p->set_layer(s1.layer);
    p->set_role("down");
    p->set_tokens(s1.tokens);
    *p->mutable_absmax() = {s1.absmax.begin(), s1.absmax.end()};
    *p->mutable_min() = {s1.min.begin(), s1.min.end()};
    *p->mutable_max() = {s1.max.begin(), s1.max.end()};
    *p->mutable_mean_square() = {s1.mean_square.begin(), s1.mean_square.end()};
    const size_t c = s1.absmax.size();
    for (size_t a = 0; a < c; ++a)
      for (size_t b = a; b < c; ++b) p->add_second_moment_upper(s1.second_moment[a * c + b]);
    const std::string raw = f.SerializeAsString();
    const hash::Digest d = hash::xxh3_128(std::as_bytes(std::span(raw.data(), raw.size())));
    std::string v2(33, '\0');
    std::memcpy(v2.data(), "FP4CST02", 8);
    const uint64_t size = raw.size();
    std::memcpy(v2.data() + 8, &size, 8);
    const auto canonical = hash::to_canonical(d);
    std::memcpy(v2.data() + 17, canonical.data(), canonical.size());
    write_text(path, v2 + raw);
    auto old = passes::load_stats(path);
    ASSERT_TRUE(old.ok()) << old.error().message;
    ASSERT_EQ(old->sites.size(), 1u);
    EXPECT_EQ(old->sites[0].second_moment, s1.second_moment);
    EXPECT_EQ(old->sites[0].role, ir::Role::Down);
  }

  // Version 1: the serialized StatsFile (full second moments) behind its size, zlib-compressed.
  stats::StatsFile f;
  f.set_model_key("model");
  f.set_calibration_key("calib");
  auto* p = f.add_sites();
  const auto& s0 = stats.sites[0];
  p->set_layer(s0.layer);
  p->set_role("q");
  p->set_tokens(s0.tokens);
  *p->mutable_absmax() = {s0.absmax.begin(), s0.absmax.end()};
  *p->mutable_min() = {s0.min.begin(), s0.min.end()};
  *p->mutable_max() = {s0.max.begin(), s0.max.end()};
  *p->mutable_mean_square() = {s0.mean_square.begin(), s0.mean_square.end()};
  *p->mutable_second_moment() = {s0.second_moment.begin(), s0.second_moment.end()};
  const std::string raw = f.SerializeAsString();
  uLongf n = compressBound(raw.size());
  std::string v1(8 + n, '\0');
  const uint64_t size = raw.size();
  std::memcpy(v1.data(), &size, 8);
  ASSERT_EQ(compress2(reinterpret_cast<Bytef*>(v1.data() + 8), &n, reinterpret_cast<const Bytef*>(raw.data()), raw.size(), 6), Z_OK);
  v1.resize(8 + n);
  write_text(path, v1);
  auto old = passes::load_stats(path);
  ASSERT_TRUE(old.ok()) << old.error().message;
  ASSERT_EQ(old->sites.size(), 1u);
  EXPECT_EQ(old->sites[0].second_moment, s0.second_moment);
  EXPECT_EQ(old->calibration_key, "calib");
}

}  // namespace
}  // namespace fp4c::testing

namespace fp4c::testing {
namespace {

long max_rss_kb() {
  struct rusage u {};
  getrusage(RUSAGE_SELF, &u);
  return u.ru_maxrss;
}

std::string zlib_of(const std::string& data) {
  uLongf n = compressBound(uLong(data.size()));
  std::string out(n, '\0');
  EXPECT_EQ(compress2(reinterpret_cast<Bytef*>(out.data()), &n, reinterpret_cast<const Bytef*>(data.data()),
                      uLong(data.size()), 9), Z_OK);
  out.resize(n);
  return out;
}

std::string le64(uint64_t v) { return std::string(reinterpret_cast<const char*>(&v), 8); }

// Versions 1 and 2 store a zlib stream with the size it inflates to. A file that lies about that
// size is corrupt, found with no more memory than the stream really yields: a 100-byte file
// claiming 2 GiB used to allocate (and zero) 2 GiB before inflating.
TEST(StatsFile, ClaimedSizesAreNotTrustedBeforeInflating) {
  TempDir tmp;
  const std::string path = (tmp.path / "lie.fp4c-stats").string();
  const std::string small = zlib_of("hello, statistics");
  const std::string digest(16, '\0');
  const long before = max_rss_kb();
  for (uint64_t claim : {uint64_t(1) << 31, uint64_t(1) << 30, uint64_t(5)}) {
    write_text(path, std::string("FP4CST02") + le64(claim) + std::string(1, '\1') + digest + small);
    auto bad = passes::load_stats(path);
    ASSERT_FALSE(bad.ok());
    EXPECT_NE(bad.error().message.find(path + ": corrupt statistics file (zlib stream at offset 33)"), std::string::npos)
        << bad.error().message;
    write_text(path, le64(claim) + small);   // version 1
    bad = passes::load_stats(path);
    ASSERT_FALSE(bad.ok());
    EXPECT_NE(bad.error().message.find("corrupt statistics file (zlib stream at offset 8)"), std::string::npos)
        << bad.error().message;
  }
  // A stream that inflates to far more than it claims stops at the claim.
  write_text(path, std::string("FP4CST02") + le64(1000) + std::string(1, '\1') + digest +
                       zlib_of(std::string(20'000'000, '\0')));
  auto bomb = passes::load_stats(path);
  ASSERT_FALSE(bomb.ok());
  EXPECT_NE(bomb.error().message.find("corrupt statistics file"), std::string::npos) << bomb.error().message;
  // A truncated stream.
  write_text(path, le64(17) + small.substr(0, small.size() / 2));
  EXPECT_FALSE(passes::load_stats(path).ok());
  EXPECT_LT(max_rss_kb() - before, 300 * 1024) << "KiB of peak RSS grown while reading lying files";
}

}  // namespace
}  // namespace fp4c::testing
