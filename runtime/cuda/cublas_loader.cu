#include <dlfcn.h>

#include <mutex>
#include <string>

#include "runtime/cuda/cublas_loader.cuh"

namespace fp4c::runtime::cuda {
namespace {

// The sonames of the toolkit fp4c was built with, e.g. libcublas.so.13.
const std::string kCublas = "libcublas.so." + std::to_string(CUBLAS_VER_MAJOR);
const std::string kCublasLt = "libcublasLt.so." + std::to_string(CUBLAS_VER_MAJOR);

struct Loaded {
  CublasApi api{};
  std::string error;
};

template <typename F>
bool bind(void* lib, const char* name, F& fn, const std::string& soname, std::string& error) {
  fn = reinterpret_cast<F>(dlsym(lib, name));
  if (!fn && error.empty()) error = soname + " has no symbol " + name;
  return fn != nullptr;
}

Loaded load() {
  Loaded out;
  // cuBLAS loads cuBLASLt itself; opening it first makes a missing one the named failure.
  void* lt = dlopen(kCublasLt.c_str(), RTLD_NOW | RTLD_LOCAL);
  if (!lt) {
    const char* e = dlerror();
    out.error = "cannot load " + kCublasLt + ": " + (e ? e : "unknown error");
    return out;
  }
  void* blas = dlopen(kCublas.c_str(), RTLD_NOW | RTLD_LOCAL);
  if (!blas) {
    const char* e = dlerror();
    out.error = "cannot load " + kCublas + ": " + (e ? e : "unknown error");
    return out;
  }
  CublasApi& a = out.api;
  std::string& err = out.error;
  bind(blas, "cublasCreate_v2", a.create, kCublas, err);
  bind(blas, "cublasDestroy_v2", a.destroy, kCublas, err);
  bind(blas, "cublasSetStream_v2", a.set_stream, kCublas, err);
  bind(blas, "cublasSetMathMode", a.set_math_mode, kCublas, err);
  bind(blas, "cublasSgemm_v2", a.sgemm, kCublas, err);
  bind(blas, "cublasGemmEx", a.gemm_ex, kCublas, err);
  bind(blas, "cublasGetStatusName", a.status_name, kCublas, err);
  bind(blas, "cublasGetStatusString", a.status_string, kCublas, err);
  bind(lt, "cublasLtCreate", a.lt_create, kCublasLt, err);
  bind(lt, "cublasLtDestroy", a.lt_destroy, kCublasLt, err);
  bind(lt, "cublasLtMatmulDescCreate", a.lt_desc_create, kCublasLt, err);
  bind(lt, "cublasLtMatmulDescDestroy", a.lt_desc_destroy, kCublasLt, err);
  bind(lt, "cublasLtMatmulDescSetAttribute", a.lt_desc_set, kCublasLt, err);
  bind(lt, "cublasLtMatrixLayoutCreate", a.lt_layout_create, kCublasLt, err);
  bind(lt, "cublasLtMatrixLayoutDestroy", a.lt_layout_destroy, kCublasLt, err);
  bind(lt, "cublasLtMatmulPreferenceCreate", a.lt_pref_create, kCublasLt, err);
  bind(lt, "cublasLtMatmulPreferenceDestroy", a.lt_pref_destroy, kCublasLt, err);
  bind(lt, "cublasLtMatmulPreferenceSetAttribute", a.lt_pref_set, kCublasLt, err);
  bind(lt, "cublasLtMatmulAlgoGetHeuristic", a.lt_heuristic, kCublasLt, err);
  bind(lt, "cublasLtMatmul", a.lt_matmul, kCublasLt, err);
  return out;  // the libraries stay loaded for the life of the process
}

}  // namespace

Expected<const CublasApi*> cublas_api() {
  static const Loaded loaded = load();
  if (!loaded.error.empty()) return make_error(loaded.error);
  return &loaded.api;
}

}  // namespace fp4c::runtime::cuda
