#include "rl/countdown.h"

#include <algorithm>

#include "rl/expr.h"
#include "rl/extract.h"

namespace ds::rl {

const char* countdown_status_name(CountdownStatus s) {
  switch (s) {
    case CountdownStatus::correct: return "correct";
    case CountdownStatus::no_answer: return "no_answer";
    case CountdownStatus::bad_expression: return "bad_expression";
    case CountdownStatus::wrong_numbers: return "wrong_numbers";
    case CountdownStatus::div_zero: return "div_zero";
    case CountdownStatus::overflow: return "overflow";
    case CountdownStatus::wrong_value: return "wrong_value";
  }
  return "unknown";
}

CountdownResult verify_countdown(std::string_view equation, const std::vector<int64_t>& numbers,
                                 const Rational& target) {
  CountdownResult r;
  std::string_view lhs = trim(equation);
  if (lhs.empty()) return r;  // no_answer
  if (lhs.size() > 4096) {
    r.status = CountdownStatus::bad_expression;
    return r;
  }
  size_t eq = lhs.find('=');
  if (eq != std::string_view::npos) {
    std::string_view rhs = trim(lhs.substr(eq + 1));
    lhs = trim(lhs.substr(0, eq));
    ExprOptions o;
    o.dialect = ExprDialect::countdown;
    ExprResult rv = eval_expr(rhs, o);
    // the right side must be one literal equal to the target
    if (!rv.value || rv.literals.size() != 1) {
      r.status = CountdownStatus::bad_expression;
      return r;
    }
    if (!(*rv.value == target)) {
      r.status = CountdownStatus::wrong_value;
      r.value = rv.value;
      return r;
    }
  }
  ExprOptions o;
  o.dialect = ExprDialect::countdown;
  ExprResult e = eval_expr(lhs, o);
  if (!e.value) {
    switch (e.error) {
      case ExprError::div_zero: r.status = CountdownStatus::div_zero; break;
      case ExprError::overflow: r.status = CountdownStatus::overflow; break;
      default: r.status = CountdownStatus::bad_expression; break;
    }
    return r;
  }
  r.value = e.value;
  std::vector<int64_t> used = std::move(e.literals), given = numbers;
  std::sort(used.begin(), used.end());
  std::sort(given.begin(), given.end());
  if (used != given) {
    r.status = CountdownStatus::wrong_numbers;
    return r;
  }
  r.status = within(*e.value, target, 1, 100000) ? CountdownStatus::correct : CountdownStatus::wrong_value;
  return r;
}

}  // namespace ds::rl
