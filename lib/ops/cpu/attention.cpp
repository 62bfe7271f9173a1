// Causal self-attention, one (batch, head) pair per OpenMP iteration. Plain loops with double accumulators:
// this is the reference the fused CUDA kernels are checked against, so clarity wins over speed.
#include <algorithm>
#include <cmath>
#include <limits>
#include <vector>

#include "ops/cpu/cpu_ops.h"

namespace ds::cpu {

namespace {

template <class T> double dot(const T* a, const T* b, int64_t n) {
  double s = 0.0;
  for (int64_t i = 0; i < n; ++i) s += double(a[i]) * double(b[i]);
  return s;
}

// Strides of [B, T, H, D] and [B, H, T] tensors for one (b, h) pair.
struct Layout {
  int64_t B, T, H, Dqk, Dv;
  int64_t row(int64_t b, int64_t t, int64_t h) const { return (b * T + t) * H + h; }  // times D for the offset
  int64_t stat(int64_t b, int64_t h, int64_t t) const { return (b * H + h) * T + t; }
};

Layout layout_of(const Tensor& q, const Tensor& v) { return {q.dim(0), q.dim(1), q.dim(2), q.dim(3), v.dim(3)}; }

}  // namespace

// out_t = sum_{s<=t} softmax_s(scale * q_t·k_s) v_s;  lse_t = logsumexp_s(scale * q_t·k_s).
void attention_forward(const Context& ctx, Tensor out, Tensor lse, Tensor q, Tensor k, Tensor v, double scale) {
  dispatch_float(out.dtype, "attention_forward", [&](auto zero) {
    using T = decltype(zero);
    const Layout L = layout_of(q, v);
    const T *pq = q.ptr<T>(), *pk = k.ptr<T>(), *pv = v.ptr<T>();
    T* po = out.ptr<T>();
    T* pl = lse.empty() ? nullptr : lse.ptr<T>();
    const int64_t pairs = L.B * L.H;
    const int nt = threads_for(ctx, L.B * L.T * L.T * L.H * (L.Dqk + L.Dv) / 2);
#pragma omp parallel for num_threads(nt) schedule(static)
    for (int64_t bh = 0; bh < pairs; ++bh) {
      const int64_t b = bh / L.H, h = bh % L.H;
      std::vector<double> s(size_t(L.T)), o(size_t(L.Dv));
      for (int64_t t = 0; t < L.T; ++t) {
        const T* qt = pq + L.row(b, t, h) * L.Dqk;
        double m = -std::numeric_limits<double>::infinity();
        for (int64_t j = 0; j <= t; ++j) {
          s[size_t(j)] = scale * dot(qt, pk + L.row(b, j, h) * L.Dqk, L.Dqk);
          m = std::max(m, s[size_t(j)]);
        }
        double l = 0.0;
        std::fill(o.begin(), o.end(), 0.0);
        for (int64_t j = 0; j <= t; ++j) {
          const double p = std::exp(s[size_t(j)] - m);
          l += p;
          const T* vj = pv + L.row(b, j, h) * L.Dv;
          for (int64_t d = 0; d < L.Dv; ++d) o[size_t(d)] += p * double(vj[d]);
        }
        T* ot = po + L.row(b, t, h) * L.Dv;
        for (int64_t d = 0; d < L.Dv; ++d) ot[d] = T(o[size_t(d)] / l);
        if (pl) pl[L.stat(b, h, t)] = T(m + std::log(l));
      }
    }
  });
}

// With P recomputed from lse and D_t = dO_t·O_t:  dS = P * (dO·V^T - D),  dQ = scale dS·K,  dK = scale dS^T·Q,
// dV = P^T·dO. dK and dV accumulate over query rows in a per-pair double buffer, then overwrite.
void attention_backward(const Context& ctx, Tensor d_q, Tensor d_k, Tensor d_v, Tensor d_out, Tensor out, Tensor lse,
                        Tensor q, Tensor k, Tensor v, double scale) {
  dispatch_float(d_out.dtype, "attention_backward", [&](auto zero) {
    using T = decltype(zero);
    const Layout L = layout_of(q, v);
    const T *pq = q.ptr<T>(), *pk = k.ptr<T>(), *pv = v.ptr<T>();
    const T *pdo = d_out.ptr<T>(), *po = out.ptr<T>(), *pl = lse.ptr<T>();
    T* pdq = d_q.empty() ? nullptr : d_q.ptr<T>();
    T* pdk = d_k.empty() ? nullptr : d_k.ptr<T>();
    T* pdv = d_v.empty() ? nullptr : d_v.ptr<T>();
    const int64_t pairs = L.B * L.H;
    const int nt = threads_for(ctx, L.B * L.T * L.T * L.H * (L.Dqk + L.Dv));
#pragma omp parallel for num_threads(nt) schedule(static)
    for (int64_t bh = 0; bh < pairs; ++bh) {
      const int64_t b = bh / L.H, h = bh % L.H;
      std::vector<double> dk(size_t(L.T * L.Dqk), 0.0), dv(size_t(L.T * L.Dv), 0.0), dq(size_t(L.Dqk));
      for (int64_t t = 0; t < L.T; ++t) {
        const T* qt = pq + L.row(b, t, h) * L.Dqk;
        const T* dO_t = pdo + L.row(b, t, h) * L.Dv;
        const double Dt = dot(dO_t, po + L.row(b, t, h) * L.Dv, L.Dv);
        const double lse_t = double(pl[L.stat(b, h, t)]);
        std::fill(dq.begin(), dq.end(), 0.0);
        for (int64_t j = 0; j <= t; ++j) {
          const T* kj = pk + L.row(b, j, h) * L.Dqk;
          const T* vj = pv + L.row(b, j, h) * L.Dv;
          const double p = std::exp(scale * dot(qt, kj, L.Dqk) - lse_t);
          const double ds = p * (dot(dO_t, vj, L.Dv) - Dt);
          double* dkj = dk.data() + j * L.Dqk;
          double* dvj = dv.data() + j * L.Dv;
          for (int64_t d = 0; d < L.Dqk; ++d) {
            dq[size_t(d)] += ds * double(kj[d]);
            dkj[d] += scale * ds * double(qt[d]);
          }
          for (int64_t d = 0; d < L.Dv; ++d) dvj[d] += p * double(dO_t[d]);
        }
        if (pdq) {
          T* dqt = pdq + L.row(b, t, h) * L.Dqk;
          for (int64_t d = 0; d < L.Dqk; ++d) dqt[d] = T(scale * dq[size_t(d)]);
        }
      }
      for (int64_t t = 0; t < L.T; ++t) {
        if (pdk)
          for (int64_t d = 0; d < L.Dqk; ++d) pdk[L.row(b, t, h) * L.Dqk + d] = T(dk[size_t(t * L.Dqk + d)]);
        if (pdv)
          for (int64_t d = 0; d < L.Dv; ++d) pdv[L.row(b, t, h) * L.Dv + d] = T(dv[size_t(t * L.Dv + d)]);
      }
    }
  });
}

}  // namespace ds::cpu
