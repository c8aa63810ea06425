// Recipes: named pipelines. Built-in ones (`fp4c recipes` lists them) and recipe files users keep in
// their repository:
//   {"name": "my-recipe", "description": "...", "scheme": "w4a4",
//    "pipeline": ["stats", "smoothquant{alpha=0.6}", "stats", "blockscale{rule=mse}", "pack"]}
// ("pipeline" may also be one string; "scheme" and "description" are optional).
#pragma once

#include <string>
#include <vector>

#include "base/expected.h"

namespace fp4c::pipeline {

struct Recipe {
  std::string name;
  std::string description;
  std::string pipeline;   // canonical pipeline text
  std::string scheme;     // "w4a16", "w4a4", or empty: the command's choice
  std::string source;     // "built-in" or the file it came from
};

const std::vector<Recipe>& builtin_recipes();

// A built-in recipe by name, or a recipe file (a path that exists, or that ends in .json). Errors name
// the file and what is wrong with it, or list the built-in names.
Expected<Recipe> resolve_recipe(const std::string& name_or_file);
Expected<Recipe> load_recipe_file(const std::string& path);

}  // namespace fp4c::pipeline
