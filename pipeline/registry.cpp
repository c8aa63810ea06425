// The pass list of pipeline/passes.def as the library uses it: the specs the parser reads, the
// definitions the manager runs, and the checks made before any weight is read.
#include <algorithm>

#include "pipeline/pass.h"

namespace fp4c::pipeline {

#define FP4C_PASS(Class) const PassDefinition& Class##_definition();
#include "pipeline/passes.def"
#undef FP4C_PASS

const std::vector<const PassDefinition*>& pass_definitions() {
  static const std::vector<const PassDefinition*> list{
#define FP4C_PASS(Class) &Class##_definition(),
#include "pipeline/passes.def"
#undef FP4C_PASS
  };
  return list;
}

const PassDefinition* find_definition(std::string_view name) {
  for (const PassDefinition* d : pass_definitions())
    if (d->spec.name == name) return d;
  return nullptr;
}

const std::vector<PassSpec>& pass_registry() {
  static const std::vector<PassSpec> specs = [] {
    std::vector<PassSpec> v;
    for (const PassDefinition* d : pass_definitions()) v.push_back(d->spec);
    return v;
  }();
  return specs;
}

Status need_second_moments(const CheckState& s, const std::string& what) {
  if (!s.stats_valid || !s.second_moments)
    return make_error(what + " needs the input second moments: 'stats{second_moments=true}' before it (and after "
                             "any 'smoothquant')");
  return {};
}

Status refuse_for_mxfp4(const CheckState& s, const std::string& pass) {
  if (passes::is_mxfp4(s.scheme))
    return make_error("--scheme " + std::string(passes::scheme_name(s.scheme)) + ": pass '" + pass +
                      "' is NVFP4-only (it measures NVFP4 error)");
  return {};
}

Status check_pipeline(const Pipeline& pipeline, passes::Scheme scheme, bool have_calibration) {
  const auto& ps = pipeline.passes;
  if (ps.empty() || ps.back().name != "pack") return make_error("the pipeline must end in 'pack' to write an artifact");
  for (const PassDefinition* d : pass_definitions()) {
    if (!d->spec.at_most_once) continue;
    if (std::count_if(ps.begin(), ps.end(), [&](const auto& p) { return p.name == d->spec.name; }) > 1)
      return make_error(d->spec.name == "pack" ? "the pipeline runs 'pack' once, at the end"
                                               : "the pipeline runs '" + d->spec.name + "' at most once");
  }
  CheckState state;
  state.scheme = scheme;
  state.have_calibration = have_calibration;
  for (const auto& p : ps) {
    const PassDefinition* d = find_definition(p.name);
    if (!d) return make_error("pass '" + p.name + "' has no definition");
    if (d->check) FP4C_TRY(d->check(p, state));
    if (std::find(d->spec.invalidates.begin(), d->spec.invalidates.end(), "stats") != d->spec.invalidates.end())
      state.stats_valid = false;
  }
  return {};
}

}  // namespace fp4c::pipeline
