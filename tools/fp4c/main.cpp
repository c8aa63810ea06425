// fp4c: the command line. Each subcommand lives in its own file (cmd_<name>.cpp) with an options
// struct, a setup function that declares its CLI11 options, and a run function.
#include <CLI/CLI.hpp>
#include <unistd.h>

#include <cstdio>
#include <cstdlib>
#include <string>

#include "base/profile.h"
#include "tools/fp4c/commands.h"

// OpenMP threads that wait between parallel regions spin for a while by default (libgomp: 300000
// iterations), burning the cores the read-ahead and writer threads need while the main thread does
// serial work; fully passive waits (sleep at once) make every short parallel region pay a wake-up
// instead, which the auto pass, with thousands of them, pays dearly. Measured on the 2-core machine
// (synthetic qwen2.5-0.5b): W4A16 quantize of all 24 layers 0.79 user-s passive, 0.79 with a spin
// count of 10000, 1.0-1.25 with the default; the auto recipe on 3 layers 70 s wall passive, 46 s with
// 10000 (40 s spinning forever). libgomp reads these once, when it is loaded, so fp4c sets
// GOMP_SPINCOUNT=10000 and runs itself again, unless the user chose OMP_WAIT_POLICY or GOMP_SPINCOUNT.
void bound_openmp_spinning(char** argv) {
  if (std::getenv("OMP_WAIT_POLICY") || std::getenv("GOMP_SPINCOUNT") || std::getenv("FP4C_NO_REEXEC")) return;
  setenv("GOMP_SPINCOUNT", "10000", 1);
  setenv("FP4C_NO_REEXEC", "1", 1);   // once only, even if the setting is dropped on the way
  execv("/proc/self/exe", argv);
  // If that fails the run goes on with libgomp's default spinning: same results.
}

int main(int argc, char** argv) {
  bound_openmp_spinning(argv);
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
    if (r.sub->parsed()) {
      const int rc = r.run();
      if (fp4c::profile::enabled()) std::fputs(fp4c::profile::report().c_str(), stderr);   // bench/profile.sh
      return rc;
    }
  return 2;
}
