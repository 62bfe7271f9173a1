// Embedding lookup and linear layers (BLAS). BLAS runs outside OpenMP regions and uses its own pool
// (sized by init_threads), so the two never oversubscribe the cores.
#include <cblas.h>

#include <algorithm>
#include <type_traits>

#include "ops/cpu/cpu_ops.h"

namespace ds::cpu {

namespace {

// C[M, N] = alpha * op(A) · op(B) + beta * C, row-major, for float or double.
template <class T>
void gemm(bool trans_a, bool trans_b, int64_t M, int64_t N, int64_t K, const T* A, int64_t lda, const T* B,
          int64_t ldb, T beta, T* C, int64_t ldc) {
  if (M == 0 || N == 0) return;
  const CBLAS_TRANSPOSE ta = trans_a ? CblasTrans : CblasNoTrans, tb = trans_b ? CblasTrans : CblasNoTrans;
  // BLAS wants leading dimensions >= 1 even for empty operands.
  lda = std::max<int64_t>(lda, 1);
  ldb = std::max<int64_t>(ldb, 1);
  if constexpr (std::is_same_v<T, float>)
    cblas_sgemm(CblasRowMajor, ta, tb, int(M), int(N), int(K), 1.0f, A, int(lda), B, int(ldb), beta, C, int(ldc));
  else
    cblas_dgemm(CblasRowMajor, ta, tb, int(M), int(N), int(K), 1.0, A, int(lda), B, int(ldb), beta, C, int(ldc));
}

void check_ids(const int32_t* ids, int64_t n, int64_t vocab, const char* op) {
  for (int64_t i = 0; i < n; ++i)
    if (ids[i] < 0 || ids[i] >= vocab)
      throw_bad_input(std::string(op) + ": token id " + std::to_string(ids[i]) + " at position " + std::to_string(i) +
                      " is outside the vocabulary [0, " + std::to_string(vocab) + ")");
}

}  // namespace

void embedding_forward(const Context& ctx, Tensor out, Tensor ids, Tensor table) {
  dispatch_float(out.dtype, "embedding_forward", [&](auto zero) {
    using T = decltype(zero);
    const int32_t* pid = ids.ptr<int32_t>();
    const int64_t N = ids.numel(), D = table.cols(), V = table.rows();
    check_ids(pid, N, V, "embedding_forward");
    const T* pt = table.ptr<T>();
    T* po = out.ptr<T>();
#pragma omp parallel for num_threads(threads_for(ctx, N * D)) schedule(static)
    for (int64_t n = 0; n < N; ++n) std::copy(pt + pid[n] * D, pt + (pid[n] + 1) * D, po + n * D);
  });
}

// Threads split the columns; each walks every token in order, so the sum order per element is fixed.
void embedding_backward(const Context& ctx, Tensor d_table, Tensor d_out, Tensor ids) {
  dispatch_float(d_table.dtype, "embedding_backward", [&](auto zero) {
    using T = decltype(zero);
    const int32_t* pid = ids.ptr<int32_t>();
    const int64_t N = ids.numel(), D = d_table.cols(), V = d_table.rows();
    check_ids(pid, N, V, "embedding_backward");
    T* pdt = d_table.ptr<T>();
    const T* pdo = d_out.ptr<T>();
    constexpr int64_t kBlock = 64;
    const int64_t nblocks = (D + kBlock - 1) / kBlock;
#pragma omp parallel for num_threads(threads_for(ctx, N * D)) schedule(static)
    for (int64_t b = 0; b < nblocks; ++b) {
      const int64_t c0 = b * kBlock, c1 = std::min(D, c0 + kBlock);
      for (int64_t n = 0; n < N; ++n) {
        T* row = pdt + pid[n] * D;
        const T* g = pdo + n * D;
        for (int64_t c = c0; c < c1; ++c) row[c] += g[c];
      }
    }
  });
}

// out[M, N] (=|+=) in[M, K] · W[N, K]^T
void matmul_forward(const Context&, Tensor out, Tensor in, Tensor weight, Accum acc, Inputs /*weight_written*/) {
  dispatch_float(out.dtype, "matmul_forward", [&](auto zero) {
    using T = decltype(zero);
    const int64_t M = in.rows(), K = in.cols(), N = weight.rows();
    gemm<T>(false, true, M, N, K, in.ptr<T>(), K, weight.ptr<T>(), K, acc == Accum::add ? T(1) : T(0), out.ptr<T>(),
            N);
  });
}

// d_in[M, K] (=|+=) d_out[M, N] · W[N, K];  d_weight[N, K] += d_out^T · in
void matmul_backward(const Context&, Tensor d_in, Tensor d_weight, Tensor d_out, Tensor in, Tensor weight,
                     Accum acc_in) {
  dispatch_float(d_out.dtype, "matmul_backward", [&](auto zero) {
    using T = decltype(zero);
    const int64_t M = d_out.rows(), N = d_out.cols(), K = weight.cols();
    if (!d_in.empty())
      gemm<T>(false, false, M, K, N, d_out.ptr<T>(), N, weight.ptr<T>(), K, acc_in == Accum::add ? T(1) : T(0),
              d_in.ptr<T>(), K);
    if (!d_weight.empty())
      gemm<T>(true, false, N, K, M, d_out.ptr<T>(), N, in.ptr<T>(), K, T(1), d_weight.ptr<T>(), K);
  });
}

// out[m, h, 0:n] = in[m, h, 0:k] · weight[h, w_row0:w_row0+n, :]^T: one gemm per head on strided views.
void matmul_heads_forward(const Context&, Tensor out, Tensor in, Tensor weight, int64_t k, int64_t n,
                          int64_t w_row0, Inputs /*weight_written*/) {
  dispatch_float(out.dtype, "matmul_heads_forward", [&](auto zero) {
    using T = decltype(zero);
    const int64_t M = in.dim(0), H = in.dim(1), Kin = in.dim(2), Nout = out.dim(2), Wr = weight.dim(1);
    for (int64_t h = 0; h < H; ++h)
      gemm<T>(false, true, M, n, k, in.ptr<T>() + h * Kin, H * Kin, weight.ptr<T>() + (h * Wr + w_row0) * k, k, T(0),
              out.ptr<T>() + h * Nout, H * Nout);
  });
}

}  // namespace ds::cpu
