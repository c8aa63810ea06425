#include "frontend/tokenizer.h"

#include <algorithm>
#include <filesystem>
#include <fstream>
#include <sstream>

#include <nlohmann/json.hpp>

#include "formats/json_input.h"
#include "frontend/tokenizer_internal.h"

namespace fp4c::frontend {

namespace {

namespace fs = std::filesystem;
using json = nlohmann::json;

// Parses `path` when it exists; nullopt when it does not.
Expected<std::optional<json>> read_json_if_present(const std::string& path) {
  std::error_code ec;
  if (!fs::exists(path, ec)) return std::optional<json>();
  FP4C_ASSIGN(json j, json_input::read_file(path));
  if (!j.is_object()) return make_error(path + ": expected a JSON object at the top level");
  return std::optional<json>(std::move(j));
}

// A token given as text ("<s>") or as an AddedToken object ({"content": "<s>", ...}).
Status read_token_text(const json& cfg, const char* key, const std::string& path,
                       std::optional<std::string>& text, bool& is_null) {
  auto it = cfg.find(key);
  if (it == cfg.end()) return {};
  if (it->is_null()) { is_null = true; return {}; }
  if (it->is_string()) { text = it->get<std::string>(); return {}; }
  if (it->is_object()) {
    auto c = it->find("content");
    if (c != it->end() && c->is_string()) { text = c->get<std::string>(); return {}; }
  }
  return make_error(path + ": key '" + key + "' must be a string, null or an object with a string 'content'");
}

Status read_flag(const json& cfg, const char* key, const std::string& path, std::optional<bool>& out) {
  auto it = cfg.find(key);
  if (it == cfg.end() || it->is_null()) return {};
  if (!it->is_boolean()) return make_error(path + ": key '" + key + "' must be true or false");
  out = it->get<bool>();
  return {};
}

Status read_token_id(const json& cfg, const char* key, const std::string& path, std::optional<int32_t>& out) {
  auto it = cfg.find(key);
  if (it == cfg.end() || it->is_null()) return {};
  const json* v = &*it;
  if (v->is_array()) {  // Llama 3.1 lists several EOS ids; the first is the one it ends text with
    if (v->empty()) return {};
    v = &(*v)[0];
  }
  if (!v->is_number_integer()) return make_error(path + ": key '" + key + "' must be an integer or a list of integers");
  out = v->get<int32_t>();
  return {};
}

}  // namespace

Expected<SpecialTokenConventions> read_special_token_conventions(const std::string& dir) {
  SpecialTokenConventions c;
  const std::string tc_path = (fs::path(dir) / "tokenizer_config.json").string();
  FP4C_ASSIGN(auto tc, read_json_if_present(tc_path));
  if (tc) {
    FP4C_TRY(read_flag(*tc, "add_bos_token", tc_path, c.add_bos_token));
    FP4C_TRY(read_flag(*tc, "add_eos_token", tc_path, c.add_eos_token));
    FP4C_TRY(read_token_text(*tc, "bos_token", tc_path, c.bos_token, c.bos_token_is_null));
    FP4C_TRY(read_token_text(*tc, "eos_token", tc_path, c.eos_token, c.eos_token_is_null));
  }
  const std::string cfg_path = (fs::path(dir) / "config.json").string();
  FP4C_ASSIGN(auto cfg, read_json_if_present(cfg_path));
  if (cfg) {
    FP4C_TRY(read_token_id(*cfg, "bos_token_id", cfg_path, c.bos_token_id));
    FP4C_TRY(read_token_id(*cfg, "eos_token_id", cfg_path, c.eos_token_id));
  }
  return c;
}

void apply_bos_eos_conventions(const SpecialTokenConventions& c, std::optional<int32_t> bos,
                               std::optional<int32_t> eos, std::vector<int32_t>& prefix,
                               std::vector<int32_t>& suffix) {
  if (bos && c.add_bos_token) {
    const bool has = !prefix.empty() && prefix.front() == *bos;
    if (*c.add_bos_token && !has) prefix.insert(prefix.begin(), *bos);
    if (!*c.add_bos_token) prefix.erase(std::remove(prefix.begin(), prefix.end(), *bos), prefix.end());
  }
  if (eos && c.add_eos_token) {
    const bool has = !suffix.empty() && suffix.back() == *eos;
    if (*c.add_eos_token && !has) suffix.push_back(*eos);
    if (!*c.add_eos_token) suffix.erase(std::remove(suffix.begin(), suffix.end(), *eos), suffix.end());
  }
}

Expected<std::unique_ptr<Tokenizer>> load_tokenizer(const std::string& dir) {
  std::error_code ec;
  const std::string json_path = (fs::path(dir) / "tokenizer.json").string();
  const std::string model_path = (fs::path(dir) / "tokenizer.model").string();
  const bool has_json = fs::is_regular_file(json_path, ec);
  const bool has_model = !has_json && fs::is_regular_file(model_path, ec);
  if (!has_json && !has_model) {
    // A GGUF source whose tokenizer.ggml.* metadata fp4c could not read (frontend/gguf_checkpoint.cpp).
    const fs::path why = fs::path(dir) / "fp4c-tokenizer-error.txt";
    if (fs::is_regular_file(why, ec)) {
      std::ifstream in(why, std::ios::binary);
      std::stringstream text;
      text << in.rdbuf();
      return make_error(text.str());
    }
    return make_error(dir + ": no tokenizer.json or tokenizer.model; text input needs a tokenizer "
                            "(give `input_ids` records instead)");
  }
  FP4C_ASSIGN(auto conventions, read_special_token_conventions(dir));
  if (has_json) return load_hf_tokenizer(json_path, conventions);
  return load_sentencepiece_tokenizer(model_path, conventions);
}

}  // namespace fp4c::frontend
