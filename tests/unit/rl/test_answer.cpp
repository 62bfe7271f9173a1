// Exact rationals, the expression evaluator, answer normalisation and equivalence.
#include <catch2/catch.hpp>

#include "rl/answer.h"
#include "rl/expr.h"
#include "rl/rational.h"

using namespace ds::rl;

namespace {
std::string eval(std::string_view s, bool thousands = false) {
  ExprOptions o;
  o.thousands = thousands;
  ExprResult r = eval_expr(s, o);
  return r.value ? to_string(*r.value) : std::string("error:") + expr_error_name(r.error);
}
bool eq(std::string_view gold, std::string_view pred) { return answers_equal(gold, pred); }
std::string why_not(std::string_view gold) {
  std::string why;
  return parse_answer(gold, &why) ? std::string("ok") : why;
}
}  // namespace

TEST_CASE("rational: exact arithmetic with overflow checks") {
  auto r = [](int64_t n, int64_t d) { return *make_rational(n, d); };
  CHECK(to_string(*add(r(1, 3), r(1, 6))) == "1/2");
  CHECK(to_string(*mul(r(-2, 3), r(3, 4))) == "-1/2");
  CHECK(to_string(*div(r(1, 2), r(-1, 4))) == "-2");
  CHECK_FALSE(div(r(1, 2), r(0, 1)));
  CHECK_FALSE(make_rational(1, 0));
  CHECK(to_string(*pow(r(2, 3), Rational::of(-2))) == "9/4");
  CHECK_FALSE(pow(Rational::of(2), Rational::of(200)));  // 2^200 does not fit
  CHECK(to_string(*pow(Rational::of(2), Rational::of(126))) == "85070591730234615865843651857942052864");
  CHECK_FALSE(pow(Rational::of(0), Rational::of(-1)));
  CHECK_FALSE(pow(Rational::of(4), r(1, 2)));
  Rational big = *pow(Rational::of(10), Rational::of(37));
  CHECK_FALSE(mul(big, big));
  CHECK(within(r(4, 1), r(4000001, 1000000), 1, 100000));
  CHECK_FALSE(within(r(4, 1), r(40001, 10000), 1, 100000));
  CHECK(compare(r(1, 3), r(1, 2)) == -1);
}

TEST_CASE("rational: decimal literals") {
  CHECK(to_string(*parse_decimal("3.50")) == "7/2");
  CHECK(to_string(*parse_decimal(".5")) == "1/2");
  CHECK(to_string(*parse_decimal("7.")) == "7");
  CHECK(to_string(*parse_decimal("0007")) == "7");
  CHECK(to_string(*parse_decimal("1.0000000000000000000000000000000000000000000000")) == "1");
  CHECK_FALSE(parse_decimal("."));
  CHECK_FALSE(parse_decimal("1.2.3"));
  CHECK_FALSE(parse_decimal("-1"));
  CHECK_FALSE(parse_decimal("123456789012345678901234567890123456789012"));  // 42 digits
}

TEST_CASE("expr: math dialect") {
  CHECK(eval("1 + 2 * 3") == "7");
  CHECK(eval("(1 + 2) * 3") == "9");
  CHECK(eval("2^3^2") == "512");  // right associative
  CHECK(eval("-2^2") == "-4");
  CHECK(eval("2^-1") == "1/2");
  CHECK(eval("2^{10}") == "1024");
  CHECK(eval("\\frac{7}{2}") == "7/2");
  CHECK(eval("\\dfrac{7}{2}") == "7/2");
  CHECK(eval("\\tfrac12") == "1/2");
  CHECK(eval("\\frac{1}{\\frac{1}{3}}") == "3");
  CHECK(eval("2\\frac{1}{2}") == "5/2");   // mixed number
  CHECK(eval("3 \\cdot 4") == "12");
  CHECK(eval("3 \\times 4 \\div 6") == "2");
  CHECK(eval("3 \xC3\x97 4") == "12");       // ×
  CHECK(eval("\xE2\x88\x92 5") == "-5");     // U+2212
  CHECK(eval("\\left( 1 + 1 \\right)") == "2");
  CHECK(eval("\\sqrt{16}") == "4");
  CHECK(eval("\\sqrt{\\frac{9}{4}}") == "3/2");
  CHECK(eval("\\sqrt{2}") == "error:not_rational");
  CHECK(eval("1/0") == "error:div_zero");
  CHECK(eval("0^{-1}") == "error:div_zero");
  CHECK(eval("2^{0.5}") == "error:not_rational");
  CHECK(eval("x + 1") == "error:bad_char");
  CHECK(eval("2(3)") == "error:syntax");  // no implicit multiplication
  CHECK(eval("(1 + 2") == "error:syntax");
  CHECK(eval("   ") == "error:empty");
  CHECK(eval("1,234", true) == "1234");
  CHECK(eval("1,234,567.5", true) == "2469135/2");
  CHECK(eval("1,234") == "error:syntax");
  CHECK(eval("1,23", true) == "error:syntax");
  CHECK(eval("1234,567", true) == "error:syntax");
  CHECK(eval("99999999999999999999999999999999999999999") == "error:overflow");
  CHECK(eval("10^{30} * 10^{30}") == "error:overflow");
  CHECK(eval(std::string(500, '(') + "1" + std::string(500, ')')) == "error:too_deep");
}

TEST_CASE("answers: integers, decimals, fractions, signs") {
  CHECK(eq("7", "7"));
  CHECK(eq("7", " 7 "));
  CHECK(eq("3.5", "3.50"));
  CHECK(eq("3.5", "7/2"));
  CHECK(eq("7/2", "\\frac{7}{2}"));
  CHECK(eq("7/2", "\\dfrac{7}{2}"));
  CHECK(eq("7/2", "\\frac72"));
  CHECK(eq("-3", "\xE2\x88\x92" "3"));
  CHECK(eq("-1/2", "\\frac{-1}{2}"));
  CHECK(eq("-1/2", "-\\frac{1}{2}"));
  CHECK(eq("5", "+5"));
  CHECK(eq("5", "5.0"));
  CHECK(eq("0.5", ".5"));
  CHECK_FALSE(eq("7", "8"));
  CHECK_FALSE(eq("1/3", "0.333"));     // exact: no rounding
  CHECK_FALSE(eq("1/3", "0.3333333333"));
  CHECK_FALSE(eq("2", "2.0001"));
  CHECK(eq("14/4", "7/2"));            // values, not spellings
}

TEST_CASE("answers: thousands separators, percentages") {
  CHECK(eq("1234", "1,234"));
  CHECK(eq("1234567", "1,234,567"));
  CHECK(eq("1234", "1{,}234"));
  CHECK(eq("1234", "1\\,234"));
  CHECK_FALSE(eq("1234", "12,34"));
  // percent rule: X% equals Y when Y == X or Y == X/100; both with % must be equal numbers
  CHECK(eq("50%", "50"));
  CHECK(eq("50%", "0.5"));
  CHECK(eq("50", "50%"));
  CHECK(eq("0.5", "50\\%"));
  CHECK(eq("50%", "50\\%"));
  CHECK_FALSE(eq("50%", "0.5%"));
  CHECK_FALSE(eq("50%", "5"));
}

TEST_CASE("answers: LaTeX wrappers, text, units, x =") {
  CHECK(eq("7", "$7$"));
  CHECK(eq("7", "$$7$$"));
  CHECK(eq("7", "\\(7\\)"));
  CHECK(eq("7", "\\[7\\]"));
  CHECK(eq("7", "\\boxed{7}"));
  CHECK(eq("7", "$\\boxed{7}$."));
  CHECK(eq("7", "**7**"));
  CHECK(eq("7", "\\text{7}"));
  CHECK(eq("5", "5\\text{ cm}"));      // trailing unit in \text is dropped
  CHECK(eq("5", "5 \\mbox{meters}"));
  CHECK_FALSE(eq("5", "5 apples"));    // units-free: a bare word is not stripped
  CHECK(eq("90", "90^\\circ"));
  CHECK(eq("90", "90^{\\circ}"));
  CHECK(eq("90", "90\xC2\xB0"));
  CHECK(eq("5", "x = 5"));
  CHECK(eq("5", "x=5"));
  CHECK_FALSE(eq("5", "xyz = 5"));
  CHECK(eq("\\text{B}", "B"));
  CHECK(eq("B", "b"));                 // text is compared case-insensitively
  CHECK(eq("\\sqrt{2}", "\\sqrt{2}"));
  CHECK(eq("\\pi", " \\pi "));
  CHECK_FALSE(eq("\\sqrt{2}", "\\sqrt{3}"));
  CHECK_FALSE(eq("7", "seven"));
  CHECK_FALSE(eq("yes", "no"));
}

TEST_CASE("answers: tuples and intervals") {
  CHECK(eq("(1, 2)", "(1,2)"));
  CHECK(eq("(1, 2)", "1, 2"));           // a bare list reads as a parenthesised tuple
  CHECK(eq("(1/2, 3)", "(0.5, 3.0)"));
  CHECK(eq("(1, (2, 3))", "(1,(2,3))"));
  CHECK(eq("[0, 1]", "[0,1]"));
  CHECK(eq("(0, 1]", "(0,1]"));
  CHECK_FALSE(eq("[0, 1]", "(0, 1)"));
  CHECK_FALSE(eq("(1, 2)", "(2, 1)"));
  CHECK_FALSE(eq("(1, 2)", "(1, 2, 3)"));
  CHECK_FALSE(eq("(1, 2)", "1"));
  CHECK_FALSE(eq("2", "1, 2, 3, 4"));    // listing options does not hit the gold
  CHECK(eq("(a, b)", "(A,B)"));
  CHECK(eq("(1,000, 2)", "(1000, 2)") == false);  // inside a tuple a comma always separates
}

TEST_CASE("answers: gold answers that cannot be used") {
  CHECK(why_not("") == "empty");
  CHECK(why_not("   ") == "empty");
  CHECK(why_not("$$") == "empty");
  CHECK(why_not("\\boxed{}") == "empty");
  CHECK(why_not("(1, 2") == "unbalanced brackets");
  CHECK(why_not("\\frac{1}{2") == "unbalanced brackets");
  CHECK(why_not(std::string(2000, '1')) == "too long");
  CHECK(why_not("\xFF\xFE") == "invalid UTF-8");
  CHECK(why_not("(0, 1]") == "ok");
  CHECK(why_not("99999999999999999999999999999999999999999999") == "ok");  // big: compared as text
  CHECK(eq("99999999999999999999999999999999999999999999", "99999999999999999999999999999999999999999999"));
  CHECK_FALSE(eq("(1, 2", "(1, 2"));  // unparseable on both sides is never equal
}

TEST_CASE("answers: normalisation") {
  CHECK(normalize_answer("  $\\boxed{\\text{(A)}}$. ") == "(A)");
  CHECK(normalize_answer("\\left(1, 2\\right)") == "(1, 2)");
  CHECK(normalize_answer("x = \\dfrac{1}{2}") == "\\dfrac{1}{2}");
  CHECK(normalize_answer("\\leftarrow") == "\\leftarrow");
}

TEST_CASE("answers: keys group equal answers") {
  auto key = [](std::string_view s) { return answer_key(*parse_answer(s)); };
  CHECK(key("3.50") == key("7/2"));
  CHECK(key("\\frac{7}{2}") == "n:7/2");
  CHECK(key("50%") == key("0.5"));
  CHECK(key("(1, 2)") == key("1,2"));
  CHECK(key("Yes") == key("yes"));
  CHECK(key("7") != key("8"));
}
