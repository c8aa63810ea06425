// GPTQ on the NVFP4 grid (Frantar et al., "GPTQ", as AutoGPTQ / llm-compressor run it):
// error-compensating quantization of a Linear weight W [rows, cols] from its input second-moment
// matrix H = X^T X / n, written in exactly the layout of nvfp4::quantize_f32_ref (packed FP4 codes,
// FP8 E4M3 block scales, one global scale G), so the artifact format does not change.
//
// The algorithm, as implemented here:
//  1. Dead columns (H_jj == 0: the input channel never fired in calibration) get H_jj = 1. Their
//     weights are KEPT as they are (GPTQ implementations zero them; keeping them changes nothing on
//     the calibration data and keeps the channel usable on inputs calibration did not see). With H
//     PSD the rest of row/column j is 0, so such a column neither sends nor receives error: it is
//     quantized round-to-nearest with its group's scale.
//  2. Dampening: H += damp * mean(diag H) * I (after step 1), as llm-compressor's percdamp.
//  3. act_order: the 16-column groups (not single columns: each group must stay contiguous in the
//     ORIGINAL column order for the scales' layout) are processed in descending order of their summed
//     diag(H) (ties: lower group first); columns inside a group keep their order. H and W are permuted
//     accordingly and the result is written back in the original order.
//  4. U = the upper Cholesky factor of H^-1 (H^-1 = U^T U), computed in float64 as
//     U = J chol(J H J)^-1 J (J the reversal; the same matrix as torch's
//     cholesky(cholesky_inverse(cholesky(H)), upper=True), one factorization fewer), then rounded to
//     float32 for the column loop.
//  5. Columns left to right (in processing order). When the first column of a 16-column group is
//     reached, each row's block scale is chosen by the max rule (or the local-Hessian rule, see
//     GptqOptions::localhessian_scales), s = fp8(G * amax / 6) (zero replaced
//     per `zero`), over the CURRENT weights of those 16 columns, i.e. after every error update from
//     the columns before them (AutoGPTQ reads the group from W, which misses the updates from
//     earlier columns of the same lazy batch; here the group always sees them, so the result does
//     not depend on `block`). Each column is quantized with that scale exactly as NVFP4.md §3 step 3,
//     q = fp4(clamp(w / (s / G), -6, 6)), and its error (w - Q(w)) / U_jj is propagated to the
//     columns after it: W[:, k] -= err * U[j, k]. The updates are done in lazy batches of `block`
//     columns (inside a batch eagerly, beyond it as one GEMM per batch), each element receiving its
//     subtractions in column order, so the result is bit-identical to the plain unblocked loop.
//  Rows are independent given U: OpenMP over tiles of rows; the bytes do not depend on the thread
//  count.
#pragma once

#include <cstdint>
#include <vector>

#include "formats/nvfp4.h"
#include "base/expected.h"

namespace fp4c::quant {

struct GptqOptions {
  double damp = 0.01;      // relative: H += damp * mean(diag H) * I; >= 0 and finite
  bool act_order = true;   // process 16-column groups in descending summed diag(H) order (see above); the
                           // default as GPTQ's authors and llm-compressor's static actorder use it (docs/DECISIONS.md)
  int block = 128;         // lazy-batch width (columns) for the blocked updates; a positive multiple of 16
  // Each group's block scales by the local-Hessian criterion (passes/localhessian.h) instead of the
  // max rule: per row, among the Mse window of candidate FP8 codes, the one minimizing e^T H_b e over
  // the group's CURRENT (error-updated) weights, H_b the group's 16x16 diagonal block of H as given
  // (not damped; dead diagonals stay 0).
  bool localhessian_scales = false;
  // GPTAQ ("GPTQv2", Li et al., ICML 2025) asymmetric calibration, used by gptaq_quantize: the strength
  // of the asymmetry correction (the authors' alpha; 0 gives GPTQ on the quantized model's input).
  double asym_alpha = 0.25;
};

// Error-compensating quantization of W [rows, cols] (row-major float, cols % 16 == 0) to NVFP4 with
// the given global scale G (finite, > 0), from H = X^T X / n ([cols, cols] row-major double,
// symmetric: only its upper triangle and diagonal are read). Output exactly as nvfp4::quantize_*
// lays it out: packed codes rows*cols/2 bytes, FP8 block scales rows*cols/16 bytes, zero-scale
// convention `zero`. `dequantized` (rows*cols floats, may be null) receives Q(W) as nvfp4::dequantize
// computes it. err (may be null): ErrorStats of Q(W) vs W, accumulated as nvfp4::quantize_f32_ref
// does (per row in double, rows summed in order).
// Errors (nothing written): cols not a multiple of 16, null buffers, a NaN or Inf in W or H (named
// by position), a negative diagonal in H, G not finite and positive, bad options, and H + damp not
// positive definite (raise damp).
Status gptq_quantize(const float* w, int64_t rows, int64_t cols, const double* h, float global_scale,
                     const GptqOptions& options, uint8_t* packed, uint8_t* scales,
                     nvfp4::ZeroScale zero, float* dequantized, nvfp4::ErrorStats* err);

// GPTAQ ("GPTQv2"): the same column loop, against the unquantized model's output. Each row w minimizes
// ||X w^T - Xq q^T|| over the calibration tokens, X the Linear's input on the unquantized model and Xq
// its input on the quantized one (under W4A4 fake-quantized as served): H = Xq^T Xq / n as in
// gptq_quantize, and dxt = (X - Xq)^T Xq / n ([cols, cols] row-major, all of it read: dxt[i][j] =
// sum_t (x_ti - xq_ti) xq_tj / n). With U as in gptq_quantize (in processing order, D' = D permuted
// alike) P = alpha * triu_1(D' U^T) U (strictly upper), and processing column i (value w_i before it is
// quantized, error e_i = (w_i - q_i) / U_ii) updates every later column k:
//   w_k -= e_i U_ik - w_i P_ik.
// (The authors' code uses w_i for the columns of the same lazy batch and q_i beyond it; here w_i
// throughout, as their derivation has it.) P is formed in float64 and rounded to float32 as U is; the
// updates run in lazy batches as GPTQ's (tiles of rows in parallel), each element's subtractions in column
// order, so the bytes are those of the unbatched per-row loop, and with dxt = 0 gptq_quantize's. Errors: those of gptq_quantize, a null or non-finite dxt,
// alpha not finite or negative.
Status gptaq_quantize(const float* w, int64_t rows, int64_t cols, const double* h, const double* dxt,
                      float global_scale, const GptqOptions& options, uint8_t* packed, uint8_t* scales,
                      nvfp4::ZeroScale zero, float* dequantized, nvfp4::ErrorStats* err);

// The pieces of gptq_quantize, exposed so that tests can check each against a plain reference.
namespace gptq_detail {

// Processing order of the columns: act_order off -> identity; on -> groups of 16 sorted by descending
// summed diag(H) (dead diagonals counted as 1), stable.
std::vector<int64_t> column_order(const double* h, int64_t cols, bool act_order);

// Steps 1, 2 and 4 on H permuted by `order` (H'[i][j] = H[order[i]][order[j]]): U, upper triangular,
// [cols, cols] row-major float64, zeros below the diagonal. Error if H + damp is not positive
// definite.
Expected<std::vector<double>> inverse_cholesky_upper(const double* h, int64_t cols, double damp,
                                                     const std::vector<int64_t>& order);

// Step 5 for W with columns already in processing order (w [rows, cols], modified in place: it ends
// holding the error-updated weights), with U (float32, [cols, cols] row-major, upper). Writes the
// FP4 code of every element (one per byte, processing order) and each row's scale code per group
// (processing order), [rows, cols/16]. group_hessians: null for the max rule; else the local-Hessian
// rule with, for each group p of the processing order, its 16x16 block of H at group_hessians[p * 256].
void quantize_columns(float* w, int64_t rows, int64_t cols, const float* u, float global_scale,
                      int block, nvfp4::ZeroScale zero, uint8_t* codes, uint8_t* scale_codes,
                      const double* group_hessians = nullptr);

// GPTAQ's column loop (see gptaq_quantize) for W with columns in processing order (modified in place), U and
// P (float32, [cols, cols], processing order): rows in tiles, the updates in lazy batches of `block` columns as
// quantize_columns batches GPTQ's; codes and scale codes as quantize_columns writes them. zero_code: the FP8
// code of a zero scale (nvfp4::ZeroScale's byte).
void quantize_columns_asym(float* w, int64_t rows, int64_t cols, const float* u, const float* p, float global_scale,
                           int block, uint8_t zero_code, const double* group_hessians, uint8_t* codes,
                           uint8_t* scale_codes);
// The same, one row at a time, unbatched (each column's update of every later column at once): the reference
// the batched loop equals bit for bit.
void quantize_columns_asym_unbatched(float* w, int64_t rows, int64_t cols, const float* u, const float* p,
                                     float global_scale, uint8_t zero_code, const double* group_hessians,
                                     uint8_t* codes, uint8_t* scale_codes);

// GPTAQ's P (see gptaq_quantize) for D' = dxt permuted by `order`, from U (float64, upper, processing
// order): alpha * triu_1(D' U^T) U, [cols, cols] row-major float64, zero on and below the diagonal.
std::vector<double> asymmetry_correction(const double* dxt, int64_t cols, const std::vector<double>& u,
                                         const std::vector<int64_t>& order, double alpha);
// The same, row by row and entry by entry (the first form, one sum at a time): asymmetry_correction equals
// it bit for bit (lanes are rows or columns, every entry's additions in the same order, nothing fused).
std::vector<double> asymmetry_correction_reference(const double* dxt, int64_t cols, const std::vector<double>& u,
                                                   const std::vector<int64_t>& order, double alpha);

// gptq_quantize keeps the order and U of recent H (keyed by H's contents, damp and act_order; at most
// 512 MiB) so that quantizations against the same H factor it once, and gptaq_quantize its P alike (keyed
// also by D's contents and alpha); this empties both caches.
void clear_factor_cache();

}  // namespace gptq_detail

}  // namespace fp4c::quant
