// lib/rl/grpo: advantages, DAPO filters, the per-token GRPO loss and its gradient (finite differences in double
// precision for every aggregation mode and KL estimator), clipping, and hand-computed small cases.
#include <catch2/catch.hpp>

#include <cmath>
#include <functional>
#include <random>
#include <vector>

#include "rl/grpo.h"

using namespace ds::rl;
using Catch::Detail::Approx;

namespace {

// ---- advantages -----------------------------------------------------------------------------------------

TEST_CASE("advantages: group-normalised, zero-variance group and group of one give 0", "[grpo][adv]") {
  // group 0: rewards 1 0 0 1 (mean .5, unbiased std sqrt(1/3)); group 1: 2 2 2; group 2: a single 5
  const std::vector<double> r = {1, 0, 0, 1, 2, 2, 2, 5};
  const std::vector<int64_t> g = {0, 0, 0, 0, 1, 1, 1, 2};
  AdvantageOptions o;
  o.eps = 1e-6;
  Advantages a = group_advantages(r, g, o);
  const double s0 = std::sqrt(1.0 / 3.0);
  REQUIRE(a.groups.size() == 3);
  CHECK(a.groups[0].mean == Approx(0.5));
  CHECK(a.groups[0].std == Approx(s0));
  CHECK_FALSE(a.groups[0].zero_std);
  CHECK(a.groups[1].zero_std);
  CHECK(a.groups[2].zero_std);
  CHECK(a.groups[2].std == 0.0);
  CHECK(a.zero_std_groups == 2);
  CHECK(a.advantage[0] == Approx(0.5 / (s0 + 1e-6)).epsilon(1e-12));
  CHECK(a.advantage[1] == Approx(-0.5 / (s0 + 1e-6)).epsilon(1e-12));
  for (int i = 4; i < 8; ++i) CHECK(a.advantage[size_t(i)] == 0.0);  // exactly

  // batch scale: std over all eight rewards (sum of squared deviations 17.875, n - 1 = 7)
  o.scale = AdvantageScale::batch;
  a = group_advantages(r, g, o);
  const double sb = std::sqrt(17.875 / 7.0);
  CHECK(a.batch_std == Approx(sb));
  CHECK(a.advantage[0] == Approx(0.5 / (sb + 1e-6)).epsilon(1e-12));
  CHECK(a.advantage[5] == 0.0);
  // Dr. GRPO: centred only
  o.scale = AdvantageScale::none;
  a = group_advantages(r, g, o);
  CHECK(a.advantage[0] == 0.5);
  CHECK(a.advantage[2] == -0.5);
  CHECK(a.advantage[7] == 0.0);
}

TEST_CASE("advantages: equal rewards that do not average exactly still give 0", "[grpo][adv]") {
  const std::vector<double> r = {0.1, 0.1, 0.1};  // (0.1+0.1+0.1)/3 != 0.1 in binary
  Advantages a = group_advantages(r, {0, 0, 0}, AdvantageOptions{});
  for (double x : a.advantage) CHECK(x == 0.0);
  CHECK(a.zero_std_groups == 1);
}

TEST_CASE("DAPO filters: zero-std groups dropped, truncated samples masked, soft overlong penalty", "[grpo][dapo]") {
  const std::vector<double> r = {1, 0, 1, 1};
  const std::vector<int64_t> g = {0, 0, 1, 1};
  Advantages a = group_advantages(r, g, AdvantageOptions{});
  SampleFilterOptions f;
  SampleFilterCounts c;
  CHECK(loss_samples(a, g, {0, 1, 0, 0}, f, &c) == std::vector<uint8_t>{1, 1, 1, 1});
  f.drop_zero_std_groups = true;
  CHECK(loss_samples(a, g, {0, 1, 0, 0}, f, &c) == std::vector<uint8_t>{1, 1, 0, 0});
  CHECK(c.dropped_zero_std == 2);
  f.mask_truncated = true;
  CHECK(loss_samples(a, g, {0, 1, 0, 0}, f, &c) == std::vector<uint8_t>{1, 0, 0, 0});
  CHECK(c.masked_truncated == 1);

  // L_max 10, buffer 4: free up to 6, then linear down to -1 at 10, -1 beyond
  std::vector<double> rr = {1, 1, 1, 1};
  add_overlong_penalty(rr, {5, 8, 10, 12}, 10, 4, 1.0);
  CHECK(rr[0] == Approx(1.0));
  CHECK(rr[1] == Approx(0.5));
  CHECK(rr[2] == Approx(0.0));
  CHECK(rr[3] == Approx(0.0));
  std::vector<double> r2 = {1};
  add_overlong_penalty(r2, {100}, 0, 4, 1.0);  // off
  CHECK(r2[0] == 1.0);
}

// ---- KL estimators --------------------------------------------------------------------------------------

TEST_CASE("KL estimators: values, derivatives, and E_pi[k1] = E_pi[k3] = KL(pi || ref)", "[grpo][kl]") {
  double d = 0;
  CHECK(kl_estimate(0.3, KlEstimator::k1, &d) == Approx(0.3));
  CHECK(d == 1.0);
  CHECK(kl_estimate(0.3, KlEstimator::k2, &d) == Approx(0.045));
  CHECK(d == Approx(0.3));
  CHECK(kl_estimate(0.3, KlEstimator::k3, &d) == Approx(std::exp(-0.3) + 0.3 - 1));
  CHECK(d == Approx(1 - std::exp(-0.3)));
  CHECK(kl_estimate(-0.7, KlEstimator::k3, &d) >= 0.0);
  // clamps (verl): -Δ beyond 20, or a value beyond 10, have no gradient
  CHECK(kl_estimate(-30.0, KlEstimator::k3, &d) == 10.0);
  CHECK(d == 0.0);

  // a policy and a reference over 4 tokens: sampling from the policy, the k1 and k3 means are the exact KL
  const std::vector<double> p = {0.5, 0.2, 0.2, 0.1}, q = {0.25, 0.25, 0.3, 0.2};
  double kl = 0, e1 = 0, e3 = 0;
  for (size_t i = 0; i < p.size(); ++i) {
    const double delta = std::log(p[i]) - std::log(q[i]);
    kl += p[i] * std::log(p[i] / q[i]);
    e1 += p[i] * kl_estimate(delta, KlEstimator::k1, &d);
    e3 += p[i] * kl_estimate(delta, KlEstimator::k3, &d);
  }
  CHECK(e1 == Approx(kl).epsilon(1e-12));
  CHECK(e3 == Approx(kl).epsilon(1e-12));
}

// ---- the loss: hand-computed ----------------------------------------------------------------------------

struct Case {
  std::vector<int64_t> offsets;
  std::vector<double> adv, logp, old, ref;
  std::vector<uint8_t> mask;
  GrpoTokens tokens() const { return GrpoTokens{offsets, adv, logp, old, ref, mask}; }
};

// seq 0: A = 1, log-ratios 0.1 (inside) and 0.5 (clipped high); seq 1: A = -2, log-ratio -0.5 (clipped low)
Case hand_case() {
  Case c;
  c.offsets = {0, 2, 3};
  c.adv = {1.0, -2.0};
  c.old = {-1.0, -2.0, -0.5};
  c.logp = {-0.9, -1.5, -1.0};
  c.ref = {-1.2, -1.5, -0.8};
  return c;
}

TEST_CASE("GRPO loss: hand-computed case in every aggregation mode, clipped tokens have no gradient", "[grpo][loss]") {
  const Case c = hand_case();
  const double r0 = std::exp(0.1);
  // per-token losses: -r0 (unclipped), -1.2 (clip high, A=1), +2*0.8 (clip low, A=-2)
  const double l0 = -r0, l1 = -1.2, l2 = 1.6;
  GrpoLossOptions o;
  struct Want {
    LossAgg agg;
    double loss, d0;
  };
  const Want wants[] = {
      {LossAgg::token_mean, (l0 + l1 + l2) / 3, -r0 / 3},
      {LossAgg::seq_mean_token_mean, ((l0 + l1) / 2 + l2) / 2, -r0 / 4},
      {LossAgg::seq_mean_token_sum, (l0 + l1 + l2) / 2, -r0 / 2},
      {LossAgg::seq_mean_token_sum_norm, (l0 + l1 + l2) / (2 * 4.0), -r0 / 8},
  };
  for (const Want& w : wants) {
    o.agg = w.agg;
    o.norm_length = 4;
    GrpoLossResult r = grpo_loss(c.tokens(), o);
    INFO(loss_agg_name(w.agg));
    CHECK(r.loss == Approx(w.loss).epsilon(1e-12));
    CHECK(r.d_logp[0] == Approx(w.d0).epsilon(1e-12));
    CHECK(r.d_logp[1] == 0.0);  // clipped high
    CHECK(r.d_logp[2] == 0.0);  // clipped low
    CHECK(r.metrics.tokens == 3);
    CHECK(r.metrics.clipped_high == 1);
    CHECK(r.metrics.clipped_low == 1);
    CHECK(r.metrics.ratio == Approx(r0 + std::exp(0.5) + std::exp(-0.5)));
  }

  // + beta * k3 (token-mean): the clipped tokens now feel only the KL gradient
  o.agg = LossAgg::token_mean;
  o.beta = 0.1;
  o.kl = KlEstimator::k3;
  GrpoLossResult r = grpo_loss(c.tokens(), o);
  const double D[3] = {-0.9 + 1.2, -1.5 + 1.5, -1.0 + 0.8};
  double kl = 0;
  for (double x : D) kl += std::exp(-x) + x - 1;
  CHECK(r.loss == Approx((l0 + l1 + l2 + 0.1 * kl) / 3).epsilon(1e-12));
  CHECK(r.d_logp[0] == Approx((-r0 + 0.1 * (1 - std::exp(-D[0]))) / 3).epsilon(1e-12));
  CHECK(r.d_logp[1] == 0.0);  // Δ = 0: k3' = 0
  CHECK(r.d_logp[2] == Approx(0.1 * (1 - std::exp(-D[2])) / 3).epsilon(1e-12));
  CHECK(r.metrics.kl == Approx(kl));

  // k1 and k2 by hand (seq-mean-token-mean: weights 1/4, 1/4, 1/2)
  const double wt[3] = {0.25, 0.25, 0.5}, pg[3] = {l0, l1, l2}, dpg[3] = {-r0, 0, 0};
  for (KlEstimator k : {KlEstimator::k1, KlEstimator::k2}) {
    o.kl = k;
    o.agg = LossAgg::seq_mean_token_mean;
    r = grpo_loss(c.tokens(), o);
    double want = 0;
    for (int j = 0; j < 3; ++j) {
      const double v = k == KlEstimator::k1 ? D[j] : 0.5 * D[j] * D[j];
      const double dv = k == KlEstimator::k1 ? 1.0 : D[j];
      want += wt[j] * (pg[j] + 0.1 * v);
      INFO(kl_estimator_name(k) << " token " << j);
      CHECK(r.d_logp[size_t(j)] == Approx(wt[j] * (dpg[j] + 0.1 * dv)).epsilon(1e-12).margin(1e-15));
    }
    CHECK(r.loss == Approx(want).epsilon(1e-12));
  }
  o.agg = LossAgg::token_mean;
  o.kl = KlEstimator::k3;

  // DAPO-style clip-higher: with eps_high .7 token 1 (ρ = e^.5 = 1.65) is inside the range
  o.beta = 0;
  o.eps_high = 0.7;
  r = grpo_loss(c.tokens(), o);
  CHECK(r.d_logp[1] == Approx(-std::exp(0.5) / 3).epsilon(1e-12));
  CHECK(r.metrics.clipped_high == 0);
}

TEST_CASE("GRPO loss: dual clip caps negative-advantage tokens at -A*c; delta caps the ratio", "[grpo][loss]") {
  Case c;
  c.offsets = {0, 1};
  c.adv = {-1.0};
  c.old = {-2.0};
  c.logp = {-0.5};  // ρ = e^1.5 = 4.48
  GrpoLossOptions o;
  GrpoLossResult r = grpo_loss(c.tokens(), o);
  CHECK(r.loss == Approx(std::exp(1.5)));
  CHECK(r.d_logp[0] == Approx(std::exp(1.5)));  // A<0, ρ>1+ε: unclipped, the gradient pushes logp down
  o.dual_clip = 3.0;
  r = grpo_loss(c.tokens(), o);
  CHECK(r.loss == Approx(3.0));
  CHECK(r.d_logp[0] == 0.0);
  CHECK(r.metrics.clipped_dual == 1);

  c.adv = {1.0};
  c.logp = {-1.9};  // ρ = e^.1, inside the clip range; delta = 1.05 caps it
  o.dual_clip = 0;
  o.delta = 1.05;
  r = grpo_loss(c.tokens(), o);
  CHECK(r.loss == Approx(-1.05));
  CHECK(r.d_logp[0] == 0.0);
}

TEST_CASE("GRPO loss: on-policy (logp == logp_old) the loss is -mean(A) and the gradient -A/norm", "[grpo][loss]") {
  Case c;
  c.offsets = {0, 3, 5};
  c.adv = {0.7, -0.7};
  c.logp = {-1, -2, -3, -1, -2};
  c.old = c.logp;
  GrpoLossOptions o;
  GrpoLossResult r = grpo_loss(c.tokens(), o);
  CHECK(r.loss == Approx((-0.7 * 3 + 0.7 * 2) / 5));
  CHECK(r.d_logp[0] == Approx(-0.7 / 5));
  CHECK(r.d_logp[4] == Approx(0.7 / 5));
  o.agg = LossAgg::seq_mean_token_mean;  // the group-centred loss is 0 but the gradient is not (RL.md §1.6)
  r = grpo_loss(c.tokens(), o);
  CHECK(r.loss == Approx(0.0).margin(1e-15));
  CHECK(r.d_logp[0] == Approx(-0.7 / 6));
}

// ---- the loss: finite differences -----------------------------------------------------------------------

// Random sequences (one empty, one fully masked), log-probs near the old ones so that some tokens are clipped,
// no token within 1e-3 of a kink (the clip bounds, the dual-clip c).
Case random_case(uint64_t seed, const GrpoLossOptions& o) {
  std::mt19937_64 rng(seed);
  std::uniform_real_distribution<double> U(0, 1);
  std::normal_distribution<double> N(0, 1);
  Case c;
  const int lens[] = {4, 0, 6, 3, 5, 2};
  c.offsets = {0};
  for (int s = 0; s < 6; ++s) {
    c.offsets.push_back(c.offsets.back() + lens[s]);
    c.adv.push_back(s == 2 ? -1.3 : N(rng));
  }
  for (int64_t j = 0; j < c.offsets.back(); ++j) {
    const double old = -0.1 - 3 * U(rng);
    double lp;
    for (;;) {
      lp = old + 0.3 * N(rng);
      const double rho = std::exp(lp - old);
      if (std::abs(rho - (1 - o.eps_low)) > 1e-3 && std::abs(rho - (1 + o.eps_high)) > 1e-3 &&
          std::abs(rho - o.dual_clip) > 1e-3)
        break;
    }
    c.old.push_back(old);
    c.logp.push_back(lp);
    c.ref.push_back(lp + 0.5 * N(rng));
    c.mask.push_back(U(rng) < 0.8);
  }
  for (int64_t j = c.offsets[3]; j < c.offsets[4]; ++j) c.mask[size_t(j)] = 0;  // sequence 3: nothing counted
  return c;
}

void fd_check(const GrpoLossOptions& o, uint64_t seed) {
  Case c = random_case(seed, o);
  const GrpoLossResult r = grpo_loss(c.tokens(), o);
  const double h = 1e-6;
  int clipped_seen = 0;
  for (size_t j = 0; j < c.logp.size(); ++j) {
    const double x = c.logp[j];
    c.logp[j] = x + h;
    const double lp = grpo_loss(c.tokens(), o).loss;
    c.logp[j] = x - h;
    const double lm = grpo_loss(c.tokens(), o).loss;
    c.logp[j] = x;
    const double num = (lp - lm) / (2 * h);
    INFO("token " << j << " analytic " << r.d_logp[j] << " numeric " << num);
    CHECK(std::abs(num - r.d_logp[j]) <= 1e-7 + 1e-6 * std::abs(num));
    if (!c.mask[j]) CHECK(r.d_logp[j] == 0.0);
    int64_t s = 0;
    while (c.offsets[size_t(s + 1)] <= int64_t(j)) ++s;
    const TokenTerms tt = token_terms(c.logp[j], c.old[j], c.ref[j], c.adv[size_t(s)], o);
    if (tt.clipped_low || tt.clipped_high || tt.clipped_dual) {
      CHECK(tt.d_pg == 0.0);
      clipped_seen += c.mask[j];
    }
  }
  CHECK(r.metrics.clipped_low + r.metrics.clipped_high + r.metrics.clipped_dual == clipped_seen);
  CHECK(clipped_seen > 0);  // the case exercises the clip
}

TEST_CASE("GRPO loss: finite-difference gradient for every aggregation mode and KL estimator", "[grpo][loss][fd]") {
  const LossAgg aggs[] = {LossAgg::seq_mean_token_mean, LossAgg::token_mean, LossAgg::seq_mean_token_sum,
                          LossAgg::seq_mean_token_sum_norm};
  const KlEstimator kls[] = {KlEstimator::k1, KlEstimator::k2, KlEstimator::k3};
  uint64_t seed = 1;
  for (LossAgg agg : aggs)
    for (KlEstimator kl : kls)
      for (int variant = 0; variant < 2; ++variant) {
        GrpoLossOptions o;
        o.agg = agg;
        o.kl = kl;
        o.beta = 0.05;
        o.norm_length = 8;
        if (variant == 1) {  // DAPO clip-higher + dual clip
          o.eps_high = 0.28;
          o.dual_clip = 1.3;
        }
        INFO(loss_agg_name(agg) << " " << kl_estimator_name(kl) << " variant " << variant);
        fd_check(o, seed++);
      }
}

TEST_CASE("GRPO loss: micro-batches with the mini-batch normaliser sum to the whole", "[grpo][loss]") {
  GrpoLossOptions o;
  o.beta = 0.01;
  o.norm_length = 10;
  const Case c = random_case(99, o);
  for (LossAgg agg : {LossAgg::seq_mean_token_mean, LossAgg::token_mean, LossAgg::seq_mean_token_sum,
                      LossAgg::seq_mean_token_sum_norm}) {
    o.agg = agg;
    const GrpoLossResult whole = grpo_loss(c.tokens(), o);
    const LossNormaliser norm = loss_normaliser(c.tokens(), agg);
    // split after sequence 2
    const int64_t cut = c.offsets[3];
    Case a, b;
    a.offsets = {c.offsets[0], c.offsets[1], c.offsets[2], c.offsets[3]};
    a.adv = {c.adv[0], c.adv[1], c.adv[2]};
    b.offsets = {0};
    for (size_t s = 3; s < c.adv.size(); ++s) {
      b.offsets.push_back(c.offsets[s + 1] - cut);
      b.adv.push_back(c.adv[s]);
    }
    auto part = [&](Case& p, int64_t from, int64_t to) {
      p.logp.assign(c.logp.begin() + from, c.logp.begin() + to);
      p.old.assign(c.old.begin() + from, c.old.begin() + to);
      p.ref.assign(c.ref.begin() + from, c.ref.begin() + to);
      p.mask.assign(c.mask.begin() + from, c.mask.begin() + to);
    };
    part(a, 0, cut);
    part(b, cut, c.offsets.back());
    const GrpoLossResult ra = grpo_loss(a.tokens(), o, norm), rb = grpo_loss(b.tokens(), o, norm);
    INFO(loss_agg_name(agg));
    CHECK(ra.loss + rb.loss == Approx(whole.loss).epsilon(1e-12));
    for (int64_t j = 0; j < c.offsets.back(); ++j)
      CHECK((j < cut ? ra.d_logp[size_t(j)] : rb.d_logp[size_t(j - cut)]) == Approx(whole.d_logp[size_t(j)]));
    GrpoMetrics m = ra.metrics;
    m.add(rb.metrics);
    CHECK(m.tokens == whole.metrics.tokens);
  }
}

TEST_CASE("GRPO names parse and round-trip", "[grpo]") {
  for (const char* s : {"seq-mean-token-mean", "token-mean", "seq-mean-token-sum", "seq-mean-token-sum-norm"})
    CHECK(std::string(loss_agg_name(loss_agg_parse(s))) == s);
  CHECK(loss_agg_parse("dr-grpo") == LossAgg::seq_mean_token_sum_norm);
  CHECK(loss_agg_parse("grpo") == LossAgg::seq_mean_token_mean);
  CHECK(kl_estimator_parse("low_var_kl") == KlEstimator::k3);
  CHECK(advantage_scale_parse("none") == AdvantageScale::none);
  CHECK_THROWS(loss_agg_parse("mean"));
  CHECK_THROWS(kl_estimator_parse("k4"));
  GrpoLossOptions o;
  o.agg = LossAgg::seq_mean_token_sum_norm;  // no norm_length
  Case c = hand_case();
  CHECK_THROWS(grpo_loss(c.tokens(), o));
}

}  // namespace
