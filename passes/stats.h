// The `stats` pass: per-channel statistics of every Linear group's input over a calibration set,
// collected through the runtime's hooks while it runs the model layer by layer.
#pragma once

#include <map>
#include <memory>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include "base/expected.h"
#include "ir/model.h"
#include "runtime/forward.h"

namespace fp4c::passes {

// Statistics of the input of one Linear group (q/k/v share one input, as gate/up do).
struct SiteStats {
  int layer = 0;
  ir::Role role = ir::Role::Q;    // Q, O, Gate or Down
  int64_t tokens = 0;
  std::vector<float> absmax, min, max;
  std::vector<double> mean_square;
  std::vector<double> second_moment;   // [cols, cols], X^T X / tokens; empty unless asked for
  int64_t cols() const { return int64_t(absmax.size()); }
  float tensor_absmax() const;         // max over channels
};

struct ActivationStats {
  std::string model_key;
  std::string calibration_key;
  std::string precision;
  std::vector<SiteStats> sites;
  // Sites not in `sites` are looked up here (an overlay: a pass that rescaled some sites' statistics
  // replaces those without copying the rest).
  std::shared_ptr<const ActivationStats> under;
  const SiteStats* find(int layer, ir::Role role) const;
};

// `base` with the sites of `replaced` (by layer and role) in place of its own.
std::shared_ptr<const ActivationStats> overlay_stats(std::shared_ptr<const ActivationStats> base,
                                                     std::vector<SiteStats> replaced);

// The group input role that feeds a Linear of `role` (q/k/v -> Q, gate/up -> Gate, o -> O, down -> Down).
std::optional<ir::Role> input_site_role(ir::Role role);

struct StatsOptions {
  bool second_moments = false;
};

// Runs the model over `sequences` layer by layer and collects statistics at every Linear group's
// input. `progress` (may be empty) is told after each layer.
Expected<ActivationStats> collect_stats(const runtime::Forward& forward, runtime::WeightSource& weights,
                                        const std::vector<std::vector<int32_t>>& sequences,
                                        const StatsOptions& options,
                                        const std::function<void(int layer, int layers)>& progress = {});

// zlib-compressed protobuf (formats/stats.proto). Errors name the file.
Status save_stats(const ActivationStats& stats, const std::string& path);
Expected<ActivationStats> load_stats(const std::string& path);

}  // namespace fp4c::passes
