#include "tools/common/cli.h"

#include <unistd.h>

#include <chrono>
#include <cstdio>
#include <tuple>

#include "pipeline/sizes.h"

namespace fp4c::tools {

std::string CommandLine::joined() const {
  std::string out;
  for (int i = 0; i < argc; ++i) {
    std::string a = argv[i];
    if (!out.empty()) out += ' ';
    if (a.find_first_of(" \t\"'\\$") == std::string::npos && !a.empty()) {
      out += a;
    } else {
      out += '\'';
      for (char c : a) out += c == '\'' ? std::string("'\\''") : std::string(1, c);
      out += '\'';
    }
  }
  return out;
}

void add_token_set_options(CLI::App* sub, TokenSetFlags& o, const std::string& samples_flag) {
  sub->add_option(samples_flag, o.samples, "number of samples to use (0: all), chosen by a seeded shuffle");
  sub->add_option("--seq-len", o.seq_len, "tokens per sample: records are truncated to it, chunks cut to it");
  sub->add_option("--seed", o.seed, "seed of the sample selection");
  sub->add_option("--packing", o.packing,
                  "records: one sample per record (JSONL line or text paragraph); chunks: all records "
                  "concatenated and cut into --seq-len chunks, as llama.cpp's imatrix does")
      ->check(CLI::IsMember({"records", "chunks"}))
      ->default_str("records");
  sub->add_option("--max-calib-bytes", o.max_bytes,
                  "refuse a calibration/evaluation file holding more text than this, decompressed (default " +
                      pipeline::format_bytes(frontend::kDefaultMaxCalibrationBytes) + ")");
  sub->add_option("--max-record-bytes", o.max_record_bytes,
                  "refuse a record (JSONL line, text paragraph) longer than this (default " +
                      pipeline::format_bytes(frontend::kDefaultMaxRecordBytes) + ")");
}

pipeline::Reporter terminal_reporter(bool progress) {
  pipeline::Reporter r;
  r.note = [](const std::string& text) { std::fprintf(stderr, "%s\n", text.c_str()); };
  if (progress && isatty(fileno(stderr)))
    r.progress = [](const char* what, double tokens) -> std::function<void(int, int)> {
      const auto t0 = std::chrono::steady_clock::now();
      const std::string name = what;
      return [=](int layer, int layers) {
        const double s = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
        std::fprintf(stderr, "\r%s: layer %d of %d, %.0f tokens/s, %.0f s left   ", name.c_str(), layer, layers,
                     tokens * layer / layers / s, s / layer * (layers - layer));
        if (layer == layers) std::fprintf(stderr, "\n");
      };
    };
  return r;
}

std::function<void(int, int)> layer_progress() {
  return [](int i, int n) {
    std::fprintf(stderr, "\rlayer %d of %d", i, n);
    if (i == n) std::fprintf(stderr, "\n");
  };
}

Expected<pipeline::TokenSetOptions> token_set_options(const TokenSetFlags& f) {
  pipeline::TokenSetOptions o;
  o.samples = f.samples;
  o.seq_len = f.seq_len;
  o.seed = f.seed;
  o.packing = f.packing == "chunks" ? frontend::Packing::Chunks : frontend::Packing::Records;
  for (auto [text, flag, slot] : {std::tuple{&f.max_bytes, "--max-calib-bytes", &o.max_bytes},
                                  std::tuple{&f.max_record_bytes, "--max-record-bytes", &o.max_record_bytes}}) {
    if (text->empty()) continue;
    const auto size = pipeline::parse_size(*text);
    if (!size) return make_error(std::string(flag) + " '" + *text + "': not a size (e.g. 512MiB)");
    *slot = *size;
  }
  return o;
}

}  // namespace fp4c::tools
