// `describe`: the IR as it stands at this place in the pipeline, for `--print-after describe`: every
// tensor's role, layer, shape and dtype, and whether an earlier pass rewrote it. Changes nothing.
#include <cstdio>

#include "pipeline/pass.h"

namespace fp4c::pipeline {
namespace {

class DescribePass final : public Pass {
 public:
  Status run(PassContext&) override { return {}; }

  std::string describe(const PassContext& ctx) const override {
    const ir::Model& model = ctx.model;
    std::string out;
    char line[320];
    std::snprintf(line, sizeof line, "%-58s %-8s %5s %-16s %-5s %s\n", "tensor", "role", "layer", "shape", "dtype",
                  "rewritten");
    out += line;
    size_t rewritten = 0;
    for (ir::TensorId id = 0; id < model.tensors.size(); ++id) {
      const auto& t = model.tensors[id];
      std::string shape = "[";
      for (size_t i = 0; i < t.shape.size(); ++i) shape += (i ? "," : "") + std::to_string(t.shape[i]);
      shape += "]";
      const bool changed = model.transformed(id);
      rewritten += changed;
      std::snprintf(line, sizeof line, "%-58s %-8s %5s %-16s %-5s %s\n", t.name.c_str(),
                    std::string(ir::role_name(t.role)).c_str(), t.layer ? std::to_string(*t.layer).c_str() : "-",
                    shape.c_str(), std::string(dtype_name(t.dtype)).c_str(), changed ? "yes" : "");
      out += line;
    }
    std::snprintf(line, sizeof line, "%zu tensor(s), %zu rewritten; statistics %s\n", model.tensors.size(), rewritten,
                  ctx.stats ? "current" : "none (not collected, or invalidated)");
    return out + line;
  }
};

}  // namespace

const PassDefinition& DescribePass_definition() {
  static const PassDefinition d{
      {"describe",
       "the model as it stands here (every tensor's role, layer, shape, dtype, and whether a pass rewrote it); "
       "changes nothing: use with --print-after describe",
       {},
       {},
       {}},
      nullptr,
      [](const PassInvocation&) -> std::unique_ptr<Pass> { return std::make_unique<DescribePass>(); }};
  return d;
}

}  // namespace fp4c::pipeline
