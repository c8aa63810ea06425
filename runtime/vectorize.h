// FP4C_VECTOR_CLONES: compile a kernel for AVX-512, AVX2 and baseline x86-64, picked at load time
// (GCC function multi-versioning). Kernels carrying it hold no OpenMP pragmas except `simd`: a parallel
// region's body is outlined into a function without the attribute, so callers parallelise and call
// the kernel per row or per chunk. The versions may differ in the last bits (vector reductions sum in
// lanes, AVX-512 may fuse multiply-adds), so results depend on the CPU, never on the thread count.
#pragma once

#if defined(__x86_64__) && defined(__GNUC__) && !defined(__clang__)
#define FP4C_VECTOR_CLONES __attribute__((target_clones("avx512f", "avx2", "default")))
#else
#define FP4C_VECTOR_CLONES
#endif
