// pass@k against brute-force enumeration of k-subsets, maj@k voting, the summary aggregator.
#include <catch2/catch.hpp>

#include <functional>

#include "rl/metrics.h"

using namespace ds::rl;

namespace {
// Fraction of the k-subsets of n samples (c correct) that contain a correct one.
double brute_pass(int n, int c, int k) {
  int64_t total = 0, hit = 0;
  std::function<void(int, int, bool)> rec = [&](int start, int left, bool any) {
    if (left == 0) {
      ++total;
      hit += any;
      return;
    }
    for (int i = start; i <= n - left; ++i) rec(i + 1, left - 1, any || i < c);
  };
  rec(0, k, false);
  return double(hit) / double(total);
}
}  // namespace

TEST_CASE("pass@k equals brute-force enumeration") {
  for (int n = 1; n <= 12; ++n)
    for (int c = 0; c <= n; ++c)
      for (int k = 1; k <= n; ++k) {
        INFO("n=" << n << " c=" << c << " k=" << k);
        CHECK(pass_at_k(n, c, k) == Approx(brute_pass(n, c, k)).margin(1e-12));
      }
}

TEST_CASE("pass@k: edge cases and stability") {
  CHECK(pass_at_k(10, 0, 5) == 0.0);
  CHECK(pass_at_k(10, 10, 1) == 1.0);
  CHECK(pass_at_k(10, 6, 5) == 1.0);  // n - c < k
  CHECK(pass_at_k(16, 4, 1) == Approx(0.25));
  // large n: C(n, k) would overflow anything; the product form is fine
  double v = pass_at_k(100000, 1, 1000);
  CHECK(v == Approx(0.01));
  CHECK(pass_at_k(100000, 50000, 64) == Approx(1.0));
}

TEST_CASE("maj@k: most frequent answer, ties to the first seen, no vote = wrong") {
  std::vector<Vote> v = {{"n:1", false}, {"n:2", true}, {"n:2", true}, {"n:1", false}, {"n:1", false}};
  CHECK(majority_correct(v, 5) == false);  // 1 wins 3-2
  CHECK(majority_correct(v, 3) == true);   // 2 wins 2-1
  CHECK(majority_correct(v, 4) == false);  // 2-2 tie: "n:1" was seen first
  CHECK(majority_correct(v, 1) == false);
  CHECK(majority_correct(v, 100) == false);  // k clipped
  std::vector<Vote> none = {{"", false}, {"", false}};
  CHECK_FALSE(majority_correct(none, 2));
  std::vector<Vote> abstain = {{"", false}, {"n:3", true}};
  CHECK(majority_correct(abstain, 2));
}

TEST_CASE("summary: per task and overall, k clipped to the group size") {
  SummaryAggregator agg({1, 2, 8});
  auto add = [&](const char* task, const char* group, bool skipped, double reward, bool correct, const char* key) {
    SummaryAggregator::Sample s;
    s.task = task;
    s.group = group;
    s.skipped = skipped;
    if (!skipped) s.reward = reward;
    s.correct = correct;
    s.vote_key = key;
    agg.add(s);
  };
  // task a: prompt p (4 samples, 1 correct), prompt q (4 samples, 4 correct)
  add("a", "p", false, 1, true, "n:1");
  add("a", "p", false, 0, false, "n:2");
  add("a", "p", false, 0, false, "n:2");
  add("a", "p", false, 0, false, "n:3");
  for (int i = 0; i < 4; ++i) add("a", "q", false, 1, true, "n:5");
  // task b: one prompt, 2 scored + 1 skipped
  add("b", "r", false, 2, true, "t:x");
  add("b", "r", false, 0, false, "");
  add("b", "r", true, 0, false, "");
  auto sums = agg.summaries();
  REQUIRE(sums.size() == 3);
  const auto& a = sums[0];
  CHECK(a.task == "a");
  CHECK(a.prompts == 2);
  CHECK(a.samples == 8);
  CHECK(a.mean_reward == Approx(5.0 / 8));
  CHECK(a.pass1 == Approx((0.25 + 1.0) / 2));
  REQUIRE(a.pass_at.size() == 3);  // k = 1, 2, 4 (8 clipped to 4)
  CHECK(a.pass_at[1].first == 2);
  CHECK(a.pass_at[1].second == Approx((0.5 + 1.0) / 2));
  CHECK(a.pass_at[2].first == 4);
  CHECK(a.pass_at[2].second == Approx(1.0));
  CHECK(a.maj_at[2].second == Approx(0.5));  // p votes "n:2" (wrong), q right
  CHECK(a.maj_at[0].second == Approx(1.0));  // maj@1 = the first sample: both right
  const auto& b = sums[1];
  CHECK(b.samples == 3);
  CHECK(b.skipped == 1);
  CHECK(b.mean_reward == Approx(1.0));
  CHECK(b.min_group == 2);
  REQUIRE(b.pass_at.size() == 2);  // k = 1, 2
  const auto& all = sums[2];
  CHECK(all.task == "all");
  CHECK(all.prompts == 3);
  CHECK(all.samples == 11);
  CHECK(all.pass_at.back().first == 2);
  std::string json = agg.to_json();
  CHECK(json.find("\"pass@k\"") != std::string::npos);
  CHECK(agg.to_text().find("task b: prompts 1, samples 3, skipped 1") != std::string::npos);
}
