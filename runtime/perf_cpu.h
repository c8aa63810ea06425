// Host figures the CPU PerfDevice reports (runtime/perf_cpu.cpp), shared with the decoder's serving run.
#pragma once

#include <cstdint>
#include <string>

namespace fp4c::runtime {

// The "model name" of /proc/cpuinfo ("unknown CPU" when it has none).
std::string cpu_model_name();

struct MemoryInfo {
  uint64_t total = 0, available = 0;  // bytes: MemTotal and MemAvailable of /proc/meminfo (0 when unreadable)
};
MemoryInfo memory_info();

// The process's peak resident set (VmHWM, else getrusage's ru_maxrss), bytes.
uint64_t peak_rss_bytes();
// The process's resident set now (VmRSS), bytes; 0 when unreadable.
uint64_t current_rss_bytes();

}  // namespace fp4c::runtime
