// CUDA twins of the linear layer (lib/ops/cpu/matmul.cpp is the reference) through cuBLASLt.
// Inputs f32 or bf16 (both operands the same dtype), the output f32 or the inputs' dtype; every product
// accumulates in f32 (CUBLAS_COMPUTE_32F: no TF32 for f32 inputs, so f32 matches the CPU to rounding).
// Accum::add and the parameter gradient use beta = 1; overwrite uses beta = 0 (cuBLAS does not read C then).
// One cuBLASLt handle per device and one 32 MiB workspace per (device, stream), created on first use; the
// heuristic's algorithm is cached per problem (shape, dtypes, leading dims, pointer alignment).
#include <cublasLt.h>

#include <map>
#include <mutex>
#include <tuple>

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

struct LtState {
  std::mutex mu;
  std::map<int, cublasLtHandle_t> handles;                      // per device
  std::map<std::pair<int, cudaStream_t>, void*> workspaces;     // per (device, stream)
  using Key = std::tuple<int, bool, bool, int64_t, int64_t, int64_t, int64_t, int64_t, int64_t, int, int, int, int, int,
                         bool>;
  std::map<Key, cublasLtMatmulAlgo_t> algos;
};

LtState& state() {
  static LtState* s = new LtState;  // never destroyed: handles outlive static destructors' CUDA teardown
  return *s;
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

struct Layout {
  cublasLtMatrixLayout_t h = nullptr;
  Layout(cudaDataType_t t, int64_t rows, int64_t cols, int64_t ld) {
    DS_CUBLAS_CHECK(cublasLtMatrixLayoutCreate(&h, t, uint64_t(rows), uint64_t(cols), ld));
  }
  ~Layout() {
    if (h) cublasLtMatrixLayoutDestroy(h);
  }
};

// Column-major C[m, n] = op(A) · op(B) + beta * C, op(A) [m, k], op(B) [k, n]; A and B share a dtype.
void lt_gemm(const Context& ctx, bool ta, bool tb, int64_t m, int64_t n, int64_t k, const void* A, int64_t lda,
             const void* B, int64_t ldb, DType ab_dt, float beta, void* C, int64_t ldc, DType c_dt) {
  cudaStream_t st = prepare(ctx);
  if (m == 0 || n == 0) return;
  if (k == 0) {  // empty product: C = beta * C
    if (beta == 0.0f) DS_CUDA_CHECK(cudaMemset2DAsync(C, size_t(ldc) * dtype_size(c_dt), 0,
                                                      size_t(m) * dtype_size(c_dt), size_t(n), st));
    return;
  }
  const int dev = ctx.device.index;
  LtState& S = state();
  cublasLtHandle_t handle;
  void* workspace;
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
  }

  const cudaDataType_t abt = cuda_type(ab_dt), ct = cuda_type(c_dt);
  cublasLtMatmulDesc_t op = nullptr;
  DS_CUBLAS_CHECK(cublasLtMatmulDescCreate(&op, CUBLAS_COMPUTE_32F, CUDA_R_32F));
  struct DescGuard {
    cublasLtMatmulDesc_t d;
    ~DescGuard() { cublasLtMatmulDescDestroy(d); }
  } guard{op};
  const cublasOperation_t opa = ta ? CUBLAS_OP_T : CUBLAS_OP_N, opb = tb ? CUBLAS_OP_T : CUBLAS_OP_N;
  DS_CUBLAS_CHECK(cublasLtMatmulDescSetAttribute(op, CUBLASLT_MATMUL_DESC_TRANSA, &opa, sizeof(opa)));
  DS_CUBLAS_CHECK(cublasLtMatmulDescSetAttribute(op, CUBLASLT_MATMUL_DESC_TRANSB, &opb, sizeof(opb)));
  Layout la(abt, ta ? k : m, ta ? m : k, lda), lb(abt, tb ? n : k, tb ? k : n, ldb), lc(ct, m, n, ldc);

  const int al_a = alignment(A), al_b = alignment(B), al_c = alignment(C);
  const LtState::Key key{dev, ta, tb, m, n, k, lda, ldb, ldc, int(ab_dt), int(c_dt), al_a, al_b, al_c, beta != 0.0f};
  cublasLtMatmulAlgo_t algo;
  bool cached = false;
  {
    std::lock_guard<std::mutex> lock(S.mu);
    auto it = S.algos.find(key);
    if (it != S.algos.end()) {
      algo = it->second;
      cached = true;
    }
  }
  if (!cached) {
    cublasLtMatmulPreference_t pref = nullptr;
    DS_CUBLAS_CHECK(cublasLtMatmulPreferenceCreate(&pref));
    const uint64_t ws = kWorkspaceBytes;
    const uint32_t a32 = uint32_t(al_a), b32 = uint32_t(al_b), c32 = uint32_t(al_c);
    cublasLtMatmulPreferenceSetAttribute(pref, CUBLASLT_MATMUL_PREF_MAX_WORKSPACE_BYTES, &ws, sizeof(ws));
    cublasLtMatmulPreferenceSetAttribute(pref, CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_A_BYTES, &a32, sizeof(a32));
    cublasLtMatmulPreferenceSetAttribute(pref, CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_B_BYTES, &b32, sizeof(b32));
    cublasLtMatmulPreferenceSetAttribute(pref, CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_C_BYTES, &c32, sizeof(c32));
    cublasLtMatmulPreferenceSetAttribute(pref, CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_D_BYTES, &c32, sizeof(c32));
    cublasLtMatmulHeuristicResult_t res{};
    int found = 0;
    const cublasStatus_t hs =
        cublasLtMatmulAlgoGetHeuristic(handle, op, la.h, lb.h, lc.h, lc.h, pref, 1, &res, &found);
    cublasLtMatmulPreferenceDestroy(pref);
    if (hs != CUBLAS_STATUS_SUCCESS || found == 0)
      throw_runtime("cuBLASLt: no algorithm for the " + std::string(dtype_name(ab_dt)) + " -> " + dtype_name(c_dt) +
                    " product m=" + std::to_string(m) + " n=" + std::to_string(n) + " k=" + std::to_string(k) +
                    " (" + cublasGetStatusString(hs) + ")");
    algo = res.algo;
    std::lock_guard<std::mutex> lock(S.mu);
    S.algos.emplace(key, algo);
  }
  const float alpha = 1.0f;
  DS_CUBLAS_CHECK(cublasLtMatmul(handle, op, &alpha, A, la.h, B, lb.h, &beta, C, lc.h, C, lc.h, &algo, workspace,
                                 kWorkspaceBytes, st));
}

}  // namespace

// Row-major out[M, N] = in[M, K] · W[N, K]^T is column-major out^T[N, M] = W^T... : A = W (col-major [K, N],
// transposed), B = in (col-major [K, M]).
void matmul_forward(const Context& ctx, Tensor out, Tensor in, Tensor weight, Accum acc) {
  const int64_t M = in.rows(), K = in.cols(), N = weight.rows();
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

}  // namespace ds::cuda
