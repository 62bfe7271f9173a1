#include "infer/sampler.h"

#include <algorithm>
#include <cmath>
#include <numeric>

namespace ds {

namespace {

template <class T> std::vector<double> distribution(const T* logits, int64_t V, const SamplingParams& sp) {
  std::vector<double> p(static_cast<size_t>(V), 0.0);
  if (sp.temperature <= 0) {
    int64_t best = 0;
    for (int64_t i = 1; i < V; ++i)
      if (logits[i] > logits[best]) best = i;
    p[size_t(best)] = 1.0;
    return p;
  }
  double mx = -INFINITY;
  for (int64_t i = 0; i < V; ++i) mx = std::max(mx, double(logits[i]) / sp.temperature);
  double z = 0;
  for (int64_t i = 0; i < V; ++i) z += (p[size_t(i)] = std::exp(double(logits[i]) / sp.temperature - mx));
  for (double& x : p) x /= z;
  const bool top_k = sp.top_k > 0 && sp.top_k < V;
  if (!top_k && sp.top_p >= 1.0) return p;
  // Rank by probability (ties: lower id first), keep the top-k, then the smallest prefix with mass >= top_p.
  std::vector<int32_t> order(static_cast<size_t>(V));
  std::iota(order.begin(), order.end(), 0);
  std::stable_sort(order.begin(), order.end(), [&](int32_t a, int32_t b) { return p[size_t(a)] > p[size_t(b)]; });
  size_t keep = top_k ? size_t(sp.top_k) : size_t(V);
  if (sp.top_p < 1.0) {
    double mass = 0;
    size_t n = 0;
    while (n < keep && (n == 0 || mass < sp.top_p)) mass += p[size_t(order[n++])];
    keep = n;
  }
  std::vector<double> q(size_t(V), 0.0);
  double kept = 0;
  for (size_t i = 0; i < keep; ++i) kept += (q[size_t(order[i])] = p[size_t(order[i])]);
  for (double& x : q) x /= kept;
  return q;
}

template <class T> double logprob(const T* logits, int64_t V, int32_t token, double temperature) {
  const double t = temperature > 0 ? temperature : 1.0;
  double mx = -INFINITY;
  for (int64_t i = 0; i < V; ++i) mx = std::max(mx, double(logits[i]) / t);
  double z = 0;
  for (int64_t i = 0; i < V; ++i) z += std::exp(double(logits[i]) / t - mx);
  return double(logits[token]) / t - mx - std::log(z);
}

}  // namespace

std::vector<double> sampling_distribution(const float* l, int64_t V, const SamplingParams& sp) {
  return distribution(l, V, sp);
}
std::vector<double> sampling_distribution(const double* l, int64_t V, const SamplingParams& sp) {
  return distribution(l, V, sp);
}

int32_t draw_token(const std::vector<double>& probs, double u) {
  double c = 0;
  int32_t last = 0;
  for (size_t i = 0; i < probs.size(); ++i) {
    if (probs[i] <= 0) continue;
    last = int32_t(i);
    c += probs[i];
    if (u < c) return int32_t(i);
  }
  return last;  // rounding: u beyond the summed mass
}

double token_logprob(const float* l, int64_t V, int32_t token, double temperature) {
  return logprob(l, V, token, temperature);
}
double token_logprob(const double* l, int64_t V, int32_t token, double temperature) {
  return logprob(l, V, token, temperature);
}

}  // namespace ds
