// The input second moments X^T X of the stats pass (GPTQ, the local-Hessian rule and `auto` need them),
// in float64: a register-tiled kernel and the slow obvious version it is tested against.
#pragma once

#include <cstdint>

namespace fp4c::passes {

// out, the upper triangle (i <= j) of a row-major [cols, cols] matrix, += X^T X for x [rows, cols]:
// out[i][j] += sum over r of double(x[r][i]) * double(x[r][j]), each entry summed over the rows in row
// order. The products of two floats are exact in float64, so a fused multiply-add rounds as a multiply
// and an add do: the result equals the reference bit for bit on every instruction set and at every
// thread count (a NaN entry is a NaN, its sign and payload unspecified). Entries below the diagonal
// are not touched. OpenMP inside.
void accumulate_second_moments(double* out, const float* x, int64_t rows, int64_t cols);

// The same, entry by entry, one thread.
void accumulate_second_moments_reference(double* out, const float* x, int64_t rows, int64_t cols);

// GPTAQ's cross moments: out (row-major [cols, cols], all of it) += (X - Xq)^T Xq for x, xq [rows, cols]:
// out[i][j] += sum over r of (double(x[r][i]) - double(xq[r][i])) * double(xq[r][j]), each entry summed
// over the rows in row order with a multiply and an add (never fused): the reference's bits at every
// thread count and on every instruction set. Register tiles as accumulate_second_moments, OpenMP over them.
void accumulate_cross_moments(double* out, const float* x, const float* xq, int64_t rows, int64_t cols);

// The same, entry by entry, one thread.
void accumulate_cross_moments_reference(double* out, const float* x, const float* xq, int64_t rows, int64_t cols);

}  // namespace fp4c::passes
