#include "quant/output_error.h"

#include <algorithm>
#include <cmath>
#include <limits>

#include "formats/nvfp4.h"
#include "runtime/activation_quant.h"
#include "runtime/matmul.h"

namespace fp4c::quant {

double OutputError::relative() const {
  if (reference_sq > 0) return error_sq / reference_sq;
  return error_sq > 0 ? std::numeric_limits<double>::infinity() : 0.0;
}

void OutputError::merge(const OutputError& o) {
  error_sq += o.error_sq;
  reference_sq += o.reference_sq;
}

namespace {

// y[rows, out] = x[rows, in] W^T, plain loops (the fallback when the GEMM library fails).
void plain_gemm(const float* x, int64_t rows, int64_t in, const float* w, int64_t out, float* y) {
#pragma omp parallel for schedule(static)
  for (int64_t r = 0; r < rows; ++r)
    for (int64_t o = 0; o < out; ++o) {
      float acc = 0;
      const float* xr = x + r * in;
      const float* wr = w + o * in;
      for (int64_t j = 0; j < in; ++j) acc += xr[j] * wr[j];
      y[r * out + o] = acc;
    }
}

struct Gemm {
  std::optional<runtime::PreparedLinear> prepared;
  const float* w;
  int64_t in, out;
  Gemm(const float* w_, int64_t in_, int64_t out_, int64_t rows) : w(w_), in(in_), out(out_) {
    runtime::LinearParams p;
    p.out = out;
    p.in = in;
    p.weight.assign(w, w + in * out);
    auto made = runtime::PreparedLinear::create(p, rows, runtime::Precision::F32);
    if (made.ok()) prepared.emplace(std::move(made).value());
  }
  void run(const float* x, int64_t rows, float* y) {
    if (prepared && prepared->run(x, rows, y).ok()) return;
    plain_gemm(x, rows, in, w, out, y);
  }
};

}  // namespace

std::vector<OutputError> linear_output_errors(const float* x, int64_t rows, int64_t in, const float* w_ref,
                                              std::span<const float* const> w_cands, int64_t out,
                                              std::optional<float> input_global_scale, const float* x_scale,
                                              bool input_mxfp4, size_t group) {
  std::vector<OutputError> errors(w_cands.size());
  if (rows <= 0 || in <= 0 || out <= 0 || w_cands.empty()) return errors;
  // Each candidate's prepared GEMM holds copies of its weight: at most ~512 MiB of them at once (every
  // candidate of a 0.5B model's Linears; one at a time for an 8B model's MLP), in groups that each pass
  // over the rows. A candidate's figures do not depend on the grouping.
  if (group == 0) group = size_t(std::max<int64_t>(1, (int64_t(1) << 27) / (2 * in * out)));
  if (w_cands.size() > group) {
    for (size_t c0 = 0; c0 < w_cands.size(); c0 += group) {
      const auto part = linear_output_errors(x, rows, in, w_ref, w_cands.subspan(c0, std::min(group, w_cands.size() - c0)),
                                             out, input_global_scale, x_scale, input_mxfp4, group);
      std::copy(part.begin(), part.end(), errors.begin() + std::ptrdiff_t(c0));
    }
    return errors;
  }
  // Rows per chunk: the candidate input and both outputs of a chunk hold about 16M floats at most.
  const int64_t chunk = std::clamp<int64_t>((int64_t(1) << 24) / (in + 2 * out), 16, 1024);
  const int64_t first_chunk = std::min(chunk, rows);
  Gemm ref(w_ref, in, out, first_chunk);
  std::vector<Gemm> cands;
  cands.reserve(w_cands.size());
  for (const float* w : w_cands) cands.emplace_back(w, in, out, first_chunk);
  const bool transform_input = input_global_scale.has_value() || input_mxfp4 || x_scale != nullptr;
  std::vector<float> xc(transform_input ? size_t(first_chunk * in) : 0);
  std::vector<float> yr(size_t(first_chunk * out)), yc(size_t(first_chunk * out));
  std::vector<double> row_err(static_cast<size_t>(first_chunk)), row_ref(static_cast<size_t>(first_chunk));
  for (int64_t r0 = 0; r0 < rows; r0 += chunk) {
    const int64_t n = std::min(chunk, rows - r0);
    const float* xr = x + r0 * in;
    const float* xin = xr;
    if (transform_input) {
      if (x_scale) {
#pragma omp parallel for schedule(static)
        for (int64_t r = 0; r < n; ++r)
          for (int64_t j = 0; j < in; ++j) xc[size_t(r * in + j)] = xr[r * in + j] * x_scale[j];
      } else {
        std::copy(xr, xr + n * in, xc.begin());
      }
      if (input_global_scale) runtime::fake_quantize_nvfp4(xc.data(), n, in, *input_global_scale, xc.data());
      else if (input_mxfp4) runtime::fake_quantize_mxfp4(xc.data(), n, in, xc.data());
      xin = xc.data();
    }
    ref.run(xr, n, yr.data());
    // The reference's squared sums of these rows, once for every candidate.
#pragma omp parallel for schedule(static)
    for (int64_t r = 0; r < n; ++r) {
      double sr = 0;
      for (int64_t o = 0; o < out; ++o) {
        const double a = yr[size_t(r * out + o)];
        sr += a * a;
      }
      row_ref[size_t(r)] = sr;
    }
    for (size_t c = 0; c < cands.size(); ++c) {
      cands[c].run(xin, n, yc.data());
#pragma omp parallel for schedule(static)
      for (int64_t r = 0; r < n; ++r) {
        double se = 0;
        for (int64_t o = 0; o < out; ++o) {
          const double a = yr[size_t(r * out + o)], b = yc[size_t(r * out + o)];
          se += (b - a) * (b - a);
        }
        row_err[size_t(r)] = se;
      }
      for (int64_t r = 0; r < n; ++r) {
        errors[c].error_sq += row_err[size_t(r)];
        errors[c].reference_sq += row_ref[size_t(r)];
      }
    }
  }
  return errors;
}

OutputError linear_output_error(const float* x, int64_t rows, int64_t in, const float* w_ref, const float* w_cand,
                                int64_t out, std::optional<float> input_global_scale, const float* x_scale,
                                bool input_mxfp4) {
  const float* cands[1] = {w_cand};
  return linear_output_errors(x, rows, in, w_ref, cands, out, input_global_scale, x_scale, input_mxfp4)[0];
}

std::vector<float> nvfp4_round_trip(const float* w, int64_t rows, int64_t cols, float global_scale,
                                    nvfp4::ScaleRule rule, const float* channel_weights) {
  std::vector<uint8_t> packed(size_t(rows * cols / 2)), scales(size_t(rows * cols / nvfp4::kBlock));
  nvfp4::quantize_rows_with_rule(w, rows, cols, global_scale, rule, channel_weights, packed.data(), scales.data());
  std::vector<float> out(size_t(rows * cols));
  nvfp4::dequantize(packed.data(), scales.data(), rows, cols, global_scale, out.data());
  return out;
}

}  // namespace fp4c::quant
