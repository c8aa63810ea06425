// fp4c passes: every pass with its options, defaults, prerequisites and what it invalidates.
#include <cstdio>

#include "pipeline/pipeline_text.h"
#include "tools/fp4c/commands.h"

namespace fp4c::tools {
namespace {

int run_passes() {
  for (const auto& p : pipeline::pass_registry()) {
    std::printf("%s\n  %s\n", p.name.c_str(), p.help.c_str());
    for (const auto& o : p.options) {
      std::string choices;
      for (const auto& c : o.choices) choices += (choices.empty() ? " (" : "|") + c;
      if (!choices.empty()) choices += ")";
      if (o.type == pipeline::OptionType::Int || o.type == pipeline::OptionType::Float ||
          o.type == pipeline::OptionType::Percent || o.type == pipeline::OptionType::FloatList) {
        char range[96];
        std::snprintf(range, sizeof range, " [%g, %g]%s", o.min, o.max,
                      o.multiple_of > 0 ? (", a multiple of " + std::to_string(o.multiple_of)).c_str() : "");
        choices += range;
      }
      std::printf("  %s=%s%s  %s\n", o.name.c_str(), o.default_value.c_str(), choices.c_str(), o.help.c_str());
    }
    auto list = [](const std::vector<std::string>& v) {
      std::string s;
      for (const auto& x : v) s += (s.empty() ? "" : ", ") + x;
      return s;
    };
    if (!p.prerequisites.empty()) std::printf("  needs: %s\n", list(p.prerequisites).c_str());
    if (!p.invalidates.empty()) std::printf("  invalidates: %s\n", list(p.invalidates).c_str());
  }
  return 0;
}

}  // namespace

Runner setup_passes(CLI::App& app, const CommandLine&) {
  CLI::App* sub = app.add_subcommand("passes", "List the passes a pipeline (--passes) can hold, with their options");
  return {sub, [] { return run_passes(); }};
}

}  // namespace fp4c::tools
