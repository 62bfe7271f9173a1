// AdamW with bias correction and decoupled weight decay, elementwise in double. The moments are the param's dtype
// or bf16 (DeepSeek-V3's optimizer state: stored rounded, the update uses the unrounded values).
#include <cmath>

#include "ops/cpu/cpu_ops.h"
#include "ops/step_verdict.h"

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

void adamw_update(const Context& ctx, Tensor param, Tensor grad, Tensor m, Tensor v, const AdamWOptions& opt_in,
                  Tensor compute) {
  AdamWOptions opt = opt_in;
  if (!opt.verdict.empty()) {  // grad_clip_verdict's (scale, skip, norm)
    const double* vd = opt.verdict.ptr<double>();
    if (vd[1] != 0.0) return;
    opt.grad_scale = vd[0];
  }
  dispatch_float(param.dtype, "adamw_update", [&](auto zero) {
    using T = decltype(zero);
    if (m.dtype == DType::bf16) adamw_typed<T, bf16>(ctx, param, grad, m, v, opt);
    else adamw_typed<T, T>(ctx, param, grad, m, v, opt);
  });
  if (!compute.empty()) cpu::copy(ctx, compute, param);
}

void grad_clip_verdict(const Context&, Tensor verdict, Tensor ssq, Tensor finite, double grad_scale, double max_norm,
                       bool force_skip) {
  const double* s = ssq.ptr<double>();
  double ss = 0.0;
  for (int64_t i = 0; i < ssq.numel(); ++i) ss += s[i];
  bool ok = !force_skip;
  if (!finite.empty())
    for (int64_t i = 0; i < finite.numel(); ++i) ok = ok && std::isfinite(finite.ptr<double>()[i]);
  const StepVerdict r = step_verdict(ss, ok, grad_scale, max_norm);
  double* out = verdict.ptr<double>();
  out[0] = r.scale;
  out[1] = r.skip;
  out[2] = r.norm;
}

}  // namespace ds::cpu
