#pragma once
// GRPO (RL.md §1), pure: group-relative advantages, the DAPO sample filters, and the clipped policy loss with
// its gradient per token. No model and no I/O: the caller gathers log-probs per completion token, calls
// grpo_loss, and hands d_logp back to the model (Model::backward_policy).
//
// Advantages (§1.2). Rewards r_i of the samples of one group g (one prompt):
//   group  A_i = (r_i - mean_g) / (std_g + eps)      std: unbiased (n - 1), as TRL and verl
//   batch  A_i = (r_i - mean_g) / (std_batch + eps)  std over every sample of the batch ("Lite PPO")
//   none   A_i =  r_i - mean_g                       Dr. GRPO (§1.9)
// A group whose rewards are all equal (this includes a group of one) gets A = 0 exactly: no signal, and no
// rounding residue blown up by 1/eps.
//
// Per-token loss (§1.3, §1.4), to be minimised; Δ_old = logp - logp_old clamped to [-20, 20], ρ = exp(Δ_old):
//   pg = max(-A·ρ', -A·clip(ρ, 1 - eps_low, 1 + eps_high))   ρ' = min(ρ, delta) when delta > 0 (TRL two-sided)
//   dual clip (c > 1, A < 0 only): pg = min(pg, -A·c)          (verl clip_ratio_c)
//   kl, Δ = logp - logp_ref:  k1 = Δ;  k2 = Δ²/2;  k3 = exp(-Δ) + Δ - 1 (DeepSeekMath / R1 eq. 2)
//       k3 as verl: -Δ clamped to [-20, 20] and the value to [-10, 10]
//   ℓ = pg + beta·kl
// The gradient of a clipped or clamped term is 0 (so a token clipped by the surrogate only feels the KL).
//
// Aggregation (§1.5), M = mask, |o_i| = Σ_t M_it, G' = sequences with at least one counted token:
//   seq-mean-token-mean       (1/G')·Σ_i (1/|o_i|)·Σ_t M·ℓ        original GRPO (DeepSeekMath, R1)
//   token-mean                Σ_it M·ℓ / Σ_it M                  DAPO, verl default, TRL "dapo"
//   seq-mean-token-sum        (1/G')·Σ_it M·ℓ
//   seq-mean-token-sum-norm   Σ_it M·ℓ / (S·C), S = sequences, C = norm_length (the max completion length):
//                             Dr. GRPO as oat and TRL "dr_grpo" (verl's form without the 1/S)
// The token and sequence counts may come from a whole mini-batch (LossNormaliser) so that micro-batches of
// one optimizer step sum to exactly the mini-batch loss and gradient.
#include <cstdint>
#include <span>
#include <string>
#include <vector>

namespace ds::rl {

// ---- advantages ----------------------------------------------------------------------------------------
enum class AdvantageScale { group, batch, none };
AdvantageScale advantage_scale_parse(const std::string& s);  // group | batch | none; usage error otherwise
const char* advantage_scale_name(AdvantageScale s);

struct AdvantageOptions {
  AdvantageScale scale = AdvantageScale::group;
  double eps = 1e-6;  // verl 1e-6; TRL 1e-4; oat 1e-8
};

struct GroupStats {
  int64_t size = 0;
  double mean = 0, std = 0;  // std unbiased; 0 for a group of one
  bool zero_std = false;     // every reward equal (no learning signal)
};

struct Advantages {
  std::vector<double> advantage;  // per sample
  std::vector<GroupStats> groups;  // per group index
  double batch_std = 0;            // unbiased std of every reward (the "batch" scale)
  int64_t zero_std_groups = 0;
};

// group[i] in [0, n_groups) is sample i's group. Groups without samples get size 0.
Advantages group_advantages(const std::vector<double>& rewards, const std::vector<int64_t>& group,
                            const AdvantageOptions& opt);

// ---- DAPO sample filters and shaping (§1.8) -------------------------------------------------------------
struct SampleFilterOptions {
  bool drop_zero_std_groups = false;  // dynamic sampling's filter: groups with 0 < #correct < G only
  bool mask_truncated = false;        // overlong filtering: truncated samples leave the loss
};
struct SampleFilterCounts {
  int64_t dropped_zero_std = 0, masked_truncated = 0;
};
// 1 where sample i enters the loss. A masked sample still counts in its group's statistics.
std::vector<uint8_t> loss_samples(const Advantages& adv, const std::vector<int64_t>& group,
                                  const std::vector<uint8_t>& truncated, const SampleFilterOptions& opt,
                                  SampleFilterCounts* counts = nullptr);

// DAPO's soft overlong punishment (eq. 13, rl/penalty.h) times `factor`, added to each reward; lengths in
// completion tokens. max_len <= 0 leaves the rewards unchanged.
void add_overlong_penalty(std::vector<double>& rewards, const std::vector<int64_t>& lengths, int64_t max_len,
                          int64_t buffer, double factor = 1.0);

// ---- the loss -------------------------------------------------------------------------------------------
enum class LossAgg { seq_mean_token_mean, token_mean, seq_mean_token_sum, seq_mean_token_sum_norm };
// verl names, plus the aliases grpo (seq-mean-token-mean), dapo (token-mean), dr-grpo (seq-mean-token-sum-norm)
LossAgg loss_agg_parse(const std::string& s);
const char* loss_agg_name(LossAgg a);

enum class KlEstimator { k1, k2, k3 };
KlEstimator kl_estimator_parse(const std::string& s);  // k1|kl, k2|mse, k3|low_var_kl
const char* kl_estimator_name(KlEstimator k);

struct GrpoLossOptions {
  double eps_low = 0.2;    // clip(ρ, 1 - eps_low, 1 + eps_high)
  double eps_high = 0.2;   // DAPO clip-higher: 0.28
  double dual_clip = 0.0;  // c > 1 caps the loss of A < 0 tokens at -A·c (verl 3.0); 0 = off
  double delta = 0.0;      // > 0: ρ capped at delta in the unclipped branch (TRL, INTELLECT-2); 0 = off
  double beta = 0.0;       // KL weight (R1 0.001, DeepSeekMath 0.04, DAPO / Dr. GRPO / TRL 0)
  KlEstimator kl = KlEstimator::k3;
  LossAgg agg = LossAgg::token_mean;
  double norm_length = 0;  // C of seq-mean-token-sum-norm (required > 0 there)
  double log_ratio_clamp = 20.0;
};

// S sequences (completions), N tokens in all.
struct GrpoTokens {
  std::span<const int64_t> offsets;    // [S+1], offsets[0] = 0: sequence i holds tokens [offsets[i], offsets[i+1])
  std::span<const double> advantages;  // [S]
  std::span<const double> logp;        // [N] current policy, log softmax(logits / T)[token]
  std::span<const double> logp_old;    // [N] the policy that sampled (or recomputed before the update)
  std::span<const double> logp_ref;    // [N] reference policy; may be empty when beta = 0 (KL metric 0)
  std::span<const uint8_t> mask;       // [N] 1 = counted; empty = all counted
};

// Denominators of the aggregation; 0 = this call's own count.
struct LossNormaliser {
  double tokens = 0;  // Σ M (token-mean)
  double seqs = 0;    // G' (seq-mean modes) or S (seq-mean-token-sum-norm)
};
// The counts of `t` for `agg` (add them over the micro-batches of one optimizer step).
LossNormaliser loss_normaliser(const GrpoTokens& t, LossAgg agg);

// Sums over counted tokens (add them up over micro-batches; the accessors give means).
struct GrpoMetrics {
  int64_t tokens = 0;
  int64_t clipped_low = 0;   // A < 0 and ρ < 1 - eps_low (surrogate clipped, no gradient)
  int64_t clipped_high = 0;  // A > 0 and ρ > 1 + eps_high
  int64_t clipped_dual = 0;  // A < 0 and the dual clip active (ρ > c)
  double ratio = 0, pg_loss = 0, kl = 0, neg_log_ratio = 0;
  void add(const GrpoMetrics& o);
  double frac(int64_t n) const { return tokens ? double(n) / double(tokens) : 0.0; }
  double mean(double s) const { return tokens ? s / double(tokens) : 0.0; }
};

struct GrpoLossResult {
  double loss = 0;              // Σ weight·ℓ (this call's share of the normalised loss)
  std::vector<double> d_logp;   // [N] dloss/dlogp, 0 where not counted
  GrpoMetrics metrics;
};

GrpoLossResult grpo_loss(const GrpoTokens& t, const GrpoLossOptions& opt, const LossNormaliser& norm = {});

// One token's policy term and KL term (whatever beta) with their derivatives in logp (exposed for tests).
struct TokenTerms {
  double pg = 0, d_pg = 0;
  double kl = 0, d_kl = 0;
  double ratio = 1;
  bool clipped_low = false, clipped_high = false, clipped_dual = false;
};
TokenTerms token_terms(double logp, double logp_old, double logp_ref, double advantage, const GrpoLossOptions& opt);
// Value of the KL estimator at Δ = logp - logp_ref and its derivative in Δ.
double kl_estimate(double delta, KlEstimator k, double* d_delta);

}  // namespace ds::rl
