// Small text helpers every layer may use: printf into a std::string, and the UTC time as ISO 8601.
#pragma once

#include <string>

namespace fp4c {

std::string format(const char* fmt, ...) __attribute__((format(printf, 1, 2)));

// "2026-12-06T21:49:38Z": the time now, UTC, to the second (manifests, reports, verification records).
std::string utc_timestamp();

}  // namespace fp4c
