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
// every output element is reduced by one thread in a fixed order (no split-k across blocks, no atomics; the decode
// GEMV splits K over the 8 warps of a block and adds their partial sums in warp order).
#include <cub/block/block_scan.cuh>
#include <cuda.h>  // CUtensorMap (types only: the encoder comes through cudaGetDriverEntryPointByVersion)
#include <cudaTypedefs.h>
#include <cuda_bf16.h>
#include <cuda_runtime.h>
#include <mma.h>

#include <algorithm>
#include <atomic>
#include <cstdint>
#include <type_traits>

#include "kernels/attn_common.cuh"
#include "kernels/cuda_ops.h"
#include "kernels/moe_util.cuh"
#include "kernels/wgmma.cuh"

namespace ds::cuda {

using moe::from_f;
using moe::to_f;

namespace {

constexpr int BM = 64, BN = 64, BK = 32, kThreads = 128;

// Shared-memory layout per operand type: rows padded by 16 bytes (keeps 16-byte rows, shifts the banks).
template <class TA> struct Tile {
  static constexpr int pad = sizeof(TA) == 2 ? 8 : 4;
  static constexpr int lda = BK + pad;  // As[BM][lda]
  static constexpr int ldb = BN + pad;  // Bs[BK][ldb]
  static constexpr size_t ab_bytes = (size_t(BM) * lda + size_t(BK) * ldb) * sizeof(TA);
  static constexpr size_t c_bytes = size_t(BM) * (BN + 4) * sizeof(float);
  static constexpr size_t bytes = ab_bytes > c_bytes ? ab_bytes : c_bytes;
};
constexpr int ldc_s = BN + 4;  // Cs[BM][ldc_s] (f32), aliasing the A/B tiles after the k-loop

struct GemmArgs {
  const void* A;
  const void* B;
  void* C;
  const int64_t* off;
  int E;
  int64_t M;                 // rows of the permuted buffer (offsets are clamped to [0, M])
  int64_t Md, Nd, Kd;        // rows mode: Nd, Kd (m from the offsets); reduce mode: Md, Nd (k from the offsets)
  int64_t lda_m, lda_k;      // A(m, k) = A[m * lda_m + k * lda_k]
  int64_t ldb_k, ldb_n;      // B_e(k, n) = B[e * b_estride + k * ldb_k + n * ldb_n]
  int64_t ldc, b_estride, c_estride;  // C_e(m, n) = C[e * c_estride + m * ldc + n]
  int accumulate;
  int vec_a, vec_b;          // 16-byte global loads allowed along the contiguous dim
  int vec_c;                 // C stores two adjacent elements at once (ldc even, C aligned to two elements)
  int64_t ytiles;            // rows mode: bound on the number of m-tiles
  const void* B2;            // dec::grouped_gemv's SwiGLU pair: the up weights (B the gate's), same layout
  int off_settled;           // Inputs::settled offsets: dec::grouped_gemv finds its expert and loads its first
                             // weights before its wait
};

__device__ __forceinline__ void expert_rows(const GemmArgs& a, int e, int64_t& r0, int64_t& r1) {
  r0 = min(max(a.off[e], int64_t(0)), a.M);
  r1 = min(max(a.off[e + 1], r0), a.M);
}

// Rows mode: which expert owns virtual m-tile t (tiles of TM rows, numbered consecutively over the experts), by a
// block-wide scan of the per-expert tile counts. False when t is past the last tile (uniform over the block).
template <int TM, int NT = kThreads>
__device__ bool locate_tile(const GemmArgs& a, int64_t t, int& e_out, int64_t& m0, int64_t& m_end) {
  using Scan = cub::BlockScan<int64_t, NT>;
  __shared__ typename Scan::TempStorage scan_tmp;
  __shared__ int s_e;
  __shared__ int64_t s_m0, s_mend;
  if (threadIdx.x == 0) s_e = -1;
  __syncthreads();
  int64_t running = 0;
  for (int e0 = 0; e0 < a.E; e0 += NT) {
    const int e = e0 + threadIdx.x;
    int64_t r0 = 0, r1 = 0;
    if (e < a.E) expert_rows(a, e, r0, r1);
    const int64_t cnt = (r1 - r0 + TM - 1) / TM;
    int64_t excl, agg;
    Scan(scan_tmp).ExclusiveSum(cnt, excl, agg);
    const int64_t first = running + excl;
    if (cnt > 0 && t >= first && t < first + cnt) {
      s_e = e;
      s_m0 = r0 + (t - first) * TM;
      s_mend = r1;
    }
    running += agg;
    __syncthreads();
  }
  e_out = s_e;
  m0 = s_m0;
  m_end = s_mend;
  __syncthreads();  // the shared results are read before the next call overwrites them
  return e_out >= 0;
}

// Tile of A into As[BM][lda_s]: rows m0.., k0..; zero outside [.., m_end) x [.., k_end).
template <class TA, bool KCONTIG>
__device__ __forceinline__ void load_a(TA* As, const TA* A, const GemmArgs& a, int64_t m0, int64_t m_end, int64_t k0,
                                       int64_t k_end) {
  constexpr int VE = 16 / sizeof(TA);
  const TA zero = from_f<TA>(0.0f);
  if constexpr (KCONTIG) {  // contiguous along k: VE consecutive k per chunk, stored as one 16-byte word
    constexpr int CPR = BK / VE;
    for (int c = threadIdx.x; c < BM * CPR; c += kThreads) {
      const int mm = c / CPR, kk = (c % CPR) * VE;
      const int64_t m = m0 + mm, k = k0 + kk;
      TA* dst = As + mm * Tile<TA>::lda + kk;
      const TA* src = A + m * a.lda_m + k;
      if (a.vec_a && m < m_end && k + VE <= k_end) {
        *reinterpret_cast<uint4*>(dst) = *reinterpret_cast<const uint4*>(src);
      } else {
        for (int j = 0; j < VE; ++j) dst[j] = (m < m_end && k + j < k_end) ? src[j] : zero;
      }
    }
  } else {  // contiguous along m
    constexpr int CPC = BM / VE;
    for (int c = threadIdx.x; c < BK * CPC; c += kThreads) {
      const int kk = c / CPC, mm = (c % CPC) * VE;
      const int64_t m = m0 + mm, k = k0 + kk;
      const TA* src = A + m + k * a.lda_k;
      if (a.vec_a && k < k_end && m + VE <= m_end) {
        const uint4 w = *reinterpret_cast<const uint4*>(src);
        const TA* v = reinterpret_cast<const TA*>(&w);
        for (int j = 0; j < VE; ++j) As[(mm + j) * Tile<TA>::lda + kk] = v[j];
      } else {
        for (int j = 0; j < VE; ++j) As[(mm + j) * Tile<TA>::lda + kk] = (k < k_end && m + j < m_end) ? src[j] : zero;
      }
    }
  }
}

// Tile of B into Bs[BK][ldb_s]: k0.., n0..; zero outside [.., k_end) x [.., n_end).
template <class TA, bool NCONTIG>
__device__ __forceinline__ void load_b(TA* Bs, const TA* B, const GemmArgs& a, int64_t k0, int64_t k_end, int64_t n0,
                                       int64_t n_end) {
  constexpr int VE = 16 / sizeof(TA);
  const TA zero = from_f<TA>(0.0f);
  if constexpr (NCONTIG) {
    constexpr int CPR = BN / VE;
    for (int c = threadIdx.x; c < BK * CPR; c += kThreads) {
      const int kk = c / CPR, nn = (c % CPR) * VE;
      const int64_t k = k0 + kk, n = n0 + nn;
      TA* dst = Bs + kk * Tile<TA>::ldb + nn;
      const TA* src = B + k * a.ldb_k + n;
      if (a.vec_b && k < k_end && n + VE <= n_end) {
        *reinterpret_cast<uint4*>(dst) = *reinterpret_cast<const uint4*>(src);
      } else {
        for (int j = 0; j < VE; ++j) dst[j] = (k < k_end && n + j < n_end) ? src[j] : zero;
      }
    }
  } else {  // contiguous along k
    constexpr int CPC = BK / VE;
    for (int c = threadIdx.x; c < BN * CPC; c += kThreads) {
      const int nn = c / CPC, kk = (c % CPC) * VE;
      const int64_t k = k0 + kk, n = n0 + nn;
      const TA* src = B + n * a.ldb_n + k;
      if (a.vec_b && n < n_end && k + VE <= k_end) {
        const uint4 w = *reinterpret_cast<const uint4*>(src);
        const TA* v = reinterpret_cast<const TA*>(&w);
        for (int j = 0; j < VE; ++j) Bs[(kk + j) * Tile<TA>::ldb + nn] = v[j];
      } else {
        for (int j = 0; j < VE; ++j) Bs[(kk + j) * Tile<TA>::ldb + nn] = (n < n_end && k + j < k_end) ? src[j] : zero;
      }
    }
  }
}

// C tile (BM x BN, f32 in shared memory) = sum over k in [k_begin, k_end) of A(m, k) B(k, n).
template <class TA, bool KCONTIG, bool NCONTIG>
__device__ void tile_product(unsigned char* smem, const TA* A, const TA* B, const GemmArgs& a, int64_t m0,
                             int64_t m_end, int64_t n0, int64_t n_end, int64_t k_begin, int64_t k_end) {
  TA* As = reinterpret_cast<TA*>(smem);
  TA* Bs = As + BM * Tile<TA>::lda;
  float* Cs = reinterpret_cast<float*>(smem);
  if constexpr (sizeof(TA) == 2) {  // bf16 tensor cores: 4 warps in 2 x 2, each 32 x 32 = 2 x 2 fragments
    using namespace nvcuda;
    const int warp = threadIdx.x / 32, wm = warp / 2, wn = warp % 2;
    wmma::fragment<wmma::accumulator, 16, 16, 16, float> acc[2][2];
    for (int i = 0; i < 2; ++i)
      for (int j = 0; j < 2; ++j) wmma::fill_fragment(acc[i][j], 0.0f);
    for (int64_t k0 = k_begin; k0 < k_end; k0 += BK) {
      load_a<TA, KCONTIG>(As, A, a, m0, m_end, k0, k_end);
      load_b<TA, NCONTIG>(Bs, B, a, k0, k_end, n0, n_end);
      __syncthreads();
      for (int kk = 0; kk < BK; kk += 16) {
        wmma::fragment<wmma::matrix_a, 16, 16, 16, __nv_bfloat16, wmma::row_major> fa[2];
        wmma::fragment<wmma::matrix_b, 16, 16, 16, __nv_bfloat16, wmma::row_major> fb[2];
        for (int i = 0; i < 2; ++i) wmma::load_matrix_sync(fa[i], As + (wm * 32 + i * 16) * Tile<TA>::lda + kk, Tile<TA>::lda);
        for (int j = 0; j < 2; ++j) wmma::load_matrix_sync(fb[j], Bs + kk * Tile<TA>::ldb + wn * 32 + j * 16, Tile<TA>::ldb);
        for (int i = 0; i < 2; ++i)
          for (int j = 0; j < 2; ++j) wmma::mma_sync(acc[i][j], fa[i], fb[j], acc[i][j]);
      }
      __syncthreads();
    }
    for (int i = 0; i < 2; ++i)
      for (int j = 0; j < 2; ++j)
        wmma::store_matrix_sync(Cs + (wm * 32 + i * 16) * ldc_s + wn * 32 + j * 16, acc[i][j], ldc_s,
                                wmma::mem_row_major);
  } else {  // f32 on CUDA cores: each thread 8 rows x 4 columns (columns strided by 16: no bank conflicts)
    const int tr = threadIdx.x / 16, tc = threadIdx.x % 16;
    float acc[8][4];
    for (int i = 0; i < 8; ++i)
      for (int j = 0; j < 4; ++j) acc[i][j] = 0.0f;
    for (int64_t k0 = k_begin; k0 < k_end; k0 += BK) {
      load_a<TA, KCONTIG>(As, A, a, m0, m_end, k0, k_end);
      load_b<TA, NCONTIG>(Bs, B, a, k0, k_end, n0, n_end);
      __syncthreads();
#pragma unroll 4
      for (int kk = 0; kk < BK; ++kk) {
        float av[8], bv[4];
        for (int i = 0; i < 8; ++i) av[i] = to_f(As[(tr * 8 + i) * Tile<TA>::lda + kk]);
        for (int j = 0; j < 4; ++j) bv[j] = to_f(Bs[kk * Tile<TA>::ldb + tc + 16 * j]);
        for (int i = 0; i < 8; ++i)
          for (int j = 0; j < 4; ++j) acc[i][j] = fmaf(av[i], bv[j], acc[i][j]);
      }
      __syncthreads();
    }
    for (int i = 0; i < 8; ++i)
      for (int j = 0; j < 4; ++j) Cs[(tr * 8 + i) * ldc_s + tc + 16 * j] = acc[i][j];
  }
  __syncthreads();
}

// Writes the f32 tile to C (=|+=), converting to TC.
template <class TC>
__device__ void store_tile(const float* Cs, TC* C, const GemmArgs& a, int64_t m0, int64_t m_end, int64_t n0,
                           int64_t n_end) {
  for (int i = threadIdx.x; i < BM * BN; i += kThreads) {
    const int mm = i / BN, nn = i % BN;
    const int64_t m = m0 + mm, n = n0 + nn;
    if (m >= m_end || n >= n_end) continue;
    TC* c = C + m * a.ldc + n;
    const float v = Cs[mm * ldc_s + nn];
    *c = from_f<TC>(a.accumulate ? to_f(*c) + v : v);
  }
  __syncthreads();  // Cs aliases the A/B tiles of the next tile
}

template <class TA, class TC, bool KCONTIG, bool NCONTIG, bool REDUCE>
__global__ void __launch_bounds__(kThreads) grouped_gemm_kernel(GemmArgs a) {
  pdl_enter();  // programmatic dependent launch: wait for the previous kernel (common.cuh)
  __shared__ __align__(128) unsigned char smem[Tile<TA>::bytes];
  const TA* A = static_cast<const TA*>(a.A);
  const TA* Bbase = static_cast<const TA*>(a.B);
  TC* Cbase = static_cast<TC*>(a.C);
  const int64_t n0 = int64_t(blockIdx.x) * BN;
  if constexpr (REDUCE) {
    const int e = blockIdx.z;
    int64_t r0, r1;
    expert_rows(a, e, r0, r1);
    if (r0 == r1) return;  // d_weight += 0
    const int64_t m0 = int64_t(blockIdx.y) * BM;
    tile_product<TA, KCONTIG, NCONTIG>(smem, A, Bbase, a, m0, a.Md, n0, a.Nd, r0, r1);
    store_tile<TC>(reinterpret_cast<const float*>(smem), Cbase + e * a.c_estride, a, m0, a.Md, n0, a.Nd);
  } else {
    for (int64_t t = blockIdx.y; t < a.ytiles; t += gridDim.y) {
      int e;
      int64_t m0, m_end;
      if (!locate_tile<BM>(a, t, e, m0, m_end)) return;  // past the last tile (uniform; later t are too)
      tile_product<TA, KCONTIG, NCONTIG>(smem, A, Bbase + e * a.b_estride, a, m0, m_end, n0, a.Nd, 0, a.Kd);
      store_tile<TC>(reinterpret_cast<const float*>(smem), Cbase, a, m0, m_end, n0, a.Nd);
    }
  }
}

// ---- bf16 rows mode, pipelined: forward and d_in when every row is 16-byte aligned ---------------------------
// The tiled kernel above loads synchronously and transposes k-contiguous weights element by element into shared
// memory; at decode (a few rows per expert) each 64-row tile is mostly padding and its K-loop is all latency.
// This one streams A and B tiles with cp.async through a ring of stages (16-byte copies, zero fill outside),
// keeps B in its memory layout (WMMA col_major for W_e[n][k], row_major for W_e[k][n]), and picks its tile from
// the rows per expert:
//   Wide   (training, many rows per expert): 64 x 64 tiles, 4 warps in 2 x 2, 64-deep k-steps, 2 stages.
//   Skinny (decode, a few rows per expert):  16 x 64 tiles, 64-deep k-steps in 3 stages, the 4 warps side by side
//     along n. Reading the weights is the whole cost there. warps_k > 1 splits each k-step over warps (partials
//     summed in a fixed order); 16 x 32 tiles with 128-deep k-steps split over 2 warps measured no faster end to
//     end on the H200 (decode 28.8k vs 28.6k tok/s at batch 64) and 10 % slower per kernel under ncu.
namespace pipe {
struct Wide {
  static constexpr int tm = 64, bn = 64, bk = 64, stages = 2, warps_m = 2, warps_n = 2, warps_k = 1;
};
struct Skinny {
  static constexpr int tm = 16, bn = 64, bk = 64, stages = 3, warps_m = 1, warps_n = 4, warps_k = 1;
};
template <class G, bool BKMAJOR> struct Shape : G {
  static_assert(G::warps_m * G::warps_n * G::warps_k * 32 == kThreads, "4 warps");
  static constexpr int lda = G::bk + 8;                        // A tile [tm][bk], rows padded by 16 bytes
  static constexpr int ldb = BKMAJOR ? G::bk + 8 : G::bn + 8;  // B tile [bn][bk] or [bk][bn]
  static constexpr int ldc = G::bn + 4;                        // f32 output tile(s) [warps_k][tm][bn]
  static constexpr int fm = G::tm / (16 * G::warps_m), fn = G::bn / (16 * G::warps_n);  // 16x16 fragments per warp
  static constexpr int kw = G::bk / G::warps_k;                // k per warp per stage
  static constexpr size_t a_elems = size_t(G::tm) * lda, b_elems = size_t(BKMAJOR ? G::bn : G::bk) * ldb;
  static constexpr size_t stage_elems = a_elems + b_elems;
  static constexpr size_t ring_bytes = G::stages * stage_elems * sizeof(__nv_bfloat16);
  static constexpr size_t c_bytes = size_t(G::warps_k) * G::tm * ldc * sizeof(float);
  static constexpr size_t bytes = ring_bytes > c_bytes ? ring_bytes : c_bytes;
  static_assert(bytes <= 48 * 1024, "static shared memory");
};
}  // namespace pipe

// BKMAJOR: B_e(k, n) = B[e * b_estride + n * ldb_n + k] (forward, W_e[n][k]); else B[e * b_estride + k * ldb_k + n]
// (d_in, W_e[k][n]). Host guarantees: 16-byte aligned bases, Kd % 8 == 0, row strides % 8 == 0, and for
// !BKMAJOR Nd % 8 == 0, so every 16-byte chunk lies wholly inside or wholly outside the matrix.
template <class TC, class G, bool BKMAJOR>
__global__ void __launch_bounds__(kThreads) grouped_gemm_pipelined(GemmArgs a) {
  pdl_enter();  // programmatic dependent launch: wait for the previous kernel (common.cuh)
  using bf16 = __nv_bfloat16;
  using S = pipe::Shape<G, BKMAJOR>;
  using namespace nvcuda;
  constexpr int TM = G::tm, BN = G::bn, BK = G::bk;
  __shared__ __align__(128) unsigned char smem[S::bytes];
  bf16* ring = reinterpret_cast<bf16*>(smem);
  const bf16* A = static_cast<const bf16*>(a.A);
  TC* C = static_cast<TC*>(a.C);
  const int64_t n0 = int64_t(blockIdx.x) * BN;
  const int warp = threadIdx.x / 32;
  const int wk = warp / (G::warps_m * G::warps_n), wm = (warp / G::warps_n) % G::warps_m, wn = warp % G::warps_n;
  const int64_t nk = (a.Kd + BK - 1) / BK;
  for (int64_t t = blockIdx.y; t < a.ytiles; t += gridDim.y) {
    int e;
    int64_t m0, m_end;
    if (!locate_tile<TM>(a, t, e, m0, m_end)) return;
    const bf16* Be = static_cast<const bf16*>(a.B) + e * a.b_estride;
    auto load_stage = [&](int64_t kt) {
      bf16* As = ring + (kt % G::stages) * S::stage_elems;
      bf16* Bs = As + S::a_elems;
      const int64_t k0 = kt * BK;
      for (int c = threadIdx.x; c < TM * (BK / 8); c += kThreads) {
        const int r = c / (BK / 8), kk = (c % (BK / 8)) * 8;
        const bool ok = m0 + r < m_end && k0 + kk < a.Kd;
        attn::cp_async16(As + r * S::lda + kk, ok ? A + (m0 + r) * a.lda_m + k0 + kk : A, ok);
      }
      if constexpr (BKMAJOR) {  // tile row = n, chunks along k
        for (int c = threadIdx.x; c < BN * (BK / 8); c += kThreads) {
          const int r = c / (BK / 8), kk = (c % (BK / 8)) * 8;
          const bool ok = n0 + r < a.Nd && k0 + kk < a.Kd;
          attn::cp_async16(Bs + r * S::ldb + kk, ok ? Be + (n0 + r) * a.ldb_n + k0 + kk : Be, ok);
        }
      } else {  // tile row = k, chunks along n
        for (int c = threadIdx.x; c < BK * (BN / 8); c += kThreads) {
          const int r = c / (BN / 8), nn = (c % (BN / 8)) * 8;
          const bool ok = k0 + r < a.Kd && n0 + nn < a.Nd;
          attn::cp_async16(Bs + r * S::ldb + nn, ok ? Be + (k0 + r) * a.ldb_k + n0 + nn : Be, ok);
        }
      }
    };
    wmma::fragment<wmma::accumulator, 16, 16, 16, float> acc[S::fm][S::fn];
    for (int i = 0; i < S::fm; ++i)
      for (int j = 0; j < S::fn; ++j) wmma::fill_fragment(acc[i][j], 0.0f);
    for (int st = 0; st < G::stages - 1; ++st) {  // prologue: stages - 1 tiles in flight
      if (st < nk) load_stage(st);
      attn::cp_async_commit();
    }
    for (int64_t kt = 0; kt < nk; ++kt) {
      attn::cp_async_wait<G::stages - 2>();  // tile kt has landed (this thread's copies)...
      __syncthreads();                       // ...everyone's, and tile kt - 1's slot is free to refill
      if (kt + G::stages - 1 < nk) load_stage(kt + G::stages - 1);
      attn::cp_async_commit();  // possibly empty: keeps the group count in step
      const bf16* As = ring + (kt % G::stages) * S::stage_elems;
      const bf16* Bs = As + S::a_elems;
      using BLayout = std::conditional_t<BKMAJOR, wmma::col_major, wmma::row_major>;
#pragma unroll
      for (int kk = wk * S::kw; kk < (wk + 1) * S::kw; kk += 16) {
        wmma::fragment<wmma::matrix_a, 16, 16, 16, bf16, wmma::row_major> fa[S::fm];
        wmma::fragment<wmma::matrix_b, 16, 16, 16, bf16, BLayout> fb[S::fn];
        for (int i = 0; i < S::fm; ++i) wmma::load_matrix_sync(fa[i], As + (wm * S::fm + i) * 16 * S::lda + kk, S::lda);
        for (int j = 0; j < S::fn; ++j) {
          const int nn = (wn * S::fn + j) * 16;
          wmma::load_matrix_sync(fb[j], BKMAJOR ? Bs + nn * S::ldb + kk : Bs + kk * S::ldb + nn, S::ldb);
        }
        for (int i = 0; i < S::fm; ++i)
          for (int j = 0; j < S::fn; ++j) wmma::mma_sync(acc[i][j], fa[i], fb[j], acc[i][j]);
      }
    }
    attn::cp_async_wait<0>();
    __syncthreads();  // the ring is reused as the f32 output tile(s), one per k-slice
    float* Cs = reinterpret_cast<float*>(smem);
    for (int i = 0; i < S::fm; ++i)
      for (int j = 0; j < S::fn; ++j)
        wmma::store_matrix_sync(Cs + (size_t(wk) * TM + (wm * S::fm + i) * 16) * S::ldc + (wn * S::fn + j) * 16,
                                acc[i][j], S::ldc, wmma::mem_row_major);
    __syncthreads();
    for (int i = threadIdx.x; i < TM * BN; i += kThreads) {
      const int mm = i / BN, nn = i % BN;
      const int64_t m = m0 + mm, n = n0 + nn;
      if (m >= m_end || n >= a.Nd) continue;
      float v = 0.0f;
      for (int q = 0; q < G::warps_k; ++q) v += Cs[(size_t(q) * TM + mm) * S::ldc + nn];  // fixed order
      TC* c = C + m * a.ldc + n;
      *c = from_f<TC>(a.accumulate ? to_f(*c) + v : v);
    }
    __syncthreads();  // Cs aliases the ring of the next tile
  }
}

// ---- bf16 large tiles on mma.sync: forward and d_in (rows mode), d_weight (reduce mode) at training shapes ----
// The kernel above runs WMMA on 64 x 64 tiles with 4 warps and 2 stages: ~100 TFLOP/s at the training shapes.
// This one: BM x BN output tiles (128 x 256 by default), 8 warps each owning a 64 x 64 warp tile (m16n8k16
// fragments, f32 accumulators in registers), BK-deep k-steps streamed through a ring of `stages` cp.async stages
// in dynamic shared memory (rows padded by 16 bytes, so the 8 row addresses of every ldmatrix hit distinct banks),
// fragments double-buffered in registers (the next k16 step's ldmatrix is issued before this step's mma), and
// the output written from the accumulators (two elements per store).
// Operands are stored as they lie in memory, no transposes: a tile is [rows][cols] of the global layout.
//   forward:  A = in    [m][k] (K-major, ldmatrix),    B = W_e  [n][k] (K-major, ldmatrix)
//   d_in:     A = d_out [m][k] (K-major, ldmatrix),    B = W_e  [k][n] (N-major, ldmatrix.trans)
//   d_weight: A = d_out [r][n_w] (M-major, .trans),    B = in   [r][k_w] (N-major, .trans); the k-loop runs over
//             expert e's rows r0..r1 in BK-row chunks, rows past r1 zero-filled. One block per (tile, expert): every
//             output element is reduced by one thread in row order (deterministic, no atomics, no split).
namespace big {

template <int BM_, int BN_, int BK_, int WM_, int WN_, int STAGES_, int MINB_>
struct Cfg {
  static constexpr int bm = BM_, bn = BN_, bk = BK_, warps_m = WM_, warps_n = WN_, stages = STAGES_;
  static constexpr int min_blocks = MINB_, threads = WM_ * WN_ * 32;
  static constexpr int wtm = BM_ / WM_, wtn = BN_ / WN_;  // warp tile
  static constexpr int fm = wtm / 16, fn = wtn / 8;        // m16 x n8 accumulator fragments per warp
  static_assert(wtm % 16 == 0 && wtn % 16 == 0 && bk % 32 == 0 && stages >= 2 && warps_m * wtm == bm, "tile shape");
};

// One stage: the A tile then the B tile, each [rows][cols + 8] bf16.
template <class C, bool AKMAJOR, bool BKMAJOR> struct Smem {
  static constexpr int a_rows = AKMAJOR ? C::bm : C::bk, a_cols = AKMAJOR ? C::bk : C::bm;
  static constexpr int b_rows = BKMAJOR ? C::bn : C::bk, b_cols = BKMAJOR ? C::bk : C::bn;
  static constexpr int a_pitch = a_cols + 8, b_pitch = b_cols + 8;
  static constexpr int a_elems = a_rows * a_pitch, b_elems = b_rows * b_pitch;
  static constexpr int stage_elems = a_elems + b_elems;
  static constexpr size_t bytes = size_t(C::stages) * stage_elems * sizeof(__nv_bfloat16);
};

// ROWS x COLS tile of g (row stride ld) at (row0, col0) into s ([ROWS][COLS + 8]), 16-byte cp.async chunks;
// chunks with row >= row_end or col >= col_end are zero-filled (the host guarantees col_end - col0 and every
// chunk start are multiples of 8 along cols, so a chunk lies wholly inside or outside).
template <int ROWS, int COLS, int NT>
__device__ __forceinline__ void load_tile(__nv_bfloat16* s, const __nv_bfloat16* g, int64_t ld, int64_t row0,
                                          int64_t row_end, int64_t col0, int64_t col_end) {
  constexpr int CPR = COLS / 8, CHUNKS = ROWS * CPR, PITCH = COLS + 8;
  static_assert(CHUNKS % NT == 0, "chunks per thread");
#pragma unroll
  for (int i = 0; i < CHUNKS / NT; ++i) {
    const int c = int(threadIdx.x) + i * NT;
    const int r = c / CPR, cc = (c % CPR) * 8;
    const int64_t row = row0 + r, col = col0 + cc;
    const bool ok = row < row_end && col < col_end;
    attn::cp_async16(s + r * PITCH + cc, ok ? g + row * ld + col : g, ok);
  }
}

template <class TC>
__device__ __forceinline__ void store_pair(TC* c, float v0, float v1, int64_t n, int64_t n_end, bool pair, bool acc) {
  if (pair && n + 1 < n_end) {
    if constexpr (std::is_same_v<TC, float>) {
      float2* p = reinterpret_cast<float2*>(c);
      if (acc) {
        const float2 o = *p;
        v0 = o.x + v0;
        v1 = o.y + v1;
      }
      *p = make_float2(v0, v1);
    } else {
      __nv_bfloat162* p = reinterpret_cast<__nv_bfloat162*>(c);
      if (acc) {
        const float2 o = __bfloat1622float2(*p);
        v0 = o.x + v0;
        v1 = o.y + v1;
      }
      *p = __floats2bfloat162_rn(v0, v1);
    }
  } else {
    if (n < n_end) c[0] = from_f<TC>(acc ? to_f(c[0]) + v0 : v0);
    if (n + 1 < n_end) c[1] = from_f<TC>(acc ? to_f(c[1]) + v1 : v1);
  }
}

// store_pair's accumulate half alone: v += the stored pair (the same sums). An epilogue that first adds all its old
// values and then stores (acc false) lets its loads overlap; store_pair's load, add, store per pair serialises them,
// since a store may alias the next load.
template <class TC>
__device__ __forceinline__ void add_stored_pair(const TC* c, float& v0, float& v1, int64_t n, int64_t n_end,
                                                bool pair) {
  if (pair && n + 1 < n_end) {
    float2 o;
    if constexpr (std::is_same_v<TC, float>) o = *reinterpret_cast<const float2*>(c);
    else o = __bfloat1622float2(*reinterpret_cast<const __nv_bfloat162*>(c));
    v0 = o.x + v0;
    v1 = o.y + v1;
  } else {
    if (n < n_end) v0 = to_f(c[0]) + v0;
    if (n + 1 < n_end) v1 = to_f(c[1]) + v1;
  }
}

// C tile rows [m0, m_end) x cols [n0, Nd) (=|+=) sum over k in [k_begin, k_end) of A(m, k) B_e(k, n).
template <class C, bool AKMAJOR, bool BKMAJOR, class TC>
__device__ __forceinline__ void tile_mma(__nv_bfloat16* ring, const __nv_bfloat16* A, const __nv_bfloat16* Be,
                                         TC* Ce, const GemmArgs& a, int64_t m0, int64_t m_end, int64_t n0,
                                         int64_t k_begin, int64_t k_end) {
  using bf16 = __nv_bfloat16;
  using S = Smem<C, AKMAJOR, BKMAJOR>;
  constexpr int KS = C::bk / 16;  // k16 steps per stage (even: the fragment buffers alternate 0, 1, 0, 1, ...)
  const int lane = threadIdx.x % 32, warp = threadIdx.x / 32;
  const int wm0 = (warp / C::warps_n) * C::wtm, wn0 = (warp % C::warps_n) * C::wtn;
  const int nk = int((k_end - k_begin + C::bk - 1) / C::bk);

  auto load_stage = [&](int kt) {
    bf16* As = ring + (kt % C::stages) * S::stage_elems;
    bf16* Bs = As + S::a_elems;
    const int64_t k0 = k_begin + int64_t(kt) * C::bk;
    if constexpr (AKMAJOR) load_tile<C::bm, C::bk, C::threads>(As, A, a.lda_m, m0, m_end, k0, k_end);
    else load_tile<C::bk, C::bm, C::threads>(As, A, a.lda_k, k0, k_end, m0, m_end);
    if constexpr (BKMAJOR) load_tile<C::bn, C::bk, C::threads>(Bs, Be, a.ldb_n, n0, a.Nd, k0, k_end);
    else load_tile<C::bk, C::bn, C::threads>(Bs, Be, a.ldb_k, k0, k_end, n0, a.Nd);
  };

  uint32_t af[2][C::fm][4], bfr[2][C::fn][2];
  auto load_frags = [&](int buf, const bf16* As, int kk) {
    const bf16* Bs = As + S::a_elems;
#pragma unroll
    for (int i = 0; i < C::fm; ++i) {
      const int mr = wm0 + i * 16;
      if constexpr (AKMAJOR)  // [m][k]: lanes 0-15 rows mr.., k kk; lanes 16-31 the same rows, k kk + 8
        attn::ldsm_x4(af[buf][i], As + (mr + (lane & 15)) * S::a_pitch + kk + ((lane >> 4) << 3));
      else  // [k][m], transposed: matrices (k kk, m mr), (k kk, m mr + 8), (k kk + 8, m mr), (k kk + 8, m mr + 8)
        attn::ldsm_x4_t(af[buf][i],
                        As + (kk + (lane & 7) + ((lane >> 4) << 3)) * S::a_pitch + mr + (((lane >> 3) & 1) << 3));
    }
#pragma unroll
    for (int j = 0; j < C::fn / 2; ++j) {
      const int nc = wn0 + j * 16;
      uint32_t r[4];
      if constexpr (BKMAJOR)  // [n][k]: (n nc, k kk), (n nc, k kk + 8), (n nc + 8, k kk), (n nc + 8, k kk + 8)
        attn::ldsm_x4(r, Bs + (nc + (lane & 7) + ((lane >> 4) << 3)) * S::b_pitch + kk + (((lane >> 3) & 1) << 3));
      else  // [k][n], transposed: (k kk, n nc), (k kk + 8, n nc), (k kk, n nc + 8), (k kk + 8, n nc + 8)
        attn::ldsm_x4_t(r, Bs + (kk + (lane & 7) + (((lane >> 3) & 1) << 3)) * S::b_pitch + nc + ((lane >> 4) << 3));
      bfr[buf][2 * j][0] = r[0];
      bfr[buf][2 * j][1] = r[1];
      bfr[buf][2 * j + 1][0] = r[2];
      bfr[buf][2 * j + 1][1] = r[3];
    }
  };

  float acc[C::fm][C::fn][4];
#pragma unroll
  for (int i = 0; i < C::fm; ++i)
#pragma unroll
    for (int j = 0; j < C::fn; ++j)
#pragma unroll
      for (int q = 0; q < 4; ++q) acc[i][j][q] = 0.0f;

  // Prologue: tiles 0 .. stages - 2 in flight; tile 0's first fragments in registers.
#pragma unroll
  for (int s = 0; s < C::stages - 1; ++s) {
    if (s < nk) load_stage(s);
    attn::cp_async_commit();
  }
  attn::cp_async_wait<C::stages - 2>();
  __syncthreads();
  load_frags(0, ring, 0);

  for (int kt = 0; kt < nk; ++kt) {
    // Slot (kt - 1) % stages was last read before the barrier at the end of step kt - 1: refill it.
    if (kt + C::stages - 1 < nk) load_stage(kt + C::stages - 1);
    attn::cp_async_commit();  // possibly empty: keeps the group count in step
    const bf16* As = ring + (kt % C::stages) * S::stage_elems;
#pragma unroll
    for (int j = 0; j < KS; ++j) {
      if (j < KS - 1) {
        load_frags((j + 1) & 1, As, (j + 1) * 16);
      } else {  // tile kt + 1 has landed (everyone's copies); its first fragments go to buffer 0
        attn::cp_async_wait<C::stages - 2>();
        __syncthreads();
        if (kt + 1 < nk) load_frags(0, ring + ((kt + 1) % C::stages) * S::stage_elems, 0);
      }
#pragma unroll
      for (int i = 0; i < C::fm; ++i)
#pragma unroll
        for (int n = 0; n < C::fn; ++n) attn::mma_bf16(acc[i][n], af[j & 1][i], bfr[j & 1][n][0], bfr[j & 1][n][1]);
    }
  }
  attn::cp_async_wait<0>();
  __syncthreads();  // the ring is free for the next tile's prologue

  // acc[i][n]: c0 c1 at (row g, cols 2t, 2t + 1), c2 c3 at (row g + 8, same cols) of fragment (i, n).
  const int g = lane >> 2, tq = lane & 3;
  const bool pair = a.vec_c != 0, accum = a.accumulate != 0;
#pragma unroll
  for (int i = 0; i < C::fm; ++i)
#pragma unroll
    for (int h = 0; h < 2; ++h) {
      const int64_t m = m0 + wm0 + i * 16 + g + 8 * h;
      if (m >= m_end) continue;
      TC* crow = Ce + m * a.ldc;
#pragma unroll
      for (int n = 0; n < C::fn; ++n) {
        const int64_t col = n0 + wn0 + n * 8 + 2 * tq;
        store_pair<TC>(crow + col, acc[i][n][2 * h], acc[i][n][2 * h + 1], col, a.Nd, pair, accum);
      }
    }
}

template <class C, bool AKMAJOR, bool BKMAJOR, bool REDUCE, class TC>
__global__ void __launch_bounds__(C::threads, C::min_blocks) grouped_gemm_big(GemmArgs a) {
  pdl_enter();  // programmatic dependent launch: wait for the previous kernel (common.cuh)
  static_assert(!REDUCE || (!AKMAJOR && !BKMAJOR), "reduce mode: both operands row-indexed by the reduction");
  extern __shared__ __align__(128) unsigned char big_smem[];
  auto* ring = reinterpret_cast<__nv_bfloat16*>(big_smem);
  const auto* A = static_cast<const __nv_bfloat16*>(a.A);
  const auto* B = static_cast<const __nv_bfloat16*>(a.B);
  TC* Cp = static_cast<TC*>(a.C);
  const int64_t n0 = int64_t(blockIdx.x) * C::bn;
  if constexpr (REDUCE) {
    const int e = blockIdx.z;
    int64_t r0, r1;
    expert_rows(a, e, r0, r1);
    if (r0 == r1) return;  // d_weight += 0
    tile_mma<C, AKMAJOR, BKMAJOR, TC>(ring, A, B, Cp + e * a.c_estride, a, int64_t(blockIdx.y) * C::bm, a.Md, n0, r0,
                                      r1);
  } else {
    for (int64_t t = blockIdx.y; t < a.ytiles; t += gridDim.y) {
      int e;
      int64_t m0, m_end;
      if (!locate_tile<C::bm, C::threads>(a, t, e, m0, m_end)) return;
      tile_mma<C, AKMAJOR, BKMAJOR, TC>(ring, A, B + e * a.b_estride, Cp, a, m0, m_end, n0, 0, a.Kd);
    }
  }
}

// Tile configurations <BM, BN, BK, warps_m, warps_n, stages, min blocks per SM>. Measured on the H200
// (ds-bench-grouped-gemm, E32 M65536, TFLOP/s forward / d_in / d_weight f32, gate/up K1024 -> N512, uniform load):
//   128 x 256 x 32, 4 stages (236 registers, 1 block/SM):  283 / 235 / 240   (down K512 -> N1024: 235 / 276 / 236)
//   128 x 128 x 32, 4 stages (150-178 registers):          230 / 199 / 206   (skewed d_weight: 193, 128 x 256: 147)
//   256 x 128 x 32, 4 stages and 128 x 256 x 64, 3 stages measured within 2 % of 128 x 256 x 32 (dropped).
// The previous kernels: 121 / 100 / 64. cuBLASLt dense at the same FLOPs: 618 / 577 / 666.
using T128x128 = Cfg<128, 128, 32, 2, 4, 4, 1>;  // warp tiles 64 x 32
using T128x256 = Cfg<128, 256, 32, 2, 4, 4, 1>;  // warp tiles 64 x 64
using Mid = Cfg<64, 128, 32, 2, 2, 4, 2>;  // rows mode with < 128 rows per expert on average: 64-row tiles

}  // namespace big

// ---- bf16 training shapes on Hopper's warpgroup MMA (sm_90a) ---------------------------------------------------
// The large-tile kernel's job (rows mode: forward and d_in; reduce mode: d_weight) with wgmma instead of mma.sync:
// 128 x BN output tiles, two warpgroups a block each owning 64 rows (m64nBNk16 products, A and B read by the
// tensor cores straight from shared memory, so no fragment loads through registers). All 256 threads stream the
// 64-deep k-tiles of A and B into a ring of STAGES slots with cp.async, in the 128-byte swizzled layout wgmma.cuh
// describes (K-major tiles for the operands contiguous along k, MN-major ones, read transposed, for those
// contiguous along m or n: d_in's weights, d_weight's both operands), zero-filled past the row and column ends.
//
// A block walks the tiles t = blockIdx.x, + gridDim.x, ... (rows mode: t = m-tile * nx + n-tile over the m-tiles of
// all experts, as locate_tile numbers them; reduce mode: (expert, m-tile, n-tile), empty experts skipped; the launch
// makes rows mode persistent, a block an SM, and gives reduce mode a block a tile: launch_wgmma says why), and the
// k-tiles of consecutive tiles form one stream: the copies run STAGES - 2 k-tiles ahead
// across tile boundaries, so a tile's first operands are in flight during the previous tile's last products and
// its epilogue (at 192 KB of ring a block, nothing else on the SM would hide them). Step s: wait for k-tile s (own
// copies) -> proxy fence -> barrier (everyone's copies of s have landed, and everyone's products of s - 2 have
// retired: each warpgroup waited for them in step s - 1) -> refill the slot of s - 2 with k-tile s + STAGES - 2 ->
// issue the four k16 products of s -> wait until only s's are pending; after a tile's last step, wait for all and
// write the fragments straight from registers (store_pair, =|+=), as the large-tile kernel does.
namespace wg {

constexpr int kBK = 64;  // k per tile: one 128-byte swizzle block of bf16

template <int BN_, int STAGES_> struct Cfg {
  static constexpr int bm = 128, bn = BN_, stages = STAGES_, threads = 256;
  static constexpr int a_bytes = bm * kBK * 2, b_bytes = bn * kBK * 2, stage_bytes = a_bytes + b_bytes;
  static constexpr size_t smem = size_t(stages) * stage_bytes + 1024;  // + slack to align the ring to 1024 bytes
  static_assert(BN_ == 128 || BN_ == 256, "m64n128 or m64n256 products");
  static_assert(STAGES_ >= 3, "a k-tile in the products, one retiring, at least one in flight");
};

template <int BN, int TA, int TB>
__device__ __forceinline__ void mma(float (&acc)[BN / 2], uint64_t da, uint64_t db) {
  if constexpr (BN == 256) wgmma::mma_m64n256k16<TA, TB>(acc, da, db);
  else wgmma::mma_m64n128k16<TA, TB>(acc, da, db);
}

// Writes (accum: adds to) a warpgroup's 64 x BN block of results, rows [m0, m0 + 64) below m_end, columns
// [n0, n0 + BN) below n_end: acc[4 j + q] is row m0 + 16 w + g + 8 (q >> 1), column n0 + 8 j + 2 t + (q & 1) (w: warp
// in the warpgroup, g = lane / 4, t = lane % 4). Accumulating, every old value is loaded first and then the stores
// go out (big::add_stored_pair says why).
template <int BN, class TC>
__device__ __forceinline__ void store_block(TC* C, int64_t ldc, float (&acc)[BN / 2], int64_t m0, int64_t m_end,
                                            int64_t n0, int64_t n_end, bool pair, bool accum) {
  const int lane = threadIdx.x % 32, w = (threadIdx.x / 32) % 4, g = lane >> 2, tq = lane & 3;
  if (accum) {
#pragma unroll
    for (int h = 0; h < 2; ++h) {
      const int64_t m = m0 + w * 16 + g + 8 * h;
      if (m >= m_end) continue;
#pragma unroll
      for (int j = 0; j < BN / 8; ++j) {
        const int64_t col = n0 + j * 8 + 2 * tq;
        big::add_stored_pair<TC>(C + m * ldc + col, acc[4 * j + 2 * h], acc[4 * j + 2 * h + 1], col, n_end, pair);
      }
    }
  }
#pragma unroll
  for (int h = 0; h < 2; ++h) {
    const int64_t m = m0 + w * 16 + g + 8 * h;
    if (m >= m_end) continue;
#pragma unroll
    for (int j = 0; j < BN / 8; ++j) {
      const int64_t col = n0 + j * 8 + 2 * tq;
      big::store_pair<TC>(C + m * ldc + col, acc[4 * j + 2 * h], acc[4 * j + 2 * h + 1], col, n_end, pair, false);
    }
  }
}

// One output tile: rows [m0, m_end) x cols [n0, Nd) of expert e's C, the sum over k in [k0, k1) (nk 64-deep steps).
struct TileJob {
  int64_t m0, m_end, n0, k0, k1;
  int e, nk;
};

// The tile jobs of this block in order. next() is called by all threads together (locate_tile synchronises) and
// returns false once the block's tiles are done (uniform over the block).
template <class C, bool REDUCE> struct Tiles {
  const GemmArgs& a;
  int64_t t;
  int64_t nx, ny;  // n-tiles; reduce mode: m-tiles per expert
  __device__ Tiles(const GemmArgs& args) : a(args), t(blockIdx.x) {
    nx = (a.Nd + C::bn - 1) / C::bn;
    ny = REDUCE ? (a.Md + C::bm - 1) / C::bm : a.ytiles;
  }
  __device__ bool next(TileJob& j) {
    for (;; t += gridDim.x) {
      const int64_t x = t % nx, y = (t / nx) % ny, z = t / (nx * ny);
      if (REDUCE) {
        if (z >= a.E) return false;
        int64_t r0, r1;
        expert_rows(a, int(z), r0, r1);
        if (r0 == r1) continue;  // d_weight += 0
        j = TileJob{y * C::bm, a.Md, x * C::bn, r0, r1, int(z), int((r1 - r0 + kBK - 1) / kBK)};
      } else {
        int e;
        int64_t m0, m_end;
        if (z > 0 || !locate_tile<C::bm, C::threads>(a, y, e, m0, m_end)) return false;  // later tiles too
        j = TileJob{m0, m_end, x * C::bn, 0, a.Kd, e, int((a.Kd + kBK - 1) / kBK)};
      }
      t += gridDim.x;
      return true;
    }
  }
};

template <class C, bool AKMAJOR, bool BKMAJOR, bool REDUCE, class TC>
__global__ void __launch_bounds__(C::threads, 1) grouped_gemm_wgmma(GemmArgs a) {
  pdl_enter();  // programmatic dependent launch: wait for the previous kernel (common.cuh)
  static_assert(!REDUCE || (!AKMAJOR && !BKMAJOR), "reduce mode: both operands row-indexed by the reduction");
  extern __shared__ __align__(1024) unsigned char wg_smem[];
  __shared__ TileJob queue[4];  // jobs loaded but not yet written back: at most STAGES - 1 (k-tiles ahead + 1)
  static_assert(C::stages - 1 <= 4, "job queue");
  // The static shared memory comes first: align the ring to the swizzle's 1024 bytes by hand.
  unsigned char* ring = wg_smem + ((1024 - (uint32_t(__cvta_generic_to_shared(wg_smem)) & 1023)) & 1023);
  const uint32_t ring_addr = uint32_t(__cvta_generic_to_shared(ring));
  const auto* A = static_cast<const __nv_bfloat16*>(a.A);
  const auto* B = static_cast<const __nv_bfloat16*>(a.B);
  TC* Cp = static_cast<TC*>(a.C);
  const int wgi = int(threadIdx.x) / 128;

  // The load cursor: job number lj (queue[lj % 4]) and its k-tile lk; copies of k-tile `step` go to slot step % S.
  Tiles<C, REDUCE> tiles(a);
  TileJob lj_job;
  int lj = 0, lk = 0;
  bool loading = tiles.next(lj_job);
  if (!loading) return;  // uniform: no tiles for this block
  if (threadIdx.x == 0) queue[0] = lj_job;
  int64_t issued = 0;
  auto load_next = [&] {  // the next k-tile of the stream, if any, as one commit group (possibly empty)
    if (loading) {
      unsigned char* As = ring + (issued % C::stages) * C::stage_bytes;
      unsigned char* Bs = As + C::a_bytes;
      const TileJob& j = lj_job;
      const int64_t k0 = j.k0 + int64_t(lk) * kBK;
      const __nv_bfloat16* Be = REDUCE ? B : B + j.e * a.b_estride;
      if constexpr (AKMAJOR) wgmma::load_tile_sw128<C::bm, kBK, C::threads>(As, A, a.lda_m, j.m0, j.m_end, k0, j.k1);
      else wgmma::load_tile_sw128<kBK, C::bm, C::threads>(As, A, a.lda_k, k0, j.k1, j.m0, j.m_end);
      if constexpr (BKMAJOR) wgmma::load_tile_sw128<C::bn, kBK, C::threads>(Bs, Be, a.ldb_n, j.n0, a.Nd, k0, j.k1);
      else wgmma::load_tile_sw128<kBK, C::bn, C::threads>(Bs, Be, a.ldb_k, k0, j.k1, j.n0, a.Nd);
      if (++lk == j.nk) {
        lk = 0;
        loading = tiles.next(lj_job);
        ++lj;
        if (loading && threadIdx.x == 0) queue[lj % 4] = lj_job;
      }
    }
    ++issued;
    attn::cp_async_commit();
  };
#pragma unroll 1
  for (int s = 0; s < C::stages - 2; ++s) load_next();

  float acc[C::bn / 2];
#pragma unroll
  for (int i = 0; i < C::bn / 2; ++i) acc[i] = 0.0f;
  wgmma::pin(acc);
  int cj = 0, ck = 0;  // the compute cursor: job cj, k-tile ck
  for (int64_t step = 0;; ++step) {
    attn::cp_async_wait<C::stages - 3>();
    wgmma::fence_proxy_async();
    __syncthreads();  // also orders queue[] written at step - 2 or earlier before its reads below
    load_next();
    const uint32_t as = ring_addr + uint32_t((step % C::stages) * C::stage_bytes), bs = as + C::a_bytes;
    wgmma::fence();
#pragma unroll
    for (int j = 0; j < kBK / 16; ++j) {
      // A: this warpgroup's 64 rows. K-major: rows 64 wgi.. of [128][64]; MN-major: column block wgi of [64][128].
      const uint64_t da = AKMAJOR ? wgmma::desc_sw128(as + wgi * 8192 + j * 32, 16, 1024)
                                  : wgmma::desc_sw128(as + wgi * (kBK * 128) + j * 2048, kBK * 128, 1024);
      const uint64_t db = BKMAJOR ? wgmma::desc_sw128(bs + j * 32, 16, 1024)
                                  : wgmma::desc_sw128(bs + j * 2048, kBK * 128, 1024);
      mma<C::bn, AKMAJOR ? 0 : 1, BKMAJOR ? 0 : 1>(acc, da, db);
    }
    wgmma::commit();
    wgmma::wait<1>();
    const TileJob job = queue[cj % 4];
    if (++ck < job.nk) continue;
    // The tile's last products: wait for them and write this warpgroup's 64 rows back.
    wgmma::wait<0>();
    wgmma::pin(acc);
    store_block<C::bn, TC>(REDUCE ? Cp + job.e * a.c_estride : Cp, a.ldc, acc, job.m0 + wgi * 64, job.m_end, job.n0,
                           a.Nd, a.vec_c != 0, a.accumulate != 0);
#pragma unroll
    for (int i = 0; i < C::bn / 2; ++i) acc[i] = 0.0f;
    wgmma::pin(acc);
    ck = 0;
    if (++cj > lj || (cj == lj && !loading)) break;  // uniform: no job left
  }
  attn::cp_async_wait<0>();
}

using N256 = Cfg<256, 4>;  // 192 KB of ring: one block an SM
using N128 = Cfg<128, 4>;  // 128 KB

}  // namespace wg

// ---- variant 5 (the default with sm_90a): wgmma with TMA loads and warp specialisation -------------------------
// All three products: the forward (rows mode, A = in [M, K] and B = W [E, N, K], both K-major), d_in (rows mode,
// B = W read as [K, N] blocks: MN-major) and d_weight (reduce mode, A = d_out and B = in, both MN-major, summed
// over the expert's rows). 128 x 256 output tiles as wg::N256, but 384 threads in three roles: warpgroup 0 is the
// producer (one thread issues the TMA loads, cp.async.bulk.tensor, of 64-deep k-tiles of A [128 x 64] and
// B [256 x 64] into a ring of kStages slots: CU_TENSOR_MAP_SWIZZLE_128B writes exactly the 128-byte swizzled
// K-major layout wgmma.cuh's descriptors describe, one 128-byte column block, rows 128 bytes apart, 16-byte chunk c
// of row r at c ^ (r % 8), the slots 1024-byte aligned), warpgroups 1 and 2 are the consumers, each owning 64 rows
// of the tile (m64n256k16 products, as wg::). Per slot a full mbarrier (count 1: the producer's arrive.expect_tx of the
// slot's bytes; the TMA's complete_tx completes the phase) and an empty one (count 8: lane 0 of each consumer warp
// arrives once the warpgroup's wgmma.wait_group says the products reading the slot retired). No block-wide barrier
// after the set-up. Registers: 157 a thread without setmaxnreg (ptxas, nvcc 13.0: no spills under the 168 that
// 384 threads leave), so the producer / consumer split of the register file (setmaxnreg, 40 / 232) is left out;
// -DDS_TMA_SETMAXNREG turns it on (compiles without warning C7508: 168 registers, no spills; untimed).
//
// The tiles: one block-wide scan at the start writes first[e], the first m-tile of expert e (m-tiles of 128 rows
// numbered consecutively over the experts, as locate_tile numbers them), to shared memory; then both roles walk
// the same sequence t = blockIdx.x, + gridDim.x, ... (t = m-tile * nx + n-tile) independently, finding a tile's
// expert by a binary search of first[], so the producer runs ahead across tile boundaries with no hand-off.
//
// MN-major operands load [64 k][64 columns] boxes (the same 128-byte swizzle: one column block of wg::'s MN-major
// layout each), two for A and four for B, 8 KB apart. Reduce mode is a block a tile, the experts in order of falling
// row count (the hardware hands the blocks out in order, so the long tiles start first: LPT scheduling).
//
// Out-of-range reads are harmless by construction: the TMA zero-fills past K (the k tail) and past the last row
// of A / of E * N rows of B; rows of A past an expert's last row belong to the next expert but only feed output
// rows >= m_end, which the store skips, and rows of B past the expert's N (N % 256 != 0) belong to the next
// expert but only feed columns >= N, which store_pair skips. d_in's k tail reads the next expert's rows of W
// against A's zero fill. Reduce mode's last k-tile reads rows of the next expert in both operands: each consumer
// warpgroup zeroes those rows of its own A column block before its products.
namespace tma {

constexpr int kStages = 4, kThreads = 384, kBM = 128, kBN = 256, kBK = 64;
constexpr int kABytes = kBM * kBK * 2, kBBytes = kBN * kBK * 2, kStageBytes = kABytes + kBBytes;
constexpr int kMaxExperts = 4096;  // first[E + 1] (ints) in shared memory after the ring
static_assert(kABytes % 1024 == 0 && kStageBytes % 1024 == 0, "slots and the B tiles on 1024-byte boundaries");

constexpr int kMaxLptExperts = 1024;  // reduce mode orders the experts by rows up to here (O(E^2 / threads))

// The ring, slack to align it to 1024 bytes, and 2 E + 1 ints: rows mode first[E + 1]; reduce mode order[E] and
// rows[E].
inline size_t smem_bytes(int E) { return size_t(kStages) * kStageBytes + 1024 + size_t(2 * E + 1) * sizeof(int); }

#ifndef DS_WGMMA_TRAP
__device__ __forceinline__ void mbar_init(uint32_t bar, uint32_t count) {
  asm volatile("mbarrier.init.shared::cta.b64 [%0], %1;\n" ::"r"(bar), "r"(count) : "memory");
}
__device__ __forceinline__ void mbar_arrive_expect_tx(uint32_t bar, uint32_t bytes) {
  asm volatile("mbarrier.arrive.expect_tx.shared::cta.b64 _, [%0], %1;\n" ::"r"(bar), "r"(bytes) : "memory");
}
__device__ __forceinline__ void mbar_arrive(uint32_t bar) {
  asm volatile("mbarrier.arrive.shared::cta.b64 _, [%0];\n" ::"r"(bar) : "memory");
}
// Until the phase of parity `parity` has completed (a fresh barrier counts its phase "before 0", parity 1, done).
__device__ __forceinline__ void mbar_wait(uint32_t bar, uint32_t parity) {
  uint32_t done;
  do {
    asm volatile(
        "{\n.reg .pred p;\nmbarrier.try_wait.parity.shared::cta.b64 p, [%1], %2;\nselp.u32 %0, 1, 0, p;\n}\n"
        : "=r"(done)
        : "r"(bar), "r"(parity)
        : "memory");
  } while (!done);
}
// Box (c0 = k, c1 = row) of the 2D tensor map into shared memory at dst; completes bytes on the mbarrier bar.
__device__ __forceinline__ void tma_load_2d(uint32_t dst, const CUtensorMap* map, uint32_t bar, int c0, int c1) {
  asm volatile(
      "cp.async.bulk.tensor.2d.shared::cluster.global.mbarrier::complete_tx::bytes [%0], [%1, {%3, %4}], [%2];\n" ::"r"(
          dst),
      "l"(reinterpret_cast<uint64_t>(map)), "r"(bar), "r"(c0), "r"(c1)
      : "memory");
}
#endif

struct Job {
  int64_t m0, m_end, n0, k0, k1;  // the reduction runs over [k0, k1) (reduce mode: the expert's rows)
  int e, nk;                  // nk: 64-deep k-tiles (reduce mode: 0 for an expert without rows)
};

// Tile t (t < first[E] * nx): expert e with first[e] <= y < first[e + 1] (y = t / nx; empty experts have
// first[e] == first[e + 1], so the search never lands on one).
__device__ __forceinline__ Job find_job(const GemmArgs& a, const int* first, int64_t t, int64_t nx) {
  const int y = int(t / nx);
  int lo = 0, hi = a.E;  // first[lo] <= y < first[hi]
  while (hi - lo > 1) {
    const int mid = (lo + hi) >> 1;
    if (first[mid] <= y) lo = mid;
    else hi = mid;
  }
  int64_t r0, r1;
  expert_rows(a, lo, r0, r1);
  return Job{r0 + int64_t(y - first[lo]) * kBM, r1, (t % nx) * kBN, 0, a.Kd, lo, int((a.Kd + kBK - 1) / kBK)};
}

// Reduce mode, tile t: expert order[t / (my nx)] (the experts by falling row count, so the hardware hands out the
// long tiles first), then m-tile and n-tile.
__device__ __forceinline__ Job find_reduce_job(const GemmArgs& a, const int* order, int64_t t, int64_t nx,
                                               int64_t my) {
  const int e = order[t / (my * nx)];
  const int64_t in_e = t % (my * nx);
  int64_t r0, r1;
  expert_rows(a, e, r0, r1);
  return Job{(in_e / nx) * kBM, a.Md, (in_e % nx) * kBN, r0, r1, e, int((r1 - r0 + kBK - 1) / kBK)};
}

template <bool AKMAJOR, bool BKMAJOR, bool REDUCE, class TC>
__global__ void __launch_bounds__(kThreads, 1)
    grouped_gemm_tma(GemmArgs a, const __grid_constant__ CUtensorMap map_a, const __grid_constant__ CUtensorMap map_b) {
  static_assert(REDUCE ? !AKMAJOR && !BKMAJOR : AKMAJOR, "forward / d_in: A K-major; d_weight: both row-indexed");
  pdl_enter();  // programmatic dependent launch: wait for the previous kernel (common.cuh)
#ifdef DS_WGMMA_TRAP
  __trap();
#else
  extern __shared__ __align__(1024) unsigned char tma_smem[];
  __shared__ __align__(8) uint64_t full_bar[kStages], empty_bar[kStages];
  using Scan = cub::BlockScan<int, kThreads>;
  __shared__ typename Scan::TempStorage scan_tmp;
  // The static shared memory comes first: align the ring to the swizzle's 1024 bytes by hand.
  unsigned char* ring = tma_smem + ((1024 - (uint32_t(__cvta_generic_to_shared(tma_smem)) & 1023)) & 1023);
  const uint32_t ring_addr = uint32_t(__cvta_generic_to_shared(ring));
  int* first = reinterpret_cast<int*>(ring + kStages * kStageBytes);  // rows mode; reduce mode: order[E], rows[E]
  const uint32_t full0 = uint32_t(__cvta_generic_to_shared(full_bar));
  const uint32_t empty0 = uint32_t(__cvta_generic_to_shared(empty_bar));

  const int64_t nx = (a.Nd + kBN - 1) / kBN, my = REDUCE ? (a.Md + kBM - 1) / kBM : 0;
  int64_t ntiles;
  if constexpr (REDUCE) {
    // order[i]: the expert with the i-th most rows (ties by number); identity past kMaxLptExperts.
    int* order = first;
    int* rows = first + a.E;
    for (int e = threadIdx.x; e < a.E; e += kThreads) {
      int64_t r0, r1;
      expert_rows(a, e, r0, r1);
      rows[e] = int(min(r1 - r0, int64_t(INT32_MAX)));
    }
    __syncthreads();
    for (int e = threadIdx.x; e < a.E; e += kThreads) {
      int rank = e;
      if (a.E <= kMaxLptExperts) {
        rank = 0;
        const int re = rows[e];
        for (int f = 0; f < a.E; ++f) rank += rows[f] > re || (rows[f] == re && f < e);
      }
      order[rank] = e;
    }
    ntiles = int64_t(a.E) * my * nx;
  } else {
    // first[e]: the first m-tile of expert e; first[E]: the m-tiles of all experts.
    int running = 0;
    for (int e0 = 0; e0 < a.E; e0 += kThreads) {
      const int e = e0 + int(threadIdx.x);
      int64_t r0 = 0, r1 = 0;
      if (e < a.E) expert_rows(a, e, r0, r1);
      int excl, agg;
      Scan(scan_tmp).ExclusiveSum(int((r1 - r0 + kBM - 1) / kBM), excl, agg);
      if (e < a.E) first[e] = running + excl;
      running += agg;
      __syncthreads();  // scan_tmp is reused
    }
    if (threadIdx.x == 0) first[a.E] = running;
    ntiles = int64_t(running) * nx;
  }
  if (threadIdx.x == 0) {
    for (int s = 0; s < kStages; ++s) {
      mbar_init(full0 + 8 * s, 1);
      mbar_init(empty0 + 8 * s, 8);
    }
    asm volatile("fence.mbarrier_init.release.cluster;\n" ::: "memory");
  }
  __syncthreads();
  if (int64_t(blockIdx.x) >= ntiles) return;  // uniform: no tile for this block
  auto job = [&](int64_t t) {
    if constexpr (REDUCE) return find_reduce_job(a, first, t, nx, my);
    else return find_job(a, first, t, nx);
  };

  if (threadIdx.x < 128) {  // the producer warpgroup: one thread issues the loads, the others leave
#ifdef DS_TMA_SETMAXNREG
    asm volatile("setmaxnreg.dec.sync.aligned.u32 40;\n" ::: "memory");
#endif
    if (threadIdx.x == 0) {
      asm volatile("prefetch.tensormap [%0];\n" ::"l"(reinterpret_cast<uint64_t>(&map_a)) : "memory");
      asm volatile("prefetch.tensormap [%0];\n" ::"l"(reinterpret_cast<uint64_t>(&map_b)) : "memory");
      int slot = 0;
      uint32_t phase = 0;
      for (int64_t t = blockIdx.x; t < ntiles; t += gridDim.x) {
        const Job j = job(t);
        // B's first row: K-major, row n0 of expert e's [N, K] block; MN-major (d_in), row 0 of expert e's [K, N]
        // block; reduce mode, the rows of `in` themselves.
        const int brow = REDUCE ? 0 : BKMAJOR ? int(int64_t(j.e) * a.Nd + j.n0) : int(int64_t(j.e) * a.Kd);
        // MN-major operands load [64 k][64 columns] boxes side by side, 8 KB apart; boxes wholly past the last
        // column are not loaded (their stale bytes feed only output rows / columns the store skips).
        const int na = AKMAJOR ? 1 : int(min(int64_t(kBM / 64), (a.Md - j.m0 + 63) / 64));
        const int nb = BKMAJOR ? 1 : int(min(int64_t(kBN / 64), (a.Nd - j.n0 + 63) / 64));
        const uint32_t bytes = uint32_t((AKMAJOR ? kABytes : na * 8192) + (BKMAJOR ? kBBytes : nb * 8192));
        for (int kt = 0; kt < j.nk; ++kt) {
          mbar_wait(empty0 + 8 * slot, phase ^ 1);  // the consumers freed the slot (first round: at once)
          const uint32_t full = full0 + 8 * slot, as = ring_addr + uint32_t(slot * kStageBytes), bs = as + kABytes;
          mbar_arrive_expect_tx(full, bytes);  // whole boxes: zero-filled bytes count too
          const int k0 = int(j.k0) + kt * kBK;
          if constexpr (AKMAJOR) tma_load_2d(as, &map_a, full, k0, int(j.m0));  // one [128 rows][64 k] box
          else
            for (int i = 0; i < na; ++i) tma_load_2d(as + i * 8192, &map_a, full, int(j.m0) + 64 * i, k0);
          if constexpr (BKMAJOR) tma_load_2d(bs, &map_b, full, k0, brow);  // one [256 rows][64 k] box
          else
            for (int i = 0; i < nb; ++i) tma_load_2d(bs + i * 8192, &map_b, full, int(j.n0) + 64 * i, brow + k0);
          if (++slot == kStages) {
            slot = 0;
            phase ^= 1;
          }
        }
      }
    }
    return;
  }
#ifdef DS_TMA_SETMAXNREG
  asm volatile("setmaxnreg.inc.sync.aligned.u32 232;\n" ::: "memory");
#endif

  // The consumers: warpgroup cw owns rows 64 cw.. of the tile (acc laid out as wg::store_block reads it).
  const int cw = int(threadIdx.x) / 128 - 1;
  const int lane = threadIdx.x % 32;
  const bool pair = a.vec_c != 0, accum = a.accumulate != 0;
  TC* Cp = static_cast<TC*>(a.C);
  auto release = [&](int s) {  // this warp's products reading slot s have retired
    __syncwarp();
    if (lane == 0) mbar_arrive(empty0 + 8 * s);
  };
  float acc[kBN / 2];
  int slot = 0;
  uint32_t phase = 0;
  for (int64_t t = blockIdx.x; t < ntiles; t += gridDim.x) {
    const Job j = job(t);
    if (j.nk == 0) continue;  // reduce mode, an expert without rows: d_weight += 0
#pragma unroll
    for (int i = 0; i < kBN / 2; ++i) acc[i] = 0.0f;
    wgmma::pin(acc);
    int prev = -1;
#pragma unroll 1
    for (int kt = 0; kt < j.nk; ++kt) {
      mbar_wait(full0 + 8 * slot, phase);
      const uint32_t as = ring_addr + uint32_t(slot * kStageBytes), bs = as + kABytes;
      if constexpr (REDUCE) {
        // The last k-tile runs past the expert's rows into the next expert's (or the zero fill past M): zero those
        // rows of this warpgroup's A column block (it reads no other), so they add nothing whatever B holds there.
        const int valid = int(min(j.k1 - (j.k0 + int64_t(kt) * kBK), int64_t(kBK)));
        if (valid < kBK) {
          unsigned char* blk = ring + slot * kStageBytes + cw * 8192;
          for (int c = valid * 8 + int(threadIdx.x) % 128; c < kBK * 8; c += 128)  // 16-byte chunks, 8 a row
            reinterpret_cast<uint4*>(blk)[c] = make_uint4(0, 0, 0, 0);
          wgmma::fence_proxy_async();  // the generic-proxy stores, before the async proxy's reads
          asm volatile("bar.sync %0, 128;\n" ::"r"(1 + cw) : "memory");  // this warpgroup's stores
        }
      }
      wgmma::fence();
#pragma unroll
      for (int k16 = 0; k16 < kBK / 16; ++k16) {
        // A: this warpgroup's 64 rows. K-major: rows 64 cw.. of [128][64]; MN-major: column block cw of [64][128].
        // B: the whole tile, K-major [256][64] or MN-major [64][256] (four 64-column blocks 8 KB apart).
        const uint64_t da = AKMAJOR ? wgmma::desc_sw128(as + cw * 8192 + k16 * 32, 16, 1024)
                                    : wgmma::desc_sw128(as + cw * 8192 + k16 * 2048, kBK * 128, 1024);
        const uint64_t db = BKMAJOR ? wgmma::desc_sw128(bs + k16 * 32, 16, 1024)
                                    : wgmma::desc_sw128(bs + k16 * 2048, kBK * 128, 1024);
        wgmma::mma_m64n256k16<AKMAJOR ? 0 : 1, BKMAJOR ? 0 : 1>(acc, da, db);
      }
      wgmma::commit();
      wgmma::wait<1>();  // the previous k-tile's products retired: its slot may be refilled
      if (prev >= 0) release(prev);
      prev = slot;
      if (++slot == kStages) {
        slot = 0;
        phase ^= 1;
      }
    }
    wgmma::wait<0>();
    wgmma::pin(acc);
    release(prev);  // the producer refills during the write-back
    wg::store_block<kBN, TC>(REDUCE ? Cp + j.e * a.c_estride : Cp, a.ldc, acc, j.m0 + cw * 64, j.m_end, j.n0, a.Nd,
                             pair, accum);
  }
#endif
}

}  // namespace tma

// ---- bf16 forward at decode: a few rows per expert (grouped GEMV on tensor cores) ------------------------------
// Taken by default up to one row per expert on average (kDecodeRowsPerExpert, with the measurements).
// At decode the forward reads each active expert's whole W_e [N, K] for a handful of rows: the cost is the weight
// stream, and what matters is how many bytes are in flight. The tiled kernels above give a 64-column slice of W_e
// to one block that walks K in a latency-bound loop (batch 1: 4 experts x 8 blocks do all the work). This one:
//   grid (ceil(N / (16 MT)), min(E, M)): block (x, y) takes 16 MT output columns of the y-th expert that has rows
//     (found by a warp ballot over the offsets: no block is spent on an empty expert, M bounds the active ones).
//   8 warps split K: per 1024-deep slice, warp w owns the 32-deep chunks w, w + 8, w + 16, w + 24 (all warps busy
//     at K 512), and issues its 16-byte weight loads for all of them at once (8 MT loads of 16 bytes per thread,
//     streamed past L1), before anything waits.
//   The expert's rows (up to 32 per pass, zero-padded to 8) are staged in shared memory by cp.async meanwhile.
//   Products on mma.sync m16n8k16 with the roles swapped: A = 16 weight rows (output columns) x 16 k, B = 16 k x
//     8 input rows, so a row tile of 8 is the small dimension. The k order inside a 32-deep chunk is permuted
//     (the same permutation on both operands, so the sum is unchanged): lane (g, t) holds physical k 8t .. 8t + 7
//     of weight rows g and g + 8 and of input row g, which is one 16-byte load each; the first mma takes k 8t .. 8t
//     + 3 as its logical (2t, 2t + 1, 2t + 8, 2t + 9), the second 8t + 4 .. 8t + 7.
//   The 8 warps' partial sums go through shared memory and are added in warp order (fixed: deterministic, no
//     atomics), one write per output (=|+=), stores along n.
// Experts with more than 32 rows take several passes (the weights are re-read, from L2 mostly): correct for any
// load, fast for the few rows of decode. Host guarantees (launch_pipelined): bf16, 16-byte aligned in and W,
// K % 8 == 0 (so an 8-element group lies wholly inside or outside K).
namespace dec {
constexpr int kWarps = 8, kThreads = kWarps * 32;
constexpr int kU = 4;                        // 32-deep k-chunks per warp per slice
constexpr int kSlice = kWarps * kU * 32;     // k per slice (1024)
constexpr int kPitch = kSlice + 32;          // staged row pitch in elements: 132 16-byte units = 4 mod 8, so the
                                             // 8 rows x 4 lanes of a quarter warp's 16-byte reads hit distinct banks
constexpr int kMaxRows = 32;                 // rows per pass: 4 tiles of 8
constexpr size_t smem_bytes(int rows) { return size_t(rows) * kPitch * sizeof(__nv_bfloat16); }
// The partial sums (kWarps x tiles x MT x 32 lanes x 4 f32) reuse the staging area: 4096 MT bytes per 8 rows.
static_assert(kWarps * 4 * 4 * 128 <= 8 * kPitch * 2, "partials of MT <= 4 fit the staging area of 8 rows");

__device__ __forceinline__ uint4 ld_stream16(const void* p) {  // read once: no L1 allocation
  uint4 v;
  asm("ld.global.nc.L1::no_allocate.v4.u32 {%0, %1, %2, %3}, [%4];\n"
      : "=r"(v.x), "=r"(v.y), "=r"(v.z), "=r"(v.w)
      : "l"(p));
  return v;
}

// The slot-th expert (in expert order) whose clamped row range is not empty; false if there are fewer. Every
// lane of every warp computes the same answer.
__device__ __forceinline__ bool active_expert(const GemmArgs& a, int64_t slot, int& e, int64_t& r0, int64_t& r1) {
  const int lane = threadIdx.x & 31;
  int64_t before = 0;
  for (int e0 = 0; e0 < a.E; e0 += 32) {
    int64_t q0 = 0, q1 = 0;
    if (e0 + lane < a.E) expert_rows(a, e0 + lane, q0, q1);
    const bool has = q1 > q0;
    const unsigned mask = __ballot_sync(0xffffffffu, has);
    const int cnt = __popc(mask);
    if (slot < before + cnt) {  // uniform
      const int want = int(slot - before);
      const unsigned hit = __ballot_sync(0xffffffffu, has && __popc(mask & ((1u << lane) - 1u)) == want);
      const int l = __ffs(int(hit)) - 1;
      e = e0 + l;
      r0 = __shfl_sync(0xffffffffu, q0, l);
      r1 = __shfl_sync(0xffffffffu, q1, l);
      return true;
    }
    before += cnt;
  }
  return false;
}

// Where a 16 x 8 tile's partial sum for output column m (0..15) and row rr (0..7) sits among the tile's 128 stored
// floats: acc[q] of lane (g, t) holds column g + 8 (q >> 1), row 2t + (q & 1), stored at lane * 4 + q.
__device__ __forceinline__ int partial_slot(int m, int rr) {
  return ((m & 7) * 4 + (rr >> 1)) * 4 + (rr & 1) + 2 * (m >> 3);
}

// MT: 16-column tiles per block. max_rows (8..32, a multiple of 8): rows per pass, which sizes the shared memory.
// MT 1: 80 registers (a few bytes spilled, outside the k-loop), 3 blocks of 8 warps per SM (67.6 KB of shared
// memory each at 32 rows); MT 2 (a benchmark variant): 166 registers, 1 block per SM.
// PAIR (MT 2, grouped_swiglu_forward): tile 0 holds 16 columns of the gate product (weights B), tile 1 the same
// columns of the up product (B2), and the block writes silu(gate) * up, each product rounded to TC first, as
// swiglu_forward reads them.
template <int MT, class TC, bool PAIR = false>
__global__ void __launch_bounds__(kThreads, MT == 1 ? 3 : 1) grouped_gemv(GemmArgs a, int max_rows) {
  static_assert(MT >= 1 && MT <= 4, "column tiles per block");
  static_assert(!PAIR || MT == 2, "a SwiGLU pair is two column tiles");
  constexpr int kCols = PAIR ? 16 : 16 * MT;  // output columns per block
  using bf16 = __nv_bfloat16;
  extern __shared__ __align__(128) unsigned char dec_smem[];
  bf16* xs = reinterpret_cast<bf16*>(dec_smem);     // staged rows [max_rows][kPitch]
  float* red = reinterpret_cast<float*>(dec_smem);  // then the partial sums [kWarps][tiles][MT][32][4]
  const bf16* A = static_cast<const bf16*>(a.A);
  TC* C = static_cast<TC*>(a.C);
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5, g = lane >> 2, t = lane & 3;
  const int64_t n0 = int64_t(blockIdx.x) * kCols;
  const int64_t slots = a.E < a.M ? int64_t(a.E) : a.M;
  uint4 wr[kU][MT][2];  // this warp's weights for one k-slice
  // 1. The weights of expert e for the slice at ks, all loads in flight at once.
  auto load_weights = [&](int e, int64_t ks) {
    const int kw = int(a.Kd - ks < kSlice ? a.Kd - ks : kSlice);
    const bf16* We = static_cast<const bf16*>(a.B) + e * a.b_estride;
    const bf16* We2 = PAIR ? static_cast<const bf16*>(a.B2) + e * a.b_estride : We;
#pragma unroll
    for (int u = 0; u < kU; ++u) {
      const int kl = (warp + kWarps * u) * 32 + 8 * t;
#pragma unroll
      for (int mt = 0; mt < MT; ++mt)
#pragma unroll
        for (int h = 0; h < 2; ++h) {
          const int64_t n = n0 + (PAIR ? 0 : 16 * mt) + g + 8 * h;
          const bf16* W = PAIR && mt == 1 ? We2 : We;
          wr[u][mt][h] = make_uint4(0u, 0u, 0u, 0u);
          if (n < a.Nd && kl < kw) wr[u][mt][h] = ld_stream16(W + n * a.ldb_n + ks + kl);
        }
    }
  };
  // With settled offsets the first slot's expert and its first slice's weights are found and loaded before the
  // wait (the offsets' writer ran two or more launches back; weights are parameters): only the rows wait.
  int e = 0;
  int64_t r0 = 0, r1 = 0;
  const bool early = a.off_settled && blockIdx.y < slots && active_expert(a, blockIdx.y, e, r0, r1);
  if (early) load_weights(e, 0);
  pdl_enter();  // programmatic dependent launch: wait for the previous kernel (common.cuh)
  for (int64_t slot = blockIdx.y; slot < slots; slot += gridDim.y) {
    const bool first = early && slot == blockIdx.y;
    if (!first && !active_expert(a, slot, e, r0, r1)) return;  // uniform; later slots are empty too
    for (int64_t rc = r0; rc < r1; rc += max_rows) {
      const int rows = int(r1 - rc < max_rows ? r1 - rc : max_rows);
      const int nt = (rows + 7) >> 3;  // 8-row tiles this pass (1..4)
      float acc[4][MT][4];
#pragma unroll
      for (int j = 0; j < 4; ++j)
#pragma unroll
        for (int mt = 0; mt < MT; ++mt)
#pragma unroll
          for (int q = 0; q < 4; ++q) acc[j][mt][q] = 0.0f;

      for (int64_t ks = 0; ks < a.Kd; ks += kSlice) {
        const int kw = int(a.Kd - ks < kSlice ? a.Kd - ks : kSlice);  // a multiple of 8
        if (!(first && rc == r0 && ks == 0)) load_weights(e, ks);
        // 2. The rows of this pass, k in [ks, ks + kw), into shared memory (rows past the expert zero-filled).
        __syncthreads();  // the previous slice's (or pass's) readers of the shared memory are done
        const int cpr = kw >> 3;
        for (int c = threadIdx.x; c < nt * 8 * cpr; c += kThreads) {
          const int r = c / cpr, kk = (c - r * cpr) * 8;
          const bool ok = r < rows;
          attn::cp_async16(xs + r * kPitch + kk, ok ? A + (rc + r) * a.lda_m + ks + kk : A, ok);
        }
        attn::cp_async_commit();
        attn::cp_async_wait<0>();
        __syncthreads();
        // 3. Products: chunk u, row tile j, column tile mt; two k16 steps per chunk.
#pragma unroll
        for (int u = 0; u < kU; ++u) {
          const int kc = (warp + kWarps * u) * 32;
          if (kc < kw) {  // uniform over the warp
            const int kl = kc + 8 * t;
#pragma unroll
            for (int j = 0; j < 4; ++j) {
              if (j < nt) {  // uniform
                uint4 xb = make_uint4(0u, 0u, 0u, 0u);
                if (kl < kw) xb = *reinterpret_cast<const uint4*>(xs + (8 * j + g) * kPitch + kl);
#pragma unroll
                for (int mt = 0; mt < MT; ++mt) {
                  const uint4 lo = wr[u][mt][0], hi = wr[u][mt][1];
                  const uint32_t f0[4] = {lo.x, hi.x, lo.y, hi.y}, f1[4] = {lo.z, hi.z, lo.w, hi.w};
                  attn::mma_bf16(acc[j][mt], f0, xb.x, xb.y);
                  attn::mma_bf16(acc[j][mt], f1, xb.z, xb.w);
                }
              }
            }
          }
        }
      }
      // 4. Partial sums of the 8 warps, added in warp order. acc[j][mt][q]: output column 16 mt + g + 8 (q >> 1),
      // row 8 j + 2 t + (q & 1) of this pass.
      __syncthreads();  // all warps are done with the staged rows: the area takes the partials
      const int per = nt * MT * 128;
#pragma unroll
      for (int j = 0; j < 4; ++j)
#pragma unroll
        for (int mt = 0; mt < MT; ++mt)
          if (j < nt)
            *reinterpret_cast<float4*>(red + warp * per + (j * MT + mt) * 128 + lane * 4) =
                make_float4(acc[j][mt][0], acc[j][mt][1], acc[j][mt][2], acc[j][mt][3]);
      __syncthreads();
      if constexpr (PAIR) {
        for (int i = threadIdx.x; i < nt * 128; i += kThreads) {  // i = (tile j, row rr, column m), columns fastest
          const int m = i & 15, rr = (i >> 4) & 7, j = i >> 7;
          const int idx = partial_slot(m, rr);
          float vg = 0.0f, vu = 0.0f;
#pragma unroll
          for (int w = 0; w < kWarps; ++w) {
            vg += red[w * per + (j * 2) * 128 + idx];
            vu += red[w * per + (j * 2 + 1) * 128 + idx];
          }
          const int64_t row = rc + 8 * j + rr, col = n0 + m;
          if (row < r1 && col < a.Nd) {
            const float gv = to_f(from_f<TC>(vg)), uv = to_f(from_f<TC>(vu));
            C[row * a.ldc + col] = from_f<TC>(gv * (1.0f / (1.0f + expf(-gv))) * uv);  // swiglu_fwd_kernel's
          }
        }
        continue;  // the next pass's first barrier guards the partials
      }
      for (int i = threadIdx.x; i < per; i += kThreads) {  // i = (tile j, row rr, column cc), columns fastest
        const int cc = i % (16 * MT), rr = (i / (16 * MT)) & 7, j = i / (128 * MT);
        const int mt = cc >> 4, m = cc & 15;
        const int idx = (j * MT + mt) * 128 + partial_slot(m, rr);
        float v = 0.0f;
#pragma unroll
        for (int w = 0; w < kWarps; ++w) v += red[w * per + idx];
        const int64_t row = rc + 8 * j + rr, col = n0 + cc;
        if (row < r1 && col < a.Nd) {
          TC* c = C + row * a.ldc + col;
          *c = from_f<TC>(a.accumulate ? to_f(*c) + v : v);
        }
      }
      // The next pass's (or slot's) first barrier comes before its staging overwrites the partials.
    }
  }
}
}  // namespace dec

// The warpgroup-MMA kernels exist in sm_90a builds (CMAKE_CUDA_ARCHITECTURES 90a, the default): kernels/CMakeLists.txt
// defines DS_CUDA_WGMMA there.
#ifdef DS_CUDA_WGMMA
constexpr bool kWgmma = true;
#else
constexpr bool kWgmma = false;
#endif

// Which tiles the bf16 training-shape products use: 0 = the previous kernels (WMMA 64 x 64 for forward / d_in,
// the synchronous tiled kernel for d_weight), 1 = mma.sync 128 x 128, 2 = mma.sync 128 x 256 (the default without
// sm_90a), 3 = wgmma 128 x 256, 4 = wgmma 128 x 128, 5 = wgmma on TMA loads with a producer warpgroup (tma::; the
// default with sm_90a; what TMA cannot describe as 3). Set only by the benchmark
// (bench/gpu/bench_grouped_gemm.cu, through grouped_matmul_bench_variant) to compare them in one run.
int g_big_variant = kWgmma ? 5 : 2;

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

// cuTensorMapEncodeTiled from the driver through the runtime (no link against libcuda); null when unavailable.
PFN_cuTensorMapEncodeTiled_v12000 tensor_map_encoder() {
  static const PFN_cuTensorMapEncodeTiled_v12000 fn = [] {
    void* p = nullptr;
    cudaDriverEntryPointQueryResult q = cudaDriverEntryPointSymbolNotFound;
    if (cudaGetDriverEntryPointByVersion("cuTensorMapEncodeTiled", &p, 12000, cudaEnableDefault, &q) != cudaSuccess ||
        q != cudaDriverEntryPointSuccess) {
      (void)cudaGetLastError();
      p = nullptr;
    }
    return reinterpret_cast<PFN_cuTensorMapEncodeTiled_v12000>(p);
  }();
  return fn;
}

// A 2D bf16 tensor map, rows x cols (cols contiguous, rows pitch bytes apart), box box_rows x 64 columns, the
// 128-byte swizzle, zero fill out of bounds. False when TMA cannot describe it (the caller falls back).
bool encode_bf16_2d(CUtensorMap& map, const void* base, int64_t rows, int64_t cols, int64_t pitch, uint32_t box_rows) {
  const PFN_cuTensorMapEncodeTiled_v12000 enc = tensor_map_encoder();
  // TMA: 16-byte aligned base, a row pitch a multiple of 16 bytes below 2^40, dimensions in [1, 2^32].
  if (enc == nullptr || !is_aligned16(base) || pitch % 16 != 0 || pitch >= (int64_t(1) << 40) || rows < 1 || cols < 1 ||
      rows > (int64_t(1) << 32) || cols > (int64_t(1) << 32))
    return false;
  const cuuint64_t dim[2] = {cuuint64_t(cols), cuuint64_t(rows)};
  const cuuint64_t stride[1] = {cuuint64_t(pitch)};
  const cuuint32_t box[2] = {uint32_t(tma::kBK), box_rows}, estride[2] = {1, 1};
  return enc(&map, CU_TENSOR_MAP_DATA_TYPE_BFLOAT16, 2, const_cast<void*>(base), dim, stride, box, estride,
             CU_TENSOR_MAP_INTERLEAVE_NONE, CU_TENSOR_MAP_SWIZZLE_128B, CU_TENSOR_MAP_L2_PROMOTION_L2_256B,
             CU_TENSOR_MAP_FLOAT_OOB_FILL_NONE) == CUDA_SUCCESS;
}

// Variant 5 (tma::grouped_gemm_tma): false leaves the product to the caller (what TMA or the kernel's int32
// coordinates cannot describe). Rows mode persistent, a block an SM; reduce mode a block a tile, the heavy experts'
// tiles first (see wg::'s launch for why not persistent there).
template <bool AKMAJOR, bool BKMAJOR, bool REDUCE>
bool launch_tma(const Context& ctx, const char* op, const Tensor& c_dtype, GemmArgs a) {
  if constexpr (REDUCE ? AKMAJOR || BKMAJOR : !AKMAJOR) {
    return false;
  } else {
    if (!kWgmma || a.E > tma::kMaxExperts || a.Kd < 0 || a.Nd < 1 || (!REDUCE && a.Kd < 1) || (REDUCE && a.Md < 1))
      return false;
    const int64_t lim = int64_t(1) << 31;  // the kernel's coordinates and tile numbers are int32
    CUtensorMap map_a, map_b;
    bool ok;
    if constexpr (REDUCE) {  // A = d_out [M, Md] read as (r, m), B = in [M, Nd] read as (r, n): 64 x 64 boxes
      ok = a.lda_m == 1 && a.ldb_n == 1 && a.M < lim && a.Md < lim && a.Nd < lim &&
           encode_bf16_2d(map_a, a.A, a.M, a.Md, a.lda_k * 2, 64) &&
           encode_bf16_2d(map_b, a.B, a.M, a.Nd, a.ldb_k * 2, 64);
    } else if constexpr (BKMAJOR) {  // forward: B = W [E N, K]
      ok = a.lda_k == 1 && a.ldb_k == 1 && a.b_estride == a.Nd * a.ldb_n && a.M < lim && a.Kd < lim &&
           int64_t(a.E) * a.Nd < lim && encode_bf16_2d(map_a, a.A, a.M, a.Kd, a.lda_m * 2, tma::kBM) &&
           encode_bf16_2d(map_b, a.B, int64_t(a.E) * a.Nd, a.Kd, a.ldb_n * 2, tma::kBN);
    } else {  // d_in: B = W [E K, N] read as (k, n), 64 x 64 boxes
      ok = a.lda_k == 1 && a.ldb_n == 1 && a.b_estride == a.Kd * a.ldb_k && a.M < lim && a.Nd < lim &&
           int64_t(a.E) * a.Kd < lim && encode_bf16_2d(map_a, a.A, a.M, a.Kd, a.lda_m * 2, tma::kBM) &&
           encode_bf16_2d(map_b, a.B, int64_t(a.E) * a.Kd, a.Nd, a.ldb_k * 2, 64);
    }
    if (!ok) return false;
    const dim3 tg = tile_grid<REDUCE>(a, tma::kBM, tma::kBN);  // rows mode: sets a.ytiles (a bound; the kernel counts)
    const int64_t tiles = int64_t(tg.x) * (REDUCE ? int64_t(tg.y) * tg.z : a.ytiles);
    if (tiles == 0) return true;
    if (REDUCE && tiles >= lim) return false;
    const dim3 grid(unsigned(REDUCE ? tiles : std::min<int64_t>(tiles, attn::num_sms())), 1, 1);
    const size_t smem = tma::smem_bytes(a.E);
    moe::dispatch_f32_bf16(c_dtype, op, "out", [&](auto zc) {
      using TC = decltype(zc);
      auto* kernel = tma::grouped_gemm_tma<AKMAJOR, BKMAJOR, REDUCE, TC>;
      attn::allow_smem(kernel, smem);
      launch(kernel, grid, tma::kThreads, smem, moe::stream_of(ctx), a, map_a, map_b);
    });
    moe::launched(op);
    return true;
  }
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
      if (launch_tma<AKMAJOR, BKMAJOR, REDUCE>(ctx, op, c_dtype, a)) return;
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
// 0 <= variant <= 2 (5 with sm_90a) and returns the previous one. Not thread-safe: only for a single-threaded
// benchmark or test.
int grouped_matmul_bench_variant(int variant) {
  const int prev = g_big_variant;
  if (variant >= 0 && variant <= (kWgmma ? 5 : 2)) g_big_variant = variant;
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
// SwiGLU in its epilogue. Otherwise the unfused sequence on stream-ordered scratch.
void grouped_swiglu_forward(const Context& ctx, Tensor out, Tensor in, Tensor gate_w, Tensor up_w, Tensor offsets) {
  const char* op = "grouped_swiglu_forward";
  const int64_t M = moe::rows(in), K = moe::cols(in), E = gate_w.shape[0], F = gate_w.shape[1];
  if (M == 0 || F == 0 || E == 0) return;
  moe::set_device(ctx, op);
  const int64_t es = moe::esize(in);
  const bool pair = in.dtype == DType::bf16 && gate_w.dtype == DType::bf16 && K > 0 && K % 8 == 0 &&
                    is_aligned16(in.data) && is_aligned16(gate_w.data) && is_aligned16(up_w.data) &&
                    (K * es) % 16 == 0 &&
                    g_decode_variant == 0 && M <= kDecodeRowsPerExpert * E;
  if (pair) {
    GemmArgs a = forward_args(out, in, gate_w, offsets, Accum::overwrite);
    a.B2 = up_w.data;
    launch_decode<2, true>(ctx, op, out, a);
    return;
  }
  cudaStream_t st = moe::stream_of(ctx);
  const size_t bytes = size_t(M * F) * dtype_size(out.dtype);
  TempBuffer g(bytes, st), u(bytes, st);
  const Tensor gt(g.get(), out.dtype, {M, F}, out.device), ut(u.get(), out.dtype, {M, F}, out.device);
  cuda::grouped_matmul_forward(ctx, gt, in, gate_w, offsets, Accum::overwrite, Inputs::fresh);
  cuda::grouped_matmul_forward(ctx, ut, in, up_w, offsets, Accum::overwrite, Inputs::fresh);
  cuda::swiglu_forward(ctx, out, gt, ut);
}

void grouped_matmul_backward(const Context& ctx, Tensor d_in, Tensor d_weight, Tensor d_out, Tensor in, Tensor weight,
                             Tensor offsets, Accum acc_in) {
  const char* op = "grouped_matmul_backward";
  const int64_t M = moe::rows(d_out), N = moe::cols(d_out), E = weight.shape[0], K = weight.shape[2];
  if (M == 0 || E == 0 || K == 0) return;
  moe::set_device(ctx, op);
  const int64_t es = moe::esize(d_out);
  const auto* off = static_cast<const int64_t*>(offsets.data);
  if (!d_in.empty()) {  // d_in[r] = d_out[r] · W_e: A = d_out [M, N] (k = N), B_e(k, n) = W_e[k, n]
    if (N == 0) {
      if (acc_in == Accum::overwrite)
        moe::ok(cudaMemsetAsync(d_in.data, 0, size_t(M * K * moe::esize(d_in)), moe::stream_of(ctx)), op, "memset");
    } else {
      GemmArgs a{};
      a.A = d_out.data;
      a.B = weight.data;
      a.C = d_in.data;
      a.off = off;
      a.E = int(E);
      a.M = M;
      a.Nd = K;
      a.Kd = N;
      a.lda_m = N;
      a.lda_k = 1;
      a.ldb_k = K;
      a.ldb_n = 1;
      a.ldc = K;
      a.b_estride = N * K;
      a.accumulate = acc_in == Accum::add;
      a.vec_a = is_aligned16(d_out.data) && (N * es) % 16 == 0;
      a.vec_b = is_aligned16(weight.data) && (K * es) % 16 == 0;
      a.vec_c = aligned_c(d_in, K);
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
    // bf16 operands with 16-byte rows: the large-tile kernel (d_out^T as an M-major A, in as an N-major B).
    if (d_out.dtype == DType::bf16 && a.vec_a && a.vec_b && g_big_variant != 0)
      launch_big_variant<false, false, true>(ctx, op, d_weight, a);
    else
      launch_gemm<false, true, true>(ctx, op, d_out, d_weight, a);
  }
}

}  // namespace ds::cuda
