// AdamW with bias correction and decoupled weight decay, elementwise in double. The moments are the param's dtype
// or bf16 (DeepSeek-V3's optimizer state: stored rounded, the update uses the unrounded values).
#include <cmath>

#include "ops/cpu/cpu_ops.h"

namespace ds::cpu {

namespace {

template <class M> double load_moment(M x) { return double(x); }
template <> double load_moment(bf16 x) { return double(bf16_to_f32(x)); }
template <class M> M store_moment(double x) { return M(x); }
template <> bf16 store_moment<bf16>(double x) { return f32_to_bf16(float(x)); }

template <class T, class M>
void adamw_typed(const Context& ctx, Tensor param, Tensor grad, Tensor m, Tensor v, const AdamWOptions& opt) {
  T* pp = param.ptr<T>();
  M* pm = m.ptr<M>();
  M* pv = v.ptr<M>();
  const T* pg = grad.ptr<T>();
  const int64_t n = param.numel();
  const double b1 = opt.beta1, b2 = opt.beta2;
  const double c1 = 1.0 - std::pow(b1, double(opt.step)), c2 = 1.0 - std::pow(b2, double(opt.step));
#pragma omp parallel for num_threads(threads_for(ctx, n)) schedule(static)
  for (int64_t i = 0; i < n; ++i) {
    const double g = double(pg[i]) * opt.grad_scale;
    const double mi = b1 * load_moment(pm[i]) + (1.0 - b1) * g;
    const double vi = b2 * load_moment(pv[i]) + (1.0 - b2) * g * g;
    pm[i] = store_moment<M>(mi);
    pv[i] = store_moment<M>(vi);
    const double p = double(pp[i]);
    pp[i] = T(p - opt.lr * ((mi / c1) / (std::sqrt(vi / c2) + opt.eps) + opt.weight_decay * p));
  }
}

}  // namespace

void adamw_update(const Context& ctx, Tensor param, Tensor grad, Tensor m, Tensor v, const AdamWOptions& opt,
                  Tensor compute) {
  dispatch_float(param.dtype, "adamw_update", [&](auto zero) {
    using T = decltype(zero);
    if (m.dtype == DType::bf16) adamw_typed<T, bf16>(ctx, param, grad, m, v, opt);
    else adamw_typed<T, T>(ctx, param, grad, m, v, opt);
  });
  if (!compute.empty()) cpu::copy(ctx, compute, param);
}

}  // namespace ds::cpu
