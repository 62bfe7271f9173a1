// Part of kernels/attention.cu: the forward on warpgroup MMA (sm_90a; at 96/64, attn_fwd_wgmma_ovl with key tiles of
// 64 is the default, the rest bench/test variants).
// Included there, inside its anonymous namespace in ds::cuda, after bwd_wgmma.cuh (whose wgbwd::to_frags and
// pin_frags it uses); not a standalone header.
// ---- forward on Hopper's warpgroup MMA ---------------------------------------------------------------------
// The job of attn_fwd_mma_wide with one warpgroup owning 64 query rows (warp w: rows 16 w .. 16 w + 15, the same
// rows and accumulator layout as mma.sync) and a loop over key tiles of BK: S = Q K^T reads both operands from
// shared memory (K-major, Dqk 96 as two 64-wide swizzled column blocks, the pad zero-filled and never read), the
// online softmax runs on S's accumulator registers in f32 with attn_fwd_mma_wide's math (scale folded into the
// exponent: needs scale > 0; P rounded to bf16), and O += P V takes P as register A fragments and reads V
// transposed (MN-major). K/V tiles are double-buffered with cp.async (the next tile loads while this one computes);
// every product of a tile retires before the closing barrier, after which its buffer is refilled. Several blocks
// an SM overlap one block's softmax with another's products. wgmma is warpgroup-wide, so no warp skips a tile
// (a warp whose rows all lie above the tile's keys gets P = 0 exactly: alpha 1, nothing added).
// Two kernels: attn_fwd_wgmma (softmax, then PV, per tile) and attn_fwd_wgmma_ovl (the softmax overlapping the PV
// product), the latter with Q read from shared memory per product or kept as register A fragments (QREG), and with
// the key and value tiles loaded by the TMA unit (TMA: one thread, K two tiles ahead and V one, each buffer's arrival
// an mbarrier; where T is a multiple of the key tile; the same products, so the same bits).
namespace wgfwd {

template <int DQK, int DV, int BK> struct Cfg {
  static constexpr int BQ = 64;
  static constexpr int KB = (DQK + 63) / 64, VB = (DV + 63) / 64;  // 64-wide column blocks
  static constexpr int q_bytes = BQ * KB * 128;
  static constexpr int k_bytes = BK * KB * 128, v_bytes = BK * VB * 128;  // one buffer
  // + 32: TMA's four mbarriers; + 1024: slack to align the tiles to 1024 bytes (the swizzle is a function of the
  // address)
  static constexpr size_t smem = size_t(q_bytes + 2 * k_bytes + 2 * v_bytes) + 32 + 1024;
};

// The TMA kernel's maps: K (the first 64 columns of each head's key; k_rope unset: all DQK), the rope key (MLA in
// place) and V as 2D views [B T, columns], boxes of BK rows x 64 columns, the 128-byte swizzle.
struct KvMaps {
  CUtensorMap k, kr, v;
};

template <int N> __device__ __forceinline__ void mma_ss(float (&d)[N / 2], uint64_t da, uint64_t db) {
  static_assert(N == 64 || N == 128, "key tile 64 or 128");
  if constexpr (N == 64) wgmma::mma_m64n64k16<0, 0>(d, da, db);
  else wgmma::mma_m64n128k16<0, 0>(d, da, db);
}

// Issues S = Q K^T [64 queries][BK keys] as one group. K-major operands: k16 step kk is column block kk / 4,
// + 32 bytes per step inside it; 8-row groups 1024 bytes apart.
template <int DQK, int BK> __device__ __forceinline__ void issue_s(float (&s)[BK / 2], uint32_t qs, uint32_t kt) {
#pragma unroll
  for (int x = 0; x < BK / 2; ++x) s[x] = 0.f;
  wgmma::pin(s);  // register writes before the fence (as CUTLASS's warpgroup_fence_operand)
  wgmma::fence();
#pragma unroll
  for (int kk = 0; kk < DQK / 16; ++kk)
    mma_ss<BK>(s, wgmma::desc_sw128(qs + (kk >> 2) * (64 * 128) + (kk & 3) * 32, 16, 1024),
               wgmma::desc_sw128(kt + (kk >> 2) * (BK * 128) + (kk & 3) * 32, 16, 1024));
  wgmma::commit();
  wgmma::pin(s);
}

// The same with Q as register A fragments (qf: this warp's 16 rows, one k16 step each): only K is read from shared
// memory, halving the product's shared-memory reads.
template <int DQK, int BK>
__device__ __forceinline__ void issue_s_rs(float (&s)[BK / 2], uint32_t (&qf)[DQK / 16][4], uint32_t kt) {
  static_assert(BK == 64, "register-A products: m64n64 only");
#pragma unroll
  for (int x = 0; x < BK / 2; ++x) s[x] = 0.f;
  wgmma::pin(s);
  wgbwd::pin_frags(qf);
  wgmma::fence();
#pragma unroll
  for (int kk = 0; kk < DQK / 16; ++kk)
    wgmma::mma_rs_m64n64k16<0>(s, qf[kk], wgmma::desc_sw128(kt + (kk >> 2) * (BK * 128) + (kk & 3) * 32, 16, 1024));
  wgmma::commit();
  wgmma::pin(s);
}

// This warp's Q rows (16 w ..) as mma.sync A fragments from the swizzled tile: ldmatrix x4, lane l addressing row
// 16 w + (l & 15), 16-byte chunk 2 kk + (l >> 4) (column block chunk / 8, position (chunk % 8) ^ (row % 8)).
template <int DQK>
__device__ __forceinline__ void load_qfrags(uint32_t (&qf)[DQK / 16][4], const unsigned char* Qs, int warp, int lane) {
  const int r = warp * 16 + (lane & 15);
#pragma unroll
  for (int kk = 0; kk < DQK / 16; ++kk) {
    const int c = 2 * kk + (lane >> 4);
    ldsm_x4(qf[kk], Qs + (c >> 3) * (64 * 128) + r * 128 + (((c & 7) ^ (r & 7)) << 4));
  }
}

// Issues O += P V as one group: P as register A fragments, V as the MN-major B ([keys = k][Dv 64 = n]): a k16 step
// is 16 rows = 2048 bytes.
template <int BK>
__device__ __forceinline__ void issue_pv(float (&o)[32], uint32_t (&pf)[BK / 16][4], uint32_t vt) {
  wgbwd::pin_frags(pf);
  wgmma::pin(o);  // the rescaled accumulators are written before the fence
  wgmma::fence();
#pragma unroll
  for (int kq = 0; kq < BK / 16; ++kq)
    wgmma::mma_rs_m64n64k16<1>(o, pf[kq], wgmma::desc_sw128(vt + kq * 2048, BK * 128, 1024));
  wgmma::commit();
  wgmma::pin(o);
}

// attn_fwd_mma_wide's masking and online softmax on S's accumulator (s[4 nt + e] is row row0 + 8 (e >> 1), key
// k0 + 8 nt + 2 t4 + (e & 1); wrow = the warp's first row): P = 2^(s scale_log2 - m) in place, the running max m
// (log2 units) and this lane's partial row sums l updated, alpha = the factor O must be rescaled by.
template <int BK>
__device__ __forceinline__ void softmax(float (&s)[BK / 2], float (&m)[2], float (&l)[2], float (&alpha)[2], int k0,
                                        int wrow, int row0, int t4, int T, float sl) {
  if (k0 + BK - 1 > wrow || k0 + BK > T) {  // the diagonal or the key tail: mask (raw units)
#pragma unroll
    for (int nt = 0; nt < BK / 8; ++nt)
#pragma unroll
      for (int e = 0; e < 4; ++e) {
        const int col = k0 + nt * 8 + 2 * t4 + (e & 1), row = row0 + (e >> 1) * 8;
        if (col > row || col >= T) s[4 * nt + e] = -INFINITY;
      }
  }
#pragma unroll
  for (int i = 0; i < 2; ++i) {
    float mx = -INFINITY;
#pragma unroll
    for (int nt = 0; nt < BK / 8; ++nt) mx = fmaxf(mx, fmaxf(s[4 * nt + 2 * i], s[4 * nt + 2 * i + 1]));
    mx = quad_max(mx) * sl;  // scale > 0: max commutes with the scaling; -inf stays -inf
    const float m_new = fmaxf(m[i], mx), ms = safe_max(m_new);
    alpha[i] = ex2_ftz(m[i] - ms);
    m[i] = m_new;
    float sum = 0.f;
#pragma unroll
    for (int nt = 0; nt < BK / 8; ++nt) {
      s[4 * nt + 2 * i] = ex2_ftz(fmaf(s[4 * nt + 2 * i], sl, -ms));
      s[4 * nt + 2 * i + 1] = ex2_ftz(fmaf(s[4 * nt + 2 * i + 1], sl, -ms));
      sum += s[4 * nt + 2 * i] + s[4 * nt + 2 * i + 1];
    }
    l[i] = l[i] * alpha[i] + sum;
  }
}

__device__ __forceinline__ void rescale(float (&o)[32], const float (&alpha)[2]) {
#pragma unroll
  for (int nt = 0; nt < 8; ++nt) {
    o[4 * nt] *= alpha[0];
    o[4 * nt + 1] *= alpha[0];
    o[4 * nt + 2] *= alpha[1];
    o[4 * nt + 3] *= alpha[1];
  }
}

// O / l as bf16 and lse = (m + log2 l) ln 2, for this lane's rows row0, row0 + 8 (those < T).
__device__ __forceinline__ void store(const AttnArgs<bf16_t>& a, const float (&o)[32], const float (&m)[2],
                                      const float (&l)[2], int b, int h, int row0, int t4) {
  const int64_t sv = int64_t(a.H) * 64, voff = (int64_t(b) * a.T * a.H + h) * 64;
#pragma unroll
  for (int i = 0; i < 2; ++i) {
    const float li = quad_sum(l[i]);
    const int row = row0 + i * 8;
    if (row >= a.T) continue;
    const float inv = 1.f / li;
    bf16_t* orow = a.out + voff + int64_t(row) * sv;
#pragma unroll
    for (int nt = 0; nt < 8; ++nt)
      *reinterpret_cast<uint32_t*>(orow + nt * 8 + 2 * t4) =
          pack_bf16(o[4 * nt + 2 * i] * inv, o[4 * nt + 2 * i + 1] * inv);
    if (a.lse_out && t4 == 0) a.lse_out[(int64_t(b) * a.H + h) * a.T + row] = (m[i] + log2f(li)) * kLn2;
  }
}

}  // namespace wgfwd

template <int DQK, int DV, int BK, int MINB>
__global__ void __launch_bounds__(kMmaThreads, MINB) attn_fwd_wgmma(AttnArgs<bf16_t> a) {
  static_assert(DV == 64, "O += P V is one m64n64 product per k16 step");
  pdl_enter();  // programmatic dependent launch: wait for the previous kernel (common.cuh)
  using C = wgfwd::Cfg<DQK, DV, BK>;
  constexpr int BQ = C::BQ;
  extern __shared__ __align__(16) unsigned char smem_raw[];
  unsigned char* Qs = smem_raw + ((1024 - (smem_addr(smem_raw) & 1023)) & 1023);
  unsigned char* Ks = Qs + C::q_bytes;      // [2] buffers
  unsigned char* Vs = Ks + 2 * C::k_bytes;  // [2] buffers
  const uint32_t qs = smem_addr(Qs), ks = smem_addr(Ks), vs = smem_addr(Vs);

  const int tid = threadIdx.x, warp = tid >> 5, lane = tid & 31, g = lane >> 2, t4 = lane & 3;
  const int T = a.T, H = a.H;
  const BlockTile bt = block_tile(a.lpt);
  const int q0 = (gridDim.x - 1 - bt.rank) * BQ;  // the longest rows first
  const int b = bt.bh / H, h = bt.bh % H;
  const int64_t sq = int64_t(H) * DQK, sv = int64_t(H) * DV;
  const int64_t qoff = (int64_t(b) * T * H + h) * DQK, voff = (int64_t(b) * T * H + h) * DV;
  const bf16_t *qb = a.q + qoff, *kb = a.k + qoff, *vb = a.v + voff;
  const int n_kv = min(T - 1, q0 + BQ - 1) / BK + 1;  // key tiles holding a key <= the block's last valid row

  auto load_kv = [&](int j, int buf) {
    wgmma::load_tile_sw128<BK, C::KB * 64, kMmaThreads>(Ks + buf * C::k_bytes, kb, sq, j * BK, T, 0, DQK);
    wgmma::load_tile_sw128<BK, C::VB * 64, kMmaThreads>(Vs + buf * C::v_bytes, vb, sv, j * BK, T, 0, DV);
  };
  wgmma::load_tile_sw128<BQ, C::KB * 64, kMmaThreads>(Qs, qb, sq, q0, T, 0, DQK);
  load_kv(0, 0);
  cp_async_commit();

  float o[DV / 2];
#pragma unroll
  for (int i = 0; i < DV / 2; ++i) o[i] = 0.f;
  float m[2] = {-INFINITY, -INFINITY}, l[2] = {0.f, 0.f};  // m: running max in log2 units (scaled)
  const int wrow = q0 + warp * 16, row0 = wrow + g;         // this lane's rows: row0, row0 + 8

  for (int j = 0; j < n_kv; ++j) {
    const int buf = j & 1;
    if (j + 1 < n_kv) load_kv(j + 1, buf ^ 1);
    cp_async_commit();
    cp_async_wait<1>();
    wgmma::fence_proxy_async();
    __syncthreads();
    float s[BK / 2], alpha[2];
    wgfwd::issue_s<DQK, BK>(s, qs, ks + buf * C::k_bytes);
    wgmma::wait<0>();
    wgmma::pin(s);
    wgfwd::softmax<BK>(s, m, l, alpha, j * BK, wrow, row0, t4, T, a.scale_log2);
    wgfwd::rescale(o, alpha);
    uint32_t pf[BK / 16][4];
    wgbwd::to_frags<BK>(pf, s);
    wgfwd::issue_pv<BK>(o, pf, vs + buf * C::v_bytes);
    wgmma::wait<0>();
    wgbwd::pin_frags(pf);
    wgmma::pin(o);
    __syncthreads();  // every product of this tile has retired: the buffers may be refilled
  }
  wgfwd::store(a, o, m, l, b, h, row0, t4);
}

// ---- the same, with the softmax of key tile j overlapping the product P_{j-1} V_{j-1} --------------------------
// FlashAttention-3's intra-warpgroup pipelining: a step issues S_j = Q K_j^T, then O += P_{j-1} V_{j-1} (P kept in
// registers from the step before), waits for S_j alone and computes P_j and the rescale factor while the PV
// product runs, then waits for it and rescales O. K runs one tile ahead of V: a step loads K_{j+1} and V_j (the
// buffers S_{j-1} and P_{j-2} V_{j-2} read, both retired before the last step's closing barrier).
// QREG: Q as register A fragments (loaded once), S = Q K^T reading only K from shared memory.
// TMA: K and V by the TMA unit from one thread (maps), in two rings of two buffers each: K_{j+2} into K_j's buffer once
// S_j has retired, V_{j+1} into V_{j-1}'s once P_{j-1} V_{j-1} has (the end of step j), one block barrier a step.
template <int DQK, int DV, int BK, int MINB, bool QREG, bool TMA>
__global__ void __launch_bounds__(kMmaThreads, MINB)
    attn_fwd_wgmma_ovl(AttnArgs<bf16_t> a, const __grid_constant__ wgfwd::KvMaps maps) {
  static_assert(DV == 64, "O += P V is one m64n64 product per k16 step");
  pdl_enter();  // programmatic dependent launch: wait for the previous kernel (common.cuh)
  using C = wgfwd::Cfg<DQK, DV, BK>;
  constexpr int BQ = C::BQ;
  extern __shared__ __align__(16) unsigned char smem_raw[];
  unsigned char* Qs = smem_raw + ((1024 - (smem_addr(smem_raw) & 1023)) & 1023);
  unsigned char* Ks = Qs + C::q_bytes;      // [2] buffers
  unsigned char* Vs = Ks + 2 * C::k_bytes;  // [2] buffers
  const uint32_t qs = smem_addr(Qs), ks = smem_addr(Ks), vs = smem_addr(Vs);

  const int tid = threadIdx.x, warp = tid >> 5, lane = tid & 31, g = lane >> 2, t4 = lane & 3;
  const int T = a.T, H = a.H;
  const BlockTile bt = block_tile(a.lpt);
  const int q0 = (gridDim.x - 1 - bt.rank) * BQ;  // the longest rows first
  const int b = bt.bh / H, h = bt.bh % H;
  const int64_t sq = int64_t(H) * DQK, qoff = (int64_t(b) * T * H + h) * DQK;
  const bf16_t* qb = a.q + qoff;
  const wgbwd::KvPtrs kv = wgbwd::kv_ptrs(a, b, h);
  const int n_kv = min(T - 1, q0 + BQ - 1) / BK + 1;  // key tiles holding a key <= the block's last valid row
  const uint32_t kfull0 = vs + 2 * C::v_bytes, vfull0 = kfull0 + 16;  // TMA: [2] K buffers', [2] V buffers' arrival

  // TMA: key tile j into K buffer buf, value tile j into V buffer buf, each completing on its buffer's barrier
  auto issue_k = [&](int j, int buf) {
    static_assert(C::KB == 2, "a key tile is two 64-column boxes");
    const uint32_t bar = kfull0 + 8 * buf, dst = ks + buf * C::k_bytes;
    const int row = b * T + j * BK, c0 = int(h * a.hs_k);
    tmacp::mbar_arrive_expect_tx(bar, C::k_bytes);
    tmacp::tma_load_2d(dst, &maps.k, bar, c0, row);
    if (a.k_rope) tmacp::tma_load_2d(dst + BK * 128, &maps.kr, bar, int(h * a.hs_kr), row);
    else tmacp::tma_load_2d(dst + BK * 128, &maps.k, bar, c0 + 64, row);
  };
  auto issue_v = [&](int j, int buf) {
    static_assert(C::VB == 1, "a value tile is one 64-column box");
    const uint32_t bar = vfull0 + 8 * buf;
    tmacp::mbar_arrive_expect_tx(bar, C::v_bytes);
    tmacp::tma_load_2d(vs + buf * C::v_bytes, &maps.v, bar, int(h * a.hs_v), b * T + j * BK);
  };
  if constexpr (TMA) {
    if (tid == 0) {
      for (int i = 0; i < 4; ++i) tmacp::mbar_init(kfull0 + 8 * i, 1);
      tmacp::mbar_init_fence();
      issue_k(0, 0);
      issue_v(0, 0);
      if (n_kv > 1) {
        issue_k(1, 1);
        issue_v(1, 1);
      }
    }
  }
  wgmma::load_tile_sw128<BQ, C::KB * 64, kMmaThreads>(Qs, qb, sq, q0, T, 0, DQK);
  if constexpr (!TMA) wgbwd::load_k_tile<BK, DQK, kMmaThreads>(Ks, kv.k, a.ld_k, kv.kr, a.ld_kr, 0, T);
  cp_async_commit();
  if constexpr (TMA) {  // Q in, the barriers' inits seen by every thread
    cp_async_wait<0>();
    wgmma::fence_proxy_async();
    __syncthreads();
  }

  float o[DV / 2];
#pragma unroll
  for (int i = 0; i < DV / 2; ++i) o[i] = 0.f;
  float m[2] = {-INFINITY, -INFINITY}, l[2] = {0.f, 0.f};  // m: running max in log2 units (scaled)
  const int wrow = q0 + warp * 16, row0 = wrow + g;         // this lane's rows: row0, row0 + 8
  uint32_t qf[QREG ? DQK / 16 : 1][4];                      // QREG: Q's A fragments
  uint32_t pf[BK / 16][4];                                  // P_{j-1}

  for (int j = 0; j < n_kv; ++j) {
    const int buf = j & 1;
    if constexpr (TMA) {
      tmacp::mbar_wait(kfull0 + 8 * buf, (j >> 1) & 1);  // K_j
    } else {
      if (j + 1 < n_kv)
        wgbwd::load_k_tile<BK, DQK, kMmaThreads>(Ks + (buf ^ 1) * C::k_bytes, kv.k, a.ld_k, kv.kr, a.ld_kr,
                                                 (j + 1) * BK, T);
      wgmma::load_tile_sw128<BK, C::VB * 64, kMmaThreads>(Vs + buf * C::v_bytes, kv.v, a.ld_v, j * BK, T, 0, DV);
      cp_async_commit();
      cp_async_wait<1>();  // K_j and V_{j-1} have landed
      wgmma::fence_proxy_async();
      __syncthreads();
    }
    float s[BK / 2], alpha[2];
    if constexpr (QREG) {
      if (j == 0) wgfwd::load_qfrags<DQK>(qf, Qs, warp, lane);
      wgfwd::issue_s_rs<DQK, BK>(s, qf, ks + buf * C::k_bytes);
    } else {
      wgfwd::issue_s<DQK, BK>(s, qs, ks + buf * C::k_bytes);
    }
    if (j > 0) {
      if constexpr (TMA) tmacp::mbar_wait(vfull0 + 8 * (buf ^ 1), ((j - 1) >> 1) & 1);  // V_{j-1}
      wgfwd::issue_pv<BK>(o, pf, vs + (buf ^ 1) * C::v_bytes);
      wgmma::wait<1>();  // S_j has landed (groups retire in order)
    } else {
      wgmma::wait<0>();
    }
    wgmma::pin(s);
    if constexpr (QREG) wgbwd::pin_frags(qf);  // read by S's products until here
    wgfwd::softmax<BK>(s, m, l, alpha, j * BK, wrow, row0, t4, T, a.scale_log2);
    wgmma::wait<0>();  // P_{j-1} V_{j-1} has landed
    wgbwd::pin_frags(pf);
    wgmma::pin(o);
    wgfwd::rescale(o, alpha);
    wgbwd::to_frags<BK>(pf, s);
    if constexpr (TMA) {
      const bool k_next = j + 2 < n_kv, v_next = j >= 1 && j + 1 < n_kv;
      if (k_next || v_next) {
        __syncthreads();  // S_j and P_{j-1} V_{j-1} have retired everywhere: refill K_j's and V_{j-1}'s buffers
        if (tid == 0) {
          if (k_next) issue_k(j + 2, buf);
          if (v_next) issue_v(j + 1, buf ^ 1);
        }
      }
    } else {
      __syncthreads();  // S_j and P_{j-1} V_{j-1} have retired everywhere: K_j's and V_{j-1}'s buffers may refill
    }
  }
  if constexpr (TMA) {
    tmacp::mbar_wait(vfull0 + 8 * ((n_kv - 1) & 1), ((n_kv - 1) >> 1) & 1);  // V_{n-1}
  } else {
    cp_async_wait<0>();  // V_{n-1}
    wgmma::fence_proxy_async();
    __syncthreads();
  }
  wgfwd::issue_pv<BK>(o, pf, vs + ((n_kv - 1) & 1) * C::v_bytes);
  wgmma::wait<0>();
  wgbwd::pin_frags(pf);
  wgmma::pin(o);
  wgfwd::store(a, o, m, l, b, h, row0, t4);
}
