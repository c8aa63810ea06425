#include "runtime/matmul.h"

#include <oneapi/dnnl/dnnl.hpp>

#include <algorithm>
#include <string>
#include <unordered_map>
#include <vector>

#include "base/profile.h"
#include "runtime/dnnl_engine.h"

namespace fp4c::runtime {

using dnnl::memory;
using dt = memory::data_type;
using tag = memory::format_tag;

struct PreparedLinear::Impl {
  int64_t rows = 0, in = 0, out = 0;
  dt src_type = dt::f32;
  dnnl::matmul primitive;
  std::vector<std::pair<int64_t, dnnl::matmul>> other_rows;  // primitives for other row counts
  memory weights;             // in the primitive's own layout and type
  memory bias;                // empty when the Linear has none
  std::vector<float> bias_data;
};

PreparedLinear::PreparedLinear(std::unique_ptr<Impl> impl) : impl_(std::move(impl)) {}
PreparedLinear::PreparedLinear(PreparedLinear&&) noexcept = default;
PreparedLinear& PreparedLinear::operator=(PreparedLinear&&) noexcept = default;
PreparedLinear::~PreparedLinear() = default;

int64_t PreparedLinear::rows() const { return impl_->rows; }

Expected<PreparedLinear> PreparedLinear::create(const LinearParams& w, int64_t rows,
                                                Precision precision) {
  profile::Scope timed(profile::Stage::LinearPrepare);
  if (rows <= 0 || w.in <= 0 || w.out <= 0 || int64_t(w.weight.size()) != w.in * w.out ||
      (!w.bias.empty() && int64_t(w.bias.size()) != w.out))
    return make_error("matmul: inconsistent Linear [" + std::to_string(w.out) + ", " +
                      std::to_string(w.in) + "] with " + std::to_string(w.weight.size()) +
                      " weights and " + std::to_string(w.bias.size()) + " biases");
  auto impl = std::make_unique<Impl>();
  impl->rows = rows;
  impl->in = w.in;
  impl->out = w.out;
  impl->src_type = precision == Precision::BF16 ? dt::bf16 : dt::f32;
  try {
    const dnnl::engine& eng = cpu_engine();
    const memory::desc src({rows, w.in}, impl->src_type, tag::ab);
    const memory::desc wei({w.in, w.out}, impl->src_type, tag::any);
    const memory::desc dst({rows, w.out}, dt::f32, tag::ab);
    const memory::desc bias({1, w.out}, dt::f32, tag::ab);
    const auto pd = w.bias.empty() ? dnnl::matmul::primitive_desc(dnnl::matmul::desc(src, wei, dst), eng)
                                   : dnnl::matmul::primitive_desc(dnnl::matmul::desc(src, wei, bias, dst), eng);
    impl->primitive = dnnl::matmul(pd);
    // W is [out, in] row-major: as the [in, out] matrix the primitive multiplies by, that is "ba".
    memory user_weights(memory::desc({w.in, w.out}, dt::f32, tag::ba), eng,
                        const_cast<float*>(w.weight.data()));
    impl->weights = memory(pd.weights_desc(), eng);
    dnnl::stream s(eng);
    dnnl::reorder(user_weights, impl->weights).execute(s, user_weights, impl->weights);
    s.wait();
    if (!w.bias.empty()) {
      impl->bias_data = w.bias;
      impl->bias = memory(bias, eng, impl->bias_data.data());
    }
  } catch (const dnnl::error& e) {
    return make_error(std::string("matmul: oneDNN: ") + e.what());
  }
  return PreparedLinear(std::move(impl));
}

Status PreparedLinear::run(const void* x, float* y) const { return run(x, impl_->rows, y); }

Status PreparedLinear::run(const void* x, int64_t rows, float* y) const {
  if (rows <= 0) return {};
  profile::Scope timed(profile::Stage::Gemm);
  try {
    const dnnl::engine& eng = cpu_engine();
    const dnnl::matmul* primitive = &impl_->primitive;
    if (rows != impl_->rows) {
      primitive = nullptr;
      for (const auto& [r, p] : impl_->other_rows)
        if (r == rows) primitive = &p;
      if (!primitive) {
        // The weight stays in the layout chosen for the first row count.
        const memory::desc src({rows, impl_->in}, impl_->src_type, tag::ab);
        const memory::desc dst({rows, impl_->out}, dt::f32, tag::ab);
        const memory::desc wei = impl_->weights.get_desc();
        const auto pd = impl_->bias_data.empty()
                            ? dnnl::matmul::primitive_desc(dnnl::matmul::desc(src, wei, dst), eng)
                            : dnnl::matmul::primitive_desc(dnnl::matmul::desc(src, wei, impl_->bias.get_desc(), dst), eng);
        impl_->other_rows.emplace_back(rows, dnnl::matmul(pd));
        primitive = &impl_->other_rows.back().second;
      }
    }
    memory src(memory::desc({rows, impl_->in}, impl_->src_type, tag::ab), eng, const_cast<void*>(x));
    memory dst(memory::desc({rows, impl_->out}, dt::f32, tag::ab), eng, y);
    dnnl::stream s(eng);
    std::unordered_map<int, memory> args = {
        {DNNL_ARG_SRC, src}, {DNNL_ARG_WEIGHTS, impl_->weights}, {DNNL_ARG_DST, dst}};
    if (!impl_->bias_data.empty()) args.emplace(DNNL_ARG_BIAS, impl_->bias);
    primitive->execute(s, args);
    s.wait();
  } catch (const dnnl::error& e) {
    return make_error(std::string("matmul: oneDNN: ") + e.what());
  }
  return {};
}

Status gemm_f32(int64_t M, int64_t N, int64_t K, const float* A, bool a_transposed, const float* B, bool b_transposed,
                float* C) {
  if (M <= 0 || N <= 0) return {};
  if (K <= 0) {
    std::fill(C, C + M * N, 0.0f);
    return {};
  }
  profile::Scope timed(profile::Stage::Gemm);
  try {
    const dnnl::engine& eng = cpu_engine();
    const memory::desc a({M, K}, dt::f32, a_transposed ? tag::ba : tag::ab);
    const memory::desc b({K, N}, dt::f32, b_transposed ? tag::ba : tag::ab);
    const memory::desc c({M, N}, dt::f32, tag::ab);
    const auto pd = dnnl::matmul::primitive_desc(dnnl::matmul::desc(a, b, c), eng);
    dnnl::matmul primitive(pd);
    memory am(a, eng, const_cast<float*>(A)), bm(b, eng, const_cast<float*>(B)), cm(c, eng, C);
    dnnl::stream s(eng);
    primitive.execute(s, {{DNNL_ARG_SRC, am}, {DNNL_ARG_WEIGHTS, bm}, {DNNL_ARG_DST, cm}});
    s.wait();
  } catch (const dnnl::error& e) {
    return make_error(std::string("matmul: oneDNN: ") + e.what());
  }
  return {};
}

}  // namespace fp4c::runtime
