// Per-channel statistics of a Linear's input (absmax, min, max, sum of squares), folded in row by row:
// the kernel behind the `stats` pass, and the slow obvious version it is tested against.
#pragma once

#include <cstdint>

namespace fp4c::passes {

// Running per-column figures of a [rows, cols] activation matrix, each array `cols` long.
// absmax starts at 0, min at +inf, max at -inf, sum_squares at 0.
struct ChannelAccumulators {
  float* absmax;
  float* min;
  float* max;
  double* sum_squares;
};

// Folds the rows of x [rows, cols] into `acc`: per column c, in row order,
//   absmax = max(absmax, |x|), min = min(min, x), max = max(max, x), sum_squares += double(x)^2,
// with std::max/std::min's comparisons (a NaN input leaves the figures as they were). Each column is
// summed by one thread in row order, so the result equals the reference bit for bit whatever the
// thread count or the vector width. Parallel (OpenMP) over column ranges.
void accumulate_channel_stats(const float* x, int64_t rows, int64_t cols, const ChannelAccumulators& acc);

// The same, one element at a time, one thread.
void accumulate_channel_stats_reference(const float* x, int64_t rows, int64_t cols, const ChannelAccumulators& acc);

}  // namespace fp4c::passes
