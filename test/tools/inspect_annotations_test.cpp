// The pipeline's annotations in the manifest and in `fp4c inspect`: build_manifest copies outliers,
// sensitivity, smoothed and smoothing records from the IR (absent where a pass did not run); inspect shows
// them (--outliers table sorted by activation max/median, a sensitivity column, a smoothing section, JSON).
#include <gtest/gtest.h>
#include <nlohmann/json.hpp>

#include <cmath>
#include <limits>
#include <random>

#include "backends/manifest.h"
#include "test/support/tiny_checkpoint.h"

namespace fp4c::testing {
namespace {

ir::Model small_model() {
  ir::Model model;
  auto add = [&](std::string module, ir::Role role, std::vector<int64_t> shape, std::optional<int> layer) {
    return model.add({module + ".weight", module, DType::BF16, std::move(shape), role, ir::ParamKind::Weight, layer});
  };
  add("model.layers.0.input_layernorm", ir::Role::Norm, {32}, 0);                // 0
  add("model.layers.0.self_attn.q_proj", ir::Role::Q, {32, 32}, 0);             // 1
  add("model.layers.0.self_attn.k_proj", ir::Role::K, {16, 32}, 0);             // 2
  add("model.layers.0.self_attn.o_proj", ir::Role::O, {32, 32}, 0);             // 3
  add("lm_head", ir::Role::LmHead, {64, 32}, std::nullopt);                     // 4
  model.annotations.decision.assign(model.tensors.size(), ir::Decision{});
  model.annotations.decision[0] = {ir::Format::BF16, ir::SkipReason{ir::SkipKind::NotLinear, "a norm"}, {}};
  model.annotations.decision[4] = {ir::Format::BF16, ir::SkipReason{ir::SkipKind::LmHead, "lm_head"}, {}};
  return model;
}

ir::ChannelOutliers random_channels(std::mt19937_64& rng, int64_t channels) {
  std::uniform_real_distribution<float> u(0.1f, 2.0f);
  ir::ChannelOutliers c;
  c.channels = channels;
  c.median = u(rng);
  c.max = c.median * 20;
  c.max_over_median = double(c.max) / double(c.median);
  c.kurtosis = 3 + u(rng);
  c.above_k = int64_t(rng() % 5);
  for (int i = 0; i < 3; ++i) c.top.emplace_back(int64_t(rng() % uint64_t(channels)), c.max / float(i + 1));
  return c;
}

void expect_equal(const manifest::ChannelOutliers& p, const ir::ChannelOutliers& c) {
  EXPECT_EQ(p.channels(), c.channels);
  EXPECT_EQ(p.max(), c.max);
  EXPECT_EQ(p.median(), c.median);
  EXPECT_EQ(p.max_over_median(), c.max_over_median);
  EXPECT_EQ(p.kurtosis(), c.kurtosis);
  EXPECT_EQ(p.above_k(), c.above_k);
  ASSERT_EQ(p.top_channels_size(), int(c.top.size()));
  ASSERT_EQ(p.top_values_size(), int(c.top.size()));
  for (size_t i = 0; i < c.top.size(); ++i) {
    EXPECT_EQ(p.top_channels(int(i)), c.top[i].first);
    EXPECT_EQ(p.top_values(int(i)), c.top[i].second);
  }
}

TEST(ManifestAnnotations, BuildManifestCopiesOutliersSensitivityAndSmoothing) {
  const uint64_t seed = std::random_device{}();
  SCOPED_TRACE("seed " + std::to_string(seed));
  std::mt19937_64 rng(seed);

  // No pass ran: the annotation vectors are empty; nothing is recorded and nothing breaks.
  {
    const ir::Model model = small_model();
    const auto m = backends::build_manifest(model, {});
    ASSERT_EQ(m.tensors_size(), 5);
    for (const auto& r : m.tensors()) {
      EXPECT_FALSE(r.has_outliers()) << r.name();
      EXPECT_FALSE(r.has_sensitivity()) << r.name();
      EXPECT_FALSE(r.smoothed()) << r.name();
    }
    EXPECT_EQ(m.smoothing_size(), 0);
  }

  ir::Model model = small_model();
  auto& a = model.annotations;
  // Shorter than the tensors (as if built before lm_head was added): the missing slots are absent.
  a.outliers.resize(4);
  a.outliers[1] = ir::OutlierStats{8.0, random_channels(rng, 32), random_channels(rng, 32)};
  a.outliers[3] = ir::OutlierStats{8.0, random_channels(rng, 32), std::nullopt};
  a.sensitivity.resize(5);
  const double e1 = std::uniform_real_distribution<double>(1e-4, 1e-2)(rng);
  a.sensitivity[1] = ir::Sensitivity{e1, std::nullopt, 2};
  a.sensitivity[3] = ir::Sensitivity{e1 * 3, 0.125, 1};
  a.channel_scale.assign(5, {});
  a.channel_scale[0].assign(32, 0.5f);
  a.channel_scale[1].assign(32, 2.0f);
  a.channel_scale[2].assign(32, 2.0f);
  a.smoothing.push_back(ir::Smoothing{0, ir::SmoothingMapping::Attention, 0, {1, 2}, 0.5f, 0.25f, 1.5f, 9.75f});

  const auto m = backends::build_manifest(model, {});
  ASSERT_EQ(m.tensors_size(), 5);
  const auto& q = m.tensors(1);
  ASSERT_TRUE(q.has_outliers());
  EXPECT_EQ(q.outliers().k(), 8.0);
  expect_equal(q.outliers().weight(), a.outliers[1]->weight);
  ASSERT_TRUE(q.outliers().has_activation());
  expect_equal(q.outliers().activation(), *a.outliers[1]->activation);
  ASSERT_TRUE(m.tensors(3).has_outliers());
  EXPECT_FALSE(m.tensors(3).outliers().has_activation());
  EXPECT_FALSE(m.tensors(2).has_outliers());
  EXPECT_FALSE(m.tensors(4).has_outliers());

  ASSERT_TRUE(q.has_sensitivity());
  EXPECT_EQ(q.sensitivity().output_error(), e1);
  EXPECT_FALSE(q.sensitivity().has_kl());
  EXPECT_EQ(q.sensitivity().rank(), 2);
  ASSERT_TRUE(m.tensors(3).sensitivity().has_kl());
  EXPECT_EQ(m.tensors(3).sensitivity().kl(), 0.125);
  EXPECT_EQ(m.tensors(3).sensitivity().rank(), 1);
  EXPECT_FALSE(m.tensors(4).has_sensitivity());

  EXPECT_TRUE(m.tensors(0).smoothed());
  EXPECT_TRUE(m.tensors(1).smoothed());
  EXPECT_TRUE(m.tensors(2).smoothed());
  EXPECT_FALSE(m.tensors(3).smoothed());

  ASSERT_EQ(m.smoothing_size(), 1);
  const auto& sm = m.smoothing(0);
  EXPECT_EQ(sm.layer(), 0);
  EXPECT_EQ(sm.mapping(), "attn");
  EXPECT_EQ(sm.smooth(), "model.layers.0.input_layernorm.weight");
  ASSERT_EQ(sm.balanced_size(), 2);
  EXPECT_EQ(sm.balanced(0), "model.layers.0.self_attn.q_proj.weight");
  EXPECT_EQ(sm.balanced(1), "model.layers.0.self_attn.k_proj.weight");
  EXPECT_EQ(sm.alpha(), 0.5f);
  EXPECT_EQ(sm.factor_min(), 0.25f);
  EXPECT_EQ(sm.factor_median(), 1.5f);
  EXPECT_EQ(sm.factor_max(), 9.75f);

  // An infinite max/median survives the JSON round trip.
  a.outliers[3]->weight.max_over_median = std::numeric_limits<double>::infinity();
  TempDir tmp;
  const std::string path = (tmp.path / backends::kManifestFile).string();
  ASSERT_TRUE(backends::write_manifest(backends::build_manifest(model, {}), path).ok());
  auto back = backends::read_manifest(path);
  ASSERT_TRUE(back.ok()) << back.error().message;
  EXPECT_TRUE(std::isinf(back->tensors(3).outliers().weight().max_over_median()));
  expect_equal(back->tensors(1).outliers().activation(), *a.outliers[1]->activation);
  EXPECT_EQ(back->smoothing(0).balanced(1), "model.layers.0.self_attn.k_proj.weight");
}

manifest::ChannelOutliers channels(int64_t n, float max, float median, double kurtosis, int64_t above,
                                   std::vector<std::pair<int64_t, float>> top) {
  manifest::ChannelOutliers c;
  c.set_channels(n);
  c.set_max(max);
  c.set_median(median);
  c.set_max_over_median(median > 0 ? double(max) / double(median) : INFINITY);
  c.set_kurtosis(kurtosis);
  c.set_above_k(above);
  for (auto [i, v] : top) {
    c.add_top_channels(i);
    c.add_top_values(v);
  }
  return c;
}

manifest::TensorRecord* linear(manifest::Manifest& m, const std::string& module, const std::string& role, int layer) {
  auto* r = m.add_tensors();
  r->set_name(module + ".weight");
  r->set_module(module);
  r->set_role(role);
  r->set_layer(layer);
  r->add_shape(64);
  r->add_shape(64);
  r->set_format("nvfp4");
  r->set_weight_global_scale(1234.5f);
  r->mutable_weight_error()->set_sqnr_db(20.5);
  r->mutable_weight_error()->set_relative_mse(0.009);
  r->mutable_weight_error()->set_max_abs_error(0.01);
  return r;
}

class InspectAnnotations : public ::testing::Test {
 protected:
  TempDir tmp;
  fs::path dir;
  std::string q, o, down;   // modules

  void SetUp() override {
    dir = tmp.path / "artifact";
    fs::create_directories(dir);
    q = "model.layers.0.self_attn.q_proj";
    o = "model.layers.0.self_attn.o_proj";
    down = "model.layers.1.mlp.down_proj";
    manifest::Manifest m;
    m.set_architecture("LlamaForCausalLM");
    m.mutable_options()->set_scheme("w4a4");
    auto* norm = m.add_tensors();
    norm->set_name("model.layers.0.input_layernorm.weight");
    norm->set_module("model.layers.0.input_layernorm");
    norm->set_role("norm");
    norm->set_layer(0);
    norm->set_format("bf16");
    norm->mutable_skip()->set_kind("not_linear");
    norm->set_smoothed(true);

    // q: activation max/median 12.5 (the middle); o: 40 (first); down: no activation, weight 25.
    auto* rq = linear(m, q, "q", 0);
    rq->mutable_outliers()->set_k(8);
    *rq->mutable_outliers()->mutable_weight() = channels(64, 0.75f, 0.125f, 2.5, 0, {{3, 0.75f}, {9, 0.5f}});
    *rq->mutable_outliers()->mutable_activation() =
        channels(64, 50.0f, 4.0f, 17.25, 2, {{41, 50.0f}, {7, 33.5f}, {12, 9.0f}, {60, 8.5f}});
    rq->mutable_sensitivity()->set_output_error(0.00321);
    rq->mutable_sensitivity()->set_rank(2);
    rq->set_smoothed(true);
    auto* ro = linear(m, o, "o", 0);
    ro->mutable_outliers()->set_k(8);
    *ro->mutable_outliers()->mutable_weight() = channels(64, 0.5f, 0.25f, 0.5, 0, {{1, 0.5f}});
    *ro->mutable_outliers()->mutable_activation() = channels(64, 80.0f, 2.0f, 30.125, 5, {{22, 80.0f}});
    ro->mutable_sensitivity()->set_output_error(0.0456);
    ro->mutable_sensitivity()->set_kl(0.0789);
    ro->mutable_sensitivity()->set_rank(1);
    auto* rd = linear(m, down, "down", 1);
    rd->set_format("bf16");
    rd->mutable_skip()->set_kind("sensitivity");
    rd->mutable_skip()->set_detail("output error 4.56e-02, rank 1");
    rd->mutable_outliers()->set_k(8);
    *rd->mutable_outliers()->mutable_weight() = channels(64, 6.25f, 0.25f, 11.5, 1, {{5, 6.25f}});

    auto* sm = m.add_smoothing();
    sm->set_layer(0);
    sm->set_mapping("attn");
    sm->set_smooth("model.layers.0.input_layernorm.weight");
    sm->add_balanced(q + ".weight");
    sm->set_alpha(0.5f);
    sm->set_factor_min(0.0625f);
    sm->set_factor_median(1.375f);
    sm->set_factor_max(17.5f);
    ASSERT_TRUE(backends::write_manifest(m, (dir / backends::kManifestFile).string()).ok());
  }
};

TEST_F(InspectAnnotations, OutliersTableSortedByActivationMaxOverMedian) {
  auto r = fp4c("inspect " + dir.string() + " --outliers");
  ASSERT_EQ(r.exit_code, 0) << r.out;
  const auto po = r.out.find(o), pq = r.out.find(q), pd = r.out.find(down);
  ASSERT_NE(po, std::string::npos) << r.out;
  ASSERT_NE(pq, std::string::npos) << r.out;
  ASSERT_NE(pd, std::string::npos) << r.out;
  EXPECT_LT(po, pq) << r.out;   // 40 > 25 (down's weight) > 12.5
  EXPECT_LT(pd, pq) << r.out;
  EXPECT_LT(po, pd) << r.out;
  EXPECT_EQ(r.out.find("input_layernorm"), std::string::npos) << r.out;
  for (const char* figure : {"12.50", "40.00", "25.00", "17.25", "30.12", "11.50", "41:50 7:33.5 12:9", "22:80",
                             "5:6.25", "k = 8"})
    EXPECT_NE(r.out.find(figure), std::string::npos) << figure << "\n" << r.out;
  EXPECT_EQ(r.out.find("60:8.5"), std::string::npos) << "only the top 3 channels\n" << r.out;

  auto top = fp4c("inspect " + dir.string() + " --outliers --top 1");
  ASSERT_EQ(top.exit_code, 0) << top.out;
  EXPECT_NE(top.out.find(o), std::string::npos) << top.out;
  EXPECT_EQ(top.out.find(q), std::string::npos) << top.out;

  auto j = fp4c("inspect " + dir.string() + " --outliers --json --top 2");
  ASSERT_EQ(j.exit_code, 0) << j.out;
  auto rows = nlohmann::json::parse(j.out);
  ASSERT_EQ(rows.size(), 2u);
  EXPECT_EQ(rows[0]["module"], o);
  EXPECT_EQ(rows[1]["module"], down);
  EXPECT_EQ(rows[0]["outliers"]["activation"]["above_k"], 5);
  EXPECT_TRUE(rows[1]["outliers"]["activation"].is_null());
  EXPECT_EQ(rows[1]["outliers"]["weight"]["top_channels"], nlohmann::json({5}));
}

TEST_F(InspectAnnotations, PlainViewShowsSensitivityAndSmoothing) {
  auto r = fp4c("inspect " + dir.string());
  ASSERT_EQ(r.exit_code, 0) << r.out;
  for (const char* figure : {"sens err", "3.210e-03", "4.560e-02", "smoothing (1 mapping(s))", "attn", "0.0625",
                             "1.375", "17.5", "model.layers.0.input_layernorm.weight -> " 
                             "model.layers.0.self_attn.q_proj.weight", "output error 4.56e-02, rank 1"})
    EXPECT_NE(r.out.find(figure), std::string::npos) << figure << "\n" << r.out;

  auto j = fp4c("inspect " + dir.string() + " --json --sort name");
  ASSERT_EQ(j.exit_code, 0) << j.out;
  auto rows = nlohmann::json::parse(j.out);
  ASSERT_EQ(rows.size(), 3u);   // the norm is left out without --all
  // By name: o_proj, q_proj, then layer 1's down_proj.
  const auto& ro = rows[0];
  const auto& rq = rows[1];
  ASSERT_EQ(ro["module"], o);
  ASSERT_EQ(rq["module"], q);
  EXPECT_EQ(rq["sensitivity"]["rank"], 2);
  EXPECT_TRUE(rq["sensitivity"]["kl"].is_null());
  EXPECT_EQ(rq["smoothed"], true);
  EXPECT_EQ(rq["smoothing"][0]["factor_max"], 17.5);
  EXPECT_EQ(rq["smoothing"][0]["smooth"], "model.layers.0.input_layernorm.weight");
  EXPECT_EQ(rq["outliers"]["activation"]["top_channels"], nlohmann::json({41, 7, 12, 60}));
  EXPECT_EQ(ro["sensitivity"]["kl"].get<double>(), 0.0789);
  EXPECT_EQ(ro["smoothed"], false);
  EXPECT_FALSE(ro.contains("smoothing"));
  EXPECT_EQ(rows[2]["module"], down);
  EXPECT_FALSE(rows[2].contains("sensitivity"));
}

TEST_F(InspectAnnotations, WithoutAnnotationsTheViewIsUnchanged) {
  manifest::Manifest m;
  m.set_architecture("LlamaForCausalLM");
  linear(m, q, "q", 0);
  const fs::path plain = tmp.path / "plain";
  fs::create_directories(plain);
  ASSERT_TRUE(backends::write_manifest(m, (plain / backends::kManifestFile).string()).ok());
  auto r = fp4c("inspect " + plain.string());
  ASSERT_EQ(r.exit_code, 0) << r.out;
  EXPECT_EQ(r.out.find("sens err"), std::string::npos) << r.out;
  EXPECT_EQ(r.out.find("smoothing"), std::string::npos) << r.out;
  auto out = fp4c("inspect " + plain.string() + " --outliers");
  ASSERT_EQ(out.exit_code, 0) << out.out;
  EXPECT_NE(out.out.find("no outlier analysis"), std::string::npos) << out.out;
}

}  // namespace
}  // namespace fp4c::testing
