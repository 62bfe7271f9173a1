// Part of kernels/grouped_matmul.cu: wg::, the wgmma kernel on cp.async loads (variant 3).
// Included there, inside its anonymous namespace in ds::cuda, after the parts before it (whose names it
// uses); not a standalone header.
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

