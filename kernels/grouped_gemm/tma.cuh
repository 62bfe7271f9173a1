// Part of kernels/grouped_matmul.cu: tma::, the wgmma kernel on TMA loads with a producer warpgroup (variants 5-10;
// 7, the write-back staged in shared memory; 8, 7 with reduce mode persistent under a dynamic tile scheduler; 9, 7
// with reduce mode's sums added to C by the TMA unit, the default; 10, 8 with that).
// Included there, inside its anonymous namespace in ds::cuda, after the parts before it (whose names it
// uses); not a standalone header.
// ---- variants 5-10 (9 the default with sm_90a): wgmma with TMA loads and warp specialisation -----------------
// All three products: the forward (rows mode, A = in [M, K] and B = W [E, N, K], both K-major), d_in (rows mode,
// B = W read as [K, N] blocks: MN-major) and d_weight (reduce mode, A = d_out and B = in, both MN-major, summed
// over the expert's rows). 128 x 256 output tiles as wg::N256, but 384 threads in three roles: warpgroup 0 is the
// producer (one thread issues the TMA loads, cp.async.bulk.tensor, of 64-deep k-tiles of A [128 x 64] and
// B [256 x 64] into a ring of kStages slots: CU_TENSOR_MAP_SWIZZLE_128B writes exactly the 128-byte swizzled
// K-major layout wgmma.cuh's descriptors describe, one 128-byte column block, rows 128 bytes apart, 16-byte chunk c
// of row r at c ^ (r % 8), the slots 1024-byte aligned), warpgroups 1 and 2 are the consumers, each owning 64 rows
// of the tile (m64n256k16 products, as wg::). Per slot a full mbarrier (count 1: the producer's arrive.expect_tx of the
// slot's bytes; the TMA's complete_tx completes the phase) and an empty one (count 8: lane 0 of each consumer warp
// arrives once the warpgroup's wgmma.wait_group says the products reading the slot retired). No block-wide barrier
// after the set-up. Registers: 159-168 a thread without setmaxnreg (ptxas, nvcc 13.0: no spills under the 168 that
// 384 threads leave), so the producer / consumer split of the register file (setmaxnreg, 40 / 232) is left out
// except for SWIGLU (below; its epilogue spilled 140 bytes at 168); -DDS_TMA_SETMAXNREG turns it on for all
// (compiles without warning C7508: 168 registers, no spills; untimed). A block holds ~64.5k of an SM's 65,536
// registers, so no other kernel's block runs beside it (the 22nd session capped rows mode at 160 to let 128-thread
// AdamW blocks in beside the forward's products: training 1.7% slower; bench/gpu/SESSIONS.md).
//
// The tiles: one block-wide scan at the start writes first[e], the first m-tile of expert e (m-tiles of 128 rows
// numbered consecutively over the experts, as locate_tile numbers them), to shared memory; then both roles walk
// the same sequence t = blockIdx.x, + gridDim.x, ... (t = m-tile * nx + n-tile) independently, finding a tile's
// expert by a binary search of first[], so the producer runs ahead across tile boundaries with no hand-off.
//
// MN-major operands load [64 k][64 columns] boxes (the same 128-byte swizzle: one column block of wg::'s MN-major
// layout each), two for A and four for B, 8 KB apart. Reduce mode is a block a tile, the experts in order of falling
// row count (the hardware hands the blocks out in order, so the long tiles start first: LPT scheduling).
//
// Out-of-range reads are harmless by construction: the TMA zero-fills past K (the k tail) and past the last row
// of A / of E * N rows of B; rows of A past an expert's last row belong to the next expert but only feed output
// rows >= m_end, which the store skips, and rows of B past the expert's N (N % 256 != 0) belong to the next
// expert but only feed columns >= N, which store_pair skips. d_in's k tail reads the next expert's rows of W
// against A's zero fill. Reduce mode's last k-tile reads rows of the next expert in both operands: each consumer
// warpgroup zeroes those rows of its own A column block before its products.
//
// STAGE (variants 6 and 7): the write-back through shared memory. wg::store_block stores each thread's pairs straight
// from the accumulator layout: a warp's bf16 store covers 8 rows x 16 bytes, half of each 32-byte sector, and a
// 64 x 256 half-tile takes 64 such stores a thread (f32 d_weight: 64 loads and 64 stores of 8 bytes). Staged, a
// warpgroup writes 64 rows x 128 bytes at a time (64 bf16 / 32 f32 columns) into its own 8 KB buffer (16-byte
// chunks XOR-swizzled by row: conflict-free both ways), then each thread moves whole 16-byte chunks, a warp four full
// 128-byte rows: a quarter of the memory instructions, every sector whole. Before the change the store queue was the
// kernel's limit (ncu, 14th session: lg_throttle ~2.3 of ~13 stall cycles an instruction, with long_scoreboard, wait
// and barrier). Rows mode stages bf16 outputs written over (forward, d_in; variant 6), reduce mode f32 accumulation
// too (d_weight: old values loaded in 16-byte words, added, stored; variant 7). Only for a warpgroup whose 64 rows
// all belong to the expert (or M) and whose 256 columns all exist, with 16-byte aligned rows; else store_block.
//
// DYN (variants 8 and 10, reduce mode with STAGE; H200, 15th session: correct, no faster than 7): persistent, a
// block an SM at most, the tiles handed out in the same LPT numbering by a global counter (*tile_counter, zeroed
// by the launcher's memset before each launch), so the prologue (the ranking, the barriers) is paid once a block
// and the next tile's loads overlap this one's products and write-back, while a block that drew a long tile draws
// no more (a fixed share per block lost on skewed loads: see launch_wgmma). The producer thread draws (atomicAdd)
// until it gets a tile with rows or none is left (sorted ranking: the first empty expert's tile means only empty
// ones remain), and passes its number to the consumers through a ring of kTileSlots ints in shared memory, each
// with a full mbarrier (count 1: the producer's arrive after its store, before the tile's loads) and an empty one
// (count 8: lane 0 of each consumer warp, after its warp read the number); -1 ends the walk. Both rings' phases run
// on across tiles.
//
// TMAC (variants 9 and 10, reduce mode with STAGE): the staged f32 sums go to C by TMA reduce-adds
// (cp.reduce.async.bulk.tensor .add, one 64 x 32 box a chunk, issued by the warpgroup's first thread:
// reduce_staged_tma), not by each thread's load, add and store. Those loads cost a round trip to memory a 32-column
// chunk, eight a tile, with nothing to hide them (ncu-free diagnosis, 15th session: rows mode's d_in += through
// store_block took 3.2x its written-over launch, 0.41 vs 0.13 ms, in ds-bench-grouped-gemm). The unit adds in L2 in
// one f32 rounding, old + sum, so the bits are store_staged's. d_weight 395 -> 531 TFLOP/s (uniform load). Written
// over (a.accumulate 0: grouped_matmul_backward's Accum::overwrite d_weight, the training step's first backward,
// variant 9 only), TMA stores instead, and the experts without rows get zeros too, so the step needs no memset of
// the expert gradients: since the 30th session from the producer warpgroup's idle warps 1-3 of every block, a share
// of rows each, beside the products (zero_empty_experts; before, a job a tile, ~10 us of an SM each, 256-352 jobs a
// launch at the bench model's loads after a few steps).
//
// The loads the bench model's training meets (ds-pretrain --expert-stats, 30th session, step 8): two to four experts
// of ~16,000 of the 65,536 rows a layer, 0-22 of the 32 empty. ds-bench-grouped-gemm --loads times d_weight on such
// loads and traces it job by job (the TRACE instantiation, grouped_matmul_bench_trace).
//
// The pair (rows mode with a.k_split, grouped_matmul_d_in_pair): the k-tiles run over a first product (A, B;
// k_split deep, a multiple of the k-tile) and then a second (A2, B2 through map_a2 / map_b2, at k - k_split), both
// summed in the same accumulators: the routed experts' d_in = d_gate · W_gate + d_up · W_up in one launch, 0.205 ms
// (669 TFLOP/s) where the d_in and the d_in += after it took 0.126 + 0.409.
//
// SWIGLU (rows mode, forward, STAGE; grouped_swiglu_forward): the routed experts' gate and up products and their
// SwiGLU in one launch. A tile is 128 rows x 128 output columns of both products: B's slot holds 128 rows of the gate
// weights (map_b, 128-row boxes) over the same 128 rows of the up weights (map_b2), so accumulator columns 0-127 are
// the gate's and 128-255 the up's of the same output columns, in the same thread. The epilogue stages the gate and
// up products out (C_gate, C_up, when asked: the backward's inputs) and then silu(gate) * up (SwigluValue) to C, each
// 64-column chunk computed as it is staged; rows past the expert and columns past F are skipped. Where the forward
// took two product launches, a SwiGLU pass reading both back and its write, it writes the three outputs once.
//
// DSWIGLU (rows mode, d_in, STAGE; grouped_matmul_swiglu_backward): the routed experts' down-product d_in (the
// gradient at SwiGLU's output, d_act) goes through the SwiGLU backward in the epilogue: per 64-column chunk each
// thread loads its pairs of the forward's gate and up products (a.G_in, a.U_in, C's layout), then d_gate (to C)
// and d_up (to a.C_up) are staged and stored as store_staged stores (DSwigluValue: d_act rounded to bf16 as the
// unfused product stores it, then swiglu_bwd1's arithmetic), so the bits are the unfused sequence's. Where the
// backward wrote d_act and a SwiGLU pass read it back with both products, it writes the two gradients once. Off by
// default (launch_dswiglu_tma: slower in training, its epilogue's bytes serialised with the products).
//
// SPLIT (reduce mode with TMAC, not DYN; a.split_kt > 0, variant 9's default): an expert's tiles run the k-loop over
// all its rows, so a hot expert's 16 tiles (a quarter of the rows in the bench model's training after a few steps)
// outlast the rest of the product on 16 SMs while the others idle. An expert of more than split_kt k-tiles runs as
// chunks of about equal length (at most split_kt), each chunk a job of its own; the jobs are ranked by falling chunk
// length (LPT, as before). A chunk leaves its warpgroup's 64 x 256 sums in its workspace slot and counts itself in
// the tile's counter; the last to count adds all the chunks' sums in chunk order (its own read back like the others:
// from registers it spilled the accumulator), so the bits do not depend on which chunk finished last, and writes them
// back as an unsplit tile does (TMA adds, or stores when written over; so only where every tile is whole), then
// zeroes the counter for the next launch. No block waits on another. H200, 24th session (ds-bench-grouped-gemm, one
// expert with a quarter of the 65,536 rows): d_weight 0.200 -> 0.152 ms (343 -> ~450 TFLOP/s), the uniform load
// unchanged (0.134); training +0.6%, within the noise (the side stream's products had filled the idle SMs). 30th
// session, at the training's loads: the last chunk's sums took ~45 us of an SM (one L2 round trip a chunk and column
// chunk; now two chunks' loads at a time: ~22 us), and chunks are an SM's share of the k-tiles long (half before):
// with the zeros above, 0.156-0.184 -> 0.144-0.167 ms a launch (uniform 0.125), training +2.0%.
namespace tma {

constexpr int kStages = 4, kThreads = 384, kBM = 128, kBN = 256, kBK = 64;
constexpr int kABytes = kBM * kBK * 2, kBBytes = kBN * kBK * 2, kStageBytes = kABytes + kBBytes;
constexpr int kMaxExperts = 4096;  // first[E + 1] (ints) in shared memory after the ring
static_assert(kABytes % 1024 == 0 && kStageBytes % 1024 == 0, "slots and the B tiles on 1024-byte boundaries");

constexpr int kMaxLptExperts = 1024;  // reduce mode orders the experts by rows up to here (O(E^2 / threads))

constexpr int kStageBufBytes = 64 * 128;  // STAGE: a warpgroup's write-back buffer, 64 rows of 128 bytes

constexpr int kTileSlots = 4;  // DYN: tile numbers the producer may draw ahead of the consumers

constexpr int kMaxSplitExperts = 256;  // SPLIT's per-expert tables in shared memory (6 E + 1 ints)
static_assert(kMaxSplitExperts <= kThreads, "SPLIT's scans: an expert a thread");
constexpr int kSplitSlotFloats = 64 * kBN;  // SPLIT: a warpgroup's partial sums

// The ring, slack to align it to 1024 bytes, STAGE's two write-back buffers, and 2 E + 1 ints: rows mode
// first[E + 1]; reduce mode order[E] and rows[E] (SPLIT: 4 E more, split_tables).
inline size_t smem_bytes(int E, bool stage = false, bool split = false) {
  return size_t(kStages) * kStageBytes + (stage ? 2 * kStageBufBytes : 0) + 1024 +
         size_t((split ? 6 : 2) * E + 1) * sizeof(int);
}

// STAGE's write-back of this warpgroup's 64 x 256 accumulator (rows m0.., columns n0.., all inside C) through buf
// (kStageBufBytes of shared memory, this warpgroup's alone): chunks of 128 bytes a row, 16-byte piece q of row r at
// q ^ (r % 8). ACC: C += the sums (f32), else C = them. bar: this warpgroup's named barrier. Chunks [C0, C1) only
// (SWIGLU: a half of the accumulator), the first of them at column n0; rows from m_end and 16-byte pieces from
// column n_end on are not written (SWIGLU's partial tiles: n_end - n0 a multiple of a piece's columns). val(acc, i):
// the value stored for accumulator element i (AccValue: acc[i]; SwigluValue: SWIGLU's output), computed chunk by
// chunk as it is staged.
struct AccValue {
  __device__ __forceinline__ float operator()(const float (&acc)[kBN / 2], int i) const { return acc[i]; }
};
template <class TC, bool ACC, int C0 = 0, int C1 = kBN * int(sizeof(TC)) / 128, class Val = AccValue>
__device__ __forceinline__ void store_staged(TC* C, int64_t ldc, const float (&acc)[kBN / 2], int64_t m0, int64_t n0,
                                             unsigned char* buf, int bar, int64_t m_end = INT64_MAX,
                                             int64_t n_end = INT64_MAX, Val val = {}) {
  static_assert(ACC ? std::is_same_v<TC, float> : std::is_same_v<TC, bf16_t>, "bf16 written over, f32 accumulated");
  constexpr int kEb = int(sizeof(TC)), kCols = 128 / kEb, kPer = 16 / kEb;  // columns a chunk, a 16-byte piece
  static_assert(0 <= C0 && C0 < C1 && C1 <= kBN / kCols, "chunks of the accumulator");
  const int t = int(threadIdx.x) % 128, lane = t % 32, w = t / 32, g = lane >> 2, tq = lane & 3;
#pragma unroll
  for (int c = C0; c < C1; ++c) {
    // The last chunk's (c = 0: the last tile's) reads of buf are done.
    asm volatile("bar.sync %0, 128;\n" ::"r"(bar) : "memory");
#pragma unroll
    for (int h = 0; h < 2; ++h) {
      const int r = w * 16 + g + 8 * h;
#pragma unroll
      for (int jj = 0; jj < kCols / 8; ++jj) {
        const int j = c * (kCols / 8) + jj;
        // The pair's byte in the row, bf16 16 jj + 4 tq, f32 32 jj + 8 tq: its 16-byte piece (swizzled by row) and
        // the offset in it.
        const int piece = ACC ? 2 * jj + (tq >> 1) : jj, off = ACC ? 8 * (tq & 1) : 4 * tq;
        unsigned char* dst = buf + r * 128 + ((piece ^ (r & 7)) << 4) + off;
        const float v0 = val(acc, 4 * j + 2 * h), v1 = val(acc, 4 * j + 2 * h + 1);
        if constexpr (ACC) *reinterpret_cast<float2*>(dst) = make_float2(v0, v1);
        else *reinterpret_cast<uint32_t*>(dst) = attn::pack_bf16(v0, v1);
      }
    }
    asm volatile("bar.sync %0, 128;\n" ::"r"(bar) : "memory");  // the chunk is written
#pragma unroll
    for (int k = 0; k < 4; ++k) {
      const int i = t + 128 * k, r = i >> 3, q = i & 7;
      uint4 v = *reinterpret_cast<const uint4*>(buf + r * 128 + ((q ^ (r & 7)) << 4));
      const int64_t col = n0 + (c - C0) * kCols + q * kPer;
      if (m0 + r >= m_end || col >= n_end) continue;
      TC* dst = C + (m0 + r) * ldc + col;
      if constexpr (ACC) {
        const float4 old = *reinterpret_cast<const float4*>(dst);
        float4 f = *reinterpret_cast<const float4*>(&v);
        f.x += old.x, f.y += old.y, f.z += old.z, f.w += old.w;  // old + sum, as store_pair adds (commutes exactly)
        v = *reinterpret_cast<const uint4*>(&f);
      }
      *reinterpret_cast<uint4*>(dst) = v;
    }
  }
}

// SWIGLU's output for accumulator element i of the gate's half (i < kBN / 4; the up product's is i + kBN / 4): each
// product rounded to bf16 as the unfused products store it, then swiglu_fwd_kernel's arithmetic.
struct SwigluValue {
  __device__ __forceinline__ float operator()(const float (&acc)[kBN / 2], int i) const {
    const float g = __bfloat162float(__float2bfloat16(acc[i]));
    const float u = __bfloat162float(__float2bfloat16(acc[kBN / 4 + i]));
    return g * (1.0f / (1.0f + expf(-g))) * u;
  }
};

// DSWIGLU's output for accumulator element i of a 64-column chunk (j = chunk * 8 + jj, i = 4 j + 2 h + e): gv / uv
// hold this thread's bf16 pairs of the gate and up products at (row h, columns 8 jj + 2 tq, + 1) of the chunk, the
// lower column in the low half. UP: d_up = dy g s, else d_gate = dy u s (1 + g (1 - s)), s = sigmoid(g), dy the
// product rounded to bf16 (elementwise.cu's swiglu_bwd1, term by term).
template <bool UP> struct DSwigluValue {
  const uint32_t (&gv)[16];
  const uint32_t (&uv)[16];
  __device__ __forceinline__ float operator()(const float (&acc)[kBN / 2], int i) const {
    const int k = 2 * ((i >> 2) & 7) + ((i >> 1) & 1);
    const uint32_t gp = gv[k], upair = uv[k];
    const float g = __uint_as_float((i & 1) ? gp & 0xffff0000u : gp << 16);
    const float u = __uint_as_float((i & 1) ? upair & 0xffff0000u : upair << 16);
    const float dy = __bfloat162float(__float2bfloat16(acc[i]));
    const float s = 1.0f / (1.0f + expf(-g));
    if constexpr (UP) return dy * g * s;
    else return dy * u * s * (1.0f + g * (1.0f - s));
  }
};

// DSWIGLU's write-back of chunk C (64 columns from n0 + 64 C) of this warpgroup's 64 x 256 accumulator: this
// thread's pairs of the gate and up products loaded (zeros past m_end or Nd: never stored), then d_gate to a.C and
// d_up to a.C_up through buf (store_staged: rows from m_end and pieces from Nd on are not written).
template <int C>
__device__ __forceinline__ void dswiglu_chunk(const GemmArgs& a, const float (&acc)[kBN / 2], int64_t wm0, int64_t n0,
                                              int64_t m_end, unsigned char* buf, int bar) {
  const int t = int(threadIdx.x) % 128, lane = t % 32, w = t / 32, g = lane >> 2, tq = lane & 3;
  const unsigned* G = static_cast<const unsigned*>(a.G_in);  // bf16 pairs: element offset / 2
  const unsigned* U = static_cast<const unsigned*>(a.U_in);
  uint32_t gv[16], uv[16];
#pragma unroll
  for (int jj = 0; jj < 8; ++jj)
#pragma unroll
    for (int h = 0; h < 2; ++h) {
      const int64_t row = wm0 + w * 16 + g + 8 * h, col = n0 + C * 64 + jj * 8 + 2 * tq;
      const bool in = row < m_end && col < a.Nd;  // Nd % 8 == 0 (the launcher): the pair is wholly in or out
      const int64_t o = in ? (row * a.ldc + col) / 2 : 0;
      gv[2 * jj + h] = in ? __ldg(G + o) : 0u;
      uv[2 * jj + h] = in ? __ldg(U + o) : 0u;
    }
  store_staged<bf16_t, false, C, C + 1>(static_cast<bf16_t*>(a.C), a.ldc, acc, wm0, n0 + C * 64, buf, bar, m_end,
                                        a.Nd, DSwigluValue<false>{gv, uv});
  store_staged<bf16_t, false, C, C + 1>(static_cast<bf16_t*>(a.C_up), a.ldc, acc, wm0, n0 + C * 64, buf, bar, m_end,
                                        a.Nd, DSwigluValue<true>{gv, uv});
}

using namespace tmacp;  // mbarriers and TMA loads (kernels/tma_copy.cuh)

#ifndef DS_WGMMA_TRAP
// C's box at (c0 = column, c1 = row) += shared memory at src, by the TMA unit (f32 .add: old + value, one rounding);
// completes in the issuing thread's bulk group.
__device__ __forceinline__ void tma_reduce_add_2d(const CUtensorMap* map, uint32_t src, int c0, int c1) {
  asm volatile("cp.reduce.async.bulk.tensor.2d.global.shared::cta.add.tile.bulk_group [%0, {%1, %2}], [%3];\n" ::"l"(
                   reinterpret_cast<uint64_t>(map)),
               "r"(c0), "r"(c1), "r"(src)
               : "memory");
}
// The same box = shared memory at src (written over).
__device__ __forceinline__ void tma_store_2d(const CUtensorMap* map, uint32_t src, int c0, int c1) {
  asm volatile("cp.async.bulk.tensor.2d.global.shared::cta.bulk_group [%0, {%1, %2}], [%3];\n" ::"l"(
                   reinterpret_cast<uint64_t>(map)),
               "r"(c0), "r"(c1), "r"(src)
               : "memory");
}
__device__ __forceinline__ void bulk_commit() { asm volatile("cp.async.bulk.commit_group;\n" ::: "memory"); }
// Until the unit has read the shared memory of every bulk group this thread committed (the buffer may be rewritten).
__device__ __forceinline__ void bulk_wait_read() { asm volatile("cp.async.bulk.wait_group.read 0;\n" ::: "memory"); }
// Until those groups' writes are done.
__device__ __forceinline__ void bulk_wait() { asm volatile("cp.async.bulk.wait_group 0;\n" ::: "memory"); }
#endif

#ifndef DS_WGMMA_TRAP
// TMAC's write-back of reduce mode's f32 sums (this warpgroup's 64 x 256, C rows row0.. of the [E Md, Nd] view,
// columns col0..): staged 32 columns at a time in buf as store_staged stages them (16-byte piece q of row r at
// q ^ (r % 8): the tensor map's 128-byte swizzle), each chunk added to C by one TMA reduce the warpgroup's first
// thread issues. No thread waits on C's old values (store_staged's loads, a round trip each chunk, left each tile's
// write-back latency-bound); the buffer is rewritten once the unit has read it. add false: TMA stores instead (C
// written over).
// src(c, v): v[0..15] = this thread's accumulator elements 16 c .. 16 c + 15, chunk c's (AccSrc: acc itself; SPLIT:
// the chunks' sums, SplitSums).
struct AccSrc {
  const float (&acc)[kBN / 2];
  __device__ __forceinline__ void operator()(int c, float (&v)[16]) const {
#pragma unroll
    for (int i = 0; i < 16; ++i) v[i] = acc[16 * c + i];
  }
};
template <class Src>
__device__ __forceinline__ void reduce_staged_tma(const CUtensorMap* map_c, const Src& src, int row0, int col0,
                                                  unsigned char* buf, int bar, bool add) {
  const int t = int(threadIdx.x) % 128, lane = t % 32, w = t / 32, g = lane >> 2, tq = lane & 3;
  const uint32_t sbuf = uint32_t(__cvta_generic_to_shared(buf));
#pragma unroll
  for (int c = 0; c < kBN / 32; ++c) {
    if (t == 0) bulk_wait_read();  // the unit has read the last chunk (c = 0: the last tile's)
    asm volatile("bar.sync %0, 128;\n" ::"r"(bar) : "memory");
    float v[16];
    src(c, v);
#pragma unroll
    for (int h = 0; h < 2; ++h) {
      const int r = w * 16 + g + 8 * h;
#pragma unroll
      for (int jj = 0; jj < 4; ++jj) {  // accumulator element 4 (4 c + jj) + 2 h
        const int piece = 2 * jj + (tq >> 1);
        *reinterpret_cast<float2*>(buf + r * 128 + ((piece ^ (r & 7)) << 4) + 8 * (tq & 1)) =
            make_float2(v[4 * jj + 2 * h], v[4 * jj + 2 * h + 1]);
      }
    }
    wgmma::fence_proxy_async();  // this thread's stores, before the async proxy reads them
    asm volatile("bar.sync %0, 128;\n" ::"r"(bar) : "memory");  // the chunk is written
    if (t == 0) {
      if (add) tma_reduce_add_2d(map_c, sbuf, col0 + 32 * c, row0);
      else tma_store_2d(map_c, sbuf, col0 + 32 * c, row0);
      bulk_commit();
    }
  }
}
#endif

struct Job {
  int64_t m0, m_end, n0, k0, k1;  // the reduction runs over [k0, k1) (reduce mode: the expert's rows)
  int e, nk;                  // nk: 64-deep k-tiles (reduce mode: 0 for an expert without rows)
};

// Tile t (t < first[E] * nx): expert e with first[e] <= y < first[e + 1] (y = t / nx; empty experts have
// first[e] == first[e + 1], so the search never lands on one).
__device__ __forceinline__ Job find_job(const GemmArgs& a, const int* first, int64_t t, int64_t nx, int bn) {
  const int y = int(t / nx);
  int lo = 0, hi = a.E;  // first[lo] <= y < first[hi]
  while (hi - lo > 1) {
    const int mid = (lo + hi) >> 1;
    if (first[mid] <= y) lo = mid;
    else hi = mid;
  }
  int64_t r0, r1;
  expert_rows(a, lo, r0, r1);
  return Job{r0 + int64_t(y - first[lo]) * kBM, r1, (t % nx) * bn, 0, a.Kd, lo, int((a.Kd + kBK - 1) / kBK)};
}

// Reduce mode, tile t: expert order[t / (my nx)] (the experts by falling row count, so the hardware hands out the
// long tiles first), then m-tile and n-tile.
__device__ __forceinline__ Job find_reduce_job(const GemmArgs& a, const int* order, int64_t t, int64_t nx,
                                               int64_t my) {
  const int e = order[t / (my * nx)];
  const int64_t in_e = t % (my * nx);
  int64_t r0, r1;
  expert_rows(a, e, r0, r1);
  return Job{(in_e / nx) * kBM, a.Md, (in_e % nx) * kBN, r0, r1, e, int((r1 - r0 + kBK - 1) / kBK)};
}

// SPLIT's tables after order[E] and rows[E] (rows[e]: a chunk's rows, the LPT key), in shared memory.
struct SplitTables {
  int* nch;    // [E] the expert's chunks (1: not split)
  int* jobs;   // [E + 1] chunks before the expert of rank r (order[r]); jobs[E]: all
  int* slot;   // [E] a split expert's first workspace chunk (-1: not split)
  int* cnt;    // [E] a split expert's number among the split ones (-1: not split)
};
__device__ __forceinline__ SplitTables split_tables(int* first, int E) {
  int* nch = first + 2 * E;
  return SplitTables{nch, nch + E, nch + 2 * E + 1, nch + 3 * E + 1};
}

// SPLIT, job t: the expert of rank r with jobs[r] <= t / (my nx) < jobs[r + 1] (each expert has a chunk at least,
// so jobs[] rises strictly), its chunk c, then m-tile and n-tile.
__device__ __forceinline__ int split_rank(const GemmArgs& a, const SplitTables& st, int q) {
  int lo = 0, hi = a.E;
  while (hi - lo > 1) {
    const int mid = (lo + hi) >> 1;
    if (st.jobs[mid] <= q) lo = mid;
    else hi = mid;
  }
  return lo;
}
__device__ __forceinline__ Job find_split_job(const GemmArgs& a, const int* first, const SplitTables& st, int64_t t,
                                              int64_t nx, int64_t my) {
  const int64_t tpc = my * nx, in_e = t % tpc;
  const int q = int(t / tpc), r = split_rank(a, st, q);
  const int e = first[r], c = q - st.jobs[r], crows = first[a.E + e];
  int64_t r0, r1;
  expert_rows(a, e, r0, r1);
  const int64_t k0 = r0 + int64_t(c) * crows, k1 = min(r1, k0 + crows);
  return Job{(in_e / nx) * kBM, a.Md, (in_e % nx) * kBN, k0, k1, e, int((k1 - k0 + kBK - 1) / kBK)};
}
// Job t's place among its expert's chunks, looked up again after the k-loop (so the loop keeps no more registers
// live): slot < 0 for an expert that is not split, else chunk 0's workspace slot for this tile, and its counter.
struct SplitPlace {
  int chunk, nchunks;
  int64_t slot, counter;
};
__device__ __forceinline__ SplitPlace split_place(const GemmArgs& a, int* first, int64_t t, int64_t tpc) {
  const SplitTables st = split_tables(first, a.E);
  const int q = int(t / tpc), r = split_rank(a, st, q), e = first[r];
  if (st.nch[e] < 2) return SplitPlace{0, 1, -1, -1};
  return SplitPlace{q - st.jobs[r], st.nch[e], int64_t(st.slot[e]) * tpc + t % tpc, int64_t(st.cnt[e]) * tpc + t % tpc};
}

// SPLIT: a chunk's sums (this warpgroup's 64 x 256, cw) are left in the workspace (float4 k of thread t at k * 128 + t
// of the warpgroup's slot: a warp's stores are 512 contiguous bytes), then counted; true for the chunk that counted
// last, which zeroes the counter for the next launch (stream-ordered after this one) and writes the tile back from
// SplitSums. last: this warpgroup's flag in shared memory.
__device__ __forceinline__ float4* split_slot(const GemmArgs& a, const SplitPlace& j, int cw) {
  return reinterpret_cast<float4*>(a.split_ws) + (j.slot * 2 + cw) * (kSplitSlotFloats / 4);
}
__device__ __forceinline__ bool split_count(const GemmArgs& a, const float (&acc)[kBN / 2], const SplitPlace& j,
                                            int64_t tpc, int cw, int* last) {
  const int t = int(threadIdx.x) % 128;
  float4* const mine = split_slot(a, j, cw) + j.chunk * tpc * 2 * (kSplitSlotFloats / 4);
#pragma unroll
  for (int k = 0; k < kBN / 8; ++k)
    __stcg(mine + k * 128 + t, make_float4(acc[4 * k], acc[4 * k + 1], acc[4 * k + 2], acc[4 * k + 3]));
  __threadfence();  // the sums are visible before the count
  asm volatile("bar.sync %0, 128;\n" ::"r"(1 + cw) : "memory");
  if (t == 0) {
    unsigned* const cnt = a.split_cnt + j.counter * 2 + cw;
    const bool is_last = atomicAdd(cnt, 1u) == unsigned(j.nchunks - 1);
    if (is_last) *cnt = 0u;
    *last = is_last;
  }
  asm volatile("bar.sync %0, 128;\n" ::"r"(1 + cw) : "memory");
  const bool is_last = *last;
  if (is_last) __threadfence();  // the other chunks' sums, counted before, are read after the count
  return is_last;
}
// s += x, element by element.
__device__ __forceinline__ void add_into(float4& s, const float4& x) {
  s.x += x.x;
  s.y += x.y;
  s.z += x.z;
  s.w += x.w;
}
// The last chunk's source for reduce_staged_tma: all chunks' sums added in chunk order (its own read back like the
// others), so the bits do not depend on which chunk finished last. Two chunks' loads go out together (a chain of one
// load a chunk paid a round trip to L2 per chunk and column chunk: ~45 us of a 4-chunk tile's write-back against ~6
// for an unsplit tile's, H200, ds-bench-grouped-gemm --loads; holding more loads in flight spilled registers).
struct SplitSums {
  const float4* base;  // chunk 0's slot, this thread's first float4
  int64_t stride;      // float4s from one chunk's slot to the next's
  int nchunks;
  __device__ __forceinline__ void operator()(int c, float (&v)[16]) const {
#pragma unroll
    for (int i = 0; i < 4; ++i) {
      const float4* p = base + (4 * c + i) * 128;
      float4 s = __ldcg(p);
      int ch = 1;
      for (; ch + 1 < nchunks; ch += 2) {
        const float4 x = __ldcg(p + ch * stride), y = __ldcg(p + (ch + 1) * stride);
        add_into(s, x);
        add_into(s, y);
      }
      if (ch < nchunks) add_into(s, __ldcg(p + ch * stride));
      v[4 * i] = s.x;
      v[4 * i + 1] = s.y;
      v[4 * i + 2] = s.z;
      v[4 * i + 3] = s.w;
    }
  }
};

// Written over (TMAC, accumulate 0, not DYN): the experts without rows get zeros from the producer warpgroup's idle
// warps 1-3 of every block, a share of the rows each, beside the products, rather than a job a tile (each ~10 us of
// an SM for its start and write-back; 256-352 such jobs a d_weight launch at the bench model's loads after a few
// steps, 16-22 of 32 experts empty). order[nonempty ..]: the empty experts (ranked last).
__device__ __forceinline__ void zero_empty_experts(const GemmArgs& a, const int* order, int nonempty) {
  const int64_t rows = int64_t(a.E - nonempty) * a.Md, n4 = a.Nd / 4;
  const int64_t r0 = rows * blockIdx.x / gridDim.x, r1 = rows * (blockIdx.x + 1) / gridDim.x;
  const int w = int(threadIdx.x) / 32 - 1, lane = int(threadIdx.x) % 32;
  float* const C = static_cast<float*>(a.C);
  for (int64_t r = r0 + w; r < r1; r += 3) {
    const int64_t q = r / a.Md, row = r - q * a.Md;
    float4* const dst = reinterpret_cast<float4*>(C + order[nonempty + q] * a.c_estride + row * a.ldc);
    for (int64_t c = lane; c < n4; c += 32) dst[c] = make_float4(0, 0, 0, 0);
  }
}

// The benchmark's job trace (a.job_trace; reduce mode without DYN): kJobTraceWords a job t, the global timer (ns) at
// its start (the block's, after its wait for the previous kernel, or the block's previous job's end), at the first
// consumer warpgroup's k-loop start and end and after its write-back, then smid | k-tiles << 16 | kind << 48.
constexpr int kJobTraceWords = 5;
enum TraceKind { kTraceTile = 0, kTraceZeros = 1, kTraceChunk = 2, kTraceLastChunk = 3 };
__device__ __forceinline__ unsigned long long global_ns() {
  unsigned long long t;
  asm volatile("mov.u64 %0, %%globaltimer;" : "=l"(t));
  return t;
}

// map_a2, map_b2: rows mode with a.k_split, the second product's operands (else copies of map_a, map_b); map_c:
// TMAC, C as [E Md, Nd] f32 in 64-row x 32-column boxes (else unused); tile_counter: DYN's counter (zero at
// launch), else null.
template <bool AKMAJOR, bool BKMAJOR, bool REDUCE, class TC, bool STAGE = false, bool DYN = false, bool TMAC = false,
          bool SWIGLU = false, bool DSWIGLU = false, bool TRACE = false>
__global__ void __launch_bounds__(kThreads, 1)
    grouped_gemm_tma(GemmArgs a, const __grid_constant__ CUtensorMap map_a, const __grid_constant__ CUtensorMap map_b,
                     const __grid_constant__ CUtensorMap map_a2, const __grid_constant__ CUtensorMap map_b2,
                     const __grid_constant__ CUtensorMap map_c, unsigned* tile_counter) {
  static_assert(REDUCE ? !AKMAJOR && !BKMAJOR : AKMAJOR, "forward / d_in: A K-major; d_weight: both row-indexed");
  static_assert(!STAGE || std::is_same_v<TC, std::conditional_t<REDUCE, float, bf16_t>>,
                "the staged write-back: rows mode bf16, reduce mode f32");
  static_assert(!DYN || REDUCE, "the dynamic scheduler is reduce mode's");
  static_assert(!TMAC || (REDUCE && STAGE), "the TMA reduce write-back is reduce mode's staged one");
  static_assert(!SWIGLU || (!REDUCE && BKMAJOR && STAGE), "the SwiGLU pair is the forward's, staged");
  static_assert(!DSWIGLU || (!REDUCE && !BKMAJOR && STAGE && std::is_same_v<TC, bf16_t>),
                "the SwiGLU backward is d_in's, staged, bf16");
  constexpr int kTN = SWIGLU ? kBN / 2 : kBN;  // a tile's output columns (SWIGLU: of each product)
  // SPLIT (the launcher sets split_kt only where it applies: TMAC without DYN, E <= kMaxSplitExperts)
  // (false from the prologue on when no expert has more k-tiles than split_kt: the unsplit path as it was)
  bool split = REDUCE && TMAC && !DYN && a.split_kt > 0;
  // The register split (producer 40, consumers 232): SWIGLU's epilogue spilled at 168 a thread (DSWIGLU holds a
  // chunk's gate and up pairs besides the accumulator).
#ifdef DS_TMA_SETMAXNREG
  constexpr bool kMaxNReg = true;
#else
  constexpr bool kMaxNReg = SWIGLU || DSWIGLU;
#endif
  pdl_enter();  // programmatic dependent launch: wait for the previous kernel (common.cuh)
  static_assert(!TRACE || (REDUCE && !DYN), "the job trace is reduce mode's without DYN (a job t a block's turn)");
#ifdef DS_WGMMA_TRAP
  (void)tile_counter;
  __trap();
#else
  // Written over by TMA stores: the empty experts' zeros by zero_empty_experts (ranked last: needs the ranking;
  // whole float4s a row)
  const bool zero_fill = REDUCE && TMAC && !DYN && a.accumulate == 0 && a.Nd % 4 == 0 && a.E <= kMaxLptExperts;
  int nonempty = a.E;
  const bool tracing = TRACE && threadIdx.x == 128;
  unsigned long long trace_t[4] = {tracing ? global_ns() : 0ull, 0ull, 0ull, 0ull};
  int trace_kind = kTraceTile, trace_nk = 0;
  int64_t trace_job = -1;
  auto trace_flush = [&] {  // the job traced so far, ending now
    if (!tracing || trace_job < 0) return;
    unsigned smid;
    asm volatile("mov.u32 %0, %%smid;" : "=r"(smid));
    unsigned long long* const out = a.job_trace + trace_job * kJobTraceWords;
    trace_t[3] = global_ns();
    out[0] = trace_t[0], out[1] = trace_t[1], out[2] = trace_t[2], out[3] = trace_t[3];
    out[4] = smid | (unsigned long long)(unsigned(trace_nk)) << 16 | (unsigned long long)trace_kind << 48;
    trace_t[0] = trace_t[3];
  };
  extern __shared__ __align__(1024) unsigned char tma_smem[];
  __shared__ __align__(8) uint64_t full_bar[kStages], empty_bar[kStages];
  // DYN: the tile ring (numbers, -1 the end) and its barriers
  __shared__ __align__(8) uint64_t tile_full_bar[DYN ? kTileSlots : 1], tile_empty_bar[DYN ? kTileSlots : 1];
  __shared__ int tile_no[DYN ? kTileSlots : 1];
  __shared__ int split_last[2];  // SPLIT: whether a consumer warpgroup's chunk counted last
  using Scan = cub::BlockScan<int, kThreads>;
  __shared__ typename Scan::TempStorage scan_tmp;
  // The static shared memory comes first: align the ring to the swizzle's 1024 bytes by hand.
  unsigned char* ring = tma_smem + ((1024 - (uint32_t(__cvta_generic_to_shared(tma_smem)) & 1023)) & 1023);
  const uint32_t ring_addr = uint32_t(__cvta_generic_to_shared(ring));
  unsigned char* stage_buf = ring + kStages * kStageBytes;  // STAGE: two write-back buffers
  // rows mode first[]; reduce mode order[E], rows[E]
  int* first = reinterpret_cast<int*>(stage_buf + (STAGE ? 2 * kStageBufBytes : 0));
  const uint32_t full0 = uint32_t(__cvta_generic_to_shared(full_bar));
  const uint32_t empty0 = uint32_t(__cvta_generic_to_shared(empty_bar));
  const uint32_t tfull0 = uint32_t(__cvta_generic_to_shared(tile_full_bar));
  const uint32_t tempty0 = uint32_t(__cvta_generic_to_shared(tile_empty_bar));

  const int64_t nx = (a.Nd + kTN - 1) / kTN, my = REDUCE ? (a.Md + kBM - 1) / kBM : 0;
  int64_t ntiles;
  if constexpr (REDUCE) {
    // order[i]: the expert with the i-th most rows (SPLIT: rows a chunk; ties by number); identity past
    // kMaxLptExperts.
    int* order = first;
    int* rows = first + a.E;
    const SplitTables sp = split_tables(first, a.E);
    bool any_split = false;
    for (int e = threadIdx.x; e < a.E; e += kThreads) {
      int64_t r0, r1;
      expert_rows(a, e, r0, r1);
      int64_t n = r1 - r0;
      if (split) {  // chunks of about equal length, at most split_kt k-tiles, none empty
        const int64_t kt = (n + kBK - 1) / kBK;
        int c = 1;
        if (kt > a.split_kt) {
          const int64_t least = (kt + a.split_kt - 1) / a.split_kt;  // chunks of at most split_kt
          const int64_t len = (kt + least - 1) / least;              // k-tiles a chunk, spread evenly
          c = int((kt + len - 1) / len);                             // (<= least; the last chunk not empty)
          n = len * kBK;
        }
        sp.nch[e] = c;
        any_split |= c > 1;
      }
      rows[e] = int(min(n, int64_t(INT32_MAX)));
    }
    split = __syncthreads_or(any_split) != 0;  // (false unless split was)
    if (zero_fill) {  // the experts with rows (those without are ranked last)
      int mine = 0;
      for (int e = threadIdx.x; e < a.E; e += kThreads) mine += rows[e] > 0;
      int excl;
      Scan(scan_tmp).ExclusiveSum(mine, excl, nonempty);
      __syncthreads();  // scan_tmp is reused
    }
    for (int e = threadIdx.x; e < a.E; e += kThreads) {
      int rank = e;
      if (a.E <= kMaxLptExperts) {
        rank = 0;
        const int re = rows[e];
        for (int f = 0; f < a.E; ++f) rank += rows[f] > re || (rows[f] == re && f < e);
      }
      order[rank] = e;
    }
    ntiles = int64_t(a.E) * my * nx;
    if (split) {  // the chunks before each rank; the split experts' workspace chunks and counters (expert order)
      __syncthreads();
      const int e = int(threadIdx.x), c = e < a.E ? sp.nch[e] : 1;
      int excl, agg;
      Scan(scan_tmp).ExclusiveSum(e < a.E ? sp.nch[order[e]] : 0, excl, agg);
      if (e < a.E) sp.jobs[e] = excl;
      if (e == 0) sp.jobs[a.E] = agg;
      ntiles = int64_t(agg) * my * nx;
      __syncthreads();
      Scan(scan_tmp).ExclusiveSum(c > 1 ? c : 0, excl, agg);
      if (e < a.E) sp.slot[e] = c > 1 ? excl : -1;
      __syncthreads();
      Scan(scan_tmp).ExclusiveSum(c > 1 ? 1 : 0, excl, agg);
      if (e < a.E) sp.cnt[e] = c > 1 ? excl : -1;
    }
  } else {
    // first[e]: the first m-tile of expert e; first[E]: the m-tiles of all experts.
    int running = 0;
    for (int e0 = 0; e0 < a.E; e0 += kThreads) {
      const int e = e0 + int(threadIdx.x);
      int64_t r0 = 0, r1 = 0;
      if (e < a.E) expert_rows(a, e, r0, r1);
      int excl, agg;
      Scan(scan_tmp).ExclusiveSum(int((r1 - r0 + kBM - 1) / kBM), excl, agg);
      if (e < a.E) first[e] = running + excl;
      running += agg;
      __syncthreads();  // scan_tmp is reused
    }
    if (threadIdx.x == 0) first[a.E] = running;
    ntiles = int64_t(running) * nx;
  }
  if (threadIdx.x == 0) {
    for (int s = 0; s < kStages; ++s) {
      mbar_init(full0 + 8 * s, 1);
      mbar_init(empty0 + 8 * s, 8);
    }
    if constexpr (DYN)
      for (int s = 0; s < kTileSlots; ++s) {
        mbar_init(tfull0 + 8 * s, 1);
        mbar_init(tempty0 + 8 * s, 8);
      }
    asm volatile("fence.mbarrier_init.release.cluster;\n" ::: "memory");
  }
  __syncthreads();
  if constexpr (REDUCE) {
    if (zero_fill) {  // jobs for the experts with rows only; the others' zeros from warps 1-3 of the producer
      ntiles = int64_t(split ? split_tables(first, a.E).jobs[nonempty] : nonempty) * my * nx;
      if (threadIdx.x >= 32 && threadIdx.x < 128) zero_empty_experts(a, first, nonempty);
    }
  }
  if (int64_t(blockIdx.x) >= ntiles) return;  // uniform: no tile for this block
  auto job = [&](int64_t t) {
    if constexpr (REDUCE) return split ? find_split_job(a, first, split_tables(first, a.E), t, nx, my)
                                       : find_reduce_job(a, first, t, nx, my);
    else return find_job(a, first, t, nx, kTN);
  };
  int ts = 0;  // DYN: the tile ring's slot and phase (each role its own)
  uint32_t tphase = 0;

  if (threadIdx.x < 128) {  // the producer warpgroup: one thread issues the loads, the others leave
    if constexpr (kMaxNReg) asm volatile("setmaxnreg.dec.sync.aligned.u32 40;\n" ::: "memory");
    if (threadIdx.x == 0) {
      asm volatile("prefetch.tensormap [%0];\n" ::"l"(reinterpret_cast<uint64_t>(&map_a)) : "memory");
      asm volatile("prefetch.tensormap [%0];\n" ::"l"(reinterpret_cast<uint64_t>(&map_b)) : "memory");
      if (!REDUCE && a.k_split > 0) {
        asm volatile("prefetch.tensormap [%0];\n" ::"l"(reinterpret_cast<uint64_t>(&map_a2)) : "memory");
        asm volatile("prefetch.tensormap [%0];\n" ::"l"(reinterpret_cast<uint64_t>(&map_b2)) : "memory");
      }
      int slot = 0;
      uint32_t phase = 0;
      // The next tile: DYN, drawn from the counter and passed on through the tile ring (ntiles: none left).
      auto next = [&](int64_t t) -> int64_t {
        if constexpr (DYN) {
          const int* rows = first + a.E;  // order[] is first[]
          for (;;) {
            t = int64_t(atomicAdd(tile_counter, 1u));
            if (t >= ntiles || rows[first[t / (my * nx)]] > 0) break;  // none left, or a tile with rows
            if (a.E <= kMaxLptExperts) {  // ranked by rows: the tiles from here on are all empty
              t = ntiles;
              break;
            }
          }
          mbar_wait(tempty0 + 8 * ts, tphase ^ 1);  // the consumer warps read the slot's last number
          tile_no[ts] = t < ntiles ? int(t) : -1;
          mbar_arrive(tfull0 + 8 * ts);  // release: the store above
          if (++ts == kTileSlots) {
            ts = 0;
            tphase ^= 1;
          }
          return t;
        } else {
          return t + gridDim.x;
        }
      };
      for (int64_t t = DYN ? next(0) : int64_t(blockIdx.x); t < ntiles; t = next(t)) {
        const Job j = job(t);
        // B's first row: K-major, row n0 of expert e's [N, K] block; MN-major (d_in), row 0 of expert e's [K, N]
        // block; reduce mode, the rows of `in` themselves.
        const int brow = REDUCE ? 0 : BKMAJOR ? int(int64_t(j.e) * a.Nd + j.n0) : int(int64_t(j.e) * a.Kd);
        // MN-major operands load [64 k][64 columns] boxes side by side, 8 KB apart; boxes wholly past the last
        // column are not loaded (their stale bytes feed only output rows / columns the store skips).
        const int na = AKMAJOR ? 1 : int(min(int64_t(kBM / 64), (a.Md - j.m0 + 63) / 64));
        const int nb = BKMAJOR ? 1 : int(min(int64_t(kBN / 64), (a.Nd - j.n0 + 63) / 64));
        const uint32_t bytes = uint32_t((AKMAJOR ? kABytes : na * 8192) + (BKMAJOR ? kBBytes : nb * 8192));
        for (int kt = 0; kt < j.nk; ++kt) {
          mbar_wait(empty0 + 8 * slot, phase ^ 1);  // the consumers freed the slot (first round: at once)
          const uint32_t full = full0 + 8 * slot, as = ring_addr + uint32_t(slot * kStageBytes), bs = as + kABytes;
          mbar_arrive_expect_tx(full, bytes);  // whole boxes: zero-filled bytes count too
          int k0 = int(j.k0) + kt * kBK, br = brow;
          const CUtensorMap *ma = &map_a, *mb = &map_b;
          if (!REDUCE && a.k_split > 0) {  // the pair: k over the first product's K, then the second's
            const bool second = k0 >= a.k_split;
            const int64_t kp = second ? a.Kd - a.k_split : a.k_split;  // this product's K (B rows an expert)
            if (second) k0 -= int(a.k_split), ma = &map_a2, mb = &map_b2;
            br = BKMAJOR ? brow : int(int64_t(j.e) * kp);
          }
          if constexpr (AKMAJOR) tma_load_2d(as, ma, full, k0, int(j.m0));  // one [128 rows][64 k] box
          else
            for (int i = 0; i < na; ++i) tma_load_2d(as + i * 8192, ma, full, int(j.m0) + 64 * i, k0);
          if constexpr (SWIGLU) {  // [128 gate rows][64 k] over [128 up rows][64 k] (map_b, map_b2: 128-row boxes)
            tma_load_2d(bs, &map_b, full, k0, br);
            tma_load_2d(bs + kBBytes / 2, &map_b2, full, k0, br);
          } else if constexpr (BKMAJOR) {
            tma_load_2d(bs, mb, full, k0, br);  // one [256 rows][64 k] box
          } else
            for (int i = 0; i < nb; ++i) tma_load_2d(bs + i * 8192, mb, full, int(j.n0) + 64 * i, br + k0);
          if (++slot == kStages) {
            slot = 0;
            phase ^= 1;
          }
        }
      }
    }
    return;
  }
  if constexpr (kMaxNReg) asm volatile("setmaxnreg.inc.sync.aligned.u32 232;\n" ::: "memory");

  // The consumers: warpgroup cw owns rows 64 cw.. of the tile (acc laid out as wg::store_block reads it).
  const int cw = int(threadIdx.x) / 128 - 1;
  const int lane = threadIdx.x % 32;
  const bool pair = a.vec_c != 0, accum = a.accumulate != 0;
  TC* Cp = static_cast<TC*>(a.C);
  auto release = [&](int s) {  // this warp's products reading slot s have retired
    __syncwarp();
    if (lane == 0) mbar_arrive(empty0 + 8 * s);
  };
  float acc[kBN / 2];
  int slot = 0;
  uint32_t phase = 0;
  // The next tile: DYN, the number the producer passed (every consumer warp reads it, then frees the slot).
  auto next = [&](int64_t t) -> int64_t {
    if constexpr (DYN) {
      mbar_wait(tfull0 + 8 * ts, tphase);
      const int n = tile_no[ts];
      __syncwarp();
      if (lane == 0) mbar_arrive(tempty0 + 8 * ts);
      if (++ts == kTileSlots) {
        ts = 0;
        tphase ^= 1;
      }
      return n < 0 ? ntiles : int64_t(n);
    } else {
      return t + gridDim.x;
    }
  };
  for (int64_t t = DYN ? next(0) : int64_t(blockIdx.x); t < ntiles; t = next(t)) {
    const Job j = job(t);
    // reduce mode, an expert without rows: d_weight += 0 (DYN: never handed out); written over (TMAC), zeros
    if (j.nk == 0 && (!TMAC || accum)) continue;
#pragma unroll
    for (int i = 0; i < kBN / 2; ++i) acc[i] = 0.0f;
    wgmma::pin(acc);
    int prev = -1;
    if (tracing) {
      trace_flush();
      trace_job = t, trace_t[1] = global_ns(), trace_nk = j.nk, trace_kind = j.nk == 0 ? kTraceZeros : kTraceTile;
    }
#pragma unroll 1
    for (int kt = 0; kt < j.nk; ++kt) {
      mbar_wait(full0 + 8 * slot, phase);
      const uint32_t as = ring_addr + uint32_t(slot * kStageBytes), bs = as + kABytes;
      if constexpr (REDUCE) {
        // The last k-tile runs past the expert's rows into the next expert's (or the zero fill past M): zero those
        // rows of this warpgroup's A column block (it reads no other), so they add nothing whatever B holds there.
        const int valid = int(min(j.k1 - (j.k0 + int64_t(kt) * kBK), int64_t(kBK)));
        if (valid < kBK) {
          unsigned char* blk = ring + slot * kStageBytes + cw * 8192;
          for (int c = valid * 8 + int(threadIdx.x) % 128; c < kBK * 8; c += 128)  // 16-byte chunks, 8 a row
            reinterpret_cast<uint4*>(blk)[c] = make_uint4(0, 0, 0, 0);
          wgmma::fence_proxy_async();  // the generic-proxy stores, before the async proxy's reads
          asm volatile("bar.sync %0, 128;\n" ::"r"(1 + cw) : "memory");  // this warpgroup's stores
        }
      }
      wgmma::fence();
#pragma unroll
      for (int k16 = 0; k16 < kBK / 16; ++k16) {
        // A: this warpgroup's 64 rows. K-major: rows 64 cw.. of [128][64]; MN-major: column block cw of [64][128].
        // B: the whole tile, K-major [256][64] or MN-major [64][256] (four 64-column blocks 8 KB apart).
        const uint64_t da = AKMAJOR ? wgmma::desc_sw128(as + cw * 8192 + k16 * 32, 16, 1024)
                                    : wgmma::desc_sw128(as + cw * 8192 + k16 * 2048, kBK * 128, 1024);
        const uint64_t db = BKMAJOR ? wgmma::desc_sw128(bs + k16 * 32, 16, 1024)
                                    : wgmma::desc_sw128(bs + k16 * 2048, kBK * 128, 1024);
        wgmma::mma_m64n256k16<AKMAJOR ? 0 : 1, BKMAJOR ? 0 : 1>(acc, da, db);
      }
      wgmma::commit();
      wgmma::wait<1>();  // the previous k-tile's products retired: its slot may be refilled
      if (prev >= 0) release(prev);
      prev = slot;
      if (++slot == kStages) {
        slot = 0;
        phase ^= 1;
      }
    }
    wgmma::wait<0>();
    wgmma::pin(acc);
    if (tracing) trace_t[2] = global_ns();
    if (prev >= 0) release(prev);  // the producer refills during the write-back (none: no k-tiles, zeros)
    const int64_t wm0 = j.m0 + cw * 64;
    if constexpr (SWIGLU) {
      // Columns 0-127 of the accumulator are the gate product's, 128-255 the up product's (the same output columns,
      // the same thread): each kept where asked (C_gate, C_up; rounded to bf16 as the unfused products store it),
      // then C = SwiGLU of the two (SwigluValue): the unfused sequence's bits. All through the staging buffer,
      // partial tiles too (the launcher asks for F % 8 == 0 and 16-byte aligned outputs: a piece is wholly in or out).
      unsigned char* const buf = stage_buf + cw * kStageBufBytes;
      if (a.C_gate)
        store_staged<bf16_t, false, 0, 2>(static_cast<bf16_t*>(a.C_gate), a.ldc, acc, wm0, j.n0, buf, 1 + cw, j.m_end,
                                          a.Nd);
      if (a.C_up)
        store_staged<bf16_t, false, 2, 4>(static_cast<bf16_t*>(a.C_up), a.ldc, acc, wm0, j.n0, buf, 1 + cw, j.m_end,
                                          a.Nd);
      store_staged<bf16_t, false, 0, 2>(static_cast<bf16_t*>(a.C), a.ldc, acc, wm0, j.n0, buf, 1 + cw, j.m_end, a.Nd,
                                        SwigluValue{});
      continue;
    }
    if constexpr (DSWIGLU) {
      unsigned char* const buf = stage_buf + cw * kStageBufBytes;
      dswiglu_chunk<0>(a, acc, wm0, j.n0, j.m_end, buf, 1 + cw);
      dswiglu_chunk<1>(a, acc, wm0, j.n0, j.m_end, buf, 1 + cw);
      dswiglu_chunk<2>(a, acc, wm0, j.n0, j.m_end, buf, 1 + cw);
      dswiglu_chunk<3>(a, acc, wm0, j.n0, j.m_end, buf, 1 + cw);
      continue;
    }
    if constexpr (REDUCE && TMAC && !DYN) {  // SPLIT: only the last chunk of a split tile writes it back
      if (split) {  // whole tiles only (the launcher's condition): the last chunk writes back by TMA
        const SplitPlace sp = split_place(a, first, t, my * nx);
        if (sp.slot >= 0) {
          trace_kind = kTraceChunk;
          if (split_count(a, acc, sp, my * nx, cw, &split_last[cw])) {
            trace_kind = kTraceLastChunk;
            const int64_t stride = my * nx * 2 * (kSplitSlotFloats / 4);
            reduce_staged_tma(&map_c, SplitSums{split_slot(a, sp, cw) + threadIdx.x % 128, stride, sp.nchunks},
                              int(j.e * a.Md + wm0), int(j.n0), stage_buf + cw * kStageBufBytes, 1 + cw, accum);
          }
          continue;
        }
      }
    }
    TC* const Ce = REDUCE ? Cp + j.e * a.c_estride : Cp;
    if constexpr (STAGE) {
      // Whole rows and columns, 16-byte aligned rows (C's and the expert stride's alignment: the launcher's
      // condition); rows mode written over, reduce mode accumulated (TMAC: or written over).
      if ((REDUCE || !accum) && wm0 + 64 <= j.m_end && j.n0 + kBN <= a.Nd && a.ldc % (16 / int(sizeof(TC))) == 0) {
        if constexpr (TMAC)
          reduce_staged_tma(&map_c, AccSrc{acc}, int(j.e * a.Md + wm0), int(j.n0), stage_buf + cw * kStageBufBytes,
                            1 + cw, accum);
        else store_staged<TC, REDUCE>(Ce, a.ldc, acc, wm0, j.n0, stage_buf + cw * kStageBufBytes, 1 + cw);
        continue;
      }
    }
    wg::store_block<kBN, TC>(Ce, a.ldc, acc, wm0, j.m_end, j.n0, a.Nd, pair, accum);
  }
  if constexpr (TMAC) {
    if (threadIdx.x % 128 == 0) bulk_wait();  // the unit's adds are done before the block ends
  }
  if constexpr (TRACE) trace_flush();
#endif
}

}  // namespace tma

