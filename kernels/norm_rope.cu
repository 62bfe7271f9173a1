// CUDA twins of RMSNorm and rotary embedding (lib/ops/cpu/norm_rope.cpp is the reference).
// RMSNorm: the sum of squares and the backward's row dot product in f32, rstd saved in f32. Rows whose width allows
// 16-byte words (D a multiple of 8 bf16 / 4 f32, aligned pointers) take the vectorized kernels: a group of G lanes
// per row, several rows per block, every word of a row in flight at once; they sum in exactly the order of the
// strided one-block-per-row kernels (strided_row_sum), so both give the same bits and the decode fusions that share
// rmsnorm_fwd_kernel's order (add_rmsnorm, moe_combine's norm, mla_latent) still match rmsnorm_forward. d_weight
// (a parameter gradient, f32 or the call's dtype) is summed deterministically: per block over fixed rows into an
// f32 scratch (fused into the vectorized d_in kernel, which has the rows loaded), then over the blocks in a fixed
// order by a column-parallel final kernel. RoPE: one thread per (token, pair, group of heads) rotates that pair in
// those heads; the angle pos * inv_freq and its cos/sin are computed in double (positions reach 10^5: an f32 angle
// would be off by ~1e-2 rad), then the rotation runs in f32. out may alias in.
#include <algorithm>
#include <memory>
#include <type_traits>

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
                       const T* __restrict__ w, int64_t rows, int64_t D, int64_t ldx, float eps) {
  pdl_enter();  // programmatic dependent launch: wait for the previous kernel (common.cuh)
  float wv[VPT > 0 ? VPT : 1];  // the weights' loads go out with the first row's
  if constexpr (VPT > 0) load_cols(wv, w, D);
  for (int64_t r = blockIdx.x; r < rows; r += gridDim.x) {
    const T* x = in + r * ldx;
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

// Hides a word's value from the compiler, which then unpacks it again rather than keep its floats live.
__device__ __forceinline__ void launder(uint4& u) { asm volatile("" : "+r"(u.x), "+r"(u.y), "+r"(u.z), "+r"(u.w)); }

// ---- vectorized rows -------------------------------------------------------------------------------------------
// A strided row kernel runs Tb = row_threads(D) threads on a row: thread t sums elements t + j Tb (j in order), then
// block_sum adds the threads up. The vectorized kernels give a row G = Tb / VE lanes (VE = kVec<T>) and lane l the
// 16-byte words l + j G: element e of lane l's word j is element j Tb + l VE + e, exactly the elements of strided
// thread l VE + e, in the same j order. So lane l keeps VE sums s[e], and strided_row_sum adds them in block_sum's
// order: its warp_sum (xor over t = l VE + e: across lanes for o >= VE, inside the lane below), then its second
// warp_sum over the Tb / 32 warps (zero slots first: +0.0f, which is what those stages add). Partners 32 or more
// lanes away (G > 32: D >= 2048 bf16, >= 1024 f32) exchange through xbuf (blockDim floats); then every thread of
// the block must call it, which the kernels do (no early return before their last call).
template <int VE>
__device__ __forceinline__ float strided_row_sum(float (&s)[VE], int G, float* xbuf) {
#pragma unroll
  for (int o = 16; o > 0; o >>= 1) {
    if (o >= VE) {
#pragma unroll
      for (int e = 0; e < VE; ++e) s[e] += __shfl_xor_sync(0xffffffffu, s[e], o / VE);
    } else {
      float t[VE];
#pragma unroll
      for (int e = 0; e < VE; ++e) t[e] = s[e] + s[e ^ o];
#pragma unroll
      for (int e = 0; e < VE; ++e) s[e] = t[e];
    }
  }
  float v = s[0] + 0.0f;  // block_sum's first stage of the second warp_sum adds an empty slot (Tb / 32 <= 16 warps)
  const int nwarps = G * VE / 32;
  for (int o = 16; o > 0; o >>= 1) {
    if (o >= nwarps) continue;  // an empty slot again: v + 0 == v now
    const int d = o * 32 / VE;  // the lane of warp W ^ o
    if (d < 32) {
      v += __shfl_xor_sync(0xffffffffu, v, d);
    } else {
      __syncthreads();  // earlier readers of xbuf are done
      xbuf[threadIdx.x] = v;
      __syncthreads();
      v += xbuf[threadIdx.x ^ d];
    }
  }
  return v;
}

// rmsnorm_fwd_kernel's values with 16-byte words: blockDim / G rows per block, one row per group of G lanes, NV
// words per lane. The weights load with the row when NV <= 4, after the sum otherwise (registers).
// ADD (add_rmsnorm_forward): the row is in + b (rows of D, not ldx), rounded to T word by word as add_kernel rounds
// it and stored to sum, then normalised: the values of add then this kernel, with one read of the sum fewer. sum
// may alias in or b (a lane reads its words before it writes them; the normalised row comes from registers).
template <class T, int NV, bool ADD = false>
__global__ void __launch_bounds__(256, NV <= 2 ? 4 : NV <= 8 ? 3 : 1)  // registers: 24+ warps of loads per SM
    rmsnorm_fwd_vec_kernel(T* __restrict__ out, float* __restrict__ rstd, const T* in, const T* __restrict__ w,
                           int64_t rows, int64_t D, int64_t ldx, int G, float eps, const T* b, T* sum) {
  pdl_enter();  // programmatic dependent launch: wait for the previous kernel (common.cuh)
  constexpr int VE = kVec<T>;
  __shared__ float xbuf[256];
  const int l = threadIdx.x % G;
  const int64_t r = int64_t(blockIdx.x) * (blockDim.x / G) + threadIdx.x / G, nvec = D / VE;
  const bool live = r < rows;
  const uint4* x4 = reinterpret_cast<const uint4*>(in) + (live ? r : 0) * (ldx / VE);
  const uint4* w4 = reinterpret_cast<const uint4*>(w);
  const uint4 zero = make_uint4(0, 0, 0, 0);
  uint4 xv[NV], wv[NV], bv[ADD ? NV : 1];
#pragma unroll
  for (int j = 0; j < NV; ++j) {
    const int64_t v = l + int64_t(j) * G;
    const bool ok = live && v < nvec;
    xv[j] = ok ? x4[v] : zero;
    if constexpr (ADD) bv[j] = ok ? reinterpret_cast<const uint4*>(b)[r * nvec + v] : zero;
    if constexpr (NV <= 4) wv[j] = ok ? w4[v] : zero;
  }
  if constexpr (ADD) {
#pragma unroll
    for (int j = 0; j < NV; ++j) {
      const int64_t v = l + int64_t(j) * G;
      float xf[VE], bf[VE];
      unpack16(xv[j], xf);
      unpack16(bv[j], bf);
#pragma unroll
      for (int e = 0; e < VE; ++e) xf[e] += bf[e];
      xv[j] = pack16(xf);  // rounded as cvt<T>; zero words stay zero
      if (live && v < nvec) reinterpret_cast<uint4*>(sum)[r * nvec + v] = xv[j];
    }
  }
  float s[VE];
#pragma unroll
  for (int e = 0; e < VE; ++e) s[e] = 0.0f;
#pragma unroll
  for (int j = 0; j < NV; ++j) {
    float f[VE];
    unpack16(xv[j], f);
#pragma unroll
    for (int e = 0; e < VE; ++e) s[e] += f[e] * f[e];  // a zero word adds +0: what skipping it leaves
  }
  const float ss = strided_row_sum(s, G, xbuf);
  const float rs = 1.0f / sqrtf(ss / float(D) + eps);
  if (!live) return;
  if (rstd && l == 0) rstd[r] = rs;
  uint4* y4 = reinterpret_cast<uint4*>(out) + r * nvec;
#pragma unroll
  for (int j = 0; j < NV; ++j) {
    const int64_t v = l + int64_t(j) * G;
    if (v >= nvec) continue;
    if constexpr (NV > 4) wv[j] = w4[v];
    launder(xv[j]);  // unpacked again: the sum's VE floats per word need not stay live
    float xf[VE], wf[VE], y[VE];
    unpack16(xv[j], xf);
    unpack16(wv[j], wf);
#pragma unroll
    for (int e = 0; e < VE; ++e) y[e] = wf[e] * (xf[e] * rs);
    y4[v] = pack16(y);
  }
}

// rmsnorm_bwd_dx_kernel's d_in (DX) with 16-byte words, as rmsnorm_fwd_vec_kernel lays rows out, and (DW) the
// d_weight partial of the block's rows: group g takes rows (b R + i) * groups + g, i = 0 .. R-1 in order, summing
// dy * x * rstd per column into its row of colsum [groups][D] (dynamic shared; each thread only touches its own
// columns until the barrier), then the groups' sums are added in group order into part[b, :]. One pass over dy and
// x serves both gradients. A group's sums lie element-major ([VE][D / VE]: column c = v VE + e at e D / VE + v), so
// the lanes' adds hit consecutive words (word-major, lane l's stride of VE floats put 8 lanes on each bank used).
template <class T, int NV, bool DX, bool DW>
__global__ void __launch_bounds__(256, NV >= 8 ? 1 : DX && DW ? 2 : 3)
    rmsnorm_bwd_vec_kernel(T* __restrict__ d_in, float* __restrict__ part, const T* __restrict__ d_out,
                           const T* __restrict__ in, const T* __restrict__ w, const float* __restrict__ rstd,
                           int64_t rows, int64_t D, int64_t ldx, int64_t ldd, int G, int R, int add) {
  pdl_enter();  // programmatic dependent launch: wait for the previous kernel (common.cuh)
  constexpr int VE = kVec<T>;
  __shared__ float xbuf[256];
  extern __shared__ float colsum[];
  const int l = threadIdx.x % G, g = threadIdx.x / G, groups = blockDim.x / G;
  const int64_t nvec = D / VE;
  const uint4 zero = make_uint4(0, 0, 0, 0);
  const uint4* w4 = reinterpret_cast<const uint4*>(w);
  const uint4* dy4 = reinterpret_cast<const uint4*>(d_out);
  const uint4* x4 = reinterpret_cast<const uint4*>(in);
  uint4* dx4 = reinterpret_cast<uint4*>(d_in);
  float* acc = colsum + int64_t(g) * D;
  if constexpr (DW) {
#pragma unroll
    for (int j = 0; j < NV; ++j) {
      const int64_t v = l + int64_t(j) * G;
      if (v < nvec)
#pragma unroll
        for (int e = 0; e < VE; ++e) acc[e * nvec + v] = 0.0f;
    }
  }
  for (int i = 0; i < R; ++i) {
    const int64_t r = (int64_t(blockIdx.x) * R + i) * groups + g;
    const bool live = r < rows;
    const int64_t base = (live ? r : 0) * nvec, xbase = (live ? r : 0) * (ldx / VE), dbase = r * (ldd / VE);
    // add: d_in's old words load with the others (after the row sum's barriers they would be a second round trip
    // to memory a row, with nothing else in flight)
    uint4 dyv[NV], xv[NV], wv[NV], ov[DX ? NV : 1];
#pragma unroll
    for (int j = 0; j < NV; ++j) {
      const int64_t v = l + int64_t(j) * G;
      const bool ok = live && v < nvec;
      dyv[j] = ok ? dy4[base + v] : zero;
      xv[j] = ok ? x4[xbase + v] : zero;
      if constexpr (DX) {
        wv[j] = ok ? w4[v] : zero;
        ov[j] = ok && add ? dx4[dbase + v] : zero;
      }
    }
    const float rs = live ? rstd[r] : 0.0f;
    float k = 0.0f;
    if constexpr (DX) {
      float s[VE];
#pragma unroll
      for (int e = 0; e < VE; ++e) s[e] = 0.0f;
#pragma unroll
      for (int j = 0; j < NV; ++j) {
        float dy[VE], wf[VE], x[VE];
        unpack16(dyv[j], dy);
        unpack16(wv[j], wf);
        unpack16(xv[j], x);
#pragma unroll
        for (int e = 0; e < VE; ++e) s[e] += dy[e] * wf[e] * x[e];
      }
      const float gx = strided_row_sum(s, G, xbuf);
      k = rs * rs * rs * gx / float(D);
    }
    if (!live) continue;  // strided_row_sum's barriers are behind (every thread ran them)
#pragma unroll
    for (int j = 0; j < NV; ++j) {
      const int64_t v = l + int64_t(j) * G;
      if (v >= nvec) continue;
      launder(dyv[j]);  // unpacked again below: the first pass's 3 VE floats per word need not stay live
      launder(xv[j]);
      float dy[VE], x[VE];
      unpack16(dyv[j], dy);
      unpack16(xv[j], x);
      if constexpr (DX) {
        launder(wv[j]);
        float wf[VE], o[VE];
        unpack16(wv[j], wf);
        unpack16(ov[j], o);
#pragma unroll
        for (int e = 0; e < VE; ++e) {
          const float t = rs * dy[e] * wf[e] - k * x[e];
          o[e] = add ? o[e] + t : t;
        }
        dx4[dbase + v] = pack16(o);
      }
      if constexpr (DW) {
#pragma unroll
        for (int e = 0; e < VE; ++e) acc[e * nvec + v] += dy[e] * x[e] * rs;
      }
    }
  }
  if constexpr (DW) {
    __syncthreads();
    for (int64_t c = threadIdx.x; c < D; c += blockDim.x) {
      float t = 0.0f;
      for (int q = 0; q < groups; ++q) t += colsum[q * D + (c % VE) * nvec + c / VE];
      part[int64_t(blockIdx.x) * D + c] = t;
    }
  }
}

// dx = r * dy * w - r^3 * x * (sum_c dy * w * x) / D
template <class T>
__global__ void rmsnorm_bwd_dx_kernel(T* __restrict__ d_in, const T* __restrict__ d_out, const T* __restrict__ in,
                                      const T* __restrict__ w, const float* __restrict__ rstd, int64_t rows, int64_t D,
                                      int64_t ldx, int64_t ldd, bool add) {
  pdl_enter();  // programmatic dependent launch: wait for the previous kernel (common.cuh)
  for (int64_t r = blockIdx.x; r < rows; r += gridDim.x) {
    const T* x = in + r * ldx;
    const T* dy = d_out + r * D;
    float gx = 0.0f;
    for (int64_t c = threadIdx.x; c < D; c += blockDim.x) gx += ldf(dy[c]) * ldf(w[c]) * ldf(x[c]);
    gx = block_sum(gx);
    const float rs = rstd[r];
    const float k = rs * rs * rs * gx / float(D);
    T* dx = d_in + r * ldd;
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
                                              int64_t D, int64_t ldx, int64_t chunk_rows) {
  pdl_enter();  // programmatic dependent launch: wait for the previous kernel (common.cuh)
  const int64_t c = blockIdx.x * int64_t(blockDim.x) + threadIdx.x;
  if (c >= D) return;
  const int64_t r0 = blockIdx.y * chunk_rows, r1 = min(rows, r0 + chunk_rows);
  float s = 0.0f;
  for (int64_t r = r0; r < r1; ++r) s += ldf(d_out[r * D + c]) * ldf(in[r * ldx + c]) * rstd[r];
  part[blockIdx.y * D + c] = s;
}

// dw[c] += sum over p of part[p, c]: 32 columns per block, warp k sums parts k, k + 32, ... in order, then warp 0
// adds the 32 warps' sums in warp order (a fixed order for a given part count; every part row read coalesced).
template <class G>
__global__ void __launch_bounds__(1024)
    rmsnorm_bwd_dw_final_kernel(G* __restrict__ dw, const float* __restrict__ part, int64_t nparts, int64_t D) {
  pdl_enter();  // programmatic dependent launch: wait for the previous kernel (common.cuh)
  __shared__ float sums[32][33];
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
  const int64_t c = int64_t(blockIdx.x) * 32 + lane;
  float s = 0.0f;
  if (c < D) {
#pragma unroll 8
    for (int64_t p = warp; p < nparts; p += 32) s += part[p * D + c];
  }
  sums[warp][lane] = s;
  __syncthreads();
  if (warp == 0 && c < D) {
    float t = 0.0f;
    for (int k = 0; k < 32; ++k) t += sums[k][lane];
    dw[c] = cvt<G>(ldf(dw[c]) + t);
  }
}

// Thread (n, g, i): pair i of token n in heads g * HB .. g * HB + HB - 1 (those < H), one angle for them all. sign
// = +1 forward, -1 backward (transposed rotation). Head h of token n reads x[(n * H + h) * xs + xo ...] and writes
// y[(n * H + h) * ys + yo ...] (xs = ys = R, xo = yo = 0 for whole [N, H, R] tensors; the *_cols ops pass column
// blocks of wider rows). HB > 1 computes the double sincos once for several heads (a training step's q has 16 heads
// per angle); every head's loads go out before the stores, which may alias them element for element. The values do
// not depend on HB.
template <class T, int HB>
__global__ void rope_kernel(T* y, const T* x, const int32_t* __restrict__ pos, const float* __restrict__ inv_freq,
                            int64_t N, int64_t H, int64_t R, double f, double sign, bool add, int64_t xs, int64_t xo,
                            int64_t ys, int64_t yo) {
  pdl_enter();  // programmatic dependent launch: wait for the previous kernel (common.cuh)
  const int64_t P = R / 2, G = (H + HB - 1) / HB, stride = int64_t(gridDim.x) * blockDim.x;
  for (int64_t t = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; t < N * G * P; t += stride) {
    const int64_t ng = t / P, i = t - ng * P, n = ng / G, h0 = (ng - n * G) * HB;
    double sd, cd;
    sincos(double(pos[n]) * double(inv_freq[i]), &sd, &cd);
    const float c = float(f * cd), s = float(sign * f * sd);
    float x0[HB], x1[HB], y0[HB], y1[HB];
#pragma unroll
    for (int j = 0; j < HB; ++j) {
      const int64_t xi = (n * H + h0 + j) * xs + xo + 2 * i, yi = (n * H + h0 + j) * ys + yo + 2 * i;
      const bool ok = h0 + j < H;
      x0[j] = ok ? ldf(x[xi]) : 0.0f;
      x1[j] = ok ? ldf(x[xi + 1]) : 0.0f;
      y0[j] = ok && add ? ldf(y[yi]) : 0.0f;
      y1[j] = ok && add ? ldf(y[yi + 1]) : 0.0f;
    }
#pragma unroll
    for (int j = 0; j < HB; ++j) {
      if (h0 + j >= H) break;
      const int64_t yi = (n * H + h0 + j) * ys + yo + 2 * i;
      const float r0 = x0[j] * c - x1[j] * s, r1 = x0[j] * s + x1[j] * c;
      y[yi] = cvt<T>(add ? y0[j] + r0 : r0);
      y[yi + 1] = cvt<T>(add ? y1[j] + r1 : r1);
    }
  }
}

// sum = a + b (rounded to T), out = rmsnorm(sum): rmsnorm_fwd_kernel's arithmetic on the rounded sum (each thread
// reads back only the elements it wrote; sum may alias a or b). VPT as for rmsnorm_fwd_kernel.
template <class T, int VPT>
__global__ void __launch_bounds__(512)
    add_rmsnorm_kernel(T* sum, T* __restrict__ out, const T* a, const T* b, const T* __restrict__ w, int64_t rows,
                       int64_t D, float eps, float* __restrict__ rstd) {
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
      const float rs = 1.0f / sqrtf(ss / float(D) + eps);
      if (rstd && threadIdx.x == 0) rstd[r] = rs;
      store_normed(y, wv, av, rs, D);
    } else {
      for (int64_t c = threadIdx.x; c < D; c += blockDim.x) {
        const T v = cvt<T>(ldf(a[r * D + c]) + ldf(b[r * D + c]));
        x[c] = v;
        ss += ldf(v) * ldf(v);
      }
      ss = block_sum(ss);
      const float rs = 1.0f / sqrtf(ss / float(D) + eps);
      if (rstd && threadIdx.x == 0) rstd[r] = rs;
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

// The vectorized row kernels' layout for D (see strided_row_sum): G = row_threads(D) / kVec<T> lanes per row, NV
// 16-byte words per lane (a power of two, at most max_nv); NV = 0 when D or a pointer does not allow 16-byte words.
constexpr int kVecBlock = 256;
struct VecRows {
  int G = 0, NV = 0;
  unsigned blocks(int64_t rows) const {
    const int64_t per = kVecBlock / G;
    return unsigned((rows + per - 1) / per);
  }
};
// lds: the row lengths (elements) of strided operands, which must be whole words too.
template <class T>
VecRows vec_rows(int64_t D, std::initializer_list<const void*> ptrs, int max_nv,
                 std::initializer_list<int64_t> lds = {}) {
  constexpr int VE = kVec<T>;
  if (D % VE != 0) return {};
  for (int64_t ld : lds)
    if (ld % VE != 0) return {};
  for (const void* p : ptrs)
    if (!is_aligned16(p)) return {};
  const int G = row_threads(D) / VE;
  const int64_t per = (D / VE + G - 1) / G;
  int nv = 1;
  while (nv < per) nv *= 2;
  if (nv > max_nv) return {};
  return {G, nv};
}

unsigned row_grid(int64_t rows) { return unsigned(std::min<int64_t>(rows, 1 << 20)); }

// Heads per thread: 8 (one angle per 8 heads) when there are many pairs (a training step's q), 1 otherwise (decode:
// few tokens, every pair its own thread).
constexpr int kRopeHeads = 8;

// rope_kernel over the R-column blocks of [N, H, *] rows (row strides xs, ys; first columns xo, yo).
template <class T>
void rope_launch(cudaStream_t st, T* y, const T* x, Tensor pos, Tensor inv_freq, int64_t N, int64_t H, int64_t R,
                 double f, double sign, bool add, int64_t xs, int64_t xo, int64_t ys, int64_t yo) {
  const int64_t P = R / 2;
  if (N == 0 || H == 0 || P == 0) return;
  const int32_t* pp = dptr<const int32_t>(pos);
  const float* fp = dptr<const float>(inv_freq);
  if (H >= kRopeHeads && N * H * P >= (int64_t(1) << 20)) {
    const int64_t G = (H + kRopeHeads - 1) / kRopeHeads;
    launch(rope_kernel<T, kRopeHeads>, grid_for(N * G * P, 256), 256, 0, st, y, x, pp, fp, N, H, R, f, sign, add, xs,
           xo, ys, yo);
  } else {
    launch(rope_kernel<T, 1>, grid_for(N * H * P, 256), 256, 0, st, y, x, pp, fp, N, H, R, f, sign, add, xs, xo, ys,
           yo);
  }
  DS_CUDA_LAUNCH_CHECK("rope_kernel");
}

template <class T>
void rope(const Context& ctx, Tensor y, Tensor x, Tensor pos, Tensor inv_freq, double f, double sign, bool add) {
  cudaStream_t st = prepare(ctx);
  const int64_t N = pos.numel(), R = x.cols(), H = N ? x.rows() / N : 0;
  if (N == 0 || H == 0 || R == 0) return;
  rope_launch<T>(st, dptr<T>(y), dptr<const T>(x), pos, inv_freq, N, H, R, f, sign, add, R, 0, R, 0);
}

}  // namespace

namespace {

// RMSNorm over the D = weight.numel() columns from x_col of in's rows (row length ldx); out [rows, D].
void rmsnorm_fwd(const Context& ctx, Tensor out, Tensor rstd, Tensor in, int64_t ldx, int64_t x_col, Tensor weight,
                 double eps) {
  cudaStream_t st = prepare(ctx);
  const int64_t rows = out.rows(), D = weight.numel();
  if (rows == 0 || D == 0) return;
  dispatch_fb(out.dtype, "rmsnorm_forward", [&](auto zero) {
    using T = decltype(zero);
    const T* x = dptr<const T>(in) + x_col;
    const VecRows vr = vec_rows<T>(D, {out.data, x, weight.data}, 16, {ldx});
    float* rs = rstd.empty() ? nullptr : dptr<float>(rstd);
    if (vr.NV) {
      auto kernel = vr.NV == 1 ? rmsnorm_fwd_vec_kernel<T, 1> : vr.NV == 2 ? rmsnorm_fwd_vec_kernel<T, 2>
                  : vr.NV == 4 ? rmsnorm_fwd_vec_kernel<T, 4> : vr.NV == 8 ? rmsnorm_fwd_vec_kernel<T, 8>
                                                              : rmsnorm_fwd_vec_kernel<T, 16>;
      launch(kernel, vr.blocks(rows), kVecBlock, 0, st, dptr<T>(out), rs, x, dptr<const T>(weight), rows, D, ldx,
             vr.G, float(eps), static_cast<const T*>(nullptr), static_cast<T*>(nullptr));
      return;
    }
    const int threads = row_threads(D), vpt = row_vpt(D, threads);
    auto kernel = vpt == 4 ? rmsnorm_fwd_kernel<T, 4> : vpt == 8 ? rmsnorm_fwd_kernel<T, 8> : rmsnorm_fwd_kernel<T, 0>;
    launch(kernel, row_grid(rows), threads, 0, st, dptr<T>(out), rs, x, dptr<const T>(weight), rows, D, ldx,
           float(eps));
  });
  DS_CUDA_LAUNCH_CHECK("rmsnorm_fwd_kernel");
}

// Its backward: in as above, d_in's block from column d_col of rows of length ldd; d_out [rows, D].
void rmsnorm_bwd(const Context& ctx, Tensor d_in, int64_t ldd, int64_t d_col, Tensor d_weight, Tensor d_out, Tensor in,
                 int64_t ldx, int64_t x_col, Tensor weight, Tensor rstd, Accum acc_in) {
  cudaStream_t st = prepare(ctx);
  const int64_t rows = d_out.rows(), D = weight.numel();
  if (rows == 0 || D == 0) return;
  const bool dx = !d_in.empty(), dw = !d_weight.empty();
  if (!dx && !dw) return;
  dispatch_fb(d_out.dtype, "rmsnorm_backward", [&](auto zero) {
    using T = decltype(zero);
    T* din = dx ? dptr<T>(d_in) + d_col : nullptr;
    const T *dy = dptr<const T>(d_out), *x = dptr<const T>(in) + x_col, *w = dptr<const T>(weight);
    const float* rs = dptr<const float>(rstd);
    const int add = acc_in == Accum::add;
    // the partials of d_weight, [nparts, D] f32, and their sum into d_weight
    std::unique_ptr<TempBuffer> part;
    int64_t nparts = 0;
    auto finish_dw = [&] {
      dispatch_fb(d_weight.dtype, "rmsnorm_backward", [&](auto gz) {
        using G = decltype(gz);
        launch(rmsnorm_bwd_dw_final_kernel<G>, unsigned((D + 31) / 32), 1024, 0, st, dptr<G>(d_weight),
               part->as<const float>(), nparts, D);
      });
      DS_CUDA_LAUNCH_CHECK("rmsnorm_bwd_dw_final_kernel");
    };
    // One pass for both gradients when the words per lane leave room for d_weight's column sums (NV <= 4).
    const VecRows both = vec_rows<T>(D, {din, dy, x, w}, 4, {ldx, ldd});
    if (both.NV) {
      const int groups = kVecBlock / both.G;
      const int R = dw ? int(std::clamp<int64_t>(rows / (int64_t(groups) * 512), 1, 16)) : 1;
      const int64_t nb = (rows + int64_t(groups) * R - 1) / (int64_t(groups) * R);
      if (dw) {
        nparts = nb;
        part = std::make_unique<TempBuffer>(sizeof(float) * size_t(nparts * D), st);
      }
      float* p = dw ? part->as<float>() : nullptr;
      const size_t smem = dw ? sizeof(float) * size_t(groups * D) : 0;
      auto pick = [&](auto dxc, auto dwc) {
        constexpr bool DX = decltype(dxc)::value, DW = decltype(dwc)::value;
        auto kernel = both.NV == 1 ? rmsnorm_bwd_vec_kernel<T, 1, DX, DW>
                    : both.NV == 2 ? rmsnorm_bwd_vec_kernel<T, 2, DX, DW> : rmsnorm_bwd_vec_kernel<T, 4, DX, DW>;
        launch(kernel, unsigned(nb), kVecBlock, smem, st, din, p, dy, x, w, rs, rows, D, ldx, ldd, both.G, R, add);
      };
      if (dx && dw) pick(std::true_type{}, std::true_type{});
      else if (dx) pick(std::true_type{}, std::false_type{});
      else pick(std::false_type{}, std::true_type{});
      DS_CUDA_LAUNCH_CHECK("rmsnorm_bwd_vec_kernel");
      if (dw) finish_dw();
      return;
    }
    if (dx) {
      const VecRows vr = vec_rows<T>(D, {din, dy, x, w}, 8, {ldx, ldd});
      if (vr.NV == 8) {  // NV <= 4 went above
        launch(rmsnorm_bwd_vec_kernel<T, 8, true, false>, vr.blocks(rows), kVecBlock, 0, st, din, nullptr, dy, x, w,
               rs, rows, D, ldx, ldd, vr.G, 1, add);
      } else {
        launch(rmsnorm_bwd_dx_kernel<T>, row_grid(rows), row_threads(D), 0, st, din, dy, x, w, rs, rows, D, ldx, ldd,
               add != 0);
      }
      DS_CUDA_LAUNCH_CHECK("rmsnorm_bwd_dx_kernel");
    }
    if (dw) {
      nparts = std::min<int64_t>(std::max<int64_t>(rows / 64, 1), 1024);
      const int64_t chunk_rows = (rows + nparts - 1) / nparts;
      part = std::make_unique<TempBuffer>(sizeof(float) * size_t(nparts * D), st);
      const dim3 grid(unsigned((D + 127) / 128), unsigned(nparts));
      launch(rmsnorm_bwd_dw_partial_kernel<T>, grid, 128, 0, st, part->as<float>(), dy, x, rs, rows, D, ldx,
             chunk_rows);
      DS_CUDA_LAUNCH_CHECK("rmsnorm_bwd_dw_partial_kernel");
      finish_dw();
    }
  });
}

}  // namespace

void rmsnorm_forward(const Context& ctx, Tensor out, Tensor rstd, Tensor in, Tensor weight, double eps) {
  rmsnorm_fwd(ctx, out, rstd, in, in.cols(), 0, weight, eps);
}

void rmsnorm_backward(const Context& ctx, Tensor d_in, Tensor d_weight, Tensor d_out, Tensor in, Tensor weight,
                      Tensor rstd, Accum acc_in) {
  rmsnorm_bwd(ctx, d_in, in.cols(), 0, d_weight, d_out, in, in.cols(), 0, weight, rstd, acc_in);
}

void rmsnorm_cols_forward(const Context& ctx, Tensor out, Tensor rstd, Tensor in, int64_t in_col, Tensor weight,
                          double eps) {
  rmsnorm_fwd(ctx, out, rstd, in, in.cols(), in_col, weight, eps);
}

void rmsnorm_cols_backward(const Context& ctx, Tensor d_in, int64_t d_in_col, Tensor d_weight, Tensor d_out, Tensor in,
                           int64_t in_col, Tensor weight, Tensor rstd, Accum acc_in) {
  rmsnorm_bwd(ctx, d_in, d_in.empty() ? 0 : d_in.cols(), d_in_col, d_weight, d_out, in, in.cols(), in_col, weight,
              rstd, acc_in);
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

void add_rmsnorm_forward(const Context& ctx, Tensor sum, Tensor out, Tensor a, Tensor b, Tensor weight, double eps,
                         Tensor rstd) {
  cudaStream_t st = prepare(ctx);
  const int64_t rows = sum.rows(), D = sum.cols();
  if (rows == 0 || D == 0) return;
  dispatch_fb(out.dtype, "add_rmsnorm_forward", [&](auto zero) {
    using T = decltype(zero);
    float* rs = rstd.empty() ? nullptr : dptr<float>(rstd);
    // The training step's x_mid = x + attention, ffn_norm(x_mid) (rstd kept): the vectorised kernel. Decode keeps
    // the row kernel, whose latency at a few rows its graphs were tuned with.
    const VecRows vr = rs ? vec_rows<T>(D, {out.data, sum.data, a.data, b.data, weight.data}, 16) : VecRows{};
    if (vr.NV) {
      auto kernel = vr.NV == 1 ? rmsnorm_fwd_vec_kernel<T, 1, true> : vr.NV == 2 ? rmsnorm_fwd_vec_kernel<T, 2, true>
                  : vr.NV == 4 ? rmsnorm_fwd_vec_kernel<T, 4, true> : vr.NV == 8 ? rmsnorm_fwd_vec_kernel<T, 8, true>
                                                                    : rmsnorm_fwd_vec_kernel<T, 16, true>;
      launch(kernel, vr.blocks(rows), kVecBlock, 0, st, dptr<T>(out), rs, dptr<const T>(a), dptr<const T>(weight),
             rows, D, D, vr.G, float(eps), dptr<const T>(b), dptr<T>(sum));
      return;
    }
    const int threads = row_threads(D), vpt = row_vpt(D, threads);
    auto kernel = vpt == 4 ? add_rmsnorm_kernel<T, 4> : vpt == 8 ? add_rmsnorm_kernel<T, 8> : add_rmsnorm_kernel<T, 0>;
    launch(kernel, row_grid(rows), threads, 0, st, dptr<T>(sum), dptr<T>(out), dptr<const T>(a), dptr<const T>(b),
           dptr<const T>(weight), rows, D, float(eps), rs);
  });
  DS_CUDA_LAUNCH_CHECK("add_rmsnorm_kernel");
}

void rope_cols_forward(const Context& ctx, Tensor out, int64_t out_col, Tensor in, int64_t in_col, Tensor pos,
                       Tensor inv_freq, double attn_factor) {
  cudaStream_t st = prepare(ctx);
  dispatch_fb(out.dtype, "rope_cols_forward", [&](auto zero) {
    using T = decltype(zero);
    rope_launch<T>(st, dptr<T>(out), dptr<const T>(in), pos, inv_freq, in.dim(0), in.dim(1), 2 * inv_freq.numel(),
                   attn_factor, 1.0, false, in.dim(2), in_col, out.dim(2), out_col);
  });
}

void rope_cols_backward(const Context& ctx, Tensor d_in, int64_t d_in_col, Tensor d_out, int64_t d_out_col, Tensor pos,
                        Tensor inv_freq, double attn_factor, Accum acc) {
  cudaStream_t st = prepare(ctx);
  dispatch_fb(d_in.dtype, "rope_cols_backward", [&](auto zero) {
    using T = decltype(zero);
    rope_launch<T>(st, dptr<T>(d_in), dptr<const T>(d_out), pos, inv_freq, d_out.dim(0), d_out.dim(1),
                   2 * inv_freq.numel(), attn_factor, -1.0, acc == Accum::add, d_out.dim(2), d_out_col, d_in.dim(2),
                   d_in_col);
  });
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
