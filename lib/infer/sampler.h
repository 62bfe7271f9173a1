#pragma once
// Token sampling: temperature, top-k, top-p, from a counter-based RNG addressed by (seed, stream, draw), so a
// sequence's tokens never depend on what else is in the batch or on the thread count.
#include <cstdint>
#include <vector>

namespace ds {

struct SamplingParams {
  double temperature = 1.0;  // 0 = greedy
  double top_p = 1.0;
  int64_t top_k = 0;         // 0 = off
  int64_t max_new_tokens = 256;
  uint64_t seed = 0;
};

// The distribution sampled from: softmax(logits / T) restricted to the top-k and then the smallest top-p
// nucleus, renormalised (one-hot on the argmax, lowest id on ties, when greedy).
std::vector<double> sampling_distribution(const float* logits, int64_t V, const SamplingParams& sp);
std::vector<double> sampling_distribution(const double* logits, int64_t V, const SamplingParams& sp);
// Inverse-CDF draw with u in [0, 1).
int32_t draw_token(const std::vector<double>& probs, double u);
// log softmax(logits / T)[token] with T = temperature (T = 1 when greedy): the behaviour log-prob GRPO needs,
// before top-k/top-p truncation.
double token_logprob(const float* logits, int64_t V, int32_t token, double temperature);
double token_logprob(const double* logits, int64_t V, int32_t token, double temperature);

}  // namespace ds
