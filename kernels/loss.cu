// CUDA twins of the cross-entropy loss (lib/ops/cpu/loss.cpp is the reference), fused with the softmax:
// the forward streams each row once with an online logsumexp (running max and rescaled sum in f32, merged across
// threads), so no [N, V] probability tensor is ever formed; the backward recomputes softmax from the saved lse
// and writes d_logits directly (=|+=) d_scale * row_scale[n] * (exp(x - lse) - onehot). loss, lse and row_scale
// are f32; logits f32 or bf16; d_logits the logits' dtype or bf16 for f32 logits (the gradient in f32, rounded once
// into what the bf16 head reads).
// Targets outside [0, V) other than ignore_index (bad input on the CPU, which cannot be reported here without a
// synchronisation) give NaN loss/lse and NaN gradients for that row, so they surface in the loss.
#include <algorithm>
#include <cmath>

#include "kernels/attn_common.cuh"  // num_sms()
#include "kernels/common.cuh"
#include "kernels/cuda_ops.h"

namespace ds::cuda {

namespace {

// Pack<T, VEC> (common.cuh): VEC consecutive elements as one load / store (the forward's 16 bytes, the backward's
// 4 elements).
constexpr int kFwdThreads = 512;

// A row's elements go in groups of kRowVec<T> (16 bytes: 4 f32 or 8 bf16) when V is a multiple of it and the rows
// start on such a group. 16 bytes for bf16 too: with 8-byte groups the forward made as many trips to memory over
// bf16 logits as over f32 ones, and took as long (H200, 29th session: 645 us for the bench's 16,384 x 32,000).
template <class T> constexpr int kRowVec = int(16 / sizeof(T));
template <class T> bool row_vec_fits(int64_t V, const void* data) { return V % kRowVec<T> == 0 && is_aligned16(data); }

// (m, s): s = sum exp(x - m). Merges two partial sums; an empty part has m = -inf and s = 0, or s = NaN when its
// only logits besides -inf were NaN (lse_add_chunk): added, so that the NaN reaches the row's lse.
__device__ __forceinline__ void lse_merge(float& m, float& s, float m2, float s2) {
  if (m2 == -INFINITY) {
    s += s2;
    return;
  }
  if (m == -INFINITY) {
    m = m2;
    s = s2 + s;
    return;
  }
  const float mx = fmaxf(m, m2);
  s = s * expf(m - mx) + s2 * expf(m2 - mx);
  m = mx;
}

// A thread adds its groups of a row to its running (m, s) kLseChunk groups at a time: the chunk's maximum first (at
// most one rescale a chunk), then exp(x - m) of each element in group order as exp2(x * log2(e) - m * log2(e)) (one
// FFMA and one MUFU.EX2 an element: the online update with an accurate expf and a -inf test an element made the
// forward bound by its instructions, 0.55 ms for the bench's 16,384 x 32,000 bf16 logits, 29th session). The sum
// depends only on a thread's groups and the chunk length, so ce_fwd_kernel and ce_fused_kernel (which holds its groups
// in registers) give the same bits. A -inf logit adds 0 (exp2(-inf)); a NaN logit makes s NaN, also while every
// other logit is -inf.
constexpr int kLseChunk = 4;
constexpr float kLog2e = 1.4426950408889634f;
template <class T, int VEC>
__device__ __forceinline__ void lse_add_chunk(float& m, float& s, const Pack<T, VEC>* p, int n_valid) {
  float cm = -INFINITY;
#pragma unroll
  for (int i = 0; i < kLseChunk; ++i)
    if (i < n_valid)
#pragma unroll
      for (int j = 0; j < VEC; ++j) cm = fmaxf(cm, ldf(p[i].v[j]));  // fmaxf skips NaN: the sum below catches it
  if (cm > m) {
    s = m == -INFINITY ? 0.0f : s * expf(m - cm);
    m = cm;
  }
  if (m == -INFINITY) {  // only -inf (adds 0) and NaN logits so far
#pragma unroll
    for (int i = 0; i < kLseChunk; ++i)
      if (i < n_valid)
#pragma unroll
        for (int j = 0; j < VEC; ++j)
          if (ldf(p[i].v[j]) != -INFINITY) s = NAN;
    return;
  }
  const float ml = m * kLog2e;
#pragma unroll
  for (int i = 0; i < kLseChunk; ++i)
    if (i < n_valid)
#pragma unroll
      for (int j = 0; j < VEC; ++j) s += exp2f(fmaf(ldf(p[i].v[j]), kLog2e, -ml));
}

// The row's logsumexp from each thread's (m, s): a fixed butterfly in the warp, then the warps in order, on thread
// 0 (what the other threads get is meaningless). sm, ss: 32 floats of shared memory each, free on entry (the first
// barrier waits for the previous row's readers). ce_fwd_kernel and ce_fused_kernel share it, so their lse agree.
__device__ __forceinline__ float block_lse(float m, float s, float* sm, float* ss) {
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5, nwarps = blockDim.x >> 5;
#pragma unroll
  for (int o = 16; o > 0; o >>= 1) {
    const float m2 = __shfl_xor_sync(0xffffffffu, m, o), s2 = __shfl_xor_sync(0xffffffffu, s, o);
    cuda::lse_merge(m, s, m2, s2);
  }
  __syncthreads();  // the previous row's readers of sm/ss are done
  if (lane == 0) {
    sm[warp] = m;
    ss[warp] = s;
  }
  __syncthreads();
  if (threadIdx.x != 0) return 0.0f;
  float M = sm[0], S = ss[0];
  for (int w = 1; w < nwarps; ++w) cuda::lse_merge(M, S, sm[w], ss[w]);
  return M + logf(S);
}

// One element of the gradient, g = k * (softmax - onehot) in f32: ce_bwd_kernel and ce_fused_kernel share it, so
// their d_logits agree bit for bit.
__device__ __forceinline__ float ce_grad(float x, float l, float k, bool hit) {
  return k * (expf(x - l) - (hit ? 1.0f : 0.0f));
}

// One block a row (grid-stride over rows). Thread t adds the groups t, t + blockDim, ... of VEC elements (V % VEC
// == 0 and the rows aligned to VEC elements; VEC 1 for any V) in that order, a chunk of kLseChunk loads at a time; the
// warps' partial sums merge in a fixed butterfly and then in warp order, so the result depends only on V, VEC and
// the block size (deterministic). Two blocks a SM (64 registers): a chunk of bf16 groups of 8 spilled at 40.
template <class T, int VEC>
__global__ void __launch_bounds__(kFwdThreads, 2)
    ce_fwd_kernel(float* __restrict__ loss, float* __restrict__ lse, const T* __restrict__ logits,
                  const int32_t* __restrict__ targets, int64_t N, int64_t V, int ignore_index) {
  pdl_enter();  // programmatic dependent launch: wait for the previous kernel (common.cuh)
  __shared__ float sm[32], ss[32];
  const int VV = int(V / VEC);  // V < 2^30, checked on the host
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
    const Pack<T, VEC>* xp = reinterpret_cast<const Pack<T, VEC>*>(x);
    float m = -INFINITY, s = 0.0f;
    for (int v = threadIdx.x; v < VV; v += kLseChunk * blockDim.x) {  // a chunk's loads all before its sums
      Pack<T, VEC> p[kLseChunk];
      int n_valid = 0;
#pragma unroll
      for (int u = 0; u < kLseChunk; ++u)
        if (v + u * int(blockDim.x) < VV) {
          p[u] = xp[v + u * blockDim.x];
          n_valid = u + 1;
        }
      cuda::lse_add_chunk(m, s, p, n_valid);
    }
    const float l = cuda::block_lse(m, s, sm, ss);
    if (threadIdx.x == 0) {
      const bool bad = tg < 0 || int64_t(tg) >= V;
      loss[n] = bad ? NAN : l - ldf(x[tg]);
      if (lse) lse[n] = bad ? NAN : l;
    }
  }
}

constexpr int kBwdThreads = 256;
constexpr int kBwdUnroll = 2;        // groups a thread loads before it computes any (bytes in flight)
// Blocks a SM: 8 (2,048 threads, a full H100/H200 SM, in 32 registers); with add, which loads d as well, 6 (42
// registers: no spills).
constexpr int bwd_blocks_per_sm(bool add) { return add ? 6 : 8; }

// Rows on blockIdx.y, columns on blockIdx.x / threadIdx.x in groups of VEC (V % VEC == 0, rows aligned to VEC
// elements of T and of D; VEC 1 for any V), both grid-stride. The grid is sized to the GPU (cross_entropy_backward),
// not to N x V: each thread keeps kBwdUnroll loads in flight (~64 KB a SM with float4), which the streaming needs
// (one scalar load a thread streamed the 2 GB f32 logits of a 16k x 32k step at ~1.5 TB/s). Each element's
// arithmetic is the same at any VEC and grid: g = k * (expf(x - lse) - onehot) in f32, rounded once into D (with
// add: d read, added in f32, the sum rounded once), so results do not depend on the launch shape.
template <class T, class D, int VEC, bool ADD>
__global__ void __launch_bounds__(kBwdThreads, bwd_blocks_per_sm(ADD))
    ce_bwd_kernel(D* __restrict__ d_logits, const T* __restrict__ logits, const float* __restrict__ lse,
                  const int32_t* __restrict__ targets, const float* __restrict__ row_scale, int64_t N, int64_t V,
                  float d_scale, int ignore_index) {
  pdl_enter();  // programmatic dependent launch: wait for the previous kernel (common.cuh)
  using P = Pack<T, VEC>;
  using PD = Pack<D, VEC>;
  // column indices in int (V < 2^30, checked on the host): 64-bit ones cost the registers that keep 8 blocks a SM
  const int VV = int(V / VEC);
  const int v0 = blockIdx.x * blockDim.x + threadIdx.x, dv = gridDim.x * blockDim.x;
  for (int64_t n = blockIdx.y; n < N; n += gridDim.y) {
    const int32_t tg = targets[n];
    PD* d = reinterpret_cast<PD*>(d_logits + n * V);
    if (tg == ignore_index) {
      if (!ADD) {
        PD z;
#pragma unroll
        for (int j = 0; j < VEC; ++j) z.v[j] = cvt<D>(0.0f);
        for (int v = v0; v < VV; v += dv) d[v] = z;
      }
      continue;
    }
    const bool bad = tg < 0 || int64_t(tg) >= V;
    const float l = bad ? NAN : lse[n];
    const float k = row_scale ? d_scale * row_scale[n] : d_scale;
    const P* x = reinterpret_cast<const P*>(logits + n * V);
    for (int v = v0; v < VV; v += kBwdUnroll * dv) {
      P xv[kBwdUnroll];
      PD o[kBwdUnroll];
#pragma unroll
      for (int u = 0; u < kBwdUnroll; ++u) {
        const int w = v + u * dv;
        if (w < VV) {
          xv[u] = x[w];
          if (ADD) o[u] = d[w];
        }
      }
#pragma unroll
      for (int u = 0; u < kBwdUnroll; ++u) {
        const int w = v + u * dv;
        if (w >= VV) break;
#pragma unroll
        for (int j = 0; j < VEC; ++j) {
          const int c = w * VEC + j;
          const float g = cuda::ce_grad(ldf(xv[u].v[j]), l, k, c == tg);
          o[u].v[j] = cvt<D>(ADD ? ldf(o[u].v[j]) + g : g);
        }
        d[w] = o[u];
      }
    }
  }
}

// Blocks a SM of the fused kernel: a thread holds G groups of its row in registers (G * VEC * sizeof(T) / 4 of
// them: 64 for f32 rows of up to 32,768), which one block of 512 threads a SM leaves room for.
constexpr int fused_blocks_per_sm(int G) { return G <= 4 ? 2 : 1; }

// cross_entropy_forward and cross_entropy_backward (overwrite, no row_scale) of a row in one pass over its logits:
// one block a row (grid-stride), thread t loads its groups t, t + 512, ... (at most G, all at once: the row stays
// in registers), adds them in ce_fwd_kernel's order and merges with its block_lse (the same block size and VEC:
// the same lse bits), then writes each element's ce_grad from the registers (the same d_logits bits as
// ce_bwd_kernel). VEC as in ce_fwd_kernel; d_logits aligned to VEC elements as well.
template <class T, class D, int VEC, int G>
__global__ void __launch_bounds__(kFwdThreads, fused_blocks_per_sm(G))
    ce_fused_kernel(float* __restrict__ loss, float* __restrict__ lse, D* __restrict__ d_logits,
                    const T* __restrict__ logits, const int32_t* __restrict__ targets, int64_t N, int64_t V,
                    float d_scale, int ignore_index) {
  pdl_enter();  // programmatic dependent launch: wait for the previous kernel (common.cuh)
  static_assert(G % kLseChunk == 0, "the fused kernel adds its groups in lse_add_chunk's chunks");
  using P = Pack<T, VEC>;
  using PD = Pack<D, VEC>;
  __shared__ float sm[32], ss[32], l_row;
  const int VV = int(V / VEC);  // V < 2^30 and VV <= G * kFwdThreads, checked on the host
  for (int64_t n = blockIdx.x; n < N; n += gridDim.x) {
    const int32_t tg = targets[n];
    PD* d = reinterpret_cast<PD*>(d_logits + n * V);
    if (tg == ignore_index) {
      if (threadIdx.x == 0) {
        loss[n] = 0.0f;
        lse[n] = 0.0f;
      }
      PD z;
#pragma unroll
      for (int j = 0; j < VEC; ++j) z.v[j] = cvt<D>(0.0f);
      for (int v = threadIdx.x; v < VV; v += kFwdThreads) d[v] = z;
      continue;
    }
    const T* x = logits + n * V;
    const P* xp = reinterpret_cast<const P*>(x);
    P p[G];
#pragma unroll
    for (int i = 0; i < G; ++i)
      if (int(threadIdx.x) + i * kFwdThreads < VV) p[i] = xp[threadIdx.x + i * kFwdThreads];
    float m = -INFINITY, s = 0.0f;
    const int held = int(threadIdx.x) < VV ? (VV - 1 - int(threadIdx.x)) / kFwdThreads + 1 : 0;  // groups loaded
#pragma unroll
    for (int c = 0; c < G; c += kLseChunk) cuda::lse_add_chunk(m, s, p + c, min(max(held - c, 0), kLseChunk));
    const float l = cuda::block_lse(m, s, sm, ss);
    if (threadIdx.x == 0) {
      const bool bad = tg < 0 || int64_t(tg) >= V;
      loss[n] = bad ? NAN : l - ldf(x[tg]);
      lse[n] = bad ? NAN : l;
      l_row = bad ? NAN : l;  // read below; written again only after the next row's block_lse barriers
    }
    __syncthreads();
    const float lr = l_row;
#pragma unroll
    for (int i = 0; i < G; ++i) {
      const int w = int(threadIdx.x) + i * kFwdThreads;
      if (w >= VV) break;
      PD o;
#pragma unroll
      for (int j = 0; j < VEC; ++j) o.v[j] = cvt<D>(cuda::ce_grad(ldf(p[i].v[j]), lr, d_scale, w * VEC + j == tg));
      d[w] = o;
    }
  }
}

}  // namespace

void cross_entropy_forward(const Context& ctx, Tensor loss, Tensor lse, Tensor logits, Tensor targets,
                           int ignore_index) {
  cudaStream_t st = prepare(ctx);
  const int64_t N = logits.rows(), V = logits.cols();
  if (N == 0) return;
  DS_CHECK(V < (int64_t(1) << 30), "cross_entropy_forward: V " + std::to_string(V) +
                                      " too large for the kernel's int column indices (2^30)");
  cuda::dispatch_fb(logits.dtype, "cross_entropy_forward", [&](auto zero) {
    using T = decltype(zero);
    // 16-byte loads when every row starts on such a word (kRowVec); the scalar kernel otherwise
    const bool vec = row_vec_fits<T>(V, logits.data);
    launch(vec ? ce_fwd_kernel<T, kRowVec<T>> : ce_fwd_kernel<T, 1>, unsigned(std::min<int64_t>(N, 1 << 20)),
           kFwdThreads, 0, st, dptr<float>(loss), lse.empty() ? nullptr : dptr<float>(lse), dptr<const T>(logits),
           dptr<const int32_t>(targets), N, V, ignore_index);
  });
  DS_CUDA_LAUNCH_CHECK("ce_fwd_kernel");
}

void cross_entropy_backward(const Context& ctx, Tensor d_logits, Tensor logits, Tensor lse, Tensor targets,
                            double d_scale, int ignore_index, Accum acc, Tensor row_scale) {
  cudaStream_t st = prepare(ctx);
  const int64_t N = logits.rows(), V = logits.cols();
  if (N == 0 || V == 0) return;
  DS_CHECK(V < (int64_t(1) << 30), "cross_entropy_backward: V " + std::to_string(V) +
                                      " too large for the kernel's int column indices (2^30)");
  const bool add = acc == Accum::add;
  auto run = [&](auto t_zero, auto d_zero) {
    using T = decltype(t_zero);
    using D = decltype(d_zero);
    // Groups of 4 elements when the rows of both tensors start on such a group (any VEC gives the same values: the
    // arithmetic is per element). 8 bf16 (16 bytes) spilled at the 32 registers of 8 blocks a SM.
    constexpr int kVec = 4;
    const bool vec = V % kVec == 0 && is_aligned_to(logits.data, kVec * sizeof(T)) &&
                     is_aligned_to(d_logits.data, kVec * sizeof(D));
    // Enough blocks to fill the GPU and no more (grid-stride beyond); several blocks a row only when rows are fewer
    // than that, and rows spread evenly over blockIdx.y (N = 16,384 on 132 SMs: 1,024 blocks of 16 rows each).
    const int64_t groups = vec ? V / kVec : V;
    const int64_t target = int64_t(attn::num_sms()) * cuda::bwd_blocks_per_sm(add);
    const int64_t per_row_max = (groups + kBwdThreads * kBwdUnroll - 1) / (kBwdThreads * kBwdUnroll);
    const int64_t gx = std::clamp<int64_t>((target + N - 1) / N, 1, per_row_max);
    const int64_t rows_per_block = (N + target / gx - 1) / (target / gx);
    const int64_t gy = std::min<int64_t>((N + rows_per_block - 1) / rows_per_block, 65535);
    const dim3 grid{unsigned(gx), unsigned(gy)};
    auto kernel = vec ? (add ? ce_bwd_kernel<T, D, kVec, true> : ce_bwd_kernel<T, D, kVec, false>)
                      : (add ? ce_bwd_kernel<T, D, 1, true> : ce_bwd_kernel<T, D, 1, false>);
    launch(kernel, grid, kBwdThreads, 0, st, dptr<D>(d_logits), dptr<const T>(logits), dptr<const float>(lse),
           dptr<const int32_t>(targets), row_scale.empty() ? nullptr : dptr<const float>(row_scale), N, V,
           float(d_scale), ignore_index);
  };
  // d_logits: the logits' dtype, or bf16 for f32 logits (ops.cpp)
  if (logits.dtype == DType::f32 && d_logits.dtype == DType::bf16)
    run(float{}, bf16_t{});
  else
    cuda::dispatch_fb(logits.dtype, "cross_entropy_backward", [&](auto zero) { run(zero, zero); });
  DS_CUDA_LAUNCH_CHECK("ce_bwd_kernel");
}

void cross_entropy_fused(const Context& ctx, Tensor loss, Tensor lse, Tensor d_logits, Tensor logits, Tensor targets,
                         double d_scale, int ignore_index) {
  const int64_t N = logits.rows(), V = logits.cols();
  if (N == 0) return;
  cudaStream_t st = prepare(ctx);
  auto run = [&](auto t_zero, auto d_zero) {
    using T = decltype(t_zero);
    using D = decltype(d_zero);
    // VEC as cross_entropy_forward picks it (the lse's summation order depends on it); d_logits must then be aligned
    // to it too. Rows longer than G groups a thread, or a misaligned d_logits: the two passes (the same values).
    constexpr int kVec = kRowVec<T>;
    const bool vec = row_vec_fits<T>(V, logits.data);
    const int64_t per_thread = V > 0 ? ((vec ? V / kVec : V) + kFwdThreads - 1) / kFwdThreads : 0;
    // At most 16 groups a thread (64 registers of them), 8 of bf16's 16-byte groups (16 spilled)
    constexpr int kMaxG = sizeof(T) == 2 ? 8 : 16;
    const int max_g = vec ? kMaxG : 16;
    if (per_thread == 0 || per_thread > max_g || (vec && !is_aligned_to(d_logits.data, kVec * sizeof(D)))) {
      cuda::cross_entropy_forward(ctx, loss, lse, logits, targets, ignore_index);
      cuda::cross_entropy_backward(ctx, d_logits, logits, lse, targets, d_scale, ignore_index, Accum::overwrite, {});
      return;
    }
    const int g = per_thread <= 4 ? 4 : per_thread <= 8 ? 8 : 16;  // groups a thread holds
    auto pick = [&](auto vec_c) {
      constexpr int W = decltype(vec_c)::value;
      if constexpr (W == kVec && kMaxG == 8)
        return g == 4 ? ce_fused_kernel<T, D, W, 4> : ce_fused_kernel<T, D, W, 8>;
      else
        return g == 4 ? ce_fused_kernel<T, D, W, 4>
                      : g == 8 ? ce_fused_kernel<T, D, W, 8> : ce_fused_kernel<T, D, W, 16>;
    };
    auto kernel = vec ? pick(std::integral_constant<int, kVec>{}) : pick(std::integral_constant<int, 1>{});
    // as many blocks as are resident at once (grid-stride beyond): a block's next row loads as soon as it is done
    const int64_t grid = std::min<int64_t>(N, int64_t(attn::num_sms()) * cuda::fused_blocks_per_sm(g));
    launch(kernel, unsigned(grid), kFwdThreads, 0, st, dptr<float>(loss), dptr<float>(lse), dptr<D>(d_logits),
           dptr<const T>(logits), dptr<const int32_t>(targets), N, V, float(d_scale), ignore_index);
  };
  // d_logits: the logits' dtype, or bf16 for f32 logits (ops.cpp)
  if (logits.dtype == DType::f32 && d_logits.dtype == DType::bf16)
    run(float{}, bf16_t{});
  else
    cuda::dispatch_fb(logits.dtype, "cross_entropy_fused", [&](auto zero) { run(zero, zero); });
  DS_CUDA_LAUNCH_CHECK("ce_fused_kernel");
}

}  // namespace ds::cuda
