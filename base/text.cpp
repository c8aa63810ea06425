#include "base/text.h"

#include <cstdarg>
#include <cstdio>
#include <ctime>
#include <vector>

namespace fp4c {

std::string format(const char* fmt, ...) {
  va_list ap;
  va_start(ap, fmt);
  va_list again;
  va_copy(again, ap);
  char small[256];
  const int n = std::vsnprintf(small, sizeof small, fmt, ap);
  va_end(ap);
  std::string out;
  if (n < 0) {
    va_end(again);
    return out;
  }
  if (size_t(n) < sizeof small) {
    out.assign(small, size_t(n));
  } else {
    std::vector<char> big(size_t(n) + 1);
    std::vsnprintf(big.data(), big.size(), fmt, again);
    out.assign(big.data(), size_t(n));
  }
  va_end(again);
  return out;
}

std::string utc_timestamp() {
  const std::time_t t = std::time(nullptr);
  std::tm tm{};
  gmtime_r(&t, &tm);
  char buf[32];
  std::strftime(buf, sizeof buf, "%Y-%m-%dT%H:%M:%SZ", &tm);
  return buf;
}

}  // namespace fp4c
