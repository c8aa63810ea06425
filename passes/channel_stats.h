// Per-channel statistics of a Linear's input (absmax, min, max, sum of squares): the kernel behind the
// `stats` pass lives in the runtime (runtime/channel_stats.h), whose producers of Linear inputs (RMSNorm,
// the gated activation) fold the statistics in as they write; these are its names for the passes.
#pragma once

#include "runtime/channel_stats.h"

namespace fp4c::passes {

using runtime::ChannelAccumulators;
using runtime::accumulate_channel_stats;
using runtime::accumulate_channel_stats_reference;

}  // namespace fp4c::passes
