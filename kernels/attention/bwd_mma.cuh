// Part of kernels/attention.cu: the backward's tunables (BwdTile), the D preprocess and the mma.sync dK/dV and dQ
// kernels.
// Included there, inside its anonymous namespace in ds::cuda, after the parts before it (whose names it
// uses); not a standalone header.
// The tunables of one backward kernel: STEP = the rows of the other operand per loop step (dK/dV: queries, 32 or
// 64; dQ: keys, 32 or 64), MINB = the blocks per SM it is compiled for (register cap 65536 / (128 MINB); 1: no
// cap), REG = this warp's A fragments of the operands it owns (dK/dV: K and V; dQ: Q and dO) held in registers for
// the whole loop instead of re-read from shared memory each step (+40 registers at 96/64). The default is
// BwdTile<32, 4, false> for the bench model's 96/64 (shared memory allows 4 blocks there), BwdTile<32, 1, false>
// for the other shapes; the alternatives exist at 96/64 only, for the bench hooks (attention_bench_*_variant).
template <int STEP_, int MINB_, bool REG_> struct BwdTile {
  static constexpr int STEP = STEP_, MINB = MINB_;
  static constexpr bool REG = REG_;
};
template <int DQK, int DV> using BwdDefault = BwdTile<32, DQK == 96 && DV == 64 ? 4 : 1, false>;

// D[b, h, t] = rowsum(dO * O) in f32, once per backward (FlashAttention-2's preprocess) rather than per tile in
// both kernels: one thread per (b, t, h) row. The summation order is the one the dK/dV kernel used when it
// recomputed D (4 partial sums over bf16 pairs 8 elements apart, combined as quad_sum combines them), so dK and dV
// keep their bits; dQ's D (a warp-wide sum before) changes in the last f32 bits. The block's rows (contiguous) come
// in through shared memory with coalesced 16-byte loads, each row's chunks XOR-swizzled by row (conflict-free both
// ways): a thread loading its own 128-byte row touched 32 lines an instruction (1.5 TB/s on the H200).
constexpr int kDeltaThreads = 256;
template <int DV> constexpr size_t delta_smem() { return size_t(2) * kDeltaThreads * DV * sizeof(bf16_t); }

template <int DV> __global__ void __launch_bounds__(kDeltaThreads) attn_bwd_delta(AttnArgs<bf16_t> a, int64_t rows) {
  static_assert(DV % 8 == 0, "whole 16-byte chunks");
  constexpr int CH = DV / 8, SW = CH < 8 ? CH : 8;  // chunks a row; the swizzle's span
  extern __shared__ __align__(16) uint4 delta_rows[];  // [2][kDeltaThreads][CH]: dO, then O
  pdl_enter();  // programmatic dependent launch: wait for the previous kernel (common.cuh)
  const int64_t r0 = int64_t(blockIdx.x) * kDeltaThreads;
  const int nrows = int(min(int64_t(kDeltaThreads), rows - r0));
  const uint4* x4 = reinterpret_cast<const uint4*>(a.dout + r0 * DV);
  const uint4* y4 = reinterpret_cast<const uint4*>(a.o + r0 * DV);
  uint4* xs = delta_rows;
  uint4* ys = delta_rows + kDeltaThreads * CH;
#pragma unroll
  for (int i = threadIdx.x; i < kDeltaThreads * CH; i += kDeltaThreads) {
    const int row = i / CH, c = i % CH;
    if (row >= nrows) break;
    const int at = row * CH + (c ^ (row % SW));
    xs[at] = x4[i];
    ys[at] = y4[i];
  }
  __syncthreads();
  const int row = threadIdx.x;
  if (row >= nrows) return;
  const int64_t r = r0 + row;  // (b * T + t) * H + h
  float part[4] = {0.f, 0.f, 0.f, 0.f};
#pragma unroll
  for (int c = 0; c < CH; ++c) {
    const int at = row * CH + (c ^ (row % SW));
    const uint4 xv = xs[at], yv = ys[at];
    const __nv_bfloat162* xp = reinterpret_cast<const __nv_bfloat162*>(&xv);
    const __nv_bfloat162* yp = reinterpret_cast<const __nv_bfloat162*>(&yv);
#pragma unroll
    for (int p = 0; p < 4; ++p) {
      const float2 x = __bfloat1622float2(xp[p]), y = __bfloat1622float2(yp[p]);
      part[p] += x.x * y.x + x.y * y.y;
    }
  }
  const int64_t bt = r / a.H, b = bt / a.T;
  const int h = int(r - bt * a.H), t = int(bt - b * a.T);
  a.delta[(b * a.H + h) * a.T + t] = (part[0] + part[1]) + (part[2] + part[3]);
}

// dK, dV for one tile of 64 keys: loops over the query tiles at or after it (causal).
template <int DQK, int DV, class TL>
__global__ void __launch_bounds__(kMmaThreads, TL::MINB) attn_bwd_dkdv_mma(AttnArgs<bf16_t> a) {
  pdl_enter();  // programmatic dependent launch: wait for the previous kernel (common.cuh)
  using C = Mma<DQK, DV>;
  constexpr int BK = C::KV_BK, BQ = TL::STEP, PQ = C::PQ, PV = C::PV;
  static_assert(BQ % 16 == 0 && 2 * BQ <= kMmaThreads && BK % BQ == 0, "query step: 16..64, divides 64");
  extern __shared__ __align__(16) unsigned char smem_raw[];
  bf16_t* Ks = reinterpret_cast<bf16_t*>(smem_raw);  // [BK][PQ]
  bf16_t* Vs = Ks + BK * PQ;                          // [BK][PV]
  bf16_t* Qs = Vs + BK * PV;                          // [2][BQ][PQ]
  bf16_t* dOs = Qs + 2 * BQ * PQ;                     // [2][BQ][PV]
  float* lse_s = reinterpret_cast<float*>(dOs + 2 * BQ * PV);  // [2][BQ], log2 units
  float* D_s = lse_s + 2 * BQ;                                 // [2][BQ]

  const int tid = threadIdx.x, warp = tid >> 5, lane = tid & 31, g = lane >> 2, t4 = lane & 3;
  const int T = a.T, H = a.H;
  const int k0 = blockIdx.x * BK;  // the longest key tiles (most query tiles) first
  const int b = blockIdx.y / H, h = blockIdx.y % H;
  const int64_t sq = int64_t(H) * DQK, sv = int64_t(H) * DV;
  const int64_t qoff = (int64_t(b) * T * H + h) * DQK, voff = (int64_t(b) * T * H + h) * DV;
  const bf16_t *qb = a.q + qoff, *kb = a.k + qoff, *vb = a.v + voff, *dob = a.dout + voff;
  const float* lseb = a.lse_in + (int64_t(b) * H + h) * T;
  const float* Db = a.delta + (int64_t(b) * H + h) * T;
  const int qt0 = k0 / BQ, n_q = (T + BQ - 1) / BQ - qt0;

  auto load_q = [&](int i, int buf) {
    const int q0 = (qt0 + i) * BQ;
    load_tile_async_lean<BQ, DQK, PQ, kMmaThreads>(Qs + buf * BQ * PQ, qb + int64_t(q0) * sq, sq, T - q0, tid);
    load_tile_async_lean<BQ, DV, PV, kMmaThreads>(dOs + buf * BQ * PV, dob + int64_t(q0) * sv, sv, T - q0, tid);
    if (tid < BQ) lse_s[buf * BQ + tid] = q0 + tid < T ? lseb[q0 + tid] * kLog2e : 0.f;
    else if (tid < 2 * BQ) D_s[buf * BQ + tid - BQ] = q0 + tid - BQ < T ? Db[q0 + tid - BQ] : 0.f;
  };
  load_tile_async<BK, DQK, PQ, kMmaThreads>(Ks, kb + int64_t(k0) * sq, sq, T - k0, tid);
  load_tile_async<BK, DV, PV, kMmaThreads>(Vs, vb + int64_t(k0) * sv, sv, T - k0, tid);
  load_q(0, 0);
  cp_async_commit();

  float dk[DQK / 8][4], dv[DV / 8][4];
#pragma unroll
  for (int i = 0; i < DQK / 8; ++i) dk[i][0] = dk[i][1] = dk[i][2] = dk[i][3] = 0.f;
#pragma unroll
  for (int i = 0; i < DV / 8; ++i) dv[i][0] = dv[i][1] = dv[i][2] = dv[i][3] = 0.f;
  const int key0 = k0 + warp * 16 + g;  // this lane's keys: key0, key0 + 8
  uint32_t kf[TL::REG ? DQK / 16 : 1][4], vf[TL::REG ? DV / 16 : 1][4];  // TL::REG: K_w, V_w A fragments

  for (int i = 0; i < n_q; ++i) {
    const int buf = i & 1;
    if (i + 1 < n_q) load_q(i + 1, buf ^ 1);
    cp_async_commit();
    cp_async_wait<1>();
    __syncthreads();
    if constexpr (TL::REG) {
      if (i == 0) {  // K and V arrived with the first query tile; every warp loads, also one skipping this step
#pragma unroll
        for (int kk = 0; kk < DQK / 16; ++kk) ldsm_x4(kf[kk], lds_a(Ks, PQ, warp * 16, kk * 16, lane));
#pragma unroll
        for (int kk = 0; kk < DV / 16; ++kk) ldsm_x4(vf[kk], lds_a(Vs, PV, warp * 16, kk * 16, lane));
      }
    }
    const bf16_t* Qt = Qs + buf * BQ * PQ;
    const bf16_t* dOt = dOs + buf * BQ * PV;
    const float* lse_t = lse_s + buf * BQ;
    const float* D_t = D_s + buf * BQ;
    const int q0 = (qt0 + i) * BQ;
    const int wkey0 = k0 + warp * 16;  // this warp's keys: wkey0 .. wkey0 + 15
    // Skip when every key of this warp comes after every query of the tile (P = 0) or lies past T (not written).
    if (wkey0 <= q0 + BQ - 1 && wkey0 < T) {
      // S^T = K_w Q^T  [16 keys][BQ queries]
      float st[BQ / 8][4];
#pragma unroll
      for (int x = 0; x < BQ / 8; ++x) st[x][0] = st[x][1] = st[x][2] = st[x][3] = 0.f;
#pragma unroll
      for (int kk = 0; kk < DQK / 16; ++kk) {
        uint32_t af[4];
        if constexpr (TL::REG) af[0] = kf[kk][0], af[1] = kf[kk][1], af[2] = kf[kk][2], af[3] = kf[kk][3];
        else ldsm_x4(af, lds_a(Ks, PQ, warp * 16, kk * 16, lane));
#pragma unroll
        for (int np = 0; np < BQ / 16; ++np) {
          uint32_t bf[4];
          ldsm_x4(bf, lds_b_nk(Qt, PQ, np * 16, kk * 16, lane));
          mma_bf16(st[2 * np], af, bf[0], bf[1]);
          mma_bf16(st[2 * np + 1], af, bf[2], bf[3]);
        }
      }
      // P^T = exp(scale S^T - lse[q]), 0 where masked (the diagonal, or queries past T)
      if (wkey0 + 15 > q0 || q0 + BQ > T) {
#pragma unroll
        for (int nt = 0; nt < BQ / 8; ++nt)
#pragma unroll
          for (int e = 0; e < 4; ++e) {
            const int ql = nt * 8 + 2 * t4 + (e & 1), key = key0 + (e >> 1) * 8, qg = q0 + ql;
            st[nt][e] = (key > qg || qg >= T) ? 0.f : ex2_ftz(fmaf(st[nt][e], a.scale_log2, -lse_t[ql]));
          }
      } else {
#pragma unroll
        for (int nt = 0; nt < BQ / 8; ++nt)
#pragma unroll
          for (int e = 0; e < 4; ++e)
            st[nt][e] = ex2_ftz(fmaf(st[nt][e], a.scale_log2, -lse_t[nt * 8 + 2 * t4 + (e & 1)]));
      }
      // dV += P^T dO
#pragma unroll
      for (int kk = 0; kk < BQ / 16; ++kk) {
        const uint32_t pa[4] = {pack_bf16(st[2 * kk][0], st[2 * kk][1]), pack_bf16(st[2 * kk][2], st[2 * kk][3]),
                                pack_bf16(st[2 * kk + 1][0], st[2 * kk + 1][1]),
                                pack_bf16(st[2 * kk + 1][2], st[2 * kk + 1][3])};
#pragma unroll
        for (int np = 0; np < DV / 16; ++np) {
          uint32_t bf[4];
          ldsm_x4_t(bf, lds_b_kn(dOt, PV, kk * 16, np * 16, lane));
          mma_bf16(dv[2 * np], pa, bf[0], bf[1]);
          mma_bf16(dv[2 * np + 1], pa, bf[2], bf[3]);
        }
      }
      // dP^T = V_w dO^T
      float dp[BQ / 8][4];
#pragma unroll
      for (int x = 0; x < BQ / 8; ++x) dp[x][0] = dp[x][1] = dp[x][2] = dp[x][3] = 0.f;
#pragma unroll
      for (int kk = 0; kk < DV / 16; ++kk) {
        uint32_t af[4];
        if constexpr (TL::REG) af[0] = vf[kk][0], af[1] = vf[kk][1], af[2] = vf[kk][2], af[3] = vf[kk][3];
        else ldsm_x4(af, lds_a(Vs, PV, warp * 16, kk * 16, lane));
#pragma unroll
        for (int np = 0; np < BQ / 16; ++np) {
          uint32_t bf[4];
          ldsm_x4(bf, lds_b_nk(dOt, PV, np * 16, kk * 16, lane));
          mma_bf16(dp[2 * np], af, bf[0], bf[1]);
          mma_bf16(dp[2 * np + 1], af, bf[2], bf[3]);
        }
      }
      // dS^T = P^T (dP^T - D[q]);  dK += dS^T Q
#pragma unroll
      for (int nt = 0; nt < BQ / 8; ++nt)
#pragma unroll
        for (int e = 0; e < 4; ++e) st[nt][e] *= dp[nt][e] - D_t[nt * 8 + 2 * t4 + (e & 1)];
#pragma unroll
      for (int kk = 0; kk < BQ / 16; ++kk) {
        const uint32_t pa[4] = {pack_bf16(st[2 * kk][0], st[2 * kk][1]), pack_bf16(st[2 * kk][2], st[2 * kk][3]),
                                pack_bf16(st[2 * kk + 1][0], st[2 * kk + 1][1]),
                                pack_bf16(st[2 * kk + 1][2], st[2 * kk + 1][3])};
#pragma unroll
        for (int np = 0; np < DQK / 16; ++np) {
          uint32_t bf[4];
          ldsm_x4_t(bf, lds_b_kn(Qt, PQ, kk * 16, np * 16, lane));
          mma_bf16(dk[2 * np], pa, bf[0], bf[1]);
          mma_bf16(dk[2 * np + 1], pa, bf[2], bf[3]);
        }
      }
    }
    __syncthreads();
  }

#pragma unroll
  for (int i = 0; i < 2; ++i) {
    const int key = key0 + i * 8;
    if (key >= T) continue;
    if (a.dk) {
      bf16_t* row = a.dk + qoff + int64_t(key) * sq;
#pragma unroll
      for (int nt = 0; nt < DQK / 8; ++nt)
        *reinterpret_cast<uint32_t*>(row + nt * 8 + 2 * t4) =
            pack_bf16(dk[nt][2 * i] * a.scale, dk[nt][2 * i + 1] * a.scale);
    }
    if (a.dv) {
      bf16_t* row = a.dv + voff + int64_t(key) * sv;
#pragma unroll
      for (int nt = 0; nt < DV / 8; ++nt)
        *reinterpret_cast<uint32_t*>(row + nt * 8 + 2 * t4) = pack_bf16(dv[nt][2 * i], dv[nt][2 * i + 1]);
    }
  }
}

// dQ for one tile of 64 queries: loops over the key tiles at or before it.
template <int DQK, int DV, class TL>
__global__ void __launch_bounds__(kMmaThreads, TL::MINB) attn_bwd_dq_mma(AttnArgs<bf16_t> a) {
  pdl_enter();  // programmatic dependent launch: wait for the previous kernel (common.cuh)
  using C = Mma<DQK, DV>;
  constexpr int BQ = C::Q_BQ, BK = TL::STEP, PQ = C::PQ, PV = C::PV;
  static_assert(BK % 16 == 0 && BQ % BK == 0, "key step: 16..64, divides 64");
  extern __shared__ __align__(16) unsigned char smem_raw[];
  bf16_t* Qs = reinterpret_cast<bf16_t*>(smem_raw);  // [BQ][PQ]
  bf16_t* dOs = Qs + BQ * PQ;                         // [BQ][PV]
  bf16_t* Ks = dOs + BQ * PV;                         // [2][BK][PQ]
  bf16_t* Vs = Ks + 2 * BK * PQ;                      // [2][BK][PV]
  float* lse_s = reinterpret_cast<float*>(Vs + 2 * BK * PV);  // [BQ], log2 units
  float* D_s = lse_s + BQ;                                    // [BQ]

  const int tid = threadIdx.x, warp = tid >> 5, lane = tid & 31, g = lane >> 2, t4 = lane & 3;
  const int T = a.T, H = a.H;
  const int q0 = (gridDim.x - 1 - blockIdx.x) * BQ;
  const int b = blockIdx.y / H, h = blockIdx.y % H;
  const int64_t sq = int64_t(H) * DQK, sv = int64_t(H) * DV;
  const int64_t qoff = (int64_t(b) * T * H + h) * DQK, voff = (int64_t(b) * T * H + h) * DV;
  const bf16_t *qb = a.q + qoff, *kb = a.k + qoff, *vb = a.v + voff, *dob = a.dout + voff;
  const int n_kv = min((T + BK - 1) / BK, (q0 + BQ - 1) / BK + 1);

  load_tile_async<BQ, DQK, PQ, kMmaThreads>(Qs, qb + int64_t(q0) * sq, sq, T - q0, tid);
  load_tile_async<BQ, DV, PV, kMmaThreads>(dOs, dob + int64_t(q0) * sv, sv, T - q0, tid);
  load_tile_async<BK, DQK, PQ, kMmaThreads>(Ks, kb, sq, T, tid);
  load_tile_async<BK, DV, PV, kMmaThreads>(Vs, vb, sv, T, tid);
  cp_async_commit();
  if (tid < BQ) {
    const int64_t row = (int64_t(b) * H + h) * T + q0 + tid;
    lse_s[tid] = q0 + tid < T ? a.lse_in[row] * kLog2e : 0.f;
    D_s[tid] = q0 + tid < T ? a.delta[row] : 0.f;
  }

  float dq[DQK / 8][4];
#pragma unroll
  for (int i = 0; i < DQK / 8; ++i) dq[i][0] = dq[i][1] = dq[i][2] = dq[i][3] = 0.f;
  const int row0 = q0 + warp * 16 + g;
  float lse_r[2], D_r[2];
  uint32_t qf[TL::REG ? DQK / 16 : 1][4], df[TL::REG ? DV / 16 : 1][4];  // TL::REG: Q_w, dO_w A fragments

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
    if (j == 0) {  // the per-lane row stats (written before the barrier above)
#pragma unroll
      for (int i = 0; i < 2; ++i) {
        lse_r[i] = lse_s[warp * 16 + g + 8 * i];
        D_r[i] = D_s[warp * 16 + g + 8 * i];
      }
      if constexpr (TL::REG) {  // Q and dO arrived with the first key tile
#pragma unroll
        for (int kk = 0; kk < DQK / 16; ++kk) ldsm_x4(qf[kk], lds_a(Qs, PQ, warp * 16, kk * 16, lane));
#pragma unroll
        for (int kk = 0; kk < DV / 16; ++kk) ldsm_x4(df[kk], lds_a(dOs, PV, warp * 16, kk * 16, lane));
      }
    }
    const int k0 = j * BK, wrow0 = q0 + warp * 16;  // this warp's rows: wrow0 .. wrow0 + 15
    // Skip when every key of the tile comes after every row of this warp (P = 0) or the rows lie past T.
    if (k0 <= wrow0 + 15 && wrow0 < T) {
      const bf16_t* Kt = Ks + buf * BK * PQ;
      const bf16_t* Vt = Vs + buf * BK * PV;

      float s[BK / 8][4], dp[BK / 8][4];
#pragma unroll
      for (int x = 0; x < BK / 8; ++x) {
        s[x][0] = s[x][1] = s[x][2] = s[x][3] = 0.f;
        dp[x][0] = dp[x][1] = dp[x][2] = dp[x][3] = 0.f;
      }
#pragma unroll
      for (int kk = 0; kk < DQK / 16; ++kk) {
        uint32_t af[4];
        if constexpr (TL::REG) af[0] = qf[kk][0], af[1] = qf[kk][1], af[2] = qf[kk][2], af[3] = qf[kk][3];
        else ldsm_x4(af, lds_a(Qs, PQ, warp * 16, kk * 16, lane));
#pragma unroll
        for (int np = 0; np < BK / 16; ++np) {
          uint32_t bf[4];
          ldsm_x4(bf, lds_b_nk(Kt, PQ, np * 16, kk * 16, lane));
          mma_bf16(s[2 * np], af, bf[0], bf[1]);
          mma_bf16(s[2 * np + 1], af, bf[2], bf[3]);
        }
      }
#pragma unroll
      for (int kk = 0; kk < DV / 16; ++kk) {
        uint32_t af[4];
        if constexpr (TL::REG) af[0] = df[kk][0], af[1] = df[kk][1], af[2] = df[kk][2], af[3] = df[kk][3];
        else ldsm_x4(af, lds_a(dOs, PV, warp * 16, kk * 16, lane));
#pragma unroll
        for (int np = 0; np < BK / 16; ++np) {
          uint32_t bf[4];
          ldsm_x4(bf, lds_b_nk(Vt, PV, np * 16, kk * 16, lane));
          mma_bf16(dp[2 * np], af, bf[0], bf[1]);
          mma_bf16(dp[2 * np + 1], af, bf[2], bf[3]);
        }
      }
      if (k0 + BK - 1 > wrow0 || k0 + BK > T) {  // the diagonal or the key tail: mask
#pragma unroll
        for (int nt = 0; nt < BK / 8; ++nt)
#pragma unroll
          for (int e = 0; e < 4; ++e) {
            const int col = k0 + nt * 8 + 2 * t4 + (e & 1), i = e >> 1, row = row0 + 8 * i;
            const float p = (col > row || col >= T) ? 0.f : ex2_ftz(fmaf(s[nt][e], a.scale_log2, -lse_r[i]));
            s[nt][e] = p * (dp[nt][e] - D_r[i]);
          }
      } else {
#pragma unroll
        for (int nt = 0; nt < BK / 8; ++nt)
#pragma unroll
          for (int e = 0; e < 4; ++e) {
            const int i = e >> 1;
            s[nt][e] = ex2_ftz(fmaf(s[nt][e], a.scale_log2, -lse_r[i])) * (dp[nt][e] - D_r[i]);
          }
      }
#pragma unroll
      for (int kk = 0; kk < BK / 16; ++kk) {
        const uint32_t pa[4] = {pack_bf16(s[2 * kk][0], s[2 * kk][1]), pack_bf16(s[2 * kk][2], s[2 * kk][3]),
                                pack_bf16(s[2 * kk + 1][0], s[2 * kk + 1][1]),
                                pack_bf16(s[2 * kk + 1][2], s[2 * kk + 1][3])};
#pragma unroll
        for (int np = 0; np < DQK / 16; ++np) {
          uint32_t bf[4];
          ldsm_x4_t(bf, lds_b_kn(Kt, PQ, kk * 16, np * 16, lane));
          mma_bf16(dq[2 * np], pa, bf[0], bf[1]);
          mma_bf16(dq[2 * np + 1], pa, bf[2], bf[3]);
        }
      }
    }
    __syncthreads();
  }

#pragma unroll
  for (int i = 0; i < 2; ++i) {
    const int row = row0 + i * 8;
    if (row >= T) continue;
    bf16_t* drow = a.dq + qoff + int64_t(row) * sq;
#pragma unroll
    for (int nt = 0; nt < DQK / 8; ++nt)
      *reinterpret_cast<uint32_t*>(drow + nt * 8 + 2 * t4) =
          pack_bf16(dq[nt][2 * i] * a.scale, dq[nt][2 * i + 1] * a.scale);
  }
}
