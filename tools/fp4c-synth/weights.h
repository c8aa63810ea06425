// Synthetic weights with the statistics of trained LLMs, made in chunks so that no large tensor is
// ever held whole:
//  - Linear [out, in]: Student-t (5 degrees of freedom) values, times a per-output-row scale
//    (log-normal), times a per-input-channel scale (log-normal), with ~0.5% of the input channels
//    5-20x larger when outliers are on.
//  - Embedding: the same heavy-tailed values around 0.02, with per-row (per-token) scales.
//  - Norm (RMSNorm gamma): log-normal around 1; with outliers on, ~1% of the hidden channels (the
//    same ones in every norm, as in real models) are 10-50x larger: the source of activation outliers.
//  - Bias: small heavy-tailed values.
// Every value is a function of (seed, preset, tensor name, element index) alone.
#pragma once

#include <cstdint>
#include <span>
#include <string>
#include <vector>

#include "architecture.h"

namespace fp4c::synth {

struct WeightOptions {
  uint64_t seed = 0;
  std::string model;      // the preset's name: presets draw independent values
  bool outliers = true;
};

// The hidden channels that every norm amplifies (sorted); empty when outliers are off.
std::vector<int64_t> hidden_outlier_channels(const WeightOptions& opts, int64_t hidden_size);

class TensorSource {
 public:
  TensorSource(const PlannedTensor& tensor, const WeightOptions& opts,
               std::span<const int64_t> hidden_outliers);
  // Writes the BF16 bits of elements [begin, end) (row-major) to out, on the calling thread.
  // Any split of a range into calls gives the same values.
  void fill(uint64_t begin, uint64_t end, uint16_t* out) const;
  // The input channels made 5-20x larger (Linear only; sorted).
  const std::vector<int64_t>& outlier_columns() const { return outlier_columns_; }

 private:
  void fill_block(uint64_t begin, uint64_t end, uint16_t* out) const;

  uint64_t key_ = 0;            // element stream
  uint64_t tail_key_ = 0;       // refinement of the extreme quantiles
  int64_t cols_ = 1;
  std::vector<float> row_scale_;
  std::vector<float> col_scale_;
  std::vector<int64_t> outlier_columns_;
  std::vector<uint16_t> small_;  // Norm: all values, made up front
};

}  // namespace fp4c::synth
