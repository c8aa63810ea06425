#include "frontend/gguf_tokenizer.h"

#include <algorithm>
#include <array>
#include <bitset>
#include <unordered_map>

#include <nlohmann/json.hpp>

#include "frontend/tokenizer_bpe.h"
#include "frontend/tokenizer_internal.h"

namespace fp4c::frontend {
namespace {

using nlohmann::json;
using nlohmann::ordered_json;

// llama.cpp's token types (llama_token_type).
enum TokenType : int64_t { kNormal = 1, kUnknown = 2, kControl = 3, kUserDefined = 4, kUnused = 5, kByte = 6 };

// The regexes llama.cpp splits text with before BPE (llama-vocab.cpp, llm_tokenizer_bpe), applied one after the
// other, each splitting the pieces the one before left, matches and the text between them both kept: a Hugging
// Face Split with behavior Isolated each. Where llama.cpp spells the contractions out ((?:'[sS]|'[tT]...)
// because its std::regex has no (?i:), the form of the model's own tokenizer.json is used, as transformers
// does; the two differ only on the Kelvin sign and the long s.
constexpr const char* kGpt2Split = R"('s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S))";
constexpr const char* kLlama3Split =
    R"((?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+)";
constexpr const char* kQwen2Split =
    R"((?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+)";

struct PreTokenizer {
  std::vector<std::string_view> names;  // tokenizer.ggml.pre values llama.cpp maps to it
  std::vector<const char*> regexes;
  bool ignore_merges;  // a pre-token that is a whole token is taken as it is (llama.cpp's tokenizer_ignore_merges)
  bool add_bos;        // llama.cpp's default when tokenizer.ggml.add_bos_token is absent
};

const std::vector<PreTokenizer>& pre_tokenizers() {
  static const std::vector<PreTokenizer> table = {
      {{"llama3", "llama-v3", "llama-bpe", "falcon3", "falcon-h1", "pixtral", "midm-2.0", "lfm2", "jina-v5-nano"},
       {kLlama3Split}, true, true},
      {{"dbrx", "smaug-bpe"}, {kLlama3Split}, false, false},
      {{"qwen2", "deepseek-r1-qwen", "kormo", "megrez", "stablelm2"}, {kQwen2Split}, false, false},
      {{"smollm", "starcoder", "refact", "command-r", "codeshell", "exaone", "minerva-7b"},
       {R"(\p{N})", kGpt2Split}, false, false},
      {{"gpt-2", "phi-2", "jina-es", "jina-de", "jina-v2-es", "jina-v2-de", "a.x-4.0", "mellum", "mpt", "olmo", "jais",
        "trillion", "granite-docling", "exaone4"},
       {kGpt2Split}, false, false},
      {{"default"}, {R"([\p{P}\$\+<=>\^~\|]+)", kGpt2Split, R"(\p{N}+)", "[0-9][0-9][0-9]"}, false, false},
  };
  return table;
}

std::string known_pre_names() {
  std::string s;
  for (const auto& p : pre_tokenizers())
    for (auto n : p.names) s += (s.empty() ? "" : ", ") + std::string(n);
  return s;
}

// Code point boundaries of valid UTF-8 text (byte offsets, 0 and size included); nullopt when invalid.
std::optional<std::vector<size_t>> char_boundaries(std::string_view s) {
  std::vector<size_t> b{0};
  for (size_t i = 0; i < s.size();) {
    const auto c = static_cast<unsigned char>(s[i]);
    size_t n = c < 0x80 ? 1 : (c & 0xE0) == 0xC0 ? 2 : (c & 0xF0) == 0xE0 ? 3 : (c & 0xF8) == 0xF0 ? 4 : 0;
    if (n == 0 || i + n > s.size()) return std::nullopt;
    for (size_t k = 1; k < n; ++k)
      if ((static_cast<unsigned char>(s[i + k]) & 0xC0) != 0x80) return std::nullopt;
    i += n;
    b.push_back(i);
  }
  return b;
}

void append_utf8(std::string& out, uint32_t cp) {
  if (cp < 0x80) {
    out += char(cp);
  } else if (cp < 0x800) {
    out += char(0xC0 | (cp >> 6));
    out += char(0x80 | (cp & 0x3F));
  } else {
    out += char(0xE0 | (cp >> 12));
    out += char(0x80 | ((cp >> 6) & 0x3F));
    out += char(0x80 | (cp & 0x3F));
  }
}

// GPT-2's byte alphabet (bytes_to_unicode): the code point each byte is spelled with.
const std::array<uint32_t, 256>& byte_alphabet() {
  static const std::array<uint32_t, 256> table = [] {
    std::array<uint32_t, 256> t{};
    uint32_t next = 256;
    for (int b = 0; b < 256; ++b) {
      const bool printable = (b >= 33 && b <= 126) || (b >= 161 && b <= 172) || (b >= 174 && b <= 255);
      t[b] = printable ? uint32_t(b) : next++;
    }
    return t;
  }();
  return table;
}

// Whether every character of `s` is one of the byte alphabet's (a token as byte-level vocabularies spell it).
// The alphabet's code points are all below 0x800, so a character is one of them only as one byte or as a
// well-formed two-byte sequence (an overlong form spells no character of it); anything else, or invalid UTF-8,
// is not.
bool in_byte_alphabet(std::string_view s) {
  static const std::bitset<0x800> alphabet = [] {
    std::bitset<0x800> a;
    for (uint32_t cp : byte_alphabet()) a.set(cp);
    return a;
  }();
  for (size_t i = 0; i < s.size();) {
    const auto c = static_cast<unsigned char>(s[i]);
    uint32_t cp;
    if (c < 0x80) {
      cp = c;
      i += 1;
    } else if ((c & 0xE0) == 0xC0 && i + 1 < s.size() && (static_cast<unsigned char>(s[i + 1]) & 0xC0) == 0x80) {
      cp = (uint32_t(c & 0x1F) << 6) | (static_cast<unsigned char>(s[i + 1]) & 0x3F);
      if (cp < 0x80) return false;  // overlong
      i += 2;
    } else {
      return false;
    }
    if (!alphabet.test(cp)) return false;
  }
  return true;
}

// A token spelled in the byte alphabet: as it is when it already is, else its UTF-8 bytes respelled (as
// transformers' byte_level_tokenizer does for GGUF vocabularies that hold raw text).
std::string byte_level_spelling(const std::string& token) {
  if (in_byte_alphabet(token)) return token;
  std::string out;
  for (unsigned char c : token) append_utf8(out, byte_alphabet()[c]);
  return out;
}

// transformers' generate_merges(vocab, vocab_scores): every split of every token into two tokens, ranked
// by the token's score (best first), then the lengths of the two halves; ties keep vocabulary order.
std::vector<std::pair<std::string, std::string>> merges_from_scores(const std::vector<std::string>& tokens,
                                                                    const std::vector<double>& scores) {
  std::unordered_map<std::string, int64_t> index;  // a token listed twice: its last index, as a dict keeps
  for (size_t i = 0; i < tokens.size(); ++i) index[tokens[i]] = int64_t(i);
  std::vector<std::pair<std::string, double>> order;  // first place, last score
  std::unordered_map<std::string, size_t> place;
  for (size_t i = 0; i < tokens.size(); ++i) {
    auto [it, fresh] = place.emplace(tokens[i], order.size());
    if (fresh) order.emplace_back(tokens[i], scores[i]);
    else order[it->second].second = scores[i];
  }
  struct Merge {
    std::string l, r;
    double score;
    size_t len_l, len_r;  // in characters
  };
  std::vector<Merge> merges;
  for (const auto& [token, score] : order) {
    const auto b = char_boundaries(token);
    if (!b) continue;
    std::vector<Merge> local;
    for (size_t k = 1; k + 1 < b->size(); ++k) {
      std::string l = token.substr(0, (*b)[k]), r = token.substr((*b)[k]);
      if (index.count(l) && index.count(r)) local.push_back({std::move(l), std::move(r), score, k, b->size() - 1 - k});
    }
    std::stable_sort(local.begin(), local.end(), [&](const Merge& x, const Merge& y) {
      const int64_t xl = index.at(x.l), yl = index.at(y.l);
      return xl != yl ? xl < yl : index.at(x.r) < index.at(y.r);
    });
    for (auto& m : local) merges.push_back(std::move(m));
  }
  std::stable_sort(merges.begin(), merges.end(), [](const Merge& x, const Merge& y) {
    if (x.score != y.score) return x.score > y.score;
    if (x.len_l != y.len_l) return x.len_l > y.len_l;
    return x.len_r > y.len_r;
  });
  std::vector<std::pair<std::string, std::string>> out;
  out.reserve(merges.size());
  for (auto& m : merges) out.emplace_back(std::move(m.l), std::move(m.r));
  return out;
}

struct Metadata {
  std::string model;                    // tokenizer.ggml.model
  std::optional<std::string> pre;       // tokenizer.ggml.pre
  std::vector<std::string> tokens;
  std::vector<int64_t> types;           // empty when absent
  std::vector<double> scores;           // empty when absent
  std::vector<std::string> merges;      // empty when absent
  std::optional<int64_t> bos, eos, unk, pad;
  std::optional<bool> add_bos, add_eos, add_space_prefix;
  std::optional<std::string> chat_template;
  std::optional<int64_t> context_length;
};

Expected<const gguf::Value*> array_key(const gguf::File& f, const std::string& key, gguf::ValueType elem, bool required,
                                       const char* what) {
  const gguf::Value* v = f.find_key(key);
  if (!v) {
    if (required) return make_error(f.path() + ": missing metadata key '" + key + "' (the tokenizer's " + what + ")");
    return static_cast<const gguf::Value*>(nullptr);
  }
  if (v->type != gguf::ValueType::Array || v->elem_type != elem)
    return make_error(f.path() + ": metadata key '" + key + "' (at byte " + std::to_string(v->offset) +
                      ") must be an array of " + std::string(gguf::value_type_name(elem)) + ", not " +
                      (v->type == gguf::ValueType::Array ? "an array of " + std::string(gguf::value_type_name(v->elem_type))
                                                          : std::string(gguf::value_type_name(v->type))));
  return v;
}

Expected<Metadata> read_metadata(const gguf::File& f) {
  const std::string& path = f.path();
  Metadata m;
  FP4C_ASSIGN(auto model, f.get_string("tokenizer.ggml.model"));
  if (!model) return make_error(path + ": no tokenizer: missing metadata key 'tokenizer.ggml.model'");
  m.model = *model;
  FP4C_ASSIGN(m.pre, f.get_string("tokenizer.ggml.pre"));
  FP4C_ASSIGN(const gguf::Value* tokens, array_key(f, "tokenizer.ggml.tokens", gguf::ValueType::String, true, "vocabulary"));
  m.tokens = tokens->strings;
  if (m.tokens.empty()) return make_error(path + ": metadata key 'tokenizer.ggml.tokens' is an empty array");
  const uint64_t n = m.tokens.size();
  auto check_count = [&](const gguf::Value* v, const char* key) -> Status {
    if (v->count != n)
      return make_error(path + ": metadata key '" + key + "' (at byte " + std::to_string(v->offset) + ") has " +
                        std::to_string(v->count) + " elements for " + std::to_string(n) + " tokens");
    return {};
  };
  if (const gguf::Value* types = f.find_key("tokenizer.ggml.token_type")) {
    if (types->type != gguf::ValueType::Array || !(types->elem_type == gguf::ValueType::I32 || types->elem_type == gguf::ValueType::U32))
      return make_error(path + ": metadata key 'tokenizer.ggml.token_type' (at byte " + std::to_string(types->offset) +
                        ") must be an array of int32");
    FP4C_TRY(check_count(types, "tokenizer.ggml.token_type"));
    m.types.resize(n);
    for (uint64_t i = 0; i < n; ++i) {
      m.types[i] = types->integer_at(i).value_or(-1);
      if (m.types[i] < 0 || m.types[i] > 6)
        return make_error(path + ": metadata key 'tokenizer.ggml.token_type': element " + std::to_string(i) +
                          " is " + std::to_string(m.types[i]) + ", not a token type (0 to 6)");
    }
  }
  FP4C_ASSIGN(const gguf::Value* scores, array_key(f, "tokenizer.ggml.scores", gguf::ValueType::F32, false, "scores"));
  if (scores) {
    FP4C_TRY(check_count(scores, "tokenizer.ggml.scores"));
    m.scores.resize(n);
    for (uint64_t i = 0; i < n; ++i) m.scores[i] = *scores->number_at(i);
  }
  FP4C_ASSIGN(const gguf::Value* merges, array_key(f, "tokenizer.ggml.merges", gguf::ValueType::String, false, "merges"));
  if (merges) m.merges = merges->strings;
  auto id_key = [&](const char* key, std::optional<int64_t>& out) -> Status {
    FP4C_ASSIGN(out, f.get_integer(key));
    if (out && (*out < 0 || uint64_t(*out) >= n))
      return make_error(path + ": metadata key '" + key + "' is " + std::to_string(*out) + ", outside the vocabulary of " +
                        std::to_string(n) + " tokens");
    return {};
  };
  FP4C_TRY(id_key("tokenizer.ggml.bos_token_id", m.bos));
  FP4C_TRY(id_key("tokenizer.ggml.eos_token_id", m.eos));
  FP4C_TRY(id_key("tokenizer.ggml.unknown_token_id", m.unk));
  FP4C_TRY(id_key("tokenizer.ggml.padding_token_id", m.pad));
  FP4C_ASSIGN(m.add_bos, f.get_bool("tokenizer.ggml.add_bos_token"));
  FP4C_ASSIGN(m.add_eos, f.get_bool("tokenizer.ggml.add_eos_token"));
  FP4C_ASSIGN(m.add_space_prefix, f.get_bool("tokenizer.ggml.add_space_prefix"));
  FP4C_ASSIGN(m.chat_template, f.get_string("tokenizer.chat_template"));
  FP4C_ASSIGN(auto arch, f.get_string("general.architecture"));
  if (arch) {
    FP4C_ASSIGN(m.context_length, f.get_integer(*arch + ".context_length"));
  }
  return m;
}

ordered_json added_token(int64_t id, const std::string& content, bool special) {
  return ordered_json{{"id", id},          {"content", content}, {"single_word", false}, {"lstrip", false},
                      {"rstrip", false},   {"normalized", false}, {"special", special}};
}

ordered_json split_step(const char* regex) {
  return ordered_json{{"type", "Split"}, {"pattern", {{"Regex", regex}}}, {"behavior", "Isolated"}, {"invert", false}};
}

ordered_json byte_level_step(bool use_regex) {
  return ordered_json{{"type", "ByteLevel"}, {"add_prefix_space", false}, {"trim_offsets", true}, {"use_regex", use_regex}};
}

}  // namespace

bool gguf_has_tokenizer(const gguf::File& file) { return file.find_key("tokenizer.ggml.model") != nullptr; }

Expected<GgufTokenizerFiles> gguf_tokenizer_files(const gguf::File& f) {
  const std::string& path = f.path();
  FP4C_ASSIGN(Metadata m, read_metadata(f));
  const bool byte_level = m.model == "gpt2";
  if (!byte_level && m.model != "llama")
    return make_error(path + ": metadata key 'tokenizer.ggml.model' is '" + m.model +
                      "'; fp4c reads the tokenizers 'gpt2' (byte-level BPE) and 'llama' (SentencePiece-style BPE)");
  const size_t n = m.tokens.size();
  auto type_of = [&](size_t i) { return m.types.empty() ? int64_t(kNormal) : m.types[i]; };

  const PreTokenizer* pre = nullptr;
  if (byte_level) {
    const std::string name = m.pre.value_or("default");  // llama.cpp's choice when the key is absent
    for (const auto& p : pre_tokenizers())
      if (std::find(p.names.begin(), p.names.end(), name) != p.names.end()) pre = &p;
    if (!pre)
      return make_error(path + ": metadata key 'tokenizer.ggml.pre' is '" + name +
                        "', a pre-tokenizer fp4c does not implement (it implements " + known_pre_names() + ")");
    if (m.merges.empty()) return make_error(path + ": missing metadata key 'tokenizer.ggml.merges' (a 'gpt2' tokenizer needs its merges)");
  } else if (m.scores.empty() && m.merges.empty()) {
    return make_error(path + ": a 'llama' tokenizer needs 'tokenizer.ggml.scores' (or 'tokenizer.ggml.merges'); the file has neither");
  }

  std::vector<std::string> spelled(n);
  for (size_t i = 0; i < n; ++i) {
    if (!char_boundaries(m.tokens[i]))
      return make_error(path + ": metadata key 'tokenizer.ggml.tokens': element " + std::to_string(i) + " is not valid UTF-8");
    spelled[i] = byte_level ? byte_level_spelling(m.tokens[i]) : m.tokens[i];
  }

  ordered_json model;
  model["type"] = "BPE";
  model["dropout"] = nullptr;
  if (!byte_level && m.unk) model["unk_token"] = spelled[*m.unk];
  else model["unk_token"] = nullptr;
  model["continuing_subword_prefix"] = byte_level ? json("") : json(nullptr);
  model["end_of_word_suffix"] = byte_level ? json("") : json(nullptr);
  model["fuse_unk"] = !byte_level;
  model["byte_fallback"] = !byte_level;
  model["ignore_merges"] = byte_level && pre->ignore_merges;
  {
    // A token listed twice keeps its last id. Appended directly: ordered_json's operator[] searches linearly.
    std::unordered_map<std::string_view, size_t> last;
    last.reserve(n);
    for (size_t i = 0; i < n; ++i) last[spelled[i]] = i;
    ordered_json vocab = ordered_json::object();
    auto& entries = static_cast<std::vector<std::pair<const std::string, ordered_json>>&>(*vocab.get_ptr<ordered_json::object_t*>());
    entries.reserve(last.size());
    for (size_t i = 0; i < n; ++i)
      if (last[spelled[i]] == i) entries.emplace_back(spelled[i], int64_t(i));
    model["vocab"] = std::move(vocab);
  }
  ordered_json merges = ordered_json::array();
  if (!m.merges.empty()) {
    for (size_t k = 0; k < m.merges.size(); ++k) {
      const std::string& s = m.merges[k];
      const size_t sp = s.find(' ');
      if (sp == std::string::npos || sp == 0 || sp + 1 == s.size() || s.find(' ', sp + 1) != std::string::npos)
        return make_error(path + ": metadata key 'tokenizer.ggml.merges': element " + std::to_string(k) + " ('" + s +
                          "') is not two tokens separated by one space");
      merges.push_back({s.substr(0, sp), s.substr(sp + 1)});
    }
  } else {
    for (auto& [l, r] : merges_from_scores(m.tokens, m.scores)) merges.push_back({std::move(l), std::move(r)});
  }
  model["merges"] = std::move(merges);

  // Added tokens: CONTROL tokens and the named special tokens are special; USER_DEFINED ones are not. In a
  // byte-level vocabulary a CONTROL token spelled outside the byte alphabet is a converter's mislabel (as
  // transformers judges it) and stays an ordinary token.
  std::vector<bool> special(n, false), user(n, false);
  for (size_t i = 0; i < n; ++i) {
    if (type_of(i) == kControl && (!byte_level || in_byte_alphabet(m.tokens[i]))) special[i] = true;
    if (type_of(i) == kUserDefined && (!byte_level || in_byte_alphabet(m.tokens[i]))) user[i] = true;
  }
  for (const auto& id : {m.bos, m.eos, m.unk, m.pad})
    if (id && (!byte_level || in_byte_alphabet(m.tokens[*id]))) special[*id] = true;
  ordered_json added = ordered_json::array();
  for (size_t i = 0; i < n; ++i) {
    if (special[i]) added.push_back(added_token(int64_t(i), spelled[i], true));
    else if (user[i]) added.push_back(added_token(int64_t(i), spelled[i], false));
  }

  const bool add_bos = m.add_bos.value_or(byte_level ? pre->add_bos : true) && m.bos.has_value();
  const bool add_eos = m.add_eos.value_or(false) && m.eos.has_value();
  ordered_json single = ordered_json::array(), pair = ordered_json::array(), specials = ordered_json::object();
  auto special_item = [&](int64_t id, int type_id) {
    specials[spelled[id]] = {{"id", spelled[id]}, {"ids", {id}}, {"tokens", {spelled[id]}}};
    return ordered_json{{"SpecialToken", {{"id", spelled[id]}, {"type_id", type_id}}}};
  };
  for (int part = 0; part < 2; ++part) {
    ordered_json& items = part == 0 ? single : pair;
    const int seqs = part == 0 ? 1 : 2;
    for (int s = 0; s < seqs; ++s) {
      if (add_bos) items.push_back(special_item(*m.bos, s));
      items.push_back({{"Sequence", {{"id", s == 0 ? "A" : "B"}, {"type_id", s}}}});
      if (add_eos) items.push_back(special_item(*m.eos, s));
    }
  }

  ordered_json tj;
  tj["version"] = "1.0";
  tj["truncation"] = nullptr;
  tj["padding"] = nullptr;
  tj["added_tokens"] = std::move(added);
  tj["normalizer"] = nullptr;
  if (byte_level) {
    ordered_json steps = ordered_json::array();
    for (const char* re : pre->regexes) steps.push_back(split_step(re));
    steps.push_back(byte_level_step(false));
    tj["pre_tokenizer"] = {{"type", "Sequence"}, {"pretokenizers", std::move(steps)}};
  } else {
    // llama.cpp's SentencePiece path: a space before the text unless add_space_prefix is false; spaces as ▁.
    tj["pre_tokenizer"] = {{"type", "Metaspace"}, {"replacement", "\xE2\x96\x81"},
                           {"prepend_scheme", m.add_space_prefix.value_or(true) ? "first" : "never"}, {"split", false}};
  }
  tj["post_processor"] = {{"type", "TemplateProcessing"}, {"single", single}, {"pair", pair}, {"special_tokens", specials}};
  if (byte_level) {
    tj["decoder"] = {{"type", "ByteLevel"}, {"add_prefix_space", true}, {"trim_offsets", true}, {"use_regex", true}};
  } else {
    ordered_json decoders = ordered_json::array();
    decoders.push_back({{"type", "Replace"}, {"pattern", {{"String", "\xE2\x96\x81"}}}, {"content", " "}});
    decoders.push_back({{"type", "ByteFallback"}});
    decoders.push_back({{"type", "Fuse"}});
    if (m.add_space_prefix.value_or(true)) decoders.push_back({{"type", "Strip"}, {"content", " "}, {"start", 1}, {"stop", 0}});
    tj["decoder"] = {{"type", "Sequence"}, {"decoders", std::move(decoders)}};
  }
  tj["model"] = std::move(model);

  ordered_json tc;
  tc["add_bos_token"] = add_bos;
  tc["add_eos_token"] = add_eos;
  auto token_or_null = [&](const std::optional<int64_t>& id) { return id ? json(spelled[*id]) : json(nullptr); };
  tc["bos_token"] = token_or_null(m.bos);
  tc["eos_token"] = token_or_null(m.eos);
  tc["unk_token"] = token_or_null(m.unk);
  tc["pad_token"] = token_or_null(m.pad);
  tc["clean_up_tokenization_spaces"] = false;
  if (m.context_length && *m.context_length > 0) tc["model_max_length"] = *m.context_length;
  tc["tokenizer_class"] = "PreTrainedTokenizerFast";
  if (m.chat_template) tc["chat_template"] = *m.chat_template;

  GgufTokenizerFiles files;
  files.tokenizer_json = tj.dump(2, ' ', false, json::error_handler_t::strict);  // a few MB: appended to, not copied
  files.tokenizer_json += '\n';
  files.tokenizer_config_json = tc.dump(2, ' ', false, json::error_handler_t::strict);
  files.tokenizer_config_json += '\n';
  return files;
}

Expected<std::unique_ptr<Tokenizer>> load_gguf_tokenizer(const gguf::File& file) {
  FP4C_ASSIGN(GgufTokenizerFiles files, gguf_tokenizer_files(file));
  SpecialTokenConventions c;
  const json tc = json::parse(files.tokenizer_config_json);
  c.add_bos_token = tc["add_bos_token"].get<bool>();
  c.add_eos_token = tc["add_eos_token"].get<bool>();
  if (tc["bos_token"].is_string()) c.bos_token = tc["bos_token"].get<std::string>();
  else c.bos_token_is_null = true;
  if (tc["eos_token"].is_string()) c.eos_token = tc["eos_token"].get<std::string>();
  else c.eos_token_is_null = true;
  return parse_hf_tokenizer(files.tokenizer_json, file.path() + " (its tokenizer.ggml.* metadata as tokenizer.json)", c);
}

}  // namespace fp4c::frontend
