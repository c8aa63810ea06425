#include "pipeline/recipes.h"

#include <nlohmann/json.hpp>

#include <filesystem>
#include <fstream>
#include <sstream>

#include "formats/json_input.h"
#include "pipeline/pipeline_text.h"
#include "passes/weight_plan.h"

namespace fp4c::pipeline {
namespace {

Recipe builtin(std::string name, std::string description, std::string text) {
  auto p = parse_pipeline(text);
  return {std::move(name), std::move(description), p ? p->canonical() : text, "", "built-in"};
}

}  // namespace

const std::vector<Recipe>& builtin_recipes() {
  static const std::vector<Recipe> recipes{
      builtin("plain",
              "statistics, then max block scales (NVFP4.md §3): what llm-compressor's and ModelOpt's default NVFP4 "
              "recipes compute. Build cost (SmolLM2-135M, W4A4, 48 x 256 calibration tokens, statistics included; "
              "user + sys CPU seconds on 2 cores, docs/DECISIONS.md): 26 s",
              "stats,blockscale{rule=max},pack"),
      builtin("smoothquant",
              "SmoothQuant as llm-compressor does it by default (alpha 0.5, norm -> q,k,v and norm -> gate,up), "
              "statistics measured again on the smoothed model, then max block scales. Build cost (as plain's): 51 s",
              "stats,smoothquant,stats,blockscale{rule=max},pack"),
      builtin("best",
              "the most accurate single-rule all-NVFP4 W4A4 recipe measured (figures in docs/DECISIONS.md; 'auto' "
              "searches per Linear at a higher build cost): llm-compressor's default SmoothQuant, statistics "
              "measured again, then block scales chosen per block among FP8 candidates for the least squared "
              "error weighted by each input channel's mean square. Build cost (as plain's): 58 s",
              "stats,smoothquant,stats,blockscale{rule=weighted},pack"),
      builtin("auto",
              "per Linear (fused groups together) the quantizer with the least output error on held-out calibration "
              "sequences among max, mse, weighted, 4over6, localhessian, gptq and gptq+localhessian, each norm's "
              "site smoothed (SmoothQuant) where the layer's output errs less, under W4A4 at the best of alpha "
              "0.3, 0.5, 0.7 (alpha=by-scheme): SmolLM2-135M W4A4 held-out recovery 0.892 (signround 0.891), "
              "evaluation set 0.866 (all 64 records 0.846), KL mean 0.178 and top-1 0.759 closer to the reference "
              "than every peer's (docs/SMOLLM2.md, docs/DECISIONS.md). Build "
              "cost (as plain's): 188 s W4A4 (133 s with one alpha; 218 s on 64 x 256 tokens)",
              "stats{second_moments=true},auto,blockscale,pack"),
      builtin("auto-gptaq",
              "'auto' with two more candidates, GPTAQ (GPTQv2: GPTQ against the unquantized model's output from "
              "the quantized model's input) with max and local-Hessian group scales (SmolLM2-135M held-out W4A4 "
              "recovery 0.880 against auto's 0.900, the README's evaluation split 0.845 against 0.866; stories260K 0.916 "
              "against 0.908; 'signround' measures higher on SmolLM2, docs/DECISIONS.md). Build cost "
              "(as plain's): 206 s W4A4 with one alpha; with auto's three 325 s on 64 x 256 tokens (the calibration "
              "set also runs through the layers as quantized and as they are, plus GPTAQ's cross moments, correction "
              "and column loop)",
              "stats{second_moments=true},auto{gptaq=true},blockscale,pack"),
      builtin("signround",
              "llm-compressor's default SmoothQuant, statistics again, then block-output reconstruction "
              "(SignRound / AutoRound): per decoder layer 20 signed-gradient steps over 4 calibration sequences "
              "tune each weight's rounding and each block's scale against the unquantized layer's output, W4A4 "
              "activations fake-quantized as served; the highest all-NVFP4 W4A4 recovery measured on SmolLM2-135M's "
              "evaluation set (0.894 against auto's 0.866 and auto-round's 0.880; all 64 records 0.889, auto-round "
              "0.905; held-out split 0.891 against auto's 0.892), with a larger KL mean than auto's (0.212 against "
              "0.178; docs/SMOLLM2.md, docs/DECISIONS.md). Build cost: per layer 20 forward+backward steps over 4 sequences, 20 forwards "
              "of 4 sequences and 3 forwards of the calibration set; SmolLM2-135M with 48 x 256 calibration "
              "tokens: 221 CPU-seconds in all (the reconstruction 182, about 6 a layer); with 64 x 256: 106 s wall, "
              "198 CPU-seconds on 2 quiet cores. Dense Llama/Qwen2/Mistral-style layers only, others refused by name",
              "stats,smoothquant,stats,signround{iters=20,batch=4},blockscale,pack"),
      builtin("auto-5pct",
              "'auto' with up to 5% of the Linear parameters kept BF16 by the sensitivity pass. Build cost (as "
              "plain's, 64 x 256 tokens): 227 s W4A4",
              "stats{second_moments=true},sensitivity{budget=5%},auto,blockscale,pack"),
      builtin("sensitive",
              "'best' plus a 2% BF16 budget: the Linear groups whose W4A4 output error is largest stay BF16. Build "
              "cost (as plain's): 76 s",
              "stats,smoothquant,stats,sensitivity{budget=2%},blockscale{rule=weighted},pack"),
  };
  return recipes;
}

Expected<Recipe> load_recipe_file(const std::string& path) {
  FP4C_ASSIGN(const std::string text_in, json_input::read_text(path));
  nlohmann::json j;
  if (auto f = json_input::parse_into(text_in, j))
    return make_error(path + ": not valid JSON" + (f->offset ? " at byte " + std::to_string(*f->offset) : std::string()) +
                      ": " + f->reason);
  if (!j.is_object()) return make_error(path + ": a recipe file holds a JSON object");
  for (const auto& [key, value] : j.items())
    if (key != "name" && key != "description" && key != "pipeline" && key != "scheme")
      return make_error(path + ": unknown key '" + key + "' (valid: name, description, pipeline, scheme)");
  Recipe r;
  r.source = path;
  r.name = std::filesystem::path(path).stem().string();
  if (j.contains("name")) {
    if (!j["name"].is_string() || j["name"].get<std::string>().empty())
      return make_error(path + ": 'name' must be a non-empty string");
    r.name = j["name"].get<std::string>();
  }
  if (j.contains("description")) {
    if (!j["description"].is_string()) return make_error(path + ": 'description' must be a string");
    r.description = j["description"].get<std::string>();
  }
  if (j.contains("scheme")) {
    if (!j["scheme"].is_string() || !passes::parse_scheme(j["scheme"].get<std::string>()))
      return make_error(path + ": 'scheme' must be \"w4a16\", \"w4a4\", \"mxfp4a16\" or \"mxfp4\"");
    r.scheme = j["scheme"].get<std::string>();
  }
  if (!j.contains("pipeline")) return make_error(path + ": the recipe has no 'pipeline'");
  std::string text;
  const auto& p = j["pipeline"];
  if (p.is_string()) {
    text = p.get<std::string>();
  } else if (p.is_array()) {
    for (const auto& step : p) {
      if (!step.is_string()) return make_error(path + ": 'pipeline' entries must be strings such as \"stats\"");
      text += (text.empty() ? "" : ",") + step.get<std::string>();
    }
  } else {
    return make_error(path + ": 'pipeline' must be a string or an array of strings");
  }
  auto parsed = parse_pipeline(text);
  if (!parsed) return make_error(path + ": pipeline: " + parsed.error().message);
  r.pipeline = parsed->canonical();
  return r;
}

Expected<Recipe> resolve_recipe(const std::string& name_or_file) {
  for (const auto& r : builtin_recipes())
    if (r.name == name_or_file) return r;
  std::error_code ec;
  if (std::filesystem::is_regular_file(name_or_file, ec) || name_or_file.ends_with(".json"))
    return load_recipe_file(name_or_file);
  std::string names;
  for (const auto& r : builtin_recipes()) names += (names.empty() ? "" : ", ") + r.name;
  return make_error("unknown recipe '" + name_or_file + "' (built-in: " + names + "; or a recipe file path)");
}

}  // namespace fp4c::pipeline
