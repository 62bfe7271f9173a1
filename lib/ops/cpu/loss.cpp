// Cross-entropy over the vocabulary, one row per token, with a numerically stable logsumexp in double.
#include <algorithm>
#include <cmath>
#include <limits>

#include "ops/cpu/cpu_ops.h"

namespace ds::cpu {

namespace {

void check_targets(const int32_t* tg, int64_t n, int64_t V, int ignore_index, const char* op) {
  for (int64_t i = 0; i < n; ++i)
    if (tg[i] != ignore_index && (tg[i] < 0 || tg[i] >= V))
      throw_bad_input(std::string(op) + ": target " + std::to_string(tg[i]) + " at row " + std::to_string(i) +
                      " is outside the vocabulary [0, " + std::to_string(V) + ")");
}

// log-sum-exp of one row in double, the maximum subtracted first.
template <class T> double row_lse(const T* x, int64_t V) {
  double m = -std::numeric_limits<double>::infinity(), z = 0.0;
  for (int64_t v = 0; v < V; ++v) m = std::max(m, double(x[v]));
  for (int64_t v = 0; v < V; ++v) z += std::exp(double(x[v]) - m);
  return m + std::log(z);
}

}  // namespace

void cross_entropy_forward(const Context& ctx, Tensor loss, Tensor lse, Tensor logits, Tensor targets,
                           int ignore_index) {
  dispatch_float(logits.dtype, "cross_entropy_forward", [&](auto zero) {
    using T = decltype(zero);
    const int64_t N = logits.rows(), V = logits.cols();
    const T* pl = logits.ptr<T>();
    const int32_t* tg = targets.ptr<int32_t>();
    check_targets(tg, N, V, ignore_index, "cross_entropy_forward");
    T* ploss = loss.ptr<T>();
    T* plse = lse.empty() ? nullptr : lse.ptr<T>();
#pragma omp parallel for num_threads(threads_for(ctx, N * V)) schedule(static)
    for (int64_t n = 0; n < N; ++n) {
      if (tg[n] == ignore_index) {
        ploss[n] = T(0);
        if (plse) plse[n] = T(0);
        continue;
      }
      const T* x = pl + n * V;
      const double l = row_lse(x, V);
      ploss[n] = T(l - double(x[tg[n]]));
      if (plse) plse[n] = T(l);
    }
  });
}

namespace {

// Gradient element in double, read from / rounded into d_logits' dtype (bf16 through f32, as tensor.h rounds).
template <class D> double load_d(D x) { return double(x); }
template <> double load_d<bf16>(bf16 x) { return double(bf16_to_f32(x)); }
template <class D> D store_d(double x) { return D(x); }
template <> bf16 store_d<bf16>(double x) { return f32_to_bf16(float(x)); }

// T: logits, lse and row_scale; D: d_logits (T, or bf16 for f32 logits).
template <class T, class D>
void ce_backward(const Context& ctx, Tensor d_logits, Tensor logits, Tensor lse, Tensor targets, double d_scale,
                 int ignore_index, Accum acc, Tensor row_scale) {
  const int64_t N = logits.rows(), V = logits.cols();
  const T* pl = logits.ptr<T>();
  const T* plse = lse.ptr<T>();
  const int32_t* tg = targets.ptr<int32_t>();
  check_targets(tg, N, V, ignore_index, "cross_entropy_backward");
  D* pd = d_logits.ptr<D>();
  const T* rs = row_scale.empty() ? nullptr : row_scale.ptr<T>();
  const bool add = acc == Accum::add;
#pragma omp parallel for num_threads(threads_for(ctx, N * V)) schedule(static)
  for (int64_t n = 0; n < N; ++n) {
    D* d = pd + n * V;
    if (tg[n] == ignore_index) {
      if (!add) std::fill(d, d + V, store_d<D>(0.0));
      continue;
    }
    const T* x = pl + n * V;
    const double l = double(plse[n]);
    const double k = rs ? d_scale * double(rs[n]) : d_scale;
    for (int64_t v = 0; v < V; ++v) {
      const double g = k * (std::exp(double(x[v]) - l) - (v == tg[n] ? 1.0 : 0.0));
      d[v] = store_d<D>(add ? load_d(d[v]) + g : g);
    }
  }
}

}  // namespace

// d_logits[n] (=|+=) d_scale * (exp(logits[n] - lse[n]) - onehot(target)); ignored rows contribute 0.
void cross_entropy_backward(const Context& ctx, Tensor d_logits, Tensor logits, Tensor lse, Tensor targets,
                            double d_scale, int ignore_index, Accum acc, Tensor row_scale) {
  dispatch_float(logits.dtype, "cross_entropy_backward", [&](auto zero) {
    using T = decltype(zero);
    if (d_logits.dtype == DType::bf16)  // ops.cpp allows it with f32 logits only
      cpu::ce_backward<T, bf16>(ctx, d_logits, logits, lse, targets, d_scale, ignore_index, acc, row_scale);
    else
      cpu::ce_backward<T, T>(ctx, d_logits, logits, lse, targets, d_scale, ignore_index, acc, row_scale);
  });
}

// The two passes in turn: the reference defines the fused op's values (the CUDA kernel reads the logits once).
void cross_entropy_fused(const Context& ctx, Tensor loss, Tensor lse, Tensor d_logits, Tensor logits, Tensor targets,
                         double d_scale, int ignore_index) {
  cpu::cross_entropy_forward(ctx, loss, lse, logits, targets, ignore_index);
  cpu::cross_entropy_backward(ctx, d_logits, logits, lse, targets, d_scale, ignore_index, Accum::overwrite, Tensor{});
}

void kl_div_forward(const Context& ctx, Tensor loss, Tensor logits, Tensor teacher, Tensor targets, int ignore_index) {
  dispatch_float(logits.dtype, "kl_div_forward", [&](auto zero) {
    using T = decltype(zero);
    const int64_t N = logits.rows(), V = logits.cols();
    const T *ps = logits.ptr<T>(), *pt = teacher.ptr<T>();
    const int32_t* tg = targets.ptr<int32_t>();
    T* ploss = loss.ptr<T>();
#pragma omp parallel for num_threads(threads_for(ctx, N * V)) schedule(static)
    for (int64_t n = 0; n < N; ++n) {
      if (tg[n] == ignore_index) {
        ploss[n] = T(0);
        continue;
      }
      const T *s = ps + n * V, *t = pt + n * V;
      const double ls = row_lse(s, V), lt = row_lse(t, V);
      double kl = 0.0;
      for (int64_t v = 0; v < V; ++v) {
        const double log_pt = double(t[v]) - lt;
        kl += std::exp(log_pt) * (log_pt - (double(s[v]) - ls));
      }
      ploss[n] = T(kl);
    }
  });
}

void kl_div_backward(const Context& ctx, Tensor d_logits, Tensor logits, Tensor teacher, Tensor targets, double d_scale,
                     int ignore_index, Accum acc) {
  dispatch_float(logits.dtype, "kl_div_backward", [&](auto zero) {
    using T = decltype(zero);
    const int64_t N = logits.rows(), V = logits.cols();
    const T *ps = logits.ptr<T>(), *pt = teacher.ptr<T>();
    const int32_t* tg = targets.ptr<int32_t>();
    T* pd = d_logits.ptr<T>();
    const bool add = acc == Accum::add;
#pragma omp parallel for num_threads(threads_for(ctx, N * V)) schedule(static)
    for (int64_t n = 0; n < N; ++n) {
      T* d = pd + n * V;
      if (tg[n] == ignore_index) {
        if (!add) std::fill(d, d + V, T(0));
        continue;
      }
      const T *s = ps + n * V, *t = pt + n * V;
      const double ls = row_lse(s, V), lt = row_lse(t, V);
      for (int64_t v = 0; v < V; ++v) {
        const double g = d_scale * (std::exp(double(s[v]) - ls) - std::exp(double(t[v]) - lt));
        d[v] = add ? T(double(d[v]) + g) : T(g);
      }
    }
  });
}

}  // namespace ds::cpu
