// Part of kernels/attention.cu: the backward's dK/dV and dQ kernels on warpgroup MMA (sm_90a; the default at 96/64).
// Included there, inside its anonymous namespace in ds::cuda, after the parts before it (whose names it
// uses); not a standalone header.
// ---- backward dK/dV on Hopper's warpgroup MMA (sm_90a; the default at 96/64) ---------------------------------
// The job of attn_bwd_dkdv_mma (64 keys a block, a loop over query steps of BQ), with each product one m64nNk16
// wgmma per k16 step of the block's one warpgroup: S^T = K Q^T and dP^T = V dO^T read both operands from shared
// memory (no ldmatrix); dV += P^T dO and dK += dS^T Q take P^T and dS^T as register A fragments (S^T's accumulator
// layout is the A fragment layout, as with mma.sync) and read dO and Q transposed (MN-major). Tiles sit in
// wgmma.cuh's 128-byte swizzled layout, Dqk 96 as two 64-wide column blocks (the pad zero-filled, never read). A
// step: S^T and dP^T go out as two groups; P^T is computed once S^T lands (dP^T in flight) and dV's products issued,
// then dS^T once dP^T lands and dK's products; all retire before the step's closing barrier, after which the other
// buffer is refilled. wgmma is warpgroup-wide, so no warp skips a step (masked pairs add exact zeros).
// TMA (variants 8 and 9, sm_90a): one thread loads each step's Q, dO, lse and D by the TMA unit (tensor maps for Q and
// dO, whose 128-byte swizzle is the layout above; plain bulk copies for lse and D) two steps ahead, each buffer's
// arrival an mbarrier the warps wait on, so a step has one block-wide barrier (before its buffer is refilled) instead
// of two, and no thread spends instructions on addresses, zero fills or the lse / D round trips. Where T is a
// multiple of the query step only (no step crosses a sequence's end); the same arithmetic, so the same bits.
namespace wgbwd {

// Rows row0.. of one head's keys into a swizzled [ROWS][KB 64-wide column blocks] tile: from k alone, or (k_rope
// set: MLA in place) columns 0..63 from k and 64..DQK-1 from k_rope.
template <int ROWS, int DQK, int NT>
__device__ __forceinline__ void load_k_tile(unsigned char* s, const bf16_t* k, int64_t ld_k, const bf16_t* k_rope,
                                            int64_t ld_kr, int64_t row0, int64_t T) {
  constexpr int KB = (DQK + 63) / 64;
  if (k_rope == nullptr) {
    wgmma::load_tile_sw128<ROWS, KB * 64, NT>(s, k, ld_k, row0, T, 0, DQK);
  } else {
    static_assert(KB == 2, "MLA in place: 64 columns from k, the rest (<= 64) from k_rope");
    wgmma::load_tile_sw128<ROWS, 64, NT>(s, k, ld_k, row0, T, 0, 64);
    wgmma::load_tile_sw128<ROWS, 64, NT>(s + ROWS * 128, k_rope, ld_kr, row0, T, 0, DQK - 64);
  }
}

// This block's (b, h) pointers into k, k_rope and v (AttnArgs' layout).
struct KvPtrs {
  const bf16_t *k, *kr, *v;
};
__device__ __forceinline__ KvPtrs kv_ptrs(const AttnArgs<bf16_t>& a, int b, int h) {
  const int64_t bt = int64_t(b) * a.T;
  return {a.k + bt * a.ld_k + h * a.hs_k, a.k_rope ? a.k_rope + bt * a.ld_kr + h * a.hs_kr : nullptr,
          a.v + bt * a.ld_v + h * a.hs_v};
}

template <int DQK, int DV, int BQ, bool DSOUT = false> struct Cfg {
  static constexpr int KB = (DQK + 63) / 64, VB = (DV + 63) / 64;  // 64-wide column blocks
  static constexpr int k_bytes = 64 * KB * 128, v_bytes = 64 * VB * 128;
  static constexpr int q_bytes = BQ * KB * 128, do_bytes = BQ * VB * 128;  // one buffer
  // DSOUT: each warp's staging rows for dS^T (16 keys x BQ queries, rows padded by 16 bytes: conflict-free words)
  static constexpr int ds_pitch = BQ * 2 + 16, ds_bytes = DSOUT ? 4 * 16 * ds_pitch : 0;
  // + 16: TMA's two mbarriers; + 1024: slack to align the tiles to 1024 bytes (the swizzle is a function of the
  // address)
  static constexpr size_t smem =
      size_t(k_bytes + v_bytes + 2 * q_bytes + 2 * do_bytes + ds_bytes) + 4 * BQ * sizeof(float) + 16 + 1024;
};

// The TMA kernels' maps: Q [B T, H DQK] and dO [B T, H DV] as 2D views, boxes of BQ rows x 64 columns, the 128-byte
// swizzle (empty for the others).
struct QdoMaps {
  CUtensorMap q, dout;
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

// dS^T's tiles for attn_bwd_dq_ds_wgmma: per (b, h) block row bh, the triangle of 64 x 64 tiles (key tile j <= query
// tile i, n = ceil(T / 64) a side) stored by key tile, each from query tile j on; a tile is [64 keys][64 queries]
// bf16, row-major (the MN-major A operand of dQ = dS K). Masked pairs hold exact zeros, so the dQ kernel reads whole
// tiles.
__host__ __device__ __forceinline__ int64_t ds_tile(int64_t bh, int j, int i, int n) {
  return bh * (int64_t(n) * (n + 1) / 2) + int64_t(j) * n - int64_t(j) * (j - 1) / 2 + (i - j);
}
// Stores a step's dS^T fragments (sf: k16 step kq holds queries 16 kq.., this warp's rows g and g + 8, as to_frags
// packs them) at queries q0.. of key tile j's row of tiles: through this warp's staging rows in shared memory
// (stage: 16 rows of pitch bytes), so that each row goes out as whole 16-byte chunks (4-byte stores straight from
// the fragments touched every 32-byte sector twice).
template <int BQ, int PITCH>
__device__ __forceinline__ void store_ds(bf16_t* ds, const uint32_t (&sf)[BQ / 16][4], unsigned char* stage, int bh,
                                         int j, int q0, int T, int warp, int lane) {
  const int g = lane >> 2, t4 = lane & 3;
#pragma unroll
  for (int kq = 0; kq < BQ / 16; ++kq) {
    uint32_t* p = reinterpret_cast<uint32_t*>(stage + g * PITCH) + 8 * kq + t4;
    p[0] = sf[kq][0];                 // row g, queries 16 kq + 2 t4, + 1
    p[8 * PITCH / 4] = sf[kq][1];     // row g + 8
    p[4] = sf[kq][2];                 // row g, queries + 8
    p[8 * PITCH / 4 + 4] = sf[kq][3]; // row g + 8, queries + 8
  }
  __syncwarp();
  constexpr int CPR = BQ / 8;  // 16-byte chunks a row
  bf16_t* tile = ds + ds_tile(bh, j, q0 / 64, (T + 63) / 64) * 4096 + warp * 16 * 64 + (q0 & 63);
#pragma unroll
  for (int c = lane; c < 16 * CPR; c += 32) {
    const int r = c / CPR, cc = c % CPR;
    *reinterpret_cast<uint4*>(tile + r * 64 + cc * 8) = *reinterpret_cast<const uint4*>(stage + r * PITCH + cc * 16);
  }
  __syncwarp();  // the reads are done before the next step's writes
}

}  // namespace wgbwd

// DSOUT: also leaves dS^T (the bf16 values dK's products read) in a.ds for attn_bwd_dq_ds_wgmma (bwd_dq_ds.cuh).
// TMA: Q, dO, lse and D loaded by the TMA unit (maps; above).
template <int DQK, int DV, int BQ, int MINB, bool DSOUT, bool TMA>
__global__ void __launch_bounds__(kMmaThreads, MINB)
    attn_bwd_dkdv_wgmma(AttnArgs<bf16_t> a, const __grid_constant__ wgbwd::QdoMaps maps) {
  pdl_enter();  // programmatic dependent launch: wait for the previous kernel (common.cuh)
  using C = wgbwd::Cfg<DQK, DV, BQ, DSOUT>;
  constexpr int BK = 64;
  extern __shared__ __align__(16) unsigned char smem_raw[];
  unsigned char* Ks = smem_raw + ((1024 - (smem_addr(smem_raw) & 1023)) & 1023);
  unsigned char* Vs = Ks + C::k_bytes;
  unsigned char* Qs = Vs + C::v_bytes;       // [2] buffers
  unsigned char* dOs = Qs + 2 * C::q_bytes;  // [2] buffers
  float* lse_s = reinterpret_cast<float*>(dOs + 2 * C::do_bytes);  // [2][BQ], log2 units (TMA: as stored)
  float* D_s = lse_s + 2 * BQ;                                      // [2][BQ]
  uint64_t* bars = reinterpret_cast<uint64_t*>(D_s + 2 * BQ);       // TMA: [2] a buffer's arrival
  unsigned char* ds_stage = reinterpret_cast<unsigned char*>(bars + 2);  // DSOUT: [4 warps][16][ds_pitch]
  const uint32_t ks = smem_addr(Ks), vs = smem_addr(Vs), qs = smem_addr(Qs), dos = smem_addr(dOs);
  const uint32_t full0 = smem_addr(bars);

  const int tid = threadIdx.x, warp = tid >> 5, lane = tid & 31, g = lane >> 2, t4 = lane & 3;
  const int T = a.T, H = a.H;
  const int k0 = blockIdx.x * BK;
  const int b = blockIdx.y / H, h = blockIdx.y % H;
  const int64_t sq = int64_t(H) * DQK, sv = int64_t(H) * DV;
  const int64_t qoff = (int64_t(b) * T * H + h) * DQK, voff = (int64_t(b) * T * H + h) * DV;
  const bf16_t *qb = a.q + qoff, *dob = a.dout + voff;
  const wgbwd::KvPtrs kv = wgbwd::kv_ptrs(a, b, h);
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
  // TMA: the same by one thread, completing on buffer buf's barrier (lse as stored: scaled to log2 units where read)
  auto issue_q = [&](int i, int buf) {
    const int q0 = (qt0 + i) * BQ, row = b * T + q0;
    const uint32_t bar = full0 + 8 * buf;
    tmacp::mbar_arrive_expect_tx(bar, C::q_bytes + C::do_bytes + 2 * BQ * sizeof(float));
#pragma unroll
    for (int cb = 0; cb < C::KB; ++cb)
      tmacp::tma_load_2d(qs + buf * C::q_bytes + cb * BQ * 128, &maps.q, bar, h * DQK + cb * 64, row);
#pragma unroll
    for (int cb = 0; cb < C::VB; ++cb)
      tmacp::tma_load_2d(dos + buf * C::do_bytes + cb * BQ * 128, &maps.dout, bar, h * DV + cb * 64, row);
    tmacp::bulk_load(smem_addr(lse_s + buf * BQ), lseb + q0, BQ * sizeof(float), bar);
    tmacp::bulk_load(smem_addr(D_s + buf * BQ), Db + q0, BQ * sizeof(float), bar);
  };
  if constexpr (TMA) {
    if (tid == 0) tmacp::ring2_start(full0, n_q > 1, issue_q);
  }
  wgbwd::load_k_tile<BK, DQK, kMmaThreads>(Ks, kv.k, a.ld_k, kv.kr, a.ld_kr, k0, T);
  wgmma::load_tile_sw128<BK, C::VB * 64, kMmaThreads>(Vs, kv.v, a.ld_v, k0, T, 0, DV);
  if constexpr (!TMA) load_q(0, 0);
  cp_async_commit();
  if constexpr (TMA) {  // K and V in, the barriers' inits seen by every thread
    cp_async_wait<0>();
    wgmma::fence_proxy_async();
    __syncthreads();
  }

  float dk[DQK / 2], dv[DV / 2];
#pragma unroll
  for (int i = 0; i < DQK / 2; ++i) dk[i] = 0.f;
#pragma unroll
  for (int i = 0; i < DV / 2; ++i) dv[i] = 0.f;
  const int key0 = k0 + warp * 16 + g;  // this lane's keys: key0, key0 + 8

  for (int i = 0; i < n_q; ++i) {
    const int buf = i & 1;
    if constexpr (TMA) {
      tmacp::mbar_wait(full0 + 8 * buf, (i >> 1) & 1);
    } else {
      if (i + 1 < n_q) load_q(i + 1, buf ^ 1);
      cp_async_commit();
      cp_async_wait<1>();
      wgmma::fence_proxy_async();
      __syncthreads();
    }
    const int q0 = (qt0 + i) * BQ;
    const uint32_t qt = qs + buf * C::q_bytes, dot = dos + buf * C::do_bytes;
    const float* lse_t = lse_s + buf * BQ;
    const float* D_t = D_s + buf * BQ;
    auto lse2 = [&](int ql) { return TMA ? lse_t[ql] * kLog2e : lse_t[ql]; };  // log2 units

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
          st[4 * nt + e] = (key > qg || qg >= T) ? 0.f : ex2_ftz(fmaf(st[4 * nt + e], a.scale_log2, -lse2(ql)));
        }
    } else {
#pragma unroll
      for (int nt = 0; nt < BQ / 8; ++nt)
#pragma unroll
        for (int e = 0; e < 4; ++e)
          st[4 * nt + e] = ex2_ftz(fmaf(st[4 * nt + e], a.scale_log2, -lse2(nt * 8 + 2 * t4 + (e & 1))));
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
    if constexpr (DSOUT)
      wgbwd::store_ds<BQ, C::ds_pitch>(a.ds, sf, ds_stage + warp * 16 * C::ds_pitch, blockIdx.y, blockIdx.x, q0, T,
                                       warp, lane);
    wgmma::wait<0>();
    wgbwd::pin_frags(pf);
    wgbwd::pin_frags(sf);
    wgmma::pin(dv);
    wgmma::pin(dk);
    if constexpr (TMA) {
      if (i + 2 < n_q) {
        __syncthreads();  // every product and read of this step's buffer has retired: refill it two steps ahead
        if (tid == 0) issue_q(i + 2, buf);
      }
    } else {
      __syncthreads();  // every product of this step has retired: the buffers may be refilled
    }
  }

#pragma unroll
  for (int i = 0; i < 2; ++i) {
    const int key = key0 + i * 8;
    if (key >= T) continue;
    const int64_t tok = int64_t(b) * T + key;
    if (a.dk) {  // columns 0..63 to dk, the rest to dk_rope when it is set (MLA in place)
      bf16_t* row = a.dk + tok * a.ld_dk + h * a.hs_dk;
      bf16_t* rope = a.dk_rope ? a.dk_rope + tok * a.ld_dkr + h * a.hs_dkr - 64 : row;
#pragma unroll
      for (int nt = 0; nt < DQK / 8; ++nt)
        *reinterpret_cast<uint32_t*>((nt < 8 ? row : rope) + nt * 8 + 2 * t4) =
            pack_bf16(dk[4 * nt + 2 * i] * a.scale, dk[4 * nt + 2 * i + 1] * a.scale);
    }
    if (a.dv) {
      bf16_t* row = a.dv + tok * a.ld_dv + h * a.hs_dv;
#pragma unroll
      for (int nt = 0; nt < DV / 8; ++nt)
        *reinterpret_cast<uint32_t*>(row + nt * 8 + 2 * t4) = pack_bf16(dv[4 * nt + 2 * i], dv[4 * nt + 2 * i + 1]);
    }
  }
}

// ---- backward dQ on warpgroup MMA (sm_90a; the default at 96/64) -----------------------------------------------
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
  const bf16_t *qb = a.q + qoff, *dob = a.dout + voff;
  const wgbwd::KvPtrs kv = wgbwd::kv_ptrs(a, b, h);
  const int n_kv = min((T + BK - 1) / BK, (q0 + BQ - 1) / BK + 1);

  auto load_kv = [&](int j, int buf) {
    wgbwd::load_k_tile<BK, DQK, kMmaThreads>(Ks + buf * C::k_bytes, kv.k, a.ld_k, kv.kr, a.ld_kr, j * BK, T);
    wgmma::load_tile_sw128<BK, C::VB * 64, kMmaThreads>(Vs + buf * C::v_bytes, kv.v, a.ld_v, j * BK, T, 0, DV);
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
