#include "runtime/moe.h"

#include <omp.h>

#include <cmath>
#include <cstring>
#include <string>

#include "runtime/elementwise.h"
#include "runtime/thread_scope.h"

namespace fp4c::runtime {

Routing route(const float* logits, int64_t T, int64_t E, int64_t k, bool renormalize) {
  Routing r;
  r.tokens = T;
  r.experts = E;
  r.top_k = k;
  r.expert.assign(size_t(T * k), 0);
  r.weight.assign(size_t(T * k), 0.0f);
#pragma omp parallel if (T * E >= (1 << 14))
  {
    std::vector<float> p(static_cast<size_t>(E));
    std::vector<char> taken(static_cast<size_t>(E));
#pragma omp for schedule(static)
    for (int64_t t = 0; t < T; ++t) {
      const float* l = logits + t * E;
      float m = l[0];
      for (int64_t e = 1; e < E; ++e) m = std::max(m, l[e]);
      float sum = 0;
      for (int64_t e = 0; e < E; ++e) {
        p[size_t(e)] = std::exp(l[e] - m);
        sum += p[size_t(e)];
      }
      for (int64_t e = 0; e < E; ++e) p[size_t(e)] /= sum;
      std::fill(taken.begin(), taken.end(), 0);
      float chosen = 0;
      for (int64_t j = 0; j < k; ++j) {
        int64_t best = -1;
        for (int64_t e = 0; e < E; ++e)
          if (!taken[size_t(e)] && (best < 0 || p[size_t(e)] > p[size_t(best)])) best = e;
        taken[size_t(best)] = 1;
        r.expert[size_t(t * k + j)] = int32_t(best);
        r.weight[size_t(t * k + j)] = p[size_t(best)];
        chosen += p[size_t(best)];
      }
      if (renormalize)
        for (int64_t j = 0; j < k; ++j) r.weight[size_t(t * k + j)] /= chosen;
    }
  }
  r.begin.assign(size_t(E + 1), 0);
  for (int32_t e : r.expert) ++r.begin[size_t(e) + 1];
  for (int64_t e = 0; e < E; ++e) r.begin[size_t(e + 1)] += r.begin[size_t(e)];
  r.token.resize(size_t(T * k));
  r.token_weight.resize(size_t(T * k));
  std::vector<int64_t> next(r.begin.begin(), r.begin.end() - 1);
  for (int64_t t = 0; t < T; ++t)   // tokens in ascending order within each expert
    for (int64_t j = 0; j < k; ++j) {
      const size_t i = size_t(t * k + j);
      const int64_t at = next[size_t(r.expert[i])]++;
      r.token[size_t(at)] = t;
      r.token_weight[size_t(at)] = r.weight[i];
    }
  return r;
}

Status check_moe_params(const ir::ModelConfig& c, const LayerParams& p, const std::string& where) {
  const int64_t H = c.hidden_size, I = c.moe_intermediate_size, E = c.num_experts;
  auto check = [&](const LinearParams& l, int64_t out, int64_t in, const std::string& what) -> Status {
    if (l.out != out || l.in != in || int64_t(l.weight.size()) != out * in)
      return make_error(where + " " + what + ": shape " + shape_str(l.out, l.in) + " (" +
                        std::to_string(l.weight.size()) + " weights), expected " + shape_str(out, in));
    return {};
  };
  if (c.num_experts_per_tok <= 0 || c.num_experts_per_tok > E)
    return make_error(where + ": num_experts_per_tok " + std::to_string(c.num_experts_per_tok) + " outside [1, " +
                      std::to_string(E) + "]");
  FP4C_TRY(check(p.router, E, H, "router"));
  if (!p.router.bias.empty() || p.router.input_global_scale || p.router.input_mxfp4)
    return make_error(where + " router: a router is a BF16 Linear without bias or input quantization");
  if (int64_t(p.experts.size()) != E)
    return make_error(where + ": " + std::to_string(p.experts.size()) + " experts, expected " + std::to_string(E));
  for (int64_t e = 0; e < E; ++e) {
    const std::string x = "expert " + std::to_string(e);
    FP4C_TRY(check(p.experts[size_t(e)].gate, I, H, x + " gate"));
    FP4C_TRY(check(p.experts[size_t(e)].up, I, H, x + " up"));
    FP4C_TRY(check(p.experts[size_t(e)].down, H, I, x + " down"));
  }
  return {};
}

Status moe_mlp(const ir::ModelConfig& c, int layer, const float* xn, int64_t T, const MoeLinear& run,
               const LinearHook& hook, bool all_experts, MoeWorkspace& ws, float* out, Routing* routing_out) {
  const int64_t H = c.hidden_size, I = c.moe_intermediate_size, E = c.num_experts, k = c.num_experts_per_tok;
  if (hook) hook(LinearInput{layer, ir::Role::Gate, xn, T, H});
  ws.logits.resize(size_t(T * E));
  FP4C_TRY(run(-1, MoePart::Router, xn, T, ws.logits.data()));
  Routing r = route(ws.logits.data(), T, E, k, c.norm_topk_prob);
  std::memset(out, 0, size_t(T * H) * sizeof(float));
  for (int64_t e = 0; e < E; ++e) {
    if (hook && all_experts) {
      // Every token through expert e, for the hook only.
      ws.all_gate.resize(size_t(T * I));
      ws.all_up.resize(size_t(T * I));
      hook(LinearInput{layer, ir::Role::Gate, xn, T, H, int(e), nullptr});
      FP4C_TRY(run(int(e), MoePart::Gate, xn, T, ws.all_gate.data()));
      FP4C_TRY(run(int(e), MoePart::Up, xn, T, ws.all_up.data()));
      activation_mul(c.hidden_act, ws.all_gate.data(), ws.all_up.data(), T * I);
      hook(LinearInput{layer, ir::Role::Down, ws.all_gate.data(), T, I, int(e), nullptr});
    }
    const int64_t n = r.count(e);
    if (n == 0) continue;
    const int64_t* tokens = &r.token[size_t(r.begin[size_t(e)])];
    const float* weights = &r.token_weight[size_t(r.begin[size_t(e)])];
    ws.gathered.resize(size_t(n * H));
    float* x = ws.gathered.data();
#pragma omp parallel for schedule(static) if (n * H >= (1 << 16))
    for (int64_t i = 0; i < n; ++i) std::memcpy(x + i * H, xn + tokens[i] * H, size_t(H) * sizeof(float));
    if (hook && !all_experts) hook(LinearInput{layer, ir::Role::Gate, x, n, H, int(e), tokens});
    ws.gate.resize(size_t(n * I));
    ws.up.resize(size_t(n * I));
    ws.down.resize(size_t(n * H));
    FP4C_TRY(run(int(e), MoePart::Gate, x, n, ws.gate.data()));
    FP4C_TRY(run(int(e), MoePart::Up, x, n, ws.up.data()));
    activation_mul(c.hidden_act, ws.gate.data(), ws.up.data(), n * I);
    if (hook && !all_experts) hook(LinearInput{layer, ir::Role::Down, ws.gate.data(), n, I, int(e), tokens});
    FP4C_TRY(run(int(e), MoePart::Down, ws.gate.data(), n, ws.down.data()));
    const float* y = ws.down.data();
    // Each token appears once per expert: rows are disjoint, so the order of additions into a token's row is
    // the order of the experts whatever the threads.
#pragma omp parallel for schedule(static) if (n * H >= (1 << 16))
    for (int64_t i = 0; i < n; ++i) {
      float* o = out + tokens[i] * H;
      const float w = weights[i];
      const float* yi = y + i * H;
      for (int64_t h = 0; h < H; ++h) o[h] += yi[h] * w;
    }
  }
  if (routing_out) *routing_out = std::move(r);
  return {};
}

}  // namespace fp4c::runtime
