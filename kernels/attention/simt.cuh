// Part of kernels/attention.cu: the SIMT path (f32, other head dims, unaligned views): forward and backward.
// Included there, inside its anonymous namespace in ds::cuda, after the parts before it (whose names it
// uses); not a standalone header.
// =======================================================================================================
// SIMT path (f32, or bf16 with other head dims / alignment): 32 x 32 tiles in f32 shared memory.
// =======================================================================================================

constexpr int kSimtThreads = 128;
constexpr int kSB = 32;  // tile rows (queries and keys)

// Loads ROWS=32 rows x D elements (row stride gstride) into an f32 shared tile of pitch P; rows >= valid -> 0.
template <class E>
__device__ __forceinline__ void load_tile_f32(float* s, int P, const E* g, int64_t gstride, int D, int valid,
                                              int tid) {
  for (int e = tid; e < kSB * D; e += kSimtThreads) {
    const int r = e / D, d = e - r * D;
    s[r * P + d] = r < valid ? to_f(g[int64_t(r) * gstride + d]) : 0.f;
  }
}

__device__ __forceinline__ float dot_sh(const float* x, const float* y, int n) {
  float acc = 0.f;
  for (int d = 0; d < n; ++d) acc = fmaf(x[d], y[d], acc);
  return acc;
}

struct SimtFwdSmem {
  static size_t bytes(int Dqk, int Dv) {
    return sizeof(float) * (size_t(kSB) * (Dqk + 1) * 2 + size_t(kSB) * (Dv + 1) + kSB * (kSB + 1) +
                            size_t(kSB) * Dv + 3 * kSB);
  }
};

template <class E> __global__ void __launch_bounds__(kSimtThreads) attn_fwd_simt(AttnArgs<E> a) {
  pdl_enter();  // programmatic dependent launch: wait for the previous kernel (common.cuh)
  extern __shared__ __align__(16) unsigned char smem_raw[];
  const int T = a.T, H = a.H, Dqk = a.Dqk, Dv = a.Dv, PQ = Dqk + 1, PV = Dv + 1, PP = kSB + 1;
  float* Qs = reinterpret_cast<float*>(smem_raw);
  float* Ks = Qs + kSB * PQ;
  float* Vs = Ks + kSB * PQ;
  float* Ps = Vs + kSB * PV;
  float* Os = Ps + kSB * PP;
  float* m_s = Os + kSB * Dv;
  float* l_s = m_s + kSB;
  float* a_s = l_s + kSB;

  const int tid = threadIdx.x;
  const int q0 = (gridDim.x - 1 - blockIdx.x) * kSB;
  const int b = blockIdx.y / H, h = blockIdx.y % H;
  const int64_t sq = int64_t(H) * Dqk, sv = int64_t(H) * Dv;
  const E* qb = a.q + (int64_t(b) * T * H + h) * Dqk;
  const E* kb = a.k + (int64_t(b) * T * H + h) * Dqk;
  const E* vb = a.v + (int64_t(b) * T * H + h) * Dv;
  load_tile_f32(Qs, PQ, qb + int64_t(q0) * sq, sq, Dqk, T - q0, tid);
  for (int e = tid; e < kSB * Dv; e += kSimtThreads) Os[e] = 0.f;
  if (tid < kSB) {
    m_s[tid] = -INFINITY;
    l_s[tid] = 0.f;
  }
  const int n_kv = min((T + kSB - 1) / kSB, q0 / kSB + 1);
  const int r = tid >> 2, c0 = tid & 3;  // score role: row r, columns c0 + 4i
  for (int j = 0; j < n_kv; ++j) {
    const int k0 = j * kSB;
    __syncthreads();
    load_tile_f32(Ks, PQ, kb + int64_t(k0) * sq, sq, Dqk, T - k0, tid);
    load_tile_f32(Vs, PV, vb + int64_t(k0) * sv, sv, Dv, T - k0, tid);
    __syncthreads();
    float sc[kSB / 4], mx = -INFINITY;
#pragma unroll
    for (int i = 0; i < kSB / 4; ++i) {
      const int c = c0 + 4 * i;
      float x = dot_sh(Qs + r * PQ, Ks + c * PQ, Dqk) * a.scale;
      if (k0 + c > q0 + r || k0 + c >= T) x = -INFINITY;
      sc[i] = x;
      mx = fmaxf(mx, x);
    }
    mx = quad_max(mx);
    const float m_old = m_s[r], m_new = fmaxf(m_old, mx), ms = safe_max(m_new);
    float sum = 0.f;
#pragma unroll
    for (int i = 0; i < kSB / 4; ++i) {
      const float p = expf(sc[i] - ms);
      Ps[r * PP + c0 + 4 * i] = p;
      sum += p;
    }
    sum = quad_sum(sum);
    __syncwarp();
    if (c0 == 0) {
      const float alpha = expf(m_old - ms);
      m_s[r] = m_new;
      l_s[r] = l_s[r] * alpha + sum;
      a_s[r] = alpha;
    }
    __syncthreads();
    for (int e = tid; e < kSB * Dv; e += kSimtThreads) {
      const int rr = e / Dv, d = e - rr * Dv;
      float acc = 0.f;
#pragma unroll 8
      for (int c = 0; c < kSB; ++c) acc = fmaf(Ps[rr * PP + c], Vs[c * PV + d], acc);
      Os[e] = Os[e] * a_s[rr] + acc;
    }
  }
  __syncthreads();
  for (int e = tid; e < kSB * Dv; e += kSimtThreads) {
    const int rr = e / Dv, d = e - rr * Dv, row = q0 + rr;
    if (row < T) a.out[(int64_t(b) * T + row) * sv + int64_t(h) * Dv + d] = from_f<E>(Os[e] / l_s[rr]);
  }
  if (a.lse_out && tid < kSB && q0 + tid < T)
    a.lse_out[(int64_t(b) * H + h) * T + q0 + tid] = m_s[tid] + logf(l_s[tid]);
}

struct SimtDqSmem {
  static size_t bytes(int Dqk, int Dv) {
    return sizeof(float) * (size_t(kSB) * (Dqk + 1) * 2 + size_t(kSB) * (Dv + 1) * 2 + kSB * (kSB + 1) +
                            size_t(kSB) * Dqk + 2 * kSB);
  }
};

// D[r] = dO[r] . O[r] for the kSB rows of a tile: 4 threads per row (dO from shared, O from global).
template <class E>
__device__ __forceinline__ void rowdot_D(float* D_s, const float* dOs, int PV, const E* ob, int64_t sv, int Dv,
                                         int q0, int T, int tid) {
  const int r = tid >> 2, part = tid & 3, row = q0 + r;
  float acc = 0.f;
  if (row < T)
    for (int d = part; d < Dv; d += 4) acc = fmaf(dOs[r * PV + d], to_f(ob[int64_t(row) * sv + d]), acc);
  acc = quad_sum(acc);
  if (part == 0) D_s[r] = acc;
}

template <class E> __global__ void __launch_bounds__(kSimtThreads) attn_bwd_dq_simt(AttnArgs<E> a) {
  pdl_enter();  // programmatic dependent launch: wait for the previous kernel (common.cuh)
  extern __shared__ __align__(16) unsigned char smem_raw[];
  const int T = a.T, H = a.H, Dqk = a.Dqk, Dv = a.Dv, PQ = Dqk + 1, PV = Dv + 1, PP = kSB + 1;
  float* Qs = reinterpret_cast<float*>(smem_raw);
  float* Ks = Qs + kSB * PQ;
  float* dOs = Ks + kSB * PQ;
  float* Vs = dOs + kSB * PV;
  float* Ss = Vs + kSB * PV;
  float* dQs = Ss + kSB * PP;
  float* lse_s = dQs + kSB * Dqk;
  float* D_s = lse_s + kSB;

  const int tid = threadIdx.x;
  const int q0 = (gridDim.x - 1 - blockIdx.x) * kSB;
  const int b = blockIdx.y / H, h = blockIdx.y % H;
  const int64_t sq = int64_t(H) * Dqk, sv = int64_t(H) * Dv;
  const int64_t qoff = (int64_t(b) * T * H + h) * Dqk, voff = (int64_t(b) * T * H + h) * Dv;
  load_tile_f32(Qs, PQ, a.q + qoff + int64_t(q0) * sq, sq, Dqk, T - q0, tid);
  load_tile_f32(dOs, PV, a.dout + voff + int64_t(q0) * sv, sv, Dv, T - q0, tid);
  for (int e = tid; e < kSB * Dqk; e += kSimtThreads) dQs[e] = 0.f;
  if (tid < kSB) lse_s[tid] = q0 + tid < T ? a.lse_in[(int64_t(b) * H + h) * T + q0 + tid] : 0.f;
  __syncthreads();
  rowdot_D(D_s, dOs, PV, a.o + voff, sv, Dv, q0, T, tid);

  const int n_kv = min((T + kSB - 1) / kSB, q0 / kSB + 1);
  const int r = tid >> 2, c0 = tid & 3;
  for (int j = 0; j < n_kv; ++j) {
    const int k0 = j * kSB;
    __syncthreads();
    load_tile_f32(Ks, PQ, a.k + qoff + int64_t(k0) * sq, sq, Dqk, T - k0, tid);
    load_tile_f32(Vs, PV, a.v + voff + int64_t(k0) * sv, sv, Dv, T - k0, tid);
    __syncthreads();
#pragma unroll
    for (int i = 0; i < kSB / 4; ++i) {
      const int c = c0 + 4 * i;
      float ds = 0.f;
      if (!(k0 + c > q0 + r || k0 + c >= T)) {
        const float p = expf(dot_sh(Qs + r * PQ, Ks + c * PQ, Dqk) * a.scale - lse_s[r]);
        ds = p * (dot_sh(dOs + r * PV, Vs + c * PV, Dv) - D_s[r]);
      }
      Ss[r * PP + c] = ds;
    }
    __syncthreads();
    for (int e = tid; e < kSB * Dqk; e += kSimtThreads) {
      const int rr = e / Dqk, d = e - rr * Dqk;
      float acc = 0.f;
#pragma unroll 8
      for (int c = 0; c < kSB; ++c) acc = fmaf(Ss[rr * PP + c], Ks[c * PQ + d], acc);
      dQs[e] += acc;
    }
  }
  __syncthreads();
  for (int e = tid; e < kSB * Dqk; e += kSimtThreads) {
    const int rr = e / Dqk, d = e - rr * Dqk, row = q0 + rr;
    if (row < T) a.dq[qoff + int64_t(row) * sq + d] = from_f<E>(dQs[e] * a.scale);
  }
}

struct SimtDkvSmem {
  static size_t bytes(int Dqk, int Dv) {
    return sizeof(float) * (size_t(kSB) * (Dqk + 1) * 2 + size_t(kSB) * (Dv + 1) * 2 + 2 * kSB * (kSB + 1) +
                            size_t(kSB) * (Dqk + Dv) + 2 * kSB);
  }
};

template <class E> __global__ void __launch_bounds__(kSimtThreads) attn_bwd_dkdv_simt(AttnArgs<E> a) {
  pdl_enter();  // programmatic dependent launch: wait for the previous kernel (common.cuh)
  extern __shared__ __align__(16) unsigned char smem_raw[];
  const int T = a.T, H = a.H, Dqk = a.Dqk, Dv = a.Dv, PQ = Dqk + 1, PV = Dv + 1, PP = kSB + 1;
  float* Ks = reinterpret_cast<float*>(smem_raw);
  float* Qs = Ks + kSB * PQ;
  float* Vs = Qs + kSB * PQ;
  float* dOs = Vs + kSB * PV;
  float* Ps = dOs + kSB * PV;  // [key][query]
  float* DSs = Ps + kSB * PP;  // [key][query]
  float* dKs = DSs + kSB * PP;
  float* dVs = dKs + kSB * Dqk;
  float* lse_s = dVs + kSB * Dv;
  float* D_s = lse_s + kSB;

  const int tid = threadIdx.x;
  const int k0 = blockIdx.x * kSB;
  const int b = blockIdx.y / H, h = blockIdx.y % H;
  const int64_t sq = int64_t(H) * Dqk, sv = int64_t(H) * Dv;
  const int64_t qoff = (int64_t(b) * T * H + h) * Dqk, voff = (int64_t(b) * T * H + h) * Dv;
  load_tile_f32(Ks, PQ, a.k + qoff + int64_t(k0) * sq, sq, Dqk, T - k0, tid);
  load_tile_f32(Vs, PV, a.v + voff + int64_t(k0) * sv, sv, Dv, T - k0, tid);
  for (int e = tid; e < kSB * Dqk; e += kSimtThreads) dKs[e] = 0.f;
  for (int e = tid; e < kSB * Dv; e += kSimtThreads) dVs[e] = 0.f;

  const int c = tid >> 2, r0 = tid & 3;  // score role: key c, queries r0 + 4i
  for (int q0 = k0; q0 < T; q0 += kSB) {
    __syncthreads();
    load_tile_f32(Qs, PQ, a.q + qoff + int64_t(q0) * sq, sq, Dqk, T - q0, tid);
    load_tile_f32(dOs, PV, a.dout + voff + int64_t(q0) * sv, sv, Dv, T - q0, tid);
    if (tid < kSB) lse_s[tid] = q0 + tid < T ? a.lse_in[(int64_t(b) * H + h) * T + q0 + tid] : 0.f;
    __syncthreads();
    rowdot_D(D_s, dOs, PV, a.o + voff, sv, Dv, q0, T, tid);
    __syncthreads();
#pragma unroll
    for (int i = 0; i < kSB / 4; ++i) {
      const int r = r0 + 4 * i;
      float p = 0.f, ds = 0.f;
      if (!(k0 + c > q0 + r || q0 + r >= T)) {
        p = expf(dot_sh(Ks + c * PQ, Qs + r * PQ, Dqk) * a.scale - lse_s[r]);
        ds = p * (dot_sh(Vs + c * PV, dOs + r * PV, Dv) - D_s[r]);
      }
      Ps[c * PP + r] = p;
      DSs[c * PP + r] = ds;
    }
    __syncthreads();
    for (int e = tid; e < kSB * Dv; e += kSimtThreads) {
      const int cc = e / Dv, d = e - cc * Dv;
      float acc = 0.f;
#pragma unroll 8
      for (int r = 0; r < kSB; ++r) acc = fmaf(Ps[cc * PP + r], dOs[r * PV + d], acc);
      dVs[e] += acc;
    }
    for (int e = tid; e < kSB * Dqk; e += kSimtThreads) {
      const int cc = e / Dqk, d = e - cc * Dqk;
      float acc = 0.f;
#pragma unroll 8
      for (int r = 0; r < kSB; ++r) acc = fmaf(DSs[cc * PP + r], Qs[r * PQ + d], acc);
      dKs[e] += acc;
    }
  }
  __syncthreads();
  if (a.dk)
    for (int e = tid; e < kSB * Dqk; e += kSimtThreads) {
      const int cc = e / Dqk, d = e - cc * Dqk, key = k0 + cc;
      if (key < T) a.dk[qoff + int64_t(key) * sq + d] = from_f<E>(dKs[e] * a.scale);
    }
  if (a.dv)
    for (int e = tid; e < kSB * Dv; e += kSimtThreads) {
      const int cc = e / Dv, d = e - cc * Dv, key = k0 + cc;
      if (key < T) a.dv[voff + int64_t(key) * sv + d] = from_f<E>(dVs[e]);
    }
}
