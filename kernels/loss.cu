// CUDA twins of the cross-entropy loss (lib/ops/cpu/loss.cpp is the reference), fused with the softmax:
// the forward streams each row once with an online logsumexp (running max and rescaled sum in f32, merged across
// threads), so no [N, V] probability tensor is ever formed; the backward recomputes softmax from the saved lse
// and writes d_logits directly (=|+=) d_scale * row_scale[n] * (exp(x - lse) - onehot). loss, lse and row_scale
// are f32; logits f32 or bf16; d_logits the logits' dtype or bf16 for f32 logits (the gradient in f32, rounded once
// into what the bf16 head reads).
// Targets outside [0, V) other than ignore_index (bad input on the CPU, which cannot be reported here without a
// synchronisation) give NaN loss/lse and NaN gradients for that row, so they surface in the loss.
#include <cmath>

#include "kernels/common.cuh"
#include "kernels/cuda_ops.h"

namespace ds::cuda {

namespace {

constexpr int kFwdThreads = 512;

// (m, s): s = sum exp(x - m). Merges two partial sums; an empty part has m = -inf, s = 0.
__device__ __forceinline__ void lse_merge(float& m, float& s, float m2, float s2) {
  if (m2 == -INFINITY) return;
  if (m == -INFINITY) {
    m = m2;
    s = s2;
    return;
  }
  const float mx = fmaxf(m, m2);
  s = s * expf(m - mx) + s2 * expf(m2 - mx);
  m = mx;
}

template <class T>
__global__ void ce_fwd_kernel(float* __restrict__ loss, float* __restrict__ lse, const T* __restrict__ logits,
                              const int32_t* __restrict__ targets, int64_t N, int64_t V, int ignore_index) {
  pdl_enter();  // programmatic dependent launch: wait for the previous kernel (common.cuh)
  __shared__ float sm[32], ss[32];
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5, nwarps = blockDim.x >> 5;
  for (int64_t n = blockIdx.x; n < N; n += gridDim.x) {
    const int32_t tg = targets[n];
    if (tg == ignore_index) {
      if (threadIdx.x == 0) {
        loss[n] = 0.0f;
        if (lse) lse[n] = 0.0f;
      }
      continue;
    }
    const T* x = logits + n * V;
    float m = -INFINITY, s = 0.0f;
    for (int64_t v = threadIdx.x; v < V; v += blockDim.x) {
      const float xv = ldf(x[v]);
      if (xv > m) {
        s = (m == -INFINITY ? 0.0f : s * expf(m - xv)) + 1.0f;
        m = xv;
      } else {
        s += expf(xv - m);
      }
    }
#pragma unroll
    for (int o = 16; o > 0; o >>= 1) {
      const float m2 = __shfl_xor_sync(0xffffffffu, m, o), s2 = __shfl_xor_sync(0xffffffffu, s, o);
      lse_merge(m, s, m2, s2);
    }
    __syncthreads();  // the previous row's readers of sm/ss are done
    if (lane == 0) {
      sm[warp] = m;
      ss[warp] = s;
    }
    __syncthreads();
    if (threadIdx.x == 0) {
      float M = sm[0], S = ss[0];
      for (int w = 1; w < nwarps; ++w) lse_merge(M, S, sm[w], ss[w]);
      const float l = M + logf(S);
      const bool bad = tg < 0 || int64_t(tg) >= V;
      loss[n] = bad ? NAN : l - ldf(x[tg]);
      if (lse) lse[n] = bad ? NAN : l;
    }
  }
}

// VEC consecutive elements of T as one load / store (f32: float4; bf16: 8 bytes).
template <class T, int VEC> struct alignas(sizeof(T) * VEC) Pack {
  T v[VEC];
};

// Columns on blockIdx.x / threadIdx.x in groups of VEC (V % VEC == 0, rows aligned to VEC elements; VEC 1 for any
// V), rows on blockIdx.y (grid-stride both ways). Each element's arithmetic is the same at any VEC: the wider
// loads only put more bytes in flight (the scalar loop streamed the 2 GB of an 16k x 32k f32 logits tensor at
// ~1.5 TB/s).
template <class T, class D, int VEC>
__global__ void ce_bwd_kernel(D* __restrict__ d_logits, const T* __restrict__ logits, const float* __restrict__ lse,
                              const int32_t* __restrict__ targets, const float* __restrict__ row_scale, int64_t N,
                              int64_t V, float d_scale, int ignore_index, bool add) {
  pdl_enter();  // programmatic dependent launch: wait for the previous kernel (common.cuh)
  using P = Pack<T, VEC>;
  using PD = Pack<D, VEC>;
  const int64_t VV = V / VEC;
  for (int64_t n = blockIdx.y; n < N; n += gridDim.y) {
    const int32_t tg = targets[n];
    PD* d = reinterpret_cast<PD*>(d_logits + n * V);
    const int64_t v0 = blockIdx.x * int64_t(blockDim.x) + threadIdx.x, dv = int64_t(gridDim.x) * blockDim.x;
    if (tg == ignore_index) {
      if (!add)
        for (int64_t v = v0; v < VV; v += dv) {
          PD z;
#pragma unroll
          for (int j = 0; j < VEC; ++j) z.v[j] = cvt<D>(0.0f);
          d[v] = z;
        }
      continue;
    }
    const bool bad = tg < 0 || int64_t(tg) >= V;
    const float l = bad ? NAN : lse[n];
    const float k = row_scale ? d_scale * row_scale[n] : d_scale;
    const P* x = reinterpret_cast<const P*>(logits + n * V);
    for (int64_t v = v0; v < VV; v += dv) {
      const P xv = x[v];
      PD o = add ? d[v] : PD{};
#pragma unroll
      for (int j = 0; j < VEC; ++j) {
        const int64_t c = v * VEC + j;
        const float g = k * (expf(ldf(xv.v[j]) - l) - (c == tg ? 1.0f : 0.0f));
        o.v[j] = cvt<D>(add ? ldf(o.v[j]) + g : g);
      }
      d[v] = o;
    }
  }
}

}  // namespace

void cross_entropy_forward(const Context& ctx, Tensor loss, Tensor lse, Tensor logits, Tensor targets,
                           int ignore_index) {
  cudaStream_t st = prepare(ctx);
  const int64_t N = logits.rows(), V = logits.cols();
  if (N == 0) return;
  dispatch_fb(logits.dtype, "cross_entropy_forward", [&](auto zero) {
    using T = decltype(zero);
    launch(ce_fwd_kernel<T>, unsigned(std::min<int64_t>(N, 1 << 20)), kFwdThreads, 0, st,
        dptr<float>(loss), lse.empty() ? nullptr : dptr<float>(lse), dptr<const T>(logits),
        dptr<const int32_t>(targets), N, V, ignore_index);
  });
  DS_CUDA_LAUNCH_CHECK("ce_fwd_kernel");
}

void cross_entropy_backward(const Context& ctx, Tensor d_logits, Tensor logits, Tensor lse, Tensor targets,
                            double d_scale, int ignore_index, Accum acc, Tensor row_scale) {
  cudaStream_t st = prepare(ctx);
  const int64_t N = logits.rows(), V = logits.cols();
  if (N == 0 || V == 0) return;
  constexpr int kThreads = 256, kVec = 4;
  auto aligned = [](const Tensor& t) { return reinterpret_cast<uintptr_t>(t.data) % (kVec * dtype_size(t.dtype)) == 0; };
  const bool vec = V % kVec == 0 && aligned(logits) && aligned(d_logits);
  const int64_t units = vec ? V / kVec : V;
  const dim3 grid(unsigned(std::min<int64_t>((units + kThreads - 1) / kThreads, 1024)),
                  unsigned(std::min<int64_t>(N, 65535)));
  auto run = [&](auto t_zero, auto d_zero) {
    using T = decltype(t_zero);
    using D = decltype(d_zero);
    launch(vec ? ce_bwd_kernel<T, D, kVec> : ce_bwd_kernel<T, D, 1>, grid, kThreads, 0, st, dptr<D>(d_logits),
           dptr<const T>(logits), dptr<const float>(lse), dptr<const int32_t>(targets),
           row_scale.empty() ? nullptr : dptr<const float>(row_scale), N, V, float(d_scale), ignore_index,
           acc == Accum::add);
  };
  // d_logits: the logits' dtype, or bf16 for f32 logits (ops.cpp)
  if (logits.dtype == DType::f32 && d_logits.dtype == DType::bf16)
    run(float{}, bf16_t{});
  else
    cuda::dispatch_fb(logits.dtype, "cross_entropy_backward", [&](auto zero) { run(zero, zero); });
  DS_CUDA_LAUNCH_CHECK("ce_bwd_kernel");
}

}  // namespace ds::cuda
