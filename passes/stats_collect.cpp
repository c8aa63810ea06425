// collect_stats: drives the runtime over the calibration set (kept apart from the statistics data
// types so that code reading statistics does not link the runtime).
#include <algorithm>
#include <cmath>
#include <limits>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <map>
#include <string>
#include <vector>

#include "base/profile.h"
#include "passes/channel_stats.h"
#include "passes/second_moments.h"
#include "passes/stats.h"

namespace fp4c::passes {

// Writes `head` + `body` to `path` through a temporary file and a rename.
Status write_checkpoint_file(const std::string& path, const std::string& head, const void* body, size_t body_bytes) {
  const std::string tmp = path + ".tmp";
  std::FILE* f = std::fopen(tmp.c_str(), "wb");
  if (!f) return make_error(tmp + ": cannot create (--checkpoint)");
  bool ok = std::fwrite(head.data(), 1, head.size(), f) == head.size() &&
            (body_bytes == 0 || std::fwrite(body, 1, body_bytes, f) == body_bytes);
  ok = (std::fclose(f) == 0) && ok;
  if (!ok || std::rename(tmp.c_str(), path.c_str()) != 0) {
    std::remove(tmp.c_str());
    return make_error(path + ": cannot write (--checkpoint)");
  }
  return {};
}

Expected<std::string> read_checkpoint_file(const std::string& path) {
  std::FILE* f = std::fopen(path.c_str(), "rb");
  if (!f) return make_error(path + ": cannot open (--checkpoint)");
  std::string out;
  char buf[1 << 16];
  size_t got;
  while ((got = std::fread(buf, 1, sizeof buf, f)) > 0) out.append(buf, got);
  const bool bad = std::ferror(f);
  std::fclose(f);
  if (bad) return make_error(path + ": read error (--checkpoint)");
  return out;
}


namespace {

// Folds rows of x into the site's running statistics. Each column is reduced over rows in row order,
// so the figures do not depend on the thread count (passes/channel_stats.h).
void accumulate(SiteStats& s, const float* x, int64_t rows, int64_t cols, bool second_moments) {
  if (s.absmax.empty()) {
    s.absmax.assign(size_t(cols), 0.0f);
    s.min.assign(size_t(cols), std::numeric_limits<float>::infinity());
    s.max.assign(size_t(cols), -std::numeric_limits<float>::infinity());
    s.mean_square.assign(size_t(cols), 0.0);   // holds sums until finish()
    if (second_moments) s.second_moment.assign(size_t(cols * cols), 0.0);
  }
  accumulate_channel_stats(x, rows, cols, {s.absmax.data(), s.min.data(), s.max.data(), s.mean_square.data()});
  if (second_moments) accumulate_second_moments(s.second_moment.data(), x, rows, cols);
  s.tokens += rows;
}

void finish(SiteStats& s) {
  const double n = double(std::max<int64_t>(s.tokens, 1));
  for (auto& v : s.mean_square) v /= n;
  const int64_t cols = s.cols();
  if (!s.second_moment.empty())
    for (int64_t i = 0; i < cols; ++i)
      for (int64_t j = i; j < cols; ++j) {
        const double v = s.second_moment[size_t(i * cols + j)] / n;
        s.second_moment[size_t(i * cols + j)] = v;
        s.second_moment[size_t(j * cols + i)] = v;
      }
}


// ---- Calibration blocks and the fixed reduction tree ----------------------------------------------
//
// The sequences are cut into calibration_blocks(n) contiguous blocks, a function of n only. Each block
// runs through the forward on its own and its statistics start from zero; the statistics of the set are
// the blocks' folded over a fixed binary tree: node (level L, index k) holds blocks [k 2^L, (k+1) 2^L)
// (clipped to the set), and is left + right (or left alone when right holds no block). One process and N
// ranks, whatever N, run the same forward per block and add the same partial sums in the same tree, so
// their statistics are the same bits. A rank holds a contiguous run of blocks, folds the nodes that lie
// inside it (at most 2 log2(blocks) of them remain), and sends those to rank 0, which completes the tree
// and broadcasts the finished statistics.

struct Node {
  int level = 0;
  int64_t index = 0;
  std::vector<SiteStats> sites;   // in site order (Q, O, Gate, Down), sums (not yet finished)
};

// a += b, site by site: max and min stay exact, sums in float64.
Status merge_into(std::vector<SiteStats>& a, const std::vector<SiteStats>& b) {
  if (b.empty()) return {};   // a block of empty sequences saw nothing
  if (a.empty()) {
    a = b;
    return {};
  }
  if (a.size() != b.size()) return make_error("stats: blocks disagree on the number of sites");
  for (size_t i = 0; i < a.size(); ++i) {
    SiteStats& x = a[i];
    const SiteStats& y = b[i];
    if (x.role != y.role || x.expert != y.expert || x.cols() != y.cols() ||
        x.second_moment.size() != y.second_moment.size())
      return make_error("stats: blocks disagree on the sites of layer " + std::to_string(x.layer));
    for (size_t c = 0; c < x.absmax.size(); ++c) {
      x.absmax[c] = std::max(x.absmax[c], y.absmax[c]);
      x.min[c] = std::min(x.min[c], y.min[c]);
      x.max[c] = std::max(x.max[c], y.max[c]);
      x.mean_square[c] += y.mean_square[c];
    }
    const int64_t cols = x.cols();
    if (!x.second_moment.empty())
      for (int64_t r = 0; r < cols; ++r)   // the upper triangle: what accumulate_second_moments fills
        for (int64_t c = r; c < cols; ++c) x.second_moment[size_t(r * cols + c)] += y.second_moment[size_t(r * cols + c)];
    x.tokens += y.tokens;
  }
  return {};
}

}  // namespace

void accumulate_site(SiteStats& s, const float* x, int64_t rows, int64_t cols, bool second_moments) {
  accumulate(s, x, rows, cols, second_moments);
}
void finish_site(SiteStats& s) { finish(s); }

namespace {

// Levels of the tree over `blocks` leaves: the root is (levels, 0).
int tree_levels(int64_t blocks) {
  int l = 0;
  while ((int64_t(1) << l) < blocks) ++l;
  return l;
}

// Appends a block's node to `stack` and folds what can be folded inside this rank's run of blocks.
Status push_block(std::vector<Node>& stack, Node leaf, int64_t blocks) {
  const int top_level = tree_levels(blocks);
  stack.push_back(std::move(leaf));
  for (;;) {
    Node& t = stack.back();
    if (stack.size() >= 2) {
      Node& l = stack[stack.size() - 2];
      if (l.level == t.level && l.index % 2 == 0 && l.index + 1 == t.index) {
        FP4C_TRY(merge_into(l.sites, t.sites));
        stack.pop_back();
        stack.back().level += 1;
        stack.back().index /= 2;
        continue;
      }
    }
    // A left child without a right sibling (past the last block) is its parent.
    if (t.level < top_level && t.index % 2 == 0 && ((t.index + 1) << t.level) >= blocks) {
      t.level += 1;
      t.index /= 2;
      continue;
    }
    return {};
  }
}

// Serialization of nodes (little-endian, this machine's float formats; every rank is the same build).
template <typename T>
void put(std::string& out, const T& v) { out.append(reinterpret_cast<const char*>(&v), sizeof v); }
template <typename T>
void put_span(std::string& out, const T* p, size_t n) { out.append(reinterpret_cast<const char*>(p), n * sizeof(T)); }

struct Reader {
  const std::string& in;
  size_t pos = 0;
  bool ok = true;
  template <typename T>
  T get() {
    T v{};
    if (pos + sizeof v > in.size()) { ok = false; return v; }
    std::memcpy(&v, in.data() + pos, sizeof v);
    pos += sizeof v;
    return v;
  }
  template <typename T>
  void get_span(T* p, size_t n) {
    if (n > (in.size() - pos) / sizeof(T)) { ok = false; return; }
    std::memcpy(p, in.data() + pos, n * sizeof(T));
    pos += n * sizeof(T);
  }
};

void put_sites(std::string& out, const std::vector<SiteStats>& sites) {
  put(out, uint32_t(sites.size()));
  for (const SiteStats& s : sites) {
    const int64_t cols = s.cols();
    put(out, int32_t(s.layer));
    put(out, int32_t(s.role));
    put(out, int32_t(s.expert));
    put(out, int64_t(s.tokens));
    put(out, cols);
    put(out, uint8_t(s.second_moment.empty() ? 0 : 1));
    put_span(out, s.absmax.data(), size_t(cols));
    put_span(out, s.min.data(), size_t(cols));
    put_span(out, s.max.data(), size_t(cols));
    put_span(out, s.mean_square.data(), size_t(cols));
    if (!s.second_moment.empty())   // the upper triangle, row by row
      for (int64_t r = 0; r < cols; ++r) put_span(out, s.second_moment.data() + r * cols + r, size_t(cols - r));
  }
}

// `full`: the lower triangle mirrored (finished statistics); else left as zeros (partial sums).
Status get_sites(Reader& in, std::vector<SiteStats>& sites, bool full) {
  const uint32_t n = in.get<uint32_t>();
  if (!in.ok || n > (in.in.size() - in.pos) / 25) return make_error("stats: a rank sent a malformed partial");
  sites.resize(n);
  for (SiteStats& s : sites) {
    s.layer = in.get<int32_t>();
    s.role = ir::Role(in.get<int32_t>());
    s.expert = in.get<int32_t>();
    s.tokens = in.get<int64_t>();
    const int64_t cols = in.get<int64_t>();
    const bool m2 = in.get<uint8_t>() != 0;
    if (!in.ok || cols < 0 || uint64_t(cols) > (in.in.size() - in.pos) / 4)
      return make_error("stats: a rank sent a malformed partial");
    s.absmax.resize(size_t(cols));
    s.min.resize(size_t(cols));
    s.max.resize(size_t(cols));
    s.mean_square.resize(size_t(cols));
    in.get_span(s.absmax.data(), size_t(cols));
    in.get_span(s.min.data(), size_t(cols));
    in.get_span(s.max.data(), size_t(cols));
    in.get_span(s.mean_square.data(), size_t(cols));
    if (m2 && in.ok) {
      if (uint64_t(cols) * uint64_t(cols + 1) / 2 > (in.in.size() - in.pos) / 8)
        return make_error("stats: a rank sent a malformed partial");
      s.second_moment.assign(size_t(cols * cols), 0.0);
      for (int64_t r = 0; r < cols; ++r) in.get_span(s.second_moment.data() + r * cols + r, size_t(cols - r));
      if (full)
        for (int64_t r = 0; r < cols; ++r)
          for (int64_t c = r + 1; c < cols; ++c) s.second_moment[size_t(c * cols + r)] = s.second_moment[size_t(r * cols + c)];
    }
    if (!in.ok) return make_error("stats: a rank sent a truncated partial");
  }
  return {};
}

// The value of node (level, index) from the nodes the ranks folded (`have`, consumed).
Expected<std::vector<SiteStats>> tree_value(std::map<std::pair<int, int64_t>, std::vector<SiteStats>>& have,
                                            int level, int64_t index, int64_t blocks) {
  auto it = have.find({level, index});
  if (it != have.end()) {
    std::vector<SiteStats> v = std::move(it->second);
    have.erase(it);
    return v;
  }
  if (level == 0) return make_error("stats: no rank sent calibration block " + std::to_string(index));
  FP4C_ASSIGN(auto left, tree_value(have, level - 1, 2 * index, blocks));
  if (((2 * index + 1) << (level - 1)) < blocks) {
    FP4C_ASSIGN(auto right, tree_value(have, level - 1, 2 * index + 1, blocks));
    FP4C_TRY(merge_into(left, right));
  }
  return left;
}

// ---- Checkpoint files (StatsOptions::checkpoint_dir) --------------------------------------------------

constexpr char kLayerMagic[8] = {'F', 'P', '4', 'C', 'L', 'S', '0', '2'};   // 02: sites carry their expert
constexpr char kHiddenMagic[8] = {'F', 'P', '4', 'C', 'H', 'S', '0', '1'};

std::string layer_file(const std::string& dir, int layer) {
  return (std::filesystem::path(dir) / ("layer-" + std::to_string(layer) + ".stats")).string();
}
// Two generations per block: the one being written never replaces the one a resume may need.
std::string hidden_file(const std::string& dir, int64_t block, int layer) {
  return (std::filesystem::path(dir) / ("block-" + std::to_string(block) + "-" + std::to_string(layer % 2) + ".hidden"))
      .string();
}

Status save_layer(const std::string& dir, int layer, const std::vector<SiteStats>& finished) {
  std::string bytes(kLayerMagic, 8);
  put(bytes, int32_t(layer));
  put_sites(bytes, finished);
  return write_checkpoint_file(layer_file(dir, layer), bytes, nullptr, 0);
}

Expected<std::vector<SiteStats>> load_layer(const std::string& dir, int layer) {
  const std::string path = layer_file(dir, layer);
  FP4C_ASSIGN(std::string bytes, read_checkpoint_file(path));
  if (bytes.size() < 12 || std::memcmp(bytes.data(), kLayerMagic, 8) != 0)
    return make_error(path + ": not a layer's statistics (--checkpoint)");
  Reader in{bytes, 8};
  if (in.get<int32_t>() != layer) return make_error(path + ": the statistics of another layer (--checkpoint)");
  std::vector<SiteStats> sites;
  FP4C_TRY(get_sites(in, sites, true));
  if (in.pos != bytes.size()) return make_error(path + ": trailing bytes (--checkpoint)");
  return sites;
}

Status save_hidden(const std::string& dir, int64_t block, int layer, const runtime::Activations& a) {
  std::string head(kHiddenMagic, 8);
  put(head, int32_t(layer));
  put(head, int64_t(a.hidden.size()));
  return write_checkpoint_file(hidden_file(dir, block, layer), head, a.hidden.data(), a.hidden.size() * sizeof(float));
}

Status load_hidden(const std::string& dir, int64_t block, int layer, runtime::Activations& a) {
  const std::string path = hidden_file(dir, block, layer);
  std::FILE* f = std::fopen(path.c_str(), "rb");
  if (!f) return make_error(path + ": cannot open the hidden states of block " + std::to_string(block) + " (--checkpoint)");
  char head[20];
  int32_t l = -1;
  int64_t n = -1;
  bool ok = std::fread(head, 1, sizeof head, f) == sizeof head && std::memcmp(head, kHiddenMagic, 8) == 0;
  if (ok) {
    std::memcpy(&l, head + 8, 4);
    std::memcpy(&n, head + 12, 8);
    ok = l == layer && n == int64_t(a.hidden.size()) &&
         std::fread(a.hidden.data(), sizeof(float), a.hidden.size(), f) == a.hidden.size();
  }
  std::fclose(f);
  if (!ok)
    return make_error(path + ": not the hidden states of block " + std::to_string(block) + " after layer " +
                      std::to_string(layer) + " (--checkpoint)");
  return {};
}

}  // namespace

int checkpointed_layers(const std::string& checkpoint_dir, int layers) {
  int done = 0;
  std::error_code ec;
  while (done < layers && std::filesystem::exists(layer_file(checkpoint_dir, done), ec)) ++done;
  return done;
}

std::string pack_sites(const ActivationStats& stats) {
  std::string out;
  put_sites(out, stats.sites);
  return out;
}

Expected<ActivationStats> unpack_sites(const std::string& bytes) {
  ActivationStats out;
  Reader in{bytes};
  FP4C_TRY(get_sites(in, out.sites, true));
  if (in.pos != bytes.size()) return make_error("stats: packed statistics have trailing bytes");
  return out;
}

int64_t calibration_blocks(int64_t sequences) { return std::min<int64_t>(sequences, kMaxCalibrationBlocks); }

std::pair<int64_t, int64_t> rank_blocks(int64_t blocks, int rank, int ranks) {
  return {blocks * rank / ranks, blocks * (rank + 1) / ranks};
}

Expected<ActivationStats> collect_stats(const runtime::Forward& forward, runtime::WeightSource& weights,
                                        const std::vector<std::vector<int32_t>>& sequences,
                                        const StatsOptions& options,
                                        const std::function<void(int, int)>& progress, runtime::Comm& comm) {
  if (sequences.empty()) return make_error("stats: the calibration set has no sequences");
  const int layers = int(forward.config().num_hidden_layers);
  const int64_t n = int64_t(sequences.size());
  const int64_t blocks = calibration_blocks(n);
  const auto [first, last] = rank_blocks(blocks, comm.rank(), comm.size());
  const std::string& dir = options.checkpoint_dir;
  ActivationStats out;
  // With a checkpoint: the layers rank 0 finds done are read back (the same count on every rank).
  int start = 0;
  if (!dir.empty()) {
    std::error_code ec;
    std::filesystem::create_directories(dir, ec);
    std::string count;
    if (comm.rank() == 0) count = std::to_string(checkpointed_layers(dir, layers));
    FP4C_TRY(comm.broadcast(count));
    start = std::stoi(count);
    for (int i = 0; i < start; ++i) {
      FP4C_ASSIGN(auto sites, load_layer(dir, i));
      for (SiteStats& st : sites) out.sites.push_back(std::move(st));
      if (progress) progress(i + 1, layers);
    }
  }
  // This rank's blocks' hidden states; they never leave the rank.
  std::vector<runtime::Activations> acts;
  for (int64_t b = first; b < last && start < layers; ++b) {
    const std::vector<std::vector<int32_t>> part(sequences.begin() + b * n / blocks,
                                                 sequences.begin() + (b + 1) * n / blocks);
    FP4C_ASSIGN(auto a, forward.embed(weights, part));
    if (start > 0) FP4C_TRY(load_hidden(dir, b, start - 1, a));
    acts.push_back(std::move(a));
  }
  for (int i = start; i < layers; ++i) {
    std::vector<Node> stack;
    if (first < last) {
      FP4C_ASSIGN(auto params, weights.layer(i));
      // Each Linear's weight converted once for all the blocks (of one length) instead of once per block.
      const auto converted = forward.hold_converted_weights(params);
      for (int64_t b = first; b < last; ++b) {
        // Keyed by (expert, role): a sparse layer's experts each have their Gate and Down sites, and its Down
        // (expert -1) is the union of every expert's down input, expert by expert.
        std::map<std::pair<int, ir::Role>, SiteStats> sites;
        const auto site = [&](ir::Role role, int expert) -> SiteStats& {
          SiteStats& s = sites[{expert, role}];
          s.layer = i;
          s.role = role;
          s.expert = expert;
          return s;
        };
        runtime::LinearHook hook = [&](const runtime::LinearInput& in) {
          profile::Scope timed(profile::Stage::Stats);
          accumulate(site(in.role, in.expert), in.x, in.rows, in.cols, options.second_moments);
          if (in.expert >= 0 && in.role == ir::Role::Down)
            accumulate(site(ir::Role::Down, -1), in.x, in.rows, in.cols, options.second_moments);
        };
        FP4C_TRY(forward.layer(i, params, acts[size_t(b - first)], hook));
        // Every block holds every site of a sparse layer, an expert that no token of the block reached with
        // zero tokens (so that blocks fold site by site).
        const ir::ModelConfig& mc = forward.config();
        if (mc.moe_layer(i) && acts[size_t(b - first)].tokens() > 0) {
          const int64_t cols[] = {mc.hidden_size, mc.moe_intermediate_size};
          for (int e = -1; e < int(mc.num_experts); ++e)
            for (int r = 0; r < 2; ++r) {
              SiteStats& s = site(r ? ir::Role::Down : ir::Role::Gate, e);
              if (s.absmax.empty()) accumulate(s, nullptr, 0, cols[r], options.second_moments);
            }
        }
        // In site order: Q, O, Gate, Down, then each expert's Gate and Down, by expert (the map's order, the
        // roles' enumerators ordering Gate before Down).
        Node leaf{0, b, {}};
        for (ir::Role r : {ir::Role::Q, ir::Role::O, ir::Role::Gate, ir::Role::Down}) {
          auto it = sites.find({-1, r});
          if (it != sites.end()) leaf.sites.push_back(std::move(it->second));
        }
        for (auto& [key, s] : sites)
          if (key.first >= 0) leaf.sites.push_back(std::move(s));
        FP4C_TRY(push_block(stack, std::move(leaf), blocks));
        if (!dir.empty()) FP4C_TRY(save_hidden(dir, b, i, acts[size_t(b - first)]));
      }
    }
    std::map<std::pair<int, int64_t>, std::vector<SiteStats>> have;
    if (comm.distributed()) {
      std::string mine;
      put(mine, uint32_t(comm.rank() == 0 ? 0 : stack.size()));
      if (comm.rank() != 0)
        for (const Node& nd : stack) {
          put(mine, int32_t(nd.level));
          put(mine, int64_t(nd.index));
          put_sites(mine, nd.sites);
        }
      FP4C_ASSIGN(auto all, comm.gather(mine));
      for (size_t r = 1; r < all.size(); ++r) {
        Reader in{all[r]};
        const uint32_t count = in.get<uint32_t>();
        for (uint32_t k = 0; k < count && in.ok; ++k) {
          const int level = in.get<int32_t>();
          const int64_t index = in.get<int64_t>();
          std::vector<SiteStats> sites;
          FP4C_TRY(get_sites(in, sites, false));
          have[{level, index}] = std::move(sites);
        }
        if (!in.ok) return make_error("stats: rank " + std::to_string(r) + " sent a truncated partial");
      }
    }
    std::vector<SiteStats> finished;
    if (comm.rank() == 0) {
      for (Node& nd : stack) have[{nd.level, nd.index}] = std::move(nd.sites);
      FP4C_ASSIGN(finished, tree_value(have, tree_levels(blocks), 0, blocks));
      for (SiteStats& s : finished) finish(s);
      if (!dir.empty()) FP4C_TRY(save_layer(dir, i, finished));
    }
    if (comm.distributed()) {
      std::string bytes;
      if (comm.rank() == 0) put_sites(bytes, finished);
      FP4C_TRY(comm.broadcast(bytes));
      if (comm.rank() != 0) {
        Reader in{bytes};
        FP4C_TRY(get_sites(in, finished, true));
      }
    }
    for (SiteStats& s : finished) out.sites.push_back(std::move(s));
    if (progress) progress(i + 1, layers);
    comm.test_point();
  }
  return out;
}

}  // namespace fp4c::passes
