#include "tools/fp4c/commands.h"

namespace fp4c::tools {

std::string CommandLine::joined() const {
  std::string out;
  for (int i = 0; i < argc; ++i) {
    std::string a = argv[i];
    if (!out.empty()) out += ' ';
    if (a.find_first_of(" \t\"'\\$") == std::string::npos && !a.empty()) {
      out += a;
    } else {
      out += '\'';
      for (char c : a) out += c == '\'' ? std::string("'\\''") : std::string(1, c);
      out += '\'';
    }
  }
  return out;
}

}  // namespace fp4c::tools
