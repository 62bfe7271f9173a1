#include <catch2/catch.hpp>

#include "helpers.h"
#include "tasks/expr.h"
#include "tasks/verify.h"

using namespace ds::tasks;

TEST_CASE("expression trees hold exact values and print with the parentheses their shape needs", "[tasks][expr]") {
  Expr e;
  int a = e.leaf(55), b = e.leaf(36), c = e.leaf(19), d = e.leaf(7);
  e.root = e.binary('-', e.binary('+', a, b), e.binary('-', c, d));
  CHECK(e.value() == 79);
  CHECK(format_expr(e) == "55 + 36 - (19 - 7)");
  auto steps = expr_steps(e);
  REQUIRE(steps.size() == 3);
  CHECK(steps[0].result == 91);
  CHECK(steps[1].result == 12);
  CHECK(steps[2].result == 79);

  Expr f;
  f.root = f.binary('*', f.binary('+', f.leaf(2), f.leaf(3)), f.binary('/', f.leaf(8), f.leaf(4)));
  CHECK(format_expr(f) == "(2 + 3) * (8 / 4)");
  CHECK(f.value() == 10);
  // a slip in one node flows into the steps after it
  auto slipped = expr_steps(f, {{f.at(f.root).left, 6}});
  CHECK(slipped.back().result == 12);
  CHECK(expr_leaves(f) == std::vector<int64_t>{2, 3, 8, 4});

  int64_t out = 0;
  CHECK_FALSE(apply_op('/', 7, 2, &out));
  CHECK_FALSE(apply_op('/', 7, 0, &out));
  CHECK_FALSE(apply_op('*', INT64_MAX, 2, &out));
  CHECK(apply_op('/', 8, 2, &out));
  CHECK(out == 4);
}

TEST_CASE("eval_expression is exact and rejects malformed input", "[tasks][verify]") {
  std::vector<int64_t> lits;
  auto v = eval_expression("(1 + 2) / 3", &lits);
  REQUIRE(v);
  CHECK(v->num == 1);
  CHECK(v->den == 1);
  CHECK(lits == std::vector<int64_t>{1, 2, 3});
  v = eval_expression("7 / 2");
  REQUIRE(v);
  CHECK(v->num == 7);
  CHECK(v->den == 2);
  v = eval_expression("-3 + 5 * (2 - 4)");
  REQUIRE(v);
  CHECK(v->num == -13);
  for (const char* bad : {"", "1 +", "(1 + 2", "1 2", "2 / 0", "1.5 + 1", "abc", "99999999999999999999 + 1", ")"})
    CHECK_FALSE(eval_expression(bad));
}

TEST_CASE("countdown_check follows TinyZero's rule", "[tasks][verify]") {
  std::vector<int64_t> nums = {19, 36, 55, 7};
  std::string why;
  CHECK(countdown_check("55 + 36 - 19 - 7", nums, 65, &why));
  CHECK(why.empty());
  CHECK(countdown_check("(55 + 36) - (19 + 7)", nums, 65));
  CHECK_FALSE(countdown_check("55 + 36 - 19 - 7", nums, 66, &why));
  CHECK(why.find("target") != std::string::npos);
  CHECK_FALSE(countdown_check("55 + 36 - 19", nums, 72, &why));  // a number left out
  CHECK(why.find("exactly once") != std::string::npos);
  CHECK_FALSE(countdown_check("55 + 55 - 19 - 7 - 36", nums, 48));  // a number used twice
  CHECK_FALSE(countdown_check("55 + 36 - 19 - 7 = 65", nums, 65));  // '=' is not allowed
  CHECK(countdown_check("7 / 2 * 2 + 0", {7, 2, 2, 0}, 7));  // 7 / 2 * 2 = 7 exactly
  // non-integer intermediates are fine as long as the value is exact
  CHECK(countdown_check("7 / 2 * 2", {7, 2, 2}, 7));
  CHECK(ds::test::tinyzero_countdown_ok("55 + 36 - 19 - 7", nums, 65));
}
