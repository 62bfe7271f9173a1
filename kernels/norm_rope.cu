// CUDA twins of RMSNorm and rotary embedding (lib/ops/cpu/norm_rope.cpp is the reference).
// RMSNorm: one block per row, the sum of squares and the backward's row dot product in f32, rstd saved in f32.
// d_weight (a parameter gradient, f32 or the call's dtype) is summed deterministically: fixed row chunks into an
// f32 scratch, then the chunks in order. RoPE: one thread per (token, head, pair) rotates that pair; the
// angle pos * inv_freq and its cos/sin are computed in double (positions reach 10^5: an f32 angle would be off by
// ~1e-2 rad), then the rotation runs in f32. out may alias in.
#include <algorithm>

#include "kernels/common.cuh"
#include "kernels/cuda_ops.h"

namespace ds::cuda {

namespace {

// The VPT row kernels' steps: v[j] = p[c_j] (0 past D) for this thread's columns c_j = threadIdx.x + j blockDim.x,
// all loads in flight together; and y[c_j] = w[j] (x[j] rs), RMSNorm's output step.
template <int VPT, class T> __device__ __forceinline__ void load_cols(float (&v)[VPT], const T* p, int64_t D) {
#pragma unroll
  for (int j = 0; j < VPT; ++j) {
    const int64_t c = threadIdx.x + int64_t(j) * blockDim.x;
    v[j] = c < D ? ldf(p[c]) : 0.0f;
  }
}
template <int VPT, class T>
__device__ __forceinline__ void store_normed(T* y, const float (&w)[VPT], const float (&x)[VPT], float rs, int64_t D) {
#pragma unroll
  for (int j = 0; j < VPT; ++j) {
    const int64_t c = threadIdx.x + int64_t(j) * blockDim.x;
    if (c < D) y[c] = cvt<T>(w[j] * (x[j] * rs));
  }
}

// Row kernels (RMSNorm and its fusions) at decode sizes are chains of dependent L2 round trips: a strided loop
// whose stores may alias its loads issues one iteration's loads after the previous stores. With VPT > 0 (D <=
// VPT * blockDim) a thread first loads all of its VPT elements and their weights, then computes; the arithmetic
// and each thread's summation order are those of the loop (VPT = 0).
template <class T, int VPT>
__global__ void __launch_bounds__(512)
    rmsnorm_fwd_kernel(T* __restrict__ out, float* __restrict__ rstd, const T* __restrict__ in,
                       const T* __restrict__ w, int64_t rows, int64_t D, float eps) {
  pdl_enter();  // programmatic dependent launch: wait for the previous kernel (common.cuh)
  float wv[VPT > 0 ? VPT : 1];  // the weights' loads go out with the first row's
  if constexpr (VPT > 0) load_cols(wv, w, D);
  for (int64_t r = blockIdx.x; r < rows; r += gridDim.x) {
    const T* x = in + r * D;
    T* y = out + r * D;
    float ss = 0.0f;
    if constexpr (VPT > 0) {
      float xv[VPT];
      load_cols(xv, x, D);
#pragma unroll
      for (int j = 0; j < VPT; ++j)
        if (threadIdx.x + int64_t(j) * blockDim.x < D) ss += xv[j] * xv[j];
      ss = block_sum(ss);
      const float rs = 1.0f / sqrtf(ss / float(D) + eps);
      if (rstd && threadIdx.x == 0) rstd[r] = rs;
      store_normed(y, wv, xv, rs, D);
    } else {
      for (int64_t c = threadIdx.x; c < D; c += blockDim.x) {
        const float v = ldf(x[c]);
        ss += v * v;
      }
      ss = block_sum(ss);
      const float rs = 1.0f / sqrtf(ss / float(D) + eps);
      if (rstd && threadIdx.x == 0) rstd[r] = rs;
      for (int64_t c = threadIdx.x; c < D; c += blockDim.x) y[c] = cvt<T>(ldf(w[c]) * (ldf(x[c]) * rs));
    }
  }
}

// The row kernels' VPT for D elements over `threads` threads: 4 or 8 when they fit, else 0 (the loop).
int row_vpt(int64_t D, int threads) { return D <= 4LL * threads ? 4 : D <= 8LL * threads ? 8 : 0; }

// dx = r * dy * w - r^3 * x * (sum_c dy * w * x) / D
template <class T>
__global__ void rmsnorm_bwd_dx_kernel(T* __restrict__ d_in, const T* __restrict__ d_out, const T* __restrict__ in,
                                      const T* __restrict__ w, const float* __restrict__ rstd, int64_t rows, int64_t D,
                                      bool add) {
  pdl_enter();  // programmatic dependent launch: wait for the previous kernel (common.cuh)
  for (int64_t r = blockIdx.x; r < rows; r += gridDim.x) {
    const T* x = in + r * D;
    const T* dy = d_out + r * D;
    float gx = 0.0f;
    for (int64_t c = threadIdx.x; c < D; c += blockDim.x) gx += ldf(dy[c]) * ldf(w[c]) * ldf(x[c]);
    gx = block_sum(gx);
    const float rs = rstd[r];
    const float k = rs * rs * rs * gx / float(D);
    T* dx = d_in + r * D;
    for (int64_t c = threadIdx.x; c < D; c += blockDim.x) {
      const float v = rs * ldf(dy[c]) * ldf(w[c]) - k * ldf(x[c]);
      dx[c] = cvt<T>(add ? ldf(dx[c]) + v : v);
    }
  }
}

// part[chunk, c] = sum over the chunk's rows of dy * x * rstd (rows in order).
template <class T>
__global__ void rmsnorm_bwd_dw_partial_kernel(float* __restrict__ part, const T* __restrict__ d_out,
                                              const T* __restrict__ in, const float* __restrict__ rstd, int64_t rows,
                                              int64_t D, int64_t chunk_rows) {
  pdl_enter();  // programmatic dependent launch: wait for the previous kernel (common.cuh)
  const int64_t c = blockIdx.x * int64_t(blockDim.x) + threadIdx.x;
  if (c >= D) return;
  const int64_t r0 = blockIdx.y * chunk_rows, r1 = min(rows, r0 + chunk_rows);
  float s = 0.0f;
  for (int64_t r = r0; r < r1; ++r) s += ldf(d_out[r * D + c]) * ldf(in[r * D + c]) * rstd[r];
  part[blockIdx.y * D + c] = s;
}

template <class G>
__global__ void rmsnorm_bwd_dw_final_kernel(G* __restrict__ dw, const float* __restrict__ part, int64_t nchunks,
                                            int64_t D) {
  pdl_enter();  // programmatic dependent launch: wait for the previous kernel (common.cuh)
  const int64_t c = blockIdx.x * int64_t(blockDim.x) + threadIdx.x;
  if (c >= D) return;
  float s = 0.0f;
  for (int64_t k = 0; k < nchunks; ++k) s += part[k * D + c];
  dw[c] = cvt<G>(ldf(dw[c]) + s);
}

// Thread (n, h, i): pair i of token n in head h. sign = +1 forward, -1 backward (transposed rotation).
// Head h of token n reads x[(n * H + h) * xs + xo ...] and writes y[(n * H + h) * ys + yo ...] (xs = ys = R, xo = yo
// = 0 for whole [N, H, R] tensors; rope_cols_forward passes column blocks of wider rows).
template <class T>
__global__ void rope_kernel(T* y, const T* x, const int32_t* __restrict__ pos, const float* __restrict__ inv_freq,
                            int64_t N, int64_t H, int64_t R, double f, double sign, bool add, int64_t xs, int64_t xo,
                            int64_t ys, int64_t yo) {
  pdl_enter();  // programmatic dependent launch: wait for the previous kernel (common.cuh)
  const int64_t P = R / 2;
  for (int64_t t = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; t < N * H * P; t += int64_t(gridDim.x) * blockDim.x) {
    const int64_t nh = t / P, i = t - nh * P, n = nh / H;  // each thread its own angle: decode has few tokens
    double sd, cd;
    sincos(double(pos[n]) * double(inv_freq[i]), &sd, &cd);
    const float c = float(f * cd), s = float(sign * f * sd);
    const int64_t xi = nh * xs + xo + 2 * i, yi = nh * ys + yo + 2 * i;
    const float x0 = ldf(x[xi]), x1 = ldf(x[xi + 1]);
    const float y0 = x0 * c - x1 * s, y1 = x0 * s + x1 * c;
    if (add) {
      y[yi] = cvt<T>(ldf(y[yi]) + y0);
      y[yi + 1] = cvt<T>(ldf(y[yi + 1]) + y1);
    } else {
      y[yi] = cvt<T>(y0);
      y[yi + 1] = cvt<T>(y1);
    }
  }
}

// sum = a + b (rounded to T), out = rmsnorm(sum): rmsnorm_fwd_kernel's arithmetic on the rounded sum (each thread
// reads back only the elements it wrote; sum may alias a or b). VPT as for rmsnorm_fwd_kernel.
template <class T, int VPT>
__global__ void __launch_bounds__(512)
    add_rmsnorm_kernel(T* sum, T* __restrict__ out, const T* a, const T* b, const T* __restrict__ w, int64_t rows,
                       int64_t D, float eps) {
  pdl_enter();  // programmatic dependent launch: wait for the previous kernel (common.cuh)
  float wv[VPT > 0 ? VPT : 1];  // the weights' loads go out with the first row's
  if constexpr (VPT > 0) load_cols(wv, w, D);
  for (int64_t r = blockIdx.x; r < rows; r += gridDim.x) {
    T* x = sum + r * D;
    T* y = out + r * D;
    float ss = 0.0f;
    if constexpr (VPT > 0) {
      float av[VPT], bv[VPT];
      load_cols(av, a + r * D, D);
      load_cols(bv, b + r * D, D);
#pragma unroll
      for (int j = 0; j < VPT; ++j) {
        const int64_t c = threadIdx.x + int64_t(j) * blockDim.x;
        const T v = cvt<T>(av[j] + bv[j]);
        av[j] = ldf(v);
        if (c < D) {
          x[c] = v;
          ss += av[j] * av[j];
        }
      }
      ss = block_sum(ss);
      store_normed(y, wv, av, 1.0f / sqrtf(ss / float(D) + eps), D);
    } else {
      for (int64_t c = threadIdx.x; c < D; c += blockDim.x) {
        const T v = cvt<T>(ldf(a[r * D + c]) + ldf(b[r * D + c]));
        x[c] = v;
        ss += ldf(v) * ldf(v);
      }
      ss = block_sum(ss);
      const float rs = 1.0f / sqrtf(ss / float(D) + eps);
      for (int64_t c = threadIdx.x; c < D; c += blockDim.x) y[c] = cvt<T>(ldf(w[c]) * (ldf(x[c]) * rs));
    }
  }
}

// One block per token i of a [n, Q + R + dr]: q_latent[i] = rmsnorm(a[i, :Q]); pool[slot_rows[i]] = [rmsnorm(a[i,
// Q:Q+R]) ; RoPE(a[i, Q+R:])]. Slot rows outside the pool are skipped (as kv_cache_write does).
template <class T, int VPT>
__global__ void mla_latent_kernel(T* __restrict__ q_latent, T* __restrict__ pool, int64_t slots,
                                  const int32_t* __restrict__ slot_rows, const T* __restrict__ a,
                                  const T* __restrict__ q_norm, const T* __restrict__ kv_norm,
                                  const int32_t* __restrict__ pos, const float* __restrict__ inv_freq, int64_t Q,
                                  int64_t R, int64_t dr, float eps, double f) {
  pdl_enter();  // programmatic dependent launch: wait for the previous kernel (common.cuh)
  const int64_t i = blockIdx.x, W = Q + R + dr;
  const T* x = a + i * W;
  if constexpr (VPT > 0) {  // Q, R <= VPT * blockDim, dr / 2 <= blockDim: every load first (see rmsnorm_fwd_kernel)
    const int t = threadIdx.x, bd = blockDim.x;
    float qv[VPT], qw[VPT], kv[VPT], kw[VPT];
#pragma unroll
    for (int j = 0; j < VPT; ++j) {
      const int64_t c = t + int64_t(j) * bd;
      qv[j] = c < Q ? ldf(x[c]) : 0.0f;
      qw[j] = c < Q ? ldf(q_norm[c]) : 0.0f;
      kv[j] = c < R ? ldf(x[Q + c]) : 0.0f;
      kw[j] = c < R ? ldf(kv_norm[c]) : 0.0f;
    }
    const bool pair = t < dr / 2;
    const float x0 = pair ? ldf(x[Q + R + 2 * t]) : 0.0f, x1 = pair ? ldf(x[Q + R + 2 * t + 1]) : 0.0f;
    const int64_t row = slot_rows[i];
    double sd = 0, cd = 0;
    if (pair) sincos(double(pos[i]) * double(inv_freq[t]), &sd, &cd);
    float ssq = 0.0f, ssk = 0.0f;
#pragma unroll
    for (int j = 0; j < VPT; ++j) {
      const int64_t c = t + int64_t(j) * bd;
      if (c < Q) ssq += qv[j] * qv[j];
      if (c < R) ssk += kv[j] * kv[j];
    }
    block_sum2(ssq, ssk);
    T* dst = row >= 0 && row < slots ? pool + row * (R + dr) : nullptr;
    if (Q > 0) {
      const float rs = 1.0f / sqrtf(ssq / float(Q) + eps);
#pragma unroll
      for (int j = 0; j < VPT; ++j) {
        const int64_t c = t + int64_t(j) * bd;
        if (c < Q) q_latent[i * Q + c] = cvt<T>(qw[j] * (qv[j] * rs));
      }
    }
    if (!dst) return;
    const float rs = 1.0f / sqrtf(ssk / float(R) + eps);
#pragma unroll
    for (int j = 0; j < VPT; ++j) {
      const int64_t c = t + int64_t(j) * bd;
      if (c < R) dst[c] = cvt<T>(kw[j] * (kv[j] * rs));
    }
    if (pair) {
      const float c = float(f * cd), s = float(f * sd);
      dst[R + 2 * t] = cvt<T>(x0 * c - x1 * s);
      dst[R + 2 * t + 1] = cvt<T>(x0 * s + x1 * c);
    }
    return;
  }
  auto norm = [&](const T* src, int64_t D, const T* w, T* dst) {
    float ss = 0.0f;
    for (int64_t c = threadIdx.x; c < D; c += blockDim.x) ss += ldf(src[c]) * ldf(src[c]);
    ss = block_sum(ss);  // every thread calls it (the branch below is uniform over the block)
    const float rs = 1.0f / sqrtf(ss / float(D) + eps);
    if (dst)
      for (int64_t c = threadIdx.x; c < D; c += blockDim.x) dst[c] = cvt<T>(ldf(w[c]) * (ldf(src[c]) * rs));
  };
  if (Q > 0) norm(x, Q, q_norm, q_latent + i * Q);
  const int64_t row = slot_rows[i];
  T* dst = row >= 0 && row < slots ? pool + row * (R + dr) : nullptr;
  norm(x + Q, R, kv_norm, dst);
  if (!dst) return;
  for (int64_t p = threadIdx.x; p < dr / 2; p += blockDim.x) {
    double sd, cd;
    sincos(double(pos[i]) * double(inv_freq[p]), &sd, &cd);
    const float c = float(f * cd), s = float(f * sd);
    const float x0 = ldf(x[Q + R + 2 * p]), x1 = ldf(x[Q + R + 2 * p + 1]);
    dst[R + 2 * p] = cvt<T>(x0 * c - x1 * s);
    dst[R + 2 * p + 1] = cvt<T>(x0 * s + x1 * c);
  }
}

unsigned row_grid(int64_t rows) { return unsigned(std::min<int64_t>(rows, 1 << 20)); }

template <class T>
void rope(const Context& ctx, Tensor y, Tensor x, Tensor pos, Tensor inv_freq, double f, double sign, bool add) {
  cudaStream_t st = prepare(ctx);
  const int64_t N = pos.numel(), R = x.cols(), H = N ? x.rows() / N : 0;
  if (N == 0 || H == 0 || R == 0) return;
  launch(rope_kernel<T>, grid_for(N * H * (R / 2), 256), 256, 0, st, dptr<T>(y), dptr<const T>(x), dptr<const int32_t>(pos),
                                                             dptr<const float>(inv_freq), N, H, R, f, sign, add, R, 0,
                                                             R, 0);
  DS_CUDA_LAUNCH_CHECK("rope_kernel");
}

}  // namespace

void rmsnorm_forward(const Context& ctx, Tensor out, Tensor rstd, Tensor in, Tensor weight, double eps) {
  cudaStream_t st = prepare(ctx);
  const int64_t rows = in.rows(), D = in.cols();
  if (rows == 0 || D == 0) return;
  dispatch_fb(out.dtype, "rmsnorm_forward", [&](auto zero) {
    using T = decltype(zero);
    const int threads = row_threads(D), vpt = row_vpt(D, threads);
    auto kernel = vpt == 4 ? rmsnorm_fwd_kernel<T, 4> : vpt == 8 ? rmsnorm_fwd_kernel<T, 8> : rmsnorm_fwd_kernel<T, 0>;
    launch(kernel, row_grid(rows), threads, 0, st,
        dptr<T>(out), rstd.empty() ? nullptr : dptr<float>(rstd), dptr<const T>(in), dptr<const T>(weight), rows, D,
        float(eps));
  });
  DS_CUDA_LAUNCH_CHECK("rmsnorm_fwd_kernel");
}

void rmsnorm_backward(const Context& ctx, Tensor d_in, Tensor d_weight, Tensor d_out, Tensor in, Tensor weight,
                      Tensor rstd, Accum acc_in) {
  cudaStream_t st = prepare(ctx);
  const int64_t rows = in.rows(), D = in.cols();
  if (rows == 0 || D == 0) return;
  dispatch_fb(d_out.dtype, "rmsnorm_backward", [&](auto zero) {
    using T = decltype(zero);
    if (!d_in.empty()) {
      launch(rmsnorm_bwd_dx_kernel<T>, row_grid(rows), row_threads(D), 0, st,
          dptr<T>(d_in), dptr<const T>(d_out), dptr<const T>(in), dptr<const T>(weight), dptr<const float>(rstd),
          rows, D, acc_in == Accum::add);
      DS_CUDA_LAUNCH_CHECK("rmsnorm_bwd_dx_kernel");
    }
    if (!d_weight.empty()) {
      const int64_t nchunks = std::min<int64_t>(std::max<int64_t>(rows / 64, 1), 1024);
      const int64_t chunk_rows = (rows + nchunks - 1) / nchunks;
      TempBuffer part(sizeof(float) * size_t(nchunks * D), st);
      const dim3 grid(unsigned((D + 127) / 128), unsigned(nchunks));
      launch(rmsnorm_bwd_dw_partial_kernel<T>, grid, 128, 0, st, part.as<float>(), dptr<const T>(d_out),
                                                             dptr<const T>(in), dptr<const float>(rstd), rows, D,
                                                             chunk_rows);
      DS_CUDA_LAUNCH_CHECK("rmsnorm_bwd_dw_partial_kernel");
      dispatch_fb(d_weight.dtype, "rmsnorm_backward", [&](auto gz) {
        using G = decltype(gz);
        launch(rmsnorm_bwd_dw_final_kernel<G>, unsigned((D + 127) / 128), 128, 0, st, dptr<G>(d_weight),
                                                                                  part.as<const float>(), nchunks, D);
      });
      DS_CUDA_LAUNCH_CHECK("rmsnorm_bwd_dw_final_kernel");
    }
  });
}

void rope_forward(const Context& ctx, Tensor out, Tensor in, Tensor pos, Tensor inv_freq, double attn_factor) {
  dispatch_fb(out.dtype, "rope_forward", [&](auto zero) {
    rope<decltype(zero)>(ctx, out, in, pos, inv_freq, attn_factor, 1.0, false);
  });
}

void rope_backward(const Context& ctx, Tensor d_in, Tensor d_out, Tensor pos, Tensor inv_freq, double attn_factor,
                   Accum acc) {
  dispatch_fb(d_in.dtype, "rope_backward", [&](auto zero) {
    rope<decltype(zero)>(ctx, d_in, d_out, pos, inv_freq, attn_factor, -1.0, acc == Accum::add);
  });
}

void add_rmsnorm_forward(const Context& ctx, Tensor sum, Tensor out, Tensor a, Tensor b, Tensor weight, double eps) {
  cudaStream_t st = prepare(ctx);
  const int64_t rows = sum.rows(), D = sum.cols();
  if (rows == 0 || D == 0) return;
  dispatch_fb(out.dtype, "add_rmsnorm_forward", [&](auto zero) {
    using T = decltype(zero);
    const int threads = row_threads(D), vpt = row_vpt(D, threads);
    auto kernel = vpt == 4 ? add_rmsnorm_kernel<T, 4> : vpt == 8 ? add_rmsnorm_kernel<T, 8> : add_rmsnorm_kernel<T, 0>;
    launch(kernel, row_grid(rows), threads, 0, st, dptr<T>(sum), dptr<T>(out), dptr<const T>(a), dptr<const T>(b),
           dptr<const T>(weight), rows, D, float(eps));
  });
  DS_CUDA_LAUNCH_CHECK("add_rmsnorm_kernel");
}

void rope_cols_forward(const Context& ctx, Tensor out, int64_t out_col, Tensor in, int64_t in_col, Tensor pos,
                       Tensor inv_freq, double attn_factor) {
  cudaStream_t st = prepare(ctx);
  const int64_t N = in.dim(0), H = in.dim(1), R = 2 * inv_freq.numel();
  if (N == 0 || H == 0 || R == 0) return;
  dispatch_fb(out.dtype, "rope_cols_forward", [&](auto zero) {
    using T = decltype(zero);
    launch(rope_kernel<T>, grid_for(N * H * (R / 2), 256), 256, 0, st, dptr<T>(out), dptr<const T>(in),
                                                               dptr<const int32_t>(pos), dptr<const float>(inv_freq),
                                                               N, H, R, attn_factor, 1.0, false, in.dim(2), in_col,
                                                               out.dim(2), out_col);
  });
  DS_CUDA_LAUNCH_CHECK("rope_kernel");
}

void mla_latent_forward(const Context& ctx, Tensor q_latent, Tensor kv_pool, Tensor slot_rows, Tensor a, Tensor q_norm,
                        Tensor kv_norm, double eps, Tensor pos, Tensor inv_freq, double attn_factor) {
  cudaStream_t st = prepare(ctx);
  const int64_t n = slot_rows.numel(), Q = q_norm.empty() ? 0 : q_norm.numel(), R = kv_norm.numel(), dr = kv_pool.dim(2) - R;
  if (n == 0) return;
  dispatch_fb(a.dtype, "mla_latent_forward", [&](auto zero) {
    using T = decltype(zero);
    const int threads = 128, vpt = std::max(Q, R) <= 4 * threads && dr / 2 <= threads ? 4 : 0;
    launch(vpt == 4 ? mla_latent_kernel<T, 4> : mla_latent_kernel<T, 0>, unsigned(n), threads, 0, st,
        Q ? dptr<T>(q_latent) : nullptr, dptr<T>(kv_pool), kv_pool.dim(0) * kv_pool.dim(1),
        dptr<const int32_t>(slot_rows), dptr<const T>(a), Q ? dptr<const T>(q_norm) : nullptr,
        dptr<const T>(kv_norm), dptr<const int32_t>(pos), dptr<const float>(inv_freq), Q, R, dr, float(eps),
        attn_factor);
  });
  DS_CUDA_LAUNCH_CHECK("mla_latent_kernel");
}

}  // namespace ds::cuda
