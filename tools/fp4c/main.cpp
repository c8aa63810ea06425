// fp4c: the command line. Each subcommand lives in its own file (cmd_<name>.cpp) with an options
// struct, a setup function that declares its CLI11 options, and a run function.
#include <CLI/CLI.hpp>

#include <cstdio>
#include <string>

#include "tools/fp4c/commands.h"

int main(int argc, char** argv) {
  CLI::App app{"fp4c: an NVFP4 quantizer compiler for Hugging Face checkpoints"};
  app.set_version_flag("--version", std::string("fp4c ") + FP4C_VERSION);
  app.require_subcommand(1);
  fp4c::tools::CommandLine cl{argc, argv};
  auto runners = fp4c::tools::register_commands(app, cl);
  try {
    app.parse(argc, argv);
  } catch (const CLI::ParseError& e) {
    return app.exit(e);
  }
  for (auto& r : runners)
    if (r.sub->parsed()) return r.run();
  return 2;
}
