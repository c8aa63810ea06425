#include "pipeline/pipeline_text.h"

#include <algorithm>
#include <cctype>
#include <cerrno>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <optional>
#include <set>

namespace fp4c::pipeline {

const PassInvocation* Pipeline::find(std::string_view name) const {
  for (auto it = passes.rbegin(); it != passes.rend(); ++it)
    if (it->name == name) return &*it;
  return nullptr;
}

const std::string& PassInvocation::option(std::string_view key) const {
  for (const auto& [k, v] : options)
    if (k == key) return v;
  static const std::string empty;
  return empty;
}

const PassSpec* find_pass(std::string_view name) {
  for (const auto& p : pass_registry())
    if (p.name == name) return &p;
  return nullptr;
}

std::string Pipeline::canonical() const {
  std::string out;
  for (const auto& p : passes) {
    if (!out.empty()) out += ',';
    out += p.name;
    if (p.options.empty()) continue;
    out += '{';
    for (size_t i = 0; i < p.options.size(); ++i)
      out += (i ? "," : "") + p.options[i].first + "=" + p.options[i].second;
    out += '}';
  }
  return out;
}

namespace {

std::string join(const std::vector<std::string>& v) {
  std::string out;
  for (const auto& s : v) out += (out.empty() ? "" : ", ") + s;
  return out;
}

Error at(size_t column, const std::string& what) {
  return make_error("pipeline column " + std::to_string(column) + ": " + what);
}

bool in_range(const OptionSpec& o, double d) { return std::isfinite(d) && d >= o.min && d <= o.max; }

// A number as strtod reads it, when the whole text is one (no overflow to infinity, no NaN).
std::optional<double> parse_number(const std::string& v) {
  if (v.empty()) return std::nullopt;
  char* end = nullptr;
  errno = 0;
  const double d = std::strtod(v.c_str(), &end);
  if (*end || !std::isfinite(d) || (errno == ERANGE && d != 0)) return std::nullopt;
  return d;
}

// Checks and normalizes one option value; empty optional means invalid.
std::optional<std::string> normalize(const OptionSpec& o, const std::string& v) {
  char* end = nullptr;
  switch (o.type) {
    case OptionType::Bool:
      if (v == "true" || v == "1" || v == "on") return "true";
      if (v == "false" || v == "0" || v == "off") return "false";
      return std::nullopt;
    case OptionType::Int: {
      errno = 0;
      const long long n = std::strtoll(v.c_str(), &end, 10);
      if (v.empty() || *end || errno == ERANGE || !in_range(o, double(n))) return std::nullopt;
      if (o.multiple_of > 0 && n % o.multiple_of != 0) return std::nullopt;
      return std::to_string(n);
    }
    case OptionType::Float: {
      const auto d = parse_number(v);
      if (!d || !in_range(o, *d)) return std::nullopt;
      return v;
    }
    case OptionType::Percent: {
      const std::string num = !v.empty() && v.back() == '%' ? v.substr(0, v.size() - 1) : v;
      const auto d = parse_number(num);
      if (!d || !in_range(o, *d)) return std::nullopt;
      return num + "%";
    }
    case OptionType::Choice:
      if (std::find(o.choices.begin(), o.choices.end(), v) != o.choices.end()) return v;
      return std::nullopt;
    case OptionType::FloatList: {
      if (std::find(o.choices.begin(), o.choices.end(), v) != o.choices.end()) return v;   // a named value
      std::vector<double> seen;
      size_t b = 0;
      while (true) {
        const size_t e = v.find('/', b);
        const auto d = parse_number(v.substr(b, e == std::string::npos ? std::string::npos : e - b));
        if (!d || !in_range(o, *d) || std::find(seen.begin(), seen.end(), *d) != seen.end()) return std::nullopt;
        seen.push_back(*d);
        if (seen.size() > kMaxListItems) return std::nullopt;
        if (e == std::string::npos) break;
        b = e + 1;
      }
      return v;
    }
  }
  return std::nullopt;
}

std::string number_text(double d) {
  char buf[32];
  std::snprintf(buf, sizeof buf, "%g", d);
  return buf;
}

std::string expected_of(const OptionSpec& o) {
  const std::string range = " in [" + number_text(o.min) + ", " + number_text(o.max) + "]";
  switch (o.type) {
    case OptionType::Bool: return "true or false";
    case OptionType::Int:
      return (o.multiple_of > 0 ? "a multiple of " + std::to_string(o.multiple_of) : std::string("an integer")) + range;
    case OptionType::Float: return "a number" + range;
    case OptionType::Percent: return "a percentage" + range + " such as 2%";
    case OptionType::Choice: return "one of " + join(o.choices);
    case OptionType::FloatList:
      return "a number" + range + ", or up to " + std::to_string(kMaxListItems) +
             " different ones separated by '/' (0.3/0.5/0.7)" + (o.choices.empty() ? "" : ", or " + join(o.choices));
  }
  return "?";
}

}  // namespace

Expected<Pipeline> parse_pipeline(std::string_view text) {
  Pipeline pipeline;
  std::vector<size_t> columns;
  size_t i = 0;
  auto skip_space = [&] { while (i < text.size() && std::isspace(static_cast<unsigned char>(text[i]))) ++i; };
  auto word = [&] {
    const size_t b = i;
    while (i < text.size() && (std::isalnum(static_cast<unsigned char>(text[i])) || text[i] == '_' || text[i] == '-' ||
                               text[i] == '.' || text[i] == '%' || text[i] == '/'))
      ++i;
    return std::string(text.substr(b, i - b));
  };
  std::vector<std::string> names;
  for (const auto& p : pass_registry()) names.push_back(p.name);
  std::sort(names.begin(), names.end());

  skip_space();
  if (i == text.size()) return at(1, "empty pipeline (valid passes: " + join(names) + ")");
  while (true) {
    skip_space();
    const size_t col = i + 1;
    const std::string name = word();
    if (name.empty()) return at(col, "expected a pass name (valid: " + join(names) + ")");
    const PassSpec* spec = find_pass(name);
    if (!spec) return at(col, "unknown pass '" + name + "' (valid: " + join(names) + ")");
    PassInvocation inv{name, {}};
    std::vector<std::pair<std::string, std::string>> given;
    skip_space();
    if (i < text.size() && text[i] == '{') {
      ++i;
      while (true) {
        skip_space();
        const size_t kcol = i + 1;
        const std::string key = word();
        std::vector<std::string> valid;
        for (const auto& o : spec->options) valid.push_back(o.name);
        const auto o = std::find_if(spec->options.begin(), spec->options.end(), [&](const auto& s) { return s.name == key; });
        if (key.empty() || o == spec->options.end())
          return at(kcol, "unknown option '" + key + "' of pass '" + name + "' (valid: " +
                              (valid.empty() ? std::string("none") : join(valid)) + ")");
        skip_space();
        if (i >= text.size() || text[i] != '=') return at(i + 1, "expected '=' after option '" + key + "'");
        ++i;
        skip_space();
        const size_t vcol = i + 1;
        const std::string value = word();
        const auto norm = normalize(*o, value);
        if (!norm) return at(vcol, "option '" + key + "' of pass '" + name + "': '" + value + "' is not " + expected_of(*o));
        for (const auto& g : given)
          if (g.first == key) return at(kcol, "option '" + key + "' given twice");
        given.emplace_back(key, *norm);
        skip_space();
        if (i < text.size() && text[i] == ',') { ++i; continue; }
        if (i < text.size() && text[i] == '}') { ++i; break; }
        return at(i + 1, "expected ',' or '}' in the options of pass '" + name + "'");
      }
    }
    for (const auto& o : spec->options) {
      auto g = std::find_if(given.begin(), given.end(), [&](const auto& p) { return p.first == o.name; });
      const std::string& value = g != given.end() ? g->second : o.default_value;
      if (!o.listed_when_default && value == o.default_value) continue;
      inv.options.emplace_back(o.name, value);
    }
    pipeline.passes.push_back(std::move(inv));
    columns.push_back(col);
    skip_space();
    if (i == text.size()) break;
    if (text[i] != ',') return at(i + 1, "expected ',' between passes");
    ++i;
  }

  // Order: each pass's prerequisites must have run, and not been invalidated since.
  std::set<std::string> valid;
  for (size_t k = 0; k < pipeline.passes.size(); ++k) {
    const PassSpec& spec = *find_pass(pipeline.passes[k].name);
    for (const auto& r : spec.prerequisites)
      if (!valid.count(r))
        return at(columns[k], "pass '" + spec.name + "' needs '" + r + "' earlier in the pipeline" +
                                  (std::any_of(pipeline.passes.begin(), pipeline.passes.begin() + long(k),
                                               [&](const auto& p) { return p.name == r; })
                                       ? " (a pass since then invalidated it; run it again)"
                                       : ""));
    for (const auto& inv : spec.invalidates) valid.erase(inv);
    valid.insert(spec.name);
  }
  return pipeline;
}

}  // namespace fp4c::pipeline
