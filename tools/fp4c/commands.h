// The subcommands of fp4c. Each one registers its options and returns how to run it.
#pragma once

#include <CLI/CLI.hpp>

#include <functional>
#include <string>
#include <vector>

#include "tools/common/cli.h"

namespace fp4c::tools {

struct Runner {
  CLI::App* sub;
  std::function<int()> run;     // the process exit code
};

Runner setup_quantize(CLI::App& app, const CommandLine& cl);
Runner setup_inspect(CLI::App& app, const CommandLine& cl);
Runner setup_eval(CLI::App& app, const CommandLine& cl);
Runner setup_passes(CLI::App& app, const CommandLine& cl);
Runner setup_recipes(CLI::App& app, const CommandLine& cl);
Runner setup_compare(CLI::App& app, const CommandLine& cl);

inline std::vector<Runner> register_commands(CLI::App& app, const CommandLine& cl) {
  return {setup_quantize(app, cl), setup_inspect(app, cl), setup_eval(app, cl), setup_passes(app, cl),
          setup_recipes(app, cl), setup_compare(app, cl)};
}

}  // namespace fp4c::tools
