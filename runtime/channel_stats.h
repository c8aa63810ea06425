// Per-channel statistics of a Linear's input (absmax, min, max, sum of squares), folded in row by row:
// the kernel behind the `stats` pass, the producers of Linear inputs that fold the statistics in while
// they write their output (RMSNorm, the gated activation: the output is read back from cache, not from
// memory), and the slow obvious versions they are tested against.
#pragma once

#include <cstdint>
#include <string>

namespace fp4c::runtime {

// Running per-column figures of a [rows, cols] activation matrix, each array `cols` long.
// absmax starts at 0, min at +inf, max at -inf, sum_squares at 0.
struct ChannelAccumulators {
  float* absmax = nullptr;
  float* min = nullptr;
  float* max = nullptr;
  double* sum_squares = nullptr;
  explicit operator bool() const { return absmax != nullptr; }
};

// Folds the rows of x [rows, cols] into `acc`: per column c, in row order,
//   absmax = max(absmax, |x|), min = min(min, x), max = max(max, x), sum_squares += double(x)^2,
// with std::max/std::min's comparisons (a NaN input leaves the figures as they were). Each column is
// summed by one thread in row order, so the result equals the reference bit for bit whatever the
// thread count or the vector width. Parallel (OpenMP) over column ranges.
void accumulate_channel_stats(const float* x, int64_t rows, int64_t cols, const ChannelAccumulators& acc);

// The same, one element at a time, one thread.
void accumulate_channel_stats_reference(const float* x, int64_t rows, int64_t cols, const ChannelAccumulators& acc);

// rms_norm(x, w, rows, cols, eps, out) (runtime/elementwise.h), the same bits, and the rows of `out`
// folded into `acc` as accumulate_channel_stats would (the same bits): each row's scale first (parallel
// over rows), then, parallel over column ranges, each tile of rows is normalized and folded while it is
// in cache. out may equal x.
void rms_norm_channel_stats(const float* x, const float* w, int64_t rows, int64_t cols, double eps, float* out,
                            const ChannelAccumulators& acc);

// activation_mul(act, gate, up, rows * cols) (runtime/elementwise.h), the same bits, with the rows of the
// result [rows, cols] folded into `acc` as accumulate_channel_stats would, parallel over column ranges.
void activation_mul_channel_stats(const std::string& act, float* gate, const float* up, int64_t rows, int64_t cols,
                                  const ChannelAccumulators& acc);

}  // namespace fp4c::runtime
