// The countdown verifier: numbers used exactly once, only + - * / ( ), exact evaluation, 1e-5 tolerance.
#include <catch2/catch.hpp>

#include "rl/countdown.h"
#include "rl/reward.h"

using namespace ds::rl;

namespace {
CountdownStatus check(std::string_view eq, std::vector<int64_t> nums, int64_t target) {
  return verify_countdown(eq, nums, Rational::of(target)).status;
}
}  // namespace

TEST_CASE("countdown: correct equations") {
  CHECK(check("(1 + 2) * 3", {1, 2, 3}, 9) == CountdownStatus::correct);
  CHECK(check("3 * (2 + 1)", {1, 2, 3}, 9) == CountdownStatus::correct);  // any order
  CHECK(check("(1+2)*3 = 9", {1, 2, 3}, 9) == CountdownStatus::correct);   // trailing "= target"
  CHECK(check("  25 - 5 * 4  ", {25, 5, 4}, 5) == CountdownStatus::correct);
  CHECK(check("5 + 5", {5, 5}, 10) == CountdownStatus::correct);            // duplicates in the task
  CHECK(check("(3 - 3) * 7 + 2", {3, 3, 7, 2}, 2) == CountdownStatus::correct);
}

TEST_CASE("countdown: non-integer intermediate values are allowed (exact rationals)") {
  CHECK(check("(1 / 3 + 1) * 3", {1, 3, 1, 3}, 4) == CountdownStatus::correct);
  CHECK(check("6 / (1 - 3 / 4)", {6, 1, 3, 4}, 24) == CountdownStatus::correct);
  CHECK(check("8 / (3 - 8 / 3)", {8, 3, 8, 3}, 24) == CountdownStatus::correct);  // 8/(1/3): floats miss it
}

TEST_CASE("countdown: numbers must be used exactly once") {
  CHECK(check("3 * 3", {1, 2, 3}, 9) == CountdownStatus::wrong_numbers);          // reuse + missing
  CHECK(check("(1 + 2) * 3 * 1", {1, 2, 3}, 9) == CountdownStatus::wrong_numbers);  // extra use
  CHECK(check("1 + 2", {1, 2, 3}, 3) == CountdownStatus::wrong_numbers);           // missing number
  CHECK(check("12 - 3", {1, 2, 3}, 9) == CountdownStatus::wrong_numbers);          // digits glued together
  CHECK(check("5 + 5", {5}, 10) == CountdownStatus::wrong_numbers);
  CHECK(check("05 + 1", {5, 1}, 6) == CountdownStatus::correct);                   // the value is what counts
}

TEST_CASE("countdown: only + - * / and parentheses") {
  CHECK(check("2 ^ 3", {2, 3}, 8) == CountdownStatus::bad_expression);
  CHECK(check("-1 + 2 + 3", {1, 2, 3}, 4) == CountdownStatus::bad_expression);     // no unary minus
  CHECK(check("1.5 * 2", {1, 2}, 3) == CountdownStatus::bad_expression);           // no decimals
  CHECK(check("2 x 3", {2, 3}, 6) == CountdownStatus::bad_expression);
  CHECK(check("\\frac{6}{2}", {6, 2}, 3) == CountdownStatus::bad_expression);
  CHECK(check("(1 + 2", {1, 2}, 3) == CountdownStatus::bad_expression);
  CHECK(check("1 + 2 = 3 = 3", {1, 2}, 3) == CountdownStatus::bad_expression);
  CHECK(check("1 + 2 = 4", {1, 2}, 4) == CountdownStatus::wrong_value);            // claimed value not the sum
  CHECK(check("1 + 2 = 3", {1, 2}, 4) == CountdownStatus::wrong_value);            // right side is not the target
  CHECK(check("", {1, 2}, 3) == CountdownStatus::no_answer);
  CHECK(check("   ", {1, 2}, 3) == CountdownStatus::no_answer);
}

TEST_CASE("countdown: division by zero and overflow") {
  CHECK(check("1 / (2 - 2)", {1, 2, 2}, 0) == CountdownStatus::div_zero);
  CHECK(check("99999999999999999999 + 1", {1}, 1) == CountdownStatus::overflow);
  CHECK(check("999999999999999999 * 999999999999999999 * 999999999999999999", {999999999999999999,
          999999999999999999, 999999999999999999}, 1) == CountdownStatus::overflow);
}

TEST_CASE("countdown: value within 1e-5 of the target, decided exactly") {
  CHECK(check("1 + 2", {1, 2}, 4) == CountdownStatus::wrong_value);
  // a non-integer target (from the task's JSON) and a value off by less than 1e-5
  Rational t = *make_rational(1000001, 1000000);
  CHECK(verify_countdown("1 / 1", {1, 1}, t).status == CountdownStatus::correct);
  Rational t2 = *make_rational(100001, 100000);  // off by exactly 1e-5: not strictly within
  CHECK(verify_countdown("1 / 1", {1, 1}, t2).status == CountdownStatus::wrong_value);
  CHECK(verify_countdown("1 / 3", {1, 3}, *make_rational(333333, 1000000)).status == CountdownStatus::correct);
}

TEST_CASE("countdown: scoring a completion") {
  RewardConfig cfg;
  RolloutInput in;
  in.kind = TaskKind::countdown;
  in.numbers = {1, 2, 3};
  in.target = Rational::of(9);
  std::string good = "<think>\n1+2=3, 3*3=9\n</think>\n<answer>(1 + 2) * 3</answer>";
  in.completion = good;
  RewardResult r = score_rollout(in, cfg);
  CHECK(*r.accuracy == 1.0);
  CHECK(*r.format == 1.0);
  CHECK(*r.total == 2.0);
  CHECK(r.vote_key == "e:(1+2)*3");
  // the equation inside think does not count
  std::string hidden = "<think>(1 + 2) * 3</think> I give up";
  in.completion = hidden;
  r = score_rollout(in, cfg);
  CHECK(*r.accuracy == 0.0);
  CHECK_FALSE(r.extracted);
}
