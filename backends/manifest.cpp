#include "backends/manifest.h"

#include "base/text.h"

#include <google/protobuf/util/json_util.h>

#include <algorithm>
#include <ctime>
#include <fstream>
#include <map>
#include <sstream>

#include "formats/json_input.h"

namespace fp4c::backends {

manifest::Hash to_proto(const hash::Digest& d) {
  manifest::Hash h;
  h.set_algorithm("xxh3-128");
  h.set_hex(d.hex());
  return h;
}

namespace {

uint64_t numel(const std::vector<int64_t>& shape) {
  uint64_t n = 1;
  for (int64_t s : shape) n *= uint64_t(s);
  return n;
}

void add_file(google::protobuf::RepeatedPtrField<manifest::FileRecord>* out, const WrittenFile& f) {
  auto* r = out->Add();
  r->set_path(f.name);
  r->set_bytes(f.bytes);
  *r->mutable_hash() = to_proto(f.hash);
}

void to_proto(const ir::ChannelOutliers& c, manifest::ChannelOutliers* out) {
  out->set_channels(c.channels);
  out->set_max(c.max);
  out->set_median(c.median);
  out->set_max_over_median(c.max_over_median);
  out->set_kurtosis(c.kurtosis);
  out->set_above_k(c.above_k);
  for (const auto& [channel, value] : c.top) {
    out->add_top_channels(channel);
    out->add_top_values(value);
  }
}

// An annotation slot of `id`, or null where the pass did not run (the vector is empty or short).
template <typename T>
const T* slot(const std::vector<std::optional<T>>& v, ir::TensorId id) {
  return id < v.size() && v[id] ? &*v[id] : nullptr;
}


}  // namespace

manifest::Manifest build_manifest(const ir::Model& model, const ManifestInputs& in) {
  manifest::Manifest m;
  m.set_tool("fp4c");
  m.set_tool_version(in.tool_version);
  m.set_command_line(in.command_line);
  *m.mutable_options() = in.options;
  m.set_architecture(model.config.architecture);
  {
    const ir::ModelConfig& c = model.config;
    auto* r = m.mutable_config();
    bool q_k_norms = false;
    for (const ir::TensorInfo& t : model.tensors) q_k_norms |= t.role == ir::Role::QNorm;
    r->set_hidden_size(c.hidden_size);
    r->set_intermediate_size(c.intermediate_size);
    r->set_num_hidden_layers(c.num_hidden_layers);
    r->set_num_attention_heads(c.num_attention_heads);
    r->set_num_key_value_heads(c.num_key_value_heads);
    r->set_head_dim(c.head_dim);
    r->set_vocab_size(c.vocab_size);
    r->set_max_position_embeddings(c.max_position_embeddings);
    r->set_rms_norm_eps(c.rms_norm_eps);
    r->set_rope_theta(c.rope_theta);
    r->set_rope_theta_from(c.rope_source.empty() ? "default" : c.rope_source);
    r->set_rope_type(c.rope_scaling.type.empty() ? "default" : c.rope_scaling.type);
    if (!c.rope_scaling.type.empty()) {
      r->set_rope_factor(c.rope_scaling.factor);
      r->set_rope_low_freq_factor(c.rope_scaling.low_freq_factor);
      r->set_rope_high_freq_factor(c.rope_scaling.high_freq_factor);
      r->set_rope_original_max_position_embeddings(c.rope_scaling.original_max_position_embeddings);
      if (c.rope_scaling.type == "yarn") {
        r->set_rope_beta_fast(c.rope_scaling.beta_fast);
        r->set_rope_beta_slow(c.rope_scaling.beta_slow);
        r->set_rope_truncate(c.rope_scaling.truncate);
      }
      if (c.rope_scaling.type == "yarn" || c.rope_scaling.type == "longrope")
        r->set_rope_attention_factor(c.rope_scaling.attention_factor);
      for (double f : c.rope_scaling.short_factor) r->add_rope_short_factor(f);
      for (double f : c.rope_scaling.long_factor) r->add_rope_long_factor(f);
    }
    r->set_q_k_norms(q_k_norms);
    r->set_mlp_bias(c.mlp_bias);
    r->set_sliding_window(c.sliding_window.value_or(0));
    for (size_t i = 0; i < c.sliding_layers.size(); ++i)
      if (c.sliding_layers[i]) r->add_sliding_layers(int32_t(i));
    r->set_attention_bias(c.attention_bias);
    r->set_tie_word_embeddings(c.tie_word_embeddings);
    r->set_hidden_act(c.hidden_act);
    r->set_norm_plus_one(c.norm_plus_one);
    r->set_embedding_scale(c.embedding_scale);
    r->set_query_pre_attn_scalar(c.query_pre_attn_scalar);
    r->set_sliding_rope_theta(c.sliding_rope_theta.value_or(0));
    if (c.rope_dim() != c.head_dim) {
      r->set_rotary_dim(c.rope_dim());
      r->set_partial_rotary_factor(c.partial_rotary_factor);
    }
    if (c.final_logit_softcapping > 0) r->set_final_logit_softcapping(c.final_logit_softcapping);
  }
  m.set_model_dir(in.model_dir);
  if (!in.source_format.empty() && in.source_format != "safetensors") {
    auto* s = m.mutable_source();
    s->set_format(in.source_format);
    s->set_file(in.source_file);
    for (const auto& t : in.dequantized_types) s->add_dequantized_types(t);
    s->set_kept_tensors_written_as(in.kept_tensors_written_as);
  }
  m.set_created_utc(utc_timestamp());
  for (const auto& f : in.inputs) add_file(m.mutable_inputs(), f);
  for (const auto& f : in.outputs) add_file(m.mutable_outputs(), f);

  std::map<std::string, const WrittenTensor*> written;
  for (const auto& t : in.output_tensors) {
    written[t.name] = &t;
    auto* o = m.add_output_tensors();
    o->set_name(t.name);
    o->set_dtype(std::string(dtype_name(t.dtype)));
    for (int64_t s : t.shape) o->add_shape(s);
    o->set_file(t.file);
    *o->mutable_hash() = to_proto(t.hash);
  }
  std::vector<std::vector<std::string>> outputs(model.tensors.size());
  for (const auto& [id, name] : in.outputs_of_source) outputs[id].push_back(name);

  uint64_t source_bytes = 0, bf16_bytes = 0, artifact_bytes = 0, all_params = 0;
  uint64_t linear_params = 0, linear_artifact_bytes = 0, quantized_params = 0;
  for (ir::TensorId id = 0; id < model.tensors.size(); ++id) {
    const ir::TensorInfo& t = model.tensors[id];
    const ir::Decision& d = model.annotations.decision[id];
    auto* r = m.add_tensors();
    r->set_name(t.name);
    r->set_module(t.module);
    r->set_role(std::string(ir::role_name(t.role)));
    if (t.layer) r->set_layer(*t.layer);
    for (int64_t s : t.shape) r->add_shape(s);
    r->set_source_dtype(std::string(dtype_name(t.dtype)));
    r->set_format(std::string(ir::format_name(d.format)));
    if (d.skip) {
      r->mutable_skip()->set_kind(std::string(ir::skip_kind_name(d.skip->kind)));
      r->mutable_skip()->set_detail(d.skip->detail);
    }
    if (const ir::FusedGroup* g = model.group_of(id)) r->set_fused_group(model.group_label(*g));
    if (t.stored_in) {
      r->set_stored_in(t.stored_in->tensor);
      r->set_stored_row(t.stored_in->row_begin);
    }
    if (id < model.annotations.packed.size() && model.annotations.packed[id]) {
      const ir::PackedWeight& p = *model.annotations.packed[id];
      if (d.format == ir::Format::NVFP4) r->set_weight_global_scale(p.weight_global_scale);  // MXFP4 has none
      r->set_weight_amax(p.weight_amax);
      if (p.input_global_scale) r->set_input_global_scale(*p.input_global_scale);
      r->mutable_weight_error()->set_relative_mse(p.error.relative_mse);
      r->mutable_weight_error()->set_sqnr_db(p.error.sqnr_db);
      r->mutable_weight_error()->set_max_abs_error(p.error.max_abs_error);
    }
    if (const ir::OutlierStats* o = slot(model.annotations.outliers, id)) {
      auto* ro = r->mutable_outliers();
      ro->set_k(o->k);
      to_proto(o->weight, ro->mutable_weight());
      if (o->activation) to_proto(*o->activation, ro->mutable_activation());
    }
    if (const ir::Sensitivity* s = slot(model.annotations.sensitivity, id)) {
      auto* rs = r->mutable_sensitivity();
      rs->set_output_error(s->output_error);
      if (s->kl) rs->set_kl(*s->kl);
      rs->set_rank(s->rank);
    }
    if (const ir::QuantizerChoice* c = slot(model.annotations.choice, id)) {
      auto* rq = r->mutable_quantizer();
      rq->set_chosen(c->chosen.label());
      for (const auto& [candidate, e] : c->candidates) {
        auto* cand = rq->add_candidates();
        cand->set_name(candidate.label());
        cand->set_output_error(e);
      }
      if (c->layer_error) {
        rq->set_layer_error_unsmoothed(c->layer_error->first);
        rq->set_layer_error_smoothed(c->layer_error->second);
      }
      for (const auto& [alpha, e] : c->layer_error_by_alpha) {
        auto* a = rq->add_layer_error_by_alpha();
        a->set_alpha(alpha);
        a->set_layer_error(e);
      }
    }
    r->set_smoothed(model.transformed(id));
    if (t.expert) r->set_expert(*t.expert);
    if (id < model.annotations.routed_tokens.size() && model.annotations.routed_tokens[id]) {
      r->set_routed_tokens(*model.annotations.routed_tokens[id]);
      r->set_expert_statistics(*model.annotations.routed_tokens[id] >= ir::kMinExpertTokens ? "expert" : "layer");
    }
    const uint64_t n = numel(t.shape);
    const uint64_t src = n * dtype_size(t.dtype);
    uint64_t out = 0;
    for (const auto& name : outputs[id]) {
      r->add_outputs(name);
      auto it = written.find(name);
      if (it != written.end()) out += numel(it->second->shape) * dtype_size(it->second->dtype);
    }
    r->set_source_bytes(src);
    r->set_output_bytes(out);
    source_bytes += src;
    bf16_bytes += 2 * n;
    artifact_bytes += out;
    all_params += n;
    if (t.kind == ir::ParamKind::Weight && ir::is_linear(t.role) && t.role != ir::Role::LmHead) {
      linear_params += n;
      linear_artifact_bytes += out;
      if (ir::is_fp4(d.format)) quantized_params += n;
    }
  }

  auto name_of = [&](ir::TensorId id) { return id < model.tensors.size() ? model.tensors[id].name : std::string(); };
  for (const ir::Smoothing& sm : model.annotations.smoothing) {
    auto* rec = m.add_smoothing();
    rec->set_layer(sm.layer);
    rec->set_mapping(std::string(ir::mapping_name(sm.mapping)));
    rec->set_smooth(name_of(sm.smooth));
    for (ir::TensorId b : sm.balanced) rec->add_balanced(name_of(b));
    rec->set_alpha(sm.alpha);
    rec->set_factor_min(sm.factor_min);
    rec->set_factor_median(sm.factor_median);
    rec->set_factor_max(sm.factor_max);
  }

  auto* mem = m.mutable_memory();
  mem->set_source_bytes(source_bytes);
  mem->set_bf16_bytes(bf16_bytes);
  mem->set_artifact_bytes(artifact_bytes);
  mem->set_linear_params(linear_params);
  mem->set_quantized_params(quantized_params);
  mem->set_effective_bits_per_weight(linear_params ? 8.0 * double(linear_artifact_bytes) / double(linear_params) : 0);
  mem->set_artifact_bits_per_param(all_params ? 8.0 * double(artifact_bytes) / double(all_params) : 0);

  auto* cost = m.mutable_build_cost();
  double wall = 0, cpu = 0;
  uint64_t peak = 0;
  for (const auto& s : in.stages) {
    auto* c = cost->add_stages();
    c->set_stage(s.stage);
    c->set_wall_seconds(s.wall_seconds);
    c->set_cpu_seconds(s.cpu_seconds);
    c->set_peak_rss_bytes(s.peak_rss_bytes);
    c->set_bytes_read(s.bytes_read);
    c->set_bytes_written(s.bytes_written);
    wall += s.wall_seconds;
    cpu += s.cpu_seconds;
    peak = std::max(peak, s.peak_rss_bytes);
  }
  cost->set_wall_seconds(wall);
  cost->set_cpu_seconds(cpu);
  cost->set_peak_rss_bytes(peak);
  cost->set_threads(in.threads);
  cost->set_price_per_hour(in.price_per_hour);
  cost->set_cost(wall / 3600.0 * in.price_per_hour);
  return m;
}

Status write_manifest(const manifest::Manifest& m, const std::string& path) {
  google::protobuf::util::JsonPrintOptions opts;
  opts.add_whitespace = true;
  opts.always_print_primitive_fields = true;
  std::string json;
  auto st = google::protobuf::util::MessageToJsonString(m, &json, opts);
  if (!st.ok()) return make_error(path + ": cannot serialize the manifest: " + st.ToString());
  std::ofstream out(path, std::ios::binary);
  out << json;
  if (!out) return make_error(path + ": write failed");
  return {};
}

Expected<manifest::Manifest> read_manifest(const std::string& path) {
  if (!std::ifstream(path, std::ios::binary)) return make_error(path + ": cannot open the manifest");
  // fp4c's own output: a 671B MoE's manifest holds ~50k tensor records, so more room than for inputs.
  FP4C_ASSIGN(const std::string text, json_input::read_text(path, std::max<uint64_t>(json_input::max_file_bytes(),
                                                                                      uint64_t(512) << 20)));
  // Bounds nesting and numbers before protobuf's parser sees the text.
  if (auto f = json_input::prescan(text))
    return make_error(path + ": not a valid fp4c manifest: malformed JSON" +
                      (f->offset ? " at byte " + std::to_string(*f->offset) : std::string()) + ": " + f->reason);
  manifest::Manifest m;
  google::protobuf::util::JsonParseOptions opts;
  opts.ignore_unknown_fields = true;
  auto st = google::protobuf::util::JsonStringToMessage(text, &m, opts);
  if (!st.ok()) return make_error(path + ": not a valid fp4c manifest: " + st.ToString());
  return m;
}

}  // namespace fp4c::backends
