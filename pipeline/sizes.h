// Byte sizes on the command line: "5GB", "500MB", "2GiB", "1048576".
#pragma once

#include <cstdint>
#include <optional>
#include <string>

namespace fp4c::pipeline {

std::optional<uint64_t> parse_size(const std::string& text);
std::string format_bytes(uint64_t bytes);   // "1.23 GB"

}  // namespace fp4c::pipeline
