// config.json (frontend::parse_config) and, when it parses, architecture classification
// (frontend::classify) of a tensor list against it: names, roles, layers, shapes against the config,
// fused groups, tied embeddings.
//
// Input parts (fuzz_support.h): 0 config.json; 1 the checkpoint's tensors, one per line:
// `NAME DTYPE D0,D1,...` (DTYPE as safetensors spells it; an empty shape list is a scalar). Lines
// that do not have this form are skipped, so every input reaches the classifier.
#include <cstddef>
#include <cstdint>
#include <string>
#include <vector>

#include "frontend/architecture.h"
#include "frontend/config.h"
#include "fuzz_support.h"
#include "base/dtype.h"

namespace {

std::vector<fp4c::frontend::TensorHeader> parse_tensor_lines(std::string_view text) {
  std::vector<fp4c::frontend::TensorHeader> out;
  while (!text.empty()) {
    const size_t eol = text.find('\n');
    std::string_view line = text.substr(0, eol);
    text.remove_prefix(eol == std::string_view::npos ? text.size() : eol + 1);
    const size_t s1 = line.find(' ');
    if (s1 == std::string_view::npos) continue;
    const size_t s2 = line.find(' ', s1 + 1);
    const auto dtype = fp4c::dtype_from_name(line.substr(s1 + 1, s2 == std::string_view::npos ? s2 : s2 - s1 - 1));
    if (!dtype) continue;
    fp4c::frontend::TensorHeader h{std::string(line.substr(0, s1)), *dtype, {}};
    bool ok = true;
    if (s2 != std::string_view::npos) {
      std::string_view dims = line.substr(s2 + 1);
      while (ok && !dims.empty()) {
        const size_t comma = dims.find(',');
        const std::string_view d = dims.substr(0, comma);
        dims.remove_prefix(comma == std::string_view::npos ? dims.size() : comma + 1);
        int64_t v = 0;
        bool neg = false;
        size_t i = 0;
        if (i < d.size() && d[i] == '-') { neg = true; ++i; }
        if (i == d.size() || d.size() - i > 18) ok = false;
        for (; ok && i < d.size(); ++i) {
          if (d[i] < '0' || d[i] > '9') ok = false;
          else v = v * 10 + (d[i] - '0');
        }
        h.shape.push_back(neg ? -v : v);
      }
    }
    if (ok) out.push_back(std::move(h));
  }
  return out;
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const auto parts = fp4c::fuzz::split_parts(data, size, 2);
  auto config = fp4c::frontend::parse_config(std::string(parts[0]), "config.json");
  if (!config.ok()) return 0;
  const auto tensors = parse_tensor_lines(parts.size() > 1 ? parts[1] : std::string_view());
  auto model = fp4c::frontend::classify(*config, tensors, "checkpoint");
  (void)model;
  return 0;
}
