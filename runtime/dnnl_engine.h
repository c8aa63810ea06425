// The process's oneDNN CPU engine (created on first use; oneDNN engines are thread-safe).
#pragma once

#include <oneapi/dnnl/dnnl.hpp>

namespace fp4c::runtime {

const dnnl::engine& cpu_engine();

}  // namespace fp4c::runtime
