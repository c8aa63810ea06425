// `pack`: the plan of every tensor (NVFP4/MXFP4 or kept, and why), then every tensor streamed into the
// artifact's staging directory: Linears quantized with the chosen quantizer, the rest as they came.
#include <cstdio>

#include "pipeline/distributed.h"
#include "pipeline/pass.h"
#include "runtime/comm.h"

namespace fp4c::pipeline {
namespace {

class PackPass final : public Pass {
 public:
  Status run(PassContext& ctx) override {
    passes::WeightPlanOptions plan_options{ctx.scheme, ctx.ignore, ctx.stats.get(), ctx.bf16_keep};
    FP4C_TRY(passes::plan_weights(ctx.model, plan_options));
    ctx.plan = backends::plan_layout(ctx.model, ctx.layout);
    if (runtime::Comm& comm = runtime::Comm::world(); comm.distributed() || !ctx.checkpoint_dir.empty()) {
      FP4C_TRY(prequantize_distributed(ctx, comm));   // each rank its share, at rank 0
      if (comm.rank() != 0) return {};                // rank 0 packs and writes
    }
    {
      FP4C_ASSIGN(auto dir, backends::StagingDir::create(ctx.out, ctx.force));
      ctx.staging.emplace(std::move(dir));
      for (const std::string& d : ctx.staging->removed()) ctx.note("removed " + d + ", the staging directory of a run that died");
    }
    ctx.writer.emplace(ctx.staging->path(), *ctx.plan);
    passes::PackOptions pack_options;
    pack_options.quantizer = ctx.quantizer;
    pack_options.stats = ctx.stats.get();
    FP4C_ASSIGN(ctx.packed, passes::pack_weights(ctx.model, ctx.checkpoint.files, ctx.checkpoint.refs, *ctx.writer,
                                                 pack_options));
    FP4C_TRY(ctx.writer->finish());
    ctx.bytes_read = ctx.packed->bytes_read;
    ctx.bytes_written = ctx.writer->bytes_written();
    return {};
  }

  std::string describe(const PassContext& ctx) const override {
    const ir::Model& model = ctx.model;
    std::string out;
    char line[320];
    std::snprintf(line, sizeof line, "%-58s %-6s %10s %10s %10s  %s\n", "tensor", "format", "SQNR dB", "G", "Gx",
                  "reason kept");
    out += line;
    for (ir::TensorId id = 0; id < model.tensors.size(); ++id) {
      const auto& t = model.tensors[id];
      if (!ir::is_linear(t.role) || t.kind != ir::ParamKind::Weight) continue;
      const auto& d = model.annotations.decision[id];
      const auto& p = id < model.annotations.packed.size() ? model.annotations.packed[id] : std::nullopt;
      if (p && d.format == ir::Format::MXFP4)
        std::snprintf(line, sizeof line, "%-58s %-6s %10.2f %10s %10s\n", t.name.c_str(), "mxfp4", p->error.sqnr_db,
                      "-", "-");
      else if (p)
        std::snprintf(line, sizeof line, "%-58s %-6s %10.2f %10.4g %10s\n", t.name.c_str(), "nvfp4", p->error.sqnr_db,
                      p->weight_global_scale,
                      p->input_global_scale ? std::to_string(*p->input_global_scale).c_str() : "-");
      else
        std::snprintf(line, sizeof line, "%-58s %-6s %10s %10s %10s  %s\n", t.name.c_str(),
                      std::string(ir::format_name(d.format)).c_str(), "-", "-", "-", d.skip ? d.skip->detail.c_str() : "");
      out += line;
    }
    return out;
  }
};

}  // namespace

const PassDefinition& PackPass_definition() {
  static const PassDefinition d{
      {"pack", "streams every tensor into the artifact: NVFP4 Linears packed, the rest as they came", {}, {"blockscale"},
       {}, /*at_most_once=*/true},
      [](const PassInvocation&, CheckState& s) -> Status {
        if (s.scheme == passes::Scheme::W4A4 && !s.stats_valid)
          return make_error("--scheme w4a4 needs statistics of the model as it is packed (its input global scales): "
                            "'stats' in the pipeline, after any 'smoothquant'");
        return {};
      },
      [](const PassInvocation&) -> std::unique_ptr<Pass> { return std::make_unique<PackPass>(); }};
  return d;
}

}  // namespace fp4c::pipeline
