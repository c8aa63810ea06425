// Build cost of a stage: wall and CPU seconds, the process's peak RSS, bytes read and written.
#pragma once

#include <sys/resource.h>

#include <chrono>
#include <cstdint>
#include <string>

namespace fp4c {

struct StageCostFigures {
  std::string stage;
  double wall_seconds = 0;
  double cpu_seconds = 0;
  uint64_t peak_rss_bytes = 0;
  uint64_t bytes_read = 0;
  uint64_t bytes_written = 0;
};

inline double process_cpu_seconds() {
  rusage u{};
  getrusage(RUSAGE_SELF, &u);
  return double(u.ru_utime.tv_sec + u.ru_stime.tv_sec) + 1e-6 * double(u.ru_utime.tv_usec + u.ru_stime.tv_usec);
}

inline uint64_t process_peak_rss_bytes() {
  rusage u{};
  getrusage(RUSAGE_SELF, &u);
  return uint64_t(u.ru_maxrss) * 1024;  // Linux reports KiB
}

// Starts at construction; stop() returns the figures since then.
class StageClock {
 public:
  explicit StageClock(std::string stage)
      : stage_(std::move(stage)), wall0_(std::chrono::steady_clock::now()), cpu0_(process_cpu_seconds()) {}
  StageCostFigures stop(uint64_t bytes_read = 0, uint64_t bytes_written = 0) const {
    StageCostFigures f;
    f.stage = stage_;
    f.wall_seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - wall0_).count();
    f.cpu_seconds = process_cpu_seconds() - cpu0_;
    f.peak_rss_bytes = process_peak_rss_bytes();
    f.bytes_read = bytes_read;
    f.bytes_written = bytes_written;
    return f;
  }

 private:
  std::string stage_;
  std::chrono::steady_clock::time_point wall0_;
  double cpu0_;
};

}  // namespace fp4c
