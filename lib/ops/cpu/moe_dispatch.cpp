// MoE dispatch/combine: routing table (token copies grouped by expert), permute and weighted unpermute.
// Every loop runs over tokens n and gathers, so there are no write conflicts and no thread-dependent sums.
#include <algorithm>
#include <vector>

#include "ops/cpu/cpu_ops.h"

namespace ds::cpu {

namespace {

void check_rows(const int32_t* row_of, int64_t n, int64_t rows, const char* op) {
  for (int64_t i = 0; i < n; ++i)
    DS_CHECK(row_of[i] >= 0 && row_of[i] < rows, std::string(op) + ": row_of entry " + std::to_string(row_of[i]) +
                                                     " outside [0, " + std::to_string(rows) + ")");
}

}  // namespace

// Counting sort of the (n, k) pairs by expert: stable, so rows of one expert keep (n, k) order.
void moe_route(const Context&, Tensor row_of, Tensor offsets, Tensor counts, Tensor topk_idx, int64_t n_experts) {
  const int64_t NK = topk_idx.numel(), E = n_experts;
  const int32_t* idx = topk_idx.ptr<int32_t>();
  int32_t* rows = row_of.ptr<int32_t>();
  int64_t* off = offsets.ptr<int64_t>();
  std::vector<int64_t> hist(size_t(E), 0);
  for (int64_t i = 0; i < NK; ++i) {
    DS_CHECK(idx[i] >= 0 && idx[i] < E, "moe_route: expert id " + std::to_string(idx[i]) + " outside [0, " +
                                            std::to_string(E) + ")");
    ++hist[size_t(idx[i])];
  }
  off[0] = 0;
  for (int64_t e = 0; e < E; ++e) off[e + 1] = off[e] + hist[size_t(e)];
  std::vector<int64_t> cursor(off, off + E);
  for (int64_t i = 0; i < NK; ++i) rows[i] = int32_t(cursor[size_t(idx[i])]++);
  if (!counts.empty()) {
    int64_t* pc = counts.ptr<int64_t>();
    for (int64_t e = 0; e < E; ++e) pc[e] += hist[size_t(e)];
  }
}

void moe_permute_forward(const Context& ctx, Tensor out, Tensor in, Tensor row_of) {
  dispatch_float(out.dtype, "moe_permute_forward", [&](auto zero) {
    using T = decltype(zero);
    const int64_t N = row_of.rows(), K = row_of.cols(), D = in.cols();
    const int32_t* ro = row_of.ptr<int32_t>();
    check_rows(ro, N * K, out.rows(), "moe_permute_forward");
    const T* pi = in.ptr<T>();
    T* po = out.ptr<T>();
#pragma omp parallel for num_threads(threads_for(ctx, N * K * D)) schedule(static)
    for (int64_t n = 0; n < N; ++n)
      for (int64_t k = 0; k < K; ++k) std::copy(pi + n * D, pi + (n + 1) * D, po + int64_t(ro[n * K + k]) * D);
  });
}

void moe_permute_backward(const Context& ctx, Tensor d_in, Tensor d_out, Tensor row_of, Accum acc) {
  dispatch_float(d_in.dtype, "moe_permute_backward", [&](auto zero) {
    using T = decltype(zero);
    const int64_t N = row_of.rows(), K = row_of.cols(), D = d_in.cols();
    const int32_t* ro = row_of.ptr<int32_t>();
    check_rows(ro, N * K, d_out.rows(), "moe_permute_backward");
    const T* pdo = d_out.ptr<T>();
    T* pdi = d_in.ptr<T>();
    const bool add = acc == Accum::add;
#pragma omp parallel for num_threads(threads_for(ctx, N * K * D)) schedule(static)
    for (int64_t n = 0; n < N; ++n) {
      T* d = pdi + n * D;
      for (int64_t c = 0; c < D; ++c) {
        T s = T(0);
        for (int64_t k = 0; k < K; ++k) s += pdo[int64_t(ro[n * K + k]) * D + c];
        d[c] = add ? d[c] + s : s;
      }
    }
  });
}

void moe_unpermute_forward(const Context& ctx, Tensor out, Tensor expert_out, Tensor row_of, Tensor topk_w,
                           Accum acc) {
  dispatch_float(out.dtype, "moe_unpermute_forward", [&](auto zero) {
    using T = decltype(zero);
    const int64_t N = row_of.rows(), K = row_of.cols(), D = out.cols();
    const int32_t* ro = row_of.ptr<int32_t>();
    check_rows(ro, N * K, expert_out.rows(), "moe_unpermute_forward");
    const T* pe = expert_out.ptr<T>();
    const T* pw = topk_w.ptr<T>();
    T* po = out.ptr<T>();
    const bool add = acc == Accum::add;
#pragma omp parallel for num_threads(threads_for(ctx, N * K * D)) schedule(static)
    for (int64_t n = 0; n < N; ++n) {
      T* o = po + n * D;
      for (int64_t c = 0; c < D; ++c) {
        T s = T(0);
        for (int64_t k = 0; k < K; ++k) s += pw[n * K + k] * pe[int64_t(ro[n * K + k]) * D + c];
        o[c] = add ? o[c] + s : s;
      }
    }
  });
}

void moe_unpermute_backward(const Context& ctx, Tensor d_expert_out, Tensor d_topk_w, Tensor d_out, Tensor expert_out,
                            Tensor row_of, Tensor topk_w) {
  dispatch_float(d_out.dtype, "moe_unpermute_backward", [&](auto zero) {
    using T = decltype(zero);
    const int64_t N = row_of.rows(), K = row_of.cols(), D = d_out.cols();
    const int32_t* ro = row_of.ptr<int32_t>();
    check_rows(ro, N * K, expert_out.rows(), "moe_unpermute_backward");
    const T* pdo = d_out.ptr<T>();
    const T* pe = expert_out.ptr<T>();
    const T* pw = topk_w.ptr<T>();
    T* pde = d_expert_out.empty() ? nullptr : d_expert_out.ptr<T>();
    T* pdw = d_topk_w.empty() ? nullptr : d_topk_w.ptr<T>();
#pragma omp parallel for num_threads(threads_for(ctx, N * K * D)) schedule(static)
    for (int64_t n = 0; n < N; ++n) {
      const T* g = pdo + n * D;
      for (int64_t k = 0; k < K; ++k) {
        const int64_t r = ro[n * K + k];
        if (pde) {
          const T w = pw[n * K + k];
          for (int64_t c = 0; c < D; ++c) pde[r * D + c] = w * g[c];
        }
        if (pdw) {
          double s = 0.0;
          for (int64_t c = 0; c < D; ++c) s += double(g[c]) * double(pe[r * D + c]);
          pdw[n * K + k] = T(s);
        }
      }
    }
  });
}

}  // namespace ds::cpu
