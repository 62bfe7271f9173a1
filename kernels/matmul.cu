// CUDA twins of the linear layer (lib/ops/cpu/matmul.cpp is the reference) through cuBLASLt; forward products of
// at most 4 bf16 rows (decode) run a GEMV kernel of our own (below).
// Inputs f32 or bf16 (both operands the same dtype), the output f32 or the inputs' dtype; every product
// accumulates in f32 (CUBLAS_COMPUTE_32F: no TF32 for f32 inputs, so f32 matches the CPU to rounding).
// Accum::add and the parameter gradient use beta = 1; overwrite uses beta = 0 (cuBLAS does not read C then).
// One cuBLASLt handle per device and one 32 MiB workspace per (device, stream), created on first use; the
// descriptors, layouts and the heuristic's algorithm are built once per problem (shape, dtypes, leading dims,
// pointer alignment, batch and strides) and reused.
#include <cublasLt.h>

#include <algorithm>
#include <atomic>
#include <cstdio>
#include <cstdlib>
#include <map>
#include <mutex>
#include <sstream>
#include <string>
#include <tuple>
#include <utility>

#include "kernels/common.cuh"
#include "kernels/cuda_ops.h"

#define DS_CUBLAS_CHECK(call)                                                                          \
  do {                                                                                                 \
    const cublasStatus_t ds_st_ = (call);                                                              \
    if (ds_st_ != CUBLAS_STATUS_SUCCESS)                                                               \
      ::ds::throw_runtime(std::string("cuBLASLt error: ") + #call + ": " + cublasGetStatusString(ds_st_) + \
                          " (" __FILE__ ":" + std::to_string(__LINE__) + ")");                         \
  } while (0)

namespace ds::cuda {

namespace {

constexpr size_t kWorkspaceBytes = size_t(32) << 20;

struct Layout {
  cublasLtMatrixLayout_t h = nullptr;
  Layout() = default;
  Layout(cudaDataType_t t, int64_t rows, int64_t cols, int64_t ld, int64_t batch = 1, int64_t stride = 0) {
    DS_CUBLAS_CHECK(cublasLtMatrixLayoutCreate(&h, t, uint64_t(rows), uint64_t(cols), ld));
    if (batch > 1) {
      const int32_t b32 = int32_t(batch);
      DS_CUBLAS_CHECK(cublasLtMatrixLayoutSetAttribute(h, CUBLASLT_MATRIX_LAYOUT_BATCH_COUNT, &b32, sizeof(b32)));
      DS_CUBLAS_CHECK(
          cublasLtMatrixLayoutSetAttribute(h, CUBLASLT_MATRIX_LAYOUT_STRIDED_BATCH_OFFSET, &stride, sizeof(stride)));
    }
  }
  Layout(Layout&& o) noexcept : h(o.h) { o.h = nullptr; }
  Layout& operator=(Layout&& o) noexcept {
    std::swap(h, o.h);
    return *this;
  }
  Layout(const Layout&) = delete;
  ~Layout() {
    if (h) cublasLtMatrixLayoutDestroy(h);
  }
};

// Everything cuBLASLt needs for one problem, built once: the operation descriptor, the three layouts and the
// heuristic's algorithm (the descriptors used to be rebuilt on every call, a few microseconds of host time each).
struct Plan {
  cublasLtMatmulDesc_t op = nullptr;
  Layout la, lb, lc;
  cublasLtMatmulAlgo_t algo{};
  Plan() = default;
  Plan(const Plan&) = delete;
  Plan& operator=(const Plan&) = delete;
  ~Plan() {
    if (op) cublasLtMatmulDescDestroy(op);
  }
};

struct LtState {
  std::mutex mu;
  std::map<int, cublasLtHandle_t> handles;                      // per device
  std::map<std::pair<int, cudaStream_t>, void*> workspaces;     // per (device, stream)
  // (device, ta, tb, m, n, k, lda, ldb, ldc, ab dtype, c dtype, alignments a/b/c, beta != 0, batch, strides a/b/c)
  using Key = std::tuple<int, bool, bool, int64_t, int64_t, int64_t, int64_t, int64_t, int64_t, int, int, int, int, int,
                         bool, int64_t, int64_t, int64_t, int64_t>;
  std::map<Key, Plan*> plans;  // never freed (as the handles)
};

LtState& state() {
  static LtState* s = new LtState;  // never destroyed: handles outlive static destructors' CUDA teardown
  return *s;
}

// The heuristic's result a new plan takes (matmul_bench_algo; 0: its first, as always outside the benchmark) and how
// many results the last plan's heuristic offered.
constexpr int kMaxAlgos = 16;
std::atomic<int> g_algo_index{0};
std::atomic<int> g_algo_found{0};

// DS_GEMM_ALGO (an A/B knob, 26th session): "ta,tb,m,n,k=i;..." gives lt_gemm's products of those column-major
// arguments the heuristic's result i instead of its first (ds-bench-dense-gemm prints the string for the products
// where another result was faster). Read once; malformed entries are reported and ignored.
using AlgoKey = std::tuple<bool, bool, int64_t, int64_t, int64_t>;
const std::map<AlgoKey, int>& algo_overrides() {
  static const std::map<AlgoKey, int> table = [] {
    std::map<AlgoKey, int> t;
    const char* e = std::getenv("DS_GEMM_ALGO");
    if (e == nullptr) return t;
    std::istringstream spec(e);
    for (std::string entry; std::getline(spec, entry, ';');) {
      int ta = 0, tb = 0, index = 0;
      long long m = 0, n = 0, k = 0;
      char tail = 0;
      if (entry.empty()) continue;
      if (std::sscanf(entry.c_str(), "%d,%d,%lld,%lld,%lld=%d%c", &ta, &tb, &m, &n, &k, &index, &tail) != 6 ||
          index < 0 || index >= kMaxAlgos) {
        std::fprintf(stderr, "DS_GEMM_ALGO: ignored entry '%s' (want ta,tb,m,n,k=index, index < %d)\n",
                     entry.c_str(), kMaxAlgos);
        continue;
      }
      t[AlgoKey{ta != 0, tb != 0, m, n, k}] = index;
    }
    return t;
  }();
  return table;
}

cudaDataType_t cuda_type(DType dt) {
  switch (dt) {
    case DType::f32: return CUDA_R_32F;
    case DType::bf16: return CUDA_R_16BF;
    default: throw_runtime(std::string("matmul: CUDA kernel has no ") + dtype_name(dt) + " variant (f32 or bf16)");
  }
}

int alignment(const void* p) {  // largest power of two (<= 256) dividing the address
  const uintptr_t a = reinterpret_cast<uintptr_t>(p);
  int al = 256;
  while (al > 1 && (a % uintptr_t(al)) != 0) al >>= 1;
  return al;
}

// Column-major C[m, n] = op(A) · op(B) + beta * C, op(A) [m, k], op(B) [k, n]; A and B share a dtype. With
// batch > 1: `batch` such products, the b-th at A + b * sa, B + b * sb, C + b * sc (elements).
void lt_gemm(const Context& ctx, bool ta, bool tb, int64_t m, int64_t n, int64_t k, const void* A, int64_t lda,
             const void* B, int64_t ldb, DType ab_dt, float beta, void* C, int64_t ldc, DType c_dt,
             int64_t batch = 1, int64_t sa = 0, int64_t sb = 0, int64_t sc = 0) {
  cudaStream_t st = prepare(ctx);
  if (m == 0 || n == 0 || batch == 0) return;
  if (k == 0) {  // empty product: C = beta * C
    DS_CHECK(batch == 1, "matmul: empty batched product");
    if (beta == 0.0f) DS_CUDA_CHECK(cudaMemset2DAsync(C, size_t(ldc) * dtype_size(c_dt), 0,
                                                      size_t(m) * dtype_size(c_dt), size_t(n), st));
    return;
  }
  if (batch == 1) sa = sb = sc = 0;
  const int dev = ctx.device.index;
  LtState& S = state();
  cublasLtHandle_t handle;
  void* workspace;
  // a batch's matrices start at base + b * stride: the alignment the algorithm may assume covers the strides too
  const size_t es_ab = dtype_size(ab_dt), es_c = dtype_size(c_dt);
  auto with_stride = [](int al, int64_t stride_bytes) {
    while (al > 1 && stride_bytes % al != 0) al >>= 1;
    return al;
  };
  const int al_a = with_stride(alignment(A), sa * int64_t(es_ab)), al_b = with_stride(alignment(B), sb * int64_t(es_ab)),
            al_c = with_stride(alignment(C), sc * int64_t(es_c));
  const LtState::Key key{dev, ta,    tb,    m,    n,    k,          lda, ldb, ldc, int(ab_dt), int(c_dt),
                         al_a, al_b, al_c, beta != 0.0f, batch, sa, sb, sc};
  Plan* plan = nullptr;
  {
    std::lock_guard<std::mutex> lock(S.mu);
    auto h = S.handles.find(dev);
    if (h == S.handles.end()) {
      cublasLtHandle_t nh;
      DS_CUBLAS_CHECK(cublasLtCreate(&nh));
      h = S.handles.emplace(dev, nh).first;
    }
    handle = h->second;
    auto w = S.workspaces.find({dev, st});
    if (w == S.workspaces.end()) {
      void* p = nullptr;
      DS_CUDA_CHECK(cudaMalloc(&p, kWorkspaceBytes));
      w = S.workspaces.emplace(std::make_pair(dev, st), p).first;
    }
    workspace = w->second;
    auto it = S.plans.find(key);
    if (it != S.plans.end()) plan = it->second;
  }

  if (!plan) {
    const cudaDataType_t abt = cuda_type(ab_dt), ct = cuda_type(c_dt);
    auto* p = new Plan;
    DS_CUBLAS_CHECK(cublasLtMatmulDescCreate(&p->op, CUBLAS_COMPUTE_32F, CUDA_R_32F));
    const cublasOperation_t opa = ta ? CUBLAS_OP_T : CUBLAS_OP_N, opb = tb ? CUBLAS_OP_T : CUBLAS_OP_N;
    DS_CUBLAS_CHECK(cublasLtMatmulDescSetAttribute(p->op, CUBLASLT_MATMUL_DESC_TRANSA, &opa, sizeof(opa)));
    DS_CUBLAS_CHECK(cublasLtMatmulDescSetAttribute(p->op, CUBLASLT_MATMUL_DESC_TRANSB, &opb, sizeof(opb)));
    p->la = Layout(abt, ta ? k : m, ta ? m : k, lda, batch, sa);
    p->lb = Layout(abt, tb ? n : k, tb ? k : n, ldb, batch, sb);
    p->lc = Layout(ct, m, n, ldc, batch, sc);
    cublasLtMatmulPreference_t pref = nullptr;
    DS_CUBLAS_CHECK(cublasLtMatmulPreferenceCreate(&pref));
    const uint64_t ws = kWorkspaceBytes;
    const uint32_t a32 = uint32_t(al_a), b32 = uint32_t(al_b), c32 = uint32_t(al_c);
    cublasLtMatmulPreferenceSetAttribute(pref, CUBLASLT_MATMUL_PREF_MAX_WORKSPACE_BYTES, &ws, sizeof(ws));
    cublasLtMatmulPreferenceSetAttribute(pref, CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_A_BYTES, &a32, sizeof(a32));
    cublasLtMatmulPreferenceSetAttribute(pref, CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_B_BYTES, &b32, sizeof(b32));
    cublasLtMatmulPreferenceSetAttribute(pref, CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_C_BYTES, &c32, sizeof(c32));
    cublasLtMatmulPreferenceSetAttribute(pref, CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_D_BYTES, &c32, sizeof(c32));
    // DS_GEMM_INPLACE_SPLITK=1 (an A/B knob): f32 outputs split K only in place (the parts added in the output, in
    // order, through cuBLASLt's counters) or not at all, instead of parts in the workspace and a separate reduce
    // kernel (cublasLt::splitKreduce_kernel: ~0.7 ms of the bench step, after the weight gradients' products). Not
    // for bf16 outputs: in place the parts add in the output type. On the H200 (23rd session) `[matmul]` passes with
    // it and training did not gain (306.3k / 305.9k tok/s against 307.8k / 307.7k): off.
    static const bool inplace_splitk = [] {
      const char* e = std::getenv("DS_GEMM_INPLACE_SPLITK");
      return e != nullptr && std::string(e) == "1";
    }();
    const bool inplace = inplace_splitk && c_dt == DType::f32;
    if (inplace) {
      const uint32_t mask = CUBLASLT_REDUCTION_SCHEME_NONE | CUBLASLT_REDUCTION_SCHEME_INPLACE;
      cublasLtMatmulPreferenceSetAttribute(pref, CUBLASLT_MATMUL_PREF_REDUCTION_SCHEME_MASK, &mask, sizeof(mask));
    }
    const auto over = algo_overrides().find(AlgoKey{ta, tb, m, n, k});
    const int index = over != algo_overrides().end() ? over->second : g_algo_index.load(std::memory_order_relaxed);
    const int want = std::min(index + 1, kMaxAlgos);
    cublasLtMatmulHeuristicResult_t res[kMaxAlgos] = {};
    int found = 0;
    cublasStatus_t hs =
        cublasLtMatmulAlgoGetHeuristic(handle, p->op, p->la.h, p->lb.h, p->lc.h, p->lc.h, pref, want, res, &found);
    if (inplace && (hs != CUBLAS_STATUS_SUCCESS || found == 0)) {  // none that way: any scheme
      const uint32_t all = CUBLASLT_REDUCTION_SCHEME_MASK;
      cublasLtMatmulPreferenceSetAttribute(pref, CUBLASLT_MATMUL_PREF_REDUCTION_SCHEME_MASK, &all, sizeof(all));
      hs = cublasLtMatmulAlgoGetHeuristic(handle, p->op, p->la.h, p->lb.h, p->lc.h, p->lc.h, pref, want, res, &found);
    }
    g_algo_found.store(hs == CUBLAS_STATUS_SUCCESS ? found : 0, std::memory_order_relaxed);
    cublasLtMatmulPreferenceDestroy(pref);
    if (hs != CUBLAS_STATUS_SUCCESS || found == 0) {
      delete p;
      throw_runtime("cuBLASLt: no algorithm for the " + std::string(dtype_name(ab_dt)) + " -> " + dtype_name(c_dt) +
                    " product m=" + std::to_string(m) + " n=" + std::to_string(n) + " k=" + std::to_string(k) +
                    " batch=" + std::to_string(batch) + " (" + cublasGetStatusString(hs) + ")");
    }
    p->algo = res[std::min(found, want) - 1].algo;  // the benchmark's index, or the last offered
    std::lock_guard<std::mutex> lock(S.mu);
    auto [it, inserted] = S.plans.emplace(key, p);
    if (!inserted) {  // another thread built the same plan first
      delete p;
    }
    plan = it->second;
  }
  const float alpha = 1.0f;
  DS_CUBLAS_CHECK(cublasLtMatmul(handle, plan->op, &alpha, A, plan->la.h, B, plan->lb.h, &beta, C, plan->lc.h, C,
                                 plan->lc.h, &plan->algo, workspace, kWorkspaceBytes, st));
}

}  // namespace

// Row-major out[M, N] = in[M, K] · W[N, K]^T is column-major out^T[N, M] = W^T... : A = W (col-major [K, N],
// transposed), B = in (col-major [K, M]).
// ---- decode-sized products: bf16 GEMV ---------------------------------------------------------------------------
// For M <= kGemvRows rows cuBLASLt's kernels are latency-bound (~5 us for a 1-2 MB weight on the H200, ~100 of
// them in a batch-1 decode step). Here a group of G lanes (G = 32, or fewer for short rows) computes one output
// column for every row: the weight row streams once through 16-byte loads, the M input rows sit in shared memory,
// products accumulate in f32 and the group reduces them in a fixed shuffle order (deterministic); the output is
// rounded once (beta = 1 adds to it in f32). Before waiting for the previous kernel (programmatic dependent launch,
// common.cuh) one thread asks for the block's weight rows in L2, so their HBM latency overlaps that kernel.
// blockIdx.y batches independent products (the heads of matmul_heads_forward) at fixed element strides.
namespace {

constexpr int kGemvRows = 4, kGemvWarps = 8, kGemvSplitMin = 4, kGemvFirst = 4;
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
  int glog;    // log2 of the lanes per output column (a lane group)
  int add;
  int ksplit;  // lane groups (whole warps) per output column, each over its own 1/ksplit of K
  int w_settled;  // Inputs::settled weights: the lane's first loads go out before the wait
};

template <class TC>
__global__ void __launch_bounds__(kGemvWarps * 32) gemv_kernel(GemvArgs a) {
  const int G = 1 << a.glog, cols_per_block = kGemvWarps * 32 / G / a.ksplit;
  const int64_t n0 = int64_t(blockIdx.x) * cols_per_block;
  const bf16_t* w = a.w + int64_t(blockIdx.y) * a.w_bs;
  if (threadIdx.x == 0 && n0 < a.N) {  // weights only (never written by a kernel of the same pass)
    const int64_t n1 = min(a.N, n0 + cols_per_block);
    prefetch_l2(w + n0 * a.ldw, uint32_t(((n1 - n0 - 1) * a.ldw + a.K) * int64_t(sizeof(bf16_t))));
  }
  extern __shared__ uint4 xs[];  // [M][K / 8]
  __shared__ float part_sum[kGemvWarps][kGemvRows];  // ksplit > 1: each warp's share of its column
  const int64_t K8 = a.K / 8;
  const int g = threadIdx.x & (G - 1), grp = threadIdx.x / G, part = grp % a.ksplit;
  const int64_t n = n0 + grp / a.ksplit;
  const bool valid = n < a.N;  // no early return: the group reduction below shuffles across the whole warp
  const int64_t k_begin = K8 * part / a.ksplit + g, k_end = valid ? K8 * (part + 1) / a.ksplit : 0;
  const uint4* wr = reinterpret_cast<const uint4*>(w + (valid ? n : 0) * a.ldw);
  // The lane's first kGemvFirst weight loads (a 1,024-long row is all of it): settled weights (a model's
  // parameters) before the wait, overlapping the kernel before; otherwise right after it, before the input rows
  // are staged, so the two L2 round trips overlap instead of following each other across the barrier. Same sums.
  uint4 first[kGemvFirst];
  auto load_first = [&] {
#pragma unroll
    for (int p = 0; p < kGemvFirst; ++p) {
      const int64_t k8 = k_begin + int64_t(p) * G;
      first[p] = k8 < k_end ? __ldg(wr + k8) : make_uint4(0u, 0u, 0u, 0u);
    }
  };
  pdl_enter_with(a.w_settled, load_first);
  const bf16_t* in = a.in + int64_t(blockIdx.y) * a.in_bs;
  for (int64_t i = threadIdx.x; i < a.M * K8; i += blockDim.x) {
    const int64_t m = i / K8, k8 = i % K8;
    xs[i] = reinterpret_cast<const uint4*>(in + m * a.ldi)[k8];
  }
  __syncthreads();
  float acc[kGemvRows] = {};
#pragma unroll
  for (int p = 0; p < kGemvFirst; ++p) {
    const int64_t k8 = k_begin + int64_t(p) * G;
    if (k8 >= k_end) break;
#pragma unroll
    for (int m = 0; m < kGemvRows; ++m) {
      if (m >= a.M) break;
      acc[m] = dot_bf16x8(first[p], xs[m * K8 + k8], acc[m]);
    }
  }
#pragma unroll 4
  for (int64_t k8 = k_begin + int64_t(kGemvFirst) * G; k8 < k_end; k8 += G) {
    const uint4 wv = __ldg(wr + k8);
#pragma unroll
    for (int m = 0; m < kGemvRows; ++m) {
      if (m >= a.M) break;
      acc[m] = dot_bf16x8(wv, xs[m * K8 + k8], acc[m]);
    }
  }
#pragma unroll
  for (int m = 0; m < kGemvRows; ++m)
    for (int o = G / 2; o > 0; o >>= 1) acc[m] += __shfl_xor_sync(0xffffffffu, acc[m], o);  // within the lane group
  if (a.ksplit > 1) {  // the column's warps add their shares in warp order (deterministic)
    if (g == 0)
      for (int m = 0; m < kGemvRows; ++m) part_sum[grp][m] = acc[m];
    __syncthreads();
    if (part == 0 && g == 0)
      for (int m = 0; m < kGemvRows; ++m) {
        acc[m] = part_sum[grp][m];
        for (int p = 1; p < a.ksplit; ++p) acc[m] += part_sum[grp + p][m];
      }
  }
  TC* out = static_cast<TC*>(a.out) + int64_t(blockIdx.y) * a.out_bs;
  if (g == 0 && part == 0 && valid)
#pragma unroll
    for (int m = 0; m < kGemvRows; ++m) {
      if (m >= a.M) break;
      TC* dst = out + m * a.ldo + n;
      *dst = cvt<TC>(a.add ? ldf(*dst) + acc[m] : acc[m]);
    }
}


// The GEMV handles bf16 inputs with 16-byte-aligned rows and M <= kGemvRows whose rows fit its shared memory.
bool gemv_fits(DType in_dtype, const void* in, int64_t ldi, const void* w, int64_t ldw, int64_t M, int64_t K) {
  return in_dtype == DType::bf16 && M >= 1 && M <= kGemvRows && K % 8 == 0 && ldi % 8 == 0 && ldw % 8 == 0 &&
         is_aligned16(in) && is_aligned16(w) &&
         size_t(M * K) * sizeof(bf16_t) <= kGemvSmem - 256;  // 256: gemv_kernel's own
}

void gemv(const Context& ctx, DType out_dtype, GemvArgs a, int64_t batch) {
  cudaStream_t st = prepare(ctx);
  const int64_t K8 = a.K / 8;
  a.glog = 5;
  while (a.glog > 0 && (int64_t(1) << (a.glog - 1)) >= K8) --a.glog;  // short rows: several columns per warp
  // Long rows: up to kGemvWarps warps per column, each with at least kGemvSplitMin 16-byte loads a lane — a warp
  // walks its share of K in dependent rounds of loads, so a 4,096-long row in one warp is a latency chain.
  a.ksplit = 1;
  static const int max_split = [] {
    const char* e = std::getenv("DS_GEMV_KSPLIT");  // a benchmark knob: 1 = one warp per column
    const long v = e ? std::strtol(e, nullptr, 10) : 0;
    return v >= 1 ? int(std::min<long>(v, kGemvWarps)) : kGemvWarps;
  }();
  if (a.glog == 5)
    while (a.ksplit * 2 <= max_split && K8 / (a.ksplit * 2) >= 32 * kGemvSplitMin) a.ksplit *= 2;
  const int64_t cols_per_block = (kGemvWarps * 32 >> a.glog) / a.ksplit;
  const dim3 grid(unsigned((a.N + cols_per_block - 1) / cols_per_block), unsigned(batch));
  const size_t smem = size_t(a.M * a.K) * sizeof(bf16_t);
  dispatch_fb(out_dtype, "matmul_forward", [&](auto zero) {
    using TC = decltype(zero);
    launch(gemv_kernel<TC>, grid, kGemvWarps * 32, smem, st, a);
  });
  DS_CUDA_LAUNCH_CHECK("gemv_kernel");
}

}  // namespace

void matmul_forward(const Context& ctx, Tensor out, Tensor in, Tensor weight, Accum acc, Inputs weight_written) {
  const int64_t M = in.rows(), K = in.cols(), N = weight.rows();
  if (M > 0 && N > 0 && gemv_fits(in.dtype, in.data, K, weight.data, K, M, K)) {
    GemvArgs a{out.data, N, 0, dptr<const bf16_t>(in), K, 0, dptr<const bf16_t>(weight), K, 0, int(M), N, K, 0,
               acc == Accum::add};
    a.w_settled = weight_written == Inputs::settled;
    gemv(ctx, out.dtype, a, 1);
    return;
  }
  lt_gemm(ctx, true, false, N, M, K, weight.data, K, in.data, K, in.dtype, acc == Accum::add ? 1.0f : 0.0f, out.data,
          N, out.dtype);
}

// d_in[M, K] (=|+=) d_out[M, N] · W[N, K]:  column-major d_in^T[K, M] = W^T[K, N] · d_out^T[N, M].
// d_weight[N, K] += d_out^T · in:           column-major d_W^T[K, N] = in^T[K, M] · d_out[M, N].
void matmul_backward(const Context& ctx, Tensor d_in, Tensor d_weight, Tensor d_out, Tensor in, Tensor weight,
                     Accum acc_in) {
  const int64_t M = d_out.rows(), N = d_out.cols(), K = weight.cols();
  if (!d_in.empty())
    lt_gemm(ctx, false, false, K, M, N, weight.data, K, d_out.data, N, d_out.dtype,
            acc_in == Accum::add ? 1.0f : 0.0f, d_in.data, K, d_in.dtype);
  if (!d_weight.empty())
    lt_gemm(ctx, false, true, K, N, M, in.data, K, d_out.data, N, d_out.dtype, 1.0f, d_weight.data, K,
            d_weight.dtype);
}

// Per-head linear (matmul_heads_forward in ops.h), one strided-batched product over the H heads:
// out[m, h, 0:N] = in[m, h, 0:K] · W_h^T with W_h = weight[h, row0:row0+N, :] ([N, K] row-major).
// Column-major per head: out_h^T[N, M] (ld H*Nout) = W_h[K, N]^T · in_h^T[K, M] (ld H*Kin).
void matmul_heads_forward(const Context& ctx, Tensor out, Tensor in, Tensor weight, int64_t k, int64_t n,
                          int64_t w_row0, Inputs weight_written) {
  const int64_t M = in.dim(0), H = in.dim(1), Kin = in.dim(2), Nout = out.dim(2), Wr = weight.dim(1),
                Kw = weight.dim(2);
  const size_t es = dtype_size(weight.dtype);
  const void* A = static_cast<const char*>(weight.data) + size_t(w_row0 * Kw) * es;
  if (M > 0 && n > 0 && weight.dtype == DType::bf16 && gemv_fits(in.dtype, in.data, H * Kin, A, Kw, M, k) &&
      (Kin * int64_t(es)) % 16 == 0 && (Wr * Kw * int64_t(es)) % 16 == 0) {  // decode: one GEMV launch, heads in y
    GemvArgs a{out.data, H * Nout, Nout, dptr<const bf16_t>(in), H * Kin, Kin, static_cast<const bf16_t*>(A), Kw,
               Wr * Kw, int(M), n, k, 0, 0};
    a.w_settled = weight_written == Inputs::settled;
    gemv(ctx, out.dtype, a, H);
    return;
  }
  lt_gemm(ctx, true, false, n, M, k, A, Kw, in.data, H * Kin, in.dtype, 0.0f, out.data, H * Nout, out.dtype, H, Wr * Kw,
          Kin, Nout);
}

// Benchmark hook (ds-bench-dense-gemm; declared by its caller, not in cuda_ops.h): plans built from now on take the
// heuristic's result `index` (0, the default: its first; past the last offered, the last; at most 15), and the cached
// plans are dropped so that the next products build theirs again. Returns the previous index (a negative index only
// reads it). Not thread-safe: only for a single-threaded benchmark with no product in flight.
int matmul_bench_algo(int index) {
  const int prev = g_algo_index.load();
  if (index < 0) return prev;
  index = std::min(index, kMaxAlgos - 1);
  LtState& S = state();
  std::lock_guard<std::mutex> lock(S.mu);
  for (auto& kv : S.plans) delete kv.second;
  S.plans.clear();
  g_algo_index.store(index);
  return prev;
}
// How many results the heuristic offered for the last plan built (the benchmark prints it beside each product).
int matmul_bench_algo_found() { return g_algo_found.load(); }

}  // namespace ds::cuda
