// Part of kernels/attention.cu: the backward's dQ from the dS tiles attn_bwd_dkdv_wgmma<..., DSOUT> left (sm_90a;
// dQ variant 7 at 96/64). Included there, inside its anonymous namespace in ds::cuda, after bwd_wgmma.cuh (whose
// wgbwd helpers it uses); not a standalone header.
// ---- backward dQ = scale dS K from stored dS (sm_90a) ------------------------------------------------------
// attn_bwd_dq_wgmma recomputes S = Q K^T and dP = dO V^T to get dS: two of its three products (and 2 of the
// backward's 7) only repeat what the dK/dV kernel already computed. Here that kernel stores dS^T as bf16 tiles (the
// values its dK product reads; wgbwd::store_ds), and dQ is one product a key tile: a block owns QT query tiles of 64
// rows (one m64 accumulator each) and walks the key tiles j up to its last, each step one m64n96k16 wgmma per k16
// of keys and query tile with both operands MN-major in shared memory (a dS^T tile [keys][queries] read transposed
// as A, the key tile [keys][Dqk] as B, loaded once for the QT tiles: the key tiles are most of what the kernel
// reads). Tiles are double-buffered with cp.async, as in the other backward kernels. The dS tiles cost ~T^2 H B
// bytes of scratch (the triangle, bf16), written once and read once.
// TMA (dQ variant 8): one thread loads each step's tiles by the TMA unit two steps ahead onto the buffer's mbarrier,
// as the dK/dV kernel's TMA variants do (bwd_wgmma.cuh): the dS scratch as a 2D view of 128-byte rows, the keys as
// views of K (and of the shared rope key, MLA in place); where T is a multiple of 64. The same products in the same
// order, so the same bits.
namespace wgbwd {

template <int DQK, int QT> struct CfgDs {
  static constexpr int KB = (DQK + 63) / 64;  // 64-wide column blocks of a key tile
  static constexpr int ds_bytes = 64 * 128, k_bytes = 64 * KB * 128;
  static constexpr int stage_bytes = QT * ds_bytes + k_bytes;  // one buffer: QT dS tiles, then the key tile
  // + 16: TMA's two mbarriers; + 1024: slack to align the tiles to 1024 bytes (the swizzle is a function of the
  // address)
  static constexpr size_t smem = size_t(2 * stage_bytes) + 16 + 1024;
};

// The TMA kernel's maps: the dS scratch [tiles x 64 rows, 64 columns], K [B T, its row's columns] and the rope key
// (k_rope: MLA in place, else unused), boxes of 64 rows x 64 columns, the 128-byte swizzle.
struct DqMaps {
  CUtensorMap ds, k, kr;
};

// The scratch attn_bwd_dkdv_wgmma<..., true> fills for B * H (batch, head) pairs of T tokens, in bytes.
inline size_t ds_scratch_bytes(int64_t BH, int64_t T) {
  const int64_t n = (T + 63) / 64;
  return size_t(BH * n * (n + 1) / 2) * 4096 * sizeof(bf16_t);
}

}  // namespace wgbwd

// Grid: (ceil(ceil(T / 64) / QT), B * H); block x owns query tiles QT x' .. QT x' + QT - 1 (x' counted from the last,
// the longest rows first).
// TMA: the tiles loaded by the TMA unit (maps; above).
template <int DQK, int QT, int MINB, bool TMA>
__global__ void __launch_bounds__(kMmaThreads, MINB)
    attn_bwd_dq_ds_wgmma(AttnArgs<bf16_t> a, const __grid_constant__ wgbwd::DqMaps maps) {
  static_assert(DQK == 96, "dQ is one m64n96 product per k16 step");
  pdl_enter();  // programmatic dependent launch: wait for the previous kernel (common.cuh)
  using C = wgbwd::CfgDs<DQK, QT>;
  extern __shared__ __align__(16) unsigned char smem_raw[];
  unsigned char* S = smem_raw + ((1024 - (smem_addr(smem_raw) & 1023)) & 1023);  // [2] stages
  const uint32_t ss = smem_addr(S);
  const uint32_t full0 = ss + 2 * C::stage_bytes;  // TMA: [2] a buffer's arrival

  const int tid = threadIdx.x, warp = tid >> 5, lane = tid & 31, g = lane >> 2, t4 = lane & 3;
  const int T = a.T, H = a.H, n = (T + 63) / 64;
  const int it0 = (gridDim.x - 1 - blockIdx.x) * QT;  // this block's first query tile
  const int nt = min(QT, n - it0), last = it0 + nt - 1;
  const int b = blockIdx.y / H, h = blockIdx.y % H;
  const int64_t sq = int64_t(H) * DQK, qoff = (int64_t(b) * T * H + h) * DQK;
  const wgbwd::KvPtrs kv = wgbwd::kv_ptrs(a, b, h);

  auto load = [&](int j, int buf) {  // the dS tiles of key tile j for this block's query tiles from j on
    unsigned char* st = S + buf * C::stage_bytes;
#pragma unroll
    for (int t = 0; t < QT; ++t)
      if (t < nt && it0 + t >= j)
        wgmma::load_tile_sw128<64, 64, kMmaThreads>(st + t * C::ds_bytes,
                                                    a.ds + wgbwd::ds_tile(blockIdx.y, j, it0 + t, n) * 4096, 64, 0,
                                                    64, 0, 64);
    wgbwd::load_k_tile<64, DQK, kMmaThreads>(st + QT * C::ds_bytes, kv.k, a.ld_k, kv.kr, a.ld_kr, j * 64, T);
  };
  // TMA: the same by one thread, completing on buffer buf's barrier
  auto issue = [&](int j, int buf) {
    const uint32_t st = ss + buf * C::stage_bytes, bar = full0 + 8 * buf;
    int tiles = 0;
#pragma unroll
    for (int t = 0; t < QT; ++t) tiles += t < nt && it0 + t >= j;
    tmacp::mbar_arrive_expect_tx(bar, tiles * C::ds_bytes + C::k_bytes);
#pragma unroll
    for (int t = 0; t < QT; ++t)
      if (t < nt && it0 + t >= j)
        tmacp::tma_load_2d(st + t * C::ds_bytes, &maps.ds, bar, 0, int(wgbwd::ds_tile(blockIdx.y, j, it0 + t, n) * 64));
    const uint32_t kt = st + QT * C::ds_bytes;
    const int row = b * T + j * 64;
    tmacp::tma_load_2d(kt, &maps.k, bar, int(h * a.hs_k), row);
    if (a.k_rope) tmacp::tma_load_2d(kt + 64 * 128, &maps.kr, bar, int(h * a.hs_kr), row);
    else tmacp::tma_load_2d(kt + 64 * 128, &maps.k, bar, int(h * a.hs_k) + 64, row);
  };
  if constexpr (TMA) {
    if (tid == 0) tmacp::ring2_start(full0, last >= 1, issue);
    __syncthreads();  // the barriers' inits seen by every thread
  } else {
    load(0, 0);
    cp_async_commit();
  }

  float dq[QT][DQK / 2];
#pragma unroll
  for (int t = 0; t < QT; ++t)
#pragma unroll
    for (int i = 0; i < DQK / 2; ++i) dq[t][i] = 0.f;

  for (int j = 0; j <= last; ++j) {
    const int buf = j & 1;
    if constexpr (TMA) {
      tmacp::mbar_wait(full0 + 8 * buf, (j >> 1) & 1);
    } else {
      if (j < last) load(j + 1, buf ^ 1);
      cp_async_commit();
      cp_async_wait<1>();
      wgmma::fence_proxy_async();
      __syncthreads();
    }
    // dQ_t += dS_t K: A = the dS^T tile read transposed (MN-major: keys = k, queries = m), B = the key tile
    // (MN-major: keys = k, Dqk = n across its column blocks); a k16 step is 16 rows = 2048 bytes of each.
    const uint32_t st = ss + buf * C::stage_bytes, kt = st + QT * C::ds_bytes;
    wgmma::fence();
#pragma unroll
    for (int t = 0; t < QT; ++t)
      if (t < nt && it0 + t >= j) {
#pragma unroll
        for (int kq = 0; kq < 4; ++kq)
          wgmma::mma_m64n96k16<1, 1>(dq[t], wgmma::desc_sw128(st + t * C::ds_bytes + kq * 2048, 64 * 128, 1024),
                                     wgmma::desc_sw128(kt + kq * 2048, 64 * 128, 1024));
      }
    wgmma::commit();
    wgmma::wait<0>();
#pragma unroll
    for (int t = 0; t < QT; ++t) wgmma::pin(dq[t]);
    if constexpr (TMA) {
      if (j + 2 <= last) {
        __syncthreads();  // this step's products have retired everywhere: refill its buffer two steps ahead
        if (tid == 0) issue(j + 2, buf);
      }
    } else {
      __syncthreads();  // this step's products have retired: the buffers may be refilled
    }
  }

#pragma unroll
  for (int t = 0; t < QT; ++t) {
    const int row0 = (it0 + t) * 64 + warp * 16 + g;  // this lane's rows: row0, row0 + 8
#pragma unroll
    for (int i = 0; i < 2; ++i) {
      const int row = row0 + i * 8;
      if (t >= nt || row >= T) continue;
      bf16_t* drow = a.dq + qoff + int64_t(row) * sq;
#pragma unroll
      for (int c = 0; c < DQK / 8; ++c)
        *reinterpret_cast<uint32_t*>(drow + c * 8 + 2 * t4) =
            pack_bf16(dq[t][4 * c + 2 * i] * a.scale, dq[t][4 * c + 2 * i + 1] * a.scale);
    }
  }
}
