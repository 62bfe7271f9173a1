#include "rl/grpo.h"

#include <algorithm>
#include <cmath>

#include "core/error.h"
#include "rl/penalty.h"

namespace ds::rl {

AdvantageScale advantage_scale_parse(const std::string& s) {
  if (s == "group") return AdvantageScale::group;
  if (s == "batch") return AdvantageScale::batch;
  if (s == "none") return AdvantageScale::none;
  throw_usage("unknown advantage scale '" + s + "' (group, batch or none)");
}

const char* advantage_scale_name(AdvantageScale s) {
  switch (s) {
    case AdvantageScale::group: return "group";
    case AdvantageScale::batch: return "batch";
    case AdvantageScale::none: return "none";
  }
  return "?";
}

LossAgg loss_agg_parse(const std::string& s) {
  if (s == "seq-mean-token-mean" || s == "grpo") return LossAgg::seq_mean_token_mean;
  if (s == "token-mean" || s == "dapo") return LossAgg::token_mean;
  if (s == "seq-mean-token-sum") return LossAgg::seq_mean_token_sum;
  if (s == "seq-mean-token-sum-norm" || s == "dr-grpo") return LossAgg::seq_mean_token_sum_norm;
  throw_usage("unknown loss aggregation '" + s +
              "' (seq-mean-token-mean|grpo, token-mean|dapo, seq-mean-token-sum, seq-mean-token-sum-norm|dr-grpo)");
}

const char* loss_agg_name(LossAgg a) {
  switch (a) {
    case LossAgg::seq_mean_token_mean: return "seq-mean-token-mean";
    case LossAgg::token_mean: return "token-mean";
    case LossAgg::seq_mean_token_sum: return "seq-mean-token-sum";
    case LossAgg::seq_mean_token_sum_norm: return "seq-mean-token-sum-norm";
  }
  return "?";
}

KlEstimator kl_estimator_parse(const std::string& s) {
  if (s == "k1" || s == "kl") return KlEstimator::k1;
  if (s == "k2" || s == "mse") return KlEstimator::k2;
  if (s == "k3" || s == "low_var_kl") return KlEstimator::k3;
  throw_usage("unknown KL estimator '" + s + "' (k1|kl, k2|mse, k3|low_var_kl)");
}

const char* kl_estimator_name(KlEstimator k) {
  switch (k) {
    case KlEstimator::k1: return "k1";
    case KlEstimator::k2: return "k2";
    case KlEstimator::k3: return "k3";
  }
  return "?";
}

// ---- advantages -----------------------------------------------------------------------------------------

namespace {
// Unbiased std from the sum of squared deviations (0 for fewer than two values).
double unbiased_std(double sum_sq_dev, int64_t n) {
  return n > 1 ? std::sqrt(sum_sq_dev / double(n - 1)) : 0.0;
}
}  // namespace

Advantages group_advantages(const std::vector<double>& rewards, const std::vector<int64_t>& group,
                            const AdvantageOptions& opt) {
  DS_CHECK(rewards.size() == group.size(), "one group index per reward");
  Advantages a;
  int64_t n_groups = 0;
  for (int64_t g : group) {
    DS_CHECK(g >= 0, "group indices are non-negative");
    n_groups = std::max(n_groups, g + 1);
  }
  a.groups.assign(size_t(n_groups), GroupStats{});
  std::vector<double> sum(size_t(n_groups), 0.0), first(size_t(n_groups), 0.0);
  std::vector<uint8_t> all_equal(size_t(n_groups), 1);
  for (size_t i = 0; i < rewards.size(); ++i) {
    GroupStats& s = a.groups[size_t(group[i])];
    if (s.size == 0) first[size_t(group[i])] = rewards[i];
    else if (rewards[i] != first[size_t(group[i])]) all_equal[size_t(group[i])] = 0;
    ++s.size;
    sum[size_t(group[i])] += rewards[i];
  }
  std::vector<double> ssd(size_t(n_groups), 0.0);
  for (size_t g = 0; g < a.groups.size(); ++g)
    if (a.groups[g].size) a.groups[g].mean = sum[g] / double(a.groups[g].size);
  double total = 0;
  for (size_t i = 0; i < rewards.size(); ++i) {
    const double d = rewards[i] - a.groups[size_t(group[i])].mean;
    ssd[size_t(group[i])] += d * d;
    total += rewards[i];
  }
  for (size_t g = 0; g < a.groups.size(); ++g) {
    GroupStats& s = a.groups[g];
    s.std = unbiased_std(ssd[g], s.size);
    s.zero_std = s.size > 0 && all_equal[g];
    if (s.zero_std) {
      s.std = 0;
      ++a.zero_std_groups;
    }
  }
  if (!rewards.empty()) {
    const double mean = total / double(rewards.size());
    double bssd = 0;
    for (double r : rewards) bssd += (r - mean) * (r - mean);
    a.batch_std = unbiased_std(bssd, int64_t(rewards.size()));
  }
  a.advantage.assign(rewards.size(), 0.0);
  for (size_t i = 0; i < rewards.size(); ++i) {
    const GroupStats& s = a.groups[size_t(group[i])];
    if (s.zero_std) continue;  // exactly 0
    const double centred = rewards[i] - s.mean;
    switch (opt.scale) {
      case AdvantageScale::group: a.advantage[i] = centred / (s.std + opt.eps); break;
      case AdvantageScale::batch: a.advantage[i] = centred / (a.batch_std + opt.eps); break;
      case AdvantageScale::none: a.advantage[i] = centred; break;
    }
  }
  return a;
}

std::vector<uint8_t> loss_samples(const Advantages& adv, const std::vector<int64_t>& group,
                                  const std::vector<uint8_t>& truncated, const SampleFilterOptions& opt,
                                  SampleFilterCounts* counts) {
  DS_CHECK(truncated.empty() || truncated.size() == group.size(), "one truncation flag per sample");
  std::vector<uint8_t> keep(group.size(), 1);
  SampleFilterCounts c;
  for (size_t i = 0; i < group.size(); ++i) {
    if (opt.drop_zero_std_groups && adv.groups.at(size_t(group[i])).zero_std) {
      keep[i] = 0;
      ++c.dropped_zero_std;
    } else if (opt.mask_truncated && !truncated.empty() && truncated[i]) {
      keep[i] = 0;
      ++c.masked_truncated;
    }
  }
  if (counts) *counts = c;
  return keep;
}

void add_overlong_penalty(std::vector<double>& rewards, const std::vector<int64_t>& lengths, int64_t max_len,
                          int64_t buffer, double factor) {
  DS_CHECK(rewards.size() == lengths.size(), "one length per reward");
  if (max_len <= 0) return;
  for (size_t i = 0; i < rewards.size(); ++i) rewards[i] += factor * overlong_penalty(lengths[i], max_len, buffer);
}

// ---- the loss -------------------------------------------------------------------------------------------

double kl_estimate(double delta, KlEstimator k, double* d_delta) {
  switch (k) {
    case KlEstimator::k1:
      *d_delta = 1.0;
      return delta;
    case KlEstimator::k2:
      *d_delta = delta;
      return 0.5 * delta * delta;
    case KlEstimator::k3: {
      // verl low_var_kl: x = logp_ref - logp clamped to [-20, 20]; kl = e^x - x - 1 clamped to [-10, 10]
      const double x = -delta;
      const bool x_clamped = x < -20.0 || x > 20.0;
      const double xc = std::clamp(x, -20.0, 20.0);
      const double v = std::exp(xc) - xc - 1.0;
      if (x_clamped || v > 10.0 || v < -10.0) {
        *d_delta = 0.0;
        return std::clamp(v, -10.0, 10.0);
      }
      *d_delta = 1.0 - std::exp(xc);  // d/dΔ of e^{-Δ} + Δ - 1
      return v;
    }
  }
  *d_delta = 0;
  return 0;
}

TokenTerms token_terms(double logp, double logp_old, double logp_ref, double A, const GrpoLossOptions& o) {
  TokenTerms r;
  const double lr = logp - logp_old;
  const bool lr_clamped = lr < -o.log_ratio_clamp || lr > o.log_ratio_clamp;
  const double rho = std::exp(std::clamp(lr, -o.log_ratio_clamp, o.log_ratio_clamp));
  const double d_rho = lr_clamped ? 0.0 : rho;  // dρ/dlogp
  r.ratio = rho;
  // unclipped branch, optionally capped at delta
  double u = rho, d_u = d_rho;
  if (o.delta > 0 && rho > o.delta) {
    u = o.delta;
    d_u = 0;
  }
  const double clipped = std::clamp(rho, 1.0 - o.eps_low, 1.0 + o.eps_high);
  const double l1 = -A * u, l2 = -A * clipped;
  if (l1 >= l2) {
    r.pg = l1;
    r.d_pg = -A * d_u;
  } else {  // the clipped branch is larger: ρ is outside the trust region on the side A pushes it
    r.pg = l2;
    r.d_pg = 0;
    r.clipped_low = A < 0 && rho < 1.0 - o.eps_low;
    r.clipped_high = A > 0 && rho > 1.0 + o.eps_high;
  }
  if (o.dual_clip > 0 && A < 0 && r.pg > -A * o.dual_clip) {
    r.pg = -A * o.dual_clip;
    r.d_pg = 0;
    r.clipped_dual = true;
  }
  r.kl = kl_estimate(logp - logp_ref, o.kl, &r.d_kl);
  return r;
}

LossNormaliser loss_normaliser(const GrpoTokens& t, LossAgg agg) {
  LossNormaliser n;
  const int64_t S = int64_t(t.offsets.size()) - 1;
  for (int64_t i = 0; i < S; ++i) {
    int64_t counted = 0;
    for (int64_t j = t.offsets[size_t(i)]; j < t.offsets[size_t(i + 1)]; ++j)
      counted += t.mask.empty() ? 1 : (t.mask[size_t(j)] != 0);
    n.tokens += double(counted);
    n.seqs += agg == LossAgg::seq_mean_token_sum_norm ? 1.0 : double(counted > 0);
  }
  return n;
}

void GrpoMetrics::add(const GrpoMetrics& o) {
  tokens += o.tokens;
  clipped_low += o.clipped_low;
  clipped_high += o.clipped_high;
  clipped_dual += o.clipped_dual;
  ratio += o.ratio;
  pg_loss += o.pg_loss;
  kl += o.kl;
  neg_log_ratio += o.neg_log_ratio;
}

GrpoLossResult grpo_loss(const GrpoTokens& t, const GrpoLossOptions& o, const LossNormaliser& norm) {
  DS_CHECK(!t.offsets.empty() && t.offsets[0] == 0, "offsets start at 0");
  const int64_t S = int64_t(t.offsets.size()) - 1;
  const int64_t N = t.offsets.back();
  DS_CHECK(int64_t(t.advantages.size()) == S, "one advantage per sequence");
  DS_CHECK(int64_t(t.logp.size()) == N && int64_t(t.logp_old.size()) == N, "logp and logp_old: one per token");
  DS_CHECK(t.mask.empty() || int64_t(t.mask.size()) == N, "mask: one per token");
  DS_CHECK(o.beta == 0 || int64_t(t.logp_ref.size()) == N, "beta > 0 needs logp_ref, one per token");
  if (o.agg == LossAgg::seq_mean_token_sum_norm && !(o.norm_length > 0))
    throw_usage("the seq-mean-token-sum-norm (Dr. GRPO) loss needs a normalising length > 0");
  const LossNormaliser own = loss_normaliser(t, o.agg);
  const double tokens = norm.tokens > 0 ? norm.tokens : own.tokens;
  const double seqs = norm.seqs > 0 ? norm.seqs : own.seqs;

  GrpoLossResult r;
  r.d_logp.assign(size_t(N), 0.0);
  for (int64_t i = 0; i < S; ++i) {
    const int64_t b = t.offsets[size_t(i)], e = t.offsets[size_t(i + 1)];
    DS_CHECK(e >= b, "offsets are non-decreasing");
    int64_t len = 0;
    for (int64_t j = b; j < e; ++j) len += t.mask.empty() ? 1 : (t.mask[size_t(j)] != 0);
    if (len == 0) continue;
    double w = 0;  // the weight of each counted token of this sequence
    switch (o.agg) {
      case LossAgg::seq_mean_token_mean: w = 1.0 / (seqs * double(len)); break;
      case LossAgg::token_mean: w = 1.0 / tokens; break;
      case LossAgg::seq_mean_token_sum: w = 1.0 / seqs; break;
      case LossAgg::seq_mean_token_sum_norm: w = 1.0 / (seqs * o.norm_length); break;
    }
    const double A = t.advantages[size_t(i)];
    for (int64_t j = b; j < e; ++j) {
      if (!t.mask.empty() && !t.mask[size_t(j)]) continue;
      const double ref = t.logp_ref.empty() ? t.logp[size_t(j)] : t.logp_ref[size_t(j)];  // no ref: KL 0
      const TokenTerms tt = token_terms(t.logp[size_t(j)], t.logp_old[size_t(j)], ref, A, o);
      r.loss += w * (tt.pg + o.beta * tt.kl);
      r.d_logp[size_t(j)] = w * (tt.d_pg + o.beta * tt.d_kl);
      GrpoMetrics& m = r.metrics;
      ++m.tokens;
      m.clipped_low += tt.clipped_low;
      m.clipped_high += tt.clipped_high;
      m.clipped_dual += tt.clipped_dual;
      m.ratio += tt.ratio;
      m.pg_loss += tt.pg;
      m.kl += tt.kl;
      m.neg_log_ratio += t.logp_old[size_t(j)] - t.logp[size_t(j)];
    }
  }
  return r;
}

}  // namespace ds::rl
