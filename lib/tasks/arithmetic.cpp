// Arithmetic problems: one operation (basic, easy, medium) or a small parenthesised expression (hard).
#include "tasks/generators.h"
#include "tasks/random.h"

namespace ds::tasks {

namespace {

int64_t pow10(int k) {
  int64_t p = 1;
  while (k-- > 0) p *= 10;
  return p;
}

// A number with between lo and hi digits (the digit count drawn first, so short numbers are not rare).
int64_t draw_digits(Rng& rng, int lo, int hi) {
  int k = int(draw_range(rng, lo, hi));
  return draw_range(rng, k == 1 ? 0 : pow10(k - 1), pow10(k) - 1);
}

struct Operands {
  int lo, hi;                // digits of + and - operands, and of the first factor
  int mul_lo, mul_hi;        // digits of the second factor
  int64_t div_lo, div_hi;    // divisor range
  int quot_lo, quot_hi;      // digits of the quotient
};

Operands operands_of(Difficulty d) {
  switch (d) {
    // basic: 1-2 digit sums and differences, times a single digit, division by a single digit.
    case Difficulty::basic: return {1, 2, 1, 1, 2, 9, 1, 2};
    case Difficulty::easy: return {2, 2, 2, 2, 2, 20, 2, 2};
    case Difficulty::medium: return {3, 4, 2, 3, 11, 99, 3, 4};
    case Difficulty::hard: return {5, 6, 2, 3, 11, 99, 4, 5};
  }
  return {3, 4, 2, 3, 11, 99, 3, 4};
}

// a op b as a tree, with the operands drawn for `op` (subtraction ordered so it never goes below zero).
int one_operation(Rng& rng, Expr& e, char op, const Operands& o) {
  switch (op) {
    case '*': {
      int a = e.leaf(draw_digits(rng, o.lo, o.hi));
      int b = e.leaf(draw_digits(rng, o.mul_lo, o.mul_hi));
      return draw_chance(rng, 0.25) ? e.binary('*', b, a) : e.binary('*', a, b);
    }
    case '/': {
      int64_t d = draw_range(rng, o.div_lo, o.div_hi);
      int64_t q = draw_digits(rng, o.quot_lo, o.quot_hi);
      return e.binary('/', e.leaf(d * q), e.leaf(d));
    }
    default: {
      int64_t a = draw_digits(rng, o.lo, o.hi), b = draw_digits(rng, o.lo, o.hi);
      if (op == '-' && a < b) std::swap(a, b);
      return e.binary(op, e.leaf(a), e.leaf(b));
    }
  }
}

// A tree with `ops` operations for hard problems. Products take a 2-3 digit factor; a division divides a
// number by one of its 2-digit divisors; subtractions put the larger side first.
int hard_tree(Rng& rng, Expr& e, int ops, const Operands& o) {
  if (ops == 0) return e.leaf(draw_digits(rng, o.lo, o.hi));
  static const char kAll[] = {'+', '-', '*', '/'};
  static const char kNoDiv[] = {'+', '-', '*'};
  char op = ops == 1 ? draw_pick(rng, kAll) : draw_pick(rng, kNoDiv);
  if (op == '/') return one_operation(rng, e, '/', o);
  if (op == '*') {
    int sub = hard_tree(rng, e, ops - 1, o);
    int factor = e.leaf(draw_digits(rng, o.mul_lo, o.mul_hi));
    return draw_chance(rng, 0.5) ? e.binary('*', sub, factor) : e.binary('*', factor, sub);
  }
  int left_ops = int(draw_range(rng, 0, ops - 1));
  int l = hard_tree(rng, e, left_ops, o);
  int r = hard_tree(rng, e, ops - 1 - left_ops, o);
  if (op == '-' && e.at(l).value < e.at(r).value) std::swap(l, r);
  return e.binary(op, l, r);
}

}  // namespace

std::string arithmetic_prompt(const std::string& expression) { return "What is " + expression + "?"; }
std::string arithmetic_key(const std::string& expression) { return "arithmetic:" + expression; }

std::optional<Problem> arithmetic_candidate(Rng& rng, Difficulty d) {
  Operands o = operands_of(d);
  Problem p;
  p.task = Task::arithmetic;
  p.difficulty = d;
  if (d == Difficulty::hard) {
    p.expr.root = hard_tree(rng, p.expr, int(draw_range(rng, 2, 3)), o);
  } else {
    static const char kOps[] = {'+', '-', '*', '/'};
    p.expr.root = one_operation(rng, p.expr, draw_pick(rng, kOps), o);
  }
  std::string text = format_expr(p.expr);
  if (d == Difficulty::hard && text.find('(') == std::string::npos) return std::nullopt;
  p.prompt = arithmetic_prompt(text);
  p.answer = std::to_string(p.expr.value());
  p.key = arithmetic_key(text);
  return p;
}

}  // namespace ds::tasks
