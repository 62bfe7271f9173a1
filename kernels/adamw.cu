// CUDA twin of AdamW (lib/ops/cpu/adamw.cpp is the reference): f32 master parameters and moments, gradients f32
// or bf16, the update in f32 with the bias corrections computed once on the host in double.
// Also all_finite(): a NaN/inf scan (one flag word, one synchronisation) for skipping a step on overflow.
#include <cmath>

#include "kernels/common.cuh"
#include "kernels/cuda_ops.h"

namespace ds::cuda {

namespace {

// C: the compute copy's type (written when c is not null; float when there is none).
template <class G, class C>
__global__ void adamw_kernel(float* __restrict__ p, const G* __restrict__ g, float* __restrict__ m,
                             float* __restrict__ v, C* __restrict__ c, int64_t n, float lr, float b1, float b2,
                             float inv_c1, float inv_c2, float eps, float wd, float grad_scale) {
  pdl_enter();  // programmatic dependent launch: wait for the previous kernel (common.cuh)
  for (int64_t i = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; i < n; i += int64_t(gridDim.x) * blockDim.x) {
    const float gi = ldf(g[i]) * grad_scale;
    const float mi = b1 * m[i] + (1.0f - b1) * gi;
    const float vi = b2 * v[i] + (1.0f - b2) * gi * gi;
    m[i] = mi;
    v[i] = vi;
    const float pi = p[i];
    const float np = pi - lr * ((mi * inv_c1) / (sqrtf(vi * inv_c2) + eps) + wd * pi);
    p[i] = np;
    if (c) c[i] = cvtd<C>(double(np));  // as copy() converts
  }
}

template <class T> __global__ void nonfinite_kernel(const T* __restrict__ p, int64_t n, int* __restrict__ flag) {
  pdl_enter();  // programmatic dependent launch: wait for the previous kernel (common.cuh)
  bool bad = false;
  for (int64_t i = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; i < n; i += int64_t(gridDim.x) * blockDim.x)
    bad |= !isfinite(ldf(p[i]));
  if (__syncthreads_or(bad) && threadIdx.x == 0) atomicOr(flag, 1);
}
__global__ void nonfinite_kernel_f64(const double* __restrict__ p, int64_t n, int* __restrict__ flag) {
  pdl_enter();  // programmatic dependent launch: wait for the previous kernel (common.cuh)
  bool bad = false;
  for (int64_t i = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; i < n; i += int64_t(gridDim.x) * blockDim.x)
    bad |= !isfinite(p[i]);
  if (__syncthreads_or(bad) && threadIdx.x == 0) atomicOr(flag, 1);
}

}  // namespace

void adamw_update(const Context& ctx, Tensor param, Tensor grad, Tensor m, Tensor v, const AdamWOptions& opt,
                  Tensor compute) {
  cudaStream_t st = prepare(ctx);
  const int64_t n = param.numel();
  if (n == 0) return;
  const double c1 = 1.0 - std::pow(opt.beta1, double(opt.step)), c2 = 1.0 - std::pow(opt.beta2, double(opt.step));
  dispatch_fb(grad.dtype, "adamw_update", [&](auto zero) {
    using G = decltype(zero);
    dispatch_fb(compute.empty() ? DType::f32 : compute.dtype, "adamw_update", [&](auto czero) {
      using C = decltype(czero);
      launch(adamw_kernel<G, C>, grid_for(n, 256), 256, 0, st,
          dptr<float>(param), dptr<const G>(grad), dptr<float>(m), dptr<float>(v),
          compute.empty() ? nullptr : dptr<C>(compute), n, float(opt.lr), float(opt.beta1), float(opt.beta2),
          float(1.0 / c1), float(1.0 / c2), float(opt.eps), float(opt.weight_decay), float(opt.grad_scale));
    });
  });
  DS_CUDA_LAUNCH_CHECK("adamw_kernel");
}

bool all_finite(const Context& ctx, Tensor t) {
  cudaStream_t st = prepare(ctx);
  const int64_t n = t.numel();
  if (n == 0) return true;
  TempBuffer flag(sizeof(int), st);
  DS_CUDA_CHECK(cudaMemsetAsync(flag.get(), 0, sizeof(int), st));
  const unsigned g = grid_for(n, 256, 4096);
  if (t.dtype == DType::f64) {
    launch(nonfinite_kernel_f64, g, 256, 0, st, dptr<const double>(t), n, flag.as<int>());
  } else {
    dispatch_fb(t.dtype, "all_finite", [&](auto zero) {
      using T = decltype(zero);
      launch(nonfinite_kernel<T>, g, 256, 0, st, dptr<const T>(t), n, flag.as<int>());
    });
  }
  DS_CUDA_LAUNCH_CHECK("nonfinite_kernel");
  int h = 0;
  DS_CUDA_CHECK(cudaMemcpyAsync(&h, flag.get(), sizeof(int), cudaMemcpyDeviceToHost, st));
  DS_CUDA_CHECK(cudaStreamSynchronize(st));
  return h == 0;
}

}  // namespace ds::cuda
