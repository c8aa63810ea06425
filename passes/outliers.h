// The `outliers` pass: how concentrated each Linear's weight columns and input channels are
// (max/median, excess kurtosis, channels above k x median, the largest channels), for the manifest,
// `fp4c inspect --outliers` and the sensitivity pass. It reads weights and statistics; it rewrites nothing.
#pragma once

#include <functional>
#include <span>
#include <string>
#include <vector>

#include "base/expected.h"
#include "ir/model.h"
#include "passes/stats.h"

namespace fp4c::passes {

// Statistics of per-channel magnitudes (all >= 0; a NaN counts as 0):
// - median: the lower middle of the sorted magnitudes (element (n-1)/2, so always one channel's value);
// - max_over_median: max / median; +inf when the median is 0 and the max is not; 1 when both are 0;
// - kurtosis: population excess kurtosis m4 / m2^2 - 3 in double precision; 0 when m2 == 0;
// - above_k: channels with magnitude > k x median;
// - top: the min(top, n) largest (index, magnitude), descending, ties by lower index.
ir::ChannelOutliers channel_outliers(std::span<const float> magnitudes, double k, int top);

// max |W[:, j]| for each column j of a row-major [out, in] matrix (NaN ignored). OpenMP over rows with
// per-thread maxima merged in thread order: the same result whatever the thread count.
std::vector<float> column_absmax(std::span<const float> w, int64_t out, int64_t in);

// For every Linear weight of `model` (ir::is_linear(role), ParamKind::Weight, 2-D [out, in], lm_head
// included): the weight's column magnitudes max |W[:, j]| from `read(id)` (float values, [out, in]
// row-major, rewrites already applied) and, when `stats` (may be null) has the site feeding it with `in`
// channels, the activation's channel magnitudes (that site's absmax). Writes model.annotations.outliers
// (sized to model.tensors, nullopt for other tensors). Errors name the tensor.
Status analyze_outliers(ir::Model& model, const std::function<Expected<std::vector<float>>(ir::TensorId)>& read,
                        const ActivationStats* stats, double k, int top);

// model.annotations.outliers as a table (for `fp4c quantize --print-after outliers`): one line per
// analysed Linear in tensor order, with weight and activation max/median, kurtosis, channels above k and
// the top 3 channels.
std::string format_outliers(const ir::Model& model);

}  // namespace fp4c::passes
