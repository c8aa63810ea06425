#include "base/profile.h"

#include <atomic>
#include <cstdio>
#include <cstdlib>

namespace fp4c::profile {
namespace {

constexpr const char* kNames[] = {"linear_prepare", "gemm", "attention", "attention_gemm_thread", "norm",
                                  "elementwise", "convert", "stats", "log_softmax"};
static_assert(sizeof(kNames) / sizeof(kNames[0]) == size_t(Stage::Count));

std::atomic<int64_t> g_ns[size_t(Stage::Count)];
std::atomic<int64_t> g_calls[size_t(Stage::Count)];

}  // namespace

bool enabled() {
  static const bool on = [] {
    const char* v = std::getenv("FP4C_PROFILE");
    return v && *v && std::string(v) != "0";
  }();
  return on;
}

void add(Stage stage, int64_t nanoseconds) {
  g_ns[size_t(stage)].fetch_add(nanoseconds, std::memory_order_relaxed);
  g_calls[size_t(stage)].fetch_add(1, std::memory_order_relaxed);
}

std::string report() {
  std::string out;
  for (size_t i = 0; i < size_t(Stage::Count); ++i) {
    const int64_t calls = g_calls[i].load();
    if (calls == 0) continue;
    char line[128];
    std::snprintf(line, sizeof line, "profile %s %.6f %lld\n", kNames[i], double(g_ns[i].load()) * 1e-9,
                  static_cast<long long>(calls));
    out += line;
  }
  return out;
}

void reset() {
  for (size_t i = 0; i < size_t(Stage::Count); ++i) {
    g_ns[i] = 0;
    g_calls[i] = 0;
  }
}

}  // namespace fp4c::profile
