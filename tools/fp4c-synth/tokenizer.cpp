#include "tokenizer.h"

#include <algorithm>
#include <array>
#include <map>
#include <unordered_map>

#include <nlohmann/json.hpp>

#include "corpus.h"

namespace fp4c::synth {

namespace {

// ---- Unicode classes, for the corpus's scripts ------------------------------------------------

bool is_space(char32_t c) {
  return c == ' ' || (c >= '\t' && c <= '\r') || c == 0x85 || c == 0xA0 || c == 0x1680 ||
         (c >= 0x2000 && c <= 0x200A) || c == 0x2028 || c == 0x2029 || c == 0x202F ||
         c == 0x205F || c == 0x3000;
}

bool is_number(char32_t c) {
  return (c >= '0' && c <= '9') || c == 0xB2 || c == 0xB3 || c == 0xB9 ||
         (c >= 0xBC && c <= 0xBE) || (c >= 0x660 && c <= 0x669) || (c >= 0xFF10 && c <= 0xFF19);
}

bool is_letter(char32_t c) {
  if (c < 0x80) return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z');
  return c == 0xAA || c == 0xB5 || c == 0xBA || (c >= 0xC0 && c <= 0x24F && c != 0xD7 && c != 0xF7) ||
         (c >= 0x370 && c <= 0x3FF && c != 0x37E && c != 0x387 && c != 0x375) ||  // Greek
         (c >= 0x400 && c <= 0x481) || (c >= 0x48A && c <= 0x52F) ||              // Cyrillic
         (c >= 0x3041 && c <= 0x3096) || (c >= 0x30A1 && c <= 0x30FA) ||           // kana
         (c >= 0x4E00 && c <= 0x9FFF) || (c >= 0xAC00 && c <= 0xD7A3);            // CJK, Hangul
}

bool is_newline(char32_t c) { return c == '\r' || c == '\n'; }
bool is_symbol(char32_t c) { return !is_space(c) && !is_letter(c) && !is_number(c); }

struct CodePoints {
  std::vector<char32_t> cp;
  std::vector<size_t> offset;  // byte offset of each code point, plus one past the end
};

// Invalid UTF-8 bytes become one code point each (U+FFFD, a symbol).
CodePoints decode_utf8(std::string_view s) {
  CodePoints out;
  size_t i = 0;
  while (i < s.size()) {
    const auto b = static_cast<uint8_t>(s[i]);
    size_t len = b < 0x80 ? 1 : (b >> 5) == 0x6 ? 2 : (b >> 4) == 0xE ? 3 : (b >> 3) == 0x1E ? 4 : 0;
    char32_t c = 0xFFFD;
    if (len == 0 || i + len > s.size()) {
      len = 1;
    } else {
      c = len == 1 ? b : b & (0x7F >> len);
      for (size_t k = 1; k < len; ++k) {
        const auto cont = static_cast<uint8_t>(s[i + k]);
        if ((cont & 0xC0) != 0x80) { c = 0xFFFD; len = 1; break; }
        c = (c << 6) | (cont & 0x3F);
      }
    }
    out.cp.push_back(c);
    out.offset.push_back(i);
    i += len;
  }
  out.offset.push_back(s.size());
  return out;
}

// The length in code points of the pattern's match at i (the first alternative that matches,
// with the backtracking a regex engine would do); always >= 1.
size_t match_at(const std::vector<char32_t>& c, size_t i, int max_digits) {
  const size_t n = c.size();
  auto lower = [](char32_t x) { return x >= 'A' && x <= 'Z' ? x + 32 : x; };
  // (?i:'s|'t|'re|'ve|'m|'ll|'d)
  if (c[i] == '\'' && i + 1 < n) {
    const char32_t a = lower(c[i + 1]);
    if (a == 's' || a == 't' || a == 'm' || a == 'd') return 2;
    if (i + 2 < n) {
      const char32_t b = lower(c[i + 2]);
      if ((a == 'r' && b == 'e') || (a == 'v' && b == 'e') || (a == 'l' && b == 'l')) return 3;
    }
  }
  // [^\r\n\p{L}\p{N}]?\p{L}+
  {
    size_t j = i;
    if (!is_newline(c[j]) && !is_letter(c[j]) && !is_number(c[j]) && j + 1 < n && is_letter(c[j + 1])) ++j;
    if (is_letter(c[j])) {
      while (j < n && is_letter(c[j])) ++j;
      return j - i;
    }
  }
  // \p{N} (Qwen2) or \p{N}{1,3} (Llama 3)
  if (is_number(c[i])) {
    size_t j = i;
    while (j < n && j - i < static_cast<size_t>(max_digits) && is_number(c[j])) ++j;
    return j - i;
  }
  // ' ?[^\s\p{L}\p{N}]+[\r\n]*'
  {
    size_t j = i;
    if (c[j] == ' ' && j + 1 < n && is_symbol(c[j + 1])) ++j;
    if (is_symbol(c[j])) {
      while (j < n && is_symbol(c[j])) ++j;
      while (j < n && is_newline(c[j])) ++j;
      return j - i;
    }
  }
  // Only whitespace is left here.
  size_t e = i;
  while (e < n && is_space(c[e])) ++e;
  // \s*[\r\n]+ : up to the last newline of the run
  for (size_t k = e; k > i; --k)
    if (is_newline(c[k - 1])) return k - i;
  // \s+(?!\S) : the run, less its last space when a non-space follows
  if (e == n) return e - i;
  if (e - i >= 2) return e - i - 1;
  // \s+
  return std::max<size_t>(e - i, 1);
}

// ---- GPT-2 byte-level table ---------------------------------------------------------------------

struct ByteTable {
  std::array<uint8_t, 256> order{};      // token id -> byte
  std::array<char32_t, 256> symbol{};    // byte -> code point
  ByteTable() {
    int next = 0, extra = 0;
    auto printable = [](int b) { return (b >= '!' && b <= '~') || (b >= 0xA1 && b <= 0xAC) || (b >= 0xAE && b <= 0xFF); };
    for (int b = 0; b < 256; ++b)
      if (printable(b)) { order[next++] = uint8_t(b); symbol[b] = char32_t(b); }
    for (int b = 0; b < 256; ++b)
      if (!printable(b)) { order[next++] = uint8_t(b); symbol[b] = char32_t(256 + extra++); }
  }
};

const ByteTable& byte_table() {
  static const ByteTable table;
  return table;
}

std::string utf8(char32_t c) {
  std::string s;
  if (c < 0x80) {
    s += char(c);
  } else if (c < 0x800) {
    s += char(0xC0 | (c >> 6));
    s += char(0x80 | (c & 0x3F));
  } else {
    s += char(0xE0 | (c >> 12));
    s += char(0x80 | ((c >> 6) & 0x3F));
    s += char(0x80 | (c & 0x3F));
  }
  return s;
}

uint64_t pair_key(int32_t a, int32_t b) { return (uint64_t(uint32_t(a)) << 32) | uint32_t(b); }

// ---- the files ----------------------------------------------------------------------------------


const char* kQwenChatTemplate =
    "{% for message in messages %}{% if loop.first and messages[0]['role'] != 'system' %}"
    "{{ '<|im_start|>system\\nYou are a helpful assistant.<|im_end|>\\n' }}{% endif %}"
    "{{'<|im_start|>' + message['role'] + '\\n' + message['content'] + '<|im_end|>' + '\\n'}}"
    "{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}{% endif %}";

nlohmann::ordered_json byte_level(bool add_prefix_space, bool trim_offsets, bool use_regex) {
  return {{"type", "ByteLevel"},
          {"add_prefix_space", add_prefix_space},
          {"trim_offsets", trim_offsets},
          {"use_regex", use_regex}};
}

nlohmann::ordered_json added_token(int64_t id, const std::string& content) {
  return {{"id", id},         {"content", content}, {"single_word", false}, {"lstrip", false},
          {"rstrip", false},  {"normalized", false}, {"special", true}};
}

// A few thousand merges: every pair seen at least twice comes first (BPE takes the most frequent),
// then pairs seen once, until the corpus's words are whole or the cap is reached.
constexpr size_t kMaxMerges = 3000;
constexpr int64_t kMinPairCount = 1;

}  // namespace

std::vector<std::string_view> pre_tokenize(std::string_view text, int max_digits) {
  std::vector<std::string_view> pieces;
  const CodePoints cps = decode_utf8(text);
  size_t i = 0;
  while (i < cps.cp.size()) {
    const size_t len = match_at(cps.cp, i, max_digits);
    pieces.push_back(text.substr(cps.offset[i], cps.offset[i + len] - cps.offset[i]));
    i += len;
  }
  return pieces;
}

std::string byte_symbol(uint8_t b) { return utf8(byte_table().symbol[b]); }

std::span<const uint8_t, 256> byte_token_order() { return byte_table().order; }

BpeModel train_bpe(std::span<const std::string_view> documents, int max_digits, size_t max_merges,
                   int64_t min_count) {
  std::map<std::string_view, int64_t> counts;  // ordered, so the words' order is fixed
  for (std::string_view doc : documents)
    for (std::string_view piece : pre_tokenize(doc, max_digits)) ++counts[piece];

  BpeModel model;
  std::array<int32_t, 256> id_of_byte{};
  for (int i = 0; i < 256; ++i) {
    id_of_byte[byte_token_order()[i]] = i;
    model.tokens.push_back(byte_symbol(byte_token_order()[i]));
  }
  std::map<std::string, int32_t> id_of_token;
  for (int i = 0; i < 256; ++i) id_of_token[model.tokens[i]] = i;

  struct Word { std::vector<int32_t> symbols; int64_t count; };
  std::vector<Word> words;
  std::unordered_map<uint64_t, int64_t> pairs;
  for (const auto& [text, count] : counts) {
    Word w{{}, count};
    for (char ch : text) w.symbols.push_back(id_of_byte[uint8_t(ch)]);
    for (size_t k = 0; k + 1 < w.symbols.size(); ++k) pairs[pair_key(w.symbols[k], w.symbols[k + 1])] += count;
    words.push_back(std::move(w));
  }

  auto add_pairs = [&](const Word& w, int64_t sign) {
    for (size_t k = 0; k + 1 < w.symbols.size(); ++k) {
      const uint64_t key = pair_key(w.symbols[k], w.symbols[k + 1]);
      if ((pairs[key] += sign * w.count) == 0) pairs.erase(key);
    }
  };

  while (model.merges.size() < max_merges) {
    uint64_t best = 0;
    int64_t best_count = 0;
    for (const auto& [key, count] : pairs)
      if (count > best_count || (count == best_count && key < best)) { best = key; best_count = count; }
    if (best_count < min_count) break;
    const auto a = int32_t(best >> 32), b = int32_t(best & 0xffffffffu);
    // As Hugging Face's trainer does, a merge whose result already exists reuses its id.
    const std::string joined = model.tokens[a] + model.tokens[b];
    auto [it, inserted] = id_of_token.emplace(joined, int32_t(model.tokens.size()));
    if (inserted) model.tokens.push_back(joined);
    const int32_t merged = it->second;
    model.merges.push_back({a, b});
    for (Word& w : words) {
      bool has = false;
      for (size_t k = 0; k + 1 < w.symbols.size() && !has; ++k) has = w.symbols[k] == a && w.symbols[k + 1] == b;
      if (!has) continue;
      add_pairs(w, -1);
      std::vector<int32_t> next;
      for (size_t k = 0; k < w.symbols.size(); ++k) {
        if (k + 1 < w.symbols.size() && w.symbols[k] == a && w.symbols[k + 1] == b) {
          next.push_back(merged);
          ++k;
        } else {
          next.push_back(w.symbols[k]);
        }
      }
      w.symbols = std::move(next);
      add_pairs(w, +1);
    }
  }
  return model;
}

TokenizerFiles make_tokenizer(Family family) {
  const bool qwen = family == Family::Qwen2 || family == Family::Qwen3 || family == Family::Qwen3Moe;
  const BpeModel bpe = train_bpe(corpus_documents(), qwen ? 1 : 3, kMaxMerges, kMinPairCount);
  const auto base = int64_t(bpe.tokens.size());

  std::vector<std::string> specials;
  if (qwen) {
    specials = {"<|endoftext|>", "<|im_start|>", "<|im_end|>"};
  } else {  // Llama 3.1's first eleven
    specials = {"<|begin_of_text|>", "<|end_of_text|>", "<|reserved_special_token_0|>",
                "<|reserved_special_token_1|>", "<|finetune_right_pad_id|>",
                "<|reserved_special_token_2|>", "<|start_header_id|>", "<|end_header_id|>",
                "<|eom_id|>", "<|eot_id|>", "<|python_tag|>"};
  }

  TokenizerFiles files;
  files.ids.tokenizer_size = base + int64_t(specials.size());
  files.ids.bos = base;                  // <|endoftext|> or <|begin_of_text|>
  files.ids.eos = qwen ? base : base + 1;  // <|endoftext|> or <|end_of_text|>

  using ojson = nlohmann::ordered_json;
  ojson tok;
  tok["version"] = "1.0";
  tok["truncation"] = nullptr;
  tok["padding"] = nullptr;
  ojson added = ojson::array();
  for (size_t k = 0; k < specials.size(); ++k) added.push_back(added_token(base + int64_t(k), specials[k]));
  tok["added_tokens"] = added;
  tok["normalizer"] = qwen ? ojson{{"type", "NFC"}} : ojson(nullptr);
  ojson split = {{"type", "Split"},
                 {"pattern", {{"Regex", std::string(qwen ? kQwen2Pattern : kLlama3Pattern)}}},
                 {"behavior", "Isolated"},
                 {"invert", false}};
  tok["pre_tokenizer"] = {{"type", "Sequence"},
                          {"pretokenizers", {split, byte_level(false, !qwen, false)}}};
  if (qwen) {
    tok["post_processor"] = byte_level(false, false, false);
    tok["decoder"] = byte_level(false, false, false);
  } else {
    const std::string bos = specials[0];
    auto special = [&](int type_id) { return ojson{{"SpecialToken", {{"id", bos}, {"type_id", type_id}}}}; };
    auto sequence = [](const char* id, int type_id) { return ojson{{"Sequence", {{"id", id}, {"type_id", type_id}}}}; };
    ojson templ = {{"type", "TemplateProcessing"},
                   {"single", {special(0), sequence("A", 0)}},
                   {"pair", {special(0), sequence("A", 0), special(1), sequence("B", 1)}},
                   {"special_tokens", {{bos, {{"id", bos}, {"ids", {files.ids.bos}}, {"tokens", {bos}}}}}}};
    tok["post_processor"] = {{"type", "Sequence"}, {"processors", {byte_level(true, false, true), templ}}};
    tok["decoder"] = byte_level(true, true, true);
  }
  ojson model;
  model["type"] = "BPE";
  model["dropout"] = nullptr;
  model["unk_token"] = nullptr;
  model["continuing_subword_prefix"] = qwen ? ojson("") : ojson(nullptr);
  model["end_of_word_suffix"] = qwen ? ojson("") : ojson(nullptr);
  model["fuse_unk"] = false;
  model["byte_fallback"] = false;
  model["ignore_merges"] = !qwen;
  ojson vocab = ojson::object();
  for (size_t id = 0; id < bpe.tokens.size(); ++id) vocab[bpe.tokens[id]] = id;
  model["vocab"] = std::move(vocab);
  ojson merges = ojson::array();
  for (const auto& [a, b] : bpe.merges) merges.push_back(bpe.tokens[a] + " " + bpe.tokens[b]);
  model["merges"] = std::move(merges);
  tok["model"] = std::move(model);
  files.tokenizer_json = tok.dump(2) + "\n";

  nlohmann::json cfg;  // sorted keys, as transformers writes it
  nlohmann::json decoder = nlohmann::json::object();
  for (size_t k = 0; k < specials.size(); ++k) {
    decoder[std::to_string(base + int64_t(k))] = {{"content", specials[k]}, {"lstrip", false},
                                                   {"normalized", false}, {"rstrip", false},
                                                   {"single_word", false}, {"special", true}};
  }
  cfg["added_tokens_decoder"] = decoder;
  cfg["model_max_length"] = 131072;
  if (qwen) {
    cfg["add_bos_token"] = false;
    cfg["add_prefix_space"] = false;
    cfg["additional_special_tokens"] = {"<|im_start|>", "<|im_end|>"};
    cfg["bos_token"] = nullptr;
    cfg["chat_template"] = kQwenChatTemplate;
    cfg["clean_up_tokenization_spaces"] = false;
    cfg["eos_token"] = "<|endoftext|>";
    cfg["errors"] = "replace";
    cfg["pad_token"] = "<|endoftext|>";
    cfg["split_special_tokens"] = false;
    cfg["tokenizer_class"] = "Qwen2Tokenizer";
    cfg["unk_token"] = nullptr;
  } else {
    cfg["bos_token"] = "<|begin_of_text|>";
    cfg["clean_up_tokenization_spaces"] = true;
    cfg["eos_token"] = "<|end_of_text|>";
    cfg["model_input_names"] = {"input_ids", "attention_mask"};
    cfg["tokenizer_class"] = "PreTrainedTokenizerFast";
  }
  files.tokenizer_config_json = cfg.dump(2) + "\n";
  return files;
}

}  // namespace fp4c::synth
