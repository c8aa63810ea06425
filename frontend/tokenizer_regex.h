// A compiled PCRE2 pattern (UTF + UCP, JIT where available) as Hugging Face pre-tokenizers use it:
// all non-overlapping matches, left to right. PCRE2 speaks the regex dialect of those files
// (\p{L}, \p{N}, (?i:...), lookahead) as the Oniguruma engine the `tokenizers` library uses does.
#pragma once

#include <memory>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "base/expected.h"

namespace fp4c::frontend {

class Regex {
 public:
  // `pattern` is a regex, or with literal = true a plain string to find.
  static Expected<Regex> compile(const std::string& pattern, bool literal = false);

  // Byte ranges [begin, end) of the matches in `text` (valid UTF-8); empty matches are skipped.
  Status find_all(std::string_view text, std::vector<std::pair<size_t, size_t>>& matches) const;

  const std::string& pattern() const { return pattern_; }

 private:
  struct Code;
  std::shared_ptr<const Code> code_;
  std::string pattern_;
};

}  // namespace fp4c::frontend
