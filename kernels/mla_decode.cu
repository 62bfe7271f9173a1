// Paged latent KV cache and absorbed-MLA decode (MODEL.md §2.5, FlashMLA's contract §2.7): MQA with one KV head
// shared by all H query heads; K is the whole C-vector of a slot ([c ; k_pe], C = Rkv + dr), V its first R values.
//
// Split-KV (flash-decoding): the grid is (head tiles, splits, query rows). Each block runs an online softmax over
// its share of the row's kv_len tokens (shares are cut on the device from kv_len, in whole 32-token tiles) and
// either writes the result (one split) or an f32 partial (normalised output + lse) that a combine kernel merges.
// The number of splits is chosen on the host from the block table's capacity (no device value is read back).
//
// Paths:
//  * bf16, C % 16 == 0, R in {64, 128, 256, 512}, 16-byte aligned: tensor cores (mma.sync m16n8k16, f32
//    accumulation). Heads are the M dimension (16 per warp row), tokens N; the query tile stays in shared memory,
//    K/V tiles of 32 slots are gathered through the block table with cp.async, double buffered. Two warp halves
//    split the tokens for Q·K^T and the R output columns for P·V; P goes through shared memory (bf16).
//  * f32 (exact parity) and any other shape: a SIMT kernel, one warp per head, f32 shared tiles.
//
// Scratch for the partials comes from stream_scratch (cuda_device.h), which grows only outside stream capture; under
// capture a buffer that is too small lowers the split count (one split needs none), so the op never allocates or
// synchronises while a CUDA graph is being captured. Run the op once before capturing to size it.
// Out-of-range block-table entries (the CPU reference rejects them) read as zero keys here, never out of bounds;
// out-of-range slot rows in kv_cache_write are skipped.
#include <cuda_bf16.h>
#include <cuda_runtime.h>

#include <algorithm>
#include <atomic>
#include <cmath>
#include <cstdlib>
#include <utility>
#include <vector>

#include "kernels/attn_common.cuh"
#include "kernels/cuda_device.h"
#include "kernels/cuda_ops.h"

namespace ds::cuda {

using bf16_t = __nv_bfloat16;
using namespace attn;

namespace {

// ---- kv_cache_write -----------------------------------------------------------------------------------

template <class E>
__global__ void kv_cache_write_kernel(E* pool, int64_t slots, const int32_t* rows, const E* c, const E* k_pe, int R,
                                      int dr) {
  pdl_enter();  // programmatic dependent launch: wait for the previous kernel (common.cuh)
  const int i = blockIdx.x;
  const int64_t row = rows[i];
  if (row < 0 || row >= slots) return;
  E* dst = pool + row * (R + dr);
  for (int e = threadIdx.x; e < R + dr; e += blockDim.x) dst[e] = e < R ? c[int64_t(i) * R + e] : k_pe[int64_t(i) * dr + e - R];
}

// ---- decode -------------------------------------------------------------------------------------------

constexpr int kBT = 32;         // tokens per tile
constexpr int kMaxSplits = 64;

template <class E> struct DecodeArgs {
  const E* q;            // [n, H, C]
  const E* pool;         // [P, S, C]
  const int32_t* table;  // [n, max_blocks]
  const int32_t* lens;   // [n]
  E* out;                // [n, H, R]
  float* lse;            // [n, H] or null
  float* part_o;         // [n, nsplit, H, R] when nsplit > 1
  float* part_lse;       // [n, nsplit, H]
  int n, H, C, R, S, P, max_blocks, nsplit;
  float scale, scale_log2;
  int cache_settled;  // Inputs::settled: the tensor-core kernel gathers its first K tile before its wait
};

// Tokens [begin, end) of split `split` of a row with len tokens: equal shares rounded up to whole tiles.
__device__ __forceinline__ void split_range(int len, int nsplit, int split, int& begin, int& end) {
  int per = (len + nsplit - 1) / nsplit;
  per = (per + kBT - 1) / kBT * kBT;
  begin = min(len, split * per);
  end = min(len, begin + per);
}

__device__ __forceinline__ int row_len(const int32_t* lens, int i, int cap) { return max(0, min(lens[i], cap)); }

// Slot row of token t of query row i, or -1 when the page is out of range.
template <class E> __device__ __forceinline__ int64_t slot_of(const DecodeArgs<E>& a, int i, int t) {
  const int page = a.table[int64_t(i) * a.max_blocks + t / a.S];
  return (page >= 0 && page < a.P) ? int64_t(page) * a.S + t % a.S : -1;
}

// Writes one head's result: the final output (one split) or the split's partial.
template <class E>
__device__ __forceinline__ void store_result(const DecodeArgs<E>& a, int i, int split, int h, int col, float v0,
                                             float v1) {
  if (a.nsplit == 1) {
    E* o = a.out + (int64_t(i) * a.H + h) * a.R + col;
    o[0] = from_f<E>(v0);
    o[1] = from_f<E>(v1);
  } else {
    float* o = a.part_o + ((int64_t(i) * a.nsplit + split) * a.H + h) * a.R + col;
    o[0] = v0;
    o[1] = v1;
  }
}
template <class E>
__device__ __forceinline__ void store_lse(const DecodeArgs<E>& a, int i, int split, int h, float lse_nat) {
  if (a.nsplit == 1) {
    if (a.lse) a.lse[int64_t(i) * a.H + h] = lse_nat;
  } else {
    a.part_lse[(int64_t(i) * a.nsplit + split) * a.H + h] = lse_nat;
  }
}

// --- tensor-core kernel: WM warp rows of 16 heads, two halves -> 64*WM threads --------------------------

template <int WM, int R> struct DecMma {
  static constexpr int HT = WM * 16, NT = WM * 64, RH = R / 2, PP = kBT + 8;
  static size_t smem(int C) {
    const size_t PC = size_t(C) + 8;
    return (HT * PC + 2 * kBT * PC + size_t(HT) * PP) * 2 + 4 * HT * sizeof(float) + 2 * kBT * sizeof(int64_t);
  }
};

template <int WM, int R>
__global__ void __launch_bounds__(WM * 64) mla_decode_mma(DecodeArgs<bf16_t> a) {
  using Cfg = DecMma<WM, R>;
  constexpr int HT = Cfg::HT, NT = Cfg::NT, RH = Cfg::RH, PP = Cfg::PP;
  extern __shared__ __align__(16) unsigned char smem_raw[];
  const int C = a.C, PC = C + 8, CH = C / 8;
  int64_t* rows_s = reinterpret_cast<int64_t*>(smem_raw);      // [2][kBT]
  float* red_max = reinterpret_cast<float*>(rows_s + 2 * kBT);  // [2][HT]
  float* red_sum = red_max + 2 * HT;                            // [2][HT]
  bf16_t* Qs = reinterpret_cast<bf16_t*>(red_sum + 2 * HT);     // [HT][PC]
  bf16_t* Ks = Qs + HT * PC;                                    // [2][kBT][PC]
  bf16_t* Ps = Ks + 2 * kBT * PC;                               // [HT][PP]

  const int tid = threadIdx.x, warp = tid >> 5, lane = tid & 31, g = lane >> 2, t4 = lane & 3;
  const int wm = warp % WM, half = warp / WM;
  const int i = blockIdx.z, split = blockIdx.y, h0 = blockIdx.x * HT;
  // With a settled cache the lengths, the block table and the first K tile are loaded before the wait (the
  // latent kernel wrote this step's rows two or more launches back): the chain lens -> table -> cache rows, a few
  // round trips to L2 and HBM, overlaps the kernel before; only the query waits. Otherwise everything waits.
  if (!a.cache_settled) pdl_enter();  // programmatic dependent launch: wait for the previous kernel (common.cuh)
  const int len = row_len(a.lens, i, a.max_blocks * a.S);
  int tb, te;
  split_range(len, a.nsplit, split, tb, te);
  const int n_tiles = (te - tb + kBT - 1) / kBT;

  auto fill_rows = [&](int tile) {  // threads < kBT: slot rows of a tile's tokens (-1: none)
    if (tid < kBT && tile < n_tiles) {
      const int t = tb + tile * kBT + tid;
      rows_s[(tile & 1) * kBT + tid] = t < te ? slot_of(a, i, t) : -1;
    }
  };
  auto issue_tile = [&](int tile) {
    const int buf = tile & 1;
    bf16_t* dst = Ks + buf * kBT * PC;
    for (int c = tid; c < kBT * CH; c += NT) {
      const int tt = c / CH, ch = c - tt * CH;
      const int64_t row = rows_s[buf * kBT + tt];
      cp_async16(dst + tt * PC + ch * 8, row >= 0 ? a.pool + row * C + ch * 8 : a.pool, row >= 0);
    }
  };

  // Prologue: the first K tile, then (after the wait, when it came first) the query tile.
  fill_rows(0);
  fill_rows(1);
  __syncthreads();
  if (n_tiles > 0) issue_tile(0);
  cp_async_commit();
  if (a.cache_settled) pdl_enter();
  for (int c = tid; c < HT * CH; c += NT) {
    const int r = c / CH, ch = c - r * CH, h = h0 + r;
    const bool ok = h < a.H;
    cp_async16(Qs + r * PC + ch * 8, ok ? a.q + (int64_t(i) * a.H + h) * C + ch * 8 : a.q, ok);
  }
  cp_async_commit();

  float o[RH / 8][4];
#pragma unroll
  for (int x = 0; x < RH / 8; ++x) o[x][0] = o[x][1] = o[x][2] = o[x][3] = 0.f;
  float m[2] = {-INFINITY, -INFINITY}, l[2] = {0.f, 0.f};
  const int r_lo = wm * 16 + g;  // this lane's head rows in the tile: r_lo, r_lo + 8

  for (int j = 0; j < n_tiles; ++j) {
    const int buf = j & 1;
    cp_async_wait<0>();
    __syncthreads();  // tile j landed; everyone is done with tile j-1 (its buffer, P, red_max)
    if (j + 1 < n_tiles) issue_tile(j + 1);
    cp_async_commit();
    fill_rows(j + 2);  // overwrites the rows of tile j, already issued
    const bf16_t* Kt = Ks + buf * kBT * PC;

    // S = Q K^T for 16 heads x this half's 16 tokens; even and odd k-steps go to separate accumulators so that
    // two independent MMA chains are in flight (the k loop is long: C / 16 = 36 steps for DeepSeek-V3).
    float s[2][4] = {{0.f, 0.f, 0.f, 0.f}, {0.f, 0.f, 0.f, 0.f}};
    {
      float s2[2][4] = {{0.f, 0.f, 0.f, 0.f}, {0.f, 0.f, 0.f, 0.f}};
      int kk = 0;
#pragma unroll 2
      for (; kk + 1 < C / 16; kk += 2) {
        uint32_t af[4], bfr[4], af2[4], bfr2[4];
        ldsm_x4(af, lds_a(Qs, PC, wm * 16, kk * 16, lane));
        ldsm_x4(bfr, lds_b_nk(Kt, PC, half * 16, kk * 16, lane));
        ldsm_x4(af2, lds_a(Qs, PC, wm * 16, kk * 16 + 16, lane));
        ldsm_x4(bfr2, lds_b_nk(Kt, PC, half * 16, kk * 16 + 16, lane));
        mma_bf16(s[0], af, bfr[0], bfr[1]);
        mma_bf16(s[1], af, bfr[2], bfr[3]);
        mma_bf16(s2[0], af2, bfr2[0], bfr2[1]);
        mma_bf16(s2[1], af2, bfr2[2], bfr2[3]);
      }
      if (kk < C / 16) {
        uint32_t af[4], bfr[4];
        ldsm_x4(af, lds_a(Qs, PC, wm * 16, kk * 16, lane));
        ldsm_x4(bfr, lds_b_nk(Kt, PC, half * 16, kk * 16, lane));
        mma_bf16(s[0], af, bfr[0], bfr[1]);
        mma_bf16(s[1], af, bfr[2], bfr[3]);
      }
#pragma unroll
      for (int nt = 0; nt < 2; ++nt)
#pragma unroll
        for (int e = 0; e < 4; ++e) s[nt][e] += s2[nt][e];
    }
    const int t0 = tb + j * kBT + half * 16;
    float mx[2] = {-INFINITY, -INFINITY};
#pragma unroll
    for (int nt = 0; nt < 2; ++nt)
#pragma unroll
      for (int e = 0; e < 4; ++e) {
        const int t = t0 + nt * 8 + 2 * t4 + (e & 1);
        const float x = t < te ? s[nt][e] * a.scale_log2 : -INFINITY;
        s[nt][e] = x;
        mx[e >> 1] = fmaxf(mx[e >> 1], x);
      }
#pragma unroll
    for (int r = 0; r < 2; ++r) {
      mx[r] = quad_max(mx[r]);
      if (t4 == 0) red_max[half * HT + r_lo + 8 * r] = mx[r];
    }
    __syncthreads();
#pragma unroll
    for (int r = 0; r < 2; ++r) {
      const int row = r_lo + 8 * r;
      const float m_new = fmaxf(m[r], fmaxf(red_max[row], red_max[HT + row])), ms = safe_max(m_new);
      const float alpha = exp2f(m[r] - ms);
      m[r] = m_new;
      float sum = 0.f;
#pragma unroll
      for (int nt = 0; nt < 2; ++nt) {
        const float p0 = exp2f(s[nt][2 * r] - ms), p1 = exp2f(s[nt][2 * r + 1] - ms);
        sum += p0 + p1;
        *reinterpret_cast<uint32_t*>(Ps + row * PP + half * 16 + nt * 8 + 2 * t4) = pack_bf16(p0, p1);
      }
      l[r] = l[r] * alpha + sum;
#pragma unroll
      for (int x = 0; x < RH / 8; ++x) {
        o[x][2 * r] *= alpha;
        o[x][2 * r + 1] *= alpha;
      }
    }
    __syncthreads();
    // O[16 heads][this half's RH columns] += P V
#pragma unroll
    for (int kk = 0; kk < kBT / 16; ++kk) {
      uint32_t pa[4];
      ldsm_x4(pa, lds_a(Ps, PP, wm * 16, kk * 16, lane));
#pragma unroll
      for (int np = 0; np < RH / 16; ++np) {
        uint32_t bfr[4];
        ldsm_x4_t(bfr, lds_b_kn(Kt, PC, kk * 16, half * RH + np * 16, lane));
        mma_bf16(o[2 * np], pa, bfr[0], bfr[1]);
        mma_bf16(o[2 * np + 1], pa, bfr[2], bfr[3]);
      }
    }
  }
  cp_async_wait<0>();

  // Row sums: each half holds its tokens' share (same running max in both halves).
#pragma unroll
  for (int r = 0; r < 2; ++r) {
    l[r] = quad_sum(l[r]);
    if (t4 == 0) red_sum[half * HT + r_lo + 8 * r] = l[r];
  }
  __syncthreads();
#pragma unroll
  for (int r = 0; r < 2; ++r) {
    const int row = r_lo + 8 * r, h = h0 + row;
    if (h >= a.H) continue;
    const float lt = red_sum[row] + red_sum[HT + row];
    const float inv = lt > 0.f ? 1.f / lt : 0.f;
#pragma unroll
    for (int x = 0; x < RH / 8; ++x)
      store_result(a, i, split, h, half * RH + x * 8 + 2 * t4, o[x][2 * r] * inv, o[x][2 * r + 1] * inv);
    if (half == 0 && t4 == 0) store_lse(a, i, split, h, lt > 0.f ? (m[r] + log2f(lt)) * kLn2 : -INFINITY);
  }
}

// --- SIMT kernel: 8 warps, one head each ------------------------------------------------------------------

constexpr int kSimtHeads = 8;
constexpr int kSimtThreads = kSimtHeads * 32;

inline size_t simt_smem(int C, int R) {
  return sizeof(float) * (size_t(kSimtHeads) * C + size_t(kBT) * (C + 1) + kSimtHeads * kBT + size_t(kSimtHeads) * R) +
         kBT * sizeof(int64_t);
}

template <class E> __global__ void __launch_bounds__(kSimtThreads) mla_decode_simt(DecodeArgs<E> a) {
  pdl_enter();  // programmatic dependent launch: wait for the previous kernel (common.cuh)
  extern __shared__ __align__(16) unsigned char smem_raw[];
  const int C = a.C, R = a.R, PC = C + 1;
  int64_t* rows_s = reinterpret_cast<int64_t*>(smem_raw);  // [kBT]
  float* Qs = reinterpret_cast<float*>(rows_s + kBT);       // [8][C]
  float* Ks = Qs + kSimtHeads * C;                          // [kBT][C+1]
  float* Ps = Ks + kBT * PC;                                // [8][kBT]
  float* Os = Ps + kSimtHeads * kBT;                        // [8][R]

  const int tid = threadIdx.x, warp = tid >> 5, lane = tid & 31;
  const int i = blockIdx.z, split = blockIdx.y, h0 = blockIdx.x * kSimtHeads, h = h0 + warp;
  const int len = row_len(a.lens, i, a.max_blocks * a.S);
  int tb, te;
  split_range(len, a.nsplit, split, tb, te);

  for (int e = tid; e < kSimtHeads * C; e += kSimtThreads) {
    const int r = e / C, d = e - r * C;
    Qs[e] = h0 + r < a.H ? to_f(a.q[(int64_t(i) * a.H + h0 + r) * C + d]) : 0.f;
  }
  for (int e = tid; e < kSimtHeads * R; e += kSimtThreads) Os[e] = 0.f;
  __syncthreads();  // Qs and Os are written across warps
  float m = -INFINITY, l = 0.f;
  float* orow = Os + warp * R;
  float* prow = Ps + warp * kBT;
  const float* qrow = Qs + warp * C;

  for (int t0 = tb; t0 < te; t0 += kBT) {
    __syncthreads();
    if (tid < kBT) rows_s[tid] = t0 + tid < te ? slot_of(a, i, t0 + tid) : -1;
    __syncthreads();
    for (int e = tid; e < kBT * C; e += kSimtThreads) {
      const int tt = e / C, d = e - tt * C;
      const int64_t row = rows_s[tt];
      Ks[tt * PC + d] = row >= 0 ? to_f(a.pool[row * C + d]) : 0.f;
    }
    __syncthreads();
    if (h < a.H) {
      const float* krow = Ks + lane * PC;
      float acc = 0.f;
      for (int d = 0; d < C; ++d) acc = fmaf(qrow[d], krow[d], acc);
      const float x = t0 + lane < te ? acc * a.scale : -INFINITY;
      const float m_new = fmaxf(m, warp_max(x)), ms = safe_max(m_new);
      const float alpha = expf(m - ms), p = expf(x - ms);
      l = l * alpha + warp_sum(p);
      m = m_new;
      prow[lane] = p;
      __syncwarp();
      for (int d = lane; d < R; d += 32) {
        float v = 0.f;
#pragma unroll 8
        for (int tt = 0; tt < kBT; ++tt) v = fmaf(prow[tt], Ks[tt * PC + d], v);
        orow[d] = orow[d] * alpha + v;
      }
    }
  }
  if (h >= a.H) return;
  __syncwarp();
  const float inv = l > 0.f ? 1.f / l : 0.f;
  for (int d = lane * 2; d < R; d += 64) {
    if (d + 1 < R) {
      store_result(a, i, split, h, d, orow[d] * inv, orow[d + 1] * inv);
    } else if (a.nsplit == 1) {  // odd R: the last column alone
      a.out[(int64_t(i) * a.H + h) * R + d] = from_f<E>(orow[d] * inv);
    } else {
      a.part_o[((int64_t(i) * a.nsplit + split) * a.H + h) * R + d] = orow[d] * inv;
    }
  }
  if (lane == 0) store_lse(a, i, split, h, l > 0.f ? m + logf(l) : -INFINITY);
}

// --- combine: out[i, h] = sum_s exp(lse_s - lse) o_s;  lse = logsumexp_s lse_s -------------------------

// One block per (row, head), one thread per output column (blockDim = R up to 512). Each thread reads its
// column's first kCombinePre partials before the weights are known, so those loads overlap the lse pass instead
// of following it one split at a time (measured: 6.3 us a launch at batch 1, 10 splits, before this).
constexpr int kCombinePre = 16;

template <class E> __global__ void __launch_bounds__(512) mla_decode_combine(DecodeArgs<E> a) {
  pdl_enter();  // programmatic dependent launch: wait for the previous kernel (common.cuh)
  __shared__ float w_s[kMaxSplits];
  __shared__ float lse_tot;
  const int ih = blockIdx.x, i = ih / a.H, h = ih % a.H, ns = a.nsplit;
  const float* po = a.part_o + (int64_t(i) * ns * a.H + h) * a.R;  // split s of this column: po[s * H * R + d]
  const int64_t sstride = int64_t(a.H) * a.R;
  float pre[kCombinePre];
#pragma unroll
  for (int s = 0; s < kCombinePre; ++s)
    pre[s] = s < ns && int(threadIdx.x) < a.R ? po[s * sstride + threadIdx.x] : 0.f;
  if (threadIdx.x < 32) {
    const int lane = threadIdx.x;
    float mx = -INFINITY;
    for (int s = lane; s < ns; s += 32) mx = fmaxf(mx, a.part_lse[(int64_t(i) * ns + s) * a.H + h]);
    mx = warp_max(mx);
    const float ms = safe_max(mx);
    float sum = 0.f;
    for (int s = lane; s < ns; s += 32) {
      const float w = expf(a.part_lse[(int64_t(i) * ns + s) * a.H + h] - ms);
      w_s[s] = w;
      sum += w;
    }
    sum = warp_sum(sum);
    const float inv = sum > 0.f ? 1.f / sum : 0.f;
    for (int s = lane; s < ns; s += 32) w_s[s] *= inv;
    if (lane == 0) lse_tot = sum > 0.f ? ms + logf(sum) : -INFINITY;
  }
  __syncthreads();
  for (int d = threadIdx.x; d < a.R; d += blockDim.x) {
    const bool first = d == int(threadIdx.x);
    float acc = 0.f;
#pragma unroll
    for (int s = 0; s < kCombinePre; ++s) {
      if (s >= ns) break;
      const float w = w_s[s];
      if (w != 0.f) acc = fmaf(w, first ? pre[s] : po[s * sstride + d], acc);
    }
    for (int s = kCombinePre; s < ns; ++s) {
      const float w = w_s[s];
      if (w != 0.f) acc = fmaf(w, po[s * sstride + d], acc);
    }
    a.out[int64_t(ih) * a.R + d] = from_f<E>(acc);
  }
  if (threadIdx.x == 0 && a.lse) a.lse[ih] = lse_tot;
}

// ---- host side ----------------------------------------------------------------------------------------

// FlashAttention's heuristic: no split when the base grid fills ~a wave; otherwise the smallest split count whose
// wave efficiency is within 85 % of the best, with at least min_tokens tokens of capacity per split. A split is
// latency-bound (a block walks its tiles one after another), so small batches split down to one or two tiles.
int choose_splits(int64_t base_ctas, int64_t capacity, int slots, int min_tokens) {
  if (base_ctas >= int64_t(0.8 * slots)) return 1;
  const int max_s = int(std::clamp<int64_t>((capacity + min_tokens - 1) / min_tokens, 1, kMaxSplits));
  if (base_ctas * max_s <= slots) return max_s;  // not even one wave at the finest split: take it
  double best = 0;
  std::vector<double> eff(size_t(max_s) + 1, 0.0);
  for (int s = 1; s <= max_s; ++s) {
    const double waves = double(base_ctas * s) / slots;
    eff[size_t(s)] = waves / std::ceil(waves);
    best = std::max(best, eff[size_t(s)]);
  }
  for (int s = 1; s <= max_s; ++s)
    if (eff[size_t(s)] >= 0.85 * best) return s;
  return 1;
}

// Minimum tokens of capacity per split: one tile, or DS_MLA_SPLIT_TOKENS (a benchmark knob, at least one tile).
// Measured at batch 1 on the H200 (bench/README.md, seventh session): one tile 1,309 / 1,311 tok/s, two tiles
// 1,286 / 1,285, four 1,223 / 1,218, eight 1,122 — a split walks its tiles one after another, so at few query rows
// the most splits win even with a longer combine; larger batches fill the GPU before this bound matters.
int split_tokens() {
  static const int v = [] {
    const char* e = std::getenv("DS_MLA_SPLIT_TOKENS");
    const long t = e ? std::strtol(e, nullptr, 10) : 0;
    return t > 0 ? int(std::max<long>(t, kBT)) : kBT;
  }();
  return v;
}

template <int WM, int R> void launch_mma(DecodeArgs<bf16_t> a, cudaStream_t st) {
  using Cfg = DecMma<WM, R>;
  const size_t smem = Cfg::smem(a.C);
  allow_smem(mla_decode_mma<WM, R>, smem);
  const dim3 grid((a.H + Cfg::HT - 1) / Cfg::HT, a.nsplit, a.n);
  launch(mla_decode_mma<WM, R>, grid, Cfg::NT, smem, st, a);
}

template <int WM> bool launch_mma_r(const DecodeArgs<bf16_t>& a, cudaStream_t st) {
  switch (a.R) {
    case 512: launch_mma<WM, 512>(a, st); return true;
    case 256: launch_mma<WM, 256>(a, st); return true;
    case 128: launch_mma<WM, 128>(a, st); return true;
    case 64: launch_mma<WM, 64>(a, st); return true;
    default: return false;
  }
}

template <class E>
void run_decode(const Context& ctx, Tensor out, Tensor lse, Tensor q_lat, Tensor kv_pool, Tensor block_table,
                Tensor kv_len, double scale, Inputs cache) {
  cudaStream_t st = stream_of(ctx);
  DecodeArgs<E> a{};
  a.cache_settled = cache == Inputs::settled;
  a.q = static_cast<const E*>(q_lat.data);
  a.pool = static_cast<const E*>(kv_pool.data);
  a.table = static_cast<const int32_t*>(block_table.data);
  a.lens = static_cast<const int32_t*>(kv_len.data);
  a.out = static_cast<E*>(out.data);
  a.lse = lse.empty() ? nullptr : static_cast<float*>(lse.data);
  a.n = int(q_lat.dim(0));
  a.H = int(q_lat.dim(1));
  a.C = int(q_lat.dim(2));
  a.R = int(out.dim(2));
  a.P = int(kv_pool.dim(0));
  a.S = int(kv_pool.dim(1));
  a.max_blocks = int(block_table.dim(1));
  a.scale = float(scale);
  a.scale_log2 = float(scale * 1.4426950408889634);
  if (a.n == 0 || a.H == 0) return;

  // Path and its geometry.
  bool mma = false;
  int wm = 4;
  size_t smem = 0;
  if constexpr (std::is_same_v<E, bf16_t>) {
    wm = a.H > 32 ? 4 : (a.H > 16 ? 2 : 1);
    smem = wm == 4 ? DecMma<4, 512>::smem(a.C) : wm == 2 ? DecMma<2, 512>::smem(a.C) : DecMma<1, 512>::smem(a.C);
    mma = a.C % 16 == 0 && (a.R == 512 || a.R == 256 || a.R == 128 || a.R == 64) && aligned16(q_lat) &&
          aligned16(kv_pool) && aligned16(out) && smem <= max_smem_optin();
  }
  if (!mma) {
    smem = simt_smem(a.C, a.R);
    DS_CHECK(smem <= max_smem_optin(), "mla_decode_attention (CUDA): C = " + std::to_string(a.C) + ", R = " +
                                           std::to_string(a.R) + " need too much shared memory");
  }
  const int heads_per_cta = mma ? wm * 16 : kSimtHeads;
  const int64_t base = int64_t(a.n) * ((a.H + heads_per_cta - 1) / heads_per_cta);
  const int per_sm = std::max<int>(1, int((228 * 1024) / (smem + 1024)));
  int ns = choose_splits(base, int64_t(a.max_blocks) * a.S, num_sms() * std::min(per_sm, mma ? 2 : 4), split_tokens());
  if (ns > 1) {
    const size_t per_split = size_t(a.n) * a.H * (size_t(a.R) + 1) * sizeof(float);
    size_t have = 0;
    void* buf = stream_scratch(st, ScratchUse::mla_split, per_split * ns, have);
    ns = std::min<int>(ns, int(have / per_split));
    if (ns > 1) {
      a.part_o = static_cast<float*>(buf);
      a.part_lse = a.part_o + size_t(a.n) * ns * a.H * a.R;
    }
  }
  a.nsplit = std::max(ns, 1);

  if (mma) {
    if constexpr (std::is_same_v<E, bf16_t>) {
      const bool ok = wm == 4 ? launch_mma_r<4>(a, st) : wm == 2 ? launch_mma_r<2>(a, st) : launch_mma_r<1>(a, st);
      DS_CHECK(ok, "mla_decode_attention (CUDA): no tensor-core kernel for R");
    }
  } else {
    allow_smem(mla_decode_simt<E>, smem);
    const dim3 grid((a.H + kSimtHeads - 1) / kSimtHeads, a.nsplit, a.n);
    launch(mla_decode_simt<E>, grid, kSimtThreads, smem, st, a);
  }
  if (a.nsplit > 1) launch(mla_decode_combine<E>, a.n * a.H, std::clamp((a.R + 31) / 32 * 32, 32, 512), 0, st, a);
}

}  // namespace

void kv_cache_write(const Context& ctx, Tensor kv_pool, Tensor slot_rows, Tensor c, Tensor k_pe) {
  DeviceGuard guard(ctx);
  const int64_t n = slot_rows.numel();
  if (n == 0) return;
  const int64_t slots = kv_pool.dim(0) * kv_pool.dim(1);
  const int R = int(c.cols()), dr = int(k_pe.cols());
  const int threads = std::clamp((R + dr + 31) / 32 * 32, 32, 256);
  cudaStream_t st = stream_of(ctx);
  const int32_t* rows = static_cast<const int32_t*>(slot_rows.data);
  if (kv_pool.dtype == DType::bf16) {
    launch(kv_cache_write_kernel<bf16_t>, unsigned(n), threads, 0, st, static_cast<bf16_t*>(kv_pool.data), slots, rows,
                                                                    static_cast<const bf16_t*>(c.data),
                                                                    static_cast<const bf16_t*>(k_pe.data), R, dr);
  } else {
    DS_CHECK(kv_pool.dtype == DType::f32, "kv_cache_write (CUDA): f32 or bf16 tensors");
    launch(kv_cache_write_kernel<float>, unsigned(n), threads, 0, st, static_cast<float*>(kv_pool.data), slots, rows,
                                                                   static_cast<const float*>(c.data),
                                                                   static_cast<const float*>(k_pe.data), R, dr);
  }
  check_launch("kv_cache_write");
}

void mla_decode_attention(const Context& ctx, Tensor out, Tensor lse, Tensor q_lat, Tensor kv_pool, Tensor block_table,
                          Tensor kv_len, double scale, Inputs cache) {
  DS_CHECK(lse.empty() || lse.dtype == DType::f32, "mla_decode_attention (CUDA): lse must be f32");
  DeviceGuard guard(ctx);
  if (q_lat.dtype == DType::bf16) {
    run_decode<bf16_t>(ctx, out, lse, q_lat, kv_pool, block_table, kv_len, scale, cache);
  } else {
    DS_CHECK(q_lat.dtype == DType::f32, "mla_decode_attention (CUDA): f32 or bf16 tensors");
    run_decode<float>(ctx, out, lse, q_lat, kv_pool, block_table, kv_len, scale, cache);
  }
  check_launch("mla_decode_attention");
}

}  // namespace ds::cuda
