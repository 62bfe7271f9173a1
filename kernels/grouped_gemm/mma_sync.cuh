// Part of kernels/grouped_matmul.cu: big::, the large-tile mma.sync kernel (training shapes without sm_90a).
// Included there, inside its anonymous namespace in ds::cuda, after the parts before it (whose names it
// uses); not a standalone header.
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

