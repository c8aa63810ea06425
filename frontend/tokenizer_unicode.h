// UTF-8 and Unicode normalization (NFC) for the tokenizers; tables from Python's unicodedata
// (frontend/tokenizer_unicode_tables.py), so no ICU is needed.
#pragma once

#include <cstddef>
#include <optional>
#include <string>
#include <string_view>

namespace fp4c::frontend::unicode {

// Byte offset of the first invalid UTF-8 sequence in `s` (overlong, surrogate, out of range,
// truncated), or nullopt when `s` is valid.
std::optional<size_t> find_invalid_utf8(std::string_view s);

// Appends the UTF-8 encoding of `cp`.
void append_utf8(std::string& out, char32_t cp);

// Decodes the code point at s[i] (s valid UTF-8) and advances i past it.
char32_t next_code_point(std::string_view s, size_t& i);

// Canonical composition (Unicode NFC) of valid UTF-8 text; returns the input unchanged (and fast)
// when no code point in it can take part in decomposition or composition.
std::string nfc(std::string_view s);

}  // namespace fp4c::frontend::unicode
