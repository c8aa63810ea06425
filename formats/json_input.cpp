#include "formats/json_input.h"

#include <sys/stat.h>

#include <cerrno>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <memory>
#include <new>
#include <set>
#include <vector>

namespace fp4c::json_input {
namespace {

bool is_number_char(char c) {
  return (c >= '0' && c <= '9') || c == '-' || c == '+' || c == '.' || c == 'e' || c == 'E';
}

// The one linear pass that bounds nesting and numbers before nlohmann builds anything.
}  // namespace

std::optional<Failure> prescan(std::string_view t, const Options& o) {
  int depth = 0;
  size_t i = 0;
  const size_t n = t.size();
  while (i < n) {
    const char c = t[i];
    if (c == '"') {
      for (++i; i < n && t[i] != '"'; ++i)
        if (t[i] == '\\') ++i;
      ++i;
      continue;
    }
    if (c == '[' || c == '{') {
      if (++depth > o.max_depth)
        return Failure{o.base_offset + i, "nested deeper than " + std::to_string(o.max_depth) + " levels"};
    } else if (c == ']' || c == '}') {
      if (depth > 0) --depth;
    } else if (c == '-' || (c >= '0' && c <= '9')) {
      const size_t b = i;
      while (i < n && is_number_char(t[i])) ++i;
      const size_t len = i - b;
      if (len > kMaxNumberChars)
        return Failure{o.base_offset + b, "a number of " + std::to_string(len) + " characters (at most " +
                                              std::to_string(kMaxNumberChars) + " are read)"};
      const std::string lexeme(t.substr(b, len));
      const double d = std::strtod(lexeme.c_str(), nullptr);
      if (std::isinf(d))
        return Failure{o.base_offset + b, "number " + lexeme + " is outside the range of a double"};
      continue;
    }
    ++i;
  }
  return std::nullopt;
}

namespace {

// nlohmann's message less its "[json.exception.parse_error.101] parse error at line 1, column 5: "
// prefix, which says what the offset already says.
std::string reason_of(const char* what) {
  std::string s = what;
  if (!s.empty() && s[0] == '[') {
    const size_t close = s.find("] ");
    if (close != std::string::npos) s = s.substr(close + 2);
  }
  if (s.rfind("parse error", 0) == 0) {
    const size_t colon = s.find(": ");
    if (colon != std::string::npos) s = s.substr(colon + 2);
  }
  return s;
}

// Thrown from the parser callback to stop at the first duplicate key.
struct DuplicateKey {
  std::string what;
};

template <typename Json>
Json parse_unique(std::string_view text) {
  struct Level {
    std::set<std::string> keys;
    std::string last;
  };
  std::vector<Level> levels;
  auto on_event = [&](int /*depth*/, typename Json::parse_event_t event, Json& parsed) {
    switch (event) {
      case Json::parse_event_t::object_start: levels.emplace_back(); break;
      case Json::parse_event_t::object_end:
        if (!levels.empty()) levels.pop_back();
        break;
      case Json::parse_event_t::key: {
        std::string key = parsed.template get<std::string>();
        if (!levels.back().keys.insert(key).second) {
          std::string d = "duplicate key '" + key + "'";
          if (levels.size() >= 2) d += " in the entry of '" + levels[levels.size() - 2].last + "'";
          throw DuplicateKey{std::move(d)};
        }
        levels.back().last = std::move(key);
        break;
      }
      default: break;
    }
    return true;
  };
  return Json::parse(text.begin(), text.end(), on_event, /*allow_exceptions=*/true);
}

template <typename Json>
Expected<Json> parse_or_error(std::string_view text, const std::string& where, const Options& options) {
  Json j;
  if (auto f = parse_into(text, j, options)) {
    std::string msg = where + ": malformed JSON";
    if (f->offset) msg += " at byte " + std::to_string(*f->offset);
    return make_error(msg + ": " + f->reason);
  }
  return j;
}

struct FileCloser {
  void operator()(std::FILE* f) const { std::fclose(f); }
};

}  // namespace

template <typename Json>
std::optional<Failure> parse_into(std::string_view text, Json& out, const Options& options) {
  if (auto f = prescan(text, options)) return f;
  try {
    out = options.unique_keys ? parse_unique<Json>(text) : Json::parse(text.begin(), text.end());
  } catch (const typename Json::parse_error& e) {
    // e.byte counts the characters read, the offending one included.
    return Failure{options.base_offset + (e.byte > 0 ? e.byte - 1 : 0), reason_of(e.what())};
  } catch (const typename Json::exception& e) {   // out_of_range and the like: scan() should have caught them
    return Failure{std::nullopt, reason_of(e.what())};
  } catch (const DuplicateKey& d) {
    return Failure{std::nullopt, d.what};
  } catch (const std::bad_alloc&) {
    return Failure{std::nullopt, "out of memory while parsing " + std::to_string(text.size()) + " bytes"};
  }
  return std::nullopt;
}

template std::optional<Failure> parse_into<nlohmann::json>(std::string_view, nlohmann::json&, const Options&);
template std::optional<Failure> parse_into<nlohmann::ordered_json>(std::string_view, nlohmann::ordered_json&,
                                                                   const Options&);

Expected<nlohmann::json> parse(std::string_view text, const std::string& where, const Options& options) {
  return parse_or_error<nlohmann::json>(text, where, options);
}

Expected<nlohmann::ordered_json> parse_ordered(std::string_view text, const std::string& where,
                                               const Options& options) {
  return parse_or_error<nlohmann::ordered_json>(text, where, options);
}

uint64_t max_file_bytes() {
  const char* env = std::getenv(kMaxFileBytesEnv);
  if (env && *env) {
    char* end = nullptr;
    errno = 0;
    const unsigned long long v = std::strtoull(env, &end, 10);
    if (errno == 0 && end && *end == '\0' && v > 0) return v;
  }
  return kDefaultMaxFileBytes;
}

Expected<std::string> read_text(const std::string& path, uint64_t max_bytes) {
  std::unique_ptr<std::FILE, FileCloser> f(std::fopen(path.c_str(), "rb"));
  if (!f) return make_error(path + ": cannot open: " + std::strerror(errno));
  struct stat st {};
  if (::fstat(fileno(f.get()), &st) == 0 && S_ISREG(st.st_mode) && uint64_t(st.st_size) > max_bytes)
    return make_error(path + ": " + std::to_string(st.st_size) + " bytes, more than the " +
                      std::to_string(max_bytes) + " fp4c reads of a JSON file (" + kMaxFileBytesEnv +
                      " raises the limit)");
  std::string text;
  char buf[1 << 16];
  size_t got;
  while ((got = std::fread(buf, 1, sizeof buf, f.get())) > 0) {
    if (text.size() + got > max_bytes)   // a file that grew, or a pipe
      return make_error(path + ": more than the " + std::to_string(max_bytes) + " bytes fp4c reads of a JSON file (" +
                        kMaxFileBytesEnv + " raises the limit)");
    text.append(buf, got);
  }
  if (std::ferror(f.get())) return make_error(path + ": read error at offset " + std::to_string(text.size()));
  return text;
}

Expected<nlohmann::json> read_file(const std::string& path, const Options& options) {
  FP4C_ASSIGN(std::string text, read_text(path));
  return parse(text, path, options);
}

Expected<nlohmann::ordered_json> read_file_ordered(const std::string& path, const Options& options) {
  FP4C_ASSIGN(std::string text, read_text(path));
  return parse_ordered(text, path, options);
}

std::string type_of(const nlohmann::json& v) {
  if (v.is_number_integer()) return "integer";
  if (v.is_number_float()) return "number";
  return v.type_name();
}

}  // namespace fp4c::json_input
