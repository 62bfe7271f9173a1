// MoE gate (scores, group-limited top-k, weights), its backward, the sequence-wise balance loss and the
// auxiliary-loss-free bias update. Semantics follow DeepSeek-V3's official inference/model.py (MODEL.md §3).
#include <algorithm>
#include <cmath>
#include <limits>
#include <numeric>
#include <vector>

#include "ops/cpu/cpu_ops.h"

namespace ds::cpu {

namespace {

// "a before b" for selection: higher value first, ties to the lower index (deterministic on every device).
template <class T> struct Before {
  const T* v;
  bool operator()(int a, int b) const { return v[a] > v[b] || (v[a] == v[b] && a < b); }
};

template <class T> struct GateScratch {
  std::vector<T> sel, gscore;
  std::vector<int> order, gorder;
  GateScratch(int64_t E, int64_t G) : sel(size_t(E)), gscore(size_t(G)), order(size_t(E)), gorder(size_t(G)) {}
};

template <class T>
void gate_row(const T* logit, const T* bias, T* score, int32_t* idx, T* w, int64_t E, int64_t K,
              const GateOptions& opt, GateScratch<T>& g) {
  // 1. Scores from the logits (in double, stored in T).
  if (opt.score_func == ScoreFunc::sigmoid) {
    for (int64_t e = 0; e < E; ++e) score[e] = T(1.0 / (1.0 + std::exp(-double(logit[e]))));
  } else {
    double m = -std::numeric_limits<double>::infinity(), z = 0.0;
    for (int64_t e = 0; e < E; ++e) m = std::max(m, double(logit[e]));
    for (int64_t e = 0; e < E; ++e) z += std::exp(double(logit[e]) - m);
    for (int64_t e = 0; e < E; ++e) score[e] = T(std::exp(double(logit[e]) - m) / z);
  }
  // 2. Selection scores s' = s + bias (bias only ever shifts the choice, never the weights).
  for (int64_t e = 0; e < E; ++e) g.sel[size_t(e)] = score[e] + (bias ? bias[e] : T(0));
  // 3. Group limiting: keep the topk_group best groups, mask every expert of the others to -inf.
  const int64_t G = opt.n_group;
  if (opt.topk_method != TopkMethod::greedy && G > 1) {
    const int64_t gsz = E / G;
    for (int64_t gi = 0; gi < G; ++gi) {
      const T* s = g.sel.data() + gi * gsz;
      if (opt.topk_method == TopkMethod::noaux_tc) {  // sum of the top-2 s' of the group
        int64_t a = 0;
        for (int64_t j = 1; j < gsz; ++j)
          if (s[j] > s[a]) a = j;
        T sum = s[a];
        if (gsz > 1) {
          int64_t b = a == 0 ? 1 : 0;
          for (int64_t j = 0; j < gsz; ++j)
            if (j != a && s[j] > s[b]) b = j;
          sum += s[b];
        }
        g.gscore[size_t(gi)] = sum;
      } else {  // group_limited_greedy: the max score of the group
        g.gscore[size_t(gi)] = *std::max_element(s, s + gsz);
      }
    }
    std::iota(g.gorder.begin(), g.gorder.end(), 0);
    std::sort(g.gorder.begin(), g.gorder.end(), Before<T>{g.gscore.data()});
    for (int64_t r = opt.topk_group; r < G; ++r) {
      T* s = g.sel.data() + int64_t(g.gorder[size_t(r)]) * gsz;
      std::fill(s, s + gsz, -std::numeric_limits<T>::infinity());
    }
  }
  // 4. top_k over the masked s', in descending order.
  std::iota(g.order.begin(), g.order.end(), 0);
  std::partial_sort(g.order.begin(), g.order.begin() + K, g.order.end(), Before<T>{g.sel.data()});
  // 5. Weights from the unbiased scores.
  double sum = 0.0;
  for (int64_t k = 0; k < K; ++k) {
    idx[k] = g.order[size_t(k)];
    sum += double(score[idx[k]]);
  }
  const double denom = opt.norm_topk_prob ? sum + 1e-20 : 1.0;
  for (int64_t k = 0; k < K; ++k) w[k] = T(double(score[idx[k]]) / denom * opt.routed_scaling_factor);
}

void check_expert_ids(const int32_t* idx, int64_t n, int64_t E, const char* op) {
  for (int64_t i = 0; i < n; ++i)
    DS_CHECK(idx[i] >= 0 && idx[i] < E, std::string(op) + ": expert id " + std::to_string(idx[i]) +
                                            " outside [0, " + std::to_string(E) + ")");
}

}  // namespace

void moe_gate_forward(const Context& ctx, Tensor topk_idx, Tensor topk_w, Tensor scores, Tensor logits, Tensor bias,
                      const GateOptions& opt) {
  dispatch_float(logits.dtype, "moe_gate_forward", [&](auto zero) {
    using T = decltype(zero);
    const int64_t N = logits.rows(), E = logits.cols(), K = opt.top_k;
    const T* pl = logits.ptr<T>();
    const T* pb = bias.empty() ? nullptr : bias.ptr<T>();
    T* ps = scores.ptr<T>();
    T* pw = topk_w.ptr<T>();
    int32_t* pi = topk_idx.ptr<int32_t>();
#pragma omp parallel num_threads(threads_for(ctx, N * E))
    {
      GateScratch<T> scratch(E, std::max(opt.n_group, 1));
#pragma omp for schedule(static)
      for (int64_t n = 0; n < N; ++n)
        gate_row(pl + n * E, pb, ps + n * E, pi + n * K, pw + n * K, E, K, opt, scratch);
    }
  });
}

// Selection is constant. Through w_k = c s_k / D with D = sum_k s_k + 1e-20:
// ds_j = c (dw_j / D - sum_k dw_k s_k / D^2) for each selected j; then ds += d_scores_extra; then through
// the sigmoid (s (1 - s)) or the softmax Jacobian.
void moe_gate_backward(const Context& ctx, Tensor d_logits, Tensor d_topk_w, Tensor d_scores_extra, Tensor scores,
                       Tensor topk_idx, const GateOptions& opt) {
  dispatch_float(scores.dtype, "moe_gate_backward", [&](auto zero) {
    using T = decltype(zero);
    const int64_t N = scores.rows(), E = scores.cols(), K = topk_idx.cols();
    const T* ps = scores.ptr<T>();
    const T* pdw = d_topk_w.ptr<T>();
    const T* pex = d_scores_extra.empty() ? nullptr : d_scores_extra.ptr<T>();
    const int32_t* pi = topk_idx.ptr<int32_t>();
    check_expert_ids(pi, N * K, E, "moe_gate_backward");
    T* pdl = d_logits.ptr<T>();
    const double c = opt.routed_scaling_factor;
#pragma omp parallel num_threads(threads_for(ctx, N * E))
    {
      std::vector<double> ds(static_cast<size_t>(E));
#pragma omp for schedule(static)
      for (int64_t n = 0; n < N; ++n) {
        const T* s = ps + n * E;
        const T* dw = pdw + n * K;
        const int32_t* idx = pi + n * K;
        for (int64_t e = 0; e < E; ++e) ds[size_t(e)] = pex ? double(pex[n * E + e]) : 0.0;
        if (opt.norm_topk_prob) {
          double sum = 0.0, a = 0.0;
          for (int64_t k = 0; k < K; ++k) {
            sum += double(s[idx[k]]);
            a += double(dw[k]) * double(s[idx[k]]);
          }
          const double D = sum + 1e-20;
          for (int64_t k = 0; k < K; ++k) ds[size_t(idx[k])] += c * (double(dw[k]) / D - a / (D * D));
        } else {
          for (int64_t k = 0; k < K; ++k) ds[size_t(idx[k])] += c * double(dw[k]);
        }
        T* dl = pdl + n * E;
        if (opt.score_func == ScoreFunc::sigmoid) {
          for (int64_t e = 0; e < E; ++e) dl[e] = T(ds[size_t(e)] * double(s[e]) * (1.0 - double(s[e])));
        } else {
          double dot = 0.0;
          for (int64_t e = 0; e < E; ++e) dot += ds[size_t(e)] * double(s[e]);
          for (int64_t e = 0; e < E; ++e) dl[e] = T(double(s[e]) * (ds[size_t(e)] - dot));
        }
      }
    }
  });
}

namespace {

// Per sequence of T rows: f_i = E/(K T) * count_i and Z_t = sum_j s_tj. Returns sum_i f_i P_i.
template <class T>
double balance_seq(const T* s, const int32_t* idx, int64_t T_, int64_t E, int64_t K, std::vector<double>& f) {
  std::fill(f.begin(), f.end(), 0.0);
  for (int64_t i = 0; i < T_ * K; ++i) f[size_t(idx[i])] += 1.0;
  for (double& x : f) x *= double(E) / double(K * T_);
  double loss = 0.0;
  for (int64_t t = 0; t < T_; ++t) {
    double z = 0.0, fs = 0.0;
    for (int64_t e = 0; e < E; ++e) {
      z += double(s[t * E + e]);
      fs += f[size_t(e)] * double(s[t * E + e]);
    }
    loss += fs / z;
  }
  return loss / double(T_);
}

}  // namespace

double moe_balance_loss_forward(const Context& ctx, Tensor scores, Tensor topk_idx, int64_t seq_len, double alpha) {
  double result = 0.0;
  dispatch_float(scores.dtype, "moe_balance_loss_forward", [&](auto zero) {
    using T = decltype(zero);
    const int64_t N = scores.rows(), E = scores.cols(), K = topk_idx.cols(), S = N / seq_len;
    const T* ps = scores.ptr<T>();
    const int32_t* pi = topk_idx.ptr<int32_t>();
    check_expert_ids(pi, N * K, E, "moe_balance_loss_forward");
    std::vector<double> per_seq(static_cast<size_t>(S));
#pragma omp parallel num_threads(threads_for(ctx, N * E))
    {
      std::vector<double> f(static_cast<size_t>(E));
#pragma omp for schedule(static)
      for (int64_t q = 0; q < S; ++q)
        per_seq[size_t(q)] = balance_seq(ps + q * seq_len * E, pi + q * seq_len * K, seq_len, E, K, f);
    }
    double total = 0.0;
    for (double x : per_seq) total += x;  // in sequence order: independent of the thread count
    result = S ? alpha * total / double(S) : 0.0;
  });
  return result;
}

// dL/ds_tj = alpha / (S T) * (f_j / Z_t - sum_i f_i s_ti / Z_t^2), per sequence.
void moe_balance_loss_backward(const Context& ctx, Tensor d_scores, double d_loss, Tensor scores, Tensor topk_idx,
                               int64_t seq_len, double alpha) {
  dispatch_float(scores.dtype, "moe_balance_loss_backward", [&](auto zero) {
    using T = decltype(zero);
    const int64_t N = scores.rows(), E = scores.cols(), K = topk_idx.cols(), S = N / seq_len;
    const T* ps = scores.ptr<T>();
    const int32_t* pi = topk_idx.ptr<int32_t>();
    check_expert_ids(pi, N * K, E, "moe_balance_loss_backward");
    T* pd = d_scores.ptr<T>();
    const double coef = S ? d_loss * alpha / (double(S) * double(seq_len)) : 0.0;
#pragma omp parallel num_threads(threads_for(ctx, N * E))
    {
      std::vector<double> f(static_cast<size_t>(E));
#pragma omp for schedule(static)
      for (int64_t q = 0; q < S; ++q) {
        const T* s = ps + q * seq_len * E;
        balance_seq(s, pi + q * seq_len * K, seq_len, E, K, f);
        for (int64_t t = 0; t < seq_len; ++t) {
          double z = 0.0, fs = 0.0;
          for (int64_t e = 0; e < E; ++e) {
            z += double(s[t * E + e]);
            fs += f[size_t(e)] * double(s[t * E + e]);
          }
          T* d = pd + (q * seq_len + t) * E;
          for (int64_t e = 0; e < E; ++e) d[e] += T(coef * (f[size_t(e)] / z - fs / (z * z)));
        }
      }
    }
  });
}

// bias[e] += gamma * sign(mean(load) - load[e]): overloaded experts become less attractive, underloaded more.
void moe_bias_update(const Context&, Tensor bias, Tensor load, double gamma) {
  dispatch_float(bias.dtype, "moe_bias_update", [&](auto zero) {
    using T = decltype(zero);
    const int64_t E = bias.numel();
    T* pb = bias.ptr<T>();
    const int64_t* pl = load.ptr<int64_t>();
    double mean = 0.0;
    for (int64_t e = 0; e < E; ++e) mean += double(pl[e]);
    mean /= double(E);
    for (int64_t e = 0; e < E; ++e) {
      const double diff = mean - double(pl[e]);
      pb[e] += T(gamma * double((diff > 0) - (diff < 0)));
    }
  });
}

void moe_bias_update_many(const Context& ctx, const std::vector<Tensor>& biases, const std::vector<Tensor>& loads,
                          double gamma, Tensor verdict) {
  if (!verdict.empty() && verdict.ptr<double>()[1] != 0.0) return;  // a skipped step
  for (size_t i = 0; i < biases.size(); ++i) cpu::moe_bias_update(ctx, biases[i], loads[i], gamma);
}

}  // namespace ds::cpu
