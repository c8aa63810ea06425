#include "runtime/dnnl_engine.h"

namespace fp4c::runtime {

const dnnl::engine& cpu_engine() {
  static const dnnl::engine engine(dnnl::engine::kind::cpu, 0);
  return engine;
}

}  // namespace fp4c::runtime
