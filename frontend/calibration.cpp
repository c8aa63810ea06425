#include "frontend/calibration.h"

#include <algorithm>
#include <cctype>
#include <cstring>
#include <functional>
#include <limits>
#include <nlohmann/json.hpp>
#include <numeric>
#include <string_view>

#include "formats/json_input.h"

namespace fp4c::frontend {
namespace {

using nlohmann::json;

enum class Format { JsonLines, PlainText };

Format format_of(std::string_view path) {
  auto ends_with = [](std::string_view s, std::string_view suffix) {
    if (s.size() < suffix.size()) return false;
    for (size_t i = 0; i < suffix.size(); ++i)
      if (std::tolower(static_cast<unsigned char>(s[s.size() - suffix.size() + i])) != suffix[i]) return false;
    return true;
  };
  if (ends_with(path, ".gz")) path.remove_suffix(3);
  if (ends_with(path, ".jsonl") || ends_with(path, ".json")) return Format::JsonLines;
  return Format::PlainText;
}

using json_input::type_of;

Error record_too_long(const std::string& path, int64_t line, uint64_t max_bytes) {
  return make_error(path + ":" + std::to_string(line) + ": record longer than the limit of " +
                    std::to_string(max_bytes) + " bytes (--max-record-bytes raises it)");
}

bool is_blank(std::string_view line) {
  return line.find_first_not_of(" \t\r\f\v") == std::string_view::npos;
}

// Calls fn(line_number, line) for each line of `data` ("\n"-terminated, a "\r" before it dropped);
// a line longer than max_bytes is an error before fn sees it.
template <typename Fn>
Status for_each_line(const std::string& path, std::string_view data, uint64_t max_bytes, Fn&& fn) {
  int64_t number = 0;
  size_t pos = 0;
  while (pos < data.size()) {
    size_t end = data.find('\n', pos);
    if (end == std::string_view::npos) end = data.size();
    if (end - pos > max_bytes) return record_too_long(path, number + 1, max_bytes);
    std::string_view line = data.substr(pos, end - pos);
    if (!line.empty() && line.back() == '\r') line.remove_suffix(1);
    FP4C_TRY(fn(++number, line));
    pos = end + 1;
  }
  return {};
}

// Reads one file's records and hands each one's ids to a sink, in file order, after checking them.
class RecordReader {
 public:
  using Sink = std::function<void(int64_t line, std::vector<int32_t>&& ids)>;

  RecordReader(const std::string& path, const Tokenizer* tokenizer, const CalibrationOptions& options,
               Sink sink)
      : path_(path), tokenizer_(tokenizer), options_(options), sink_(std::move(sink)) {}

  int64_t records() const { return records_; }

  Status read(std::string_view data, Format format) {
    if (data.size() >= 3 && std::memcmp(data.data(), "\xEF\xBB\xBF", 3) == 0) data.remove_prefix(3);
    if (format == Format::JsonLines)
      return for_each_line(path_, data, options_.max_record_bytes,
                           [&](int64_t n, std::string_view line) { return json_line(n, line); });
    return paragraphs(data);
  }

 private:
  Error at(int64_t line, const std::string& what) const {
    return make_error(path_ + ":" + std::to_string(line) + ": " + what);
  }

  Status no_tokenizer(int64_t line) const {
    return make_error("calibration set " + path_ +
                      " has text records but the model has no tokenizer; give input_ids records instead"
                      " (JSON lines like {\"input_ids\": [1, 2, 3]}; first text record: line " +
                      std::to_string(line) + ")" +
                      (options_.no_tokenizer_reason.empty() ? "" : "; " + options_.no_tokenizer_reason));
  }

  Status json_line(int64_t n, std::string_view line) {
    if (is_blank(line)) return {};
    const bool looks_like_array = line.substr(line.find_first_not_of(" \t")).front() == '[';
    const std::string hint = looks_like_array
        ? " (a calibration set holds one JSON object per line (JSON Lines), not an array)" : "";
    json record;
    if (auto f = json_input::parse_into(line, record))
      return at(n, "malformed JSON" + (f->offset ? " at column " + std::to_string(*f->offset + 1) : std::string()) +
                       ": " + f->reason + hint);
    if (!record.is_object()) return at(n, "record must be a JSON object, got " + type_of(record) + hint);
    auto get = [&](const char* key) -> const json* {
      auto it = record.find(key);
      return it == record.end() || it->is_null() ? nullptr : &*it;
    };
    if (const json* ids = get("input_ids")) {
      if (!ids->is_array()) return at(n, "'input_ids' must be an array of integers, got " + type_of(*ids));
      std::vector<int32_t> out;
      out.reserve(ids->size());
      for (size_t i = 0; i < ids->size(); ++i) {
        const json& v = (*ids)[i];
        if (!v.is_number_integer())
          return at(n, "'input_ids' must be an array of integers, but element " + std::to_string(i) +
                           " is " + (v.is_number() || v.is_boolean() ? v.dump() + " (" + type_of(v) + ")" : type_of(v)));
        bool fits = v.is_number_unsigned() ? v.get<uint64_t>() <= uint64_t(std::numeric_limits<int32_t>::max())
                                           : v.get<int64_t>() >= 0 &&
                                                 v.get<int64_t>() <= std::numeric_limits<int32_t>::max();
        if (fits) {
          out.push_back(static_cast<int32_t>(v.get<int64_t>()));
        } else {
          return out_of_vocab(n, i, v.dump());
        }
      }
      return accept(n, std::move(out));
    }
    if (const json* text = get("text")) {
      if (!text->is_string()) return at(n, "'text' must be a string, got " + type_of(*text));
      return encode(n, text->get_ref<const std::string&>());
    }
    return at(n, "record has neither 'text' (a string) nor 'input_ids' (an array of integers)");
  }

  Status paragraphs(std::string_view data) {
    std::string text;
    int64_t first = 0;
    auto flush = [&]() -> Status {
      if (first == 0) return {};
      Status s = encode(first, text);
      text.clear();
      first = 0;
      return s;
    };
    FP4C_TRY(for_each_line(path_, data, options_.max_record_bytes, [&](int64_t n, std::string_view line) -> Status {
      if (is_blank(line)) return flush();
      if (first == 0) {
        first = n;
      } else {
        text += '\n';
      }
      if (text.size() + line.size() > options_.max_record_bytes)
        return record_too_long(path_, first, options_.max_record_bytes);
      text.append(line);
      return {};
    }));
    return flush();
  }

  Status encode(int64_t n, const std::string& text) {
    if (!tokenizer_) return no_tokenizer(n);
    auto ids = tokenizer_->encode(text, /*add_special=*/true);
    if (!ids.ok()) return at(n, "cannot tokenize the text: " + ids.error().message);
    return accept(n, std::move(ids).value());
  }

  Error out_of_vocab(int64_t n, size_t position, const std::string& id) const {
    std::string range = options_.vocab_size > 0
        ? "outside the vocabulary [0, " + std::to_string(options_.vocab_size) + ") (vocab_size " +
              std::to_string(options_.vocab_size) + ")"
        : "not a token id (ids are non-negative 32-bit integers)";
    return at(n, "token id " + id + " at position " + std::to_string(position) + " is " + range);
  }

  Status accept(int64_t n, std::vector<int32_t>&& ids) {
    for (size_t i = 0; i < ids.size(); ++i)
      if (ids[i] < 0 || (options_.vocab_size > 0 && ids[i] >= options_.vocab_size))
        return out_of_vocab(n, i, std::to_string(ids[i]));
    const auto len = static_cast<int64_t>(ids.size());
    if (len < options_.min_tokens)
      return at(n, "record has " + std::to_string(len) + " tokens, fewer than the " +
                       std::to_string(options_.min_tokens) + " required");
    if (options_.packing == Packing::Records && options_.seq_len == 0 && options_.max_positions > 0 &&
        len > options_.max_positions)
      return at(n, "record has " + std::to_string(len) + " tokens, more than the model's maximum positions " +
                       std::to_string(options_.max_positions) + "; pass --seq-len to truncate records");
    ++records_;
    sink_(n, std::move(ids));
    return {};
  }

  const std::string& path_;
  const Tokenizer* tokenizer_;
  const CalibrationOptions& options_;
  Sink sink_;
  int64_t records_ = 0;
};

Status check_options(const std::string& path, const CalibrationOptions& o) {
  auto bad = [&](const std::string& what) { return make_error("calibration set " + path + ": " + what); };
  if (o.samples < 0) return bad("the sample count must not be negative, got " + std::to_string(o.samples));
  if (o.seq_len < 0) return bad("seq_len must not be negative, got " + std::to_string(o.seq_len));
  if (o.max_positions > 0 && o.seq_len > o.max_positions)
    return bad("seq_len " + std::to_string(o.seq_len) + " is above the model's maximum positions " +
               std::to_string(o.max_positions) + " (max_position_embeddings)");
  if (o.packing == Packing::Chunks && o.seq_len == 0)
    return bad("packing into chunks needs a sequence length (--seq-len); seq_len is 0");
  if (o.seq_len > 0 && o.seq_len < o.min_tokens)
    return bad("seq_len " + std::to_string(o.seq_len) + " is below the " + std::to_string(o.min_tokens) +
               " tokens a sample needs");
  return {};
}

uint64_t splitmix64(uint64_t& state) {
  state += 0x9e3779b97f4a7c15ull;
  uint64_t z = state;
  z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
  z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
  return z ^ (z >> 31);
}

// Uniform in [0, m), m > 0, by rejecting the 2^64 mod m lowest draws.
uint64_t below(uint64_t& state, uint64_t m) {
  const uint64_t threshold = (0 - m) % m;
  for (;;) {
    uint64_t z = splitmix64(state);
    if (z >= threshold) return z % m;
  }
}

}  // namespace

int64_t TokenSet::total_tokens() const {
  int64_t n = 0;
  for (const auto& s : sequences) n += static_cast<int64_t>(s.size());
  return n;
}

std::vector<int64_t> choose_samples(int64_t available, int64_t count, uint64_t seed) {
  std::vector<int64_t> idx(static_cast<size_t>(std::max<int64_t>(available, 0)));
  std::iota(idx.begin(), idx.end(), int64_t{0});
  if (count <= 0 || count >= available) return idx;
  uint64_t state = seed;
  for (int64_t i = 0; i < count; ++i) {
    auto j = i + static_cast<int64_t>(below(state, static_cast<uint64_t>(available - i)));
    std::swap(idx[static_cast<size_t>(i)], idx[static_cast<size_t>(j)]);
  }
  idx.resize(static_cast<size_t>(count));
  std::sort(idx.begin(), idx.end());
  return idx;
}

Expected<TokenSet> load_token_set(const std::string& path, const Tokenizer* tokenizer,
                                  const CalibrationOptions& options) {
  FP4C_TRY(check_options(path, options));
  FP4C_ASSIGN(SourceBytes src, read_source(path, options.max_bytes));

  TokenSet set;
  set.source_hash = src.stored_hash;
  set.requested = options.samples;
  std::vector<std::vector<int32_t>> records;   // Records
  std::vector<int64_t> lines;                  // Records
  std::vector<int32_t> stream;                 // Chunks
  RecordReader reader(path, tokenizer, options, [&](int64_t line, std::vector<int32_t>&& ids) {
    if (options.packing == Packing::Chunks) {
      stream.insert(stream.end(), ids.begin(), ids.end());
    } else {
      records.push_back(std::move(ids));
      lines.push_back(line);
    }
  });
  FP4C_TRY(reader.read(src.data, format_of(path)));
  src.data = std::string();  // the text is no longer needed
  set.records = reader.records();
  if (set.records == 0) return make_error("calibration set " + path + " is empty (no records)");

  const int64_t L = options.seq_len;
  if (options.packing == Packing::Chunks) {
    const auto total = static_cast<int64_t>(stream.size());
    set.available = total / L;
    if (set.available == 0)
      return make_error("calibration set " + path + " has " + std::to_string(total) +
                        " tokens, fewer than one chunk of seq_len " + std::to_string(L));
    const std::vector<int64_t> chosen = choose_samples(set.available, options.samples, options.seed);
    set.dropped_tokens = total - set.available * L;
    for (int64_t c : chosen) {
      auto begin = stream.begin() + c * L;
      set.sequences.emplace_back(begin, begin + L);
      set.origins.push_back(c);
    }
  } else {
    set.available = set.records;
    const std::vector<int64_t> chosen = choose_samples(set.available, options.samples, options.seed);
    for (int64_t r : chosen) {
      std::vector<int32_t>& ids = records[static_cast<size_t>(r)];
      if (L > 0 && static_cast<int64_t>(ids.size()) > L) {
        set.dropped_tokens += static_cast<int64_t>(ids.size()) - L;
        ids.resize(static_cast<size_t>(L));
      }
      set.sequences.push_back(std::move(ids));
      set.origins.push_back(lines[static_cast<size_t>(r)]);
    }
  }
  return set;
}

}  // namespace fp4c::frontend
