// Part of kernels/grouped_matmul.cu: pipe::, the cp.async WMMA kernel (decode-size rows per expert).
// Included there, inside its anonymous namespace in ds::cuda, after the parts before it (whose names it
// uses); not a standalone header.
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

