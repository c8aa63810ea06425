// The outliers pass: channel statistics equal a hand-computed case and a double-precision formula;
// planted outlier columns are found; the activation side comes from the statistics; zero magnitudes;
// errors name the tensor; the column maxima do not depend on the thread count.
#include <gtest/gtest.h>
#include <omp.h>

#include <algorithm>
#include <cmath>
#include <map>
#include <random>
#include <set>

#include "passes/outliers.h"

namespace fp4c::testing {
namespace {

// Excess kurtosis the obvious way, in double precision.
double kurtosis(const std::vector<float>& x) {
  double mean = 0;
  for (float v : x) mean += v;
  mean /= double(x.size());
  double m2 = 0, m4 = 0;
  for (float v : x) {
    m2 += (v - mean) * (v - mean);
    m4 += std::pow(v - mean, 4);
  }
  m2 /= double(x.size());
  m4 /= double(x.size());
  return m2 == 0 ? 0 : m4 / (m2 * m2) - 3;
}

TEST(Outliers, ChannelStatisticsEqualAHandComputedCase) {
  // Sorted: 0.5 1 2 3 3 10 -> lower middle 2 (the even count takes the lower of the two middles).
  const std::vector<float> m{1, 3, 0.5f, 3, 10, 2};
  const auto o = passes::channel_outliers(m, 2.0, 4);
  EXPECT_EQ(o.channels, 6);
  EXPECT_EQ(o.max, 10.0f);
  EXPECT_EQ(o.median, 2.0f);
  EXPECT_DOUBLE_EQ(o.max_over_median, 5.0);
  // mean 19.5/6 = 3.25; deviations -2.25 -0.25 -2.75 -0.25 6.75 -1.25;
  // m2 = 59.875/6, m4 = 2161.2109375/6 -> 2161.2109375*6/59.875^2 - 3 = 0.61707367...
  EXPECT_NEAR(o.kurtosis, 2161.2109375 * 6 / (59.875 * 59.875) - 3, 1e-12);
  EXPECT_NEAR(o.kurtosis, 0.6170736703553419, 1e-12);
  EXPECT_NEAR(o.kurtosis, kurtosis(m), 1e-12);
  EXPECT_EQ(o.above_k, 1);  // only 10 > 2 x 2; 3 is not
  // Descending, the tie 3 = 3 broken by the lower index.
  ASSERT_EQ(o.top.size(), 4u);
  EXPECT_EQ(o.top[0], (std::pair<int64_t, float>{4, 10.0f}));
  EXPECT_EQ(o.top[1], (std::pair<int64_t, float>{1, 3.0f}));
  EXPECT_EQ(o.top[2], (std::pair<int64_t, float>{3, 3.0f}));
  EXPECT_EQ(o.top[3], (std::pair<int64_t, float>{5, 2.0f}));

  // Odd count: the middle; top longer than the channels gives them all; k = 1 counts strictly above.
  const std::vector<float> odd{4, 1, 2};
  const auto p = passes::channel_outliers(odd, 1.0, 10);
  EXPECT_EQ(p.median, 2.0f);
  EXPECT_EQ(p.above_k, 1);
  ASSERT_EQ(p.top.size(), 3u);
  EXPECT_EQ(p.top[2].first, 1);
  EXPECT_EQ(passes::channel_outliers(odd, 1.0, 0).top.size(), 0u);
}

TEST(Outliers, RandomMagnitudesMatchTheFormulas) {
  const uint64_t seed = std::random_device{}();
  SCOPED_TRACE("seed " + std::to_string(seed));
  std::mt19937_64 rng(seed);
  std::lognormal_distribution<float> d(0.0f, 1.0f);
  for (int n : {1, 2, 7, 64, 1001}) {
    std::vector<float> m(static_cast<size_t>(n));
    for (auto& v : m) v = d(rng);
    const double k = 1.5;
    const auto o = passes::channel_outliers(m, k, 5);
    std::vector<float> sorted = m;
    std::sort(sorted.begin(), sorted.end());
    EXPECT_EQ(o.channels, n);
    EXPECT_EQ(o.max, sorted.back());
    EXPECT_EQ(o.median, sorted[size_t((n - 1) / 2)]);
    EXPECT_DOUBLE_EQ(o.max_over_median, double(sorted.back()) / double(o.median));
    EXPECT_NEAR(o.kurtosis, kurtosis(m), 1e-9 * std::max(1.0, std::fabs(kurtosis(m))));
    EXPECT_EQ(o.above_k, std::count_if(m.begin(), m.end(), [&](float v) { return double(v) > k * o.median; }));
    ASSERT_EQ(o.top.size(), size_t(std::min(n, 5)));
    for (size_t i = 0; i < o.top.size(); ++i) {
      EXPECT_EQ(o.top[i].second, sorted[sorted.size() - 1 - i]);
      EXPECT_EQ(m[size_t(o.top[i].first)], o.top[i].second);
    }
  }
}

TEST(Outliers, ZeroMagnitudes) {
  const std::vector<float> zeros(5, 0.0f);
  const auto z = passes::channel_outliers(zeros, 8, 3);
  EXPECT_EQ(z.max, 0.0f);
  EXPECT_EQ(z.median, 0.0f);
  EXPECT_EQ(z.max_over_median, 1.0);
  EXPECT_EQ(z.kurtosis, 0.0);
  EXPECT_EQ(z.above_k, 0);
  ASSERT_EQ(z.top.size(), 3u);
  EXPECT_EQ(z.top[0].first, 0);
  EXPECT_EQ(z.top[2].first, 2);

  // A zero median under a non-zero max: an infinite ratio, and every non-zero channel is above k x 0.
  const std::vector<float> mostly{0, 0, 7, 0, 0.5f};
  const auto m = passes::channel_outliers(mostly, 8, 1);
  EXPECT_EQ(m.median, 0.0f);
  EXPECT_TRUE(std::isinf(m.max_over_median) && m.max_over_median > 0);
  EXPECT_EQ(m.above_k, 2);
  EXPECT_EQ(m.top[0], (std::pair<int64_t, float>{2, 7.0f}));

  const auto empty = passes::channel_outliers({}, 8, 3);
  EXPECT_EQ(empty.channels, 0);
  EXPECT_TRUE(empty.top.empty());
}

ir::TensorId add(ir::Model& model, const std::string& module, ir::Role role, std::vector<int64_t> shape,
                 std::optional<int> layer, ir::ParamKind kind = ir::ParamKind::Weight) {
  return model.add({module + (kind == ir::ParamKind::Weight ? ".weight" : ".bias"), module, DType::BF16,
                    std::move(shape), role, kind, layer});
}

std::vector<float> random_weight(std::mt19937_64& rng, int64_t out, int64_t in) {
  std::normal_distribution<float> n(0.0f, 0.02f);
  std::vector<float> w(size_t(out * in));
  for (auto& v : w) v = n(rng);
  return w;
}

TEST(Outliers, ColumnMaximaDoNotDependOnTheThreadCount) {
  const uint64_t seed = std::random_device{}();
  SCOPED_TRACE("seed " + std::to_string(seed));
  std::mt19937_64 rng(seed);
  const int64_t out = 1537, in = 96;
  const auto w = random_weight(rng, out, in);
  std::vector<float> direct(size_t(in), 0.0f);
  for (int64_t r = 0; r < out; ++r)
    for (int64_t j = 0; j < in; ++j) direct[size_t(j)] = std::max(direct[size_t(j)], std::fabs(w[size_t(r * in + j)]));
  const int saved = omp_get_max_threads();
  for (int threads : {1, 2, 3, 8}) {
    omp_set_num_threads(threads);
    EXPECT_EQ(passes::column_absmax(w, out, in), direct) << threads << " threads";
  }
  omp_set_num_threads(saved);
}

TEST(Outliers, PlantedColumnsAndActivationChannelsAreFound) {
  const uint64_t seed = std::random_device{}();
  SCOPED_TRACE("seed " + std::to_string(seed));
  std::mt19937_64 rng(seed);
  const int64_t hidden = 128, inter = 160, vocab = 200;

  ir::Model model;
  const auto norm = add(model, "model.layers.0.input_layernorm", ir::Role::Norm, {hidden}, 0);
  const auto q = add(model, "model.layers.0.self_attn.q_proj", ir::Role::Q, {hidden, hidden}, 0);
  const auto qb = add(model, "model.layers.0.self_attn.q_proj", ir::Role::Q, {hidden}, 0, ir::ParamKind::Bias);
  const auto o = add(model, "model.layers.0.self_attn.o_proj", ir::Role::O, {hidden, hidden}, 0);
  const auto down = add(model, "model.layers.0.mlp.down_proj", ir::Role::Down, {hidden, inter}, 0);
  const auto head = add(model, "lm_head", ir::Role::LmHead, {vocab, hidden}, std::nullopt);

  std::map<ir::TensorId, std::vector<float>> weights;
  for (auto id : {q, o, down, head}) weights[id] = random_weight(rng, model.tensors[id].shape[0], model.tensors[id].shape[1]);
  // Three planted columns in q: one entry each, 100 standard deviations.
  std::set<int64_t> planted;
  while (planted.size() < 3) planted.insert(int64_t(rng() % uint64_t(hidden)));
  for (int64_t j : planted) weights[q][size_t(int64_t(rng() % uint64_t(hidden)) * hidden + j)] = (rng() & 1 ? 2.0f : -2.0f);

  // Statistics: the Q site with three planted channels; a Down site whose width disagrees with down_proj.
  passes::ActivationStats stats;
  passes::SiteStats qs;
  qs.layer = 0;
  qs.role = ir::Role::Q;
  std::uniform_real_distribution<float> u(0.5f, 1.5f);
  qs.absmax.resize(size_t(hidden));
  for (auto& v : qs.absmax) v = u(rng);
  std::set<int64_t> hot;
  while (hot.size() < 3) hot.insert(int64_t(rng() % uint64_t(hidden)));
  float heat = 50.0f;
  for (int64_t j : hot) qs.absmax[size_t(j)] = (heat += 10.0f);
  passes::SiteStats ds;
  ds.layer = 0;
  ds.role = ir::Role::Down;
  ds.absmax.assign(size_t(inter + 16), 1.0f);
  stats.sites = {qs, ds};

  std::vector<ir::TensorId> reads;
  auto read = [&](ir::TensorId id) -> Expected<std::vector<float>> {
    reads.push_back(id);
    return weights.at(id);
  };
  ASSERT_TRUE(passes::analyze_outliers(model, read, &stats, 8.0, 4).ok());
  EXPECT_EQ(reads, (std::vector<ir::TensorId>{q, o, down, head}));
  const auto& a = model.annotations.outliers;
  ASSERT_EQ(a.size(), model.tensors.size());
  EXPECT_FALSE(a[norm]);
  EXPECT_FALSE(a[qb]);
  for (auto id : {q, o, down, head}) ASSERT_TRUE(a[id]) << model.tensors[id].name;

  // q: the planted columns lead, and only they are above 8 x the median.
  const auto& wq = a[q]->weight;
  EXPECT_EQ(a[q]->k, 8.0);
  EXPECT_EQ(wq.channels, hidden);
  ASSERT_EQ(wq.top.size(), 4u);
  std::set<int64_t> found{wq.top[0].first, wq.top[1].first, wq.top[2].first};
  EXPECT_EQ(found, planted);
  EXPECT_EQ(wq.top[0].second, 2.0f);
  EXPECT_EQ(wq.above_k, 3);
  EXPECT_EQ(wq.max, 2.0f);
  EXPECT_GT(wq.max_over_median, 8.0);
  // Its input channels come from the Q site's absmax, the hottest first.
  ASSERT_TRUE(a[q]->activation);
  const auto& aq = *a[q]->activation;
  EXPECT_EQ(aq.channels, hidden);
  EXPECT_EQ(aq.above_k, 3);
  EXPECT_EQ(aq.top[0].second, 80.0f);
  EXPECT_EQ(qs.absmax[size_t(aq.top[0].first)], 80.0f);
  EXPECT_EQ(std::set<int64_t>({aq.top[0].first, aq.top[1].first, aq.top[2].first}), hot);
  const auto direct = passes::channel_outliers(qs.absmax, 8.0, 4);
  EXPECT_EQ(aq.median, direct.median);
  EXPECT_EQ(aq.kurtosis, direct.kurtosis);
  // Random columns, no planted ones: none above 8 x median.
  EXPECT_EQ(a[o]->weight.above_k, 0);
  // No O site, a Down site of the wrong width, lm_head without a layer: no activation side.
  EXPECT_FALSE(a[o]->activation);
  EXPECT_FALSE(a[down]->activation);
  EXPECT_EQ(a[down]->weight.channels, inter);
  EXPECT_FALSE(a[head]->activation);
  EXPECT_EQ(a[head]->weight.channels, hidden);

  // Without statistics, only the weight side.
  ASSERT_TRUE(passes::analyze_outliers(model, read, nullptr, 8.0, 4).ok());
  EXPECT_FALSE(model.annotations.outliers[q]->activation);

  // The table names every analysed Linear, in tensor order.
  ASSERT_TRUE(passes::analyze_outliers(model, read, &stats, 8.0, 4).ok());
  const std::string table = passes::format_outliers(model);
  const auto pos_q = table.find("model.layers.0.self_attn.q_proj"), pos_head = table.find("lm_head");
  EXPECT_NE(pos_q, std::string::npos) << table;
  EXPECT_NE(pos_head, std::string::npos) << table;
  EXPECT_LT(pos_q, table.find("model.layers.0.mlp.down_proj"));
  EXPECT_LT(table.find("model.layers.0.mlp.down_proj"), pos_head);
  EXPECT_EQ(table.find("input_layernorm"), std::string::npos);
  EXPECT_NE(table.find(std::to_string(aq.top[0].first) + ":80"), std::string::npos) << table;
}

TEST(Outliers, ErrorsNameTheTensor) {
  const uint64_t seed = std::random_device{}();
  std::mt19937_64 rng(seed);
  ir::Model model;
  const auto q = add(model, "model.layers.0.self_attn.q_proj", ir::Role::Q, {32, 16}, 0);
  const auto k = add(model, "model.layers.0.self_attn.k_proj", ir::Role::K, {16, 16}, 0);
  const auto good = random_weight(rng, 32, 16);

  auto failing = [&](ir::TensorId id) -> Expected<std::vector<float>> {
    if (id == k) return make_error("shard-1.safetensors: offset 4096: truncated");
    return good;
  };
  auto st = passes::analyze_outliers(model, failing, nullptr, 8, 3);
  ASSERT_FALSE(st.ok());
  EXPECT_NE(st.error().message.find("model.layers.0.self_attn.k_proj.weight"), std::string::npos) << st.error().message;
  EXPECT_NE(st.error().message.find("offset 4096: truncated"), std::string::npos) << st.error().message;

  auto short_read = [&](ir::TensorId id) -> Expected<std::vector<float>> {
    return std::vector<float>(good.begin(), good.begin() + (id == q ? 100 : 256));
  };
  st = passes::analyze_outliers(model, short_read, nullptr, 8, 3);
  ASSERT_FALSE(st.ok());
  EXPECT_NE(st.error().message.find("model.layers.0.self_attn.q_proj.weight"), std::string::npos) << st.error().message;
  EXPECT_NE(st.error().message.find("read 100 values"), std::string::npos) << st.error().message;
}

}  // namespace
}  // namespace fp4c::testing
