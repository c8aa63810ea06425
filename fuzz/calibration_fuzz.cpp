// Calibration and evaluation sets (frontend::load_token_set): JSON Lines records with `text` or
// `input_ids`, plain-text paragraphs, either gzip-compressed (by magic bytes, concatenated members),
// byte order marks, CRLF; then selection and packing.
//
// Input: byte 0 picks the file name and options, the rest is the file as stored:
//   bit 0: calib.jsonl (1) or calib.txt (0)      bit 1: Chunks (1) or Records (0)
//   bits 2-3: seq_len 0, 3, 16, 64               bits 4-5: samples 0 (all), 1, 2, 5
//   bit 6: a byte tokenizer (1: id = byte + 3, BOS 1) or none (0: text records are an error)
//   bit 7: vocab_size 300 and max_positions 48 (1), or both 0 (unknown)
#include <cstddef>
#include <cstdint>
#include <memory>
#include <string>

#include "frontend/calibration.h"
#include "fuzz_support.h"

namespace {

class ByteTokenizer final : public fp4c::frontend::Tokenizer {
 public:
  fp4c::Expected<std::vector<int32_t>> encode(std::string_view text, bool add_special) const override {
    std::vector<int32_t> ids;
    ids.reserve(text.size() + 1);
    if (add_special) ids.push_back(1);
    for (unsigned char c : text) ids.push_back(int32_t(c) + 3);
    return ids;
  }
  std::string decode(const std::vector<int32_t>& ids) const override {
    std::string out;
    for (int32_t id : ids)
      if (id >= 3 && id < 259) out += char(id - 3);
    return out;
  }
  int64_t vocab_size() const override { return 259; }
  std::optional<int32_t> bos_id() const override { return 1; }
  std::optional<int32_t> eos_id() const override { return 2; }
  std::string_view kind() const override { return "bytes"; }
};

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  if (size == 0) return 0;
  const uint8_t sel = data[0];
  const std::string path =
      fp4c::fuzz::Scratch::get().write((sel & 1) ? "calib.jsonl" : "calib.txt", data + 1, size - 1);
  static const ByteTokenizer tokenizer;
  fp4c::frontend::CalibrationOptions o;
  o.packing = (sel & 2) ? fp4c::frontend::Packing::Chunks : fp4c::frontend::Packing::Records;
  static constexpr int64_t kSeqLen[] = {0, 3, 16, 64};
  static constexpr int64_t kSamples[] = {0, 1, 2, 5};
  o.seq_len = kSeqLen[(sel >> 2) & 3];
  o.samples = kSamples[(sel >> 4) & 3];
  o.seed = 7;
  if (sel & 128) {
    o.vocab_size = 300;
    o.max_positions = 48;
  }
  auto set = fp4c::frontend::load_token_set(path, (sel & 64) ? &tokenizer : nullptr, o);
  if (!set.ok()) return 0;
  if (set->sequences.size() != set->origins.size()) __builtin_trap();
  for (const auto& seq : set->sequences) {
    if (o.seq_len > 0 && int64_t(seq.size()) > o.seq_len) __builtin_trap();
    for (int32_t id : seq)
      if (id < 0 || (o.vocab_size > 0 && id >= o.vocab_size)) __builtin_trap();
  }
  return 0;
}
