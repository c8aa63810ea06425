// fp4c: the command line. Each subcommand lives in its own file (cmd_<name>.cpp) with an options
// struct, a setup function that declares its CLI11 options, and a run function.
#include <CLI/CLI.hpp>
#include <unistd.h>

#include <cstdio>
#include <cstdlib>
#include <string>

#include "tools/fp4c/commands.h"

// OpenMP threads that wait between parallel regions spin by default (libgomp), burning the cores the
// read-ahead and writer threads need while the main thread does serial work: quantizing the 0.5B
// synthetic model took 3.5 CPU-seconds with spinning and 1.8 without, and every pass that adds short
// parallel regions paid more. libgomp reads OMP_WAIT_POLICY once, when it is loaded, so fp4c sets it
// to passive and runs itself again, unless the user chose a policy.
void prefer_passive_openmp_waits(char** argv) {
  if (std::getenv("OMP_WAIT_POLICY") || std::getenv("FP4C_NO_REEXEC")) return;
  setenv("OMP_WAIT_POLICY", "passive", 1);
  setenv("FP4C_NO_REEXEC", "1", 1);   // once only, even if the policy is dropped on the way
  execv("/proc/self/exe", argv);
  // If that fails the run goes on with spinning waits: slower, same results.
}

int main(int argc, char** argv) {
  prefer_passive_openmp_waits(argv);
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
