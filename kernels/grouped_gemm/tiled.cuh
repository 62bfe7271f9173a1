// Part of kernels/grouped_matmul.cu: the operands, the tile location by expert, and the generic tiled kernel (f32 and unaligned rows).
// Included there, inside its anonymous namespace in ds::cuda, after the parts before it (whose names it
// uses); not a standalone header.
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
  const void* B2;            // dec::grouped_gemv's SwiGLU pair: the up weights (B the gate's), same layout;
                             // tma:: rows mode with k_split: the second product's weights (B's layout)
  const void* A2;            // tma:: rows mode with k_split: the second product's A (A's layout)
  int64_t k_split;           // tma:: rows mode: > 0, k-tiles from k_split on read (A2, B2) at k - k_split
  int off_settled;           // Inputs::settled offsets: dec::grouped_gemv finds its expert and loads its first
                             // weights before its wait
  void* C_gate;              // tma:: SWIGLU (C = SwiGLU of the gate and up products): where to keep each product,
  void* C_up;                // C's layout (null: not kept); DSWIGLU: where d_up goes (C takes d_gate)
  const void* G_in;          // tma:: DSWIGLU (d_in through the SwiGLU backward): the forward's gate and up
  const void* U_in;          // products, C's layout
  int64_t split_kt;          // tma:: reduce mode, variant 9: > 0, an expert of more 64-row k-tiles than this runs
                             // as chunks of at most this many, their sums added in chunk order (tma:: SPLIT)
  float* split_ws;           // SPLIT: the chunks' partial sums (a slot a chunk, tile and warpgroup)
  unsigned* split_cnt;       // SPLIT: a counter a split expert's tile and warpgroup, zero between launches
  unsigned long long* job_trace;  // tma:: reduce mode (bench hook, null outside ds-bench-grouped-gemm): per job,
                                  // tma::kJobTraceWords words of timestamps, SM and kind (the TRACE instantiation)
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

