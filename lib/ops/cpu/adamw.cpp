// AdamW with bias correction and decoupled weight decay, elementwise in double.
#include <cmath>

#include "ops/cpu/cpu_ops.h"

namespace ds::cpu {

void adamw_update(const Context& ctx, Tensor param, Tensor grad, Tensor m, Tensor v, const AdamWOptions& opt,
                  Tensor compute) {
  dispatch_float(param.dtype, "adamw_update", [&](auto zero) {
    using T = decltype(zero);
    T* pp = param.ptr<T>();
    T* pm = m.ptr<T>();
    T* pv = v.ptr<T>();
    const T* pg = grad.ptr<T>();
    const int64_t n = param.numel();
    const double b1 = opt.beta1, b2 = opt.beta2;
    const double c1 = 1.0 - std::pow(b1, double(opt.step)), c2 = 1.0 - std::pow(b2, double(opt.step));
#pragma omp parallel for num_threads(threads_for(ctx, n)) schedule(static)
    for (int64_t i = 0; i < n; ++i) {
      const double g = double(pg[i]) * opt.grad_scale;
      const double mi = b1 * double(pm[i]) + (1.0 - b1) * g;
      const double vi = b2 * double(pv[i]) + (1.0 - b2) * g * g;
      pm[i] = T(mi);
      pv[i] = T(vi);
      const double p = double(pp[i]);
      pp[i] = T(p - opt.lr * ((mi / c1) / (std::sqrt(vi / c2) + opt.eps) + opt.weight_decay * p));
    }
  });
  if (!compute.empty()) cpu::copy(ctx, compute, param);
}

}  // namespace ds::cpu
