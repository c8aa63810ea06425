// Where a run's time goes, by kind of work: wall time per stage of the forward, summed over calls.
// Off unless the environment sets FP4C_PROFILE (read once); off, a scope costs one predictable branch.
// bench/profile.sh reads the report (fp4c prints it on stderr at exit when it is on) to give the share
// of time in matrix multiplies against the rest.
#pragma once

#include <chrono>
#include <cstdint>
#include <string>

namespace fp4c::profile {

enum class Stage : int {
  LinearPrepare,   // weight conversion/reorder into the GEMM's layout (PreparedLinear::create)
  Gemm,            // Linear GEMMs (PreparedLinear::run)
  Attention,       // the whole causal attention (packing, RoPE, QK^T, softmax, PV)
  AttentionGemm,   // its QK^T and PV GEMMs: thread-seconds (inside the team), not wall
  Norm,            // RMSNorm
  Elementwise,     // residual adds, SiLU * up
  Convert,         // BF16 rounding of GEMM inputs
  Stats,           // statistics hooks (the stats pass)
  LogSoftmax,      // the evaluation's log-softmax and figures over the logits
  Count
};

bool enabled();
void add(Stage stage, int64_t nanoseconds);
// Stage name, seconds and calls, one line each; empty when nothing was recorded.
std::string report();
void reset();

class Scope {
 public:
  explicit Scope(Stage s) : stage_(s), on_(enabled()) {
    if (on_) t0_ = std::chrono::steady_clock::now();
  }
  ~Scope() {
    if (on_)
      add(stage_, std::chrono::duration_cast<std::chrono::nanoseconds>(std::chrono::steady_clock::now() - t0_).count());
  }
  Scope(const Scope&) = delete;
  Scope& operator=(const Scope&) = delete;

 private:
  Stage stage_;
  bool on_;
  std::chrono::steady_clock::time_point t0_;
};

}  // namespace fp4c::profile
