#include "frontend/tokenizer_bpe.h"

#include <algorithm>
#include <array>
#include <cctype>
#include <cstdint>
#include <cstdio>
#include <fstream>
#include <mutex>
#include <queue>
#include <sstream>
#include <unordered_map>
#include <variant>

#include <nlohmann/json.hpp>

#include "formats/json_input.h"

#include "frontend/tokenizer_regex.h"
#include "frontend/tokenizer_unicode.h"

namespace fp4c::frontend {

namespace {

using json = nlohmann::json;

// GPT-2's pre-tokenizer regex, which ByteLevel applies when use_regex is true.
constexpr const char* kGpt2Pattern =
    R"('s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+)";

// ---- GPT-2's bytes-to-unicode map ------------------------------------------------------------

// Printable bytes stand for themselves; the other 68 are moved to U+0100 and up, in byte order.
struct ByteLevelTable {
  std::array<std::string, 256> utf8;               // byte -> its character, UTF-8 encoded
  std::unordered_map<char32_t, uint8_t> byte_of;   // character -> byte
  ByteLevelTable() {
    char32_t next = 256;
    for (int b = 0; b < 256; ++b) {
      const bool printable = (b >= '!' && b <= '~') || (b >= 0xA1 && b <= 0xAC) || (b >= 0xAE);
      const char32_t c = printable ? char32_t(b) : next++;
      unicode::append_utf8(utf8[b], c);
      byte_of[c] = uint8_t(b);
    }
  }
};

const ByteLevelTable& byte_level_table() {
  static const ByteLevelTable table;
  return table;
}

// ---- Pieces of text as they move through the pipeline ------------------------------------------

// A stretch of text, or an added token already resolved to its id. `at_start` marks the piece that
// begins at offset 0 of the input (Metaspace's prepend_scheme "first" looks at that).
struct Piece {
  std::string text;
  bool at_start = false;
  int32_t added_id = -1;
};

// ---- Added tokens --------------------------------------------------------------------------------

struct AddedToken {
  std::string content;
  int32_t id = 0;
  bool special = false, single_word = false, lstrip = false, rstrip = false, normalized = false;
};

bool is_space_cp(char32_t c) {
  return c == ' ' || (c >= '\t' && c <= '\r') || c == 0x85 || c == 0xA0 || c == 0x1680 ||
         (c >= 0x2000 && c <= 0x200A) || c == 0x2028 || c == 0x2029 || c == 0x202F || c == 0x205F ||
         c == 0x3000;
}

// Word characters for single_word tokens: ASCII alphanumerics and '_', and (approximately) any
// non-ASCII character that is not a space.
bool is_word_cp(char32_t c) {
  if (c < 0x80) return std::isalnum(int(c)) || c == '_';
  return !is_space_cp(c);
}

char32_t last_code_point(std::string_view s) {
  size_t i = s.size();
  while (i > 0 && (static_cast<uint8_t>(s[i - 1]) & 0xC0) == 0x80) --i;
  if (i > 0) --i;
  return unicode::next_code_point(s, i);
}

// Leftmost-longest matching of a set of literal strings, as the `tokenizers` library's
// Aho-Corasick automaton does it (MatchKind::LeftmostLongest).
class AddedTokenMatcher {
 public:
  void add(std::string pattern, const AddedToken* token) {
    if (pattern.empty()) return;
    const auto first = static_cast<uint8_t>(pattern[0]);
    by_first_byte_[first].push_back(entries_.size());
    entries_.push_back({std::move(pattern), token});
  }
  void finish() {
    for (auto& v : by_first_byte_)
      std::stable_sort(v.begin(), v.end(), [&](size_t a, size_t b) {
        return entries_[a].pattern.size() > entries_[b].pattern.size();
      });
  }
  bool empty() const { return entries_.empty(); }

  // Splits one text piece around the tokens found in it; other pieces pass through.
  void split(Piece&& in, std::vector<Piece>& out) const {
    if (in.added_id >= 0 || entries_.empty()) { out.push_back(std::move(in)); return; }
    const std::string_view s = in.text;
    size_t start_offset = 0;  // end of the previous token (after its rstrip)
    size_t i = 0;
    while (i < s.size()) {
      const auto& cands = by_first_byte_[static_cast<uint8_t>(s[i])];
      const Entry* hit = nullptr;
      for (size_t k : cands) {
        const Entry& e = entries_[k];
        if (s.compare(i, e.pattern.size(), e.pattern) == 0) { hit = &e; break; }
      }
      if (hit == nullptr) { ++i; continue; }
      size_t start = i, stop = i + hit->pattern.size();
      const AddedToken& t = *hit->token;
      if (t.single_word) {
        const bool start_ok = start == 0 || !is_word_cp(last_code_point(s.substr(0, start)));
        size_t j = stop;
        const bool stop_ok = stop == s.size() || !is_word_cp(unicode::next_code_point(s, j));
        if (!start_ok || !stop_ok) { i = stop; continue; }  // as the automaton resumes after a match
      }
      if (t.lstrip) {
        size_t b = start;
        while (b > start_offset) {
          size_t p = b;
          while (p > 0 && (static_cast<uint8_t>(s[p - 1]) & 0xC0) == 0x80) --p;
          --p;
          size_t q = p;
          if (!is_space_cp(unicode::next_code_point(s, q))) break;
          b = p;
        }
        start = std::max(b, start_offset);
      }
      if (t.rstrip) {
        while (stop < s.size()) {
          size_t q = stop;
          if (!is_space_cp(unicode::next_code_point(s, q))) break;
          stop = q;
        }
      }
      if (start_offset < start) out.push_back(text_piece(in, start_offset, start));
      out.push_back({std::string(), false, t.id});
      start_offset = stop;
      i = stop;
    }
    if (start_offset < s.size()) out.push_back(text_piece(in, start_offset, s.size()));
  }

 private:
  struct Entry {
    std::string pattern;
    const AddedToken* token;
  };
  static Piece text_piece(const Piece& in, size_t b, size_t e) {
    return {in.text.substr(b, e - b), in.at_start && b == 0, -1};
  }
  std::vector<Entry> entries_;
  std::array<std::vector<size_t>, 256> by_first_byte_;
};

// ---- Normalizers ---------------------------------------------------------------------------------

struct NfcStep {};
struct PrependStep { std::string prefix; };
struct ReplaceStep { Regex pattern; std::string content; };
using NormalizerStep = std::variant<NfcStep, PrependStep, ReplaceStep>;

std::string replace_all(const Regex& re, const std::string& s, const std::string& content) {
  std::vector<std::pair<size_t, size_t>> m;
  if (!re.find_all(s, m).ok() || m.empty()) return s;
  std::string out;
  size_t prev = 0;
  for (auto [b, e] : m) {
    out.append(s, prev, b - prev);
    out += content;
    prev = e;
  }
  out.append(s, prev, std::string::npos);
  return out;
}

std::string normalize(const std::vector<NormalizerStep>& steps, std::string s) {
  for (const auto& step : steps) {
    if (std::holds_alternative<NfcStep>(step)) {
      s = unicode::nfc(s);
    } else if (const auto* p = std::get_if<PrependStep>(&step)) {
      if (!s.empty()) s = p->prefix + s;
    } else if (const auto* r = std::get_if<ReplaceStep>(&step)) {
      s = replace_all(r->pattern, s, r->content);
    }
  }
  return s;
}

// ---- Pre-tokenizers ------------------------------------------------------------------------------

enum class SplitBehavior { Isolated, Removed, MergedWithPrevious, MergedWithNext };

struct SplitStep { Regex pattern; SplitBehavior behavior; };
struct ByteLevelStep { bool add_prefix_space; std::optional<Regex> regex; };
enum class PrependScheme { Always, First, Never };
struct MetaspaceStep { std::string replacement; PrependScheme scheme; std::optional<Regex> split; };
using PreTokenizerStep = std::variant<SplitStep, ByteLevelStep, MetaspaceStep>;

// Cuts `text` at the matches of `re` as the `tokenizers` library's SplitDelimiterBehavior does.
Status split_pieces(const Regex& re, SplitBehavior behavior, const Piece& in, std::vector<Piece>& out,
                    std::vector<std::pair<size_t, size_t>>& scratch) {
  const std::string& s = in.text;
  FP4C_TRY(re.find_all(s, scratch));
  struct Part { size_t b, e; bool match; };
  std::vector<Part> parts;
  size_t prev = 0;
  for (auto [b, e] : scratch) {
    if (prev != b) parts.push_back({prev, b, false});
    parts.push_back({b, e, true});
    prev = e;
  }
  if (prev != s.size()) parts.push_back({prev, s.size(), false});

  std::vector<std::pair<size_t, size_t>> ranges;
  switch (behavior) {
    case SplitBehavior::Isolated:
      for (const Part& p : parts) ranges.emplace_back(p.b, p.e);
      break;
    case SplitBehavior::Removed:
      for (const Part& p : parts)
        if (!p.match) ranges.emplace_back(p.b, p.e);
      break;
    case SplitBehavior::MergedWithPrevious: {
      bool previous_match = false;
      for (const Part& p : parts) {
        if (p.match && !previous_match && !ranges.empty()) ranges.back().second = p.e;
        else ranges.emplace_back(p.b, p.e);
        previous_match = p.match;
      }
      break;
    }
    case SplitBehavior::MergedWithNext: {
      bool previous_match = false;
      for (auto it = parts.rbegin(); it != parts.rend(); ++it) {
        if (it->match && !previous_match && !ranges.empty()) ranges.back().first = it->b;
        else ranges.emplace_back(it->b, it->e);
        previous_match = it->match;
      }
      std::reverse(ranges.begin(), ranges.end());
      break;
    }
  }
  for (auto [b, e] : ranges)
    if (e > b) out.push_back({s.substr(b, e - b), in.at_start && b == 0, -1});
  return {};
}

bool starts_with(std::string_view s, std::string_view p) { return s.substr(0, p.size()) == p; }

std::string byte_level_encode(std::string_view s) {
  const auto& t = byte_level_table();
  std::string out;
  out.reserve(s.size() * 2);
  for (char c : s) out += t.utf8[static_cast<uint8_t>(c)];
  return out;
}

Status pre_tokenize(const std::vector<PreTokenizerStep>& steps, std::vector<Piece>& pieces) {
  std::vector<Piece> next;
  std::vector<std::pair<size_t, size_t>> scratch;
  for (const auto& step : steps) {
    next.clear();
    for (Piece& p : pieces) {
      if (const auto* sp = std::get_if<SplitStep>(&step)) {
        FP4C_TRY(split_pieces(sp->pattern, sp->behavior, p, next, scratch));
      } else if (const auto* bl = std::get_if<ByteLevelStep>(&step)) {
        if (bl->add_prefix_space && !starts_with(p.text, " ")) p.text.insert(0, " ");
        if (bl->regex) {
          const size_t first = next.size();
          FP4C_TRY(split_pieces(*bl->regex, SplitBehavior::Isolated, p, next, scratch));
          for (size_t k = first; k < next.size(); ++k) next[k].text = byte_level_encode(next[k].text);
        } else {
          next.push_back({byte_level_encode(p.text), p.at_start, -1});
        }
      } else if (const auto* ms = std::get_if<MetaspaceStep>(&step)) {
        std::string t;
        t.reserve(p.text.size() + 8);
        for (char c : p.text) {
          if (c == ' ') t += ms->replacement;
          else t.push_back(c);
        }
        const bool prepend = ms->scheme == PrependScheme::Always || (ms->scheme == PrependScheme::First && p.at_start);
        if (prepend && !starts_with(t, ms->replacement)) t.insert(0, ms->replacement);
        Piece q{std::move(t), p.at_start, -1};
        if (ms->split) FP4C_TRY(split_pieces(*ms->split, SplitBehavior::MergedWithNext, q, next, scratch));
        else next.push_back(std::move(q));
      }
    }
    pieces.swap(next);
  }
  return {};
}

// ---- Decoders ------------------------------------------------------------------------------------

enum class DecoderStep { ByteLevel, ByteFallback, Fuse, ReplaceMetaspace, StripLeadingSpace };

// ---- The BPE model -------------------------------------------------------------------------------

uint64_t pair_key(int32_t a, int32_t b) { return (uint64_t(uint32_t(a)) << 32) | uint32_t(b); }

struct Merge {
  int32_t rank;
  int32_t new_id;
};

class BpeTokenizer final : public Tokenizer {
 public:
  Expected<std::vector<int32_t>> encode(std::string_view text, bool add_special) const override;
  std::string decode(const std::vector<int32_t>& ids) const override;
  int64_t vocab_size() const override { return int64_t(id_to_token_.size()); }
  std::optional<int32_t> bos_id() const override { return bos_; }
  std::optional<int32_t> eos_id() const override { return eos_; }
  std::string_view kind() const override { return "bpe"; }

  // Filled in by the parser below.
  std::unordered_map<std::string, int32_t> vocab_;   // the model's vocabulary
  std::vector<std::string> id_to_token_;             // model vocabulary and added tokens
  std::vector<bool> is_added_;                       // by id
  std::unordered_map<uint64_t, Merge> merges_;
  std::string continuing_subword_prefix_, end_of_word_suffix_;
  bool ignore_merges_ = false, byte_fallback_ = false, fuse_unk_ = false;
  std::optional<int32_t> unk_id_;
  std::array<int32_t, 256> byte_fallback_ids_{};      // -1: no <0xXX> token for that byte

  std::vector<std::unique_ptr<AddedToken>> added_;
  AddedTokenMatcher raw_matcher_, normalized_matcher_;
  std::vector<NormalizerStep> normalizer_;
  std::vector<PreTokenizerStep> pre_tokenizer_;
  std::vector<int32_t> prefix_, suffix_;             // what add_special puts around the text
  std::vector<DecoderStep> decoder_;
  std::optional<int32_t> bos_, eos_;

 private:
  void tokenize_piece(const std::string& piece, std::vector<int32_t>& out) const;
  void merge_word(const std::string& piece, std::vector<int32_t>& out) const;

  static constexpr size_t kMaxCachedPieceBytes = 256;
  static constexpr size_t kMaxCacheEntries = size_t(1) << 18;
  mutable std::mutex cache_mutex_;
  mutable std::unordered_map<std::string, std::vector<int32_t>> cache_;
};

void BpeTokenizer::merge_word(const std::string& piece, std::vector<int32_t>& out) const {
  struct Symbol { int32_t id; int prev, next; size_t len; };
  std::vector<Symbol> symbols;
  symbols.reserve(piece.size());
  bool pending_unk = false;  // fuse_unk joins a run of unknown characters into one
  auto flush_unk = [&] {
    if (pending_unk) {
      symbols.push_back({*unk_id_, int(symbols.size()) - 1, int(symbols.size()) + 1, 1});
      pending_unk = false;
    }
  };
  std::string key;
  for (size_t i = 0; i < piece.size();) {
    const size_t b = i;
    unicode::next_code_point(piece, i);
    key.clear();
    if (b > 0) key += continuing_subword_prefix_;
    key.append(piece, b, i - b);
    if (i == piece.size()) key += end_of_word_suffix_;
    if (auto it = vocab_.find(key); it != vocab_.end()) {
      flush_unk();
      symbols.push_back({it->second, int(symbols.size()) - 1, int(symbols.size()) + 1, i - b});
      continue;
    }
    if (byte_fallback_) {
      bool all = true;
      for (size_t k = b; k < i; ++k) all = all && byte_fallback_ids_[static_cast<uint8_t>(piece[k])] >= 0;
      if (all) {
        flush_unk();
        for (size_t k = b; k < i; ++k)
          symbols.push_back({byte_fallback_ids_[static_cast<uint8_t>(piece[k])], int(symbols.size()) - 1,
                             int(symbols.size()) + 1, 1});
        continue;
      }
    }
    if (unk_id_) {  // without an unk token, `tokenizers` drops the character
      if (fuse_unk_) {
        pending_unk = true;
      } else {
        symbols.push_back({*unk_id_, int(symbols.size()) - 1, int(symbols.size()) + 1, i - b});
      }
    }
  }
  flush_unk();
  if (symbols.empty()) return;
  symbols.back().next = -1;

  struct Candidate {
    int32_t rank, pos, new_id;
    bool operator>(const Candidate& o) const { return rank != o.rank ? rank > o.rank : pos > o.pos; }
  };
  std::priority_queue<Candidate, std::vector<Candidate>, std::greater<Candidate>> queue;
  auto push = [&](int pos) {
    const int nx = symbols[pos].next;
    if (nx < 0) return;
    auto it = merges_.find(pair_key(symbols[pos].id, symbols[nx].id));
    if (it != merges_.end()) queue.push({it->second.rank, pos, it->second.new_id});
  };
  for (int p = 0; p + 1 < int(symbols.size()); ++p) push(p);
  while (!queue.empty()) {
    const Candidate top = queue.top();
    queue.pop();
    Symbol& left = symbols[top.pos];
    if (left.len == 0 || left.next < 0) continue;
    Symbol& right = symbols[left.next];
    auto it = merges_.find(pair_key(left.id, right.id));
    if (it == merges_.end() || it->second.new_id != top.new_id) continue;  // a stale entry
    left.id = top.new_id;
    left.len += right.len;
    right.len = 0;
    left.next = right.next;
    if (left.next >= 0) symbols[left.next].prev = top.pos;
    if (left.prev >= 0) push(left.prev);
    push(top.pos);
  }
  for (const Symbol& s : symbols)
    if (s.len > 0) out.push_back(s.id);
}

void BpeTokenizer::tokenize_piece(const std::string& piece, std::vector<int32_t>& out) const {
  if (ignore_merges_) {
    if (auto it = vocab_.find(piece); it != vocab_.end()) { out.push_back(it->second); return; }
  }
  const bool cacheable = piece.size() <= kMaxCachedPieceBytes;
  if (cacheable) {
    std::lock_guard<std::mutex> lock(cache_mutex_);
    if (auto it = cache_.find(piece); it != cache_.end()) {
      out.insert(out.end(), it->second.begin(), it->second.end());
      return;
    }
  }
  const size_t first = out.size();
  merge_word(piece, out);
  if (cacheable) {
    std::lock_guard<std::mutex> lock(cache_mutex_);
    if (cache_.size() >= kMaxCacheEntries) cache_.clear();
    cache_.emplace(piece, std::vector<int32_t>(out.begin() + first, out.end()));
  }
}

Expected<std::vector<int32_t>> BpeTokenizer::encode(std::string_view text, bool add_special) const {
  if (auto bad = unicode::find_invalid_utf8(text)) {
    return make_error("text is not valid UTF-8 at byte offset " + std::to_string(*bad));
  }
  std::vector<Piece> segments, tmp;
  raw_matcher_.split(Piece{std::string(text), true, -1}, segments);
  for (Piece& s : segments)
    if (s.added_id < 0 && !normalizer_.empty()) s.text = normalize(normalizer_, std::move(s.text));
  if (!normalized_matcher_.empty()) {
    for (Piece& s : segments) normalized_matcher_.split(std::move(s), tmp);
    segments.swap(tmp);
  }

  std::vector<int32_t> ids;
  if (add_special) ids = prefix_;
  std::vector<Piece> pieces;
  for (Piece& s : segments) {
    if (s.added_id >= 0) { ids.push_back(s.added_id); continue; }
    pieces.clear();
    pieces.push_back(std::move(s));
    FP4C_TRY(pre_tokenize(pre_tokenizer_, pieces));
    for (const Piece& p : pieces)
      if (!p.text.empty()) tokenize_piece(p.text, ids);
  }
  if (add_special) ids.insert(ids.end(), suffix_.begin(), suffix_.end());
  return ids;
}

std::string BpeTokenizer::decode(const std::vector<int32_t>& ids) const {
  std::vector<std::string> tokens;
  tokens.reserve(ids.size());
  for (int32_t id : ids)
    if (id >= 0 && id < int32_t(id_to_token_.size())) tokens.push_back(id_to_token_[id]);
  for (DecoderStep step : decoder_) {
    switch (step) {
      case DecoderStep::ByteLevel: {
        const auto& t = byte_level_table();
        for (std::string& tok : tokens) {
          std::string bytes;
          bool all = true;
          for (size_t i = 0; i < tok.size() && all;) {
            auto it = t.byte_of.find(unicode::next_code_point(tok, i));
            if (it == t.byte_of.end()) all = false;
            else bytes.push_back(char(it->second));
          }
          if (all) tok = std::move(bytes);  // an added token's text stays as it is
        }
        break;
      }
      case DecoderStep::ByteFallback:
        for (std::string& tok : tokens) {
          unsigned v = 0;
          if (tok.size() == 6 && tok.compare(0, 3, "<0x") == 0 && tok[5] == '>' &&
              std::sscanf(tok.c_str() + 3, "%2x", &v) == 1) {
            tok.assign(1, char(v));
          }
        }
        break;
      case DecoderStep::Fuse: {
        std::string all;
        for (const std::string& tok : tokens) all += tok;
        tokens.assign(1, std::move(all));
        break;
      }
      case DecoderStep::ReplaceMetaspace:
        for (std::string& tok : tokens) {
          std::string r;
          for (size_t i = 0; i < tok.size(); ++i) {
            if (tok.compare(i, 3, "\xE2\x96\x81") == 0) { r.push_back(' '); i += 2; }
            else r.push_back(tok[i]);
          }
          tok = std::move(r);
        }
        break;
      case DecoderStep::StripLeadingSpace:
        if (!tokens.empty() && !tokens[0].empty() && tokens[0][0] == ' ') tokens[0].erase(0, 1);
        break;
    }
  }
  std::string out;
  for (const std::string& tok : tokens) out += tok;
  return out;
}

// ---- Parsing tokenizer.json ----------------------------------------------------------------------

class Parser {
 public:
  Parser(const std::string& path, const SpecialTokenConventions& conventions)
      : path_(path), conventions_(conventions) {}

  Expected<std::unique_ptr<Tokenizer>> parse(const json& root);

 private:
  Error error(const std::string& where, const std::string& msg) const {
    return make_error(path_ + ": " + where + ": " + msg);
  }
  Expected<std::string> get_string(const json& obj, const char* key, const std::string& where) const {
    auto it = obj.find(key);
    if (it == obj.end() || !it->is_string()) return error(where, std::string("expected a string '") + key + "'");
    return it->get<std::string>();
  }
  bool get_bool(const json& obj, const char* key, bool fallback) const {
    auto it = obj.find(key);
    return it != obj.end() && it->is_boolean() ? it->get<bool>() : fallback;
  }
  Expected<Regex> pattern(const json& obj, const std::string& where) const;

  Status model(const json& m);
  Status added_tokens(const json& list);
  Status normalizer(const json& n, const std::string& where);
  Status pre_tokenizer(const json& p, const std::string& where);
  Status post_processor(const json& p, const std::string& where, std::vector<int32_t>& prefix,
                        std::vector<int32_t>& suffix);
  void decoder(const json& d);
  std::optional<int32_t> token_id(const std::string& text) const;

  std::string path_;
  const SpecialTokenConventions& conventions_;
  std::unique_ptr<BpeTokenizer> t_ = std::make_unique<BpeTokenizer>();
  bool byte_level_ = false, metaspace_prepends_ = false, prepend_normalizer_ = false;  // for decoding
};

Expected<Regex> Parser::pattern(const json& obj, const std::string& where) const {
  auto it = obj.find("pattern");
  if (it == obj.end() || !it->is_object()) return error(where, "expected a 'pattern' object ({\"Regex\": ...} or {\"String\": ...})");
  if (auto r = it->find("Regex"); r != it->end() && r->is_string()) {
    auto re = Regex::compile(r->get<std::string>());
    if (!re) return error(where, re.error().message);
    return re;
  }
  if (auto s = it->find("String"); s != it->end() && s->is_string()) {
    auto re = Regex::compile(s->get<std::string>(), true);
    if (!re) return error(where, re.error().message);
    return re;
  }
  return error(where, "expected a 'pattern' object ({\"Regex\": ...} or {\"String\": ...})");
}

Status Parser::model(const json& m) {
  const std::string where = "model";
  if (!m.is_object()) return error(where, "expected an object");
  FP4C_ASSIGN(const std::string type, get_string(m, "type", where));
  if (type != "BPE") {
    return error(where, "unsupported model type '" + type + "' (fp4c reads BPE tokenizer.json files; "
                        "a checkpoint that also ships tokenizer.model can drop tokenizer.json)");
  }
  if (auto d = m.find("dropout"); d != m.end() && d->is_number() && d->get<double>() > 0.0) {
    return error(where, "BPE dropout makes encoding random; fp4c needs it null");
  }
  auto v = m.find("vocab");
  if (v == m.end() || !v->is_object()) return error(where, "expected an object 'vocab'");
  int32_t max_id = -1;
  for (auto it = v->begin(); it != v->end(); ++it) {
    if (!it->is_number_integer() || it->get<int64_t>() < 0 || it->get<int64_t>() > INT32_MAX) {
      return error("model.vocab", "token '" + it.key() + "' has no valid id");
    }
    const auto id = it->get<int32_t>();
    t_->vocab_[it.key()] = id;
    max_id = std::max(max_id, id);
  }
  t_->id_to_token_.resize(size_t(max_id + 1));
  t_->is_added_.assign(size_t(max_id + 1), false);
  for (const auto& [tok, id] : t_->vocab_) t_->id_to_token_[id] = tok;

  if (auto s = m.find("continuing_subword_prefix"); s != m.end() && s->is_string()) t_->continuing_subword_prefix_ = *s;
  if (auto s = m.find("end_of_word_suffix"); s != m.end() && s->is_string()) t_->end_of_word_suffix_ = *s;
  t_->ignore_merges_ = get_bool(m, "ignore_merges", false);
  t_->byte_fallback_ = get_bool(m, "byte_fallback", false);
  t_->fuse_unk_ = get_bool(m, "fuse_unk", false);
  if (auto u = m.find("unk_token"); u != m.end() && u->is_string()) {
    auto it = t_->vocab_.find(u->get<std::string>());
    if (it == t_->vocab_.end()) return error(where, "unk_token '" + u->get<std::string>() + "' is not in the vocabulary");
    t_->unk_id_ = it->second;
  }
  for (int b = 0; b < 256; ++b) {
    char name[8];
    std::snprintf(name, sizeof name, "<0x%02X>", b);
    auto it = t_->vocab_.find(name);
    t_->byte_fallback_ids_[b] = it == t_->vocab_.end() ? -1 : it->second;
  }

  auto merges = m.find("merges");
  if (merges == m.end() || !merges->is_array()) return error(where, "expected an array 'merges'");
  const size_t prefix_len = t_->continuing_subword_prefix_.size();
  for (size_t rank = 0; rank < merges->size(); ++rank) {
    const json& e = (*merges)[rank];
    std::string a, b;
    if (e.is_string()) {  // "a b"
      const std::string s = e.get<std::string>();
      const size_t sp = s.find(' ');
      if (sp == std::string::npos || s.find(' ', sp + 1) != std::string::npos) {
        return error("model.merges[" + std::to_string(rank) + "]", "expected two tokens separated by one space, got '" + s + "'");
      }
      a = s.substr(0, sp);
      b = s.substr(sp + 1);
    } else if (e.is_array() && e.size() == 2 && e[0].is_string() && e[1].is_string()) {  // ["a", "b"]
      a = e[0].get<std::string>();
      b = e[1].get<std::string>();
    } else {
      return error("model.merges[" + std::to_string(rank) + "]", "expected \"a b\" or [\"a\", \"b\"]");
    }
    auto ia = t_->vocab_.find(a), ib = t_->vocab_.find(b);
    const std::string joined = a + (b.size() >= prefix_len ? b.substr(prefix_len) : b);
    auto ij = t_->vocab_.find(joined);
    if (ia == t_->vocab_.end() || ib == t_->vocab_.end() || ij == t_->vocab_.end()) {
      const std::string& missing = ia == t_->vocab_.end() ? a : ib == t_->vocab_.end() ? b : joined;
      return error("model.merges[" + std::to_string(rank) + "]", "token '" + missing + "' is not in the vocabulary");
    }
    // As in `tokenizers`, a pair listed twice keeps its later rank.
    t_->merges_[pair_key(ia->second, ib->second)] = Merge{int32_t(rank), ij->second};
  }
  return {};
}

Status Parser::added_tokens(const json& list) {
  if (list.is_null()) return {};
  if (!list.is_array()) return error("added_tokens", "expected an array");
  for (size_t k = 0; k < list.size(); ++k) {
    const json& e = list[k];
    const std::string where = "added_tokens[" + std::to_string(k) + "]";
    if (!e.is_object()) return error(where, "expected an object");
    auto tok = std::make_unique<AddedToken>();
    FP4C_ASSIGN(tok->content, get_string(e, "content", where));
    auto id = e.find("id");
    if (id == e.end() || !id->is_number_integer() || id->get<int64_t>() < 0 || id->get<int64_t>() > INT32_MAX) {
      return error(where, "expected a non-negative integer 'id'");
    }
    tok->id = id->get<int32_t>();
    tok->special = get_bool(e, "special", false);
    tok->single_word = get_bool(e, "single_word", false);
    tok->lstrip = get_bool(e, "lstrip", false);
    tok->rstrip = get_bool(e, "rstrip", false);
    tok->normalized = get_bool(e, "normalized", !tok->special);
    if (size_t(tok->id) >= t_->id_to_token_.size()) {
      t_->id_to_token_.resize(size_t(tok->id) + 1);
      t_->is_added_.resize(size_t(tok->id) + 1, false);
    }
    t_->id_to_token_[tok->id] = tok->content;
    t_->is_added_[tok->id] = true;
    t_->added_.push_back(std::move(tok));
  }
  return {};
}

Status Parser::normalizer(const json& n, const std::string& where) {
  if (n.is_null()) return {};
  if (!n.is_object()) return error(where, "expected an object or null");
  FP4C_ASSIGN(const std::string type, get_string(n, "type", where));
  if (type == "Sequence") {
    auto list = n.find("normalizers");
    if (list == n.end() || !list->is_array()) return error(where, "expected an array 'normalizers'");
    for (size_t k = 0; k < list->size(); ++k)
      FP4C_TRY(normalizer((*list)[k], where + ".normalizers[" + std::to_string(k) + "]"));
    return {};
  }
  if (type == "NFC") { t_->normalizer_.push_back(NfcStep{}); return {}; }
  if (type == "Prepend") {
    FP4C_ASSIGN(std::string p, get_string(n, "prepend", where));
    t_->normalizer_.push_back(PrependStep{std::move(p)});
    return {};
  }
  if (type == "Replace") {
    FP4C_ASSIGN(Regex re, pattern(n, where));
    FP4C_ASSIGN(std::string content, get_string(n, "content", where));
    t_->normalizer_.push_back(ReplaceStep{std::move(re), std::move(content)});
    return {};
  }
  return error(where, "unsupported normalizer type '" + type + "' (fp4c supports null, NFC, Prepend, Replace and "
                      "a Sequence of them)");
}

Status Parser::pre_tokenizer(const json& p, const std::string& where) {
  if (p.is_null()) return {};
  if (!p.is_object()) return error(where, "expected an object or null");
  FP4C_ASSIGN(const std::string type, get_string(p, "type", where));
  if (type == "Sequence") {
    auto list = p.find("pretokenizers");
    if (list == p.end() || !list->is_array()) return error(where, "expected an array 'pretokenizers'");
    for (size_t k = 0; k < list->size(); ++k)
      FP4C_TRY(pre_tokenizer((*list)[k], where + ".pretokenizers[" + std::to_string(k) + "]"));
    return {};
  }
  if (type == "Split") {
    FP4C_ASSIGN(Regex re, pattern(p, where));
    if (get_bool(p, "invert", false)) return error(where, "Split with invert: true is not supported");
    FP4C_ASSIGN(const std::string behavior, get_string(p, "behavior", where));
    SplitBehavior b;
    if (behavior == "Isolated") b = SplitBehavior::Isolated;
    else if (behavior == "Removed") b = SplitBehavior::Removed;
    else if (behavior == "MergedWithPrevious") b = SplitBehavior::MergedWithPrevious;
    else if (behavior == "MergedWithNext") b = SplitBehavior::MergedWithNext;
    else return error(where, "unsupported Split behavior '" + behavior + "' (fp4c supports Isolated, Removed, "
                             "MergedWithPrevious, MergedWithNext)");
    t_->pre_tokenizer_.push_back(SplitStep{std::move(re), b});
    return {};
  }
  if (type == "ByteLevel") {
    ByteLevelStep s{get_bool(p, "add_prefix_space", true), std::nullopt};
    if (get_bool(p, "use_regex", true)) {
      auto re = Regex::compile(kGpt2Pattern);
      if (!re) return error(where, re.error().message);
      s.regex = std::move(re).value();
    }
    t_->pre_tokenizer_.push_back(std::move(s));
    byte_level_ = true;
    return {};
  }
  if (type == "Metaspace") {
    MetaspaceStep s;
    FP4C_ASSIGN(s.replacement, get_string(p, "replacement", where));
    if (auto ps = p.find("prepend_scheme"); ps != p.end() && ps->is_string()) {
      const std::string v = *ps;
      if (v == "always") s.scheme = PrependScheme::Always;
      else if (v == "first") s.scheme = PrependScheme::First;
      else if (v == "never") s.scheme = PrependScheme::Never;
      else return error(where, "unknown prepend_scheme '" + v + "'");
    } else {  // files written before prepend_scheme existed
      s.scheme = get_bool(p, "add_prefix_space", true) ? PrependScheme::Always : PrependScheme::Never;
    }
    if (get_bool(p, "split", true)) {
      auto re = Regex::compile(s.replacement, true);
      if (!re) return error(where, re.error().message);
      s.split = std::move(re).value();
    }
    metaspace_prepends_ = s.scheme != PrependScheme::Never;
    t_->pre_tokenizer_.push_back(std::move(s));
    return {};
  }
  return error(where, "unsupported pre_tokenizer type '" + type + "' (fp4c supports null, Split, ByteLevel, "
                      "Metaspace and a Sequence of them)");
}

std::optional<int32_t> Parser::token_id(const std::string& text) const {
  for (const auto& a : t_->added_)
    if (a->content == text) return a->id;
  if (auto it = t_->vocab_.find(text); it != t_->vocab_.end()) return it->second;
  return std::nullopt;
}

Status Parser::post_processor(const json& p, const std::string& where, std::vector<int32_t>& prefix,
                              std::vector<int32_t>& suffix) {
  if (p.is_null()) return {};
  if (!p.is_object()) return error(where, "expected an object or null");
  FP4C_ASSIGN(const std::string type, get_string(p, "type", where));
  if (type == "ByteLevel") return {};  // it only trims offsets
  if (type == "Sequence") {
    auto list = p.find("processors");
    if (list == p.end() || !list->is_array()) return error(where, "expected an array 'processors'");
    for (size_t k = 0; k < list->size(); ++k) {
      std::vector<int32_t> pre, suf;  // each processor wraps what the ones before it produced
      FP4C_TRY(post_processor((*list)[k], where + ".processors[" + std::to_string(k) + "]", pre, suf));
      prefix.insert(prefix.begin(), pre.begin(), pre.end());
      suffix.insert(suffix.end(), suf.begin(), suf.end());
    }
    return {};
  }
  if (type == "TemplateProcessing") {
    auto single = p.find("single");
    auto specials = p.find("special_tokens");
    if (single == p.end() || !single->is_array()) return error(where, "expected an array 'single'");
    bool seen_a = false;
    for (const json& item : *single) {
      if (item.contains("Sequence")) {
        seen_a = true;
        continue;
      }
      auto st = item.find("SpecialToken");
      if (st == item.end() || !st->is_object()) return error(where, "single: expected SpecialToken or Sequence items");
      FP4C_ASSIGN(const std::string name, get_string(*st, "id", where + ".single"));
      if (specials == p.end() || !specials->is_object() || !specials->contains(name)) {
        return error(where, "special token '" + name + "' is not listed in special_tokens");
      }
      const json& entry = specials->at(name);
      const auto ids = entry.is_object() ? entry.find("ids") : entry.end();
      if (!entry.is_object() || ids == entry.end() || !ids->is_array())
        return error(where, "special_tokens." + name + ": expected an array 'ids'");
      for (const json& id : *ids) {
        if (!id.is_number_integer() || id.get<int64_t>() < 0 || id.get<int64_t>() > INT32_MAX)
          return error(where, "special_tokens." + name + ": ids must be non-negative 32-bit integers");
        (seen_a ? suffix : prefix).push_back(id.get<int32_t>());
      }
    }
    return {};
  }
  if (type == "RobertaProcessing" || type == "BertProcessing") {
    auto cls = p.find("cls"), sep = p.find("sep");
    auto is_pair = [&](const json& v) {
      return v.is_array() && v.size() == 2 && v[1].is_number_integer() && v[1].get<int64_t>() >= 0 &&
             v[1].get<int64_t>() <= INT32_MAX;
    };
    if (cls == p.end() || sep == p.end() || !is_pair(*cls) || !is_pair(*sep)) {
      return error(where, "expected 'cls' and 'sep' as [token, id]");
    }
    prefix.push_back((*cls)[1].get<int32_t>());
    suffix.push_back((*sep)[1].get<int32_t>());
    return {};
  }
  return error(where, "unsupported post_processor type '" + type + "' (fp4c supports null, ByteLevel, "
                      "TemplateProcessing, RobertaProcessing, BertProcessing and a Sequence of them)");
}

void Parser::decoder(const json& d) {
  // Decoding is for people reading ids; an unknown decoder falls back to what the pre-tokenizer implies.
  auto add_default = [&] {
    if (byte_level_) {
      t_->decoder_ = {DecoderStep::ByteLevel};
    } else {
      t_->decoder_ = {DecoderStep::ReplaceMetaspace, DecoderStep::ByteFallback, DecoderStep::Fuse};
      if (metaspace_prepends_ || prepend_normalizer_) t_->decoder_.push_back(DecoderStep::StripLeadingSpace);
    }
  };
  if (!d.is_object()) { add_default(); return; }
  const std::string type = d.value("type", "");
  if (type == "ByteLevel") { t_->decoder_ = {DecoderStep::ByteLevel}; return; }
  if (type == "Metaspace") {
    t_->decoder_ = {DecoderStep::ReplaceMetaspace, DecoderStep::Fuse};
    if (d.value("prepend_scheme", std::string("always")) != "never" && d.value("add_prefix_space", true))
      t_->decoder_.push_back(DecoderStep::StripLeadingSpace);
    return;
  }
  if (type == "Sequence" && d.contains("decoders") && d["decoders"].is_array()) {
    for (const json& s : d["decoders"]) {
      const std::string st = s.is_object() ? s.value("type", "") : "";
      if (st == "ByteLevel") t_->decoder_.push_back(DecoderStep::ByteLevel);
      else if (st == "ByteFallback") t_->decoder_.push_back(DecoderStep::ByteFallback);
      else if (st == "Fuse") t_->decoder_.push_back(DecoderStep::Fuse);
      else if (st == "Replace") t_->decoder_.push_back(DecoderStep::ReplaceMetaspace);
      else if (st == "Strip" || st == "Metaspace") t_->decoder_.push_back(DecoderStep::StripLeadingSpace);
    }
    return;
  }
  add_default();
}

Expected<std::unique_ptr<Tokenizer>> Parser::parse(const json& root) {
  if (!root.is_object()) return make_error(path_ + ": expected a JSON object at the top level");
  auto m = root.find("model");
  if (m == root.end()) return make_error(path_ + ": no 'model'");
  FP4C_TRY(model(*m));
  if (auto a = root.find("added_tokens"); a != root.end()) FP4C_TRY(added_tokens(*a));
  if (auto n = root.find("normalizer"); n != root.end()) FP4C_TRY(normalizer(*n, "normalizer"));
  for (const auto& step : t_->normalizer_) prepend_normalizer_ |= std::holds_alternative<PrependStep>(step);
  if (auto p = root.find("pre_tokenizer"); p != root.end()) FP4C_TRY(pre_tokenizer(*p, "pre_tokenizer"));
  if (auto p = root.find("post_processor"); p != root.end()) {
    FP4C_TRY(post_processor(*p, "post_processor", t_->prefix_, t_->suffix_));
  }
  decoder(root.contains("decoder") ? root["decoder"] : json());

  // Added tokens are found in the raw text unless they are `normalized`, in which case they are
  // found, normalized, in the normalized text.
  for (const auto& a : t_->added_) {
    if (a->normalized && !t_->normalizer_.empty()) t_->normalized_matcher_.add(normalize(t_->normalizer_, a->content), a.get());
    else if (a->normalized) t_->normalized_matcher_.add(a->content, a.get());
    else t_->raw_matcher_.add(a->content, a.get());
  }
  t_->raw_matcher_.finish();
  t_->normalized_matcher_.finish();

  // BOS and EOS: tokenizer_config.json names them, config.json gives ids.
  auto resolve = [&](const std::optional<std::string>& text, bool is_null, std::optional<int32_t> config_id,
                     const char* key) -> Expected<std::optional<int32_t>> {
    if (is_null) return std::optional<int32_t>();
    if (text) {
      auto id = token_id(*text);
      if (!id) return make_error(path_ + ": tokenizer_config.json's " + key + " '" + *text + "' is not a token of this tokenizer");
      return id;
    }
    return config_id;
  };
  FP4C_ASSIGN(t_->bos_, resolve(conventions_.bos_token, conventions_.bos_token_is_null, conventions_.bos_token_id, "bos_token"));
  FP4C_ASSIGN(t_->eos_, resolve(conventions_.eos_token, conventions_.eos_token_is_null, conventions_.eos_token_id, "eos_token"));
  apply_bos_eos_conventions(conventions_, t_->bos_, t_->eos_, t_->prefix_, t_->suffix_);
  for (int32_t id : t_->prefix_)
    if (id < 0 || id >= int32_t(t_->id_to_token_.size())) return make_error(path_ + ": post_processor: id " + std::to_string(id) + " is outside the vocabulary");
  for (int32_t id : t_->suffix_)
    if (id < 0 || id >= int32_t(t_->id_to_token_.size())) return make_error(path_ + ": post_processor: id " + std::to_string(id) + " is outside the vocabulary");
  return std::unique_ptr<Tokenizer>(std::move(t_));
}

}  // namespace

Expected<std::unique_ptr<Tokenizer>> parse_hf_tokenizer(const std::string& text, const std::string& path,
                                                        const SpecialTokenConventions& conventions) {
  FP4C_ASSIGN(const json root, json_input::parse(text, path));
  try {
    return Parser(path, conventions).parse(root);
  } catch (const json::exception& e) {  // a value of an unexpected type somewhere we did not check
    return make_error(path + ": unexpected structure: " + e.what());
  }
}

Expected<std::unique_ptr<Tokenizer>> load_hf_tokenizer(const std::string& path,
                                                       const SpecialTokenConventions& conventions) {
  FP4C_ASSIGN(const std::string text, json_input::read_text(path));
  return parse_hf_tokenizer(text, path, conventions);
}

}  // namespace fp4c::frontend
