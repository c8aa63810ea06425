// The readable report of a verification: what was checked, the accuracy, the speed and memory figures
// labelled with the device and FP4 path, the thresholds and the verdict.
#include <algorithm>
#include <cstdarg>
#include <cstdio>
#include <vector>

#include "base/text.h"
#include "tools/fp4c-verify/verify.h"

namespace fp4c::verify {
namespace {


std::string mib(double bytes) { return format("%.1f MiB", bytes / (1024.0 * 1024.0)); }

std::string join(const google::protobuf::RepeatedPtrField<std::string>& xs) {
  std::string s;
  for (const auto& x : xs) s += (s.empty() ? "" : ",") + x;
  return s;
}

void performance_table(const manifest::Performance& p, std::string& t) {
  t += format("\nspeed and memory on %s, NVFP4 path %s (%.1f s)\n", p.device().c_str(), p.fp4_path().c_str(),
                     p.seconds());
  const auto& c = p.ceilings();
  t += format("  ceilings measured in this run: bandwidth %.1f GB/s, BF16 %.3f TFLOP/s, FP4 %s  (%s)\n",
                     c.bandwidth_gbs(), c.bf16_tflops(),
                     c.fp4_tflops() > 0 ? format("%.3f TFLOP/s", c.fp4_tflops()).c_str() : "none (no native FP4)",
                     c.how().c_str());
  if (p.matmul_size() > 0) {
    t += format("  %-7s %6s %6s %6s %-10s %10s %10s %7s %9s %9s %6s %6s %-14s %s\n", "phase", "M", "N", "K",
                       "weights", "BF16 us", "NVFP4 us", "speedup", "BF16 GB/s", "FP4 GB/s", "BF16%bw", "FP4%bw",
                       "fp4 path", "Linears");
    for (const auto& x : p.matmul())
      t += format("  %-7s %6lld %6lld %6lld %-10s %10.1f %10.1f %7.2f %9.2f %9.2f %6.1f %6.1f %-14s %s\n",
                         x.phase().c_str(), static_cast<long long>(x.m()), static_cast<long long>(x.n()),
                         static_cast<long long>(x.k()), x.w4a4() ? "W4A4" : "W4A16", x.bf16_seconds() * 1e6,
                         x.fp4_seconds() * 1e6, x.speedup(), x.bf16_gbs(), x.fp4_gbs(),
                         100 * x.bf16_bandwidth_fraction(), 100 * x.fp4_bandwidth_fraction(), x.fp4_path().c_str(),
                         join(x.modules()).c_str());
  }
  for (const auto& s : p.serving()) {
    t += format("  %s, batch %d (%lld prompt + %lld generated tokens per request):\n", s.name().c_str(),
                       s.batch(), static_cast<long long>(s.prompt()), static_cast<long long>(s.output()));
    t += format("    %-15s %9s %9s %9s %9s %9s %9s %12s %12s %12s\n", "model", "TTFT ms", "p50 ms", "p95 ms",
                       "p99 ms", "tok/s", "req/s", "weights", "KV cache", "peak memory");
    for (const auto* r : {&s.reference(), &s.artifact()})
      t += format("    %-15s %9.2f %9.3f %9.3f %9.3f %9.1f %9.3f %12s %12s %12s\n", r->model().c_str(),
                         r->ttft_seconds() * 1e3, r->decode_p50_seconds() * 1e3, r->decode_p95_seconds() * 1e3,
                         r->decode_p99_seconds() * 1e3, r->tokens_per_second(), r->requests_per_second(),
                         mib(double(r->weight_bytes())).c_str(), mib(double(r->kv_cache_bytes())).c_str(),
                         mib(double(r->memory_used())).c_str());
    t += format("    NVFP4 bought: TTFT x%.2f, decode p50 x%.2f, tokens/s x%.2f, weights -%s, peak memory %s%s\n",
                       s.ttft_speedup(), s.decode_p50_speedup(), s.tokens_per_second_ratio(),
                       mib(double(s.weight_bytes_saved())).c_str(), s.memory_used_saved() >= 0 ? "-" : "+",
                       mib(double(std::llabs(s.memory_used_saved()))).c_str());
    if (!s.note().empty()) t += "    note: " + s.note() + "\n";
  }
}

}  // namespace

std::string render_table(const manifest::Verification& v) {
  std::string t;
  t += format("fp4c-verify %s, %s, device %s\n", v.tool_version().c_str(), v.created_utc().c_str(),
                     v.device().c_str());
  t += format("artifact   %s (%s, %s)\n", v.artifact_dir().c_str(),
                     v.format().empty() ? "?" : v.format().c_str(), v.scheme().empty() ? "?" : v.scheme().c_str());
  t += format("reference  %s\n", v.reference_dir().c_str());
  t += format("eval       %s%s%s\n", v.eval_path().c_str(), v.has_eval_hash() ? " xxh3-128 " : "",
                     v.eval_hash().hex().c_str());
  if (v.has_hash_check()) {
    const auto& h = v.hash_check();
    t += format("hashes     %s: %d artifact file(s), %d tensor(s); %d reference file(s)\n",
                       h.passed() ? "match" : "MISMATCH", h.artifact_files(), h.artifact_tensors(), h.reference_files());
    for (const auto& p : h.problems()) t += "  " + p + "\n";
  }
  if (v.has_accuracy()) {
    const auto& a = v.accuracy();
    t += format("\naccuracy on %s (%llu predictions)\n", a.device().c_str(),
                       static_cast<unsigned long long>(a.tokens()));
    t += format("  %-12s %-12s %9s %9s %9s %9s %8s\n", "ppl ref", "ppl artifact", "recovery", "KL mean",
                       "KL median", "KL p99", "top-1");
    t += format("  %-12.6f %-12.6f %9.4f %9.5f %9.5f %9.5f %8.4f\n", a.perplexity_reference(), a.perplexity(),
                       a.recovery(), a.kl_mean(), a.kl_median(), a.kl_p99(), a.top1_agreement());
    std::vector<const manifest::LayerError*> layers;
    for (const auto& l : a.layers()) layers.push_back(&l);
    std::sort(layers.begin(), layers.end(),
              [](const auto* x, const auto* y) { return x->output_error() > y->output_error(); });
    if (!layers.empty()) {
      t += format("  largest per-Linear output errors (of %zu):\n", layers.size());
      for (size_t i = 0; i < std::min<size_t>(5, layers.size()); ++i)
        t += format("    %-48s %12.6g\n", layers[i]->module().c_str(), layers[i]->output_error());
    }
  }
  if (v.has_performance()) performance_table(v.performance(), t);
  if (v.thresholds_size() > 0) {
    t += "\nthresholds\n";
    for (const auto& th : v.thresholds()) {
      const bool at_least = th.option().rfind("--min-", 0) == 0;
      t += format("  %-8s %-10s %.4f %s %g\n", th.passed() ? "PASS" : "FAIL", th.name().c_str(), th.value(),
                         th.passed() ? (at_least ? ">=" : "<=") : (at_least ? "<" : ">"), th.limit());
    }
  }
  if (v.verdict() == "refused") t += "\nREFUSED: " + v.refused() + "\n";
  else t += format("\n%s (%.1f s)\n", v.verdict() == "pass" ? "PASS" : "FAIL", v.seconds());
  return t;
}

}  // namespace fp4c::verify
