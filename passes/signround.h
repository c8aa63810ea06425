// Block-output reconstruction (SignRound / AutoRound, Cheng et al. 2023): per decoder layer, every NVFP4
// Linear's rounding offsets v (one per weight, in [-0.5, 0.5]) and block-scale multipliers alpha (one per
// 16-element block, in [scale_min, 1]) are tuned by signed gradient descent (SignSGD, learning rate decaying
// linearly from lr to 0 over the iterations; straight-through rounding, quant/signround.h) to minimize the
// mean squared error between the layer's output as quantized and the unquantized layer's output:
//   - the quantized layer's input is the calibration sequences through layers 0..i-1 as quantized (each at
//     its choice), the target the unquantized layer applied to the unquantized model's stream (AutoRound's
//     default); under W4A4 each NVFP4 Linear's input is fake-quantized in the loop with its input global scale
//     from the statistics (as served), passed straight through in the backward;
//   - each step runs the layer forward and backward (runtime/layer_grad.h) over `batch` sequences, taken in a
//     fixed shuffled order (seeded); every iterate is also measured (forward only, as served) on a fixed
//     selection of `select` sequences and the least one kept (iterate 0 is round-to-nearest). AutoRound keeps
//     the least step loss instead, but on different minibatches that picks the easiest minibatch's step
//     (measured on SmolLM2: the same step won in most layers);
//   - the kept iterate replaces round-to-nearest only if its loss over all calibration sequences is lower
//     (so the result is never worse than round-to-nearest on the data it saw).
// The choices go to model.annotations.choice ("signround" or "max" per Linear, with both layer losses as their
// candidates' figures) and the tuned bytes to model.annotations.prequantized, where pack takes them.
#pragma once

#include <cstdint>
#include <functional>
#include <string>
#include <vector>

#include "base/expected.h"
#include "ir/model.h"
#include "runtime/forward.h"

namespace fp4c::passes {

struct SignRoundOptions {
  int iters = 50;              // steps per layer; 0: round-to-nearest
  double lr = 0;               // the first step's size; 0: 1 / iters (AutoRound's default)
  int batch = 4;               // calibration sequences per step
  int select = 0;              // sequences every iterate is measured on to keep the best (0: batch)
  bool tune_scales = true;     // also the block-scale multipliers
  float scale_min = 0.5f;      // their lower bound (upper: 1)
  uint64_t seed = 0;           // the order of the sequences
  int threads = 0;             // OpenMP threads (0: the default)
  // Where set: each NVFP4 Linear starts from another quantizer's result instead of round-to-nearest (the
  // `auto` pass's choice): start(id, weight, G, packed, scales) writes its codes and block scales and returns
  // true (false: round-to-nearest). The offsets then move around those codes and the multipliers scale those
  // block scales; a layer keeps its start where tuning does not lower its error (its choice and bytes stay).
  std::function<Expected<bool>(ir::TensorId id, const std::vector<float>& weight, float G,
                               std::vector<uint8_t>& packed, std::vector<uint8_t>& scales)>
      start;
  // Where set (with `start`): `start`'s result is a rival instead of where tuning starts. Every Linear is
  // tuned from round-to-nearest as without `start`; then each layer's rival (every Linear at `start`'s codes
  // and block scales) and its tuned-or-round-to-nearest rounding are measured on these sequences (held out
  // from `calibration`: the `auto` pass's), each through the layers before it as kept, against the
  // unquantized layer on the unquantized stream; the lesser error wins (ties: the rival) and gives the next
  // layer its input.
  const std::vector<std::vector<int32_t>>* rival_judge = nullptr;
};

// One layer's outcome, for describe() and the tests.
struct SignRoundLayer {
  int layer = 0;
  double rtn_loss = 0, tuned_loss = 0;   // mean squared output error over all calibration tokens: the start
                                         // (round-to-nearest, or SignRoundOptions::start's) and the kept one
  double reference = 0;                  // mean square of the unquantized layer's output
  int best_iter = 0;                     // 0: round-to-nearest was the best step
  bool tuned = false;                    // the tuned rounding was kept
  // With a rival (SignRoundOptions::rival_judge): the mean squared output error on the judging sequences of
  // the rival and of the tuned-or-round-to-nearest layer, and whether the rival won.
  double rival_judged = 0, own_judged = 0;
  bool rival_kept = false;
  double seconds = 0;
};

// Needs model.annotations.decision (the weight plan; under W4A4 each Linear's input_amax). `weights`: the model
// as the pipeline has rewritten it (pack reads the same values). Errors name the layer and what is not
// implemented there (runtime::LayerTape::check), or a non-finite weight.
Expected<std::vector<SignRoundLayer>> signround(ir::Model& model, const runtime::Forward& forward,
                                                runtime::WeightSource& weights,
                                                const std::vector<std::vector<int32_t>>& calibration,
                                                const SignRoundOptions& options,
                                                const std::function<void(int layer, int layers)>& progress = {});

std::string format_signround(const std::vector<SignRoundLayer>& layers);

}  // namespace fp4c::passes
