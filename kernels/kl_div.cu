// CUDA twins of the logit-distillation loss (lib/ops/cpu/loss.cpp is the reference): one block per row computes
// the student's and the teacher's logsumexp (block max, then block sum of exp in f32), then either the KL sum or
// the gradient softmax(s) - softmax(t), written directly; no [N, V] probability tensor is formed.
// loss is f32; logits, teacher and d_logits f32 or bf16.
#include <cmath>

#include "kernels/common.cuh"
#include "kernels/cuda_ops.h"

namespace ds::cuda {

namespace {

constexpr int kThreads = 256;

template <class T> __device__ float block_max_of(const T* x, int64_t V) {
  __shared__ float part[32];
  float m = -INFINITY;
  for (int64_t v = threadIdx.x; v < V; v += blockDim.x) m = fmaxf(m, ldf(x[v]));
  m = warp_max(m);
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5, nwarps = (blockDim.x + 31) >> 5;
  __syncthreads();
  if (lane == 0) part[warp] = m;
  __syncthreads();
  return warp_max(lane < nwarps ? part[lane] : -INFINITY);
}

// logsumexp of row x, the same value in every thread.
template <class T> __device__ float block_lse(const T* x, int64_t V) {
  const float m = block_max_of(x, V);
  float s = 0.0f;
  for (int64_t v = threadIdx.x; v < V; v += blockDim.x) s += expf(ldf(x[v]) - m);
  return m + logf(block_sum(s));
}

template <class T>
__global__ void kl_fwd_kernel(float* __restrict__ loss, const T* __restrict__ logits, const T* __restrict__ teacher,
                              const int32_t* __restrict__ targets, int64_t N, int64_t V, int ignore_index) {
  pdl_enter();  // programmatic dependent launch: wait for the previous kernel (common.cuh)
  for (int64_t n = blockIdx.x; n < N; n += gridDim.x) {
    if (targets[n] == ignore_index) {  // uniform across the block: no thread reaches a barrier alone
      if (threadIdx.x == 0) loss[n] = 0.0f;
      continue;
    }
    const T *s = logits + n * V, *t = teacher + n * V;
    const float ls = block_lse(s, V), lt = block_lse(t, V);
    float kl = 0.0f;
    for (int64_t v = threadIdx.x; v < V; v += blockDim.x) {
      const float log_pt = ldf(t[v]) - lt;
      kl += expf(log_pt) * (log_pt - (ldf(s[v]) - ls));
    }
    kl = block_sum(kl);
    if (threadIdx.x == 0) loss[n] = kl;
  }
}

template <class T>
__global__ void kl_bwd_kernel(T* __restrict__ d_logits, const T* __restrict__ logits, const T* __restrict__ teacher,
                              const int32_t* __restrict__ targets, int64_t N, int64_t V, float d_scale,
                              int ignore_index, bool add) {
  pdl_enter();  // programmatic dependent launch: wait for the previous kernel (common.cuh)
  for (int64_t n = blockIdx.x; n < N; n += gridDim.x) {
    T* d = d_logits + n * V;
    if (targets[n] == ignore_index) {
      if (!add)
        for (int64_t v = threadIdx.x; v < V; v += blockDim.x) d[v] = cvt<T>(0.0f);
      continue;
    }
    const T *s = logits + n * V, *t = teacher + n * V;
    const float ls = block_lse(s, V), lt = block_lse(t, V);
    for (int64_t v = threadIdx.x; v < V; v += blockDim.x) {
      const float g = d_scale * (expf(ldf(s[v]) - ls) - expf(ldf(t[v]) - lt));
      d[v] = cvt<T>(add ? ldf(d[v]) + g : g);
    }
  }
}

unsigned rows_grid(int64_t N) { return unsigned(std::min<int64_t>(N, 1 << 20)); }

}  // namespace

void kl_div_forward(const Context& ctx, Tensor loss, Tensor logits, Tensor teacher, Tensor targets, int ignore_index) {
  cudaStream_t st = prepare(ctx);
  const int64_t N = logits.rows(), V = logits.cols();
  if (N == 0) return;
  dispatch_fb(logits.dtype, "kl_div_forward", [&](auto zero) {
    using T = decltype(zero);
    launch(kl_fwd_kernel<T>, rows_grid(N), kThreads, 0, st, dptr<float>(loss), dptr<const T>(logits),
                                                         dptr<const T>(teacher), dptr<const int32_t>(targets), N, V,
                                                         ignore_index);
  });
  DS_CUDA_LAUNCH_CHECK("kl_fwd_kernel");
}

void kl_div_backward(const Context& ctx, Tensor d_logits, Tensor logits, Tensor teacher, Tensor targets, double d_scale,
                     int ignore_index, Accum acc) {
  cudaStream_t st = prepare(ctx);
  const int64_t N = logits.rows(), V = logits.cols();
  if (N == 0 || V == 0) return;
  dispatch_fb(logits.dtype, "kl_div_backward", [&](auto zero) {
    using T = decltype(zero);
    launch(kl_bwd_kernel<T>, rows_grid(N), kThreads, 0, st, dptr<T>(d_logits), dptr<const T>(logits),
                                                         dptr<const T>(teacher), dptr<const int32_t>(targets), N, V,
                                                         float(d_scale), ignore_index, acc == Accum::add);
  });
  DS_CUDA_LAUNCH_CHECK("kl_bwd_kernel");
}

}  // namespace ds::cuda
