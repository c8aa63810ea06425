// Pipeline text: `stats,blockscale{rule=mse},pack`. Passes are declared once (pipeline/passes.def,
// each pass's PassDefinition in pipeline/passes/) with typed options, defaults and help, what must run before them and what they
// invalidate; the parser checks names, options and order before any weight is read, and the canonical
// form (every option spelled out) round-trips and goes into the manifest.
#pragma once

#include <cstdint>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "base/expected.h"

namespace fp4c::pipeline {

// FloatList: one number or several separated by '/' (0.3/0.5/0.7), each in the range, none twice, at most
// kMaxListItems; a single number is written as a Float would be; or one of `choices` (a named value the
// pass resolves, such as auto's alpha=by-scheme).
enum class OptionType : uint8_t { Bool, Float, Int, Percent, Choice, FloatList };
inline constexpr size_t kMaxListItems = 8;

struct OptionSpec {
  std::string name;
  OptionType type;
  std::string default_value;
  std::string help;
  std::vector<std::string> choices;   // Choice; FloatList: the named values it also accepts
  // Int, Float, FloatList and Percent: the accepted range (inclusive); values must also be finite. The parser
  // refuses anything outside it, so the passes read values they can use as they are.
  double min = 0;
  double max = 0;
  int64_t multiple_of = 0;            // Int: the value must be a multiple of this (0: any)
  // false: left out of the pass's options (and so of the canonical pipeline text, which manifests record) while
  // it has its default value, for an option added after artifacts recorded the pass without it.
  bool listed_when_default = true;
};

struct PassSpec {
  std::string name;
  std::string help;
  std::vector<OptionSpec> options;
  std::vector<std::string> prerequisites;   // passes that must have run earlier (and not been invalidated)
  std::vector<std::string> invalidates;  // results of earlier passes this one makes stale
  bool at_most_once = false;             // the pipeline may run it once
};

// Every pass fp4c has, in the order `fp4c passes` lists them: the specs of pipeline/passes.def.
const std::vector<PassSpec>& pass_registry();
const PassSpec* find_pass(std::string_view name);

struct PassInvocation {
  std::string name;
  std::vector<std::pair<std::string, std::string>> options;   // every option, in spec order
  const std::string& option(std::string_view key) const;
};

struct Pipeline {
  std::vector<PassInvocation> passes;
  std::string canonical() const;             // parse(canonical()) gives the same pipeline
  const PassInvocation* find(std::string_view name) const;   // the last invocation of a pass
};

// Errors name the column (1-based) and list the valid passes or options:
//   "pipeline column 7: unknown pass 'stat' (valid: blockscale, pack, stats)".
Expected<Pipeline> parse_pipeline(std::string_view text);

}  // namespace fp4c::pipeline
