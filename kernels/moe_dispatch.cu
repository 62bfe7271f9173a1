// MoE dispatch / combine: the routing table (token copies grouped by expert), permute and the weighted
// unpermute, forward and backward — the CUDA twins of lib/ops/cpu/moe_dispatch.cpp.
//
// moe_route is a stable counting sort with no host synchronisation: the flat (n, k) entries are cut into chunks
// of kRouteChunk; (1) one warp per chunk counts its experts, (2) one block per expert scans those counts over the
// chunks, (3) one block scans the expert totals into offsets (and adds them to counts), (4) one warp per chunk
// walks its entries in order and gives each its row: offsets[e] + rows of e in earlier chunks + rows of e
// earlier in this chunk (warp match + popcount). The result is exactly the CPU's: rows ordered by expert, then
// by (n, k). Small tables (decode: a few hundred entries) take all four steps in one block instead
// (route_small_kernel: same rows, one launch and no scratch allocation).
//
// permute / unpermute gather per token (no atomics, no write conflicts); sums over k run in k order in f32
// without contraction (__fmul_rn/__fadd_rn), which is what the CPU does in f32, and round once to bf16.
#include <cub/block/block_scan.cuh>
#include <cuda_bf16.h>
#include <cuda_runtime.h>

#include <algorithm>
#include <cstdint>
#include <type_traits>

#include "kernels/cuda_ops.h"
#include "kernels/moe_gate_row.cuh"
#include "kernels/moe_util.cuh"

namespace ds::cuda {

using moe::FPtr;
using moe::from_f;
using moe::ldf;
using moe::stf;
using moe::to_f;

namespace {

// (n, k) entries per warp in moe_route's chunk passes. Each warp walks its chunk 32 entries at a time, a global
// round trip per step, so the passes are latency-bound: at the bench's 65,536 entries, chunks of 1024 (64 warps
// in all) took ~38 + ~27 us of a layer's forward on the H200 (trace, 17th session); 128 gives 512 warps, 4 steps
// each, and the per-expert scan 512 counts (2 steps of its block).
constexpr int kRouteChunk = 128;
int g_route_chunk = kRouteChunk;  // bench hook (moe_route_bench_chunk)
constexpr int kRouteWarps = 8;     // warps per block in moe_route's chunk passes
constexpr int kScanThreads = 256;  // threads of the scan blocks

// (1) chunk_cnt[c * E + e] = number of entries of chunk c routed to e (one warp per chunk, counters in shared).
__global__ void route_count_kernel(int* chunk_cnt, const int32_t* idx, int64_t NK, int E, int64_t nchunks,
                                   int chunk) {
  pdl_enter();  // programmatic dependent launch: wait for the previous kernel (common.cuh)
  extern __shared__ int counters[];  // [kRouteWarps][E]
  const int warp = threadIdx.x / 32, lane = threadIdx.x % 32;
  int* cnt = counters + size_t(warp) * E;
  const int64_t c = int64_t(blockIdx.x) * kRouteWarps + warp;
  for (int e = lane; e < E; e += 32) cnt[e] = 0;
  __syncwarp();
  if (c < nchunks) {
    const int64_t i0 = c * chunk, i1 = min(NK, i0 + chunk);
    for (int64_t i = i0 + lane; i < i1; i += 32) {
      const int e = idx[i];
      if (e >= 0 && e < E) atomicAdd(cnt + e, 1);
    }
    __syncwarp();
    for (int e = lane; e < E; e += 32) chunk_cnt[c * E + e] = cnt[e];
  }
}

// (2) per expert e (one block): exclusive scan of chunk_cnt[., e] over the chunks, in place; total[e].
__global__ void route_scan_chunks_kernel(int* chunk_cnt, int64_t* total, int E, int64_t nchunks) {
  pdl_enter();  // programmatic dependent launch: wait for the previous kernel (common.cuh)
  using Scan = cub::BlockScan<int64_t, kScanThreads>;
  __shared__ typename Scan::TempStorage tmp;
  const int e = blockIdx.x;
  int64_t running = 0;
  for (int64_t c0 = 0; c0 < nchunks; c0 += kScanThreads) {
    const int64_t c = c0 + threadIdx.x;
    const int64_t v = c < nchunks ? chunk_cnt[c * E + e] : 0;
    int64_t excl, agg;
    Scan(tmp).ExclusiveSum(v, excl, agg);
    if (c < nchunks) chunk_cnt[c * E + e] = int(running + excl);
    running += agg;
    __syncthreads();
  }
  if (threadIdx.x == 0) total[e] = running;
}

// (3) offsets = exclusive scan of the totals (one block); counts += totals.
__global__ void route_offsets_kernel(int64_t* offsets, int64_t* counts, const int64_t* total, int E) {
  pdl_enter();  // programmatic dependent launch: wait for the previous kernel (common.cuh)
  using Scan = cub::BlockScan<int64_t, kScanThreads>;
  __shared__ typename Scan::TempStorage tmp;
  int64_t running = 0;
  for (int e0 = 0; e0 < E; e0 += kScanThreads) {
    const int e = e0 + threadIdx.x;
    const int64_t v = e < E ? total[e] : 0;
    int64_t excl, agg;
    Scan(tmp).ExclusiveSum(v, excl, agg);
    if (e < E) {
      offsets[e] = running + excl;
      if (counts) counts[e] += v;
    }
    running += agg;
    __syncthreads();
  }
  if (threadIdx.x == 0) offsets[E] = running;
}

// (4) rows: one warp per chunk, 32 entries at a time in order; running per-expert counts in shared memory.
__global__ void route_rows_kernel(int32_t* row_of, const int32_t* idx, const int* chunk_base, const int64_t* offsets,
                                  int64_t NK, int E, int64_t nchunks, int chunk) {
  pdl_enter();  // programmatic dependent launch: wait for the previous kernel (common.cuh)
  extern __shared__ int counters[];  // [kRouteWarps][E]
  const int warp = threadIdx.x / 32, lane = threadIdx.x % 32;
  int* run = counters + size_t(warp) * E;
  const int64_t c = int64_t(blockIdx.x) * kRouteWarps + warp;
  for (int e = lane; e < E; e += 32) run[e] = 0;
  __syncwarp();
  if (c >= nchunks) return;
  const int64_t i0 = c * chunk, i1 = min(NK, i0 + chunk);
  const unsigned lower = (1u << lane) - 1u;
  for (int64_t b = i0; b < i1; b += 32) {
    const int64_t i = b + lane;
    int e = i < i1 ? idx[i] : -1;
    if (e >= E) e = -1;
    if (e < -1) e = -1;
    const unsigned peers = __match_any_sync(kFull, e);
    const int rank = __popc(peers & lower);
    if (e >= 0) row_of[i] = int32_t(offsets[e] + chunk_base[c * E + e] + run[e] + rank);
    else if (i < i1) row_of[i] = -1;  // an expert id out of range (the CPU raises an error): no row
    __syncwarp();
    if (e >= 0 && lane == 31 - __clz(peers)) run[e] += __popc(peers);  // the highest peer updates
    __syncwarp();
  }
}

// The four steps in one block of kSmallThreads, for tables of at most kSmallEntries entries whose per-warp-chunk
// counters fit kSmallSmem bytes: cnt[W][E] for the W chunks of 32 entries, then tot[E] and base[E].
constexpr int kSmallThreads = 1024;
constexpr int64_t kSmallEntries = 4096;
constexpr size_t kSmallSmem = 40 * 1024;  // under the 48 KB a launch gets without opting in

// By the whole block (blockDim.x a multiple of 32); sm: (W * E + 2 * E) ints of shared memory.
__device__ __forceinline__ void route_small(int* sm, int32_t* row_of, int64_t* offsets, int64_t* counts,
                                            const int32_t* idx, int64_t NK, int E, int W) {
  int *cnt = sm, *tot = sm + size_t(W) * E, *base = tot + E;
  const int warp = threadIdx.x / 32, lane = threadIdx.x % 32, nwarps = blockDim.x / 32;
  const unsigned lower = (1u << lane) - 1u;
  for (int i = threadIdx.x; i < W * E; i += blockDim.x) cnt[i] = 0;
  __syncthreads();
  auto expert_at = [&](int64_t i) {
    const int e = i < NK ? idx[i] : -1;
    return e >= 0 && e < E ? e : -1;
  };
  for (int c = warp; c < W; c += nwarps) {  // per chunk and expert: how many entries
    const int e = expert_at(int64_t(c) * 32 + lane);
    const unsigned peers = __match_any_sync(kFull, e);
    if (e >= 0 && lane == __ffs(peers) - 1) cnt[c * E + e] = __popc(peers);
  }
  __syncthreads();
  for (int e = threadIdx.x; e < E; e += blockDim.x) {  // per expert: exclusive scan over the chunks
    int run = 0;
    for (int c = 0; c < W; ++c) {
      const int v = cnt[c * E + e];
      cnt[c * E + e] = run;
      run += v;
    }
    tot[e] = run;
  }
  __syncthreads();
  if (warp == 0) {  // offsets: exclusive scan of the totals, 32 experts at a time
    int run = 0;
    for (int e0 = 0; e0 < E; e0 += 32) {
      const int e = e0 + lane;
      const int v = e < E ? tot[e] : 0;
      int incl = v;
      for (int d = 1; d < 32; d *= 2) {
        const int u = __shfl_up_sync(kFull, incl, d);
        if (lane >= d) incl += u;
      }
      if (e < E) {
        base[e] = run + incl - v;
        offsets[e] = run + incl - v;
        // a fire-and-forget add (RED): a load-add-store held warp 0, and the block behind it, for an L2 round trip
        if (counts && v) atomicAdd(reinterpret_cast<unsigned long long*>(counts + e), static_cast<unsigned long long>(v));
      }
      run += __shfl_sync(kFull, incl, 31);
    }
    if (lane == 0) offsets[E] = run;
  }
  __syncthreads();
  for (int c = warp; c < W; c += nwarps) {
    const int64_t i = int64_t(c) * 32 + lane;
    const int e = expert_at(i);
    const unsigned peers = __match_any_sync(kFull, e);
    if (e >= 0) row_of[i] = int32_t(base[e] + cnt[c * E + e] + __popc(peers & lower));
    else if (i < NK) row_of[i] = -1;
  }
}

__global__ void __launch_bounds__(kSmallThreads)
    route_small_kernel(int32_t* row_of, int64_t* offsets, int64_t* counts, const int32_t* idx, int64_t NK, int E,
                       int W) {
  pdl_enter();  // programmatic dependent launch: wait for the previous kernel (common.cuh)
  extern __shared__ int sm[];
  route_small(sm, row_of, offsets, counts, idx, NK, E, W);
}

// moe_dispatch_forward for decode-sized batches, in one block of kSmallThreads: (1) router logits, one warp per
// (row, expert), with gemv_kernel's arithmetic (lane-strided 16-byte chunks through dot_bf16x8, xor reduction: the
// same bits as matmul_forward's GEMV); (2) the gate, one warp per row; (3) route_small; (4) the permute copy.
// __syncthreads between the steps makes each step's global writes visible to the next (all in this block).
struct DispatchArgs {
  GateArgs gate;  // logits (written here), scores, topk_idx, topk_w, N, E, K, ...
  const __nv_bfloat16* x;
  const __nv_bfloat16* router;
  int64_t D;
  int32_t* row_of;
  int64_t* offsets;
  int64_t* counts;
  uint4* xp;
  int W;  // route chunks of 32 entries
  // When they fit, shared memory from byte copy_at also holds the logits f32 [N, E], the bias f32 [E], the chosen
  // experts [N, K] and their rows [N, K]: each step then reads the one before it there, not through L2.
  int copies;
  int64_t copy_at;
  int weights_settled;  // Inputs::settled router and bias: a warp's first router loads and the bias go out before
                        // the wait
};

constexpr int kRouterFirst = 4;  // 16-byte router loads a lane made with the first ones (a 1,024-long row is all of it)

__global__ void __launch_bounds__(kSmallThreads) dispatch_small_kernel(DispatchArgs a) {
  const GateArgs& g = a.gate;
  // The router weights (and the gate's bias) are parameters, last read a whole decode step ago and evicted since:
  // ask for them in L2 while the previous kernel runs (a prefetch never changes what is read).
  if (threadIdx.x == 0) prefetch_l2(a.router, uint32_t(g.E * a.D * int64_t(sizeof(__nv_bfloat16))));
  const int bias_bytes = g.E * (g.bias.bf ? 2 : 4);
  if (threadIdx.x == 32 && g.bias.p && (reinterpret_cast<uintptr_t>(g.bias.p) & 15) == 0 && bias_bytes % 16 == 0)
    prefetch_l2(g.bias.p, uint32_t(bias_bytes));
  extern __shared__ __align__(16) unsigned char dsm[];
  const int warp = threadIdx.x / 32, lane = threadIdx.x % 32, nwarps = blockDim.x / 32;
  const int64_t NK = g.N * g.K;
  float* s_logits = a.copies ? reinterpret_cast<float*>(dsm + a.copy_at) : nullptr;
  float* s_bias = a.copies && g.bias.p ? s_logits + g.N * g.E : nullptr;
  int* s_idx = a.copies ? reinterpret_cast<int*>(s_logits + g.N * g.E + g.E) : nullptr;
  int* s_rows = a.copies ? s_idx + NK : nullptr;
  // The warp's first router row (output o = warp): its first kRouterFirst 16-byte loads a lane, and the bias (E <=
  // blockDim; its shared copy is written after the router's loads). Settled weights (the decoder's parameters):
  // before the wait, overlapping the kernel before; otherwise right after it. The sums keep the loop's order.
  const int64_t D8 = a.D / 8;
  uint4 first[kRouterFirst];
  float bias = 0.0f;
  auto load_first = [&] {
    const uint4* wr = reinterpret_cast<const uint4*>(a.router + int64_t(warp % g.E) * a.D);
#pragma unroll
    for (int p = 0; p < kRouterFirst; ++p) {
      const int64_t k8 = lane + 32 * p;
      first[p] = warp < g.N * g.E && k8 < D8 ? wr[k8] : make_uint4(0u, 0u, 0u, 0u);
    }
    bias = s_bias && threadIdx.x < g.E ? ldf(g.bias, threadIdx.x) : 0.0f;
  };
  pdl_enter_with(a.weights_settled, load_first);  // programmatic dependent launch (common.cuh)
  // when the permute is one 16-byte word a thread, that word is loaded now too and stored once its row is known
  const int64_t words = a.D / 8;
  const uint4* x16 = reinterpret_cast<const uint4*>(a.x);
  const bool one_word = NK * words <= blockDim.x;
  uint4 xw{};
  if (one_word && threadIdx.x < NK * words) {
    const int64_t nk = threadIdx.x / words, w = threadIdx.x - nk * words;
    xw = x16[(nk / g.K) * words + w];
  }
  for (int64_t o = warp; o < g.N * g.E; o += nwarps) {
    const int64_t n = o / g.E, e = o - n * g.E;
    const uint4* xr = reinterpret_cast<const uint4*>(a.x + n * a.D);
    const uint4* wr = reinterpret_cast<const uint4*>(a.router + e * a.D);
    float acc = 0.0f;
    int64_t k8 = lane;
    if (o == warp)  // the loads made above
#pragma unroll
      for (int p = 0; p < kRouterFirst && k8 < D8; ++p, k8 += 32) acc = dot_bf16x8(first[p], xr[k8], acc);
#pragma unroll 4  // the loads of several k8 steps in flight at once (the sum's order is the loop's)
    for (; k8 < D8; k8 += 32) acc = dot_bf16x8(wr[k8], xr[k8], acc);
    acc = warp_sum(acc);
    if (lane == 0) {
      stf(g.logits, o, acc);
      if (s_logits) s_logits[o] = roundf_to(g.logits, acc);
    }
  }
  if (s_bias && threadIdx.x < g.E) s_bias[threadIdx.x] = bias;
  __syncthreads();
  if (warp < g.N)
    gate_row(g, warp, dsm + size_t(warp) * gate_smem_per_warp(g.E, g.G, g.K), GateRowShared{s_logits, s_bias, s_idx});
  __syncthreads();
  int32_t* rows = s_rows ? s_rows : a.row_of;
  route_small(reinterpret_cast<int*>(dsm), rows, a.offsets, a.counts, s_idx ? s_idx : g.topk_idx, NK, g.E, a.W);
  __syncthreads();
  if (s_rows)
    for (int64_t i = threadIdx.x; i < NK; i += blockDim.x) a.row_of[i] = s_rows[i];
  for (int64_t i = threadIdx.x; i < NK * words; i += blockDim.x) {
    const int64_t nk = i / words, w = i - nk * words;
    const uint4 v = one_word ? xw : x16[(nk / g.K) * words + w];  // loaded before the row is known
    const int64_t r = rows[nk];
    if (r >= 0 && r < NK) a.xp[r * words + w] = v;
  }
}

// ---- permute / unpermute ---------------------------------------------------------------------------------

// out[row_of[n, k]] = in[n]: a byte copy of each token row to its K rows (16-byte words when aligned).
template <class W>
__global__ void permute_fwd_kernel(W* out, const W* in, const int32_t* row_of, int64_t N, int K, int64_t words,
                                   int64_t rows_out) {
  pdl_enter();  // programmatic dependent launch: wait for the previous kernel (common.cuh)
  for (int64_t n = blockIdx.x; n < N; n += gridDim.x) {
    const W* src = in + n * words;
    for (int64_t w = threadIdx.x; w < words; w += blockDim.x) {
      const W v = src[w];
      for (int k = 0; k < K; ++k) {
        const int64_t r = row_of[n * K + k];
        if (r >= 0 && r < rows_out) out[r * words + w] = v;
      }
    }
  }
}

// The token-row gathers below move words of VE elements: 16 bytes (kVec<T>) when D and the row pointers allow, else
// single elements (VE = 1); the arithmetic per element is the same either way.
template <class T, int VE> struct Words {
  using Raw = std::conditional_t<VE == 1, T, uint4>;  // a word as loaded, unpacked when used (fewer registers)
  static __device__ __forceinline__ Raw raw(const T* p) { return *reinterpret_cast<const Raw*>(p); }
  static __device__ __forceinline__ void unpack(float (&f)[VE], Raw u) {
    if constexpr (VE == 1) f[0] = to_f(u);
    else unpack16(u, f);
  }
  static __device__ __forceinline__ void load(float (&f)[VE], const T* p) { unpack(f, raw(p)); }
  static __device__ __forceinline__ void store(T* p, const float (&f)[VE]) {
    if constexpr (VE == 1) *p = from_f<T>(f[0]);
    else *reinterpret_cast<uint4*>(p) = pack16(f);
  }
};
constexpr int kGatherBatch = 4;  // routing entries whose rows are loaded together (summed in k order after)
constexpr int kGatherTokens = 2;  // tokens a block gathers together (their loads in flight at once)

// out[n] (=|+=) sum_k scale_k * src[row_of[n, k]] per element, k in order, f32 without contraction: permute_bwd
// (scale 1: only adds, as before) and unpermute_fwd (scale w[n, k]). A block gathers kGatherTokens tokens, a thread
// per word: the rows of kGatherBatch entries of each token, and with add the old words, are in flight together (one
// token a block with the old words loaded after the sums ran at ~2.3 TB/s on the H200: too few bytes in flight for
// its two or three dependent round trips to memory). kWeighted with shared and / or resid (moe_combine_forward's
// training form, no norm): out = resid + (round(sum) + shared), rounded as combine_fwd_kernel rounds (resid may alias
// out: each thread reads the words it writes).
template <class T, int VE, bool kWeighted>
__device__ __forceinline__ void gather_rows(T* out, const T* __restrict__ src, const int32_t* __restrict__ row_of,
                                            FPtr w, int64_t N, int K, int64_t D, int64_t rows_src, int add,
                                            const T* __restrict__ shared = nullptr, const T* resid = nullptr) {
  using Wd = Words<T, VE>;
  const int64_t nv = D / VE;
  for (int64_t n0 = int64_t(blockIdx.x) * kGatherTokens; n0 < N; n0 += int64_t(gridDim.x) * kGatherTokens) {
    for (int64_t v = threadIdx.x; v < nv; v += blockDim.x) {
      float s[kGatherTokens][VE];
      typename Wd::Raw old[kGatherTokens], sh[kGatherTokens], re[kGatherTokens];
#pragma unroll
      for (int t = 0; t < kGatherTokens; ++t) {
#pragma unroll
        for (int e = 0; e < VE; ++e) s[t][e] = 0.0f;
        const int64_t at = (n0 + t) * D + v * VE;
        if (n0 + t >= N) continue;
        if (add) old[t] = Wd::raw(out + at);
        if (kWeighted && shared) sh[t] = Wd::raw(shared + at);
        if (kWeighted && resid) re[t] = Wd::raw(resid + at);
      }
      for (int k0 = 0; k0 < K; k0 += kGatherBatch) {
        typename Wd::Raw x[kGatherTokens][kGatherBatch];
        float wk[kGatherTokens][kGatherBatch];
        bool ok[kGatherTokens][kGatherBatch];
#pragma unroll
        for (int t = 0; t < kGatherTokens; ++t) {
          const int64_t n = n0 + t;
#pragma unroll
          for (int j = 0; j < kGatherBatch; ++j) {
            const int k = k0 + j;
            const int64_t r = k < K && n < N ? row_of[n * K + k] : -1;
            ok[t][j] = r >= 0 && r < rows_src;
            wk[t][j] = kWeighted && ok[t][j] ? ldf(w, n * K + k) : 1.0f;
            if (ok[t][j]) x[t][j] = Wd::raw(src + r * D + v * VE);
          }
        }
#pragma unroll
        for (int t = 0; t < kGatherTokens; ++t)
#pragma unroll
          for (int j = 0; j < kGatherBatch; ++j) {
            if (!ok[t][j]) continue;
            float xf[VE];
            Wd::unpack(xf, x[t][j]);
#pragma unroll
            for (int e = 0; e < VE; ++e)
              s[t][e] = __fadd_rn(s[t][e], kWeighted ? __fmul_rn(wk[t][j], xf[e]) : xf[e]);
          }
      }
#pragma unroll
      for (int t = 0; t < kGatherTokens; ++t) {
        if (n0 + t >= N) break;
        if (add) {
          float of[VE];
          Wd::unpack(of, old[t]);
#pragma unroll
          for (int e = 0; e < VE; ++e) s[t][e] = __fadd_rn(of[e], s[t][e]);
        }
        if (kWeighted && (shared || resid)) {  // each sum rounded to T, as the unfused axpy and add round them
          float f[VE];
#pragma unroll
          for (int e = 0; e < VE; ++e) f[e] = to_f(from_f<T>(s[t][e]));
          if (shared) {
            Wd::unpack(s[t], sh[t]);
#pragma unroll
            for (int e = 0; e < VE; ++e) f[e] = to_f(from_f<T>(__fadd_rn(f[e], s[t][e])));
          }
          if (resid) {
            Wd::unpack(s[t], re[t]);
#pragma unroll
            for (int e = 0; e < VE; ++e) f[e] = __fadd_rn(s[t][e], f[e]);
          }
#pragma unroll
          for (int e = 0; e < VE; ++e) s[t][e] = f[e];
        }
        Wd::store(out + (n0 + t) * D + v * VE, s[t]);
      }
    }
  }
}

// d_in[n] (=|+=) sum_k d_out[row_of[n, k]], k in order, f32.
template <class T, int VE>
__global__ void permute_bwd_kernel(T* d_in, const T* d_out, const int32_t* row_of, int64_t N, int K, int64_t D,
                                   int64_t rows_out, int add) {
  pdl_enter();  // programmatic dependent launch: wait for the previous kernel (common.cuh)
  gather_rows<T, VE, false>(d_in, d_out, row_of, FPtr{}, N, K, D, rows_out, add);
}

// out[n] (=|+=) sum_k w[n, k] * expert_out[row_of[n, k]], k in order, f32.
// With shared / resid: moe_combine_forward without the norm (gather_rows).
template <class T, int VE>
__global__ void unpermute_fwd_kernel(T* out, const T* eo, const int32_t* row_of, FPtr w, int64_t N, int K, int64_t D,
                                     int64_t rows_eo, int add, const T* shared, const T* resid) {
  pdl_enter();  // programmatic dependent launch: wait for the previous kernel (common.cuh)
  gather_rows<T, VE, true>(out, eo, row_of, w, N, K, D, rows_eo, add, shared, resid);
}

// out[n] = resid[n] + (unpermute + shared), each step rounded as unpermute_fwd_kernel, axpy_kernel and add_kernel
// round it (the unfused sequence's values). out may alias resid. With VPT > 0 (K <= kCombineMaxK, D <= VPT *
// blockDim) a thread loads its routing entries, then every expert row, shared and residual value it needs, and only
// then adds: at decode sizes the loop's loads went out one L2 round trip at a time. Up to 512 threads (row_threads):
// the bound keeps VPT 8's registers within what such a block may use.
constexpr int kCombineMaxK = 8;
template <class T, int VPT>
__global__ void __launch_bounds__(512)
    combine_fwd_kernel(T* out, const T* resid, const T* shared, const T* eo, const int32_t* row_of, FPtr w, int64_t N,
                       int K, int64_t D, int64_t rows_eo, T* norm_out, const T* norm_w, float eps, int settled) {
  // VPT > 0: a row's routing entries, residual and norm weights (`routing`), then its expert and shared rows. With
  // settled inputs (Inputs::settled: the dispatch and the residual's writer ran two or more launches back) the
  // block's first row's routing is loaded before the wait, and only the expert rows' loads follow it.
  constexpr int V = VPT > 0 ? VPT : 1;
  int64_t r[kCombineMaxK];
  float wk[kCombineMaxK], re[V], nw[V];
  auto routing = [&](int64_t n) {
#pragma unroll
    for (int k = 0; k < kCombineMaxK; ++k) {
      r[k] = k < K ? row_of[n * K + k] : -1;
      wk[k] = k < K ? ldf(w, n * K + k) : 0.0f;
    }
#pragma unroll
    for (int j = 0; j < V; ++j) {
      const int64_t c = threadIdx.x + int64_t(j) * blockDim.x;
      const bool in = c < D;
      re[j] = in ? to_f(resid[n * D + c]) : 0.0f;
      nw[j] = in && norm_out ? to_f(norm_w[c]) : 0.0f;
    }
  };
  if (VPT > 0 && settled && blockIdx.x < N) routing(blockIdx.x);
  pdl_enter();  // programmatic dependent launch: wait for the previous kernel (common.cuh)
  for (int64_t n = blockIdx.x; n < N; n += gridDim.x) {
    float ss = 0.0f;  // the next norm's sum of squares: rmsnorm_fwd_kernel's per-thread order (same block size)
    if constexpr (VPT > 0) {  // K <= kCombineMaxK, D <= VPT * blockDim: all loads before the arithmetic
      if (!settled || n != blockIdx.x) routing(n);
      float e[kCombineMaxK][VPT], sh[VPT];
#pragma unroll
      for (int j = 0; j < VPT; ++j) {
        const int64_t c = threadIdx.x + int64_t(j) * blockDim.x;
        const bool in = c < D;
        sh[j] = in && shared ? to_f(shared[n * D + c]) : 0.0f;
#pragma unroll
        for (int k = 0; k < kCombineMaxK; ++k)
          e[k][j] = in && r[k] >= 0 && r[k] < rows_eo ? to_f(eo[r[k] * D + c]) : 0.0f;
      }
      float o[VPT];
#pragma unroll
      for (int j = 0; j < VPT; ++j) {
        const int64_t c = threadIdx.x + int64_t(j) * blockDim.x;
        float s = 0.0f;
#pragma unroll
        for (int k = 0; k < kCombineMaxK; ++k)
          if (r[k] >= 0 && r[k] < rows_eo) s = __fadd_rn(s, __fmul_rn(wk[k], e[k][j]));
        T f = from_f<T>(s);
        if (shared) f = from_f<T>(__fadd_rn(to_f(f), sh[j]));
        const T v = from_f<T>(__fadd_rn(re[j], to_f(f)));
        o[j] = to_f(v);
        if (c < D) {
          out[n * D + c] = v;
          ss += o[j] * o[j];
        }
      }
      if (!norm_out) continue;
      ss = block_sum(ss);
      const float rs = 1.0f / sqrtf(ss / float(D) + eps);
#pragma unroll
      for (int j = 0; j < VPT; ++j) {
        const int64_t c = threadIdx.x + int64_t(j) * blockDim.x;
        if (c < D) norm_out[n * D + c] = from_f<T>(nw[j] * (o[j] * rs));
      }
    } else {
      for (int64_t c = threadIdx.x; c < D; c += blockDim.x) {
        float s = 0.0f;
        for (int k = 0; k < K; ++k) {
          const int64_t r = row_of[n * K + k];
          if (r >= 0 && r < rows_eo) s = __fadd_rn(s, __fmul_rn(ldf(w, n * K + k), to_f(eo[r * D + c])));
        }
        T f = from_f<T>(s);
        if (shared) f = from_f<T>(__fadd_rn(to_f(f), to_f(shared[n * D + c])));
        const T o = from_f<T>(__fadd_rn(to_f(resid[n * D + c]), to_f(f)));
        out[n * D + c] = o;
        ss += to_f(o) * to_f(o);
      }
      if (!norm_out) continue;
      ss = block_sum(ss);
      const float rs = 1.0f / sqrtf(ss / float(D) + eps);
      for (int64_t c = threadIdx.x; c < D; c += blockDim.x)  // reads back only what this thread wrote
        norm_out[n * D + c] = from_f<T>(to_f(norm_w[c]) * (to_f(out[n * D + c]) * rs));
    }
  }
}

// One warp per (n, k) entry, 8 a block (a token's K entries side by side: d_out[n] is read once from memory):
// d_expert_out[r] = w * d_out[n] (one f32 product per element) and d_topk_w[n, k] = d_out[n] · expert_out[r] in
// double, lane l summing its words' elements in order, then the warp's xor tree (a fixed order). Words of VE
// elements as gather_rows; kUnpermuteBatch words of each row in flight per lane.
constexpr int kUnpermuteBatch = 4;
template <class T, int VE>
__global__ void __launch_bounds__(256)
    unpermute_bwd_kernel(T* __restrict__ d_eo, FPtr d_w, const T* __restrict__ d_out, const T* __restrict__ eo,
                         const int32_t* __restrict__ row_of, FPtr w, int64_t N, int K, int64_t D, int64_t rows_eo) {
  pdl_enter();  // programmatic dependent launch: wait for the previous kernel (common.cuh)
  const int lane = threadIdx.x & 31;
  const int64_t nk = int64_t(blockIdx.x) * (blockDim.x / 32) + threadIdx.x / 32;
  if (nk >= N * K) return;  // whole warps: no barrier below
  const int64_t r = row_of[nk];
  if (r < 0 || r >= rows_eo) {
    if (d_w.p && lane == 0) stf(d_w, nk, 0.0f);
    return;
  }
  const float wk = ldf(w, nk);
  const T* g = d_out + (nk / K) * D;
  const T* e = eo + r * D;
  T* de = d_eo ? d_eo + r * D : nullptr;
  const bool dot_wanted = d_w.p != nullptr;
  const int64_t nv = D / VE;
  double dot = 0.0;
  for (int64_t v0 = lane; v0 < nv; v0 += 32 * kUnpermuteBatch) {
    typename Words<T, VE>::Raw gr[kUnpermuteBatch], er[kUnpermuteBatch];
#pragma unroll
    for (int u = 0; u < kUnpermuteBatch; ++u) {
      const int64_t v = v0 + 32 * u;
      if (v >= nv) continue;
      gr[u] = Words<T, VE>::raw(g + v * VE);
      if (dot_wanted) er[u] = Words<T, VE>::raw(e + v * VE);
    }
#pragma unroll
    for (int u = 0; u < kUnpermuteBatch; ++u) {
      const int64_t v = v0 + 32 * u;
      if (v >= nv) continue;
      float gf[VE];
      Words<T, VE>::unpack(gf, gr[u]);
      if (de) {
        float o[VE];
#pragma unroll
        for (int q = 0; q < VE; ++q) o[q] = __fmul_rn(wk, gf[q]);
        Words<T, VE>::store(de + v * VE, o);
      }
      if (dot_wanted) {
        float ef[VE];
        Words<T, VE>::unpack(ef, er[u]);
#pragma unroll
        for (int q = 0; q < VE; ++q) dot += double(gf[q]) * double(ef[q]);
      }
    }
  }
  if (!dot_wanted) return;
  for (int o = 16; o > 0; o >>= 1) dot += __shfl_xor_sync(0xffffffffu, dot, o);
  if (lane == 0) stf(d_w, nk, float(dot));
}

unsigned token_blocks(int64_t N) { return moe::grid_for(N, 1, 1 << 16); }
unsigned gather_blocks(int64_t N) { return moe::grid_for(N, kGatherTokens, 1 << 16); }

// Whether token rows of D elements go as 16-byte words (D a multiple of kVec<T>, every row pointer aligned), and the
// threads of a one-token block: a thread per word, 32 to 256.
template <class T> bool words_fit(int64_t D, std::initializer_list<const void*> ptrs) {
  if (D % kVec<T> != 0) return false;
  for (const void* p : ptrs)
    if (!is_aligned16(p)) return false;
  return true;
}
template <class T> int word_threads(int64_t D, bool vec) {
  const int64_t words = vec ? D / kVec<T> : D;
  return int(std::clamp<int64_t>((words + 31) / 32 * 32, 32, 256));
}

}  // namespace

void moe_route(const Context& ctx, Tensor row_of, Tensor offsets, Tensor counts, Tensor topk_idx, int64_t n_experts) {
  const char* op = "moe_route";
  const int64_t NK = moe::numel(topk_idx);
  const int E = int(n_experts);
  if (int64_t(E) * kRouteWarps * int64_t(sizeof(int)) > 48 * 1024)
    throw_runtime(std::string(op) + ": the CUDA kernel handles at most " + std::to_string(48 * 1024 / 4 / kRouteWarps) +
                  " experts");
  moe::set_device(ctx, op);
  cudaStream_t st = moe::stream_of(ctx);
  const int64_t W = (NK + 31) / 32;
  const size_t small_smem = size_t(W * E + 2 * E) * sizeof(int);
  if (NK <= kSmallEntries && small_smem <= kSmallSmem) {
    launch(route_small_kernel, 1, kSmallThreads, small_smem, st,
        static_cast<int32_t*>(row_of.data), static_cast<int64_t*>(offsets.data),
        counts.empty() ? nullptr : static_cast<int64_t*>(counts.data), static_cast<const int32_t*>(topk_idx.data), NK,
        E, int(W));
    moe::launched(op);
    return;
  }
  const int chunk = g_route_chunk;
  const int64_t nchunks = (NK + chunk - 1) / chunk;
  int* chunk_cnt = nullptr;
  int64_t* total = nullptr;
  const size_t cnt_bytes = (size_t(std::max<int64_t>(nchunks, 1) * E) * sizeof(int) + 15) / 16 * 16;
  char* scratch = nullptr;
  moe::ok(cudaMallocAsync(reinterpret_cast<void**>(&scratch), cnt_bytes + size_t(E) * sizeof(int64_t), st), op,
          "cudaMallocAsync");
  chunk_cnt = reinterpret_cast<int*>(scratch);
  total = reinterpret_cast<int64_t*>(scratch + cnt_bytes);
  const auto* idx = static_cast<const int32_t*>(topk_idx.data);
  const unsigned chunk_blocks = unsigned((nchunks + kRouteWarps - 1) / kRouteWarps);
  const size_t smem = size_t(E) * kRouteWarps * sizeof(int);
  if (nchunks > 0) {
    launch(route_count_kernel, chunk_blocks, kRouteWarps * 32, smem, st, chunk_cnt, idx, NK, E, nchunks, chunk);
    moe::launched(op);
  }
  launch(route_scan_chunks_kernel, unsigned(E), kScanThreads, 0, st, chunk_cnt, total, E, nchunks);
  moe::launched(op);
  launch(route_offsets_kernel, 1, kScanThreads, 0, st, static_cast<int64_t*>(offsets.data),
                                                   counts.empty() ? nullptr : static_cast<int64_t*>(counts.data),
                                                   total, E);
  moe::launched(op);
  if (nchunks > 0) {
    launch(route_rows_kernel, chunk_blocks, kRouteWarps * 32, smem, st, static_cast<int32_t*>(row_of.data), idx,
           chunk_cnt, static_cast<const int64_t*>(offsets.data), NK, E, nchunks, chunk);
    moe::launched(op);
  }
  moe::ok(cudaFreeAsync(scratch, st), op, "cudaFreeAsync");
}

// One block when the batch is decode-sized: N <= 32 rows (a warp each for the gate), the route's counters and the
// gate's scratch within 48 KB, bf16 x and router with 16-byte rows; otherwise the four ops one after the other.
void moe_dispatch_forward(const Context& ctx, Tensor xp, Tensor row_of, Tensor offsets, Tensor counts, Tensor topk_idx,
                          Tensor topk_w, Tensor scores, Tensor logits, Tensor x, Tensor router, Tensor bias,
                          const GateOptions& opt, Inputs weights_written) {
  const char* op = "moe_dispatch_forward";
  const int64_t N = moe::rows(x), D = moe::cols(x), E = router.shape[0], K = opt.top_k, NK = N * K;
  const int64_t W = (NK + 31) / 32;
  const size_t gate_smem = size_t(N) * gate_smem_per_warp(int(E), std::max(opt.n_group, 1), int(K));
  const size_t smem = std::max(gate_smem, size_t(W * E + 2 * E) * sizeof(int));
  const bool fused = N >= 1 && N <= kSmallThreads / 32 && NK <= kSmallEntries && smem <= kSmallSmem &&
                     x.dtype == DType::bf16 && router.dtype == DType::bf16 && xp.dtype == DType::bf16 && D % 8 == 0 &&
                     is_aligned16(x.data) && is_aligned16(router.data) && is_aligned16(xp.data) && E <= 1024;
  if (!fused) {
    cuda::matmul_forward(ctx, logits, x, router, Accum::overwrite, Inputs::fresh);
    cuda::moe_gate_forward(ctx, topk_idx, topk_w, scores, logits, bias, opt);
    cuda::moe_route(ctx, row_of, offsets, counts, topk_idx, E);
    cuda::moe_permute_forward(ctx, xp, x, row_of);
    return;
  }
  moe::set_device(ctx, op);
  DispatchArgs a{};
  a.gate = gate_args(topk_idx, topk_w, scores, logits, bias, opt, op);
  a.x = static_cast<const __nv_bfloat16*>(x.data);
  a.router = static_cast<const __nv_bfloat16*>(router.data);
  a.D = D;
  a.row_of = static_cast<int32_t*>(row_of.data);
  a.offsets = static_cast<int64_t*>(offsets.data);
  a.counts = counts.empty() ? nullptr : static_cast<int64_t*>(counts.data);
  a.xp = static_cast<uint4*>(xp.data);
  a.W = int(W);
  a.copy_at = int64_t((smem + 15) / 16 * 16);
  const size_t copies = size_t(N * E + E + 2 * NK) * 4;
  a.copies = a.copy_at + copies <= kSmallSmem;
  a.weights_settled = weights_written == Inputs::settled;
  launch(dispatch_small_kernel, 1, kSmallThreads, a.copies ? a.copy_at + copies : smem, moe::stream_of(ctx), a);
  moe::launched(op);
}

void moe_permute_forward(const Context& ctx, Tensor out, Tensor in, Tensor row_of) {
  const char* op = "moe_permute_forward";
  const int64_t N = moe::rows(row_of), K = moe::cols(row_of), D = moe::cols(in);
  if (N == 0 || K == 0 || D == 0) return;
  moe::set_device(ctx, op);
  cudaStream_t st = moe::stream_of(ctx);
  const int64_t row_bytes = D * moe::esize(in);
  const auto* ro = static_cast<const int32_t*>(row_of.data);
  const int64_t rows_out = moe::rows(out);
  const auto aligned = [&](int64_t a) {
    return row_bytes % a == 0 && reinterpret_cast<uintptr_t>(in.data) % a == 0 &&
           reinterpret_cast<uintptr_t>(out.data) % a == 0;
  };
  if (aligned(16)) {
    launch(permute_fwd_kernel<uint4>, token_blocks(N), 128, 0, st, static_cast<uint4*>(out.data),
                                                              static_cast<const uint4*>(in.data), ro, N, int(K),
                                                              row_bytes / 16, rows_out);
  } else if (aligned(4)) {
    launch(permute_fwd_kernel<uint32_t>, token_blocks(N), 128, 0, st, static_cast<uint32_t*>(out.data),
                                                                  static_cast<const uint32_t*>(in.data), ro, N,
                                                                  int(K), row_bytes / 4, rows_out);
  } else {
    launch(permute_fwd_kernel<uint16_t>, token_blocks(N), 128, 0, st, static_cast<uint16_t*>(out.data),
                                                                  static_cast<const uint16_t*>(in.data), ro, N,
                                                                  int(K), row_bytes / 2, rows_out);
  }
  moe::launched(op);
}

void moe_permute_backward(const Context& ctx, Tensor d_in, Tensor d_out, Tensor row_of, Accum acc) {
  const char* op = "moe_permute_backward";
  const int64_t N = moe::rows(row_of), K = moe::cols(row_of), D = moe::cols(d_in);
  if (N == 0 || D == 0) return;
  moe::set_device(ctx, op);
  moe::dispatch_f32_bf16(d_in, op, "d_in", [&](auto zero) {
    using T = decltype(zero);
    const bool vec = words_fit<T>(D, {d_in.data, d_out.data});
    launch(vec ? permute_bwd_kernel<T, kVec<T>> : permute_bwd_kernel<T, 1>, gather_blocks(N), word_threads<T>(D, vec),
           0, moe::stream_of(ctx), static_cast<T*>(d_in.data), static_cast<const T*>(d_out.data),
           static_cast<const int32_t*>(row_of.data), N, int(K), D, moe::rows(d_out), int(acc == Accum::add));
  });
  moe::launched(op);
}

void moe_unpermute_forward(const Context& ctx, Tensor out, Tensor expert_out, Tensor row_of, Tensor topk_w,
                           Accum acc) {
  const char* op = "moe_unpermute_forward";
  const int64_t N = moe::rows(row_of), K = moe::cols(row_of), D = moe::cols(out);
  if (N == 0 || D == 0) return;
  moe::set_device(ctx, op);
  const FPtr w = moe::fptr(topk_w, op, "topk_w");
  moe::dispatch_f32_bf16(out, op, "out", [&](auto zero) {
    using T = decltype(zero);
    const bool vec = words_fit<T>(D, {out.data, expert_out.data});
    launch(vec ? unpermute_fwd_kernel<T, kVec<T>> : unpermute_fwd_kernel<T, 1>, gather_blocks(N),
           word_threads<T>(D, vec), 0, moe::stream_of(ctx), static_cast<T*>(out.data),
           static_cast<const T*>(expert_out.data), static_cast<const int32_t*>(row_of.data), w, N, int(K), D,
           moe::rows(expert_out), int(acc == Accum::add), nullptr, nullptr);
  });
  moe::launched(op);
}

void moe_combine_forward(const Context& ctx, Tensor out, Tensor resid, Tensor shared, Tensor expert_out, Tensor row_of,
                         Tensor topk_w, Tensor norm_out, Tensor norm_weight, double eps, Inputs routing) {
  const char* op = "moe_combine_forward";
  const int64_t N = moe::rows(row_of), K = moe::cols(row_of), D = moe::cols(out);
  if (N == 0 || D == 0) return;
  moe::set_device(ctx, op);
  const FPtr w = moe::fptr(topk_w, op, "topk_w");
  moe::dispatch_f32_bf16(out, op, "out", [&](auto zero) {
    using T = decltype(zero);
    const T* sh = shared.empty() ? nullptr : static_cast<const T*>(shared.data);
    if (norm_out.empty() && words_fit<T>(D, {out.data, resid.data, sh, expert_out.data})) {
      // no norm, whole 16-byte words: the unpermute's gather with the shared and residual adds (training sizes)
      launch(unpermute_fwd_kernel<T, kVec<T>>, gather_blocks(N), word_threads<T>(D, true), 0, moe::stream_of(ctx),
             static_cast<T*>(out.data), static_cast<const T*>(expert_out.data),
             static_cast<const int32_t*>(row_of.data), w, N, int(K), D, moe::rows(expert_out), 0, sh,
             static_cast<const T*>(resid.data));
      return;
    }
    // with the norm, rmsnorm_fwd_kernel's block size: the same per-thread sums, so the same result
    const int threads = norm_out.empty() ? 256 : row_threads(D);
    const int vpt = K > kCombineMaxK ? 0 : D <= 4LL * threads ? 4 : D <= 8LL * threads ? 8 : 0;
    launch(vpt == 4 ? combine_fwd_kernel<T, 4> : vpt == 8 ? combine_fwd_kernel<T, 8> : combine_fwd_kernel<T, 0>,
           token_blocks(N), threads, 0, moe::stream_of(ctx),
           static_cast<T*>(out.data), static_cast<const T*>(resid.data),
           shared.empty() ? nullptr : static_cast<const T*>(shared.data), static_cast<const T*>(expert_out.data),
           static_cast<const int32_t*>(row_of.data), w, N, int(K), D, moe::rows(expert_out),
           norm_out.empty() ? nullptr : static_cast<T*>(norm_out.data),
           norm_out.empty() ? nullptr : static_cast<const T*>(norm_weight.data), float(eps),
           int(routing == Inputs::settled));
  });
  moe::launched(op);
}

void moe_unpermute_backward(const Context& ctx, Tensor d_expert_out, Tensor d_topk_w, Tensor d_out, Tensor expert_out,
                            Tensor row_of, Tensor topk_w) {
  const char* op = "moe_unpermute_backward";
  const int64_t N = moe::rows(row_of), K = moe::cols(row_of), D = moe::cols(d_out);
  if (N == 0 || K == 0) return;
  if (d_expert_out.empty() && d_topk_w.empty()) return;
  moe::set_device(ctx, op);
  const FPtr w = moe::fptr(topk_w, op, "topk_w"), dw = moe::fptr(d_topk_w, op, "d_topk_w");
  moe::dispatch_f32_bf16(d_out, op, "d_out", [&](auto zero) {
    using T = decltype(zero);
    const bool vec = words_fit<T>(D, {d_expert_out.data, d_out.data, expert_out.data});
    launch(vec ? unpermute_bwd_kernel<T, kVec<T>> : unpermute_bwd_kernel<T, 1>, unsigned((N * K + 7) / 8), 256, 0,
           moe::stream_of(ctx), d_expert_out.empty() ? nullptr : static_cast<T*>(d_expert_out.data), dw,
           static_cast<const T*>(d_out.data), static_cast<const T*>(expert_out.data),
           static_cast<const int32_t*>(row_of.data), w, N, int(K), D, moe::rows(expert_out));
  });
  moe::launched(op);
}

// Benchmark hook (bench/gpu/bench_moe_route.cu): moe_route's entries a chunk (>= 32); returns the previous.
int moe_route_bench_chunk(int chunk) {
  const int prev = g_route_chunk;
  g_route_chunk = std::max(chunk, 32);
  return prev;
}

}  // namespace ds::cuda
