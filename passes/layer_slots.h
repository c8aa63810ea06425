// The Linear of a role in one decoder layer's parameters (runtime::LayerParams), for passes that reach a
// tensor through its IR role: the dense q/k/v/o/gate/up/down, or an expert's gate/up/down.
#pragma once

#include <utility>

#include "ir/model.h"
#include "runtime/weights.h"

namespace fp4c::passes {

// nullptr for a role the layer has no Linear of (or an expert index past its experts).
inline const runtime::LinearParams* linear_slot(const runtime::LayerParams& p, ir::Role role, int expert = -1) {
  if (expert >= 0) {
    if (size_t(expert) >= p.experts.size()) return nullptr;
    const auto& e = p.experts[size_t(expert)];
    switch (role) {
      case ir::Role::Gate: return &e.gate;
      case ir::Role::Up: return &e.up;
      case ir::Role::Down: return &e.down;
      default: return nullptr;
    }
  }
  switch (role) {
    case ir::Role::Q: return &p.q;
    case ir::Role::K: return &p.k;
    case ir::Role::V: return &p.v;
    case ir::Role::O: return &p.o;
    case ir::Role::Gate: return &p.gate;
    case ir::Role::Up: return &p.up;
    case ir::Role::Down: return &p.down;
    default: return nullptr;
  }
}

inline runtime::LinearParams* linear_slot(runtime::LayerParams& p, ir::Role role, int expert = -1) {
  return const_cast<runtime::LinearParams*>(linear_slot(std::as_const(p), role, expert));
}

}  // namespace fp4c::passes
