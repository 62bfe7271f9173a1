// Grouped expert linear (ops.h grouped_matmul_*): all experts in one launch, the row blocks read from the
// device-side offsets that moe_route wrote, so there is neither a per-expert host loop nor a host sync.
//
// bf16 operands with 16-byte rows run pipelined tensor-core kernels: d_weight always, and forward / d_in with more
// than 16 rows per expert on average (training), run the large-tile mma.sync kernel (big::grouped_gemm_big, below:
// 128 x 256 tiles, 8 warps, 4 cp.async stages; 64 x 128 tiles below 128 rows per expert); the forward with at most
// one row per expert on average (decode at batch <= E / top-k) runs a grouped GEMV (dec::grouped_gemv); forward
// up to 16 rows per expert and d_in at decode run the skinny WMMA kernel (grouped_gemm_pipelined, pipe::Skinny).
// Everything else (f32, misaligned or odd-width rows) runs one tiled kernel in three shapes (BM x BN output tiles,
// BK-deep k-steps through shared memory, 128 threads):
//   forward   out[r, :]  = in[r, :] · W_e^T     rows mode:   a tile's rows lie in one expert's row block
//   d_in      d_in[r, :] = d_out[r, :] · W_e    rows mode
//   d_weight  dW_e      += d_out_e^T · in_e      reduce mode: the k-loop runs over expert e's rows
// Rows mode numbers the m-tiles of all experts consecutively (expert e has ceil(rows_e / BM) of them); a block
// finds its expert with a block-wide scan of the offsets, and blocks past the last tile exit. The grid is sized
// on the host from the bound M / BM + E, so the host never reads the offsets.
//
// bf16: tensor cores (mma.sync m16n8k16 or WMMA 16x16x16, f32 accumulation), output rounded once. f32: CUDA
// cores (FFMA, f32 accumulation; no TF32, so the error stays at f32 level like the CPU's sgemm). Deterministic:
// every output element is reduced in a fixed order (the decode GEMV splits K over the 8 warps of a block and adds
// their partial sums in warp order; variant 9's d_weight splits a heavy expert's rows over blocks, tma:: SPLIT, and
// the last block to finish adds the chunks' sums in chunk order; its atomic counter only says which block is last).
// This file holds the launchers and the choice between kernels; each kernel family is a part in kernels/grouped_gemm/
// included below (tiled, pipelined, mma_sync, wgmma_cp_async, tma, gemv).
#include <cub/block/block_scan.cuh>
#include <cuda.h>  // CUtensorMap
#include <cuda_bf16.h>
#include <cuda_runtime.h>
#include <mma.h>

#include <algorithm>
#include <atomic>
#include <cstdint>
#include <cstdlib>
#include <map>
#include <mutex>
#include <string>
#include <type_traits>
#include <utility>

#include "kernels/attn_common.cuh"
#include "kernels/cuda_device.h"  // stream_scratch
#include "kernels/cuda_ops.h"
#include "kernels/moe_util.cuh"
#include "kernels/tensor_map.h"
#include "kernels/tma_copy.cuh"
#include "kernels/wgmma.cuh"

namespace ds::cuda {

using moe::from_f;
using moe::to_f;

namespace {

// The kernel families, one file each (moved out of this file verbatim, included in their old order).
#include "kernels/grouped_gemm/tiled.cuh"
#include "kernels/grouped_gemm/pipelined.cuh"
#include "kernels/grouped_gemm/mma_sync.cuh"
#include "kernels/grouped_gemm/wgmma_cp_async.cuh"
#include "kernels/grouped_gemm/tma.cuh"
#include "kernels/grouped_gemm/gemv.cuh"

// The warpgroup-MMA kernels exist in sm_90a builds (CMAKE_CUDA_ARCHITECTURES 90a, the default): kernels/CMakeLists.txt
// defines DS_CUDA_WGMMA there.
#ifdef DS_CUDA_WGMMA
constexpr bool kWgmma = true;
#else
constexpr bool kWgmma = false;
#endif

// Which tiles the bf16 training-shape products use: 0 = the previous kernels (WMMA 64 x 64 for forward / d_in,
// the synchronous tiled kernel for d_weight), 1 = mma.sync 128 x 128, 2 = mma.sync 128 x 256 (the default without
// sm_90a), 3 = wgmma 128 x 256, 4 = wgmma 128 x 128, 5 = wgmma on TMA loads with a producer warpgroup (tma::; what
// TMA cannot describe as 3), 6 = 5 with rows mode's bf16 write-back staged in shared memory (tma::store_staged;
// H200, ds-bench-grouped-gemm, TFLOP/s v5 -> v6: gate/up forward 442 -> 617, d_in 340 -> 548, down forward 340 ->
// 548, d_in 451 -> 622; 14th session, bench/gpu/SESSIONS.md), 7 = 6 with reduce mode's f32 accumulation staged
// too, 8 = 7 with reduce mode (d_weight) persistent under a dynamic tile scheduler (tma::'s DYN: the prologue once a
// block, the next tile's loads under this one's write-back; rows mode as 7; H200, 15th session: d_weight 390 -> 385
// TFLOP/s, training equal), 9 = 7 with reduce mode's staged sums added to C by the TMA unit (tma::'s TMAC: no thread
// waits on C's old values; the default with sm_90a since the 15th session: d_weight 395 -> 531 TFLOP/s uniform,
// 345 -> 350 skewed, training +1.6%; it also writes a d_weight over, empty experts' as zeros; since the 24th session
// it splits heavy experts' rows into chunks, tma:: SPLIT: skewed 343 -> ~450 TFLOP/s, uniform unchanged), 10 = 8
// with that (training 1% below 9). Set only by the benchmark (bench/gpu/bench_grouped_gemm.cu, through
// grouped_matmul_bench_variant) to compare them in one run, and at start-up by DS_GROUPED_GEMM_VARIANT (a benchmark
// knob for whole-program A/Bs such as bench/gpu/ab_train.sh; values the build lacks are ignored).
constexpr int kMaxVariant = kWgmma ? 10 : 2;
int g_big_variant = [] {
  const int def = kWgmma ? 9 : 2;
  const char* e = std::getenv("DS_GROUPED_GEMM_VARIANT");
  if (e == nullptr || *e == '\0') return def;
  char* end = nullptr;
  const long v = std::strtol(e, &end, 10);
  return *end == '\0' && v >= 0 && v <= kMaxVariant ? int(v) : def;
}();

// The bf16 forward at decode: 0 = the default (dec::grouped_gemv with 16 columns per block when M <=
// kDecodeRowsPerExpert * E, the host-side bound on the average rows per expert; pipe::Skinny up to 16 rows per
// expert), 1 = the previous paths (pipe::Skinny up to 16 rows per expert), 2 / 3 = the grouped GEMV with 16 / 32
// columns per block at any M. Set only by the benchmark and the parity test (grouped_matmul_bench_decode_variant).
// The bound, measured on the H200 (ds-bench-grouped-gemm decode section, E32, us per launch, 32 back-to-back
// launches on distinct weight copies; an empty kernel takes 6.0 us there, so the M 4 GEMV times are at that floor):
//                         M 4 (4 experts)   M 32 (22)   M 128 (31)   M 256 (32)   M 512 (32)
//   gate/up K1024 N512:  skinny   16.8          19.9        20.1         20.5         22.8
//                        GEMV      6.4          15.8        20.5         23.8         26.4   (32 cols: 20.3 at M 256)
//   down    K512 N1024:  skinny   10.4          15.4        15.9         18.3         20.8
//                        GEMV      6.5          18.0        23.3         26.0         29.7
// The GEMV's blocks carry 16-32 KB of weights each behind a fixed chain (offsets, loads, two barriers, reduction),
// which pays at batch 1 (few blocks: all their loads go out at once) but not once every expert is active, where
// the skinny kernel's longer-lived pipelined blocks stream better. At M = E the GEMV still wins on the layer (two
// gate/up-shaped products, one down). So: at most one row per expert on average.
int g_decode_variant = 0;
constexpr int64_t kDecodeRowsPerExpert = 1;

// Where reduce mode's tma:: launches record their jobs (grouped_matmul_bench_trace; null: nowhere, always outside
// the benchmark).
unsigned long long* g_job_trace = nullptr;

// Two adjacent output elements (n even) can be stored as one word: even row stride, C aligned to two elements.
bool aligned_c(const Tensor& c, int64_t ldc) {
  return ldc % 2 == 0 && reinterpret_cast<uintptr_t>(c.data) % (2 * moe::esize(c)) == 0;
}

template <bool KCONTIG, bool NCONTIG, bool REDUCE>
void launch_gemm(const Context& ctx, const char* op, const Tensor& ab_dtype, const Tensor& c_dtype, GemmArgs a) {
  unsigned gx = unsigned((a.Nd + BN - 1) / BN);
  dim3 grid;
  if (REDUCE) {
    grid = dim3(gx, unsigned((a.Md + BM - 1) / BM), unsigned(a.E));
  } else {
    a.ytiles = (a.M + BM - 1) / BM + a.E;
    grid = dim3(gx, unsigned(std::min<int64_t>(a.ytiles, 65535)), 1);
  }
  if (grid.x == 0 || grid.y == 0 || grid.z == 0) return;
  moe::dispatch_f32_bf16(ab_dtype, op, "in", [&](auto za) {
    using TA = decltype(za);
    moe::dispatch_f32_bf16(c_dtype, op, "out", [&](auto zc) {
      using TC = decltype(zc);
      launch(grouped_gemm_kernel<TA, TC, KCONTIG, NCONTIG, REDUCE>, grid, kThreads, 0, moe::stream_of(ctx), a);
    });
  });
  moe::launched(op);
}

// The grid of a tiled launch: rows mode (forward, d_in) over the m-tiles of all experts (sets a.ytiles), or reduce
// mode (d_weight) over (n-tile, m-tile, expert).
template <bool REDUCE> dim3 tile_grid(GemmArgs& a, int bm, int bn) {
  if (REDUCE) return dim3(unsigned((a.Nd + bn - 1) / bn), unsigned((a.Md + bm - 1) / bm), unsigned(a.E));
  a.ytiles = (a.M + bm - 1) / bm + a.E;
  return dim3(unsigned((a.Nd + bn - 1) / bn), unsigned(std::min<int64_t>(a.ytiles, 65535)), 1);
}

// One launch of the large-tile kernel (mma.sync).
template <class Cf, bool AKMAJOR, bool BKMAJOR, bool REDUCE>
void launch_big(const Context& ctx, const char* op, const Tensor& c_dtype, GemmArgs a) {
  const dim3 grid = tile_grid<REDUCE>(a, Cf::bm, Cf::bn);
  if (grid.x == 0 || grid.y == 0 || grid.z == 0) return;
  constexpr size_t smem = big::Smem<Cf, AKMAJOR, BKMAJOR>::bytes;
  moe::dispatch_f32_bf16(c_dtype, op, "out", [&](auto zc) {
    using TC = decltype(zc);
    auto* kernel = big::grouped_gemm_big<Cf, AKMAJOR, BKMAJOR, REDUCE, TC>;
    attn::allow_smem(kernel, smem);
    launch(kernel, grid, Cf::threads, smem, moe::stream_of(ctx), a);
  });
  moe::launched(op);
}

// One launch of the warpgroup-MMA kernel (wg::, sm_90a builds only: see kWgmma). Rows mode: persistent, a block an
// SM at most, each walking its share of the tiles (forward and d_in gained 1-4%, bench call 2). Reduce mode: a block
// a tile, as the hardware hands them out: a d_weight tile's length is its expert's row count, and a fixed share per
// block left the blocks holding a heavy expert's tiles running alone (skewed load 181 -> 160 TFLOP/s, call 2).
template <class Cf, bool AKMAJOR, bool BKMAJOR, bool REDUCE>
void launch_wgmma(const Context& ctx, const char* op, const Tensor& c_dtype, GemmArgs a) {
  const dim3 tg = tile_grid<REDUCE>(a, Cf::bm, Cf::bn);  // sets a.ytiles (rows mode)
  const int64_t tiles = int64_t(tg.x) * (REDUCE ? int64_t(tg.y) * tg.z : a.ytiles);
  if (tiles == 0) return;
  const dim3 grid(unsigned(REDUCE ? tiles : std::min<int64_t>(tiles, attn::num_sms())), 1, 1);
  moe::dispatch_f32_bf16(c_dtype, op, "out", [&](auto zc) {
    using TC = decltype(zc);
    auto* kernel = wg::grouped_gemm_wgmma<Cf, AKMAJOR, BKMAJOR, REDUCE, TC>;
    attn::allow_smem(kernel, Cf::smem);
    launch(kernel, grid, Cf::threads, Cf::smem, moe::stream_of(ctx), a);
  });
  moe::launched(op);
}

static_assert(tma::kBK * 2 == 128, "a k-tile is one 128-byte swizzle row: the operands' maps are encode_bf16_sw128's");

// Reduce mode's C for the TMA unit's adds (variants 9, 10): boxes of 64 rows x 32 f32, as tma::reduce_staged_tma
// stages them.
bool encode_f32_2d(CUtensorMap& map, const void* base, int64_t rows, int64_t cols, int64_t pitch) {
  return encode_sw128_2d(map, CU_TENSOR_MAP_DATA_TYPE_FLOAT32, 4, base, rows, cols, pitch, 64);
}

// Counters a (device, stream), so that launches on concurrent streams never share them: kStreamCounters unsigned,
// zeroed once when allocated (first use outside a capture; never freed: captured graphs hold the address). Element 0
// is variant 8's tile counter (tma:: DYN; the launcher zeroes it before each launch), 1 on SPLIT's (each launch
// leaves them zero). Null when a capture finds none yet (the caller runs the product without them).
constexpr int64_t kStreamCounters = int64_t(1) << 16;
unsigned* stream_counters(cudaStream_t st, const char* op) {
  static std::mutex mu;
  static std::map<std::pair<int, cudaStream_t>, unsigned*> counters;
  const int dev = attn::current_device();
  std::lock_guard<std::mutex> lock(mu);
  unsigned*& p = counters[{dev, st}];
  if (p == nullptr) {
    cudaStreamCaptureStatus cs = cudaStreamCaptureStatusNone;
    if (cudaStreamIsCapturing(st, &cs) != cudaSuccess || cs != cudaStreamCaptureStatusNone) {
      (void)cudaGetLastError();  // e.g. the legacy stream while another stream captures: as capturing
      return nullptr;
    }
    const size_t bytes = size_t(kStreamCounters) * sizeof(unsigned);
    moe::ok(cudaMalloc(&p, bytes), op, "cudaMalloc (stream counters)");
    moe::ok(cudaMemsetAsync(p, 0, bytes, st), op, "memset (stream counters)");
  }
  return p;
}

// Variant 9's split of heavy experts' d_weight (tma:: SPLIT): on by default; DS_GROUPED_SPLIT=0 at start-up (a knob
// for A/Bs) or the test hook (grouped_matmul_test_split_kt) turns it off, the hook also sets the chunk length.
// g_split_kt: -2 until the environment is read, -1 automatic, 0 off, > 0 the chunk length in k-tiles.
std::atomic<int> g_split_kt{-2};
int split_setting() {
  int v = g_split_kt.load(std::memory_order_relaxed);
  if (v == -2) {
    v = env_switch("DS_GROUPED_SPLIT") ? -1 : 0;
    g_split_kt.store(v, std::memory_order_relaxed);
  }
  return v;
}

// SPLIT's plan for a d_weight launch of tpc tiles an expert: chunks of at most an SM's share of the product's k-tiles
// (at least 16: the bench model's uniform load, 32 an expert, stays whole; half a share until the 30th session, when
// the training's loads, two to four experts of ~16,000 rows a layer, ran 0.156-0.184 ms a launch at half a share and
// 0.144-0.173 at a whole one: fewer chunks, less for the last chunk to add), a workspace for the most chunks
// the split experts can have (each has more than kt k-tiles, so at most 2 K / kt chunks of K k-tiles in all) and the
// counters. kt 0: unsplit (off, too many experts for the kernel's tables, tiles not all whole (the last chunk writes
// back by TMA only), a capture without the scratch, too few counters).
// The workspace is stream_scratch's (kept per stream: 24th session, a build that allocated it stream-ordered each
// launch, and ran the split's scans in every launch, took ~0.13 ms longer a d_weight launch on the H200).
struct SplitPlan {
  int64_t kt = 0;
  float* ws = nullptr;
  unsigned* cnt = nullptr;
};
SplitPlan plan_split(const GemmArgs& a, cudaStream_t st, const char* op, int64_t tpc) {
  SplitPlan p;
  const int set = split_setting();
  if (set == 0 || a.E > tma::kMaxSplitExperts || a.Md % tma::kBM != 0 || a.Nd % tma::kBN != 0 || a.ldc % 4 != 0)
    return p;
  const int64_t sms = attn::num_sms(), K = (a.M + 63 * int64_t(a.E)) / 64;  // the experts' k-tiles, at most
  const int64_t kt = set > 0 ? set : std::max<int64_t>(16, (tpc * K + sms - 1) / sms);
  if ((K / kt + 1) * tpc * 2 > kStreamCounters - 1) return p;
  unsigned* const cnt = stream_counters(st, op);
  const size_t want = size_t(2 * K / kt + 1) * size_t(tpc) * 2 * tma::kSplitSlotFloats * sizeof(float);
  size_t have = 0;
  void* const ws = cnt ? stream_scratch(st, ScratchUse::grouped_split, want, have) : nullptr;
  if (ws == nullptr || have < want) return p;  // a capture without the scratch
  p.kt = kt;
  p.ws = static_cast<float*>(ws);
  p.cnt = cnt + 1;
  return p;
}

// Variants 5-8 (tma::grouped_gemm_tma; 6: STAGE, the write-back through shared memory, for rows mode's bf16 outputs
// with a 16-byte aligned C; 7: also reduce mode's f32 accumulation, with 16-byte aligned experts; 8: 7 with the staged
// reduce mode under DYN): false leaves the product to the caller (what TMA or the kernel's int32 coordinates cannot
// describe). Rows mode persistent, a block an SM; reduce mode a block a tile, the heavy experts' tiles first (see
// wg::'s launch for why not a fixed share per block), or (8) persistent with the tiles handed out in that order by a
// counter, zeroed by a memset on the stream right before the launch (stream-ordered, capturable).
template <bool AKMAJOR, bool BKMAJOR, bool REDUCE>
bool launch_tma(int variant, const Context& ctx, const char* op, const Tensor& c_dtype, GemmArgs a) {
  if constexpr (REDUCE ? AKMAJOR || BKMAJOR : !AKMAJOR) {
    return false;
  } else {
    if (!kWgmma || a.E > tma::kMaxExperts || a.Nd < 1 || (!REDUCE && a.Kd < 1) || (REDUCE && a.Md < 1))
      return false;
    const int64_t lim = int64_t(1) << 31;  // the kernel's coordinates and tile numbers are int32
    CUtensorMap map_a, map_b, map_a2, map_b2, map_c = {};
    bool ok;
    if constexpr (REDUCE) {  // A = d_out [M, Md] read as (r, m), B = in [M, Nd] read as (r, n): 64 x 64 boxes
      ok = a.lda_m == 1 && a.ldb_n == 1 && a.M < lim && a.Md < lim && a.Nd < lim &&
           encode_bf16_sw128(map_a, a.A, a.M, a.Md, a.lda_k * 2, 64) &&
           encode_bf16_sw128(map_b, a.B, a.M, a.Nd, a.ldb_k * 2, 64);
    } else if constexpr (BKMAJOR) {  // forward: B = W [E N, K]
      ok = a.lda_k == 1 && a.ldb_k == 1 && a.b_estride == a.Nd * a.ldb_n && a.M < lim && a.Kd < lim &&
           int64_t(a.E) * a.Nd < lim && encode_bf16_sw128(map_a, a.A, a.M, a.Kd, a.lda_m * 2, tma::kBM) &&
           encode_bf16_sw128(map_b, a.B, int64_t(a.E) * a.Nd, a.Kd, a.ldb_n * 2, tma::kBN);
    } else {  // d_in: B = W [E K, N] read as (k, n), 64 x 64 boxes; with k_split two such products summed
      const int64_t k1 = a.k_split > 0 ? a.k_split : a.Kd, k2 = a.Kd - k1;
      ok = a.lda_k == 1 && a.ldb_n == 1 && a.b_estride == k1 * a.ldb_k && a.M < lim && a.Nd < lim &&
           int64_t(a.E) * k1 < lim && encode_bf16_sw128(map_a, a.A, a.M, k1, a.lda_m * 2, tma::kBM) &&
           encode_bf16_sw128(map_b, a.B, int64_t(a.E) * k1, a.Nd, a.ldb_k * 2, 64);
      if (ok && a.k_split > 0)  // the second product: its own K (k2), A2 and B2 laid out as A and B
        ok = k1 % tma::kBK == 0 && k2 > 0 && int64_t(a.E) * k2 < lim &&
             encode_bf16_sw128(map_a2, a.A2, a.M, k2, a.lda_m * 2, tma::kBM) &&
             encode_bf16_sw128(map_b2, a.B2, int64_t(a.E) * k2, a.Nd, a.ldb_k * 2, 64);
    }
    if (!ok) return false;
    if (REDUCE || a.k_split == 0) map_a2 = map_a, map_b2 = map_b;
    if (REDUCE) a.job_trace = g_job_trace;
    bool tmac = false;  // 9, 10: C as [E Md, Nd] f32 for the TMA unit (64 rows x 32 columns, the staging's swizzle)
    if constexpr (REDUCE) {
      tmac = variant >= 9 && c_dtype.dtype == DType::f32 && is_aligned16(a.C) && a.c_estride % 4 == 0 &&
             a.c_estride == a.Md * a.ldc && int64_t(a.E) * a.Md < lim &&
             encode_f32_2d(map_c, a.C, int64_t(a.E) * a.Md, a.Nd, a.ldc * 4);
      // Written over (accumulate 0): only variant 9's kernel writes every tile (the empty experts' as zeros).
      if (!a.accumulate && !(tmac && variant == 9)) return false;
    }
    const dim3 tg = tile_grid<REDUCE>(a, tma::kBM, tma::kBN);  // rows mode: sets a.ytiles (a bound; the kernel counts)
    const int64_t tiles = int64_t(tg.x) * (REDUCE ? int64_t(tg.y) * tg.z : a.ytiles);
    if (tiles == 0) return true;
    if (REDUCE && tiles >= lim) return false;
    const int64_t sms = attn::num_sms();
    const dim3 grid(unsigned(REDUCE ? tiles : std::min<int64_t>(tiles, sms)), 1, 1);
    cudaStream_t st = moe::stream_of(ctx);
    moe::dispatch_f32_bf16(c_dtype, op, "out", [&](auto zc) {
      using TC = decltype(zc);
      auto go = [&](auto* kernel, size_t smem, dim3 g, unsigned* counter) {
        attn::allow_smem(kernel, smem);
        launch(kernel, g, tma::kThreads, smem, st, a, map_a, map_b, map_a2, map_b2, map_c, counter);
      };
      if constexpr (std::is_same_v<TC, std::conditional_t<REDUCE, float, bf16_t>>) {
        // Reduce mode's staged write-back adds (store_staged tests only rows mode's accumulate flag), or with TMAC
        // adds or writes over.
        const bool stage = REDUCE ? variant >= 7 && a.c_estride % 4 == 0 && (a.accumulate != 0 || tmac) : variant >= 6;
        if (stage && is_aligned16(a.C)) {
          if constexpr (REDUCE) {
            unsigned* counter = variant == 8 || variant == 10 ? stream_counters(st, op) : nullptr;
            if (counter) {
              moe::ok(cudaMemsetAsync(counter, 0, sizeof(unsigned), st), op, "memset (tile counter)");
              const dim3 pg(unsigned(std::min(tiles, sms)), 1, 1);
              if (tmac)
                return go(tma::grouped_gemm_tma<AKMAJOR, BKMAJOR, REDUCE, TC, true, true, true>,
                          tma::smem_bytes(a.E, true), pg, counter);
              return go(tma::grouped_gemm_tma<AKMAJOR, BKMAJOR, REDUCE, TC, true, true>, tma::smem_bytes(a.E, true),
                        pg, counter);
            }
            if (tmac) {  // variant 9; SPLIT where plan_split says (the grid walks the jobs past E tiles)
              const SplitPlan sp = plan_split(a, st, op, int64_t(tg.x) * tg.y);
              a.split_kt = sp.kt;
              a.split_ws = sp.ws;
              a.split_cnt = sp.cnt;
              if (g_job_trace)  // the benchmark's job trace (grouped_matmul_bench_trace)
                return go(tma::grouped_gemm_tma<AKMAJOR, BKMAJOR, REDUCE, TC, true, false, true, false, false, true>,
                          tma::smem_bytes(a.E, true, sp.kt > 0), grid, nullptr);
              return go(tma::grouped_gemm_tma<AKMAJOR, BKMAJOR, REDUCE, TC, true, false, true>,
                        tma::smem_bytes(a.E, true, sp.kt > 0), grid, nullptr);
            }
          }
          return go(tma::grouped_gemm_tma<AKMAJOR, BKMAJOR, REDUCE, TC, true>, tma::smem_bytes(a.E, true), grid,
                    nullptr);
        }
      }
      go(tma::grouped_gemm_tma<AKMAJOR, BKMAJOR, REDUCE, TC>, tma::smem_bytes(a.E), grid, nullptr);
    });
    moe::launched(op);
    return true;
  }
}

// One persistent rows-mode tma:: launch with the staged write-back (the fused SwiGLU kernels): a block an SM at most
// over `tiles` tiles; the second product's A map is map_a (no k_split), its B map map_b2.
template <class Kernel>
void launch_rows_staged(Kernel* kernel, const Context& ctx, const char* op, const GemmArgs& a, int64_t tiles,
                        const CUtensorMap& map_a, const CUtensorMap& map_b, const CUtensorMap& map_b2) {
  const dim3 grid(unsigned(std::min<int64_t>(tiles, attn::num_sms())), 1, 1);
  const size_t smem = tma::smem_bytes(a.E, true);
  attn::allow_smem(kernel, smem);
  const CUtensorMap unused = {};
  launch(kernel, grid, tma::kThreads, smem, moe::stream_of(ctx), a, map_a, map_b, map_a, map_b2, unused,
         static_cast<unsigned*>(nullptr));
  moe::launched(op);
}

// launch_dswiglu_tma's switch: DS_GROUPED_DSWIGLU=1 at start-up, or the parity test's hook
// (grouped_matmul_test_dswiglu); g_dswiglu is -1 until the environment is read.
std::atomic<int> g_dswiglu{-1};
bool dswiglu_enabled() {
  int v = g_dswiglu.load(std::memory_order_relaxed);
  if (v < 0) {
    const char* e = std::getenv("DS_GROUPED_DSWIGLU");
    v = e != nullptr && std::string(e) == "1";
    g_dswiglu.store(v, std::memory_order_relaxed);
  }
  return v == 1;
}

// The routed experts' gate and up products and their SwiGLU in one launch (tma:: SWIGLU, variants 6-10 with 128+
// rows per expert on average, bf16, 16-byte rows and outputs): a tile's B is 128 rows of gate_w over the same 128 of
// up_w, so each thread holds both products of its output columns; C = act, a.C_gate / a.C_up the kept products (or
// null). False leaves the product to the caller. DS_GROUPED_SWIGLU=0 (a start-up knob for A/Bs) turns it off.
bool launch_swiglu_tma(const Context& ctx, const char* op, const Tensor& out, const Tensor& in, const Tensor& gate_w,
                       const Tensor& up_w, GemmArgs a) {
  static const bool enabled = env_switch("DS_GROUPED_SWIGLU");
  const int64_t lim = int64_t(1) << 31, F = a.Nd;
  const bool aligned = is_aligned16(a.C) && (a.C_gate == nullptr || is_aligned16(a.C_gate)) &&
                       (a.C_up == nullptr || is_aligned16(a.C_up)) && F % 8 == 0;
  if (!enabled || !kWgmma || g_big_variant < 6 || in.dtype != DType::bf16 || gate_w.dtype != DType::bf16 ||
      up_w.dtype != DType::bf16 || out.dtype != DType::bf16 || !aligned || a.E > tma::kMaxExperts ||
      a.M < 128 * int64_t(a.E) || a.Kd < 1 || F < 1 || a.M >= lim || a.Kd >= lim || int64_t(a.E) * F >= lim)
    return false;
  CUtensorMap map_a, map_b, map_b2;
  if (!(a.lda_k == 1 && a.ldb_k == 1 && a.b_estride == F * a.ldb_n &&
        encode_bf16_sw128(map_a, a.A, a.M, a.Kd, a.lda_m * 2, tma::kBM) &&
        encode_bf16_sw128(map_b, gate_w.data, int64_t(a.E) * F, a.Kd, a.ldb_n * 2, tma::kBN / 2) &&
        encode_bf16_sw128(map_b2, up_w.data, int64_t(a.E) * F, a.Kd, a.ldb_n * 2, tma::kBN / 2)))
    return false;
  const dim3 tg = tile_grid<false>(a, tma::kBM, tma::kBN / 2);  // sets a.ytiles (a bound; the kernel counts)
  launch_rows_staged(tma::grouped_gemm_tma<true, true, false, bf16_t, true, false, false, true>, ctx, op, a,
                     int64_t(tg.x) * a.ytiles, map_a, map_b, map_b2);
  return true;
}

// The routed experts' down-product d_in and the SwiGLU backward in one launch (tma:: DSWIGLU, variants 6-10 with 128+
// rows per expert on average, bf16, 16-byte aligned outputs and products, F % 8 == 0): a from d_in_args with C =
// d_gate, a.C_up = d_up and a.G_in / a.U_in the forward's gate and up products. False leaves it to the caller.
// Off unless DS_GROUPED_DSWIGLU=1 (a start-up knob): on the H200 (23rd session) its bits are the unfused sequence's
// but training ran 2% slower (296.9k / 297.1k tok/s against 301.8k / 304.7k). The epilogue moves four times the
// unfused one's bytes (gate and up in, d_gate and d_up out) while both consumer warpgroups wait on it, each chunk's
// loads a round trip with nothing else in flight, and the producer's ring holds only 4 of the next tile's 16
// k-tiles: the SwiGLU pass's HBM time moved into the product instead of beside it. It would need the epilogue to
// overlap products (consumer warpgroups taking turns); at best ~45 us a layer (the d_act round trip) to gain.
bool launch_dswiglu_tma(const Context& ctx, const char* op, GemmArgs a) {
  const int64_t lim = int64_t(1) << 31, F = a.Nd;
  const bool aligned = is_aligned16(a.C) && is_aligned16(a.C_up) && is_aligned16(a.G_in) && is_aligned16(a.U_in) &&
                       F % 8 == 0;
  if (!dswiglu_enabled() || !kWgmma || g_big_variant < 6 || !aligned || a.E > tma::kMaxExperts ||
      a.M < 128 * int64_t(a.E) || a.Kd < 1 || F < 1 || a.M >= lim || F >= lim || int64_t(a.E) * a.Kd >= lim)
    return false;
  CUtensorMap map_a, map_b;  // as launch_tma's d_in: A = d_out [M, K], B = W [E K, N] read as (k, n) in 64 x 64 boxes
  if (!(a.lda_k == 1 && a.ldb_n == 1 && a.b_estride == a.Kd * a.ldb_k &&
        encode_bf16_sw128(map_a, a.A, a.M, a.Kd, a.lda_m * 2, tma::kBM) &&
        encode_bf16_sw128(map_b, a.B, int64_t(a.E) * a.Kd, F, a.ldb_k * 2, 64)))
    return false;
  const dim3 tg = tile_grid<false>(a, tma::kBM, tma::kBN);  // sets a.ytiles (a bound; the kernel counts)
  const int64_t tiles = int64_t(tg.x) * a.ytiles;
  if (tiles == 0) return true;
  launch_rows_staged(tma::grouped_gemm_tma<true, false, false, bf16_t, true, false, false, false, true>, ctx, op, a,
                     tiles, map_a, map_b, map_b);
  return true;
}

// The configuration g_big_variant names (rows mode with fewer than 128 rows per expert on average: big::Mid).
template <bool AKMAJOR, bool BKMAJOR, bool REDUCE>
void launch_big_variant(const Context& ctx, const char* op, const Tensor& c_dtype, const GemmArgs& a) {
  if (!REDUCE && a.M < 128 * int64_t(a.E))
    return launch_big<big::Mid, AKMAJOR, BKMAJOR, REDUCE>(ctx, op, c_dtype, a);
  switch (kWgmma ? g_big_variant : std::min(g_big_variant, 2)) {
    case 1: return launch_big<big::T128x128, AKMAJOR, BKMAJOR, REDUCE>(ctx, op, c_dtype, a);
    case 2: return launch_big<big::T128x256, AKMAJOR, BKMAJOR, REDUCE>(ctx, op, c_dtype, a);
    case 4: return launch_wgmma<wg::N128, AKMAJOR, BKMAJOR, REDUCE>(ctx, op, c_dtype, a);
    case 5:  // tma::; what TMA cannot describe on variant 3's kernel
    case 6:  // the same with the staged write-back (6: rows mode, 7: both modes)
    case 7:
    case 8:  // 7 with reduce mode under the dynamic tile scheduler
    case 9:  // 7 with reduce mode's adds by the TMA unit
    case 10:  // 8 with them
      if (launch_tma<AKMAJOR, BKMAJOR, REDUCE>(g_big_variant, ctx, op, c_dtype, a)) return;
      return launch_wgmma<wg::N256, AKMAJOR, BKMAJOR, REDUCE>(ctx, op, c_dtype, a);
    default: return launch_wgmma<wg::N256, AKMAJOR, BKMAJOR, REDUCE>(ctx, op, c_dtype, a);
  }
}

// The grouped GEMV (dec::grouped_gemv) with 16 MT columns per block (16 for a SwiGLU pair): one pass per expert up
// to 32 rows.
template <int MT, bool PAIR = false>
void launch_decode(const Context& ctx, const char* op, const Tensor& c_dtype, const GemmArgs& a) {
  const int max_rows = int(std::min<int64_t>(dec::kMaxRows, (a.M + 7) / 8 * 8));
  const int64_t slots = std::min<int64_t>(a.E, a.M);  // experts with rows, at most
  const int cols = PAIR ? 16 : 16 * MT;
  const dim3 grid(unsigned((a.Nd + cols - 1) / cols), unsigned(std::min<int64_t>(slots, 65535)), 1);
  if (grid.x == 0 || grid.y == 0) return;
  moe::dispatch_f32_bf16(c_dtype, op, "out", [&](auto zc) {
    using TC = decltype(zc);
    auto* kernel = dec::grouped_gemv<MT, TC, PAIR>;
    attn::allow_smem(kernel, dec::smem_bytes(dec::kMaxRows));
    launch(kernel, grid, dec::kThreads, dec::smem_bytes(max_rows), moe::stream_of(ctx), a, max_rows);
  });
  moe::launched(op);
}

// The pipelined kernel when its alignment contract holds (bf16 operands); false leaves the work to launch_gemm().
template <bool BKMAJOR>
bool launch_pipelined(const Context& ctx, const char* op, const Tensor& ab_dtype, const Tensor& c_dtype, GemmArgs a) {
  if (ab_dtype.dtype != DType::bf16 || !a.vec_a || !a.vec_b || a.Kd % 8 != 0 || (!BKMAJOR && a.Nd % 8 != 0))
    return false;
  // Rows per expert, on average, from the host-side bound (the offsets stay on the device).
  const bool skinny = a.M <= 16 * int64_t(a.E);
  auto go = [&](auto shape) {
    using G = decltype(shape);
    a.ytiles = (a.M + G::tm - 1) / G::tm + a.E;
    const dim3 grid(unsigned((a.Nd + G::bn - 1) / G::bn), unsigned(std::min<int64_t>(a.ytiles, 65535)), 1);
    if (grid.x == 0 || grid.y == 0) return;
    moe::dispatch_f32_bf16(c_dtype, op, "out", [&](auto zc) {
      using TC = decltype(zc);
      launch(grouped_gemm_pipelined<TC, G, BKMAJOR>, grid, kThreads, 0, moe::stream_of(ctx), a);
    });
    moe::launched(op);
  };
  // Forward at batch-1-like decode: the grouped GEMV (K % 8 == 0 and 16-byte aligned rows hold here; N is free).
  const bool decode = g_decode_variant >= 2 || (g_decode_variant == 0 && a.M <= kDecodeRowsPerExpert * int64_t(a.E));
  if (BKMAJOR && decode) {
    if (g_decode_variant == 3) launch_decode<2>(ctx, op, c_dtype, a);
    else launch_decode<1>(ctx, op, c_dtype, a);
    return true;
  }
  if (skinny) go(pipe::Skinny{});
  else if (g_big_variant == 0) go(pipe::Wide{});
  else launch_big_variant<true, BKMAJOR, false>(ctx, op, c_dtype, a);
  return true;
}
}  // namespace

// Benchmark hook (see g_big_variant; declared by its callers, not in cuda_ops.h): sets the variant when
// 0 <= variant <= kMaxVariant and returns the previous one. Not thread-safe: only for a single-threaded
// benchmark or test.
int grouped_matmul_bench_variant(int variant) {
  const int prev = g_big_variant;
  if (variant >= 0 && variant <= kMaxVariant) g_big_variant = variant;
  return prev;
}

// Benchmark hook: reduce mode's tma:: launches record their jobs into buf (tma::kJobTraceWords words a job, see
// tma::trace_flush; null stops). Not thread-safe: only for a single-threaded benchmark.
void grouped_matmul_bench_trace(unsigned long long* buf) { g_job_trace = buf; }

// Test hook for d_weight's split of heavy experts (plan_split): kt > 0 chunks of at most kt k-tiles, 0 off, -1
// automatic (the default); returns the previous setting.
int grouped_matmul_test_split_kt(int kt) {
  const int prev = split_setting();
  g_split_kt.store(kt < 0 ? -1 : kt, std::memory_order_relaxed);
  return prev;
}

// Test hook for the fused SwiGLU backward (launch_dswiglu_tma): on 1 turns it on, 0 off; returns the previous state.
int grouped_matmul_test_dswiglu(int on) {
  const int prev = dswiglu_enabled() ? 1 : 0;
  g_dswiglu.store(on ? 1 : 0, std::memory_order_relaxed);
  return prev;
}

// Benchmark hook for the decode path (see g_decode_variant): sets it when 0 <= variant <= 3 and returns the
// previous one. Not thread-safe: only for a single-threaded benchmark.
int grouped_matmul_bench_decode_variant(int variant) {
  const int prev = g_decode_variant;
  if (variant >= 0 && variant <= 3) g_decode_variant = variant;
  return prev;
}

namespace {
// The forward's arguments: out[M, N] (=|+=) in[M, K] · weight[e]^T over the row blocks of offsets.
GemmArgs forward_args(const Tensor& out, const Tensor& in, const Tensor& weight, const Tensor& offsets, Accum acc) {
  const int64_t M = moe::rows(in), K = moe::cols(in), E = weight.shape[0], N = weight.shape[1];
  const int64_t es = moe::esize(in);
  GemmArgs a{};
  a.A = in.data;
  a.B = weight.data;
  a.C = out.data;
  a.off = static_cast<const int64_t*>(offsets.data);
  a.E = int(E);
  a.M = M;
  a.Nd = N;
  a.Kd = K;
  a.lda_m = K;
  a.lda_k = 1;
  a.ldb_k = 1;
  a.ldb_n = K;
  a.ldc = N;
  a.b_estride = N * K;
  a.accumulate = acc == Accum::add;
  a.vec_a = is_aligned16(in.data) && (K * es) % 16 == 0;
  a.vec_b = is_aligned16(weight.data) && (K * es) % 16 == 0;
  a.vec_c = aligned_c(out, N);
  return a;
}

// d_in's arguments: d_in[M, K] (=|+=) d_out[M, N] · weight[e] (A = d_out, k = N; B_e(k, n) = W_e[k, n]).
GemmArgs d_in_args(const Tensor& d_in, const Tensor& d_out, const Tensor& weight, const Tensor& offsets, Accum acc) {
  const int64_t M = moe::rows(d_out), N = moe::cols(d_out), K = weight.shape[2];
  const int64_t es = moe::esize(d_out);
  GemmArgs a{};
  a.A = d_out.data;
  a.B = weight.data;
  a.C = d_in.data;
  a.off = static_cast<const int64_t*>(offsets.data);
  a.E = int(weight.shape[0]);
  a.M = M;
  a.Nd = K;
  a.Kd = N;
  a.lda_m = N;
  a.lda_k = 1;
  a.ldb_k = K;
  a.ldb_n = 1;
  a.ldc = K;
  a.b_estride = N * K;
  a.accumulate = acc == Accum::add;
  a.vec_a = is_aligned16(d_out.data) && (N * es) % 16 == 0;
  a.vec_b = is_aligned16(weight.data) && (K * es) % 16 == 0;
  a.vec_c = aligned_c(d_in, K);
  return a;
}
}  // namespace

void grouped_matmul_forward(const Context& ctx, Tensor out, Tensor in, Tensor weight, Tensor offsets, Accum acc,
                            Inputs offsets_written) {
  const char* op = "grouped_matmul_forward";
  const int64_t M = moe::rows(in), K = moe::cols(in), E = weight.shape[0], N = weight.shape[1];
  if (M == 0 || N == 0 || E == 0) return;
  moe::set_device(ctx, op);
  GemmArgs a = forward_args(out, in, weight, offsets, acc);
  a.off_settled = offsets_written == Inputs::settled;
  if (K == 0) {  // an empty product: out = 0 (or unchanged)
    if (acc == Accum::overwrite) moe::ok(cudaMemsetAsync(out.data, 0, size_t(M * N * moe::esize(out)), moe::stream_of(ctx)), op, "memset");
    return;
  }
  if (!launch_pipelined<true>(ctx, op, in, out, a)) launch_gemm<true, false, false>(ctx, op, in, out, a);
}

// Decode (at most one row per expert on average, bf16, 16-byte rows): one grouped GEMV over both weights with the
// SwiGLU in its epilogue. Training and prefill shapes (128+ rows per expert on average, bf16): the TMA kernel with
// both products in a tile and the SwiGLU in its epilogue (launch_swiglu_tma). Otherwise the unfused sequence, the
// products in gate_out / up_out or on stream-ordered scratch.
void grouped_swiglu_forward(const Context& ctx, Tensor out, Tensor in, Tensor gate_w, Tensor up_w, Tensor offsets,
                            Tensor gate_out, Tensor up_out) {
  const char* op = "grouped_swiglu_forward";
  const int64_t M = moe::rows(in), K = moe::cols(in), E = gate_w.shape[0], F = gate_w.shape[1];
  if (M == 0 || F == 0 || E == 0) return;
  moe::set_device(ctx, op);
  const int64_t es = moe::esize(in);
  const bool pair = in.dtype == DType::bf16 && gate_w.dtype == DType::bf16 && K > 0 && K % 8 == 0 &&
                    is_aligned16(in.data) && is_aligned16(gate_w.data) && is_aligned16(up_w.data) &&
                    (K * es) % 16 == 0 &&
                    g_decode_variant == 0 && M <= kDecodeRowsPerExpert * E;
  GemmArgs a = forward_args(out, in, gate_w, offsets, Accum::overwrite);
  if (pair && gate_out.empty() && up_out.empty()) {
    a.B2 = up_w.data;
    launch_decode<2, true>(ctx, op, out, a);
    return;
  }
  a.C_gate = gate_out.empty() ? nullptr : gate_out.data;
  a.C_up = up_out.empty() ? nullptr : up_out.data;
  if (launch_swiglu_tma(ctx, op, out, in, gate_w, up_w, a)) return;
  cudaStream_t st = moe::stream_of(ctx);
  const size_t bytes = size_t(M * F) * dtype_size(out.dtype);
  TempBuffer g(gate_out.empty() ? bytes : 0, st), u(up_out.empty() ? bytes : 0, st);
  const Tensor gt = gate_out.empty() ? Tensor(g.get(), out.dtype, {M, F}, out.device) : gate_out;
  const Tensor ut = up_out.empty() ? Tensor(u.get(), out.dtype, {M, F}, out.device) : up_out;
  cuda::grouped_matmul_forward(ctx, gt, in, gate_w, offsets, Accum::overwrite, Inputs::fresh);
  cuda::grouped_matmul_forward(ctx, ut, in, up_w, offsets, Accum::overwrite, Inputs::fresh);
  cuda::swiglu_forward(ctx, out, gt, ut);
}

// With DS_GROUPED_DSWIGLU=1 at training shapes (128+ rows per expert on average, bf16): the TMA kernel with the
// SwiGLU backward in its epilogue (launch_dswiglu_tma). Otherwise (the default) the d_in on stream-ordered scratch,
// then swiglu_backward: the same bits.
void grouped_matmul_swiglu_backward(const Context& ctx, Tensor d_gate, Tensor d_up, Tensor d_out, Tensor weight,
                                    Tensor offsets, Tensor gate, Tensor up) {
  const char* op = "grouped_matmul_swiglu_backward";
  const int64_t M = moe::rows(d_out), E = weight.shape[0], F = weight.shape[2];
  if (M == 0 || F == 0 || E == 0) return;
  moe::set_device(ctx, op);
  const bool bf16 = d_out.dtype == DType::bf16 && weight.dtype == DType::bf16 && gate.dtype == DType::bf16 &&
                    d_gate.dtype == DType::bf16;
  if (bf16) {
    GemmArgs a = d_in_args(d_gate, d_out, weight, offsets, Accum::overwrite);
    a.C_up = d_up.data;
    a.G_in = gate.data;
    a.U_in = up.data;
    if (launch_dswiglu_tma(ctx, op, a)) return;
  }
  TempBuffer t(size_t(M * F) * dtype_size(d_gate.dtype), moe::stream_of(ctx));
  const Tensor d_act(t.get(), d_gate.dtype, {M, F}, d_gate.device);
  cuda::grouped_matmul_backward(ctx, d_act, Tensor{}, d_out, Tensor{}, weight, offsets, Accum::overwrite,
                                Accum::add);
  cuda::swiglu_backward(ctx, d_gate, d_up, d_act, gate, up);
}

void grouped_matmul_backward(const Context& ctx, Tensor d_in, Tensor d_weight, Tensor d_out, Tensor in, Tensor weight,
                             Tensor offsets, Accum acc_in, Accum acc_w) {
  const char* op = "grouped_matmul_backward";
  const int64_t M = moe::rows(d_out), N = moe::cols(d_out), E = weight.shape[0], K = weight.shape[2];
  if (E == 0 || K == 0) return;
  moe::set_device(ctx, op);
  if (M == 0) {  // no rows: nothing to add; a written-over d_weight is zero
    if (!d_weight.empty() && acc_w == Accum::overwrite)
      moe::ok(cudaMemsetAsync(d_weight.data, 0, size_t(d_weight.numel()) * moe::esize(d_weight), moe::stream_of(ctx)),
              op, "memset");
    return;
  }
  const int64_t es = moe::esize(d_out);
  const auto* off = static_cast<const int64_t*>(offsets.data);
  if (!d_in.empty()) {  // d_in[r] = d_out[r] · W_e: A = d_out [M, N] (k = N), B_e(k, n) = W_e[k, n]
    if (N == 0) {
      if (acc_in == Accum::overwrite)
        moe::ok(cudaMemsetAsync(d_in.data, 0, size_t(M * K * moe::esize(d_in)), moe::stream_of(ctx)), op, "memset");
    } else {
      const GemmArgs a = d_in_args(d_in, d_out, weight, offsets, acc_in);
      if (!launch_pipelined<false>(ctx, op, d_out, d_in, a)) launch_gemm<true, true, false>(ctx, op, d_out, d_in, a);
    }
  }
  if (!d_weight.empty() && N > 0) {  // dW_e[n, k] += sum_r d_out[r, n] in[r, k]: A(m = n, k = r), B(k = r, n = k)
    GemmArgs a{};
    a.A = d_out.data;
    a.B = in.data;
    a.C = d_weight.data;
    a.off = off;
    a.E = int(E);
    a.M = M;
    a.Md = N;
    a.Nd = K;
    a.lda_m = 1;
    a.lda_k = N;
    a.ldb_k = K;
    a.ldb_n = 1;
    a.ldc = K;
    a.c_estride = N * K;
    a.accumulate = 1;
    a.vec_a = is_aligned16(d_out.data) && (N * es) % 16 == 0;
    a.vec_b = is_aligned16(in.data) && (K * es) % 16 == 0;
    a.vec_c = aligned_c(d_weight, K);
    const bool big = d_out.dtype == DType::bf16 && a.vec_a && a.vec_b && g_big_variant != 0;
    if (acc_w == Accum::overwrite) {
      // Written over: variant 9's TMA stores write every tile, empty experts' as zeros; the other kernels add
      // onto a zeroed d_weight.
      GemmArgs w = a;
      w.accumulate = 0;
      if (big && kWgmma && g_big_variant == 9 && launch_tma<false, false, true>(9, ctx, op, d_weight, w)) return;
      moe::ok(cudaMemsetAsync(d_weight.data, 0, size_t(d_weight.numel()) * moe::esize(d_weight), moe::stream_of(ctx)),
              op, "memset");
    }
    // bf16 operands with 16-byte rows: the large-tile kernel (d_out^T as an M-major A, in as an N-major B).
    if (big)
      launch_big_variant<false, false, true>(ctx, op, d_weight, a);
    else
      launch_gemm<false, true, true>(ctx, op, d_out, d_weight, a);
  }
}

// The gate and up projections' d_in in one TMA launch (GemmArgs' k_split pair: k runs over d_out1 · w1's N, then
// d_out2 · w2's; f32 sums, one rounding) when variants 5-10 take the product and TMA can describe it (bf16, N a
// multiple of the 64-deep k-tile, 128+ rows per expert on average); else the two products in turn (overwrite, add).
void grouped_matmul_d_in_pair(const Context& ctx, Tensor d_in, Tensor d_out1, Tensor w1, Tensor d_out2, Tensor w2,
                              Tensor offsets) {
  const char* op = "grouped_matmul_d_in_pair";
  const int64_t M = moe::rows(d_out1), N = moe::cols(d_out1), E = w1.shape[0], K = w1.shape[2];
  if (M == 0 || E == 0 || K == 0) return;
  moe::set_device(ctx, op);
  const bool bf16 = d_in.dtype == DType::bf16 && d_out1.dtype == DType::bf16 && d_out2.dtype == DType::bf16 &&
                    w1.dtype == DType::bf16 && w2.dtype == DType::bf16;
  if (kWgmma && g_big_variant >= 5 && bf16 && N > 0 && N % 64 == 0 && K % 8 == 0 && M >= 128 * E) {
    GemmArgs a = d_in_args(d_in, d_out1, w1, offsets, Accum::overwrite);
    a.A2 = d_out2.data;  // the second product, laid out as the first; k runs over both
    a.B2 = w2.data;
    a.k_split = N;
    a.Kd = 2 * N;
    if (launch_tma<true, false, false>(g_big_variant, ctx, op, d_in, a)) return;
  }
  cuda::grouped_matmul_backward(ctx, d_in, Tensor{}, d_out1, Tensor{}, w1, offsets, Accum::overwrite);
  cuda::grouped_matmul_backward(ctx, d_in, Tensor{}, d_out2, Tensor{}, w2, offsets, Accum::add);
}

}  // namespace ds::cuda
