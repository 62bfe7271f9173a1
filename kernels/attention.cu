// Flash-style causal attention for MLA shapes (q, k [B, T, H, Dqk]; v, out [B, T, H, Dv]; Dqk != Dv allowed;
// lse [B, H, T] f32). Tiles of Q meet tiles of K/V with an online softmax; the T x T score matrix never exists.
//
// Two paths:
//  * bf16 with a tensor-core shape (Dqk, Dv) in kMmaShapes and 16-byte aligned tensors: mma.sync m16n8k16
//    (f32 accumulation), cp.async double buffering, ldmatrix from padded (conflict-free) shared tiles.
//    P and dS are rounded to bf16 before their products (as FlashAttention-2 does); softmax statistics, row
//    sums and all accumulators are f32.
//  * everything else (f32 for exact parity, any head dims, unaligned views): a SIMT kernel with the same tiling
//    in f32 shared memory and f32 arithmetic.
// Backward (FlashAttention-2 style): probabilities are recomputed from lse, and two kernels split the work so that
// no atomics are needed and the result is deterministic: one owns a key tile and loops over query tiles (dK, dV),
// the other owns a query tile and loops over key tiles (dQ). Each kernel overwrites its outputs. On the
// tensor-core path a preprocess kernel first writes D = rowsum(dO * O) once into an f32 [B, H, T] TempBuffer
// (stream-ordered, from the device pool: no driver allocation once warm, and capturable), which both kernels read
// instead of loading O; the SIMT path recomputes D per tile. The tensor-core backward kernels take their step
// size, register cap and fragment residency as a template parameter (BwdTile). At the bench model's 96/64, sm_90a
// builds run both on warpgroup MMA (attn_bwd_dkdv_wgmma, attn_bwd_dq_wgmma: the default there, measured faster);
// the mma.sync kernels and a few alternatives stay compiled, chosen through bench hooks to be timed and tested
// against each other. Nothing here synchronises, so the ops are CUDA-graph capturable.
#include <cuda_bf16.h>
#include <cuda_runtime.h>

#include <algorithm>
#include <atomic>
#include <cmath>

#include "kernels/attn_common.cuh"
#include "kernels/cuda_ops.h"
#include "kernels/wgmma.cuh"

namespace ds::cuda {

using bf16_t = __nv_bfloat16;
using namespace attn;

namespace {

// ---- shared parameters --------------------------------------------------------------------------------

template <class E> struct AttnArgs {
  const E* q;
  const E* k;
  const E* v;
  const E* o;     // backward: the forward output
  const E* dout;  // backward
  E* out;         // forward
  E* dq;
  E* dk;
  E* dv;
  const float* lse_in;  // backward
  float* lse_out;       // forward (may be null)
  float* delta;         // backward, tensor-core path: D = rowsum(dO * O) [B, H, T] f32 (attn_bwd_delta writes it)
  int T, H, Dqk, Dv;
  float scale;       // softmax scale
  float scale_log2;  // scale * log2(e)
};

// Block-cooperative cp.async of ROWS rows x D bf16 (row stride gstride elements) into a shared tile of pitch P;
// rows >= valid are zero-filled.
template <int ROWS, int D, int P, int THREADS>
__device__ __forceinline__ void load_tile_async(bf16_t* s, const bf16_t* g, int64_t gstride, int valid, int tid) {
  constexpr int CH = D / 8;
#pragma unroll 4
  for (int i = tid; i < ROWS * CH; i += THREADS) {
    const int r = i / CH, c = i - r * CH;
    const bool ok = r < valid;
    cp_async16(s + r * P + c * 8, ok ? g + int64_t(r) * gstride + c * 8 : g, ok);
  }
}

// =======================================================================================================
// Tensor-core path (bf16)
// =======================================================================================================

constexpr int kMmaThreads = 128;  // 4 warps, 16 query (or key) rows each

template <int DQK, int DV> struct Mma {
  static constexpr int PQ = DQK + 8;  // shared pitch (elements): rows 16 bytes apart in bank space
  static constexpr int PV = DV + 8;
  // forward
  static constexpr int F_BQ = 64, F_BK = 64;
  static constexpr size_t f_smem = size_t(F_BQ * PQ + 2 * F_BK * PQ + 2 * F_BK * PV) * 2;
  // backward dK/dV: 64 keys per block, bq queries per step (BwdTile)
  static constexpr int KV_BK = 64;
  static constexpr size_t kv_smem(int bq) {
    return size_t(KV_BK * PQ + KV_BK * PV + 2 * bq * PQ + 2 * bq * PV) * 2 + 4 * bq * sizeof(float);
  }
  // backward dQ: 64 queries per block, bk keys per step (BwdTile)
  static constexpr int Q_BQ = 64;
  static constexpr size_t q_smem(int bk) {
    return size_t(Q_BQ * PQ + Q_BQ * PV + 2 * bk * PQ + 2 * bk * PV) * 2 + 2 * Q_BQ * sizeof(float);
  }
};

template <int DQK, int DV>
__global__ void __launch_bounds__(kMmaThreads) attn_fwd_mma(AttnArgs<bf16_t> a) {
  pdl_enter();  // programmatic dependent launch: wait for the previous kernel (common.cuh)
  using C = Mma<DQK, DV>;
  constexpr int BQ = C::F_BQ, BK = C::F_BK, PQ = C::PQ, PV = C::PV;
  extern __shared__ __align__(16) unsigned char smem_raw[];
  bf16_t* Qs = reinterpret_cast<bf16_t*>(smem_raw);  // [BQ][PQ]
  bf16_t* Ks = Qs + BQ * PQ;                          // [2][BK][PQ]
  bf16_t* Vs = Ks + 2 * BK * PQ;                      // [2][BK][PV]

  const int tid = threadIdx.x, warp = tid >> 5, lane = tid & 31, g = lane >> 2, t4 = lane & 3;
  const int T = a.T, H = a.H;
  const int q0 = (gridDim.x - 1 - blockIdx.x) * BQ;  // the longest rows first
  const int b = blockIdx.y / H, h = blockIdx.y % H;
  const int64_t sq = int64_t(H) * DQK, sv = int64_t(H) * DV;
  const bf16_t* qb = a.q + (int64_t(b) * T * H + h) * DQK;
  const bf16_t* kb = a.k + (int64_t(b) * T * H + h) * DQK;
  const bf16_t* vb = a.v + (int64_t(b) * T * H + h) * DV;
  const int n_kv = min((T + BK - 1) / BK, (q0 + BQ - 1) / BK + 1);

  load_tile_async<BQ, DQK, PQ, kMmaThreads>(Qs, qb + int64_t(q0) * sq, sq, T - q0, tid);
  load_tile_async<BK, DQK, PQ, kMmaThreads>(Ks, kb, sq, T, tid);
  load_tile_async<BK, DV, PV, kMmaThreads>(Vs, vb, sv, T, tid);
  cp_async_commit();

  uint32_t qf[DQK / 16][4];
  float o[DV / 8][4];
#pragma unroll
  for (int i = 0; i < DV / 8; ++i) o[i][0] = o[i][1] = o[i][2] = o[i][3] = 0.f;
  float m[2] = {-INFINITY, -INFINITY}, l[2] = {0.f, 0.f};
  const int row0 = q0 + warp * 16 + g;  // this lane's rows: row0, row0 + 8

  for (int j = 0; j < n_kv; ++j) {
    const int buf = j & 1;
    if (j + 1 < n_kv) {
      const int k1 = (j + 1) * BK;
      load_tile_async<BK, DQK, PQ, kMmaThreads>(Ks + (buf ^ 1) * BK * PQ, kb + int64_t(k1) * sq, sq, T - k1, tid);
      load_tile_async<BK, DV, PV, kMmaThreads>(Vs + (buf ^ 1) * BK * PV, vb + int64_t(k1) * sv, sv, T - k1, tid);
    }
    cp_async_commit();
    cp_async_wait<1>();
    __syncthreads();
    if (j == 0) {
#pragma unroll
      for (int kk = 0; kk < DQK / 16; ++kk) ldsm_x4(qf[kk], lds_a(Qs, PQ, warp * 16, kk * 16, lane));
    }
    const bf16_t* Kt = Ks + buf * BK * PQ;
    const bf16_t* Vt = Vs + buf * BK * PV;

    float s[BK / 8][4];
#pragma unroll
    for (int i = 0; i < BK / 8; ++i) s[i][0] = s[i][1] = s[i][2] = s[i][3] = 0.f;
#pragma unroll
    for (int kk = 0; kk < DQK / 16; ++kk) {
#pragma unroll
      for (int np = 0; np < BK / 16; ++np) {
        uint32_t bf[4];
        ldsm_x4(bf, lds_b_nk(Kt, PQ, np * 16, kk * 16, lane));
        mma_bf16(s[2 * np], qf[kk], bf[0], bf[1]);
        mma_bf16(s[2 * np + 1], qf[kk], bf[2], bf[3]);
      }
    }
    const int k0 = j * BK;
    const bool need_mask = (k0 + BK - 1 > q0 + warp * 16) || (k0 + BK > T);
#pragma unroll
    for (int nt = 0; nt < BK / 8; ++nt)
#pragma unroll
      for (int e = 0; e < 4; ++e) {
        float x = s[nt][e] * a.scale_log2;
        if (need_mask) {
          const int col = k0 + nt * 8 + 2 * t4 + (e & 1), row = row0 + (e >> 1) * 8;
          if (col > row || col >= T) x = -INFINITY;
        }
        s[nt][e] = x;
      }
#pragma unroll
    for (int i = 0; i < 2; ++i) {
      float mx = -INFINITY;
#pragma unroll
      for (int nt = 0; nt < BK / 8; ++nt) mx = fmaxf(mx, fmaxf(s[nt][2 * i], s[nt][2 * i + 1]));
      mx = quad_max(mx);
      const float m_new = fmaxf(m[i], mx), ms = safe_max(m_new);
      const float alpha = exp2f(m[i] - ms);
      m[i] = m_new;
      float sum = 0.f;
#pragma unroll
      for (int nt = 0; nt < BK / 8; ++nt) {
        s[nt][2 * i] = exp2f(s[nt][2 * i] - ms);
        s[nt][2 * i + 1] = exp2f(s[nt][2 * i + 1] - ms);
        sum += s[nt][2 * i] + s[nt][2 * i + 1];
      }
      l[i] = l[i] * alpha + sum;
#pragma unroll
      for (int nt = 0; nt < DV / 8; ++nt) {
        o[nt][2 * i] *= alpha;
        o[nt][2 * i + 1] *= alpha;
      }
    }
#pragma unroll
    for (int kk = 0; kk < BK / 16; ++kk) {
      const uint32_t pa[4] = {pack_bf16(s[2 * kk][0], s[2 * kk][1]), pack_bf16(s[2 * kk][2], s[2 * kk][3]),
                              pack_bf16(s[2 * kk + 1][0], s[2 * kk + 1][1]),
                              pack_bf16(s[2 * kk + 1][2], s[2 * kk + 1][3])};
#pragma unroll
      for (int np = 0; np < DV / 16; ++np) {
        uint32_t bf[4];
        ldsm_x4_t(bf, lds_b_kn(Vt, PV, kk * 16, np * 16, lane));
        mma_bf16(o[2 * np], pa, bf[0], bf[1]);
        mma_bf16(o[2 * np + 1], pa, bf[2], bf[3]);
      }
    }
    __syncthreads();  // this buffer is refilled by the next iteration's prefetch
  }

#pragma unroll
  for (int i = 0; i < 2; ++i) {
    const float li = quad_sum(l[i]);
    const int row = row0 + i * 8;
    if (row >= T) continue;
    const float inv = 1.f / li;
    bf16_t* orow = a.out + (int64_t(b) * T + row) * sv + int64_t(h) * DV;
#pragma unroll
    for (int nt = 0; nt < DV / 8; ++nt)
      *reinterpret_cast<uint32_t*>(orow + nt * 8 + 2 * t4) = pack_bf16(o[nt][2 * i] * inv, o[nt][2 * i + 1] * inv);
    if (a.lse_out && t4 == 0) a.lse_out[(int64_t(b) * H + h) * T + row] = (m[i] + log2f(li)) * kLn2;
  }
}

// ---- forward, wide tiles (FlashAttention-2 layout) -------------------------------------------------------
// 128 query rows per block, 4 warps of 32 rows (two m16 tiles each): every K / V fragment read from shared memory
// feeds two MMAs (0.33 ldmatrix per MMA instead of 0.5), and each warp has two independent softmax chains. Q is
// re-read from shared memory per key tile (keeping it in registers for 32 rows would cost 48+ registers).
// The softmax scale is folded into the exponent (p = 2^(s * scale_log2 - m), one FFMA + ex2 per score; needs
// scale > 0, which the dispatcher checks). A warp skips the compute of a key tile that lies wholly above its rows
// (causal) or whose rows are all past T; it still takes part in the block's barriers.
constexpr int kFwdWideBQ = 128, kFwdWideBK = 64;

template <int DQK, int DV> struct FwdWide {
  static constexpr int PQ = DQK + 8, PV = DV + 8;
  static constexpr size_t smem = size_t(kFwdWideBQ * PQ + 2 * kFwdWideBK * PQ + 2 * kFwdWideBK * PV) * 2;
};

// 2^x with flush-to-zero (x = -inf -> 0); the same ex2.approx exp2f uses, without the subnormal fix-up.
__device__ __forceinline__ float ex2_ftz(float x) {
  float y;
  asm("ex2.approx.ftz.f32 %0, %1;\n" : "=f"(y) : "f"(x));
  return y;
}

// load_tile_async for use inside a key loop: the thread index goes through an empty asm so that the compiler
// recomputes the per-chunk offsets at each call instead of hoisting them out of the loop into ~40 live registers.
template <int ROWS, int D, int P, int THREADS>
__device__ __forceinline__ void load_tile_async_lean(bf16_t* s, const bf16_t* g, int64_t gstride, int valid,
                                                     int tid) {
  asm volatile("" : "+r"(tid));
  load_tile_async<ROWS, D, P, THREADS>(s, g, gstride, valid, tid);
}

template <int DQK, int DV>
__global__ void __launch_bounds__(kMmaThreads, 3) attn_fwd_mma_wide(AttnArgs<bf16_t> a) {
  pdl_enter();  // programmatic dependent launch: wait for the previous kernel (common.cuh)
  constexpr int BQ = kFwdWideBQ, BK = kFwdWideBK, PQ = FwdWide<DQK, DV>::PQ, PV = FwdWide<DQK, DV>::PV;
  constexpr int MT = 2;  // m16 tiles per warp
  extern __shared__ __align__(16) unsigned char smem_raw[];
  bf16_t* Qs = reinterpret_cast<bf16_t*>(smem_raw);  // [BQ][PQ]
  bf16_t* Ks = Qs + BQ * PQ;                          // [2][BK][PQ]
  bf16_t* Vs = Ks + 2 * BK * PQ;                      // [2][BK][PV]

  const int tid = threadIdx.x, warp = tid >> 5, lane = tid & 31, g = lane >> 2, t4 = lane & 3;
  const int T = a.T, H = a.H;
  const int q0 = (gridDim.x - 1 - blockIdx.x) * BQ;  // the longest rows first
  const int b = blockIdx.y / H, h = blockIdx.y % H;
  const int64_t sq = int64_t(H) * DQK, sv = int64_t(H) * DV;
  const bf16_t* qb = a.q + (int64_t(b) * T * H + h) * DQK;
  const bf16_t* kb = a.k + (int64_t(b) * T * H + h) * DQK;
  const bf16_t* vb = a.v + (int64_t(b) * T * H + h) * DV;
  const int n_kv = min(T - 1, q0 + BQ - 1) / BK + 1;  // key tiles holding a key <= the block's last valid row

  load_tile_async<BQ, DQK, PQ, kMmaThreads>(Qs, qb + int64_t(q0) * sq, sq, T - q0, tid);
  load_tile_async<BK, DQK, PQ, kMmaThreads>(Ks, kb, sq, T, tid);
  load_tile_async<BK, DV, PV, kMmaThreads>(Vs, vb, sv, T, tid);
  cp_async_commit();

  float o[MT][DV / 8][4];
#pragma unroll
  for (int mt = 0; mt < MT; ++mt)
#pragma unroll
    for (int i = 0; i < DV / 8; ++i) o[mt][i][0] = o[mt][i][1] = o[mt][i][2] = o[mt][i][3] = 0.f;
  float m[MT][2], l[MT][2];  // m: running max in log2 units (scaled)
#pragma unroll
  for (int mt = 0; mt < MT; ++mt) m[mt][0] = m[mt][1] = -INFINITY, l[mt][0] = l[mt][1] = 0.f;
  const int wrow0 = q0 + warp * 32;  // this warp's rows: wrow0 .. wrow0 + 31; m-tile mt: wrow0 + 16 mt + {g, g + 8}
  const float sl = a.scale_log2;

  for (int j = 0; j < n_kv; ++j) {
    const int buf = j & 1;
    if (j + 1 < n_kv) {
      const int k1 = (j + 1) * BK;
      load_tile_async_lean<BK, DQK, PQ, kMmaThreads>(Ks + (buf ^ 1) * BK * PQ, kb + int64_t(k1) * sq, sq, T - k1,
                                                     tid);
      load_tile_async_lean<BK, DV, PV, kMmaThreads>(Vs + (buf ^ 1) * BK * PV, vb + int64_t(k1) * sv, sv, T - k1,
                                                    tid);
    }
    cp_async_commit();
    cp_async_wait<1>();
    __syncthreads();
    const int k0 = j * BK;
    if (k0 <= wrow0 + 31 && wrow0 < T) {  // else every score of this warp's rows in this tile is masked
      const bf16_t* Kt = Ks + buf * BK * PQ;
      const bf16_t* Vt = Vs + buf * BK * PV;

      float s[MT][BK / 8][4];
#pragma unroll
      for (int mt = 0; mt < MT; ++mt)
#pragma unroll
        for (int i = 0; i < BK / 8; ++i) s[mt][i][0] = s[mt][i][1] = s[mt][i][2] = s[mt][i][3] = 0.f;
#pragma unroll
      for (int kk = 0; kk < DQK / 16; ++kk) {
        uint32_t qf[MT][4];
#pragma unroll
        for (int mt = 0; mt < MT; ++mt) ldsm_x4(qf[mt], lds_a(Qs, PQ, warp * 32 + mt * 16, kk * 16, lane));
#pragma unroll
        for (int np = 0; np < BK / 16; ++np) {
          uint32_t bf[4];
          ldsm_x4(bf, lds_b_nk(Kt, PQ, np * 16, kk * 16, lane));
#pragma unroll
          for (int mt = 0; mt < MT; ++mt) {
            mma_bf16(s[mt][2 * np], qf[mt], bf[0], bf[1]);
            mma_bf16(s[mt][2 * np + 1], qf[mt], bf[2], bf[3]);
          }
        }
      }
#pragma unroll
      for (int mt = 0; mt < MT; ++mt) {
        const int rfirst = wrow0 + mt * 16;
        if ((k0 + BK - 1 > rfirst) || (k0 + BK > T)) {  // the diagonal or the key tail: mask (raw units)
#pragma unroll
          for (int nt = 0; nt < BK / 8; ++nt)
#pragma unroll
            for (int e = 0; e < 4; ++e) {
              const int col = k0 + nt * 8 + 2 * t4 + (e & 1), row = rfirst + g + (e >> 1) * 8;
              if (col > row || col >= T) s[mt][nt][e] = -INFINITY;
            }
        }
#pragma unroll
        for (int i = 0; i < 2; ++i) {
          float mx = -INFINITY;
#pragma unroll
          for (int nt = 0; nt < BK / 8; ++nt) mx = fmaxf(mx, fmaxf(s[mt][nt][2 * i], s[mt][nt][2 * i + 1]));
          mx = quad_max(mx) * sl;  // scale > 0: max commutes with the scaling; -inf stays -inf
          const float m_new = fmaxf(m[mt][i], mx), ms = safe_max(m_new);
          const float alpha = ex2_ftz(m[mt][i] - ms);
          m[mt][i] = m_new;
          float sum = 0.f;
#pragma unroll
          for (int nt = 0; nt < BK / 8; ++nt) {
            s[mt][nt][2 * i] = ex2_ftz(fmaf(s[mt][nt][2 * i], sl, -ms));
            s[mt][nt][2 * i + 1] = ex2_ftz(fmaf(s[mt][nt][2 * i + 1], sl, -ms));
            sum += s[mt][nt][2 * i] + s[mt][nt][2 * i + 1];
          }
          l[mt][i] = l[mt][i] * alpha + sum;
#pragma unroll
          for (int nt = 0; nt < DV / 8; ++nt) {
            o[mt][nt][2 * i] *= alpha;
            o[mt][nt][2 * i + 1] *= alpha;
          }
        }
      }
#pragma unroll
      for (int kk = 0; kk < BK / 16; ++kk) {
        uint32_t pa[MT][4];
#pragma unroll
        for (int mt = 0; mt < MT; ++mt) {
          pa[mt][0] = pack_bf16(s[mt][2 * kk][0], s[mt][2 * kk][1]);
          pa[mt][1] = pack_bf16(s[mt][2 * kk][2], s[mt][2 * kk][3]);
          pa[mt][2] = pack_bf16(s[mt][2 * kk + 1][0], s[mt][2 * kk + 1][1]);
          pa[mt][3] = pack_bf16(s[mt][2 * kk + 1][2], s[mt][2 * kk + 1][3]);
        }
#pragma unroll
        for (int np = 0; np < DV / 16; ++np) {
          uint32_t bf[4];
          ldsm_x4_t(bf, lds_b_kn(Vt, PV, kk * 16, np * 16, lane));
#pragma unroll
          for (int mt = 0; mt < MT; ++mt) {
            mma_bf16(o[mt][2 * np], pa[mt], bf[0], bf[1]);
            mma_bf16(o[mt][2 * np + 1], pa[mt], bf[2], bf[3]);
          }
        }
      }
    }
    __syncthreads();  // this buffer is refilled by the next iteration's prefetch
  }

#pragma unroll
  for (int mt = 0; mt < MT; ++mt)
#pragma unroll
    for (int i = 0; i < 2; ++i) {
      const float li = quad_sum(l[mt][i]);
      const int row = wrow0 + mt * 16 + g + i * 8;
      if (row >= T) continue;
      const float inv = 1.f / li;
      bf16_t* orow = a.out + (int64_t(b) * T + row) * sv + int64_t(h) * DV;
#pragma unroll
      for (int nt = 0; nt < DV / 8; ++nt)
        *reinterpret_cast<uint32_t*>(orow + nt * 8 + 2 * t4) =
            pack_bf16(o[mt][nt][2 * i] * inv, o[mt][nt][2 * i + 1] * inv);
      if (a.lse_out && t4 == 0) a.lse_out[(int64_t(b) * H + h) * T + row] = (m[mt][i] + log2f(li)) * kLn2;
    }
}

// The tunables of one backward kernel: STEP = the rows of the other operand per loop step (dK/dV: queries, 32 or
// 64; dQ: keys, 32 or 64), MINB = the blocks per SM it is compiled for (register cap 65536 / (128 MINB); 1: no
// cap), REG = this warp's A fragments of the operands it owns (dK/dV: K and V; dQ: Q and dO) held in registers for
// the whole loop instead of re-read from shared memory each step (+40 registers at 96/64). The default is
// BwdTile<32, 4, false> for the bench model's 96/64 (shared memory allows 4 blocks there), BwdTile<32, 1, false>
// for the other shapes; the alternatives exist at 96/64 only, for the bench hooks (attention_bench_*_variant).
template <int STEP_, int MINB_, bool REG_> struct BwdTile {
  static constexpr int STEP = STEP_, MINB = MINB_;
  static constexpr bool REG = REG_;
};
template <int DQK, int DV> using BwdDefault = BwdTile<32, DQK == 96 && DV == 64 ? 4 : 1, false>;

// D[b, h, t] = rowsum(dO * O) in f32, once per backward (FlashAttention-2's preprocess) rather than per tile in
// both kernels: one thread per (b, t, h) row of 16-byte loads. The summation order is the one the dK/dV kernel
// used when it recomputed D (4 partial sums over bf16 pairs 8 elements apart, combined as quad_sum combines them),
// so dK and dV keep their bits; dQ's D (a warp-wide sum before) changes in the last f32 bits.
constexpr int kDeltaThreads = 256;

template <int DV> __global__ void __launch_bounds__(kDeltaThreads) attn_bwd_delta(AttnArgs<bf16_t> a, int64_t rows) {
  pdl_enter();  // programmatic dependent launch: wait for the previous kernel (common.cuh)
  const int64_t r = int64_t(blockIdx.x) * kDeltaThreads + threadIdx.x;  // (b * T + t) * H + h
  if (r >= rows) return;
  const uint4* x4 = reinterpret_cast<const uint4*>(a.dout + r * DV);
  const uint4* y4 = reinterpret_cast<const uint4*>(a.o + r * DV);
  float part[4] = {0.f, 0.f, 0.f, 0.f};
#pragma unroll
  for (int c = 0; c < DV / 8; ++c) {
    const uint4 xv = x4[c], yv = y4[c];
    const __nv_bfloat162* xp = reinterpret_cast<const __nv_bfloat162*>(&xv);
    const __nv_bfloat162* yp = reinterpret_cast<const __nv_bfloat162*>(&yv);
#pragma unroll
    for (int p = 0; p < 4; ++p) {
      const float2 x = __bfloat1622float2(xp[p]), y = __bfloat1622float2(yp[p]);
      part[p] += x.x * y.x + x.y * y.y;
    }
  }
  const int64_t bt = r / a.H, b = bt / a.T;
  const int h = int(r - bt * a.H), t = int(bt - b * a.T);
  a.delta[(b * a.H + h) * a.T + t] = (part[0] + part[1]) + (part[2] + part[3]);
}

// dK, dV for one tile of 64 keys: loops over the query tiles at or after it (causal).
template <int DQK, int DV, class TL>
__global__ void __launch_bounds__(kMmaThreads, TL::MINB) attn_bwd_dkdv_mma(AttnArgs<bf16_t> a) {
  pdl_enter();  // programmatic dependent launch: wait for the previous kernel (common.cuh)
  using C = Mma<DQK, DV>;
  constexpr int BK = C::KV_BK, BQ = TL::STEP, PQ = C::PQ, PV = C::PV;
  static_assert(BQ % 16 == 0 && 2 * BQ <= kMmaThreads && BK % BQ == 0, "query step: 16..64, divides 64");
  extern __shared__ __align__(16) unsigned char smem_raw[];
  bf16_t* Ks = reinterpret_cast<bf16_t*>(smem_raw);  // [BK][PQ]
  bf16_t* Vs = Ks + BK * PQ;                          // [BK][PV]
  bf16_t* Qs = Vs + BK * PV;                          // [2][BQ][PQ]
  bf16_t* dOs = Qs + 2 * BQ * PQ;                     // [2][BQ][PV]
  float* lse_s = reinterpret_cast<float*>(dOs + 2 * BQ * PV);  // [2][BQ], log2 units
  float* D_s = lse_s + 2 * BQ;                                 // [2][BQ]

  const int tid = threadIdx.x, warp = tid >> 5, lane = tid & 31, g = lane >> 2, t4 = lane & 3;
  const int T = a.T, H = a.H;
  const int k0 = blockIdx.x * BK;  // the longest key tiles (most query tiles) first
  const int b = blockIdx.y / H, h = blockIdx.y % H;
  const int64_t sq = int64_t(H) * DQK, sv = int64_t(H) * DV;
  const int64_t qoff = (int64_t(b) * T * H + h) * DQK, voff = (int64_t(b) * T * H + h) * DV;
  const bf16_t *qb = a.q + qoff, *kb = a.k + qoff, *vb = a.v + voff, *dob = a.dout + voff;
  const float* lseb = a.lse_in + (int64_t(b) * H + h) * T;
  const float* Db = a.delta + (int64_t(b) * H + h) * T;
  const int qt0 = k0 / BQ, n_q = (T + BQ - 1) / BQ - qt0;

  auto load_q = [&](int i, int buf) {
    const int q0 = (qt0 + i) * BQ;
    load_tile_async_lean<BQ, DQK, PQ, kMmaThreads>(Qs + buf * BQ * PQ, qb + int64_t(q0) * sq, sq, T - q0, tid);
    load_tile_async_lean<BQ, DV, PV, kMmaThreads>(dOs + buf * BQ * PV, dob + int64_t(q0) * sv, sv, T - q0, tid);
    if (tid < BQ) lse_s[buf * BQ + tid] = q0 + tid < T ? lseb[q0 + tid] * kLog2e : 0.f;
    else if (tid < 2 * BQ) D_s[buf * BQ + tid - BQ] = q0 + tid - BQ < T ? Db[q0 + tid - BQ] : 0.f;
  };
  load_tile_async<BK, DQK, PQ, kMmaThreads>(Ks, kb + int64_t(k0) * sq, sq, T - k0, tid);
  load_tile_async<BK, DV, PV, kMmaThreads>(Vs, vb + int64_t(k0) * sv, sv, T - k0, tid);
  load_q(0, 0);
  cp_async_commit();

  float dk[DQK / 8][4], dv[DV / 8][4];
#pragma unroll
  for (int i = 0; i < DQK / 8; ++i) dk[i][0] = dk[i][1] = dk[i][2] = dk[i][3] = 0.f;
#pragma unroll
  for (int i = 0; i < DV / 8; ++i) dv[i][0] = dv[i][1] = dv[i][2] = dv[i][3] = 0.f;
  const int key0 = k0 + warp * 16 + g;  // this lane's keys: key0, key0 + 8
  uint32_t kf[TL::REG ? DQK / 16 : 1][4], vf[TL::REG ? DV / 16 : 1][4];  // TL::REG: K_w, V_w A fragments

  for (int i = 0; i < n_q; ++i) {
    const int buf = i & 1;
    if (i + 1 < n_q) load_q(i + 1, buf ^ 1);
    cp_async_commit();
    cp_async_wait<1>();
    __syncthreads();
    if constexpr (TL::REG) {
      if (i == 0) {  // K and V arrived with the first query tile; every warp loads, also one skipping this step
#pragma unroll
        for (int kk = 0; kk < DQK / 16; ++kk) ldsm_x4(kf[kk], lds_a(Ks, PQ, warp * 16, kk * 16, lane));
#pragma unroll
        for (int kk = 0; kk < DV / 16; ++kk) ldsm_x4(vf[kk], lds_a(Vs, PV, warp * 16, kk * 16, lane));
      }
    }
    const bf16_t* Qt = Qs + buf * BQ * PQ;
    const bf16_t* dOt = dOs + buf * BQ * PV;
    const float* lse_t = lse_s + buf * BQ;
    const float* D_t = D_s + buf * BQ;
    const int q0 = (qt0 + i) * BQ;
    const int wkey0 = k0 + warp * 16;  // this warp's keys: wkey0 .. wkey0 + 15
    // Skip when every key of this warp comes after every query of the tile (P = 0) or lies past T (not written).
    if (wkey0 <= q0 + BQ - 1 && wkey0 < T) {
      // S^T = K_w Q^T  [16 keys][BQ queries]
      float st[BQ / 8][4];
#pragma unroll
      for (int x = 0; x < BQ / 8; ++x) st[x][0] = st[x][1] = st[x][2] = st[x][3] = 0.f;
#pragma unroll
      for (int kk = 0; kk < DQK / 16; ++kk) {
        uint32_t af[4];
        if constexpr (TL::REG) af[0] = kf[kk][0], af[1] = kf[kk][1], af[2] = kf[kk][2], af[3] = kf[kk][3];
        else ldsm_x4(af, lds_a(Ks, PQ, warp * 16, kk * 16, lane));
#pragma unroll
        for (int np = 0; np < BQ / 16; ++np) {
          uint32_t bf[4];
          ldsm_x4(bf, lds_b_nk(Qt, PQ, np * 16, kk * 16, lane));
          mma_bf16(st[2 * np], af, bf[0], bf[1]);
          mma_bf16(st[2 * np + 1], af, bf[2], bf[3]);
        }
      }
      // P^T = exp(scale S^T - lse[q]), 0 where masked (the diagonal, or queries past T)
      if (wkey0 + 15 > q0 || q0 + BQ > T) {
#pragma unroll
        for (int nt = 0; nt < BQ / 8; ++nt)
#pragma unroll
          for (int e = 0; e < 4; ++e) {
            const int ql = nt * 8 + 2 * t4 + (e & 1), key = key0 + (e >> 1) * 8, qg = q0 + ql;
            st[nt][e] = (key > qg || qg >= T) ? 0.f : ex2_ftz(fmaf(st[nt][e], a.scale_log2, -lse_t[ql]));
          }
      } else {
#pragma unroll
        for (int nt = 0; nt < BQ / 8; ++nt)
#pragma unroll
          for (int e = 0; e < 4; ++e)
            st[nt][e] = ex2_ftz(fmaf(st[nt][e], a.scale_log2, -lse_t[nt * 8 + 2 * t4 + (e & 1)]));
      }
      // dV += P^T dO
#pragma unroll
      for (int kk = 0; kk < BQ / 16; ++kk) {
        const uint32_t pa[4] = {pack_bf16(st[2 * kk][0], st[2 * kk][1]), pack_bf16(st[2 * kk][2], st[2 * kk][3]),
                                pack_bf16(st[2 * kk + 1][0], st[2 * kk + 1][1]),
                                pack_bf16(st[2 * kk + 1][2], st[2 * kk + 1][3])};
#pragma unroll
        for (int np = 0; np < DV / 16; ++np) {
          uint32_t bf[4];
          ldsm_x4_t(bf, lds_b_kn(dOt, PV, kk * 16, np * 16, lane));
          mma_bf16(dv[2 * np], pa, bf[0], bf[1]);
          mma_bf16(dv[2 * np + 1], pa, bf[2], bf[3]);
        }
      }
      // dP^T = V_w dO^T
      float dp[BQ / 8][4];
#pragma unroll
      for (int x = 0; x < BQ / 8; ++x) dp[x][0] = dp[x][1] = dp[x][2] = dp[x][3] = 0.f;
#pragma unroll
      for (int kk = 0; kk < DV / 16; ++kk) {
        uint32_t af[4];
        if constexpr (TL::REG) af[0] = vf[kk][0], af[1] = vf[kk][1], af[2] = vf[kk][2], af[3] = vf[kk][3];
        else ldsm_x4(af, lds_a(Vs, PV, warp * 16, kk * 16, lane));
#pragma unroll
        for (int np = 0; np < BQ / 16; ++np) {
          uint32_t bf[4];
          ldsm_x4(bf, lds_b_nk(dOt, PV, np * 16, kk * 16, lane));
          mma_bf16(dp[2 * np], af, bf[0], bf[1]);
          mma_bf16(dp[2 * np + 1], af, bf[2], bf[3]);
        }
      }
      // dS^T = P^T (dP^T - D[q]);  dK += dS^T Q
#pragma unroll
      for (int nt = 0; nt < BQ / 8; ++nt)
#pragma unroll
        for (int e = 0; e < 4; ++e) st[nt][e] *= dp[nt][e] - D_t[nt * 8 + 2 * t4 + (e & 1)];
#pragma unroll
      for (int kk = 0; kk < BQ / 16; ++kk) {
        const uint32_t pa[4] = {pack_bf16(st[2 * kk][0], st[2 * kk][1]), pack_bf16(st[2 * kk][2], st[2 * kk][3]),
                                pack_bf16(st[2 * kk + 1][0], st[2 * kk + 1][1]),
                                pack_bf16(st[2 * kk + 1][2], st[2 * kk + 1][3])};
#pragma unroll
        for (int np = 0; np < DQK / 16; ++np) {
          uint32_t bf[4];
          ldsm_x4_t(bf, lds_b_kn(Qt, PQ, kk * 16, np * 16, lane));
          mma_bf16(dk[2 * np], pa, bf[0], bf[1]);
          mma_bf16(dk[2 * np + 1], pa, bf[2], bf[3]);
        }
      }
    }
    __syncthreads();
  }

#pragma unroll
  for (int i = 0; i < 2; ++i) {
    const int key = key0 + i * 8;
    if (key >= T) continue;
    if (a.dk) {
      bf16_t* row = a.dk + qoff + int64_t(key) * sq;
#pragma unroll
      for (int nt = 0; nt < DQK / 8; ++nt)
        *reinterpret_cast<uint32_t*>(row + nt * 8 + 2 * t4) =
            pack_bf16(dk[nt][2 * i] * a.scale, dk[nt][2 * i + 1] * a.scale);
    }
    if (a.dv) {
      bf16_t* row = a.dv + voff + int64_t(key) * sv;
#pragma unroll
      for (int nt = 0; nt < DV / 8; ++nt)
        *reinterpret_cast<uint32_t*>(row + nt * 8 + 2 * t4) = pack_bf16(dv[nt][2 * i], dv[nt][2 * i + 1]);
    }
  }
}

// dQ for one tile of 64 queries: loops over the key tiles at or before it.
template <int DQK, int DV, class TL>
__global__ void __launch_bounds__(kMmaThreads, TL::MINB) attn_bwd_dq_mma(AttnArgs<bf16_t> a) {
  pdl_enter();  // programmatic dependent launch: wait for the previous kernel (common.cuh)
  using C = Mma<DQK, DV>;
  constexpr int BQ = C::Q_BQ, BK = TL::STEP, PQ = C::PQ, PV = C::PV;
  static_assert(BK % 16 == 0 && BQ % BK == 0, "key step: 16..64, divides 64");
  extern __shared__ __align__(16) unsigned char smem_raw[];
  bf16_t* Qs = reinterpret_cast<bf16_t*>(smem_raw);  // [BQ][PQ]
  bf16_t* dOs = Qs + BQ * PQ;                         // [BQ][PV]
  bf16_t* Ks = dOs + BQ * PV;                         // [2][BK][PQ]
  bf16_t* Vs = Ks + 2 * BK * PQ;                      // [2][BK][PV]
  float* lse_s = reinterpret_cast<float*>(Vs + 2 * BK * PV);  // [BQ], log2 units
  float* D_s = lse_s + BQ;                                    // [BQ]

  const int tid = threadIdx.x, warp = tid >> 5, lane = tid & 31, g = lane >> 2, t4 = lane & 3;
  const int T = a.T, H = a.H;
  const int q0 = (gridDim.x - 1 - blockIdx.x) * BQ;
  const int b = blockIdx.y / H, h = blockIdx.y % H;
  const int64_t sq = int64_t(H) * DQK, sv = int64_t(H) * DV;
  const int64_t qoff = (int64_t(b) * T * H + h) * DQK, voff = (int64_t(b) * T * H + h) * DV;
  const bf16_t *qb = a.q + qoff, *kb = a.k + qoff, *vb = a.v + voff, *dob = a.dout + voff;
  const int n_kv = min((T + BK - 1) / BK, (q0 + BQ - 1) / BK + 1);

  load_tile_async<BQ, DQK, PQ, kMmaThreads>(Qs, qb + int64_t(q0) * sq, sq, T - q0, tid);
  load_tile_async<BQ, DV, PV, kMmaThreads>(dOs, dob + int64_t(q0) * sv, sv, T - q0, tid);
  load_tile_async<BK, DQK, PQ, kMmaThreads>(Ks, kb, sq, T, tid);
  load_tile_async<BK, DV, PV, kMmaThreads>(Vs, vb, sv, T, tid);
  cp_async_commit();
  if (tid < BQ) {
    const int64_t row = (int64_t(b) * H + h) * T + q0 + tid;
    lse_s[tid] = q0 + tid < T ? a.lse_in[row] * kLog2e : 0.f;
    D_s[tid] = q0 + tid < T ? a.delta[row] : 0.f;
  }

  float dq[DQK / 8][4];
#pragma unroll
  for (int i = 0; i < DQK / 8; ++i) dq[i][0] = dq[i][1] = dq[i][2] = dq[i][3] = 0.f;
  const int row0 = q0 + warp * 16 + g;
  float lse_r[2], D_r[2];
  uint32_t qf[TL::REG ? DQK / 16 : 1][4], df[TL::REG ? DV / 16 : 1][4];  // TL::REG: Q_w, dO_w A fragments

  for (int j = 0; j < n_kv; ++j) {
    const int buf = j & 1;
    if (j + 1 < n_kv) {
      const int k1 = (j + 1) * BK;
      load_tile_async_lean<BK, DQK, PQ, kMmaThreads>(Ks + (buf ^ 1) * BK * PQ, kb + int64_t(k1) * sq, sq, T - k1,
                                                     tid);
      load_tile_async_lean<BK, DV, PV, kMmaThreads>(Vs + (buf ^ 1) * BK * PV, vb + int64_t(k1) * sv, sv, T - k1,
                                                    tid);
    }
    cp_async_commit();
    cp_async_wait<1>();
    __syncthreads();
    if (j == 0) {  // the per-lane row stats (written before the barrier above)
#pragma unroll
      for (int i = 0; i < 2; ++i) {
        lse_r[i] = lse_s[warp * 16 + g + 8 * i];
        D_r[i] = D_s[warp * 16 + g + 8 * i];
      }
      if constexpr (TL::REG) {  // Q and dO arrived with the first key tile
#pragma unroll
        for (int kk = 0; kk < DQK / 16; ++kk) ldsm_x4(qf[kk], lds_a(Qs, PQ, warp * 16, kk * 16, lane));
#pragma unroll
        for (int kk = 0; kk < DV / 16; ++kk) ldsm_x4(df[kk], lds_a(dOs, PV, warp * 16, kk * 16, lane));
      }
    }
    const int k0 = j * BK, wrow0 = q0 + warp * 16;  // this warp's rows: wrow0 .. wrow0 + 15
    // Skip when every key of the tile comes after every row of this warp (P = 0) or the rows lie past T.
    if (k0 <= wrow0 + 15 && wrow0 < T) {
      const bf16_t* Kt = Ks + buf * BK * PQ;
      const bf16_t* Vt = Vs + buf * BK * PV;

      float s[BK / 8][4], dp[BK / 8][4];
#pragma unroll
      for (int x = 0; x < BK / 8; ++x) {
        s[x][0] = s[x][1] = s[x][2] = s[x][3] = 0.f;
        dp[x][0] = dp[x][1] = dp[x][2] = dp[x][3] = 0.f;
      }
#pragma unroll
      for (int kk = 0; kk < DQK / 16; ++kk) {
        uint32_t af[4];
        if constexpr (TL::REG) af[0] = qf[kk][0], af[1] = qf[kk][1], af[2] = qf[kk][2], af[3] = qf[kk][3];
        else ldsm_x4(af, lds_a(Qs, PQ, warp * 16, kk * 16, lane));
#pragma unroll
        for (int np = 0; np < BK / 16; ++np) {
          uint32_t bf[4];
          ldsm_x4(bf, lds_b_nk(Kt, PQ, np * 16, kk * 16, lane));
          mma_bf16(s[2 * np], af, bf[0], bf[1]);
          mma_bf16(s[2 * np + 1], af, bf[2], bf[3]);
        }
      }
#pragma unroll
      for (int kk = 0; kk < DV / 16; ++kk) {
        uint32_t af[4];
        if constexpr (TL::REG) af[0] = df[kk][0], af[1] = df[kk][1], af[2] = df[kk][2], af[3] = df[kk][3];
        else ldsm_x4(af, lds_a(dOs, PV, warp * 16, kk * 16, lane));
#pragma unroll
        for (int np = 0; np < BK / 16; ++np) {
          uint32_t bf[4];
          ldsm_x4(bf, lds_b_nk(Vt, PV, np * 16, kk * 16, lane));
          mma_bf16(dp[2 * np], af, bf[0], bf[1]);
          mma_bf16(dp[2 * np + 1], af, bf[2], bf[3]);
        }
      }
      if (k0 + BK - 1 > wrow0 || k0 + BK > T) {  // the diagonal or the key tail: mask
#pragma unroll
        for (int nt = 0; nt < BK / 8; ++nt)
#pragma unroll
          for (int e = 0; e < 4; ++e) {
            const int col = k0 + nt * 8 + 2 * t4 + (e & 1), i = e >> 1, row = row0 + 8 * i;
            const float p = (col > row || col >= T) ? 0.f : ex2_ftz(fmaf(s[nt][e], a.scale_log2, -lse_r[i]));
            s[nt][e] = p * (dp[nt][e] - D_r[i]);
          }
      } else {
#pragma unroll
        for (int nt = 0; nt < BK / 8; ++nt)
#pragma unroll
          for (int e = 0; e < 4; ++e) {
            const int i = e >> 1;
            s[nt][e] = ex2_ftz(fmaf(s[nt][e], a.scale_log2, -lse_r[i])) * (dp[nt][e] - D_r[i]);
          }
      }
#pragma unroll
      for (int kk = 0; kk < BK / 16; ++kk) {
        const uint32_t pa[4] = {pack_bf16(s[2 * kk][0], s[2 * kk][1]), pack_bf16(s[2 * kk][2], s[2 * kk][3]),
                                pack_bf16(s[2 * kk + 1][0], s[2 * kk + 1][1]),
                                pack_bf16(s[2 * kk + 1][2], s[2 * kk + 1][3])};
#pragma unroll
        for (int np = 0; np < DQK / 16; ++np) {
          uint32_t bf[4];
          ldsm_x4_t(bf, lds_b_kn(Kt, PQ, kk * 16, np * 16, lane));
          mma_bf16(dq[2 * np], pa, bf[0], bf[1]);
          mma_bf16(dq[2 * np + 1], pa, bf[2], bf[3]);
        }
      }
    }
    __syncthreads();
  }

#pragma unroll
  for (int i = 0; i < 2; ++i) {
    const int row = row0 + i * 8;
    if (row >= T) continue;
    bf16_t* drow = a.dq + qoff + int64_t(row) * sq;
#pragma unroll
    for (int nt = 0; nt < DQK / 8; ++nt)
      *reinterpret_cast<uint32_t*>(drow + nt * 8 + 2 * t4) =
          pack_bf16(dq[nt][2 * i] * a.scale, dq[nt][2 * i + 1] * a.scale);
  }
}

// ---- backward dK/dV on Hopper's warpgroup MMA (sm_90a; a bench-hook variant, not the default) ---------------
// The job of attn_bwd_dkdv_mma (64 keys a block, a loop over query steps of BQ), with each product one m64nNk16
// wgmma per k16 step of the block's one warpgroup: S^T = K Q^T and dP^T = V dO^T read both operands from shared
// memory (no ldmatrix); dV += P^T dO and dK += dS^T Q take P^T and dS^T as register A fragments (S^T's accumulator
// layout is the A fragment layout, as with mma.sync) and read dO and Q transposed (MN-major). Tiles sit in
// wgmma.cuh's 128-byte swizzled layout, Dqk 96 as two 64-wide column blocks (the pad zero-filled, never read). A
// step: S^T and dP^T go out as two groups; P^T is computed once S^T lands (dP^T in flight) and dV's products issued,
// then dS^T once dP^T lands and dK's products; all retire before the step's closing barrier, after which the other
// buffer is refilled. wgmma is warpgroup-wide, so no warp skips a step (masked pairs add exact zeros).
namespace wgbwd {

template <int DQK, int DV, int BQ> struct Cfg {
  static constexpr int KB = (DQK + 63) / 64, VB = (DV + 63) / 64;  // 64-wide column blocks
  static constexpr int k_bytes = 64 * KB * 128, v_bytes = 64 * VB * 128;
  static constexpr int q_bytes = BQ * KB * 128, do_bytes = BQ * VB * 128;  // one buffer
  // + 1024: slack to align the tiles to 1024 bytes (the swizzle is a function of the address)
  static constexpr size_t smem = size_t(k_bytes + v_bytes + 2 * q_bytes + 2 * do_bytes) + 4 * BQ * sizeof(float) + 1024;
};

template <int N> __device__ __forceinline__ void mma_ss(float (&d)[N / 2], uint64_t da, uint64_t db) {
  static_assert(N == 32 || N == 64, "query step 32 or 64");
  if constexpr (N == 32) wgmma::mma_m64n32k16<0, 0>(d, da, db);
  else wgmma::mma_m64n64k16<0, 0>(d, da, db);
}
template <int N> __device__ __forceinline__ void mma_rs_t(float (&d)[N / 2], const uint32_t (&a)[4], uint64_t db) {
  static_assert(N == 64 || N == 96, "head dims 64 or 96");
  if constexpr (N == 64) wgmma::mma_rs_m64n64k16<1>(d, a, db);
  else wgmma::mma_rs_m64n96k16<1>(d, a, db);
}
// Keeps the compiler from moving register A fragments across the asynchronous products reading them.
template <int N> __device__ __forceinline__ void pin_frags(uint32_t (&f)[N][4]) {
#pragma unroll
  for (int i = 0; i < N; ++i) asm volatile("" : "+r"(f[i][0]), "+r"(f[i][1]), "+r"(f[i][2]), "+r"(f[i][3])::"memory");
}
// The mma.sync-style A fragments of k16 step kk from an m64 accumulator (n8 tiles 2 kk, 2 kk + 1), rounded to bf16.
template <int N> __device__ __forceinline__ void to_frags(uint32_t (&f)[N / 16][4], const float (&c)[N / 2]) {
#pragma unroll
  for (int kk = 0; kk < N / 16; ++kk) {
    f[kk][0] = pack_bf16(c[8 * kk], c[8 * kk + 1]);
    f[kk][1] = pack_bf16(c[8 * kk + 2], c[8 * kk + 3]);
    f[kk][2] = pack_bf16(c[8 * kk + 4], c[8 * kk + 5]);
    f[kk][3] = pack_bf16(c[8 * kk + 6], c[8 * kk + 7]);
  }
}

}  // namespace wgbwd

template <int DQK, int DV, int BQ, int MINB>
__global__ void __launch_bounds__(kMmaThreads, MINB) attn_bwd_dkdv_wgmma(AttnArgs<bf16_t> a) {
  pdl_enter();  // programmatic dependent launch: wait for the previous kernel (common.cuh)
  using C = wgbwd::Cfg<DQK, DV, BQ>;
  constexpr int BK = 64;
  extern __shared__ __align__(16) unsigned char smem_raw[];
  unsigned char* Ks = smem_raw + ((1024 - (smem_addr(smem_raw) & 1023)) & 1023);
  unsigned char* Vs = Ks + C::k_bytes;
  unsigned char* Qs = Vs + C::v_bytes;       // [2] buffers
  unsigned char* dOs = Qs + 2 * C::q_bytes;  // [2] buffers
  float* lse_s = reinterpret_cast<float*>(dOs + 2 * C::do_bytes);  // [2][BQ], log2 units
  float* D_s = lse_s + 2 * BQ;                                      // [2][BQ]
  const uint32_t ks = smem_addr(Ks), vs = smem_addr(Vs), qs = smem_addr(Qs), dos = smem_addr(dOs);

  const int tid = threadIdx.x, warp = tid >> 5, lane = tid & 31, g = lane >> 2, t4 = lane & 3;
  const int T = a.T, H = a.H;
  const int k0 = blockIdx.x * BK;
  const int b = blockIdx.y / H, h = blockIdx.y % H;
  const int64_t sq = int64_t(H) * DQK, sv = int64_t(H) * DV;
  const int64_t qoff = (int64_t(b) * T * H + h) * DQK, voff = (int64_t(b) * T * H + h) * DV;
  const bf16_t *qb = a.q + qoff, *kb = a.k + qoff, *vb = a.v + voff, *dob = a.dout + voff;
  const float* lseb = a.lse_in + (int64_t(b) * H + h) * T;
  const float* Db = a.delta + (int64_t(b) * H + h) * T;
  const int qt0 = k0 / BQ, n_q = (T + BQ - 1) / BQ - qt0;

  auto load_q = [&](int i, int buf) {
    const int q0 = (qt0 + i) * BQ;
    wgmma::load_tile_sw128<BQ, C::KB * 64, kMmaThreads>(Qs + buf * C::q_bytes, qb, sq, q0, T, 0, DQK);
    wgmma::load_tile_sw128<BQ, C::VB * 64, kMmaThreads>(dOs + buf * C::do_bytes, dob, sv, q0, T, 0, DV);
    if (tid < BQ) lse_s[buf * BQ + tid] = q0 + tid < T ? lseb[q0 + tid] * kLog2e : 0.f;
    else if (tid < 2 * BQ) D_s[buf * BQ + tid - BQ] = q0 + tid - BQ < T ? Db[q0 + tid - BQ] : 0.f;
  };
  wgmma::load_tile_sw128<BK, C::KB * 64, kMmaThreads>(Ks, kb, sq, k0, T, 0, DQK);
  wgmma::load_tile_sw128<BK, C::VB * 64, kMmaThreads>(Vs, vb, sv, k0, T, 0, DV);
  load_q(0, 0);
  cp_async_commit();

  float dk[DQK / 2], dv[DV / 2];
#pragma unroll
  for (int i = 0; i < DQK / 2; ++i) dk[i] = 0.f;
#pragma unroll
  for (int i = 0; i < DV / 2; ++i) dv[i] = 0.f;
  const int key0 = k0 + warp * 16 + g;  // this lane's keys: key0, key0 + 8

  for (int i = 0; i < n_q; ++i) {
    const int buf = i & 1;
    if (i + 1 < n_q) load_q(i + 1, buf ^ 1);
    cp_async_commit();
    cp_async_wait<1>();
    wgmma::fence_proxy_async();
    __syncthreads();
    const int q0 = (qt0 + i) * BQ;
    const uint32_t qt = qs + buf * C::q_bytes, dot = dos + buf * C::do_bytes;
    const float* lse_t = lse_s + buf * BQ;
    const float* D_t = D_s + buf * BQ;

    // S^T = K Q^T and dP^T = V dO^T [64 keys][BQ queries], K-major operands: k16 step kk is column block kk / 4,
    // + 32 bytes per step inside it; 8-row groups 1024 bytes apart.
    float st[BQ / 2], dp[BQ / 2];
#pragma unroll
    for (int x = 0; x < BQ / 2; ++x) st[x] = dp[x] = 0.f;
    wgmma::fence();
#pragma unroll
    for (int kk = 0; kk < DQK / 16; ++kk)
      wgbwd::mma_ss<BQ>(st, wgmma::desc_sw128(ks + (kk >> 2) * (BK * 128) + (kk & 3) * 32, 16, 1024),
                        wgmma::desc_sw128(qt + (kk >> 2) * (BQ * 128) + (kk & 3) * 32, 16, 1024));
    wgmma::commit();
#pragma unroll
    for (int kk = 0; kk < DV / 16; ++kk)
      wgbwd::mma_ss<BQ>(dp, wgmma::desc_sw128(vs + (kk >> 2) * (BK * 128) + (kk & 3) * 32, 16, 1024),
                        wgmma::desc_sw128(dot + (kk >> 2) * (BQ * 128) + (kk & 3) * 32, 16, 1024));
    wgmma::commit();
    wgmma::wait<1>();  // S^T has landed
    wgmma::pin(st);

    // P^T = exp(scale S^T - lse[q]), 0 where masked (the diagonal, or queries past T); st[4 nt + e] is key
    // key0 + 8 (e >> 1), query q0 + 8 nt + 2 t4 + (e & 1).
    if (k0 + warp * 16 + 15 > q0 || q0 + BQ > T) {
#pragma unroll
      for (int nt = 0; nt < BQ / 8; ++nt)
#pragma unroll
        for (int e = 0; e < 4; ++e) {
          const int ql = nt * 8 + 2 * t4 + (e & 1), key = key0 + (e >> 1) * 8, qg = q0 + ql;
          st[4 * nt + e] = (key > qg || qg >= T) ? 0.f : ex2_ftz(fmaf(st[4 * nt + e], a.scale_log2, -lse_t[ql]));
        }
    } else {
#pragma unroll
      for (int nt = 0; nt < BQ / 8; ++nt)
#pragma unroll
        for (int e = 0; e < 4; ++e)
          st[4 * nt + e] = ex2_ftz(fmaf(st[4 * nt + e], a.scale_log2, -lse_t[nt * 8 + 2 * t4 + (e & 1)]));
    }
    // dV += P^T dO: dO as the MN-major B ([queries = k][Dv = n]): k16 step = 16 rows = 2048 bytes.
    uint32_t pf[BQ / 16][4];
    wgbwd::to_frags<BQ>(pf, st);
    wgbwd::pin_frags(pf);
    wgmma::fence();
#pragma unroll
    for (int kq = 0; kq < BQ / 16; ++kq)
      wgbwd::mma_rs_t<DV>(dv, pf[kq], wgmma::desc_sw128(dot + kq * 2048, BQ * 128, 1024));
    wgmma::commit();
    wgmma::wait<1>();  // dP^T has landed (dV's products may still run)
    wgmma::pin(dp);

    // dS^T = P^T (dP^T - D[q]);  dK += dS^T Q (Q as the MN-major B, Dqk = n across its column blocks)
#pragma unroll
    for (int nt = 0; nt < BQ / 8; ++nt)
#pragma unroll
      for (int e = 0; e < 4; ++e) st[4 * nt + e] *= dp[4 * nt + e] - D_t[nt * 8 + 2 * t4 + (e & 1)];
    uint32_t sf[BQ / 16][4];
    wgbwd::to_frags<BQ>(sf, st);
    wgbwd::pin_frags(sf);
    wgmma::fence();
#pragma unroll
    for (int kq = 0; kq < BQ / 16; ++kq)
      wgbwd::mma_rs_t<DQK>(dk, sf[kq], wgmma::desc_sw128(qt + kq * 2048, BQ * 128, 1024));
    wgmma::commit();
    wgmma::wait<0>();
    wgbwd::pin_frags(pf);
    wgbwd::pin_frags(sf);
    wgmma::pin(dv);
    wgmma::pin(dk);
    __syncthreads();  // every product of this step has retired: the buffers may be refilled
  }

#pragma unroll
  for (int i = 0; i < 2; ++i) {
    const int key = key0 + i * 8;
    if (key >= T) continue;
    if (a.dk) {
      bf16_t* row = a.dk + qoff + int64_t(key) * sq;
#pragma unroll
      for (int nt = 0; nt < DQK / 8; ++nt)
        *reinterpret_cast<uint32_t*>(row + nt * 8 + 2 * t4) =
            pack_bf16(dk[4 * nt + 2 * i] * a.scale, dk[4 * nt + 2 * i + 1] * a.scale);
    }
    if (a.dv) {
      bf16_t* row = a.dv + voff + int64_t(key) * sv;
#pragma unroll
      for (int nt = 0; nt < DV / 8; ++nt)
        *reinterpret_cast<uint32_t*>(row + nt * 8 + 2 * t4) = pack_bf16(dv[4 * nt + 2 * i], dv[4 * nt + 2 * i + 1]);
    }
  }
}

// ---- backward dQ on warpgroup MMA (sm_90a; a bench-hook variant, not the default) ---------------------------
// The job of attn_bwd_dq_mma (64 queries a block, a loop over key steps of BK) in the manner of
// attn_bwd_dkdv_wgmma: S = Q K^T and dP = dO V^T read both operands from shared memory, dQ += dS K takes dS as
// register A fragments and reads K transposed (MN-major). P is computed once S lands (dP in flight).
namespace wgbwd {

template <int DQK, int DV, int BK> struct CfgQ {
  static constexpr int KB = (DQK + 63) / 64, VB = (DV + 63) / 64;  // 64-wide column blocks
  static constexpr int q_bytes = 64 * KB * 128, do_bytes = 64 * VB * 128;
  static constexpr int k_bytes = BK * KB * 128, v_bytes = BK * VB * 128;  // one buffer
  static constexpr size_t smem = size_t(q_bytes + do_bytes + 2 * k_bytes + 2 * v_bytes) + 2 * 64 * sizeof(float) + 1024;
};

}  // namespace wgbwd

template <int DQK, int DV, int BK, int MINB>
__global__ void __launch_bounds__(kMmaThreads, MINB) attn_bwd_dq_wgmma(AttnArgs<bf16_t> a) {
  pdl_enter();  // programmatic dependent launch: wait for the previous kernel (common.cuh)
  using C = wgbwd::CfgQ<DQK, DV, BK>;
  constexpr int BQ = 64;
  extern __shared__ __align__(16) unsigned char smem_raw[];
  unsigned char* Qs = smem_raw + ((1024 - (smem_addr(smem_raw) & 1023)) & 1023);
  unsigned char* dOs = Qs + C::q_bytes;
  unsigned char* Ks = dOs + C::do_bytes;   // [2] buffers
  unsigned char* Vs = Ks + 2 * C::k_bytes;  // [2] buffers
  float* lse_s = reinterpret_cast<float*>(Vs + 2 * C::v_bytes);  // [BQ], log2 units
  float* D_s = lse_s + BQ;                                        // [BQ]
  const uint32_t qs = smem_addr(Qs), dos = smem_addr(dOs), ks = smem_addr(Ks), vs = smem_addr(Vs);

  const int tid = threadIdx.x, warp = tid >> 5, lane = tid & 31, g = lane >> 2, t4 = lane & 3;
  const int T = a.T, H = a.H;
  const int q0 = (gridDim.x - 1 - blockIdx.x) * BQ;  // the longest rows first
  const int b = blockIdx.y / H, h = blockIdx.y % H;
  const int64_t sq = int64_t(H) * DQK, sv = int64_t(H) * DV;
  const int64_t qoff = (int64_t(b) * T * H + h) * DQK, voff = (int64_t(b) * T * H + h) * DV;
  const bf16_t *qb = a.q + qoff, *kb = a.k + qoff, *vb = a.v + voff, *dob = a.dout + voff;
  const int n_kv = min((T + BK - 1) / BK, (q0 + BQ - 1) / BK + 1);

  auto load_kv = [&](int j, int buf) {
    wgmma::load_tile_sw128<BK, C::KB * 64, kMmaThreads>(Ks + buf * C::k_bytes, kb, sq, j * BK, T, 0, DQK);
    wgmma::load_tile_sw128<BK, C::VB * 64, kMmaThreads>(Vs + buf * C::v_bytes, vb, sv, j * BK, T, 0, DV);
  };
  wgmma::load_tile_sw128<BQ, C::KB * 64, kMmaThreads>(Qs, qb, sq, q0, T, 0, DQK);
  wgmma::load_tile_sw128<BQ, C::VB * 64, kMmaThreads>(dOs, dob, sv, q0, T, 0, DV);
  load_kv(0, 0);
  cp_async_commit();
  if (tid < BQ) {
    const int64_t row = (int64_t(b) * H + h) * T + q0 + tid;
    lse_s[tid] = q0 + tid < T ? a.lse_in[row] * kLog2e : 0.f;
    D_s[tid] = q0 + tid < T ? a.delta[row] : 0.f;
  }

  float dq[DQK / 2];
#pragma unroll
  for (int i = 0; i < DQK / 2; ++i) dq[i] = 0.f;
  const int row0 = q0 + warp * 16 + g;  // this lane's rows: row0, row0 + 8
  float lse_r[2], D_r[2];

  for (int j = 0; j < n_kv; ++j) {
    const int buf = j & 1;
    if (j + 1 < n_kv) load_kv(j + 1, buf ^ 1);
    cp_async_commit();
    cp_async_wait<1>();
    wgmma::fence_proxy_async();
    __syncthreads();
    if (j == 0) {  // the per-lane row stats (written before the barrier above)
#pragma unroll
      for (int i = 0; i < 2; ++i) {
        lse_r[i] = lse_s[warp * 16 + g + 8 * i];
        D_r[i] = D_s[warp * 16 + g + 8 * i];
      }
    }
    const int k0 = j * BK;
    const uint32_t kt = ks + buf * C::k_bytes, vt = vs + buf * C::v_bytes;

    // S = Q K^T and dP = dO V^T [64 queries][BK keys], K-major operands (see attn_bwd_dkdv_wgmma)
    float s[BK / 2], dp[BK / 2];
#pragma unroll
    for (int x = 0; x < BK / 2; ++x) s[x] = dp[x] = 0.f;
    wgmma::fence();
#pragma unroll
    for (int kk = 0; kk < DQK / 16; ++kk)
      wgbwd::mma_ss<BK>(s, wgmma::desc_sw128(qs + (kk >> 2) * (BQ * 128) + (kk & 3) * 32, 16, 1024),
                        wgmma::desc_sw128(kt + (kk >> 2) * (BK * 128) + (kk & 3) * 32, 16, 1024));
    wgmma::commit();
#pragma unroll
    for (int kk = 0; kk < DV / 16; ++kk)
      wgbwd::mma_ss<BK>(dp, wgmma::desc_sw128(dos + (kk >> 2) * (BQ * 128) + (kk & 3) * 32, 16, 1024),
                        wgmma::desc_sw128(vt + (kk >> 2) * (BK * 128) + (kk & 3) * 32, 16, 1024));
    wgmma::commit();
    wgmma::wait<1>();  // S has landed
    wgmma::pin(s);

    // P = exp(scale S - lse[row]), 0 where masked; s[4 nt + e] is row row0 + 8 (e >> 1), key k0 + 8 nt + 2 t4 + (e & 1)
    if (k0 + BK - 1 > q0 + warp * 16 || k0 + BK > T) {
#pragma unroll
      for (int nt = 0; nt < BK / 8; ++nt)
#pragma unroll
        for (int e = 0; e < 4; ++e) {
          const int col = k0 + nt * 8 + 2 * t4 + (e & 1), i = e >> 1, row = row0 + 8 * i;
          s[4 * nt + e] = (col > row || col >= T) ? 0.f : ex2_ftz(fmaf(s[4 * nt + e], a.scale_log2, -lse_r[i]));
        }
    } else {
#pragma unroll
      for (int nt = 0; nt < BK / 8; ++nt)
#pragma unroll
        for (int e = 0; e < 4; ++e) s[4 * nt + e] = ex2_ftz(fmaf(s[4 * nt + e], a.scale_log2, -lse_r[e >> 1]));
    }
    wgmma::wait<0>();  // dP has landed
    wgmma::pin(dp);
    // dS = P (dP - D[row]);  dQ += dS K (K as the MN-major B, Dqk = n across its column blocks)
#pragma unroll
    for (int nt = 0; nt < BK / 8; ++nt)
#pragma unroll
      for (int e = 0; e < 4; ++e) s[4 * nt + e] *= dp[4 * nt + e] - D_r[e >> 1];
    uint32_t sf[BK / 16][4];
    wgbwd::to_frags<BK>(sf, s);
    wgbwd::pin_frags(sf);
    wgmma::fence();
#pragma unroll
    for (int kq = 0; kq < BK / 16; ++kq)
      wgbwd::mma_rs_t<DQK>(dq, sf[kq], wgmma::desc_sw128(kt + kq * 2048, BK * 128, 1024));
    wgmma::commit();
    wgmma::wait<0>();
    wgbwd::pin_frags(sf);
    wgmma::pin(dq);
    __syncthreads();  // every product of this step has retired: the buffers may be refilled
  }

#pragma unroll
  for (int i = 0; i < 2; ++i) {
    const int row = row0 + i * 8;
    if (row >= T) continue;
    bf16_t* drow = a.dq + qoff + int64_t(row) * sq;
#pragma unroll
    for (int nt = 0; nt < DQK / 8; ++nt)
      *reinterpret_cast<uint32_t*>(drow + nt * 8 + 2 * t4) =
          pack_bf16(dq[4 * nt + 2 * i] * a.scale, dq[4 * nt + 2 * i + 1] * a.scale);
  }
}

// =======================================================================================================
// SIMT path (f32, or bf16 with other head dims / alignment): 32 x 32 tiles in f32 shared memory.
// =======================================================================================================

constexpr int kSimtThreads = 128;
constexpr int kSB = 32;  // tile rows (queries and keys)

// Loads ROWS=32 rows x D elements (row stride gstride) into an f32 shared tile of pitch P; rows >= valid -> 0.
template <class E>
__device__ __forceinline__ void load_tile_f32(float* s, int P, const E* g, int64_t gstride, int D, int valid,
                                              int tid) {
  for (int e = tid; e < kSB * D; e += kSimtThreads) {
    const int r = e / D, d = e - r * D;
    s[r * P + d] = r < valid ? to_f(g[int64_t(r) * gstride + d]) : 0.f;
  }
}

__device__ __forceinline__ float dot_sh(const float* x, const float* y, int n) {
  float acc = 0.f;
  for (int d = 0; d < n; ++d) acc = fmaf(x[d], y[d], acc);
  return acc;
}

struct SimtFwdSmem {
  static size_t bytes(int Dqk, int Dv) {
    return sizeof(float) * (size_t(kSB) * (Dqk + 1) * 2 + size_t(kSB) * (Dv + 1) + kSB * (kSB + 1) +
                            size_t(kSB) * Dv + 3 * kSB);
  }
};

template <class E> __global__ void __launch_bounds__(kSimtThreads) attn_fwd_simt(AttnArgs<E> a) {
  pdl_enter();  // programmatic dependent launch: wait for the previous kernel (common.cuh)
  extern __shared__ __align__(16) unsigned char smem_raw[];
  const int T = a.T, H = a.H, Dqk = a.Dqk, Dv = a.Dv, PQ = Dqk + 1, PV = Dv + 1, PP = kSB + 1;
  float* Qs = reinterpret_cast<float*>(smem_raw);
  float* Ks = Qs + kSB * PQ;
  float* Vs = Ks + kSB * PQ;
  float* Ps = Vs + kSB * PV;
  float* Os = Ps + kSB * PP;
  float* m_s = Os + kSB * Dv;
  float* l_s = m_s + kSB;
  float* a_s = l_s + kSB;

  const int tid = threadIdx.x;
  const int q0 = (gridDim.x - 1 - blockIdx.x) * kSB;
  const int b = blockIdx.y / H, h = blockIdx.y % H;
  const int64_t sq = int64_t(H) * Dqk, sv = int64_t(H) * Dv;
  const E* qb = a.q + (int64_t(b) * T * H + h) * Dqk;
  const E* kb = a.k + (int64_t(b) * T * H + h) * Dqk;
  const E* vb = a.v + (int64_t(b) * T * H + h) * Dv;
  load_tile_f32(Qs, PQ, qb + int64_t(q0) * sq, sq, Dqk, T - q0, tid);
  for (int e = tid; e < kSB * Dv; e += kSimtThreads) Os[e] = 0.f;
  if (tid < kSB) {
    m_s[tid] = -INFINITY;
    l_s[tid] = 0.f;
  }
  const int n_kv = min((T + kSB - 1) / kSB, q0 / kSB + 1);
  const int r = tid >> 2, c0 = tid & 3;  // score role: row r, columns c0 + 4i
  for (int j = 0; j < n_kv; ++j) {
    const int k0 = j * kSB;
    __syncthreads();
    load_tile_f32(Ks, PQ, kb + int64_t(k0) * sq, sq, Dqk, T - k0, tid);
    load_tile_f32(Vs, PV, vb + int64_t(k0) * sv, sv, Dv, T - k0, tid);
    __syncthreads();
    float sc[kSB / 4], mx = -INFINITY;
#pragma unroll
    for (int i = 0; i < kSB / 4; ++i) {
      const int c = c0 + 4 * i;
      float x = dot_sh(Qs + r * PQ, Ks + c * PQ, Dqk) * a.scale;
      if (k0 + c > q0 + r || k0 + c >= T) x = -INFINITY;
      sc[i] = x;
      mx = fmaxf(mx, x);
    }
    mx = quad_max(mx);
    const float m_old = m_s[r], m_new = fmaxf(m_old, mx), ms = safe_max(m_new);
    float sum = 0.f;
#pragma unroll
    for (int i = 0; i < kSB / 4; ++i) {
      const float p = expf(sc[i] - ms);
      Ps[r * PP + c0 + 4 * i] = p;
      sum += p;
    }
    sum = quad_sum(sum);
    __syncwarp();
    if (c0 == 0) {
      const float alpha = expf(m_old - ms);
      m_s[r] = m_new;
      l_s[r] = l_s[r] * alpha + sum;
      a_s[r] = alpha;
    }
    __syncthreads();
    for (int e = tid; e < kSB * Dv; e += kSimtThreads) {
      const int rr = e / Dv, d = e - rr * Dv;
      float acc = 0.f;
#pragma unroll 8
      for (int c = 0; c < kSB; ++c) acc = fmaf(Ps[rr * PP + c], Vs[c * PV + d], acc);
      Os[e] = Os[e] * a_s[rr] + acc;
    }
  }
  __syncthreads();
  for (int e = tid; e < kSB * Dv; e += kSimtThreads) {
    const int rr = e / Dv, d = e - rr * Dv, row = q0 + rr;
    if (row < T) a.out[(int64_t(b) * T + row) * sv + int64_t(h) * Dv + d] = from_f<E>(Os[e] / l_s[rr]);
  }
  if (a.lse_out && tid < kSB && q0 + tid < T)
    a.lse_out[(int64_t(b) * H + h) * T + q0 + tid] = m_s[tid] + logf(l_s[tid]);
}

struct SimtDqSmem {
  static size_t bytes(int Dqk, int Dv) {
    return sizeof(float) * (size_t(kSB) * (Dqk + 1) * 2 + size_t(kSB) * (Dv + 1) * 2 + kSB * (kSB + 1) +
                            size_t(kSB) * Dqk + 2 * kSB);
  }
};

// D[r] = dO[r] . O[r] for the kSB rows of a tile: 4 threads per row (dO from shared, O from global).
template <class E>
__device__ __forceinline__ void rowdot_D(float* D_s, const float* dOs, int PV, const E* ob, int64_t sv, int Dv,
                                         int q0, int T, int tid) {
  const int r = tid >> 2, part = tid & 3, row = q0 + r;
  float acc = 0.f;
  if (row < T)
    for (int d = part; d < Dv; d += 4) acc = fmaf(dOs[r * PV + d], to_f(ob[int64_t(row) * sv + d]), acc);
  acc = quad_sum(acc);
  if (part == 0) D_s[r] = acc;
}

template <class E> __global__ void __launch_bounds__(kSimtThreads) attn_bwd_dq_simt(AttnArgs<E> a) {
  pdl_enter();  // programmatic dependent launch: wait for the previous kernel (common.cuh)
  extern __shared__ __align__(16) unsigned char smem_raw[];
  const int T = a.T, H = a.H, Dqk = a.Dqk, Dv = a.Dv, PQ = Dqk + 1, PV = Dv + 1, PP = kSB + 1;
  float* Qs = reinterpret_cast<float*>(smem_raw);
  float* Ks = Qs + kSB * PQ;
  float* dOs = Ks + kSB * PQ;
  float* Vs = dOs + kSB * PV;
  float* Ss = Vs + kSB * PV;
  float* dQs = Ss + kSB * PP;
  float* lse_s = dQs + kSB * Dqk;
  float* D_s = lse_s + kSB;

  const int tid = threadIdx.x;
  const int q0 = (gridDim.x - 1 - blockIdx.x) * kSB;
  const int b = blockIdx.y / H, h = blockIdx.y % H;
  const int64_t sq = int64_t(H) * Dqk, sv = int64_t(H) * Dv;
  const int64_t qoff = (int64_t(b) * T * H + h) * Dqk, voff = (int64_t(b) * T * H + h) * Dv;
  load_tile_f32(Qs, PQ, a.q + qoff + int64_t(q0) * sq, sq, Dqk, T - q0, tid);
  load_tile_f32(dOs, PV, a.dout + voff + int64_t(q0) * sv, sv, Dv, T - q0, tid);
  for (int e = tid; e < kSB * Dqk; e += kSimtThreads) dQs[e] = 0.f;
  if (tid < kSB) lse_s[tid] = q0 + tid < T ? a.lse_in[(int64_t(b) * H + h) * T + q0 + tid] : 0.f;
  __syncthreads();
  rowdot_D(D_s, dOs, PV, a.o + voff, sv, Dv, q0, T, tid);

  const int n_kv = min((T + kSB - 1) / kSB, q0 / kSB + 1);
  const int r = tid >> 2, c0 = tid & 3;
  for (int j = 0; j < n_kv; ++j) {
    const int k0 = j * kSB;
    __syncthreads();
    load_tile_f32(Ks, PQ, a.k + qoff + int64_t(k0) * sq, sq, Dqk, T - k0, tid);
    load_tile_f32(Vs, PV, a.v + voff + int64_t(k0) * sv, sv, Dv, T - k0, tid);
    __syncthreads();
#pragma unroll
    for (int i = 0; i < kSB / 4; ++i) {
      const int c = c0 + 4 * i;
      float ds = 0.f;
      if (!(k0 + c > q0 + r || k0 + c >= T)) {
        const float p = expf(dot_sh(Qs + r * PQ, Ks + c * PQ, Dqk) * a.scale - lse_s[r]);
        ds = p * (dot_sh(dOs + r * PV, Vs + c * PV, Dv) - D_s[r]);
      }
      Ss[r * PP + c] = ds;
    }
    __syncthreads();
    for (int e = tid; e < kSB * Dqk; e += kSimtThreads) {
      const int rr = e / Dqk, d = e - rr * Dqk;
      float acc = 0.f;
#pragma unroll 8
      for (int c = 0; c < kSB; ++c) acc = fmaf(Ss[rr * PP + c], Ks[c * PQ + d], acc);
      dQs[e] += acc;
    }
  }
  __syncthreads();
  for (int e = tid; e < kSB * Dqk; e += kSimtThreads) {
    const int rr = e / Dqk, d = e - rr * Dqk, row = q0 + rr;
    if (row < T) a.dq[qoff + int64_t(row) * sq + d] = from_f<E>(dQs[e] * a.scale);
  }
}

struct SimtDkvSmem {
  static size_t bytes(int Dqk, int Dv) {
    return sizeof(float) * (size_t(kSB) * (Dqk + 1) * 2 + size_t(kSB) * (Dv + 1) * 2 + 2 * kSB * (kSB + 1) +
                            size_t(kSB) * (Dqk + Dv) + 2 * kSB);
  }
};

template <class E> __global__ void __launch_bounds__(kSimtThreads) attn_bwd_dkdv_simt(AttnArgs<E> a) {
  pdl_enter();  // programmatic dependent launch: wait for the previous kernel (common.cuh)
  extern __shared__ __align__(16) unsigned char smem_raw[];
  const int T = a.T, H = a.H, Dqk = a.Dqk, Dv = a.Dv, PQ = Dqk + 1, PV = Dv + 1, PP = kSB + 1;
  float* Ks = reinterpret_cast<float*>(smem_raw);
  float* Qs = Ks + kSB * PQ;
  float* Vs = Qs + kSB * PQ;
  float* dOs = Vs + kSB * PV;
  float* Ps = dOs + kSB * PV;  // [key][query]
  float* DSs = Ps + kSB * PP;  // [key][query]
  float* dKs = DSs + kSB * PP;
  float* dVs = dKs + kSB * Dqk;
  float* lse_s = dVs + kSB * Dv;
  float* D_s = lse_s + kSB;

  const int tid = threadIdx.x;
  const int k0 = blockIdx.x * kSB;
  const int b = blockIdx.y / H, h = blockIdx.y % H;
  const int64_t sq = int64_t(H) * Dqk, sv = int64_t(H) * Dv;
  const int64_t qoff = (int64_t(b) * T * H + h) * Dqk, voff = (int64_t(b) * T * H + h) * Dv;
  load_tile_f32(Ks, PQ, a.k + qoff + int64_t(k0) * sq, sq, Dqk, T - k0, tid);
  load_tile_f32(Vs, PV, a.v + voff + int64_t(k0) * sv, sv, Dv, T - k0, tid);
  for (int e = tid; e < kSB * Dqk; e += kSimtThreads) dKs[e] = 0.f;
  for (int e = tid; e < kSB * Dv; e += kSimtThreads) dVs[e] = 0.f;

  const int c = tid >> 2, r0 = tid & 3;  // score role: key c, queries r0 + 4i
  for (int q0 = k0; q0 < T; q0 += kSB) {
    __syncthreads();
    load_tile_f32(Qs, PQ, a.q + qoff + int64_t(q0) * sq, sq, Dqk, T - q0, tid);
    load_tile_f32(dOs, PV, a.dout + voff + int64_t(q0) * sv, sv, Dv, T - q0, tid);
    if (tid < kSB) lse_s[tid] = q0 + tid < T ? a.lse_in[(int64_t(b) * H + h) * T + q0 + tid] : 0.f;
    __syncthreads();
    rowdot_D(D_s, dOs, PV, a.o + voff, sv, Dv, q0, T, tid);
    __syncthreads();
#pragma unroll
    for (int i = 0; i < kSB / 4; ++i) {
      const int r = r0 + 4 * i;
      float p = 0.f, ds = 0.f;
      if (!(k0 + c > q0 + r || q0 + r >= T)) {
        p = expf(dot_sh(Ks + c * PQ, Qs + r * PQ, Dqk) * a.scale - lse_s[r]);
        ds = p * (dot_sh(Vs + c * PV, dOs + r * PV, Dv) - D_s[r]);
      }
      Ps[c * PP + r] = p;
      DSs[c * PP + r] = ds;
    }
    __syncthreads();
    for (int e = tid; e < kSB * Dv; e += kSimtThreads) {
      const int cc = e / Dv, d = e - cc * Dv;
      float acc = 0.f;
#pragma unroll 8
      for (int r = 0; r < kSB; ++r) acc = fmaf(Ps[cc * PP + r], dOs[r * PV + d], acc);
      dVs[e] += acc;
    }
    for (int e = tid; e < kSB * Dqk; e += kSimtThreads) {
      const int cc = e / Dqk, d = e - cc * Dqk;
      float acc = 0.f;
#pragma unroll 8
      for (int r = 0; r < kSB; ++r) acc = fmaf(DSs[cc * PP + r], Qs[r * PQ + d], acc);
      dKs[e] += acc;
    }
  }
  __syncthreads();
  if (a.dk)
    for (int e = tid; e < kSB * Dqk; e += kSimtThreads) {
      const int cc = e / Dqk, d = e - cc * Dqk, key = k0 + cc;
      if (key < T) a.dk[qoff + int64_t(key) * sq + d] = from_f<E>(dKs[e] * a.scale);
    }
  if (a.dv)
    for (int e = tid; e < kSB * Dv; e += kSimtThreads) {
      const int cc = e / Dv, d = e - cc * Dv, key = k0 + cc;
      if (key < T) a.dv[voff + int64_t(key) * sv + d] = from_f<E>(dVs[e]);
    }
}

// =======================================================================================================
// Host side
// =======================================================================================================

// Head-dim pairs with a tensor-core instantiation (DeepSeek-V3: 192/128; a half-width model: 96/64; the
// project's small presets: 48/32; plus the square 128 and 64).
#define DS_ATTN_MMA_SHAPES(X) X(192, 128) X(96, 64) X(128, 128) X(64, 64) X(48, 32)
// The subset whose forward takes the wide-tile kernel (attn_fwd_mma_wide; needs scale > 0). Larger Dv keeps the
// 64-row kernel: two m-tiles of a 128-wide output accumulator would not fit the register file without spills.
#define DS_ATTN_WIDE_FWD_SHAPES(X) X(96, 64) X(48, 32)

// Backward alternatives at 96/64, X(index, step, min blocks, registers) as BwdTile's parameters; index 0 is
// BwdDefault (the mma.sync kernels every shape has). Selected by the bench hooks (attention_bench_dkdv_variant,
// attention_bench_dq_variant), to time them against each other in one run and to test them against variant 0.
#define DS_ATTN_DKDV_VARIANTS(X) X(1, 32, 3, false) X(2, 32, 3, true) X(3, 64, 2, false) X(4, 64, 2, true) \
  X(5, 64, 3, false)
#define DS_ATTN_DQ_VARIANTS(X) X(1, 32, 3, false) X(2, 32, 3, true) X(3, 64, 3, false) X(4, 64, 2, true)
// dK/dV variants 6 and 7: attn_bwd_dkdv_wgmma with query steps of 32 (3 blocks an SM) and 64 (2); dQ variants 5 and
// 6: attn_bwd_dq_wgmma with key steps of 32 (3) and 64 (2). sm_90a builds only (kernels/CMakeLists.txt defines
// DS_CUDA_WGMMA there). The counts include the default.
// The default at 96/64: the wgmma kernels with steps of 32 where they exist (H200, bench model training shape,
// B16 T1024 H16, ms for dK+dV / dQ: mma.sync 0.491 / 0.378, wgmma step 32 0.392 / 0.297, step 64 0.388 / 0.315;
// training 235.0k -> see bench/README.md), else the mma.sync kernels (variant 0).
#ifdef DS_CUDA_WGMMA
constexpr int kDkdvVariants = 8, kDqVariants = 7;
int g_dkdv_variant = 6, g_dq_variant = 5;
#else
constexpr int kDkdvVariants = 6, kDqVariants = 5;
int g_dkdv_variant = 0, g_dq_variant = 0;
#endif

template <class E> AttnArgs<E> make_args(const Tensor& q, const Tensor& v, double scale) {
  AttnArgs<E> a{};
  a.T = int(q.dim(1));
  a.H = int(q.dim(2));
  a.Dqk = int(q.dim(3));
  a.Dv = int(v.dim(3));
  a.scale = float(scale);
  a.scale_log2 = float(scale * 1.4426950408889634);
  return a;
}

template <class E> const E* cptr(const Tensor& t) { return t.empty() ? nullptr : static_cast<const E*>(t.data); }
template <class E> E* mptr(const Tensor& t) { return t.empty() ? nullptr : static_cast<E*>(t.data); }

bool mma_shape(int Dqk, int Dv) {
#define DS_X(a, b) if (Dqk == a && Dv == b) return true;
  DS_ATTN_MMA_SHAPES(DS_X)
#undef DS_X
  return false;
}

template <int DQK, int DV> void launch_fwd_mma(const AttnArgs<bf16_t>& a, int B, cudaStream_t st) {
  using C = Mma<DQK, DV>;
  allow_smem(attn_fwd_mma<DQK, DV>, C::f_smem);
  const dim3 grid((a.T + C::F_BQ - 1) / C::F_BQ, B * a.H);
  launch(attn_fwd_mma<DQK, DV>, grid, kMmaThreads, C::f_smem, st, a);
}

template <int DQK, int DV> void launch_fwd_wide(const AttnArgs<bf16_t>& a, int B, cudaStream_t st) {
  constexpr size_t smem = FwdWide<DQK, DV>::smem;
  allow_smem(attn_fwd_mma_wide<DQK, DV>, smem);
  const dim3 grid((a.T + kFwdWideBQ - 1) / kFwdWideBQ, B * a.H);
  launch(attn_fwd_mma_wide<DQK, DV>, grid, kMmaThreads, smem, st, a);
}

template <int DQK, int DV, class TL> void launch_dkdv(const AttnArgs<bf16_t>& a, int B, cudaStream_t st) {
  constexpr size_t smem = Mma<DQK, DV>::kv_smem(TL::STEP);
  allow_smem(attn_bwd_dkdv_mma<DQK, DV, TL>, smem);
  const dim3 grid((a.T + Mma<DQK, DV>::KV_BK - 1) / Mma<DQK, DV>::KV_BK, B * a.H);
  launch(attn_bwd_dkdv_mma<DQK, DV, TL>, grid, kMmaThreads, smem, st, a);
}

template <int BQ, int MINB> void launch_dkdv_wgmma(const AttnArgs<bf16_t>& a, int B, cudaStream_t st) {
  constexpr size_t smem = wgbwd::Cfg<96, 64, BQ>::smem;
  allow_smem(attn_bwd_dkdv_wgmma<96, 64, BQ, MINB>, smem);
  const dim3 grid((a.T + 63) / 64, B * a.H);
  launch(attn_bwd_dkdv_wgmma<96, 64, BQ, MINB>, grid, kMmaThreads, smem, st, a);
}

template <int BK, int MINB> void launch_dq_wgmma(const AttnArgs<bf16_t>& a, int B, cudaStream_t st) {
  constexpr size_t smem = wgbwd::CfgQ<96, 64, BK>::smem;
  allow_smem(attn_bwd_dq_wgmma<96, 64, BK, MINB>, smem);
  const dim3 grid((a.T + 63) / 64, B * a.H);
  launch(attn_bwd_dq_wgmma<96, 64, BK, MINB>, grid, kMmaThreads, smem, st, a);
}

template <int DQK, int DV, class TL> void launch_dq(const AttnArgs<bf16_t>& a, int B, cudaStream_t st) {
  constexpr size_t smem = Mma<DQK, DV>::q_smem(TL::STEP);
  allow_smem(attn_bwd_dq_mma<DQK, DV, TL>, smem);
  const dim3 grid((a.T + Mma<DQK, DV>::Q_BQ - 1) / Mma<DQK, DV>::Q_BQ, B * a.H);
  launch(attn_bwd_dq_mma<DQK, DV, TL>, grid, kMmaThreads, smem, st, a);
}

template <int DQK, int DV> void launch_bwd_mma(AttnArgs<bf16_t> a, int B, cudaStream_t st) {
  const int64_t rows = int64_t(B) * a.T * a.H;
  TempBuffer delta(size_t(rows) * sizeof(float), st);  // stream-ordered, from the pool kept by cuda_device.cu
  a.delta = delta.as<float>();
  launch(attn_bwd_delta<DV>, unsigned((rows + kDeltaThreads - 1) / kDeltaThreads), kDeltaThreads, 0, st, a, rows);
  if (a.dk || a.dv) {
    if constexpr (DQK == 96 && DV == 64) {
      switch (g_dkdv_variant) {
#define DS_X(i, step, minb, reg) \
  case i: launch_dkdv<DQK, DV, BwdTile<step, minb, reg>>(a, B, st); break;
        DS_ATTN_DKDV_VARIANTS(DS_X)
#undef DS_X
        case 6: launch_dkdv_wgmma<32, 3>(a, B, st); break;
        case 7: launch_dkdv_wgmma<64, 2>(a, B, st); break;
        default: launch_dkdv<DQK, DV, BwdDefault<DQK, DV>>(a, B, st);
      }
    } else {
      launch_dkdv<DQK, DV, BwdDefault<DQK, DV>>(a, B, st);
    }
  }
  if (a.dq) {
    if constexpr (DQK == 96 && DV == 64) {
      switch (g_dq_variant) {
#define DS_X(i, step, minb, reg) \
  case i: launch_dq<DQK, DV, BwdTile<step, minb, reg>>(a, B, st); break;
        DS_ATTN_DQ_VARIANTS(DS_X)
#undef DS_X
        case 5: launch_dq_wgmma<32, 3>(a, B, st); break;
        case 6: launch_dq_wgmma<64, 2>(a, B, st); break;
        default: launch_dq<DQK, DV, BwdDefault<DQK, DV>>(a, B, st);
      }
    } else {
      launch_dq<DQK, DV, BwdDefault<DQK, DV>>(a, B, st);
    }
  }
}

void check_simt_smem(size_t bytes, const char* op, int Dqk, int Dv) {
  DS_CHECK(bytes <= max_smem_optin(), std::string(op) + ": head dims " + std::to_string(Dqk) + "/" +
                                          std::to_string(Dv) + " need " + std::to_string(bytes) +
                                          " bytes of shared memory per block");
}

template <class E> void launch_fwd_simt(const AttnArgs<E>& a, int B, cudaStream_t st) {
  const size_t smem = SimtFwdSmem::bytes(a.Dqk, a.Dv);
  check_simt_smem(smem, "attention_forward", a.Dqk, a.Dv);
  allow_smem(attn_fwd_simt<E>, smem);
  const dim3 grid((a.T + kSB - 1) / kSB, B * a.H);
  launch(attn_fwd_simt<E>, grid, kSimtThreads, smem, st, a);
}

template <class E> void launch_bwd_simt(const AttnArgs<E>& a, int B, cudaStream_t st) {
  const dim3 grid((a.T + kSB - 1) / kSB, B * a.H);
  if (a.dk || a.dv) {
    const size_t smem = SimtDkvSmem::bytes(a.Dqk, a.Dv);
    check_simt_smem(smem, "attention_backward", a.Dqk, a.Dv);
    allow_smem(attn_bwd_dkdv_simt<E>, smem);
    launch(attn_bwd_dkdv_simt<E>, grid, kSimtThreads, smem, st, a);
  }
  if (a.dq) {
    const size_t smem = SimtDqSmem::bytes(a.Dqk, a.Dv);
    check_simt_smem(smem, "attention_backward", a.Dqk, a.Dv);
    allow_smem(attn_bwd_dq_simt<E>, smem);
    launch(attn_bwd_dq_simt<E>, grid, kSimtThreads, smem, st, a);
  }
}

bool all_aligned16(std::initializer_list<const Tensor*> ts) {
  for (const Tensor* t : ts)
    if (!t->empty() && !aligned16(*t)) return false;
  return true;
}

}  // namespace

void attention_forward(const Context& ctx, Tensor out, Tensor lse, Tensor q, Tensor k, Tensor v, double scale) {
  DS_CHECK(lse.empty() || lse.dtype == DType::f32, "attention_forward (CUDA): lse must be f32");
  DeviceGuard guard(ctx);
  const int B = int(q.dim(0));
  if (q.numel() == 0 || v.numel() == 0) return;
  cudaStream_t st = stream_of(ctx);
  if (q.dtype == DType::bf16) {
    AttnArgs<bf16_t> a = make_args<bf16_t>(q, v, scale);
    a.q = cptr<bf16_t>(q), a.k = cptr<bf16_t>(k), a.v = cptr<bf16_t>(v), a.out = mptr<bf16_t>(out);
    a.lse_out = mptr<float>(lse);
    bool launched = false;
    if (mma_shape(a.Dqk, a.Dv) && all_aligned16({&q, &k, &v, &out})) {
      if (a.scale_log2 > 0.f) {
#define DS_X(x, y)                                       \
  if (!launched && a.Dqk == x && a.Dv == y) {            \
    launch_fwd_wide<x, y>(a, B, st);                     \
    launched = true;                                     \
  }
        DS_ATTN_WIDE_FWD_SHAPES(DS_X)
#undef DS_X
      }
#define DS_X(x, y)                                       \
  if (!launched && a.Dqk == x && a.Dv == y) {            \
    launch_fwd_mma<x, y>(a, B, st);                      \
    launched = true;                                     \
  }
      DS_ATTN_MMA_SHAPES(DS_X)
#undef DS_X
    }
    if (!launched) launch_fwd_simt(a, B, st);
  } else {
    DS_CHECK(q.dtype == DType::f32, "attention_forward (CUDA): f32 or bf16 tensors");
    AttnArgs<float> a = make_args<float>(q, v, scale);
    a.q = cptr<float>(q), a.k = cptr<float>(k), a.v = cptr<float>(v), a.out = mptr<float>(out);
    a.lse_out = mptr<float>(lse);
    launch_fwd_simt(a, B, st);
  }
  check_launch("attention_forward");
}

void attention_backward(const Context& ctx, Tensor d_q, Tensor d_k, Tensor d_v, Tensor d_out, Tensor out, Tensor lse,
                        Tensor q, Tensor k, Tensor v, double scale) {
  DS_CHECK(lse.dtype == DType::f32, "attention_backward (CUDA): lse must be f32");
  DeviceGuard guard(ctx);
  const int B = int(q.dim(0));
  if (q.numel() == 0 || v.numel() == 0 || (d_q.empty() && d_k.empty() && d_v.empty())) return;
  cudaStream_t st = stream_of(ctx);
  if (q.dtype == DType::bf16) {
    AttnArgs<bf16_t> a = make_args<bf16_t>(q, v, scale);
    a.q = cptr<bf16_t>(q), a.k = cptr<bf16_t>(k), a.v = cptr<bf16_t>(v), a.o = cptr<bf16_t>(out);
    a.dout = cptr<bf16_t>(d_out), a.dq = mptr<bf16_t>(d_q), a.dk = mptr<bf16_t>(d_k), a.dv = mptr<bf16_t>(d_v);
    a.lse_in = cptr<float>(lse);
    bool launched = false;
    if (mma_shape(a.Dqk, a.Dv) && all_aligned16({&q, &k, &v, &out, &d_out, &d_q, &d_k, &d_v})) {
#define DS_X(x, y)                                       \
  if (!launched && a.Dqk == x && a.Dv == y) {            \
    launch_bwd_mma<x, y>(a, B, st);                      \
    launched = true;                                     \
  }
      DS_ATTN_MMA_SHAPES(DS_X)
#undef DS_X
    }
    if (!launched) launch_bwd_simt(a, B, st);
  } else {
    DS_CHECK(q.dtype == DType::f32, "attention_backward (CUDA): f32 or bf16 tensors");
    AttnArgs<float> a = make_args<float>(q, v, scale);
    a.q = cptr<float>(q), a.k = cptr<float>(k), a.v = cptr<float>(v), a.o = cptr<float>(out);
    a.dout = cptr<float>(d_out), a.dq = mptr<float>(d_q), a.dk = mptr<float>(d_k), a.dv = mptr<float>(d_v);
    a.lse_in = cptr<float>(lse);
    launch_bwd_simt(a, B, st);
  }
  check_launch("attention_backward");
}

// Bench hooks (declared by their callers, not in cuda_ops.h): set the bf16 96/64 backward's dK/dV or dQ kernel
// variant (0 = mma.sync BwdDefault, DS_ATTN_DKDV_VARIANTS, DS_ATTN_DQ_VARIANTS, then the wgmma kernels: dK/dV 6, 7,
// dQ 5, 6; the default is dK/dV 6, dQ 5 with sm_90a, else 0) when 0 <= variant < their count, and return
// the previous one (-1 only asks). Not thread-safe: for a single-threaded benchmark or test.
int attention_bench_dkdv_variant(int variant) {
  const int prev = g_dkdv_variant;
  if (variant >= 0 && variant < kDkdvVariants) g_dkdv_variant = variant;
  return prev;
}
int attention_bench_dq_variant(int variant) {
  const int prev = g_dq_variant;
  if (variant >= 0 && variant < kDqVariants) g_dq_variant = variant;
  return prev;
}

}  // namespace ds::cuda
