// Element types of tensors in checkpoints and artifacts, with their safetensors names.
#pragma once

#include <cstddef>
#include <cstdint>
#include <optional>
#include <string_view>

namespace fp4c {

enum class DType : uint8_t { BF16, F16, F32, U8, F8_E4M3, I32, I64 };

constexpr size_t dtype_size(DType t) {
  switch (t) {
    case DType::BF16: case DType::F16: return 2;
    case DType::F32: case DType::I32: return 4;
    case DType::U8: case DType::F8_E4M3: return 1;
    case DType::I64: return 8;
  }
  return 0;
}

// The spelling used in safetensors headers ("BF16", "F8_E4M3", ...).
constexpr std::string_view dtype_name(DType t) {
  switch (t) {
    case DType::BF16: return "BF16";
    case DType::F16: return "F16";
    case DType::F32: return "F32";
    case DType::U8: return "U8";
    case DType::F8_E4M3: return "F8_E4M3";
    case DType::I32: return "I32";
    case DType::I64: return "I64";
  }
  return "?";
}

inline std::optional<DType> dtype_from_name(std::string_view s) {
  for (DType t : {DType::BF16, DType::F16, DType::F32, DType::U8, DType::F8_E4M3, DType::I32, DType::I64})
    if (dtype_name(t) == s) return t;
  return std::nullopt;
}

}  // namespace fp4c
