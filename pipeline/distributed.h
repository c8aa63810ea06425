// What the pipeline does across the ranks of an MPI run (runtime/comm.h) besides the statistics
// (passes/stats_collect.cpp folds those).
#pragma once

#include <string>
#include <utility>
#include <vector>

#include "pipeline/pass.h"
#include "runtime/comm.h"

namespace fp4c::pipeline {

// Before pack, under MPI: the NVFP4 Linears pack would quantize with something other than the max rule
// (GPTQ, local-Hessian, the searching rules), spread over the ranks layer by layer, largest first (the
// least loaded rank takes the next), each quantized by its rank and sent to rank 0 as
// model.annotations.prequantized. pack takes those bytes where the weight's hash, global scale and
// quantizer match what it reads (else it quantizes again): the artifact is the same bytes as one
// process's. Linears the auto pass already quantized are left to it.
// With ctx.checkpoint (--checkpoint), also in one process: each layer's results are saved (rank 0,
// atomically) and a rerun takes the layers it finds.
Status prequantize_distributed(PassContext& ctx, runtime::Comm& comm);

// --checkpoint DIR: records `fingerprint` (what decides the artifact, by flag name: value) in DIR/run.json
// the first time; later refuses a run whose values differ, naming each. Rank 0 decides for every rank.
Status check_checkpoint(const std::string& dir, const std::vector<std::pair<std::string, std::string>>& fingerprint,
                        runtime::Comm& comm);

}  // namespace fp4c::pipeline
