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
// against each other. The forward at 96/64 also has warpgroup-MMA kernels (fwd_wgmma.cuh: attn_fwd_wgmma and, with
// the softmax overlapping the PV product, attn_fwd_wgmma_ovl; key tiles of 64 or 128): attn_fwd_wgmma_ovl with key
// tiles of 64 is the default there (measured faster), the others chosen through a bench hook
// (attention_bench_fwd_variant). And when one call asks for dQ with dK/dV there (the training backward), the dK/dV
// kernel also stores dS^T as bf16 tiles of each head's causal triangle (a stream-ordered TempBuffer, ~T^2 B H bytes)
// and dQ = dS K is one product a key tile (bwd_dq_ds.cuh) instead of recomputing S and dP: still deterministic.
// The warpgroup-MMA forward hands its blocks out longest tile first across the whole grid (block_tile); the
// backward kernels keep each head's tiles together (L2 reuse of its Q and dO tiles measured faster there).
// Nothing here synchronises, so the ops are CUDA-graph capturable.
#include <cuda_bf16.h>
#include <cuda_runtime.h>

#include <algorithm>
#include <atomic>
#include <cmath>
#include <cstdlib>

#include "kernels/attn_common.cuh"
#include "kernels/cuda_ops.h"
#include "kernels/tensor_map.h"
#include "kernels/tma_copy.cuh"
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
  E* ds;                // backward, dQ variant 7: dS^T tiles (attn_bwd_dkdv_wgmma writes, attn_bwd_dq_ds_wgmma reads)
  // The warpgroup-MMA kernels' key / value layout (elements): token-row and head strides of k, v, dk, dv, and
  // k_rope / dk_rope: columns 64.. of each head's key (its gradient) from their own tensor (null: from k / dk).
  // make_args sets the contiguous [B, T, H, D] layout; MLA's in-place form (mla_attention_forward / backward)
  // points k and v into kv_b's per-head [k_nope | v] rows and k_rope at the rope key all heads share (hs_kr 0).
  const E* k_rope;
  E* dk_rope;
  int64_t ld_k, hs_k, ld_v, hs_v, ld_kr, hs_kr, ld_dk, hs_dk, ld_dv, hs_dv, ld_dkr, hs_dkr;
  int T, H, Dqk, Dv;
  float scale;       // softmax scale
  float scale_log2;  // scale * log2(e)
  int lpt;           // the warpgroup-MMA forward's blocks longest-first across the grid (block_tile)
};

// A warpgroup-MMA forward block: its query tile's rank (0 the longest: the last tile) and its batch-head. The
// hardware hands blocks out in linear order, x fastest, over a grid of (tiles, batch-heads). With lpt, the default,
// that order is split rank-major: every head's longest tile goes out before any head's second and the grid ends on
// the shortest; without (DS_ATTN_LPT=0, for A/Bs) rank = blockIdx.x within head blockIdx.y, each head's tiles long
// to short, and a long tile handed out near the end runs on while the rest of the GPU idles. Bench shape (21st
// session): forward 0.192-0.195 -> 0.187 ms. The backward kernels keep the per-head order: rank-major made them
// slower (all three gradients 0.534-0.538 -> 0.589-0.591 ms; their concurrent blocks then share no head's tiles
// in L2).
struct BlockTile {
  int rank, bh;
};
__device__ __forceinline__ BlockTile block_tile(int lpt) {
  if (!lpt) return {int(blockIdx.x), int(blockIdx.y)};
  const uint64_t lin = blockIdx.x + uint64_t(blockIdx.y) * gridDim.x;
  return {int(lin / gridDim.y), int(lin % gridDim.y)};
}

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

// The kernels, by family (kernels/attention/; included here, in this order, inside the anonymous namespace).
#include "kernels/attention/fwd_mma.cuh"
#include "kernels/attention/bwd_mma.cuh"
#include "kernels/attention/bwd_wgmma.cuh"
#include "kernels/attention/bwd_dq_ds.cuh"
#include "kernels/attention/fwd_wgmma.cuh"
#include "kernels/attention/simt.cuh"

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
// dK/dV variants 6 and 7: attn_bwd_dkdv_wgmma with query steps of 32 (3 blocks an SM) and 64 (2), 8 and 9 the same with
// Q, dO, lse and D loaded by the TMA unit (where T is a multiple of the step; else 6 and 7); dQ variants 5 and 6:
// attn_bwd_dq_wgmma with key steps of 32 (3) and 64 (2); dQ variant 7: attn_bwd_dq_ds_wgmma, dQ from the dS tiles the
// dK/dV kernel stores when one call asks for dQ and dK/dV with a wgmma dK/dV variant (else variant 5); dQ variant 8: 7
// with TMA loads (bwd_dq_ds.cuh; where T is a multiple of 64, else 7; the default since the 26th session). sm_90a
// builds only (kernels/CMakeLists.txt defines DS_CUDA_WGMMA there). The counts include the default. At start-up
// DS_ATTN_DKDV_VARIANT / DS_ATTN_DQ_VARIANT pick others (env_variant). Tried and removed (16th session): the block's
// constant operand (K and V; Q and dO) as register A fragments, so that S^T, dP^T (S, dP) read only one operand from
// shared memory: no faster (H200, B16 T1024 H16, ms: dK+dV 0.394 -> 0.414-0.465, dQ 0.297 -> 0.288-0.313; training
// 281.1k -> 277.6k-280.2k tok/s): shared-memory reads are not what bounds these kernels. Tried and removed (24th
// session): dK/dV with query steps of 32 at 4 blocks an SM (128 registers, 204 bytes of spills; ncu had the 3-block
// kernel at 18.75% occupancy, issue slots 45% busy, its warps stalled most on fixed-latency dependencies and barriers):
// dK+dV 0.374 -> 0.520 ms, with dQ from dS 0.535 -> 0.752; training 302.5k / 300.2k -> 290.9k tok/s (one run). Tried
// and removed (25th session): 8 at 4 blocks an SM (TMA had left it 138 registers; at 128, 64 bytes of spills and ptxas
// serialised its products, C7512): dK+dV 0.327 ms against 0.288, training 301.6k / 305.4k against 307.7k / 309.3k. The
// default at 96/64: the wgmma kernels with steps of 32 where they exist (H200, bench model training shape, B16 T1024
// H16, ms for dK+dV / dQ: mma.sync 0.491 / 0.378, wgmma step 32 0.392 / 0.297, step 64 0.388 / 0.315; bench/README.md,
// 13th session), else the mma.sync kernels (variant 0); and dQ from the stored dS (variant 7, 20th session: all three
// gradients 0.650 -> 0.547 ms, training +1.5%) where the call asks for dK/dV as well. Since the 25th session the
// step-32 kernel with TMA loads (variant 8; 6 where T is not a multiple of 32): dK+dV 0.375 -> 0.288 ms, with dQ from
// dS 0.536 -> 0.446 (9: 0.269, 0.422); training 302.7k / 300.2k -> 307.7k / 309.3k tok/s against 6, the same losses.
// Since the 26th session dQ from dS with TMA loads (variant 8): with dK/dV 8, all three gradients 0.442 -> 0.428 ms;
// training 313.2k / 312.5k -> 315.2k / 314.7k, the same losses (its bits are variant 7's).
#ifdef DS_CUDA_WGMMA
constexpr int kDkdvVariants = 10, kDqVariants = 9, kDkdvDefault = 8, kDqDefault = 8;
#else
constexpr int kDkdvVariants = 6, kDqVariants = 5, kDkdvDefault = 0, kDqDefault = 0;
#endif
// A variant from the environment variable `name` at start-up (benchmark knobs for whole-program A/Bs such as
// bench/gpu/ab_train.sh; values the build lacks are ignored), else def.
int env_variant(const char* name, int count, int def) {
  const char* e = std::getenv(name);
  if (e == nullptr || *e == '\0') return def;
  char* end = nullptr;
  const long v = std::strtol(e, &end, 10);
  return *end == '\0' && v >= 0 && v < count ? int(v) : def;
}
int g_dkdv_variant = env_variant("DS_ATTN_DKDV_VARIANT", kDkdvVariants, kDkdvDefault);
int g_dq_variant = env_variant("DS_ATTN_DQ_VARIANT", kDqVariants, kDqDefault);
int g_lpt = env_variant("DS_ATTN_LPT", 2, 1);  // the forward's block order (block_tile): 1 rank-major, 0 per head

// Forward variants at 96/64 (needs scale > 0, as the wide kernel): 0 = attn_fwd_mma_wide, 1 and 2 = attn_fwd_wgmma
// with key tiles of 64 (3 blocks an SM) and 128 (2), 3 and 4 = attn_fwd_wgmma_ovl (softmax overlapping the PV
// product) with key tiles of 64 and 128, 5 = attn_fwd_wgmma_ovl with key tiles of 64 and Q as register A fragments
// (S reads only K from shared memory), 6 = 3 with K and V loaded by the TMA unit (where T is a multiple of 64, else 3;
// the same bits); 1-6 in sm_90a builds only. The default: 6 with sm_90a, else 0 (H200, bench model training shape,
// B16 T1024 H16, ms: 0 0.208, 1 0.187, 2 0.215, 3 0.181, 4 0.216, 5 0.208; training 247.8k -> 248.9k tok/s, losses
// equal; 14th session; 3 -> 6, 26th session: 0.185 -> 0.178 ms, training 313.2k / 312.5k -> 317.2k, one run, the
// same losses). attn_fwd_wgmma with Q in registers (once variant 5) failed
// parity on the H200 in every case while the overlapped kernel with Q in registers passed; slower than 3 as well
// (0.203 ms), it was removed rather than debugged. Bench hook: attention_bench_fwd_variant; at start-up
// DS_ATTN_FWD_VARIANT (a benchmark knob for whole-program A/Bs such as bench/gpu/ab_train.sh; values the build lacks
// are ignored).
#ifdef DS_CUDA_WGMMA
constexpr int kFwdVariants = 7;
constexpr bool kWgmma = true;  // the warpgroup-MMA kernels run (sm_90a build)
#else
constexpr int kFwdVariants = 1;
constexpr bool kWgmma = false;
#endif
int g_fwd_variant = env_variant("DS_ATTN_FWD_VARIANT", kFwdVariants, kWgmma ? 6 : 0);

template <class E> AttnArgs<E> make_args(const Tensor& q, const Tensor& v, double scale) {
  AttnArgs<E> a{};
  a.T = int(q.dim(1));
  a.H = int(q.dim(2));
  a.Dqk = int(q.dim(3));
  a.Dv = int(v.dim(3));
  a.ld_k = a.ld_dk = int64_t(a.H) * a.Dqk;
  a.hs_k = a.hs_dk = a.Dqk;
  a.ld_v = a.ld_dv = int64_t(a.H) * a.Dv;
  a.hs_v = a.hs_dv = a.Dv;
  a.scale = float(scale);
  a.scale_log2 = float(scale * 1.4426950408889634);
  a.lpt = g_lpt;
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

// The TMA forward's maps (wgfwd::KvMaps), where it applies: T a multiple of the key tile (no tile crosses a
// sequence's end), K, the rope key and V 16-byte aligned with 16-byte row pitches. Each view's columns end at the last
// head's (the pad of K's second box past them reads zeros). False: the kernel without TMA.
bool fwd_tma_maps(wgfwd::KvMaps& m, const AttnArgs<bf16_t>& a, int B, int BK) {
  if (a.T % BK != 0) return false;
  const int64_t rows = int64_t(B) * a.T, H = a.H;
  const int64_t kcols = (H - 1) * a.hs_k + (a.k_rope ? 64 : 96), vcols = (H - 1) * a.hs_v + 64;
  return encode_bf16_sw128(m.k, a.k, rows, kcols, a.ld_k * 2, uint32_t(BK)) &&
         encode_bf16_sw128(m.v, a.v, rows, vcols, a.ld_v * 2, uint32_t(BK)) &&
         (a.k_rope == nullptr ||
          encode_bf16_sw128(m.kr, a.k_rope, rows, (H - 1) * a.hs_kr + 32, a.ld_kr * 2, uint32_t(BK)));
}

template <int BK, int MINB, bool OVL, bool QREG = false, bool TMA = false>
void launch_fwd_wgmma(const AttnArgs<bf16_t>& a, int B, cudaStream_t st) {
  constexpr size_t smem = wgfwd::Cfg<96, 64, BK>::smem;
  const dim3 grid((a.T + 63) / 64, B * a.H);
  if constexpr (OVL) {
    wgfwd::KvMaps maps{};
    if constexpr (TMA) {
      if (!fwd_tma_maps(maps, a, B, BK)) return launch_fwd_wgmma<BK, MINB, OVL, QREG, false>(a, B, st);
    }
    allow_smem(attn_fwd_wgmma_ovl<96, 64, BK, MINB, QREG, TMA>, smem);
    launch(attn_fwd_wgmma_ovl<96, 64, BK, MINB, QREG, TMA>, grid, kMmaThreads, smem, st, a, maps);
  } else {
    static_assert(!TMA, "TMA loads: the overlapped kernel only");
    static_assert(!QREG, "Q in registers: the overlapped kernel only");
    allow_smem(attn_fwd_wgmma<96, 64, BK, MINB>, smem);
    launch(attn_fwd_wgmma<96, 64, BK, MINB>, grid, kMmaThreads, smem, st, a);
  }
}

template <int DQK, int DV, class TL> void launch_dkdv(const AttnArgs<bf16_t>& a, int B, cudaStream_t st) {
  constexpr size_t smem = Mma<DQK, DV>::kv_smem(TL::STEP);
  allow_smem(attn_bwd_dkdv_mma<DQK, DV, TL>, smem);
  const dim3 grid((a.T + Mma<DQK, DV>::KV_BK - 1) / Mma<DQK, DV>::KV_BK, B * a.H);
  launch(attn_bwd_dkdv_mma<DQK, DV, TL>, grid, kMmaThreads, smem, st, a);
}

// The TMA dK/dV kernel's maps (wgbwd::QdoMaps), where it applies: T a multiple of the query step (no step crosses a
// sequence's end, so the 2D views' rows of the next sequence are never loaded), Q, dO and the lse / D rows 16-byte
// aligned. False: the kernel without TMA.
bool dkdv_tma_maps(wgbwd::QdoMaps& m, const AttnArgs<bf16_t>& a, int B, int BQ) {
  if (a.T % BQ != 0 || !is_aligned16(a.lse_in) || !is_aligned16(a.delta)) return false;
  const int64_t rows = int64_t(B) * a.T, qc = int64_t(a.H) * 96, vc = int64_t(a.H) * 64;
  return encode_bf16_sw128(m.q, a.q, rows, qc, qc * 2, uint32_t(BQ)) &&
         encode_bf16_sw128(m.dout, a.dout, rows, vc, vc * 2, uint32_t(BQ));
}

template <int BQ, int MINB, bool DSOUT, bool TMA = false>
void launch_dkdv_wgmma(const AttnArgs<bf16_t>& a, int B, cudaStream_t st) {
  wgbwd::QdoMaps maps{};
  if constexpr (TMA) {
    if (!dkdv_tma_maps(maps, a, B, BQ)) return launch_dkdv_wgmma<BQ, MINB, DSOUT, false>(a, B, st);
  }
  constexpr size_t smem = wgbwd::Cfg<96, 64, BQ, DSOUT>::smem;
  allow_smem(attn_bwd_dkdv_wgmma<96, 64, BQ, MINB, DSOUT, TMA>, smem);
  const dim3 grid((a.T + 63) / 64, B * a.H);
  launch(attn_bwd_dkdv_wgmma<96, 64, BQ, MINB, DSOUT, TMA>, grid, kMmaThreads, smem, st, a, maps);
}

// The TMA dQ kernel's maps (wgbwd::DqMaps), where it applies: T a multiple of 64 (no key tile crosses a sequence's
// end), the dS scratch, K and the rope key 16-byte aligned with 16-byte row pitches. False: the kernel without TMA.
bool dq_tma_maps(wgbwd::DqMaps& m, const AttnArgs<bf16_t>& a, int B) {
  if (a.T % 64 != 0) return false;
  const int64_t rows = int64_t(B) * a.T, n = a.T / 64;
  return encode_bf16_sw128(m.ds, a.ds, int64_t(B) * a.H * n * (n + 1) / 2 * 64, 64, 128, 64) &&
         encode_bf16_sw128(m.k, a.k, rows, a.ld_k, a.ld_k * 2, 64) &&
         (a.k_rope == nullptr || encode_bf16_sw128(m.kr, a.k_rope, rows, a.ld_kr, a.ld_kr * 2, 64));
}

template <int QT, int MINB, bool TMA = false>
void launch_dq_ds_wgmma(const AttnArgs<bf16_t>& a, int B, cudaStream_t st) {
  wgbwd::DqMaps maps{};
  if constexpr (TMA) {
    if (!dq_tma_maps(maps, a, B)) return launch_dq_ds_wgmma<QT, MINB, false>(a, B, st);
  }
  constexpr size_t smem = wgbwd::CfgDs<96, QT>::smem;
  allow_smem(attn_bwd_dq_ds_wgmma<96, QT, MINB, TMA>, smem);
  const dim3 grid(((a.T + 63) / 64 + QT - 1) / QT, B * a.H);
  launch(attn_bwd_dq_ds_wgmma<96, QT, MINB, TMA>, grid, kMmaThreads, smem, st, a, maps);
}

// dQ variant 7's dS scratch above this falls back to variant 5 (the triangle of a long context, many heads)
constexpr size_t kDsScratchMax = size_t(1) << 30;

// Whether the chosen variants take dQ from the dS tiles the dK/dV kernel stores (dQ variant 7 with a wgmma dK/dV
// kernel; see DS_ATTN_DQ_VARIANTS), and whether this call's dQ does (it asks for dK/dV too, at 96/64, scratch in
// bounds).
bool ds_variants() { return kWgmma && g_dq_variant >= 7 && g_dkdv_variant >= 6; }
bool dq_from_ds(const AttnArgs<bf16_t>& a, int B) {
  return ds_variants() && a.dq && (a.dk || a.dv) &&
         a.Dqk == 96 && a.Dv == 64 && wgbwd::ds_scratch_bytes(int64_t(B) * a.H, a.T) <= kDsScratchMax;
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
  allow_smem(attn_bwd_delta<DV>, delta_smem<DV>());
  launch(attn_bwd_delta<DV>, unsigned((rows + kDeltaThreads - 1) / kDeltaThreads), kDeltaThreads, delta_smem<DV>(), st,
         a, rows);
  if constexpr (DQK == 96 && DV == 64) {
    if (dq_from_ds(a, B)) {  // dK/dV, storing dS, then dQ from it
      TempBuffer ds(wgbwd::ds_scratch_bytes(int64_t(B) * a.H, a.T), st);
      a.ds = ds.as<bf16_t>();
      switch (g_dkdv_variant) {
        case 6: launch_dkdv_wgmma<32, 3, true>(a, B, st); break;
        case 7: launch_dkdv_wgmma<64, 2, true>(a, B, st); break;
        case 8: launch_dkdv_wgmma<32, 3, true, true>(a, B, st); break;
        default: launch_dkdv_wgmma<64, 2, true, true>(a, B, st);
      }
      if (g_dq_variant == 8) launch_dq_ds_wgmma<2, 3, true>(a, B, st);
      else launch_dq_ds_wgmma<2, 3>(a, B, st);
      return;
    }
  }
  if (a.dk || a.dv) {
    if constexpr (DQK == 96 && DV == 64) {
      switch (g_dkdv_variant) {
#define DS_X(i, step, minb, reg) \
  case i: launch_dkdv<DQK, DV, BwdTile<step, minb, reg>>(a, B, st); break;
        DS_ATTN_DKDV_VARIANTS(DS_X)
#undef DS_X
        case 6: launch_dkdv_wgmma<32, 3, false>(a, B, st); break;
        case 7: launch_dkdv_wgmma<64, 2, false>(a, B, st); break;
        case 8: launch_dkdv_wgmma<32, 3, false, true>(a, B, st); break;
        case 9: launch_dkdv_wgmma<64, 2, false, true>(a, B, st); break;
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
        case 5:
        case 7:
        case 8: launch_dq_wgmma<32, 3>(a, B, st); break;  // 7, 8 without dK/dV in the call: variant 5
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
      if (a.scale_log2 > 0.f && a.Dqk == 96 && a.Dv == 64 && g_fwd_variant != 0) {
        switch (g_fwd_variant) {
          case 1: launch_fwd_wgmma<64, 3, false>(a, B, st); break;
          case 2: launch_fwd_wgmma<128, 2, false>(a, B, st); break;
          case 3: launch_fwd_wgmma<64, 3, true>(a, B, st); break;
          case 4: launch_fwd_wgmma<128, 2, true>(a, B, st); break;
          case 6: launch_fwd_wgmma<64, 3, true, false, true>(a, B, st); break;
          default: launch_fwd_wgmma<64, 3, true, true>(a, B, st);
        }
        launched = true;
      }
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

// MLA in place (ops.h): the warpgroup-MMA kernels at 96/64 with dn 64 read kv_b's [k_nope | v] and the shared rope
// key where they are (AttnArgs' layout fields), and write dk / dv into d_kv's layout and the rope key's per-head
// gradients into d_k_pe. False (nothing launched) where they do not apply: the op then materialises the keys.
namespace {

bool mla_in_place(const Tensor& q, const Tensor& kv, const Tensor& k_pe, int64_t Dv, double scale,
                  std::initializer_list<const Tensor*> ts) {
  const int64_t Dqk = q.dim(3), dn = kv.dim(3) - Dv;
  return q.dtype == DType::bf16 && Dqk == 96 && Dv == 64 && dn == 64 && k_pe.cols() == Dqk - dn && scale > 0 &&
         all_aligned16(ts);
}

// The in-place layout: k = kv's first dn columns of each head, v the rest, k_rope = k_pe (shared: head stride 0).
void set_mla_layout(AttnArgs<bf16_t>& a, const Tensor& kv, const Tensor& k_pe, int64_t dn) {
  const int64_t W = kv.dim(3);
  a.k = cptr<bf16_t>(kv);
  a.v = cptr<bf16_t>(kv) + dn;
  a.k_rope = cptr<bf16_t>(k_pe);
  a.ld_k = a.ld_v = a.H * W;
  a.hs_k = a.hs_v = W;
  a.ld_kr = k_pe.cols();
  a.hs_kr = 0;
}

}  // namespace

bool mla_attention_forward(const Context& ctx, Tensor out, Tensor lse, Tensor q, Tensor kv, Tensor k_pe,
                           double scale) {
  if (!kWgmma || (g_fwd_variant != 3 && g_fwd_variant != 5 && g_fwd_variant != 6) ||
      !mla_in_place(q, kv, k_pe, out.dim(3), scale, {&q, &kv, &k_pe, &out}))
    return false;
  DS_CHECK(lse.empty() || lse.dtype == DType::f32, "mla_attention_forward (CUDA): lse must be f32");
  DeviceGuard guard(ctx);
  const int B = int(q.dim(0));
  if (q.numel() == 0) return true;
  cudaStream_t st = stream_of(ctx);
  AttnArgs<bf16_t> a = make_args<bf16_t>(q, out, scale);
  a.q = cptr<bf16_t>(q), a.out = mptr<bf16_t>(out), a.lse_out = mptr<float>(lse);
  set_mla_layout(a, kv, k_pe, kv.dim(3) - out.dim(3));
  if (g_fwd_variant == 5) launch_fwd_wgmma<64, 3, true, true>(a, B, st);
  else if (g_fwd_variant == 6) launch_fwd_wgmma<64, 3, true, false, true>(a, B, st);
  else launch_fwd_wgmma<64, 3, true>(a, B, st);
  check_launch("mla_attention_forward");
  return true;
}

bool mla_attention_backward(const Context& ctx, Tensor d_q, Tensor d_kv, Tensor d_k_pe, Tensor d_out, Tensor out,
                            Tensor lse, Tensor q, Tensor kv, Tensor k_pe, double scale) {
  const bool wg = g_dkdv_variant >= 6 && (d_q.empty() || g_dq_variant >= 5);
  if (!kWgmma || !wg ||
      !mla_in_place(q, kv, k_pe, out.dim(3), scale, {&q, &kv, &k_pe, &out, &d_out, &d_q, &d_kv, &d_k_pe}))
    return false;
  DS_CHECK(lse.dtype == DType::f32, "mla_attention_backward (CUDA): lse must be f32");
  DeviceGuard guard(ctx);
  const int B = int(q.dim(0));
  if (q.numel() == 0) return true;
  cudaStream_t st = stream_of(ctx);
  AttnArgs<bf16_t> a = make_args<bf16_t>(q, out, scale);
  a.q = cptr<bf16_t>(q), a.o = cptr<bf16_t>(out), a.dout = cptr<bf16_t>(d_out), a.dq = mptr<bf16_t>(d_q);
  a.lse_in = cptr<float>(lse);
  const int64_t dn = kv.dim(3) - out.dim(3), W = kv.dim(3), dr = k_pe.cols();
  set_mla_layout(a, kv, k_pe, dn);
  if (!d_kv.empty()) {  // empty: dQ alone (the dK/dV kernel is not launched)
    a.dk = mptr<bf16_t>(d_kv);
    a.dv = mptr<bf16_t>(d_kv) + dn;
    a.dk_rope = mptr<bf16_t>(d_k_pe);
  }
  a.ld_dk = a.ld_dv = a.H * W;
  a.hs_dk = a.hs_dv = W;
  a.ld_dkr = a.H * dr;
  a.hs_dkr = dr;
  launch_bwd_mma<96, 64>(a, B, st);
  check_launch("mla_attention_backward");
  return true;
}

// Whether mla_attention_backward is best called once for dQ and dK/dV (its dQ kernel reads the dS tiles its dK/dV
// kernel stores: dQ variant 7) rather than split by output over two streams. Declared by its caller (lib/ops/ops.cpp).
bool mla_attention_backward_one_call() { return ds_variants(); }

// Bench hooks (declared by their callers, not in cuda_ops.h): set the bf16 96/64 backward's dK/dV or dQ kernel
// variant (0 = mma.sync BwdDefault, DS_ATTN_DKDV_VARIANTS, DS_ATTN_DQ_VARIANTS, then the wgmma kernels: dK/dV 6, 7,
// dQ 5, 6, 7 (from dS); the default is dK/dV 6, dQ 7 with sm_90a, else 0) when 0 <= variant < their count, and return
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
// The same for the bf16 96/64 forward (0 = attn_fwd_mma_wide; 1, 2 = attn_fwd_wgmma with key tiles of
// 64, 128; 3, 4 = attn_fwd_wgmma_ovl, the same tiles; 5 = the overlapped one with Q in registers; 6 = 3 with TMA
// loads: sm_90a builds only, else refused).
int attention_bench_fwd_variant(int variant) {
  const int prev = g_fwd_variant;
  if (variant >= 0 && variant < kFwdVariants) g_fwd_variant = variant;
  return prev;
}

}  // namespace ds::cuda
