// NVFP4 block-scale rules: see nvfp4_rules.h for the rules and the candidate set.
#include "formats/nvfp4_rules.h"

#include <algorithm>
#include <cassert>
#include <cmath>
#include <stdexcept>
#include <vector>

#include "formats/fp4.h"
#include "formats/fp8_e4m3.h"

namespace fp4c::nvfp4 {

namespace {

constexpr int64_t kParallelMin = int64_t(1) << 12;

uint8_t zero_scale_code(ZeroScale zero) {
  return zero == ZeroScale::ModelOpt ? uint8_t(0x38) : uint8_t(0x20);  // 1.0 : 0.125
}

// std::clamp, but a NaN passes through (as the reference).
float clamp_keep_nan(float v, float lo, float hi) { return v < lo ? lo : (v > hi ? hi : v); }

// The reference's scale code for a wanted scale value: fp8(clamp(v)), a zero code replaced.
uint8_t scale_code_for(float wanted, uint8_t zero_code, bool* was_zero) {
  uint8_t c = fp8_e4m3::encode(clamp_keep_nan(wanted, -448.0f, 448.0f));
  *was_zero = (c & 0x7F) == 0;
  if (*was_zero) c = zero_code;
  return c;
}

// Encodes one block with scale code s (NVFP4.md §3 step 3) into q[16]; returns the block's error,
// weighted by w when non-null: sum w_j (x_j - x'_j)^2 in double, x' = fp4_value(q) * (s / G).
// has_nan: the block holds a NaN (which encodes as fp4::encode does).
constexpr float kFp4Value[16] = {0.0f,  0.5f,  1.0f,  1.5f,  2.0f,  3.0f,  4.0f,  6.0f,
                                 -0.0f, -0.5f, -1.0f, -1.5f, -2.0f, -3.0f, -4.0f, -6.0f};

#if defined(__x86_64__) && defined(__GNUC__) && !defined(__clang__)
#define FP4C_RULE_CLONES \
  __attribute__((target_clones("avx512f", "avx2", "default"), optimize("fp-contract=off")))
#else
#define FP4C_RULE_CLONES
#endif

// encode_block (below) for a block without NaN and a normal positive s / G, where x / d is never NaN:
// the codes lane-wise and branch-free (fp4::encode's thresholds of NVFP4.md §1, > and >= alternating so
// ties go to the even code; |y| > 5 is the clamp to 6), the error summed in ascending i as there.
// Compiled for AVX-512, AVX2 and the baseline without fused multiply-adds: the same bits on every CPU.
FP4C_RULE_CLONES
double encode_block_fast(const float* xb, float d, const float* w, uint8_t* q) {
  double e[kBlock];
#pragma omp simd
  for (int i = 0; i < kBlock; ++i) {
    const float y = xb[i] / d;  // a true division
    const float ay = std::fabs(y);
    const int m = (ay > 0.25f) + (ay >= 0.75f) + (ay > 1.25f) + (ay >= 1.75f) + (ay > 2.5f) + (ay >= 3.5f) +
                  (ay > 5.0f);
    const int code = m | (std::signbit(y) ? 8 : 0);
    q[i] = uint8_t(code);
    e[i] = double(xb[i]) - double(kFp4Value[code] * d);
  }
  double sum = 0.0;
  if (w) {
    for (int i = 0; i < kBlock; ++i) sum += double(w[i]) * e[i] * e[i];
  } else {
    for (int i = 0; i < kBlock; ++i) sum += e[i] * e[i];
  }
  return sum;
}

double encode_block(const float* xb, float G, uint8_t s, const float* w, uint8_t* q, bool has_nan) {
  const float d = fp8_e4m3::decode(s) / G;  // s / G, rounded to float32
  if (!has_nan && std::isnormal(d) && d > 0.0f) return encode_block_fast(xb, d, w, q);
  double sum = 0.0;
  for (int i = 0; i < kBlock; ++i) {
    q[i] = fp4::encode(clamp_keep_nan(xb[i] / d, -6.0f, 6.0f));  // a true division
    const double e = double(xb[i]) - double(fp4::decode(q[i]) * d);
    sum += w ? double(w[i]) * e * e : e * e;
  }
  return sum;
}

void quantize_row(const float* x, int64_t cols, float G, ScaleRule rule, const float* weights,
                  uint8_t* packed, uint8_t* scales, uint8_t zero_code, ErrorStats* row_err) {
  const bool searchable = std::isfinite(G) && G > 0.0f;
  for (int64_t b = 0; b < cols / kBlock; ++b) {
    const float* xb = x + b * kBlock;
    float a = 0.0f;
    for (int i = 0; i < kBlock; ++i) {
      const float ax = std::fabs(xb[i]);
      if (std::isnan(ax) || ax > a) a = ax;
    }
    bool max_was_zero = false;
    const uint8_t m = scale_code_for(G * (a / 6.0f), zero_code, &max_was_zero);

    uint8_t best_q[kBlock];
    uint8_t best_s = m;
    const bool search = rule != ScaleRule::Max && searchable && !std::isnan(a) && a > 0.0f;
    const float* w = rule == ScaleRule::Weighted ? weights + b * kBlock : nullptr;
    const bool has_nan = std::isnan(a);
    double best = encode_block(xb, G, m, w, best_q, has_nan);
    if (search) {
      uint8_t q[kBlock];
      auto try_code = [&](uint8_t c) {
        if (c == best_s) return;
        const double e = encode_block(xb, G, c, w, q, has_nan);
        if (e < best) {  // strictly: ties keep the incumbent (the Max code first)
          best = e;
          best_s = c;
          for (int i = 0; i < kBlock; ++i) best_q[i] = q[i];
        }
      };
      if (rule == ScaleRule::FourOverSix) {
        bool was_zero = false;
        try_code(scale_code_for(G * (a / 4.0f), zero_code, &was_zero));
      } else {
        const int lo = max_was_zero ? 1 : std::max(1, int(m) - kSearchBelow);
        const int hi = std::min(0x7E, int(m) + kSearchAbove);
        for (int c = lo; c <= hi; ++c) try_code(uint8_t(c));
      }
    }

    scales[b] = best_s;
    for (int i = 0; i < kBlock; i += 2) packed[(b * kBlock + i) / 2] = fp4::pack(best_q[i], best_q[i + 1]);
    if (row_err) {  // quantize_f32_ref's figures, in its order
      const float d = fp8_e4m3::decode(best_s) / G;
      for (int i = 0; i < kBlock; ++i) {
        const float v = xb[i];
        const double e = double(v) - double(fp4::decode(best_q[i]) * d);
        row_err->sum_sq_err += e * e;
        row_err->sum_sq_ref += double(v) * double(v);
        if (std::fabs(e) > row_err->max_abs_err) row_err->max_abs_err = std::fabs(e);
      }
    }
  }
  if (row_err) row_err->count += cols;
}

}  // namespace

const char* scale_rule_name(ScaleRule rule) {
  switch (rule) {
    case ScaleRule::Max: return "max";
    case ScaleRule::Mse: return "mse";
    case ScaleRule::Weighted: return "weighted";
    case ScaleRule::FourOverSix: return "4over6";
  }
  return "?";
}

std::optional<ScaleRule> parse_scale_rule(std::string_view text) {
  for (ScaleRule r : {ScaleRule::Max, ScaleRule::Mse, ScaleRule::Weighted, ScaleRule::FourOverSix}) {
    if (text == scale_rule_name(r)) return r;
  }
  return std::nullopt;
}

void quantize_rows_with_rule(const float* x, int64_t rows, int64_t cols, float global_scale,
                             ScaleRule rule, const float* channel_weights, uint8_t* packed,
                             uint8_t* scales, ZeroScale zero, ErrorStats* err) {
  if (cols % kBlock != 0) {
    throw std::invalid_argument("quantize_rows_with_rule: cols must be a multiple of 16");
  }
  if (rule == ScaleRule::Weighted && channel_weights == nullptr && rows > 0 && cols > 0) {
    throw std::invalid_argument(
        "quantize_rows_with_rule: the weighted rule needs channel_weights (the input channels' mean "
        "squares)");
  }
  const uint8_t zc = zero_scale_code(zero);
  std::vector<ErrorStats> row_err(err ? size_t(rows) : 0);
#pragma omp parallel for schedule(dynamic, 4) if (rows * cols >= kParallelMin)
  for (int64_t r = 0; r < rows; ++r) {
    quantize_row(x + r * cols, cols, global_scale, rule, channel_weights, packed + r * cols / 2,
                 scales + r * cols / kBlock, zc, err ? &row_err[size_t(r)] : nullptr);
  }
  if (err) {
    for (const ErrorStats& row : row_err) err->merge(row);
  }
}

}  // namespace fp4c::nvfp4
