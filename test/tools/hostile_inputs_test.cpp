// Hostile inputs through the fp4c command: each gets a clear error (exit 1 or 2, file and cause
// named), never an abort (exit 134) or a crash, and nothing is written at --out. Crash leftovers:
// staging directories of dead runs are removed by the next run to the same output. A statistics
// cache that cannot be used is moved aside and recomputed. (The memory-bound cases, a 2 GB line,
// a 10 GB gzip bomb and a 100 MB header, are in hostile_inputs_rss_test.sh.)
#include <gtest/gtest.h>
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cstdint>

#include "backends/artifact.h"
#include "test/support/tiny_checkpoint.h"

namespace fp4c::testing {
namespace {

// Replaces the first occurrence of `from` in `p`'s contents by `to`.
void patch_file(const fs::path& p, const std::string& from, const std::string& to) {
  std::string s = read_file(p);
  const size_t at = s.find(from);
  ASSERT_NE(at, std::string::npos) << p << " has no " << from;
  s.replace(at, from.size(), to);
  write_text(p, s);
}

void copy_model(const fs::path& from, const fs::path& to) {
  fs::create_directories(to);
  fs::copy(from, to, fs::copy_options::recursive | fs::copy_options::overwrite_existing);
}

class HostileInputs : public ::testing::Test {
 protected:
  SynthModel s;
  fs::path out = s.tmp.path / "out";

  std::string quantize(const fs::path& model, const std::string& extra = "") {
    return "quantize --model " + model.string() + " --out " + out.string() + " --calib " + s.calib.string() +
           " --seq-len 32 " + extra;
  }

  // Runs fp4c; it must fail cleanly (exit 1 or 2), say each of `expect`, and leave nothing at --out.
  void expect_clean_error(const std::string& args, std::initializer_list<std::string> expect) {
    const RunResult r = fp4c(args);
    EXPECT_TRUE(r.exit_code == 1 || r.exit_code == 2) << "exit " << r.exit_code << ": " << args << "\n" << r.out;
    for (const auto& e : expect) EXPECT_NE(r.out.find(e), std::string::npos) << args << "\n" << r.out;
    EXPECT_FALSE(fs::exists(out)) << args;
    for (const auto& e : fs::directory_iterator(s.tmp.path))
      EXPECT_EQ(e.path().filename().string().find(".out.fp4c-tmp-"), std::string::npos) << e.path();
  }
};

TEST_F(HostileInputs, NumberOverflowInEveryJsonInputIsAnError) {
  // config.json
  const fs::path m1 = s.tmp.path / "m1";
  copy_model(s.model, m1);
  patch_file(m1 / "config.json", "\"rms_norm_eps\": ", "\"rms_norm_eps\": 1e400, \"x\": ");
  expect_clean_error(quantize(m1), {(m1 / "config.json").string() + ": malformed JSON at byte ", "1e400"});

  // tokenizer.json
  const fs::path m2 = s.tmp.path / "m2";
  copy_model(s.model, m2);
  ASSERT_TRUE(fs::exists(m2 / "tokenizer.json"));
  patch_file(m2 / "tokenizer.json", "{", "{\"fp4c_test\": 1e400, ");
  expect_clean_error(quantize(m2), {(m2 / "tokenizer.json").string() + ": malformed JSON at byte 14: number 1e400"});

  // a safetensors header (same length, so the data offsets still hold)
  const fs::path m3 = s.tmp.path / "m3";
  copy_model(s.model, m3);
  fs::path shard;
  for (const auto& e : fs::directory_iterator(m3))
    if (e.path().extension() == ".safetensors") shard = e.path();
  ASSERT_FALSE(shard.empty());
  patch_file(shard, "\"format\":\"pt\"", "\"format\":1e400");
  expect_clean_error(quantize(m3), {shard.string() + ": header is not valid JSON at file offset", "1e400"});

  // the calibration set
  const fs::path calib = s.tmp.path / "bad.jsonl";
  write_text(calib, "{\"input_ids\": [1, 2, 3]}\n{\"input_ids\": [1e400]}\n");
  expect_clean_error("quantize --model " + s.model.string() + " --out " + out.string() + " --calib " + calib.string(),
                     {calib.string() + ":2: malformed JSON at column 16: number 1e400"});
  expect_clean_error("eval --model " + s.model.string() + " --data " + calib.string(), {calib.string() + ":2:"});

  // a recipe file
  const fs::path recipe = s.tmp.path / "r.json";
  write_text(recipe, "{\"pipeline\": \"stats,blockscale,pack\", \"description\": 1e400}");
  expect_clean_error(quantize(s.model, "--recipe " + recipe.string()),
                     {recipe.string() + ": not valid JSON at byte 53: number 1e400"});
}

TEST_F(HostileInputs, ShardIndexOverflowAndDepth) {
  const fs::path m = s.tmp.path / "sharded";
  TinyShape shape;
  write_checkpoint(m, shape, tiny_tensors(shape, 7), 2);
  patch_file(m / "model.safetensors.index.json", "\"total_size\": ", "\"x\": 1e400, \"total_size\": ");
  expect_clean_error("quantize --model " + m.string() + " --out " + out.string() + " --scheme w4a16",
                     {(m / "model.safetensors.index.json").string() + ": not valid JSON at byte", "1e400"});
  write_text(m / "model.safetensors.index.json", std::string(100000, '['));
  expect_clean_error("quantize --model " + m.string() + " --out " + out.string() + " --scheme w4a16",
                     {"nested deeper than 64 levels"});
}

TEST_F(HostileInputs, PipelineOptionsOutOfRangeAreRefusedEvenInADryRun) {
  for (const std::string p : {"stats,smoothquant{alpha=1e999},stats,blockscale,pack",
                              "stats,smoothquant{min_scale=1e-50},stats,blockscale,pack",
                              "stats,outliers{top=99999999999},blockscale,pack",
                              "stats,sensitivity{max_layers=99999999999},blockscale,pack"}) {
    expect_clean_error(quantize(s.model, "--passes '" + p + "'"), {"pipeline column", "is not"});
    expect_clean_error(quantize(s.model, "--dry-run --passes '" + p + "'"), {"pipeline column", "is not"});
  }
  const fs::path recipe = s.tmp.path / "r.json";
  write_text(recipe, R"({"pipeline": ["stats", "smoothquant{alpha=1e999}", "stats", "blockscale", "pack"]})");
  expect_clean_error(quantize(s.model, "--recipe " + recipe.string()), {"'1e999' is not a number in [0, 1]"});
}

TEST_F(HostileInputs, LimitsNameTheOptionThatRaisesThem) {
  expect_clean_error(quantize(s.model, "--max-calib-bytes 100"),
                     {s.calib.string() + ": holds more than 100 bytes of text", "--max-calib-bytes"});
  expect_clean_error(quantize(s.model, "--max-record-bytes 20"),
                     {s.calib.string() + ":1: record longer than the limit of 20 bytes (--max-record-bytes raises it)"});
  expect_clean_error(quantize(s.model, "--max-record-bytes lots"), {"--max-record-bytes 'lots': not a size"});
  auto r = fp4c(quantize(s.model, "--quiet --max-calib-bytes 1MiB --max-record-bytes 1KiB"));
  EXPECT_EQ(r.exit_code, 0) << r.out;
}

pid_t dead_pid() {
  const pid_t pid = fork();
  if (pid == 0) _exit(0);
  int status = 0;
  waitpid(pid, &status, 0);
  return pid;
}

TEST(StagingDir, RemovesTheStagingOfDeadRunsOnly) {
  TempDir tmp;
  const pid_t dead = dead_pid();
  const std::string tag = ".out.fp4c-tmp-";
  const fs::path dead_dir = tmp.path / (tag + std::to_string(dead));
  const fs::path dead_old = tmp.path / (tag + std::to_string(dead) + ".old");
  const fs::path alive = tmp.path / (tag + std::to_string(getppid()));   // a running process
  const fs::path other_out = tmp.path / (".other.fp4c-tmp-" + std::to_string(dead));
  const fs::path not_a_pid = tmp.path / (tag + "12ab");
  for (const auto& d : {dead_dir, dead_old, alive, other_out, not_a_pid}) {
    fs::create_directories(d);
    write_text(d / "model.safetensors", "partial");
  }
  auto staging = backends::StagingDir::create((tmp.path / "out").string(), false);
  ASSERT_TRUE(staging.ok()) << staging.error().message;
  std::vector<std::string> removed = staging->removed();
  std::sort(removed.begin(), removed.end());
  EXPECT_EQ(removed, (std::vector<std::string>{dead_dir.string(), dead_old.string()}));
  EXPECT_FALSE(fs::exists(dead_dir));
  EXPECT_FALSE(fs::exists(dead_old));
  EXPECT_TRUE(fs::exists(alive / "model.safetensors"));
  EXPECT_TRUE(fs::exists(other_out));
  EXPECT_TRUE(fs::exists(not_a_pid));
  EXPECT_TRUE(fs::is_directory(staging->path()));
  // A second run beside the first (alive: this process) leaves its staging alone.
  EXPECT_TRUE(fs::exists(tmp.path / (tag + std::to_string(getpid()))));
}

// A run killed mid-write leaves its staging directory; the next run to the same output removes it
// and says so. The kill is real: SIGKILL while the run is under way.
TEST_F(HostileInputs, AKilledRunsStagingIsRemovedByTheNextRun) {
  const std::string cmd = tool_path("FP4C_BIN", "fp4c") + " " + quantize(s.model, "--quiet");
  const pid_t pid = fork();
  if (pid == 0) {
    execl("/bin/sh", "sh", "-c", ("exec " + cmd + " >/dev/null 2>&1").c_str(), nullptr);
    _exit(127);
  }
  const fs::path staging = s.tmp.path / (".out.fp4c-tmp-" + std::to_string(pid));
  for (int i = 0; i < 3000 && !fs::exists(staging); ++i) usleep(1000);
  kill(pid, SIGKILL);
  int status = 0;
  waitpid(pid, &status, 0);
  if (!fs::exists(staging)) {
    // It finished before the kill (a fast machine): make the leftover a dead run would leave.
    ASSERT_TRUE(WIFEXITED(status)) << "killed before it made its staging directory";
    fs::remove_all(out);
    fs::create_directories(staging);
    write_text(staging / "model.safetensors", "partial");
  }
  EXPECT_FALSE(fs::exists(out));
  auto r = fp4c(quantize(s.model, "--quiet"));
  ASSERT_EQ(r.exit_code, 0) << r.out;
  EXPECT_NE(r.out.find("removed " + staging.string() + ", the staging directory of a run that died"), std::string::npos)
      << r.out;
  EXPECT_FALSE(fs::exists(staging));
  EXPECT_TRUE(fs::exists(out / "config.json"));
}

TEST_F(HostileInputs, AnUnusableStatisticsCacheIsMovedAsideAndRecomputed) {
  const fs::path cache = s.tmp.path / "cache";
  auto r = fp4c(quantize(s.model, "--quiet --recipe plain --stats-cache " + cache.string()));
  ASSERT_EQ(r.exit_code, 0) << r.out;
  const std::string first = read_file(out / "model.safetensors");
  fs::path file;
  for (const auto& e : fs::directory_iterator(cache)) file = e.path();
  ASSERT_FALSE(file.empty());
  std::string bytes = read_file(file);
  bytes[bytes.size() / 2] ^= 0x40;
  write_text(file, bytes);
  fs::remove_all(out);
  r = fp4c(quantize(s.model, "--quiet --recipe plain --stats-cache " + cache.string()));
  ASSERT_EQ(r.exit_code, 0) << r.out;
  EXPECT_NE(r.out.find("warning: " + file.string() + ": "), std::string::npos) << r.out;
  EXPECT_NE(r.out.find("moved it to " + file.string() + ".unusable, recomputing the statistics"), std::string::npos)
      << r.out;
  EXPECT_TRUE(fs::exists(file.string() + ".unusable"));
  EXPECT_TRUE(fs::exists(file)) << "recomputed and saved again";
  EXPECT_EQ(read_file(out / "model.safetensors"), first);
  // Now the cache is good again: no warning.
  fs::remove_all(out);
  r = fp4c(quantize(s.model, "--quiet --recipe plain --stats-cache " + cache.string()));
  ASSERT_EQ(r.exit_code, 0) << r.out;
  EXPECT_EQ(r.out.find("warning"), std::string::npos) << r.out;
}

}  // namespace
}  // namespace fp4c::testing
