// cuBLAS and cuBLASLt, opened with dlopen on first use instead of linked: an fp4c built with CUDA
// starts (and runs everything but the GPU paths) on a machine without those libraries, where a
// missing library becomes an error value naming it, and processes that never touch a GPU do not pay
// for mapping them (about 0.35 s per process start here, for each of the test suite's processes).
// Only the entry points the runtime calls; their types come from the toolkit's headers.
#pragma once

#include <cublasLt.h>
#include <cublas_v2.h>

#include "base/expected.h"

namespace fp4c::runtime::cuda {

struct CublasApi {
  decltype(&::cublasCreate_v2) create;
  decltype(&::cublasDestroy_v2) destroy;
  decltype(&::cublasSetStream_v2) set_stream;
  decltype(&::cublasSetMathMode) set_math_mode;
  decltype(&::cublasSgemm_v2) sgemm;
  cublasStatus_t (*gemm_ex)(cublasHandle_t, cublasOperation_t, cublasOperation_t, int, int, int, const void*,
                            const void*, cudaDataType, int, const void*, cudaDataType, int, const void*, void*,
                            cudaDataType, int, cublasComputeType_t, cublasGemmAlgo_t);
  decltype(&::cublasGetStatusName) status_name;
  decltype(&::cublasGetStatusString) status_string;
  decltype(&::cublasLtCreate) lt_create;
  decltype(&::cublasLtDestroy) lt_destroy;
  decltype(&::cublasLtMatmulDescCreate) lt_desc_create;
  decltype(&::cublasLtMatmulDescDestroy) lt_desc_destroy;
  decltype(&::cublasLtMatmulDescSetAttribute) lt_desc_set;
  decltype(&::cublasLtMatrixLayoutCreate) lt_layout_create;
  decltype(&::cublasLtMatrixLayoutDestroy) lt_layout_destroy;
  decltype(&::cublasLtMatmulPreferenceCreate) lt_pref_create;
  decltype(&::cublasLtMatmulPreferenceDestroy) lt_pref_destroy;
  decltype(&::cublasLtMatmulPreferenceSetAttribute) lt_pref_set;
  decltype(&::cublasLtMatmulAlgoGetHeuristic) lt_heuristic;
  decltype(&::cublasLtMatmul) lt_matmul;
};

// The loaded entry points (loaded once; later calls return the same table or the same error).
Expected<const CublasApi*> cublas_api();

}  // namespace fp4c::runtime::cuda
