// Weights for the forward straight from a checkpoint's BF16/F16/F32 tensors, converted to float one
// layer at a time. Tensors are found by the IR's classification (role, layer, kind, activation
// sites), never by name.
#pragma once

#include <array>
#include <optional>
#include <span>
#include <string>
#include <vector>

#include "formats/safetensors.h"
#include "ir/model.h"
#include "runtime/forward.h"

namespace fp4c::runtime {

// Applies the rewrites passes recorded for tensor `id` (model.annotations.channel_scale / row_scale) to
// its float values, then rounds them to the tensor's dtype; nothing when it has none.
void apply_transform(const ir::Model& model, ir::TensorId id, std::span<float> values);
// The same on BF16 storage in one pass (bit-equal to converting, apply_transform, and storing as BF16):
// dst[i] = bf16(src[i] * scale). OpenMP over rows.
void apply_transform_bf16(const ir::Model& model, ir::TensorId id, const uint16_t* src, uint16_t* dst, int64_t n);
// One row of it (row r of a [rows, cols] weight; cols elements).
void transform_bf16_row(const ir::Model& model, ir::TensorId id, int64_t r, const uint16_t* src_row, uint16_t* dst);
// max |W[:, j]| of a BF16 [rows, cols] matrix as BF16 bits, NaN-propagating (a NaN pattern sorts above Inf).
std::vector<uint16_t> column_absmax_bits_bf16(const uint16_t* src, int64_t rows, int64_t cols);
// max |x| over apply_transform_bf16's output (NaN-propagating, as nvfp4::amax_bf16), without writing it.
float transformed_amax_bf16(const ir::Model& model, ir::TensorId id, const uint16_t* src, int64_t n);

// Tensor `id`'s values as float (BF16, F16 or F32 in the checkpoint), rewrites applied; `release` hands
// its mapped pages back after. Errors name the file and tensor.
Expected<std::vector<float>> read_tensor(const ir::Model& model, const safetensors::Checkpoint::Ref& ref,
                                         ir::TensorId id, bool release);

class CheckpointWeights : public WeightSource {
 public:
  // `refs[id]` is the checkpoint entry of IR tensor `id`; both must outlive this object. Problems
  // (a missing or duplicated tensor, a count mismatch) are reported by the accessor that needs it.
  // With `release_pages`, a layer's mapped pages are handed back to the kernel once converted
  // (safetensors::File::release), so that streaming a model does not keep it all resident.
  CheckpointWeights(const ir::Model& model, std::span<const safetensors::Checkpoint::Ref> refs,
                    bool release_pages = true);

  Expected<std::vector<float>> embedding() override;
  // Only the rows asked for, converted from the mapped table (whose pages are then released).
  Expected<std::vector<float>> embedding_rows(std::span<const int32_t> ids, int64_t hidden) override;
  Expected<LayerParams> layer(int index) override;
  Expected<std::vector<float>> final_norm() override;
  // lm_head, or the embedding when model.tied_lm_head.
  Expected<LinearParams> lm_head() override;

 protected:
  // What a derived source (e.g. an artifact's dequantized tensors) can replace: the float values of
  // IR tensor `id` (here: its checkpoint bytes converted; `release` hands its pages back after), and
  // the input global scale a Linear weight's input is fake-quantized with (here: none). The model's
  // rewrites (apply_transform) are applied by the base only.
  virtual Expected<std::vector<float>> read_weight(ir::TensorId id, bool release) const;
  virtual std::optional<float> input_global_scale(ir::TensorId id) const;
  // Whether a Linear weight's input is fake-quantized to MXFP4 (LinearParams::input_mxfp4; here: no).
  virtual bool input_mxfp4(ir::TensorId id) const;
  // The packed NVFP4 bytes of a Linear weight, for engines that multiply them (here: none).
  virtual std::optional<PackedNvfp4> packed(ir::TensorId id) const;

 private:
  static constexpr size_t kLinears = 7;  // q, k, v, o, gate, up, down
  struct LayerIds {
    std::optional<ir::TensorId> input_norm, post_norm, q_norm, k_norm, attn_out_norm, mlp_out_norm;
    std::array<std::optional<ir::TensorId>, kLinears> weight, bias;
    std::optional<ir::TensorId> router;                                 // MoE
    std::vector<std::array<std::optional<ir::TensorId>, 3>> experts;    // MoE: gate, up, down per expert
  };
  Expected<LinearParams> linear(ir::TensorId weight, std::optional<ir::TensorId> bias, bool release) const;
  // A norm's weight as the forward multiplies by it: w, or 1 + w (in float32) where the model's norms
  // compute x * (1 + w) (Gemma).
  Expected<std::vector<float>> norm(ir::TensorId id, bool release) const;

  const ir::Model& model_;
  std::span<const safetensors::Checkpoint::Ref> refs_;
  bool release_pages_;
  std::string error_;  // the first indexing problem, reported by every accessor
  std::optional<ir::TensorId> embedding_, final_norm_, lm_head_;
  std::vector<LayerIds> layers_;
};

}  // namespace fp4c::runtime
