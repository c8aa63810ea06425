#include "pipeline/distributed.h"

#include <algorithm>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <map>

#include <nlohmann/json.hpp>

#include "formats/hash.h"
#include "passes/stats.h"
#include "runtime/checkpoint_weights.h"

namespace fp4c::pipeline {
namespace {
namespace fs = std::filesystem;

template <typename T>
void put(std::string& out, const T& v) { out.append(reinterpret_cast<const char*>(&v), sizeof v); }
void put_bytes(std::string& out, const void* p, uint64_t n) {
  put(out, n);
  out.append(static_cast<const char*>(p), n);
}

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
  template <typename C>
  void get_bytes(C& c) {
    const uint64_t n = get<uint64_t>();
    if (!ok || n > in.size() - pos) { ok = false; return; }
    c.assign(in.data() + pos, in.data() + pos + n);
    pos += n;
  }
};

// Reads Prequantized records (as the ranks send them) into `pre`.
Status take_records(const std::string& bytes, std::vector<std::optional<ir::Prequantized>>& pre, const std::string& from) {
  Reader in{bytes};
  while (in.ok && in.pos < bytes.size()) {
    const uint64_t id = in.get<uint64_t>();
    ir::Prequantized p;
    in.get_bytes(p.quantizer);
    p.weight_hash_high = in.get<uint64_t>();
    p.weight_hash_low = in.get<uint64_t>();
    p.global_scale = in.get<float>();
    p.zero_scale = in.get<uint8_t>();
    in.get_bytes(p.packed);
    in.get_bytes(p.scales);
    p.sum_sq_err = in.get<double>();
    p.sum_sq_ref = in.get<double>();
    p.max_abs_err = in.get<double>();
    p.count = in.get<int64_t>();
    if (!in.ok || id >= pre.size()) return make_error("pack: " + from + ": malformed quantized Linears");
    pre[id] = std::move(p);
  }
  return {};
}

std::string layer_path(const std::string& dir, int layer) {
  return (fs::path(dir) / "pack" / ("layer-" + std::to_string(layer) + ".bin")).string();
}


struct Item {
  ir::TensorId id;
  double cost;
};

}  // namespace

Status prequantize_distributed(PassContext& ctx, runtime::Comm& comm) {
  ir::Model& model = ctx.model;
  auto& pre = model.annotations.prequantized;
  if (pre.size() != model.tensors.size()) pre.resize(model.tensors.size());
  // Each NVFP4 Linear's quantizer, as pack chooses it.
  std::map<int, std::vector<Item>> by_layer;
  std::vector<passes::Quantizer> quantizer(model.tensors.size(), ctx.quantizer);
  for (ir::TensorId id = 0; id < model.tensors.size(); ++id) {
    const auto& t = model.tensors[id];
    if (model.annotations.decision[id].format != ir::Format::NVFP4 || pre[id] || t.shape.size() != 2) continue;
    if (id < model.annotations.choice.size() && model.annotations.choice[id]) continue;   // auto's
    const passes::Quantizer& q = quantizer[id];
    if (q.kind == passes::Quantizer::Kind::Rule && q.rule == nvfp4::ScaleRule::Max) continue;
    const double rows = double(t.shape[0]), cols = double(t.shape[1]);
    by_layer[t.layer ? *t.layer : -1].push_back({id, rows * cols * (q.kind == passes::Quantizer::Kind::Gptq ? cols : 16.0)});
  }
  const nvfp4::ZeroScale zero = nvfp4::ZeroScale::CompressedTensors;   // pack's default (PackOptions)
  // With a checkpoint, the layers done before (rank 0's list, on every rank): their records from the files.
  std::string done;
  if (!ctx.checkpoint_dir.empty() && comm.rank() == 0) {
    std::error_code ec;
    fs::create_directories(fs::path(ctx.checkpoint_dir) / "pack", ec);
    for (const auto& [layer, items] : by_layer) {
      if (!fs::exists(layer_path(ctx.checkpoint_dir, layer), ec)) continue;
      FP4C_ASSIGN(std::string bytes, passes::read_checkpoint_file(layer_path(ctx.checkpoint_dir, layer)));
      FP4C_TRY(take_records(bytes, pre, layer_path(ctx.checkpoint_dir, layer)));
      done += std::to_string(layer) + ",";
    }
    if (!done.empty()) ctx.note("--checkpoint: the quantized Linears of layer(s) " + done.substr(0, done.size() - 1) +
                                " from " + ctx.checkpoint_dir);
  }
  FP4C_TRY(comm.broadcast(done));
  for (auto& [layer, items] : by_layer) {
    if (("," + done).find("," + std::to_string(layer) + ",") != std::string::npos) continue;
    // Largest first, each to the least loaded rank (ties: the lower rank).
    std::stable_sort(items.begin(), items.end(), [](const Item& a, const Item& b) { return a.cost > b.cost; });
    std::vector<double> load(size_t(comm.size()), 0.0);
    std::string mine;
    for (const Item& it : items) {
      const size_t r = size_t(std::min_element(load.begin(), load.end()) - load.begin());
      load[r] += it.cost;
      if (int(r) != comm.rank()) continue;
      const ir::TensorId id = it.id;
      const auto& t = model.tensors[id];
      FP4C_ASSIGN(std::vector<float> values, runtime::read_tensor(model, ctx.checkpoint.refs[id], id, /*release=*/false));
      float amax = nvfp4::amax_f32(values);
      if (const ir::FusedGroup* g = model.group_of(id))
        for (ir::TensorId m : g->members)
          if (m != id) {
            FP4C_ASSIGN(std::vector<float> other, runtime::read_tensor(model, ctx.checkpoint.refs[m], m, /*release=*/false));
            amax = std::max(amax, nvfp4::amax_f32(other));
          }
      const float G = nvfp4::global_scale(amax);
      const passes::SiteStats* site = passes::weight_input_stats(ctx.stats.get(), t);
      const int64_t rows = t.shape[0], cols = t.shape[1];
      ir::Prequantized p;
      p.quantizer = quantizer[id].name();
      const hash::Digest d = hash::xxh3_128(std::as_bytes(std::span(values)));
      p.weight_hash_high = d.high;
      p.weight_hash_low = d.low;
      p.global_scale = G;
      p.zero_scale = uint8_t(zero);
      p.packed.resize(size_t(rows * cols / 2));
      p.scales.resize(size_t(rows * cols / nvfp4::kBlock));
      nvfp4::ErrorStats err;
      FP4C_TRY(passes::quantize_weight(quantizer[id], values.data(), rows, cols, G, site, t.module, p.packed.data(),
                                       p.scales.data(), zero, &err));
      p.sum_sq_err = err.sum_sq_err;
      p.sum_sq_ref = err.sum_sq_ref;
      p.max_abs_err = err.max_abs_err;
      p.count = err.count;
      put(mine, uint64_t(id));
      put_bytes(mine, p.quantizer.data(), p.quantizer.size());
      put(mine, p.weight_hash_high);
      put(mine, p.weight_hash_low);
      put(mine, p.global_scale);
      put(mine, p.zero_scale);
      put_bytes(mine, p.packed.data(), p.packed.size());
      put_bytes(mine, p.scales.data(), p.scales.size());
      put(mine, p.sum_sq_err);
      put(mine, p.sum_sq_ref);
      put(mine, p.max_abs_err);
      put(mine, p.count);
    }
    FP4C_ASSIGN(auto all, comm.gather(mine));
    if (comm.rank() == 0) {
      if (!ctx.checkpoint_dir.empty()) {
        std::string bytes;
        for (const auto& a : all) bytes += a;
        FP4C_TRY(passes::write_checkpoint_file(layer_path(ctx.checkpoint_dir, layer), bytes));
      }
      for (size_t r = 0; r < all.size(); ++r)
        FP4C_TRY(take_records(all[r], pre, "rank " + std::to_string(r)));
    }
    if (!ctx.checkpoint_dir.empty()) {
      // No rank runs ahead of the layer rank 0 has saved.
      std::string saved;
      FP4C_TRY(comm.broadcast(saved));
    }
  }
  return {};
}

Status check_checkpoint(const std::string& dir, const std::vector<std::pair<std::string, std::string>>& fingerprint,
                        runtime::Comm& comm) {
  std::string refused;
  if (comm.rank() == 0) {
    const fs::path path = fs::path(dir) / "run.json";
    std::error_code ec;
    nlohmann::ordered_json want = nlohmann::ordered_json::object();
    for (const auto& [k, v] : fingerprint) want[k] = v;
    if (fs::exists(path, ec)) {
      auto text = passes::read_checkpoint_file(path.string());
      nlohmann::json have;
      if (text) have = nlohmann::json::parse(*text, nullptr, /*allow_exceptions=*/false);
      if (!text || !have.is_object() || !have.contains("options") || !have["options"].is_object()) {
        refused = path.string() + ": not an fp4c checkpoint (remove the directory or name another)";
      } else {
        std::string diffs;
        for (const auto& [k, v] : fingerprint) {
          const auto& o = have["options"];
          const std::string was = o.contains(k) && o[k].is_string() ? o[k].get<std::string>() : "(none)";
          if (was != v) diffs += (diffs.empty() ? "" : "; ") + k + " was '" + was + "', now '" + v + "'";
        }
        if (!diffs.empty())
          refused = "--checkpoint " + dir + " holds a run with other options or inputs: " + diffs +
                    " (rerun with those, or remove the directory)";
      }
    } else {
      fs::create_directories(dir, ec);
      nlohmann::ordered_json j;
      j["fp4c checkpoint"] = 1;
      j["options"] = want;
      FP4C_TRY(passes::write_checkpoint_file(path.string(), j.dump(1) + "\n"));
    }
  }
  FP4C_TRY(comm.broadcast(refused));
  if (!refused.empty()) return make_error(refused);
  return {};
}

}  // namespace fp4c::pipeline
