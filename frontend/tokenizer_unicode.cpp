#include "frontend/tokenizer_unicode.h"

#include <algorithm>
#include <cstdint>
#include <iterator>
#include <vector>

#include "frontend/tokenizer_unicode_tables.h"

namespace fp4c::frontend::unicode {

namespace {

namespace t = unicode_tables;

constexpr char32_t kSBase = 0xAC00, kLBase = 0x1100, kVBase = 0x1161, kTBase = 0x11A7;
constexpr char32_t kLCount = 19, kVCount = 21, kTCount = 28, kNCount = kVCount * kTCount,
                   kSCount = kLCount * kNCount;

bool is_hangul_syllable(char32_t c) { return c >= kSBase && c < kSBase + kSCount; }

uint8_t combining_class(char32_t c) {
  if (c < 0x300) return 0;
  auto it = std::upper_bound(std::begin(t::kCombining), std::end(t::kCombining), c,
                             [](char32_t v, const t::CombiningRange& r) { return v < r.first; });
  if (it == std::begin(t::kCombining)) return 0;
  --it;
  return c <= it->last ? it->ccc : 0;
}

const t::Decomposition* find_decomposition(char32_t c) {
  auto it = std::lower_bound(std::begin(t::kDecompositions), std::end(t::kDecompositions), c,
                             [](const t::Decomposition& d, char32_t v) { return d.cp < v; });
  return it != std::end(t::kDecompositions) && it->cp == c ? &*it : nullptr;
}

// Code points that can be the second half of a composition, sorted.
const std::vector<char32_t>& composition_seconds() {
  static const std::vector<char32_t> seconds = [] {
    std::vector<char32_t> v;
    for (const auto& c : t::kCompositions) v.push_back(c.second);
    for (char32_t c = kVBase; c < kVBase + kVCount; ++c) v.push_back(c);
    for (char32_t c = kTBase + 1; c < kTBase + kTCount; ++c) v.push_back(c);
    std::sort(v.begin(), v.end());
    v.erase(std::unique(v.begin(), v.end()), v.end());
    return v;
  }();
  return seconds;
}

// Whether `c` may change under NFC or change its neighbours. Hangul syllables are stable on their
// own (a following trailing consonant is caught as a composition second).
bool is_active(char32_t c) {
  if (c < 0x300 || is_hangul_syllable(c)) return false;
  if (combining_class(c) != 0 || find_decomposition(c) != nullptr) return true;
  const auto& s = composition_seconds();
  return std::binary_search(s.begin(), s.end(), c);
}

void decompose(char32_t c, std::vector<char32_t>& out) {
  if (is_hangul_syllable(c)) {
    const char32_t s = c - kSBase;
    out.push_back(kLBase + s / kNCount);
    out.push_back(kVBase + (s % kNCount) / kTCount);
    if (s % kTCount != 0) out.push_back(kTBase + s % kTCount);
    return;
  }
  if (const auto* d = find_decomposition(c)) {
    out.insert(out.end(), t::kDecompositionData + d->offset, t::kDecompositionData + d->offset + d->length);
  } else {
    out.push_back(c);
  }
}

std::optional<char32_t> compose(char32_t a, char32_t b) {
  if (a >= kLBase && a < kLBase + kLCount && b >= kVBase && b < kVBase + kVCount)
    return kSBase + ((a - kLBase) * kVCount + (b - kVBase)) * kTCount;
  if (is_hangul_syllable(a) && (a - kSBase) % kTCount == 0 && b > kTBase && b < kTBase + kTCount)
    return a + (b - kTBase);
  auto it = std::lower_bound(std::begin(t::kCompositions), std::end(t::kCompositions), std::pair(a, b),
                             [](const t::Composition& c, std::pair<char32_t, char32_t> v) {
                               return std::pair(c.first, c.second) < v;
                             });
  if (it != std::end(t::kCompositions) && it->first == a && it->second == b) return it->composite;
  return std::nullopt;
}

}  // namespace

std::optional<size_t> find_invalid_utf8(std::string_view s) {
  size_t i = 0;
  while (i < s.size()) {
    const auto b = static_cast<uint8_t>(s[i]);
    if (b < 0x80) { ++i; continue; }
    size_t len;
    char32_t cp, min;
    if ((b & 0xE0) == 0xC0) { len = 2; cp = b & 0x1F; min = 0x80; }
    else if ((b & 0xF0) == 0xE0) { len = 3; cp = b & 0x0F; min = 0x800; }
    else if ((b & 0xF8) == 0xF0) { len = 4; cp = b & 0x07; min = 0x10000; }
    else return i;
    if (i + len > s.size()) return i;
    for (size_t k = 1; k < len; ++k) {
      const auto c = static_cast<uint8_t>(s[i + k]);
      if ((c & 0xC0) != 0x80) return i;
      cp = (cp << 6) | (c & 0x3F);
    }
    if (cp < min || cp > 0x10FFFF || (cp >= 0xD800 && cp < 0xE000)) return i;
    i += len;
  }
  return std::nullopt;
}

void append_utf8(std::string& out, char32_t cp) {
  if (cp < 0x80) {
    out.push_back(char(cp));
  } else if (cp < 0x800) {
    out.push_back(char(0xC0 | (cp >> 6)));
    out.push_back(char(0x80 | (cp & 0x3F)));
  } else if (cp < 0x10000) {
    out.push_back(char(0xE0 | (cp >> 12)));
    out.push_back(char(0x80 | ((cp >> 6) & 0x3F)));
    out.push_back(char(0x80 | (cp & 0x3F)));
  } else {
    out.push_back(char(0xF0 | (cp >> 18)));
    out.push_back(char(0x80 | ((cp >> 12) & 0x3F)));
    out.push_back(char(0x80 | ((cp >> 6) & 0x3F)));
    out.push_back(char(0x80 | (cp & 0x3F)));
  }
}

char32_t next_code_point(std::string_view s, size_t& i) {
  const auto b = static_cast<uint8_t>(s[i]);
  if (b < 0x80) { ++i; return b; }
  const size_t len = (b & 0xE0) == 0xC0 ? 2 : (b & 0xF0) == 0xE0 ? 3 : 4;
  char32_t cp = b & (0x7F >> len);
  for (size_t k = 1; k < len && i + k < s.size(); ++k) cp = (cp << 6) | (static_cast<uint8_t>(s[i + k]) & 0x3F);
  i += len;
  return cp;
}

std::string nfc(std::string_view s) {
  std::vector<char32_t> cps;
  bool active = false;
  for (size_t i = 0; i < s.size();) {
    const auto b = static_cast<uint8_t>(s[i]);
    if (b < 0xCC) {  // below U+0300: nothing to do
      i += b < 0x80 ? 1 : 2;
      continue;
    }
    if (is_active(next_code_point(s, i))) { active = true; break; }
  }
  if (!active) return std::string(s);

  std::vector<char32_t> d;
  for (size_t i = 0; i < s.size();) decompose(next_code_point(s, i), d);
  // Canonical ordering: a stable sort of each run of non-starters by combining class.
  for (size_t i = 0; i < d.size();) {
    if (combining_class(d[i]) == 0) { ++i; continue; }
    size_t j = i;
    while (j < d.size() && combining_class(d[j]) != 0) ++j;
    std::stable_sort(d.begin() + i, d.begin() + j,
                     [](char32_t a, char32_t b) { return combining_class(a) < combining_class(b); });
    i = j;
  }
  // Canonical composition.
  cps.reserve(d.size());
  std::optional<size_t> starter;
  uint8_t last_class = 0;
  for (char32_t c : d) {
    const uint8_t cc = combining_class(c);
    if (starter) {
      const bool adjacent = *starter + 1 == cps.size();
      if (adjacent || (last_class != 0 && last_class < cc)) {
        if (auto comp = compose(cps[*starter], c)) { cps[*starter] = *comp; continue; }
      }
    }
    if (cc == 0) starter = cps.size();
    last_class = cc;
    cps.push_back(c);
  }
  std::string out;
  out.reserve(s.size());
  for (char32_t c : cps) append_utf8(out, c);
  return out;
}

}  // namespace fp4c::frontend::unicode
