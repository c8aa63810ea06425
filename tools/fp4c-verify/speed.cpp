#include "tools/fp4c-verify/speed.h"

#include <algorithm>
#include <chrono>
#include <map>
#include <utility>

#include "runtime/checkpoint_weights.h"
#include "pipeline/artifact_weights.h"

namespace fp4c::verify {
namespace {

double ratio(double a, double b) { return b > 0 ? a / b : 0; }

manifest::ServingRun to_proto(const runtime::ServingFigures& f, const std::string& model) {
  manifest::ServingRun r;
  r.set_model(model);
  r.set_ttft_seconds(f.ttft_seconds);
  r.set_decode_p50_seconds(f.decode_p50_seconds);
  r.set_decode_p95_seconds(f.decode_p95_seconds);
  r.set_decode_p99_seconds(f.decode_p99_seconds);
  r.set_tokens_per_second(f.tokens_per_second);
  r.set_requests_per_second(f.requests_per_second);
  r.set_memory_used(f.memory_used);
  r.set_memory_free(f.memory_free);
  r.set_weight_bytes(f.weight_bytes);
  r.set_kv_cache_bytes(f.kv_cache_bytes);
  return r;
}

}  // namespace

std::vector<LinearShape> nvfp4_linear_shapes(const ir::Model& reference,
                                             const backends::compressed_tensors::ArtifactReader& artifact) {
  std::map<std::pair<int64_t, int64_t>, std::vector<std::string>> by_shape;
  for (ir::TensorId id = 0; id < reference.tensors.size(); ++id) {
    const auto& t = reference.tensors[id];
    if (!artifact.tensor(id).quantized) continue;
    auto& roles = by_shape[{t.shape[0], t.shape[1]}];
    const std::string role(ir::role_name(t.role));
    if (std::find(roles.begin(), roles.end(), role) == roles.end()) roles.push_back(role);
  }
  std::vector<LinearShape> out;
  for (auto& [nk, roles] : by_shape) out.push_back({nk.first, nk.second, std::move(roles)});
  return out;
}

std::string device_label(const runtime::DeviceInfo& info) {
  if (info.kind == "cpu") return "cpu: " + info.name + " (" + std::to_string(info.threads) + " threads)";
  return info.kind + " " + info.name + " (sm_" + std::to_string(info.compute_capability) + ", " +
         std::to_string(info.threads) + " SMs)";
}

std::vector<runtime::ServingSpec> decision_cases(int batch) {
  return {{"steady-512-output-128", 512, 128, batch}, {"prefill-2048-output-128", 2048, 128, batch}};
}

Expected<manifest::Performance> measure_performance(runtime::PerfDevice& device,
                                                    const frontend::LoadedCheckpoint& reference,
                                                    const backends::compressed_tensors::ArtifactReader& artifact,
                                                    const SpeedOptions& o) {
  const auto t0 = std::chrono::steady_clock::now();
  const auto tell = [&](const std::string& what) {
    if (o.progress) o.progress(what);
  };
  manifest::Performance p;
  const runtime::DeviceInfo info = device.info();
  const std::string label = device_label(info);
  p.set_device(label);
  p.set_fp4_path(info.fp4_path);
  auto* di = p.mutable_device_info();
  di->set_kind(info.kind);
  di->set_name(info.name);
  di->set_compute_capability(info.compute_capability);
  di->set_threads(info.threads);
  di->set_fp4_path(info.fp4_path);
  di->set_memory_total(info.memory_total);
  di->set_memory_free(info.memory_free);

  tell("ceilings");
  FP4C_ASSIGN(const runtime::Ceilings c, device.ceilings());
  auto* pc = p.mutable_ceilings();
  pc->set_bandwidth_gbs(c.bandwidth_gbs);
  pc->set_bf16_tflops(c.bf16_tflops);
  pc->set_fp4_tflops(c.fp4_tflops);
  pc->set_how(c.how);

  for (const auto& shape : nvfp4_linear_shapes(reference.model, artifact)) {
    for (const auto& [phase, ms] : {std::pair{"decode", &o.decode_m}, std::pair{"prefill", &o.prefill_m}}) {
      for (const int64_t m : *ms) {
        tell("matmul " + std::to_string(m) + "x" + std::to_string(shape.n) + "x" + std::to_string(shape.k));
        runtime::MatmulCase mc;
        mc.m = m;
        mc.n = shape.n;
        mc.k = shape.k;
        mc.w4a4 = artifact.w4a4();
        FP4C_ASSIGN(const runtime::MatmulFigures f, device.matmul(mc, o.repetitions));
        auto* x = p.add_matmul();
        x->set_m(m);
        x->set_n(shape.n);
        x->set_k(shape.k);
        x->set_w4a4(mc.w4a4);
        x->set_phase(phase);
        for (const auto& r : shape.roles) x->add_modules(r);
        x->set_repetitions(f.repetitions);
        x->set_bf16_seconds(f.bf16_seconds);
        x->set_fp4_seconds(f.fp4_seconds);
        x->set_bf16_gbs(f.bf16_gbs);
        x->set_fp4_gbs(f.fp4_gbs);
        x->set_bf16_tflops(f.bf16_tflops);
        x->set_fp4_tflops(f.fp4_tflops);
        x->set_speedup(ratio(f.bf16_seconds, f.fp4_seconds));
        x->set_bf16_bandwidth_fraction(ratio(f.bf16_gbs, c.bandwidth_gbs));
        x->set_fp4_bandwidth_fraction(ratio(f.fp4_gbs, c.bandwidth_gbs));
        x->set_bf16_compute_fraction(ratio(f.bf16_tflops, c.bf16_tflops));
        x->set_fp4_compute_fraction(ratio(f.fp4_tflops, c.fp4_tflops > 0 ? c.fp4_tflops : c.bf16_tflops));
        x->set_fp4_path(f.fp4_path.empty() ? info.fp4_path : f.fp4_path);
        x->set_device(label);
      }
    }
  }

  runtime::CheckpointWeights bf16(reference.model, reference.refs, /*release_pages=*/false);
  pipeline::ArtifactWeights nvfp4(reference.model, artifact, /*with_packed=*/true);
  for (const auto& spec : o.serving.empty() ? decision_cases(o.batch) : o.serving) {
    tell(spec.name + " (BF16 reference)");
    FP4C_ASSIGN(const runtime::ServingFigures ref, device.serve(bf16, reference.model.config, spec));
    tell(spec.name + " (NVFP4 artifact)");
    FP4C_ASSIGN(const runtime::ServingFigures art, device.serve(nvfp4, reference.model.config, spec));
    auto* s = p.add_serving();
    s->set_name(spec.name);
    s->set_prompt(spec.prompt);
    s->set_output(spec.output);
    s->set_batch(spec.batch);
    *s->mutable_reference() = to_proto(ref, "bf16-reference");
    *s->mutable_artifact() = to_proto(art, "nvfp4-artifact");
    s->set_ttft_speedup(ratio(ref.ttft_seconds, art.ttft_seconds));
    s->set_decode_p50_speedup(ratio(ref.decode_p50_seconds, art.decode_p50_seconds));
    s->set_tokens_per_second_ratio(ratio(art.tokens_per_second, ref.tokens_per_second));
    s->set_weight_bytes_saved(int64_t(ref.weight_bytes) - int64_t(art.weight_bytes));
    s->set_memory_used_saved(int64_t(ref.memory_used) - int64_t(art.memory_used));
    s->set_device(label);
    s->set_fp4_path(info.fp4_path);
    const int64_t positions = reference.model.config.max_position_embeddings;
    if (positions > 0 && spec.prompt + spec.output > positions)
      s->set_note(std::to_string(spec.prompt + spec.output) + " positions per request exceed the model's " +
                  "max_position_embeddings " + std::to_string(positions) +
                  ": timed as run (RoPE extrapolated); a serving engine would refuse such requests");
  }
  p.set_seconds(std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count());
  return p;
}

}  // namespace fp4c::verify
