// SentencePiece tokenizer.model (Llama 2 style), through Debian's libsentencepiece.
#include <sentencepiece_processor.h>

#include "frontend/tokenizer_internal.h"
#include "frontend/tokenizer_unicode.h"

namespace fp4c::frontend {

namespace {

class SentencePieceTokenizer final : public Tokenizer {
 public:
  SentencePieceTokenizer(std::unique_ptr<sentencepiece::SentencePieceProcessor> sp,
                         const SpecialTokenConventions& c)
      : sp_(std::move(sp)) {
    auto piece_id = [&](const std::optional<std::string>& text) -> std::optional<int32_t> {
      if (!text) return std::nullopt;
      const int id = sp_->PieceToId(*text);
      // PieceToId answers unk for an unknown piece; only accept the unk id when it is that piece.
      if (id == sp_->unk_id() && sp_->IdToPiece(id) != *text) return std::nullopt;
      return id;
    };
    if (!c.bos_token_is_null) {
      bos_ = piece_id(c.bos_token);
      if (!bos_ && c.bos_token_id) bos_ = *c.bos_token_id;
      if (!bos_ && sp_->bos_id() >= 0) bos_ = sp_->bos_id();
    }
    if (!c.eos_token_is_null) {
      eos_ = piece_id(c.eos_token);
      if (!eos_ && c.eos_token_id) eos_ = *c.eos_token_id;
      if (!eos_ && sp_->eos_id() >= 0) eos_ = sp_->eos_id();
    }
    // LlamaTokenizer's defaults: BOS on, EOS off.
    add_bos_ = c.add_bos_token.value_or(true) && bos_.has_value();
    add_eos_ = c.add_eos_token.value_or(false) && eos_.has_value();
  }

  Expected<std::vector<int32_t>> encode(std::string_view text, bool add_special) const override {
    if (auto bad = unicode::find_invalid_utf8(text)) {
      return make_error("text is not valid UTF-8 at byte offset " + std::to_string(*bad));
    }
    std::vector<int> ids;
    const auto status = sp_->Encode(text, &ids);
    if (!status.ok()) return make_error(std::string("sentencepiece: ") + status.ToString());
    std::vector<int32_t> out;
    out.reserve(ids.size() + 2);
    if (add_special && add_bos_) out.push_back(*bos_);
    out.insert(out.end(), ids.begin(), ids.end());
    if (add_special && add_eos_) out.push_back(*eos_);
    return out;
  }

  std::string decode(const std::vector<int32_t>& ids) const override {
    std::vector<int> v;
    v.reserve(ids.size());
    for (int32_t id : ids)
      if (id >= 0 && id < sp_->GetPieceSize()) v.push_back(id);
    std::string text;
    if (!sp_->Decode(v, &text).ok()) return {};
    return text;
  }

  int64_t vocab_size() const override { return sp_->GetPieceSize(); }
  std::optional<int32_t> bos_id() const override { return bos_; }
  std::optional<int32_t> eos_id() const override { return eos_; }
  std::string_view kind() const override { return "sentencepiece"; }

 private:
  std::unique_ptr<sentencepiece::SentencePieceProcessor> sp_;
  std::optional<int32_t> bos_, eos_;
  bool add_bos_ = false, add_eos_ = false;
};

}  // namespace

Expected<std::unique_ptr<Tokenizer>> load_sentencepiece_tokenizer(const std::string& path,
                                                                  const SpecialTokenConventions& conventions) {
  auto sp = std::make_unique<sentencepiece::SentencePieceProcessor>();
  const auto status = sp->Load(path);
  if (!status.ok()) return make_error(path + ": not a SentencePiece model: " + status.ToString());
  return std::unique_ptr<Tokenizer>(new SentencePieceTokenizer(std::move(sp), conventions));
}

}  // namespace fp4c::frontend
