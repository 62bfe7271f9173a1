#pragma once
// Decode-sized products: the bf16 GEMV (matmul_forward and matmul_heads_forward for few rows, kernels/matmul.cu;
// with a fused epilogue, kernels/decode_fused.cu).
// For M <= kGemvRows rows cuBLASLt's kernels are latency-bound (~5 us for a 1-2 MB weight on the H200, ~100 of
// them in a batch-1 decode step). Here a group of G lanes (G = 32, or fewer for short rows) computes one output
// column for every row: the weight row streams once through 16-byte loads, the M input rows sit in shared memory,
// products accumulate in f32 and the group reduces them in a fixed shuffle order (deterministic); the output is
// rounded once (beta = 1 adds to it in f32). Before waiting for the previous kernel (programmatic dependent launch,
// common.cuh) one thread asks for the block's weight rows in L2, so their HBM latency overlaps that kernel.
// blockIdx.y batches independent products (the heads of matmul_heads_forward) at fixed element strides.
#include "kernels/common.cuh"

namespace ds::cuda::gemv_impl {

constexpr int kGemvRows = 4, kGemvWarps = 8;
constexpr size_t kGemvSmem = 48 * 1024;  // the input rows, M x K bf16

struct GemvArgs {
  void* out;
  int64_t ldo, out_bs;  // row stride and batch stride of out (elements)
  const bf16_t* in;
  int64_t ldi, in_bs;
  const bf16_t* w;  // row n of the product's weight at w + batch * w_bs + n * ldw, K elements used
  int64_t ldw, w_bs;
  int M;
  int64_t N, K;
  int glog;  // log2 of the lanes per output column
  int add;
};

// No epilogue.
struct NoTail {
  static constexpr bool kOn = false;
  __device__ void operator()() const {}
};

// Tail: NoTail, or a row-wise step over the whole product that the grid's last block runs (arrive_last,
// common.cuh) — the output's readers in an epilogue instead of a kernel of their own (kernels/decode_fused.cu).
template <class TC, class Tail = NoTail>
__global__ void __launch_bounds__(kGemvWarps * 32) gemv_kernel(GemvArgs a, Tail tail) {
  const int G = 1 << a.glog, cols_per_block = kGemvWarps * 32 / G;
  const int64_t n0 = int64_t(blockIdx.x) * cols_per_block;
  const bf16_t* w = a.w + int64_t(blockIdx.y) * a.w_bs;
  if (threadIdx.x == 0 && n0 < a.N) {  // weights only (never written by a kernel of the same pass)
    const int64_t n1 = min(a.N, n0 + cols_per_block);
    prefetch_l2(w + n0 * a.ldw, uint32_t(((n1 - n0 - 1) * a.ldw + a.K) * int64_t(sizeof(bf16_t))));
  }
  pdl_enter();
  extern __shared__ uint4 xs[];  // [M][K / 8]
  const int64_t K8 = a.K / 8;
  const bf16_t* in = a.in + int64_t(blockIdx.y) * a.in_bs;
  for (int64_t i = threadIdx.x; i < a.M * K8; i += blockDim.x) {
    const int64_t m = i / K8, k8 = i % K8;
    xs[i] = reinterpret_cast<const uint4*>(in + m * a.ldi)[k8];
  }
  __syncthreads();
  const int g = threadIdx.x & (G - 1);
  const int64_t n = n0 + threadIdx.x / G;
  const bool valid = n < a.N;  // no early return: the group reduction below shuffles across the whole warp
  const uint4* wr = reinterpret_cast<const uint4*>(w + (valid ? n : 0) * a.ldw);
  float acc[kGemvRows] = {};
#pragma unroll 4
  for (int64_t k8 = g; k8 < (valid ? K8 : 0); k8 += G) {
    const uint4 wv = __ldg(wr + k8);
#pragma unroll
    for (int m = 0; m < kGemvRows; ++m) {
      if (m >= a.M) break;
      acc[m] = dot_bf16x8(wv, xs[m * K8 + k8], acc[m]);
    }
  }
  TC* out = static_cast<TC*>(a.out) + int64_t(blockIdx.y) * a.out_bs;
#pragma unroll
  for (int m = 0; m < kGemvRows; ++m) {
    if (m >= a.M) break;
    float v = acc[m];
    for (int o = G / 2; o > 0; o >>= 1) v += __shfl_xor_sync(0xffffffffu, v, o);  // within the lane group
    if (g == 0 && valid) {
      TC* dst = out + m * a.ldo + n;
      *dst = cvt<TC>(a.add ? ldf(*dst) + v : v);
    }
  }
  if constexpr (Tail::kOn) {
    if (arrive_last(tail.ticket, gridDim.x * gridDim.y)) tail();
  }
}

inline bool al16(const void* p) { return reinterpret_cast<uintptr_t>(p) % 16 == 0; }

// The GEMV handles bf16 inputs with 16-byte-aligned rows and M <= kGemvRows whose rows fit its shared memory.
inline bool gemv_fits(DType in_dtype, const void* in, int64_t ldi, const void* w, int64_t ldw, int64_t M, int64_t K) {
  return in_dtype == DType::bf16 && M >= 1 && M <= kGemvRows && K % 8 == 0 && ldi % 8 == 0 && ldw % 8 == 0 &&
         al16(in) && al16(w) && size_t(M * K) * sizeof(bf16_t) <= kGemvSmem;
}

// Launches the GEMV for `batch` products (grid y); the output dtype picks TC (f32 or bf16).
template <class Tail = NoTail>
void gemv(const Context& ctx, DType out_dtype, GemvArgs a, int64_t batch, Tail tail = {}) {
  cudaStream_t st = prepare(ctx);
  const int64_t K8 = a.K / 8;
  a.glog = 5;
  while (a.glog > 0 && (int64_t(1) << (a.glog - 1)) >= K8) --a.glog;  // short rows: several columns per warp
  const int64_t cols_per_block = kGemvWarps * 32 >> a.glog;
  const dim3 grid(unsigned((a.N + cols_per_block - 1) / cols_per_block), unsigned(batch));
  const size_t smem = size_t(a.M * a.K) * sizeof(bf16_t);
  dispatch_fb(out_dtype, "matmul_forward", [&](auto zero) {
    using TC = decltype(zero);
    launch(gemv_kernel<TC, Tail>, grid, kGemvWarps * 32, smem, st, a, tail);
  });
  DS_CUDA_LAUNCH_CHECK("gemv_kernel");
}

}  // namespace ds::cuda::gemv_impl
