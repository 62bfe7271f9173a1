// Part of kernels/grouped_matmul.cu: dec::, the grouped GEMV at decode.
// Included there, inside its anonymous namespace in ds::cuda, after the parts before it (whose names it
// uses); not a standalone header.
// ---- bf16 forward at decode: a few rows per expert (grouped GEMV on tensor cores) ------------------------------
// Taken by default up to one row per expert on average (kDecodeRowsPerExpert, with the measurements).
// At decode the forward reads each active expert's whole W_e [N, K] for a handful of rows: the cost is the weight
// stream, and what matters is how many bytes are in flight. The tiled kernels above give a 64-column slice of W_e
// to one block that walks K in a latency-bound loop (batch 1: 4 experts x 8 blocks do all the work). This one:
//   grid (ceil(N / (16 MT)), min(E, M)): block (x, y) takes 16 MT output columns of the y-th expert that has rows
//     (found by a warp ballot over the offsets: no block is spent on an empty expert, M bounds the active ones).
//   8 warps split K: per 1024-deep slice, warp w owns the 32-deep chunks w, w + 8, w + 16, w + 24 (all warps busy
//     at K 512), and issues its 16-byte weight loads for all of them at once (8 MT loads of 16 bytes per thread,
//     streamed past L1), before anything waits.
//   The expert's rows (up to 32 per pass, zero-padded to 8) are staged in shared memory by cp.async meanwhile.
//   Products on mma.sync m16n8k16 with the roles swapped: A = 16 weight rows (output columns) x 16 k, B = 16 k x
//     8 input rows, so a row tile of 8 is the small dimension. The k order inside a 32-deep chunk is permuted
//     (the same permutation on both operands, so the sum is unchanged): lane (g, t) holds physical k 8t .. 8t + 7
//     of weight rows g and g + 8 and of input row g, which is one 16-byte load each; the first mma takes k 8t .. 8t
//     + 3 as its logical (2t, 2t + 1, 2t + 8, 2t + 9), the second 8t + 4 .. 8t + 7.
//   The 8 warps' partial sums go through shared memory and are added in warp order (fixed: deterministic, no
//     atomics), one write per output (=|+=), stores along n.
// Experts with more than 32 rows take several passes (the weights are re-read, from L2 mostly): correct for any
// load, fast for the few rows of decode. Host guarantees (launch_pipelined): bf16, 16-byte aligned in and W,
// K % 8 == 0 (so an 8-element group lies wholly inside or outside K).
namespace dec {
constexpr int kWarps = 8, kThreads = kWarps * 32;
constexpr int kU = 4;                        // 32-deep k-chunks per warp per slice
constexpr int kSlice = kWarps * kU * 32;     // k per slice (1024)
constexpr int kPitch = kSlice + 32;          // staged row pitch in elements: 132 16-byte units = 4 mod 8, so the
                                             // 8 rows x 4 lanes of a quarter warp's 16-byte reads hit distinct banks
constexpr int kMaxRows = 32;                 // rows per pass: 4 tiles of 8
constexpr size_t smem_bytes(int rows) { return size_t(rows) * kPitch * sizeof(__nv_bfloat16); }
// The partial sums (kWarps x tiles x MT x 32 lanes x 4 f32) reuse the staging area: 4096 MT bytes per 8 rows.
static_assert(kWarps * 4 * 4 * 128 <= 8 * kPitch * 2, "partials of MT <= 4 fit the staging area of 8 rows");

__device__ __forceinline__ uint4 ld_stream16(const void* p) {  // read once: no L1 allocation
  uint4 v;
  asm("ld.global.nc.L1::no_allocate.v4.u32 {%0, %1, %2, %3}, [%4];\n"
      : "=r"(v.x), "=r"(v.y), "=r"(v.z), "=r"(v.w)
      : "l"(p));
  return v;
}

// The slot-th expert (in expert order) whose clamped row range is not empty; false if there are fewer. Every
// lane of every warp computes the same answer.
__device__ __forceinline__ bool active_expert(const GemmArgs& a, int64_t slot, int& e, int64_t& r0, int64_t& r1) {
  const int lane = threadIdx.x & 31;
  int64_t before = 0;
  for (int e0 = 0; e0 < a.E; e0 += 32) {
    int64_t q0 = 0, q1 = 0;
    if (e0 + lane < a.E) expert_rows(a, e0 + lane, q0, q1);
    const bool has = q1 > q0;
    const unsigned mask = __ballot_sync(0xffffffffu, has);
    const int cnt = __popc(mask);
    if (slot < before + cnt) {  // uniform
      const int want = int(slot - before);
      const unsigned hit = __ballot_sync(0xffffffffu, has && __popc(mask & ((1u << lane) - 1u)) == want);
      const int l = __ffs(int(hit)) - 1;
      e = e0 + l;
      r0 = __shfl_sync(0xffffffffu, q0, l);
      r1 = __shfl_sync(0xffffffffu, q1, l);
      return true;
    }
    before += cnt;
  }
  return false;
}

// Where a 16 x 8 tile's partial sum for output column m (0..15) and row rr (0..7) sits among the tile's 128 stored
// floats: acc[q] of lane (g, t) holds column g + 8 (q >> 1), row 2t + (q & 1), stored at lane * 4 + q.
__device__ __forceinline__ int partial_slot(int m, int rr) {
  return ((m & 7) * 4 + (rr >> 1)) * 4 + (rr & 1) + 2 * (m >> 3);
}

// MT: 16-column tiles per block. max_rows (8..32, a multiple of 8): rows per pass, which sizes the shared memory.
// MT 1: 80 registers (a few bytes spilled, outside the k-loop), 3 blocks of 8 warps per SM (67.6 KB of shared
// memory each at 32 rows); MT 2 (a benchmark variant): 166 registers, 1 block per SM.
// PAIR (MT 2, grouped_swiglu_forward): tile 0 holds 16 columns of the gate product (weights B), tile 1 the same
// columns of the up product (B2), and the block writes silu(gate) * up, each product rounded to TC first, as
// swiglu_forward reads them.
template <int MT, class TC, bool PAIR = false>
__global__ void __launch_bounds__(kThreads, MT == 1 ? 3 : 1) grouped_gemv(GemmArgs a, int max_rows) {
  static_assert(MT >= 1 && MT <= 4, "column tiles per block");
  static_assert(!PAIR || MT == 2, "a SwiGLU pair is two column tiles");
  constexpr int kCols = PAIR ? 16 : 16 * MT;  // output columns per block
  using bf16 = __nv_bfloat16;
  extern __shared__ __align__(128) unsigned char dec_smem[];
  bf16* xs = reinterpret_cast<bf16*>(dec_smem);     // staged rows [max_rows][kPitch]
  float* red = reinterpret_cast<float*>(dec_smem);  // then the partial sums [kWarps][tiles][MT][32][4]
  const bf16* A = static_cast<const bf16*>(a.A);
  TC* C = static_cast<TC*>(a.C);
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5, g = lane >> 2, t = lane & 3;
  const int64_t n0 = int64_t(blockIdx.x) * kCols;
  const int64_t slots = a.E < a.M ? int64_t(a.E) : a.M;
  uint4 wr[kU][MT][2];  // this warp's weights for one k-slice
  // 1. The weights of expert e for the slice at ks, all loads in flight at once.
  auto load_weights = [&](int e, int64_t ks) {
    const int kw = int(a.Kd - ks < kSlice ? a.Kd - ks : kSlice);
    const bf16* We = static_cast<const bf16*>(a.B) + e * a.b_estride;
    const bf16* We2 = PAIR ? static_cast<const bf16*>(a.B2) + e * a.b_estride : We;
#pragma unroll
    for (int u = 0; u < kU; ++u) {
      const int kl = (warp + kWarps * u) * 32 + 8 * t;
#pragma unroll
      for (int mt = 0; mt < MT; ++mt)
#pragma unroll
        for (int h = 0; h < 2; ++h) {
          const int64_t n = n0 + (PAIR ? 0 : 16 * mt) + g + 8 * h;
          const bf16* W = PAIR && mt == 1 ? We2 : We;
          wr[u][mt][h] = make_uint4(0u, 0u, 0u, 0u);
          if (n < a.Nd && kl < kw) wr[u][mt][h] = ld_stream16(W + n * a.ldb_n + ks + kl);
        }
    }
  };
  // With settled offsets the first slot's expert and its first slice's weights are found and loaded before the
  // wait (the offsets' writer ran two or more launches back; weights are parameters): only the rows wait.
  int e = 0;
  int64_t r0 = 0, r1 = 0;
  const bool early = a.off_settled && blockIdx.y < slots && active_expert(a, blockIdx.y, e, r0, r1);
  if (early) load_weights(e, 0);
  pdl_enter();  // programmatic dependent launch: wait for the previous kernel (common.cuh)
  for (int64_t slot = blockIdx.y; slot < slots; slot += gridDim.y) {
    const bool first = early && slot == blockIdx.y;
    if (!first && !active_expert(a, slot, e, r0, r1)) return;  // uniform; later slots are empty too
    for (int64_t rc = r0; rc < r1; rc += max_rows) {
      const int rows = int(r1 - rc < max_rows ? r1 - rc : max_rows);
      const int nt = (rows + 7) >> 3;  // 8-row tiles this pass (1..4)
      float acc[4][MT][4];
#pragma unroll
      for (int j = 0; j < 4; ++j)
#pragma unroll
        for (int mt = 0; mt < MT; ++mt)
#pragma unroll
          for (int q = 0; q < 4; ++q) acc[j][mt][q] = 0.0f;

      for (int64_t ks = 0; ks < a.Kd; ks += kSlice) {
        const int kw = int(a.Kd - ks < kSlice ? a.Kd - ks : kSlice);  // a multiple of 8
        if (!(first && rc == r0 && ks == 0)) load_weights(e, ks);
        // 2. The rows of this pass, k in [ks, ks + kw), into shared memory (rows past the expert zero-filled).
        __syncthreads();  // the previous slice's (or pass's) readers of the shared memory are done
        const int cpr = kw >> 3;
        for (int c = threadIdx.x; c < nt * 8 * cpr; c += kThreads) {
          const int r = c / cpr, kk = (c - r * cpr) * 8;
          const bool ok = r < rows;
          attn::cp_async16(xs + r * kPitch + kk, ok ? A + (rc + r) * a.lda_m + ks + kk : A, ok);
        }
        attn::cp_async_commit();
        attn::cp_async_wait<0>();
        __syncthreads();
        // 3. Products: chunk u, row tile j, column tile mt; two k16 steps per chunk.
#pragma unroll
        for (int u = 0; u < kU; ++u) {
          const int kc = (warp + kWarps * u) * 32;
          if (kc < kw) {  // uniform over the warp
            const int kl = kc + 8 * t;
#pragma unroll
            for (int j = 0; j < 4; ++j) {
              if (j < nt) {  // uniform
                uint4 xb = make_uint4(0u, 0u, 0u, 0u);
                if (kl < kw) xb = *reinterpret_cast<const uint4*>(xs + (8 * j + g) * kPitch + kl);
#pragma unroll
                for (int mt = 0; mt < MT; ++mt) {
                  const uint4 lo = wr[u][mt][0], hi = wr[u][mt][1];
                  const uint32_t f0[4] = {lo.x, hi.x, lo.y, hi.y}, f1[4] = {lo.z, hi.z, lo.w, hi.w};
                  attn::mma_bf16(acc[j][mt], f0, xb.x, xb.y);
                  attn::mma_bf16(acc[j][mt], f1, xb.z, xb.w);
                }
              }
            }
          }
        }
      }
      // 4. Partial sums of the 8 warps, added in warp order. acc[j][mt][q]: output column 16 mt + g + 8 (q >> 1),
      // row 8 j + 2 t + (q & 1) of this pass.
      __syncthreads();  // all warps are done with the staged rows: the area takes the partials
      const int per = nt * MT * 128;
#pragma unroll
      for (int j = 0; j < 4; ++j)
#pragma unroll
        for (int mt = 0; mt < MT; ++mt)
          if (j < nt)
            *reinterpret_cast<float4*>(red + warp * per + (j * MT + mt) * 128 + lane * 4) =
                make_float4(acc[j][mt][0], acc[j][mt][1], acc[j][mt][2], acc[j][mt][3]);
      __syncthreads();
      if constexpr (PAIR) {
        for (int i = threadIdx.x; i < nt * 128; i += kThreads) {  // i = (tile j, row rr, column m), columns fastest
          const int m = i & 15, rr = (i >> 4) & 7, j = i >> 7;
          const int idx = partial_slot(m, rr);
          float vg = 0.0f, vu = 0.0f;
#pragma unroll
          for (int w = 0; w < kWarps; ++w) {
            vg += red[w * per + (j * 2) * 128 + idx];
            vu += red[w * per + (j * 2 + 1) * 128 + idx];
          }
          const int64_t row = rc + 8 * j + rr, col = n0 + m;
          if (row < r1 && col < a.Nd) {
            const float gv = to_f(from_f<TC>(vg)), uv = to_f(from_f<TC>(vu));
            C[row * a.ldc + col] = from_f<TC>(gv * (1.0f / (1.0f + expf(-gv))) * uv);  // swiglu_fwd_kernel's
          }
        }
      } else {
        for (int i = threadIdx.x; i < per; i += kThreads) {  // i = (tile j, row rr, column cc), columns fastest
          const int cc = i % (16 * MT), rr = (i / (16 * MT)) & 7, j = i / (128 * MT);
          const int mt = cc >> 4, m = cc & 15;
          const int idx = (j * MT + mt) * 128 + partial_slot(m, rr);
          float v = 0.0f;
#pragma unroll
          for (int w = 0; w < kWarps; ++w) v += red[w * per + idx];
          const int64_t row = rc + 8 * j + rr, col = n0 + cc;
          if (row < r1 && col < a.Nd) {
            TC* c = C + row * a.ldc + col;
            *c = from_f<TC>(a.accumulate ? to_f(*c) + v : v);
          }
        }
      }
      // The next pass's (or slot's) first barrier comes before its staging overwrites the partials.
    }
  }
}
}  // namespace dec
