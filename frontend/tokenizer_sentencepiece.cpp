// SentencePiece tokenizer.model (Llama 2 style), read with our own copy of its schema
// (frontend/sentencepiece_model.proto) and encoded here, following SentencePiece's normalizer.cc,
// bpe_model.cc and sentencepiece_processor.cc. Debian's libsentencepiece is not used: it embeds its
// own protobuf runtime, which aborts at start-up next to the system libprotobuf.
//
// Supported: BPE models (Llama 2, Mistral, the llama2.c stories models), byte fallback or <unk>,
// user-defined pieces, UNUSED pieces (resegmented as SentencePiece does), the normalizer options
// add_dummy_prefix, remove_extra_whitespaces, escape_whitespaces and treat_whitespace_as_suffix,
// with no precompiled character map (the "identity" normalizer). Unigram, word and char models and
// precompiled normalization rules (nmt_nfkc, ...) are refused with an error naming the file.
#include <algorithm>
#include <cstring>
#include <fstream>
#include <queue>
#include <sstream>
#include <string>
#include <string_view>
#include <unordered_map>
#include <unordered_set>
#include <utility>
#include <vector>

#include "frontend/tokenizer_internal.h"
#include "frontend/tokenizer_unicode.h"
#include "sentencepiece_model.pb.h"

namespace fp4c::frontend {

namespace {

using Piece = spm::ModelProto::SentencePiece;

constexpr std::string_view kSpaceSymbol = "\xE2\x96\x81";  // U+2581, what a space becomes
constexpr std::string_view kReplacementCharacter = "\xEF\xBF\xBD";

// Length of the UTF-8 sequence a lead byte announces (SentencePiece's OneCharLen).
size_t one_char_len(unsigned char c) {
  static constexpr unsigned char kLen[16] = {1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 2, 2, 3, 4};
  return kLen[c >> 4];
}

// Length of the valid UTF-8 character at the start of s, or 0 when it is not one.
size_t valid_char_len(std::string_view s) {
  const auto c = static_cast<unsigned char>(s[0]);
  size_t n = 0;
  if (c < 0x80) return 1;
  if ((c & 0xE0) == 0xC0) n = 2;
  else if ((c & 0xF0) == 0xE0) n = 3;
  else if ((c & 0xF8) == 0xF0) n = 4;
  else return 0;
  if (n > s.size() || unicode::find_invalid_utf8(s.substr(0, n))) return 0;
  return n;
}

std::string byte_piece(unsigned char b) {
  static constexpr char kHex[] = "0123456789ABCDEF";
  return std::string("<0x") + kHex[b >> 4] + kHex[b & 15] + ">";
}

const char* model_type_name(int t) {
  switch (t) {
    case spm::TrainerSpec::UNIGRAM: return "UNIGRAM";
    case spm::TrainerSpec::BPE: return "BPE";
    case spm::TrainerSpec::WORD: return "WORD";
    case spm::TrainerSpec::CHAR: return "CHAR";
  }
  return "unknown";
}

class SentencePieceTokenizer final : public Tokenizer {
 public:
  // Everything the model file says that encoding and decoding need; the checks SentencePiece's
  // ModelInterface::InitializePieces makes, with errors that name the file.
  static Expected<std::unique_ptr<SentencePieceTokenizer>> create(const std::string& path,
                                                                  const spm::ModelProto& m,
                                                                  const SpecialTokenConventions& c) {
    auto bad = [&](const std::string& what) { return make_error(path + ": " + what); };
    const auto& ts = m.trainer_spec();
    const auto& ns = m.normalizer_spec();
    if (ts.model_type() != spm::TrainerSpec::BPE) {
      return make_error(std::string("unsupported SentencePiece model type ") + model_type_name(ts.model_type()) +
                        " in " + path + " (fp4c implements BPE models only)");
    }
    if (!ns.precompiled_charsmap().empty()) {
      return bad("unsupported SentencePiece normalizer '" + ns.name() +
                 "' (a precompiled character map; fp4c implements the 'identity' normalizer only)");
    }
    if (m.has_denormalizer_spec() && !m.denormalizer_spec().precompiled_charsmap().empty()) {
      return bad("unsupported SentencePiece denormalizer '" + m.denormalizer_spec().name() +
                 "' (a precompiled character map)");
    }
    if (m.pieces_size() == 0) return bad("not a SentencePiece model: no pieces");

    std::unique_ptr<SentencePieceTokenizer> t(new SentencePieceTokenizer);
    t->byte_fallback_ = ts.byte_fallback();
    t->treat_whitespace_as_suffix_ = ts.treat_whitespace_as_suffix();
    t->add_dummy_prefix_ = ns.add_dummy_prefix();
    t->remove_extra_whitespaces_ = ns.remove_extra_whitespaces();
    t->escape_whitespaces_ = ns.escape_whitespaces();
    t->unk_surface_ = ts.unk_surface();
    t->pieces_.reserve(m.pieces_size());
    t->scores_.reserve(m.pieces_size());
    t->types_.reserve(m.pieces_size());
    for (const auto& p : m.pieces()) {
      if (p.piece().empty()) return bad("not a SentencePiece model: an empty piece");
      t->pieces_.push_back(p.piece());
      t->scores_.push_back(p.score());
      t->types_.push_back(p.type());
    }
    // pieces_ no longer changes: the maps below hold views of its strings.
    std::vector<bool> byte_found(256, false);
    t->byte_value_.assign(t->pieces_.size(), -1);
    for (int i = 0; i < static_cast<int>(t->pieces_.size()); ++i) {
      const std::string_view piece = t->pieces_[i];
      const int type = t->types_[i];
      const bool normal = type == Piece::NORMAL ||
                          type == Piece::USER_DEFINED ||
                          type == Piece::UNUSED;
      if (!(normal ? t->normal_ : t->reserved_).emplace(piece, i).second) {
        return bad("not a SentencePiece model: piece '" + std::string(piece) + "' is defined twice");
      }
      if (type == Piece::USER_DEFINED) {
        t->user_defined_.insert(piece);
        t->max_user_defined_ = std::max(t->max_user_defined_, piece.size());
      }
      if (type == Piece::UNKNOWN) {
        if (t->unk_id_ >= 0) return bad("not a SentencePiece model: two unknown pieces");
        t->unk_id_ = i;
      }
      if (type == Piece::BYTE) {
        if (!t->byte_fallback_) {
          return bad("not a SentencePiece model: byte piece " + std::string(piece) + " without byte_fallback");
        }
        int b = -1;
        if (piece.size() == 6 && piece.substr(0, 3) == "<0x" && piece[5] == '>') {
          b = static_cast<int>(std::strtol(std::string(piece.substr(3, 2)).c_str(), nullptr, 16));
          if (byte_piece(static_cast<unsigned char>(b)) != piece) b = -1;
        }
        if (b < 0) return bad("not a SentencePiece model: bad byte piece " + std::string(piece));
        byte_found[b] = true;
        t->byte_value_[i] = b;
      }
    }
    if (t->unk_id_ < 0) return bad("not a SentencePiece model: no unknown piece");
    if (t->byte_fallback_) {
      for (int b = 0; b < 256; ++b) {
        if (!byte_found[b]) return bad("not a SentencePiece model: byte_fallback without piece " + byte_piece(b));
        t->byte_id_[b] = t->piece_to_id(byte_piece(static_cast<unsigned char>(b)));
      }
    }

    // BOS and EOS: the piece tokenizer_config.json names, else config.json's id, else the model's
    // own <s> / </s> when they are control pieces.
    auto piece_id = [&](const std::optional<std::string>& text) -> std::optional<int32_t> {
      if (!text) return std::nullopt;
      if (auto it = t->reserved_.find(*text); it != t->reserved_.end()) return it->second;
      if (auto it = t->normal_.find(*text); it != t->normal_.end()) return it->second;
      return std::nullopt;
    };
    auto control_id = [&](const std::string& piece) -> std::optional<int32_t> {
      const int id = t->piece_to_id(piece);
      if (t->types_[id] == Piece::CONTROL) return id;
      return std::nullopt;
    };
    if (!c.bos_token_is_null) {
      t->bos_ = piece_id(c.bos_token);
      if (!t->bos_ && c.bos_token_id) t->bos_ = *c.bos_token_id;
      if (!t->bos_) t->bos_ = control_id(ts.bos_piece());
    }
    if (!c.eos_token_is_null) {
      t->eos_ = piece_id(c.eos_token);
      if (!t->eos_ && c.eos_token_id) t->eos_ = *c.eos_token_id;
      if (!t->eos_) t->eos_ = control_id(ts.eos_piece());
    }
    // LlamaTokenizer's defaults: BOS on, EOS off.
    t->add_bos_ = c.add_bos_token.value_or(true) && t->bos_.has_value();
    t->add_eos_ = c.add_eos_token.value_or(false) && t->eos_.has_value();
    return t;
  }

  Expected<std::vector<int32_t>> encode(std::string_view text, bool add_special) const override {
    if (auto bad = unicode::find_invalid_utf8(text)) {
      return make_error("text is not valid UTF-8 at byte offset " + std::to_string(*bad));
    }
    std::vector<int32_t> out;
    out.reserve(text.size() / 2 + 2);
    if (add_special && add_bos_) out.push_back(*bos_);
    const std::string normalized = normalize(text);
    std::vector<std::pair<std::string_view, int>> pieces;
    bpe(normalized, pieces);
    // SentencePieceProcessor::PopulateSentencePieceText: unknown pieces become their UTF-8 bytes
    // with byte fallback; without it, a run of unknown pieces is one <unk>.
    bool prev_unk = false;
    for (const auto& [w, id] : pieces) {
      const bool unk = types_[id] == Piece::UNKNOWN;
      if (types_[id] == Piece::CONTROL) {
        out.push_back(id);
      } else if (unk && byte_fallback_) {
        for (char b : w) out.push_back(byte_id_[static_cast<unsigned char>(b)]);
      } else if (!(unk && prev_unk)) {
        out.push_back(id);
      }
      prev_unk = unk;
    }
    if (add_special && add_eos_) out.push_back(*eos_);
    return out;
  }

  // SentencePieceProcessor::Decode: control pieces vanish, <unk> is the unknown surface, runs of
  // byte pieces are reassembled as UTF-8 (U+FFFD for each byte that is not), U+2581 is a space,
  // and the space the dummy prefix added at the start is dropped.
  std::string decode(const std::vector<int32_t>& ids) const override {
    std::string text, bytes;
    auto flush_bytes = [&] {
      std::string_view b = bytes;
      while (!b.empty()) {
        const size_t n = valid_char_len(b);
        if (n == 0) {
          text += kReplacementCharacter;
          b.remove_prefix(1);
        } else {
          text += b.substr(0, n);
          b.remove_prefix(n);
        }
      }
      bytes.clear();
    };
    bool is_bos_ws = true, bos_ws_seen = false;
    for (int32_t id : ids) {
      if (id < 0 || id >= static_cast<int32_t>(pieces_.size())) continue;
      const int type = types_[id];
      if (type == Piece::BYTE) {
        bytes.push_back(static_cast<char>(byte_value_[id]));
        continue;
      }
      flush_bytes();
      if (bos_ws_seen || !text.empty()) is_bos_ws = false;
      bos_ws_seen = false;
      if (type == Piece::CONTROL) continue;
      if (type == Piece::UNKNOWN) {
        text += unk_surface_;
        continue;
      }
      std::string_view piece = pieces_[id];
      if (is_bos_ws && (add_dummy_prefix_ || remove_extra_whitespaces_)) {
        if (piece.substr(0, kSpaceSymbol.size()) == kSpaceSymbol) {
          piece.remove_prefix(kSpaceSymbol.size());
          bos_ws_seen = !remove_extra_whitespaces_;  // with it, every leading space goes
        }
      }
      for (size_t pos; (pos = piece.find(kSpaceSymbol)) != std::string_view::npos;) {
        text += piece.substr(0, pos);
        text += ' ';
        piece.remove_prefix(pos + kSpaceSymbol.size());
      }
      text += piece;
    }
    flush_bytes();
    return text;
  }

  int64_t vocab_size() const override { return static_cast<int64_t>(pieces_.size()); }
  std::optional<int32_t> bos_id() const override { return bos_; }
  std::optional<int32_t> eos_id() const override { return eos_; }
  std::string_view kind() const override { return "sentencepiece"; }

 private:
  SentencePieceTokenizer() = default;

  // ModelInterface::PieceToId: reserved (control, unknown, byte) pieces, then the others, else unk.
  int piece_to_id(std::string_view piece) const {
    if (auto it = reserved_.find(piece); it != reserved_.end()) return it->second;
    if (auto it = normal_.find(piece); it != normal_.end()) return it->second;
    return unk_id_;
  }

  // PrefixMatcher::PrefixMatch over the user-defined pieces: the longest one s starts with, else
  // one character.
  size_t prefix_match(std::string_view s, bool& found) const {
    found = false;
    for (size_t n = std::min(max_user_defined_, s.size()); n > 0; --n) {
      if (user_defined_.count(s.substr(0, n))) {
        found = true;
        return n;
      }
    }
    return std::min(s.size(), one_char_len(static_cast<unsigned char>(s[0])));
  }

  // Normalizer::Normalize without a precompiled character map (text is valid UTF-8).
  std::string normalize(std::string_view input) const {
    std::string out;
    if (input.empty()) return out;
    auto next = [&](std::string_view s) {
      bool found;
      return s.substr(0, prefix_match(s, found));
    };
    if (remove_extra_whitespaces_) {
      while (!input.empty() && next(input) == " ") input.remove_prefix(1);
    }
    if (input.empty()) return out;
    out.reserve(input.size() * 3);
    auto add_ws = [&] {
      if (escape_whitespaces_) out += kSpaceSymbol;
      else out += ' ';
    };
    if (!treat_whitespace_as_suffix_ && add_dummy_prefix_) add_ws();
    bool is_prev_space = remove_extra_whitespaces_;
    while (!input.empty()) {
      const std::string_view p = next(input);
      std::string_view sp = p;
      while (is_prev_space && !sp.empty() && sp[0] == ' ') sp.remove_prefix(1);
      if (!sp.empty()) {
        for (char ch : sp) {
          if (escape_whitespaces_ && ch == ' ') out += kSpaceSymbol;
          else out += ch;
        }
        is_prev_space = sp.back() == ' ';
      }
      input.remove_prefix(p.size());
      if (!remove_extra_whitespaces_) is_prev_space = false;
    }
    if (remove_extra_whitespaces_) {
      const std::string_view space = escape_whitespaces_ ? kSpaceSymbol : std::string_view(" ");
      while (out.size() >= space.size() && std::string_view(out).substr(out.size() - space.size()) == space) {
        out.resize(out.size() - space.size());
      }
    }
    if (treat_whitespace_as_suffix_ && add_dummy_prefix_) add_ws();
    return out;
  }

  // bpe::Model::SampleEncode with no dropout: characters (user-defined pieces whole and frozen),
  // then repeatedly the adjacent pair whose concatenation is a piece with the highest score
  // (leftmost on ties); pieces of type UNUSED are split back into what was merged to make them.
  void bpe(std::string_view normalized, std::vector<std::pair<std::string_view, int>>& output) const {
    struct Symbol {
      int prev, next;
      bool freeze;
      std::string_view piece;
    };
    struct Pair {
      int left, right;
      float score;
      size_t size;
    };
    struct Lower {
      bool operator()(const Pair& a, const Pair& b) const {
        return a.score < b.score || (a.score == b.score && a.left > b.left);
      }
    };
    std::vector<Symbol> symbols;
    symbols.reserve(normalized.size());
    for (int index = 0; !normalized.empty(); ++index) {
      Symbol s;
      const size_t n = prefix_match(normalized, s.freeze);
      s.piece = normalized.substr(0, n);
      s.prev = index - 1;
      normalized.remove_prefix(n);
      s.next = normalized.empty() ? -1 : index + 1;
      symbols.push_back(s);
    }
    if (symbols.empty()) return;

    std::priority_queue<Pair, std::vector<Pair>, Lower> agenda;
    std::unordered_map<std::string_view, std::pair<std::string_view, std::string_view>> rev_merge;
    auto maybe_add = [&](int left, int right) {
      if (left == -1 || right == -1 || symbols[left].freeze || symbols[right].freeze) return;
      const std::string_view piece(symbols[left].piece.data(), symbols[left].piece.size() + symbols[right].piece.size());
      const auto it = normal_.find(piece);
      if (it == normal_.end()) return;
      agenda.push(Pair{left, right, scores_[it->second], piece.size()});
      if (types_[it->second] == Piece::UNUSED) {
        rev_merge[piece] = {symbols[left].piece, symbols[right].piece};
      }
    };
    for (size_t i = 1; i < symbols.size(); ++i) maybe_add(static_cast<int>(i) - 1, static_cast<int>(i));

    while (!agenda.empty()) {
      const Pair top = agenda.top();
      agenda.pop();
      Symbol& l = symbols[top.left];
      Symbol& r = symbols[top.right];
      if (l.piece.empty() || r.piece.empty() || l.piece.size() + r.piece.size() != top.size) continue;
      l.piece = std::string_view(l.piece.data(), l.piece.size() + r.piece.size());
      l.next = r.next;
      if (r.next >= 0) symbols[r.next].prev = top.left;
      r.piece = {};
      maybe_add(l.prev, top.left);
      maybe_add(top.left, l.next);
    }

    auto resegment = [&](auto& self, std::string_view w) -> void {
      const int id = piece_to_id(w);
      if (types_[id] == Piece::UNUSED) {
        if (const auto p = rev_merge.find(w); p != rev_merge.end()) {
          self(self, p->second.first);
          self(self, p->second.second);
          return;
        }
      }
      output.emplace_back(w, id);
    };
    for (int index = 0; index != -1; index = symbols[index].next) resegment(resegment, symbols[index].piece);
  }

  std::vector<std::string> pieces_;
  std::vector<float> scores_;
  std::vector<int> types_;
  std::vector<int> byte_value_;  // per piece: its byte for BYTE pieces, else -1
  std::unordered_map<std::string_view, int> normal_;    // NORMAL, USER_DEFINED, UNUSED pieces
  std::unordered_map<std::string_view, int> reserved_;  // CONTROL, UNKNOWN, BYTE pieces
  std::unordered_set<std::string_view> user_defined_;
  size_t max_user_defined_ = 0;
  int unk_id_ = -1;
  int byte_id_[256] = {};
  bool byte_fallback_ = false, treat_whitespace_as_suffix_ = false;
  bool add_dummy_prefix_ = true, remove_extra_whitespaces_ = true, escape_whitespaces_ = true;
  std::string unk_surface_;
  std::optional<int32_t> bos_, eos_;
  bool add_bos_ = false, add_eos_ = false;
};

}  // namespace

Expected<std::unique_ptr<Tokenizer>> load_sentencepiece_tokenizer(const std::string& path,
                                                                  const SpecialTokenConventions& conventions) {
  std::ifstream in(path, std::ios::binary);
  if (!in) return make_error(path + ": cannot read");
  std::ostringstream buf;
  buf << in.rdbuf();
  const std::string data = std::move(buf).str();
  spm::ModelProto model;
  if (!model.ParseFromString(data)) return make_error(path + ": not a SentencePiece model: cannot parse the protobuf");
  auto t = SentencePieceTokenizer::create(path, model, conventions);
  if (!t.ok()) return t.error();
  return std::unique_ptr<Tokenizer>(std::move(t).value());
}

}  // namespace fp4c::frontend
