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
#include "runtime/comm.h"
#include "runtime/forward.h"

namespace fp4c::passes {

// Statistics of the input of one Linear group (q/k/v share one input, as gate/up do).
struct SiteStats {
  int layer = 0;
  ir::Role role = ir::Role::Q;    // Q, O, Gate or Down
  // MoE: the expert whose routed tokens these are (Gate: its gate/up input, Down: its down input), or -1: on a
  // sparse layer, Gate is the MLP norm's output over every token (the router's input) and Down the union of
  // every expert's down input (what a layer-wide down input scale is taken from).
  int expert = -1;
  int64_t tokens = 0;
  std::vector<float> absmax, min, max;
  std::vector<double> mean_square;
  std::vector<double> second_moment;   // [cols, cols], X^T X / tokens; empty unless asked for
  // GPTAQ's asymmetric statistics, from sequential calibration only (never in a statistics file):
  // Xq the input on the quantized model (under W4A4 fake-quantized as the Linear sees it), X the input on
  // the unquantized model, for the same tokens. [cols, cols] each, empty unless collected.
  std::vector<double> asym_second_moment;   // Xq^T Xq / tokens
  std::vector<double> asym_cross;           // (X - Xq)^T Xq / tokens, all of it

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
  const SiteStats* find(int layer, ir::Role role, int expert = -1) const;
};

// Below this many routed calibration tokens an expert's own statistics are not used: its Linears take the
// layer's (gate/up: the MLP norm's output over every token; down: the union of every expert's down input).
constexpr int64_t kMinExpertTokens = ir::kMinExpertTokens;

// The statistics a Linear weight's quantizer uses: its input site's, or for an expert's Linear that expert's own
// (its routed tokens) unless it had fewer than kMinExpertTokens, then the layer's (above). Null if none.
const SiteStats* weight_input_stats(const ActivationStats* stats, const ir::TensorInfo& t);

// `base` with the sites of `replaced` (by layer and role) in place of its own.
std::shared_ptr<const ActivationStats> overlay_stats(std::shared_ptr<const ActivationStats> base,
                                                     std::vector<SiteStats> replaced);

// The group input role that feeds a Linear of `role` (q/k/v -> Q, gate/up -> Gate, o -> O, down -> Down).
std::optional<ir::Role> input_site_role(ir::Role role);

struct StatsOptions {
  bool second_moments = false;
  // MoE: every calibration token through every expert for the statistics (llm-compressor's
  // moe_calibrate_all_experts); the hidden states passed on stay the routed ones.
  bool all_experts = false;
  // Where collect_stats keeps its progress (`fp4c quantize --checkpoint`; empty: nowhere): after each
  // layer, the layer's finished statistics (rank 0) and each block's hidden states (its rank), each
  // written atomically; a run finding them continues at the first layer without statistics. Under
  // MPI the directory must be one every rank sees (a shared filesystem).
  std::string checkpoint_dir;
};

// Runs the model over `sequences` layer by layer and collects statistics at every Linear group's
// input. `progress` (may be empty) is told after each layer.
// The sequences run in calibration_blocks() contiguous blocks, each from zero, folded over a fixed tree
// (passes/stats_collect.cpp): the same bits in one process and over any number of ranks of `comm`, each
// running the blocks rank_blocks() gives it; every rank returns the whole statistics.
Expected<ActivationStats> collect_stats(const runtime::Forward& forward, runtime::WeightSource& weights,
                                        const std::vector<std::vector<int32_t>>& sequences,
                                        const StatsOptions& options,
                                        const std::function<void(int layer, int layers)>& progress = {},
                                        runtime::Comm& comm = runtime::Comm::single());

// One site's statistics as collect_stats makes them for one block: rows of x folded into `s` (empty at
// first: sized from cols), then finish_site turns the sums into means (and mirrors the second moments'
// upper triangle). Each column is reduced over the rows in row order: the same bits at any thread count.
void accumulate_site(SiteStats& s, const float* x, int64_t rows, int64_t cols, bool second_moments);
void finish_site(SiteStats& s);

// --checkpoint files: `head` + `body` written to `path` through a temporary file and a rename (nothing
// half-written is ever under `path`), and a whole file read back; errors name the path.
Status write_checkpoint_file(const std::string& path, const std::string& head, const void* body = nullptr,
                             size_t body_bytes = 0);
Expected<std::string> read_checkpoint_file(const std::string& path);

// How many layers, from layer 0, have their statistics in `checkpoint_dir` (StatsOptions).
int checkpointed_layers(const std::string& checkpoint_dir, int layers);

// The sites of `stats` as bytes (a rank's message: this build's float formats), and back (keys empty).
std::string pack_sites(const ActivationStats& stats);
Expected<ActivationStats> unpack_sites(const std::string& bytes);

// Blocks of a calibration set of `sequences` (a function of the count only), and the blocks [first, last)
// of rank `rank` of `ranks`.
constexpr int64_t kMaxCalibrationBlocks = 64;
int64_t calibration_blocks(int64_t sequences);
std::pair<int64_t, int64_t> rank_blocks(int64_t blocks, int rank, int ranks);

// zlib-compressed protobuf (formats/stats.proto). Errors name the file.
Status save_stats(const ActivationStats& stats, const std::string& path);
Expected<ActivationStats> load_stats(const std::string& path);

}  // namespace fp4c::passes
