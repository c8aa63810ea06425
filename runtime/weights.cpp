#include "runtime/weights.h"

#include "runtime/elementwise.h"

namespace fp4c::runtime {

Status check_head_norms(const LayerParams& p, int64_t head_dim, const std::string& where) {
  if (p.q_norm.empty() && p.k_norm.empty()) return {};
  if (int64_t(p.q_norm.size()) != head_dim || int64_t(p.k_norm.size()) != head_dim)
    return make_error(where + ": query and key norms of " + std::to_string(p.q_norm.size()) + " and " +
                      std::to_string(p.k_norm.size()) + " elements, expected head_dim " + std::to_string(head_dim) +
                      " each");
  return {};
}

void apply_head_norms(const std::vector<float>& q_norm, const std::vector<float>& k_norm, float* q, float* k,
                      int64_t rows, int64_t heads, int64_t kv_heads, int64_t head_dim, double eps) {
  if (q_norm.empty()) return;
  // [rows, heads * head_dim] is [rows * heads, head_dim]: one RMSNorm row per head of each token.
  rms_norm(q, q_norm.data(), rows * heads, head_dim, eps, q);
  rms_norm(k, k_norm.data(), rows * kv_heads, head_dim, eps, k);
}

}  // namespace fp4c::runtime
