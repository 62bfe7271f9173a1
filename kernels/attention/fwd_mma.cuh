// Part of kernels/attention.cu: the tensor-core path's shapes (Mma) and forward kernels (64-row and wide tiles).
// Included there, inside its anonymous namespace in ds::cuda, after the parts before it (whose names it
// uses); not a standalone header.
// =======================================================================================================
// Tensor-core path (bf16)
// =======================================================================================================

constexpr int kMmaThreads = 128;  // 4 warps, 16 query (or key) rows each

template <int DQK, int DV> struct Mma {
  static constexpr int PQ = DQK + 8;  // shared pitch (elements): rows 16 bytes apart in bank space
  static constexpr int PV = DV + 8;
  // forward
  static constexpr int F_BQ = 64, F_BK = 64;
  static constexpr size_t f_smem = size_t(F_BQ * PQ + 2 * F_BK * PQ + 2 * F_BK * PV) * 2;
  // backward dK/dV: 64 keys per block, bq queries per step (BwdTile)
  static constexpr int KV_BK = 64;
  static constexpr size_t kv_smem(int bq) {
    return size_t(KV_BK * PQ + KV_BK * PV + 2 * bq * PQ + 2 * bq * PV) * 2 + 4 * bq * sizeof(float);
  }
  // backward dQ: 64 queries per block, bk keys per step (BwdTile)
  static constexpr int Q_BQ = 64;
  static constexpr size_t q_smem(int bk) {
    return size_t(Q_BQ * PQ + Q_BQ * PV + 2 * bk * PQ + 2 * bk * PV) * 2 + 2 * Q_BQ * sizeof(float);
  }
};

template <int DQK, int DV>
__global__ void __launch_bounds__(kMmaThreads) attn_fwd_mma(AttnArgs<bf16_t> a) {
  pdl_enter();  // programmatic dependent launch: wait for the previous kernel (common.cuh)
  using C = Mma<DQK, DV>;
  constexpr int BQ = C::F_BQ, BK = C::F_BK, PQ = C::PQ, PV = C::PV;
  extern __shared__ __align__(16) unsigned char smem_raw[];
  bf16_t* Qs = reinterpret_cast<bf16_t*>(smem_raw);  // [BQ][PQ]
  bf16_t* Ks = Qs + BQ * PQ;                          // [2][BK][PQ]
  bf16_t* Vs = Ks + 2 * BK * PQ;                      // [2][BK][PV]

  const int tid = threadIdx.x, warp = tid >> 5, lane = tid & 31, g = lane >> 2, t4 = lane & 3;
  const int T = a.T, H = a.H;
  const int q0 = (gridDim.x - 1 - blockIdx.x) * BQ;  // the longest rows first
  const int b = blockIdx.y / H, h = blockIdx.y % H;
  const int64_t sq = int64_t(H) * DQK, sv = int64_t(H) * DV;
  const bf16_t* qb = a.q + (int64_t(b) * T * H + h) * DQK;
  const bf16_t* kb = a.k + (int64_t(b) * T * H + h) * DQK;
  const bf16_t* vb = a.v + (int64_t(b) * T * H + h) * DV;
  const int n_kv = min((T + BK - 1) / BK, (q0 + BQ - 1) / BK + 1);

  load_tile_async<BQ, DQK, PQ, kMmaThreads>(Qs, qb + int64_t(q0) * sq, sq, T - q0, tid);
  load_tile_async<BK, DQK, PQ, kMmaThreads>(Ks, kb, sq, T, tid);
  load_tile_async<BK, DV, PV, kMmaThreads>(Vs, vb, sv, T, tid);
  cp_async_commit();

  uint32_t qf[DQK / 16][4];
  float o[DV / 8][4];
#pragma unroll
  for (int i = 0; i < DV / 8; ++i) o[i][0] = o[i][1] = o[i][2] = o[i][3] = 0.f;
  float m[2] = {-INFINITY, -INFINITY}, l[2] = {0.f, 0.f};
  const int row0 = q0 + warp * 16 + g;  // this lane's rows: row0, row0 + 8

  for (int j = 0; j < n_kv; ++j) {
    const int buf = j & 1;
    if (j + 1 < n_kv) {
      const int k1 = (j + 1) * BK;
      load_tile_async<BK, DQK, PQ, kMmaThreads>(Ks + (buf ^ 1) * BK * PQ, kb + int64_t(k1) * sq, sq, T - k1, tid);
      load_tile_async<BK, DV, PV, kMmaThreads>(Vs + (buf ^ 1) * BK * PV, vb + int64_t(k1) * sv, sv, T - k1, tid);
    }
    cp_async_commit();
    cp_async_wait<1>();
    __syncthreads();
    if (j == 0) {
#pragma unroll
      for (int kk = 0; kk < DQK / 16; ++kk) ldsm_x4(qf[kk], lds_a(Qs, PQ, warp * 16, kk * 16, lane));
    }
    const bf16_t* Kt = Ks + buf * BK * PQ;
    const bf16_t* Vt = Vs + buf * BK * PV;

    float s[BK / 8][4];
#pragma unroll
    for (int i = 0; i < BK / 8; ++i) s[i][0] = s[i][1] = s[i][2] = s[i][3] = 0.f;
#pragma unroll
    for (int kk = 0; kk < DQK / 16; ++kk) {
#pragma unroll
      for (int np = 0; np < BK / 16; ++np) {
        uint32_t bf[4];
        ldsm_x4(bf, lds_b_nk(Kt, PQ, np * 16, kk * 16, lane));
        mma_bf16(s[2 * np], qf[kk], bf[0], bf[1]);
        mma_bf16(s[2 * np + 1], qf[kk], bf[2], bf[3]);
      }
    }
    const int k0 = j * BK;
    const bool need_mask = (k0 + BK - 1 > q0 + warp * 16) || (k0 + BK > T);
#pragma unroll
    for (int nt = 0; nt < BK / 8; ++nt)
#pragma unroll
      for (int e = 0; e < 4; ++e) {
        float x = s[nt][e] * a.scale_log2;
        if (need_mask) {
          const int col = k0 + nt * 8 + 2 * t4 + (e & 1), row = row0 + (e >> 1) * 8;
          if (col > row || col >= T) x = -INFINITY;
        }
        s[nt][e] = x;
      }
#pragma unroll
    for (int i = 0; i < 2; ++i) {
      float mx = -INFINITY;
#pragma unroll
      for (int nt = 0; nt < BK / 8; ++nt) mx = fmaxf(mx, fmaxf(s[nt][2 * i], s[nt][2 * i + 1]));
      mx = quad_max(mx);
      const float m_new = fmaxf(m[i], mx), ms = safe_max(m_new);
      const float alpha = exp2f(m[i] - ms);
      m[i] = m_new;
      float sum = 0.f;
#pragma unroll
      for (int nt = 0; nt < BK / 8; ++nt) {
        s[nt][2 * i] = exp2f(s[nt][2 * i] - ms);
        s[nt][2 * i + 1] = exp2f(s[nt][2 * i + 1] - ms);
        sum += s[nt][2 * i] + s[nt][2 * i + 1];
      }
      l[i] = l[i] * alpha + sum;
#pragma unroll
      for (int nt = 0; nt < DV / 8; ++nt) {
        o[nt][2 * i] *= alpha;
        o[nt][2 * i + 1] *= alpha;
      }
    }
#pragma unroll
    for (int kk = 0; kk < BK / 16; ++kk) {
      const uint32_t pa[4] = {pack_bf16(s[2 * kk][0], s[2 * kk][1]), pack_bf16(s[2 * kk][2], s[2 * kk][3]),
                              pack_bf16(s[2 * kk + 1][0], s[2 * kk + 1][1]),
                              pack_bf16(s[2 * kk + 1][2], s[2 * kk + 1][3])};
#pragma unroll
      for (int np = 0; np < DV / 16; ++np) {
        uint32_t bf[4];
        ldsm_x4_t(bf, lds_b_kn(Vt, PV, kk * 16, np * 16, lane));
        mma_bf16(o[2 * np], pa, bf[0], bf[1]);
        mma_bf16(o[2 * np + 1], pa, bf[2], bf[3]);
      }
    }
    __syncthreads();  // this buffer is refilled by the next iteration's prefetch
  }

#pragma unroll
  for (int i = 0; i < 2; ++i) {
    const float li = quad_sum(l[i]);
    const int row = row0 + i * 8;
    if (row >= T) continue;
    const float inv = 1.f / li;
    bf16_t* orow = a.out + (int64_t(b) * T + row) * sv + int64_t(h) * DV;
#pragma unroll
    for (int nt = 0; nt < DV / 8; ++nt)
      *reinterpret_cast<uint32_t*>(orow + nt * 8 + 2 * t4) = pack_bf16(o[nt][2 * i] * inv, o[nt][2 * i + 1] * inv);
    if (a.lse_out && t4 == 0) a.lse_out[(int64_t(b) * H + h) * T + row] = (m[i] + log2f(li)) * kLn2;
  }
}

// ---- forward, wide tiles (FlashAttention-2 layout) -------------------------------------------------------
// 128 query rows per block, 4 warps of 32 rows (two m16 tiles each): every K / V fragment read from shared memory
// feeds two MMAs (0.33 ldmatrix per MMA instead of 0.5), and each warp has two independent softmax chains. Q is
// re-read from shared memory per key tile (keeping it in registers for 32 rows would cost 48+ registers).
// The softmax scale is folded into the exponent (p = 2^(s * scale_log2 - m), one FFMA + ex2 per score; needs
// scale > 0, which the dispatcher checks). A warp skips the compute of a key tile that lies wholly above its rows
// (causal) or whose rows are all past T; it still takes part in the block's barriers.
constexpr int kFwdWideBQ = 128, kFwdWideBK = 64;

template <int DQK, int DV> struct FwdWide {
  static constexpr int PQ = DQK + 8, PV = DV + 8;
  static constexpr size_t smem = size_t(kFwdWideBQ * PQ + 2 * kFwdWideBK * PQ + 2 * kFwdWideBK * PV) * 2;
};

// 2^x with flush-to-zero (x = -inf -> 0); the same ex2.approx exp2f uses, without the subnormal fix-up.
__device__ __forceinline__ float ex2_ftz(float x) {
  float y;
  asm("ex2.approx.ftz.f32 %0, %1;\n" : "=f"(y) : "f"(x));
  return y;
}

// load_tile_async for use inside a key loop: the thread index goes through an empty asm so that the compiler
// recomputes the per-chunk offsets at each call instead of hoisting them out of the loop into ~40 live registers.
template <int ROWS, int D, int P, int THREADS>
__device__ __forceinline__ void load_tile_async_lean(bf16_t* s, const bf16_t* g, int64_t gstride, int valid,
                                                     int tid) {
  asm volatile("" : "+r"(tid));
  load_tile_async<ROWS, D, P, THREADS>(s, g, gstride, valid, tid);
}

template <int DQK, int DV>
__global__ void __launch_bounds__(kMmaThreads, 3) attn_fwd_mma_wide(AttnArgs<bf16_t> a) {
  pdl_enter();  // programmatic dependent launch: wait for the previous kernel (common.cuh)
  constexpr int BQ = kFwdWideBQ, BK = kFwdWideBK, PQ = FwdWide<DQK, DV>::PQ, PV = FwdWide<DQK, DV>::PV;
  constexpr int MT = 2;  // m16 tiles per warp
  extern __shared__ __align__(16) unsigned char smem_raw[];
  bf16_t* Qs = reinterpret_cast<bf16_t*>(smem_raw);  // [BQ][PQ]
  bf16_t* Ks = Qs + BQ * PQ;                          // [2][BK][PQ]
  bf16_t* Vs = Ks + 2 * BK * PQ;                      // [2][BK][PV]

  const int tid = threadIdx.x, warp = tid >> 5, lane = tid & 31, g = lane >> 2, t4 = lane & 3;
  const int T = a.T, H = a.H;
  const int q0 = (gridDim.x - 1 - blockIdx.x) * BQ;  // the longest rows first
  const int b = blockIdx.y / H, h = blockIdx.y % H;
  const int64_t sq = int64_t(H) * DQK, sv = int64_t(H) * DV;
  const bf16_t* qb = a.q + (int64_t(b) * T * H + h) * DQK;
  const bf16_t* kb = a.k + (int64_t(b) * T * H + h) * DQK;
  const bf16_t* vb = a.v + (int64_t(b) * T * H + h) * DV;
  const int n_kv = min(T - 1, q0 + BQ - 1) / BK + 1;  // key tiles holding a key <= the block's last valid row

  load_tile_async<BQ, DQK, PQ, kMmaThreads>(Qs, qb + int64_t(q0) * sq, sq, T - q0, tid);
  load_tile_async<BK, DQK, PQ, kMmaThreads>(Ks, kb, sq, T, tid);
  load_tile_async<BK, DV, PV, kMmaThreads>(Vs, vb, sv, T, tid);
  cp_async_commit();

  float o[MT][DV / 8][4];
#pragma unroll
  for (int mt = 0; mt < MT; ++mt)
#pragma unroll
    for (int i = 0; i < DV / 8; ++i) o[mt][i][0] = o[mt][i][1] = o[mt][i][2] = o[mt][i][3] = 0.f;
  float m[MT][2], l[MT][2];  // m: running max in log2 units (scaled)
#pragma unroll
  for (int mt = 0; mt < MT; ++mt) m[mt][0] = m[mt][1] = -INFINITY, l[mt][0] = l[mt][1] = 0.f;
  const int wrow0 = q0 + warp * 32;  // this warp's rows: wrow0 .. wrow0 + 31; m-tile mt: wrow0 + 16 mt + {g, g + 8}
  const float sl = a.scale_log2;

  for (int j = 0; j < n_kv; ++j) {
    const int buf = j & 1;
    if (j + 1 < n_kv) {
      const int k1 = (j + 1) * BK;
      load_tile_async_lean<BK, DQK, PQ, kMmaThreads>(Ks + (buf ^ 1) * BK * PQ, kb + int64_t(k1) * sq, sq, T - k1,
                                                     tid);
      load_tile_async_lean<BK, DV, PV, kMmaThreads>(Vs + (buf ^ 1) * BK * PV, vb + int64_t(k1) * sv, sv, T - k1,
                                                    tid);
    }
    cp_async_commit();
    cp_async_wait<1>();
    __syncthreads();
    const int k0 = j * BK;
    if (k0 <= wrow0 + 31 && wrow0 < T) {  // else every score of this warp's rows in this tile is masked
      const bf16_t* Kt = Ks + buf * BK * PQ;
      const bf16_t* Vt = Vs + buf * BK * PV;

      float s[MT][BK / 8][4];
#pragma unroll
      for (int mt = 0; mt < MT; ++mt)
#pragma unroll
        for (int i = 0; i < BK / 8; ++i) s[mt][i][0] = s[mt][i][1] = s[mt][i][2] = s[mt][i][3] = 0.f;
#pragma unroll
      for (int kk = 0; kk < DQK / 16; ++kk) {
        uint32_t qf[MT][4];
#pragma unroll
        for (int mt = 0; mt < MT; ++mt) ldsm_x4(qf[mt], lds_a(Qs, PQ, warp * 32 + mt * 16, kk * 16, lane));
#pragma unroll
        for (int np = 0; np < BK / 16; ++np) {
          uint32_t bf[4];
          ldsm_x4(bf, lds_b_nk(Kt, PQ, np * 16, kk * 16, lane));
#pragma unroll
          for (int mt = 0; mt < MT; ++mt) {
            mma_bf16(s[mt][2 * np], qf[mt], bf[0], bf[1]);
            mma_bf16(s[mt][2 * np + 1], qf[mt], bf[2], bf[3]);
          }
        }
      }
#pragma unroll
      for (int mt = 0; mt < MT; ++mt) {
        const int rfirst = wrow0 + mt * 16;
        if ((k0 + BK - 1 > rfirst) || (k0 + BK > T)) {  // the diagonal or the key tail: mask (raw units)
#pragma unroll
          for (int nt = 0; nt < BK / 8; ++nt)
#pragma unroll
            for (int e = 0; e < 4; ++e) {
              const int col = k0 + nt * 8 + 2 * t4 + (e & 1), row = rfirst + g + (e >> 1) * 8;
              if (col > row || col >= T) s[mt][nt][e] = -INFINITY;
            }
        }
#pragma unroll
        for (int i = 0; i < 2; ++i) {
          float mx = -INFINITY;
#pragma unroll
          for (int nt = 0; nt < BK / 8; ++nt) mx = fmaxf(mx, fmaxf(s[mt][nt][2 * i], s[mt][nt][2 * i + 1]));
          mx = quad_max(mx) * sl;  // scale > 0: max commutes with the scaling; -inf stays -inf
          const float m_new = fmaxf(m[mt][i], mx), ms = safe_max(m_new);
          const float alpha = ex2_ftz(m[mt][i] - ms);
          m[mt][i] = m_new;
          float sum = 0.f;
#pragma unroll
          for (int nt = 0; nt < BK / 8; ++nt) {
            s[mt][nt][2 * i] = ex2_ftz(fmaf(s[mt][nt][2 * i], sl, -ms));
            s[mt][nt][2 * i + 1] = ex2_ftz(fmaf(s[mt][nt][2 * i + 1], sl, -ms));
            sum += s[mt][nt][2 * i] + s[mt][nt][2 * i + 1];
          }
          l[mt][i] = l[mt][i] * alpha + sum;
#pragma unroll
          for (int nt = 0; nt < DV / 8; ++nt) {
            o[mt][nt][2 * i] *= alpha;
            o[mt][nt][2 * i + 1] *= alpha;
          }
        }
      }
#pragma unroll
      for (int kk = 0; kk < BK / 16; ++kk) {
        uint32_t pa[MT][4];
#pragma unroll
        for (int mt = 0; mt < MT; ++mt) {
          pa[mt][0] = pack_bf16(s[mt][2 * kk][0], s[mt][2 * kk][1]);
          pa[mt][1] = pack_bf16(s[mt][2 * kk][2], s[mt][2 * kk][3]);
          pa[mt][2] = pack_bf16(s[mt][2 * kk + 1][0], s[mt][2 * kk + 1][1]);
          pa[mt][3] = pack_bf16(s[mt][2 * kk + 1][2], s[mt][2 * kk + 1][3]);
        }
#pragma unroll
        for (int np = 0; np < DV / 16; ++np) {
          uint32_t bf[4];
          ldsm_x4_t(bf, lds_b_kn(Vt, PV, kk * 16, np * 16, lane));
#pragma unroll
          for (int mt = 0; mt < MT; ++mt) {
            mma_bf16(o[mt][2 * np], pa[mt], bf[0], bf[1]);
            mma_bf16(o[mt][2 * np + 1], pa[mt], bf[2], bf[3]);
          }
        }
      }
    }
    __syncthreads();  // this buffer is refilled by the next iteration's prefetch
  }

#pragma unroll
  for (int mt = 0; mt < MT; ++mt)
#pragma unroll
    for (int i = 0; i < 2; ++i) {
      const float li = quad_sum(l[mt][i]);
      const int row = wrow0 + mt * 16 + g + i * 8;
      if (row >= T) continue;
      const float inv = 1.f / li;
      bf16_t* orow = a.out + (int64_t(b) * T + row) * sv + int64_t(h) * DV;
#pragma unroll
      for (int nt = 0; nt < DV / 8; ++nt)
        *reinterpret_cast<uint32_t*>(orow + nt * 8 + 2 * t4) =
            pack_bf16(o[mt][nt][2 * i] * inv, o[mt][nt][2 * i + 1] * inv);
      if (a.lse_out && t4 == 0) a.lse_out[(int64_t(b) * H + h) * T + row] = (m[mt][i] + log2f(li)) * kLn2;
    }
}
