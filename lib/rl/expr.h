#pragma once
// Exact evaluation of simple arithmetic on rationals, in two dialects:
//
//  math       numbers (integers, decimals, optional thousands separators "1,234" when asked), + - * / ^,
//             unary signs, ( ) and { } groups, LaTeX \frac \dfrac \tfrac with braced or one-digit arguments
//             (\frac12), mixed numbers 2\frac{1}{2} = 5/2, \cdot \times \div, \sqrt{x} of perfect squares,
//             Unicode − × ÷ ·, and \left \right (ignored). No variables, no implicit multiplication.
//  countdown  non-negative integer literals, binary + - * / and ( ) only (no unary signs, no decimals,
//             no other characters); every literal is reported so the caller can check which numbers
//             were used.
//
// The parser is recursive descent with a depth limit and evaluates as it goes; it runs in time linear in
// the input (each token is read once) and never overflows: every step is checked (rational.h).
#include <cstdint>
#include <optional>
#include <string_view>
#include <vector>

#include "rl/rational.h"

namespace ds::rl {

enum class ExprDialect { math, countdown };

enum class ExprError {
  none,
  empty,        // nothing but whitespace
  syntax,       // unexpected token, unbalanced parentheses, trailing text
  bad_char,     // a character or command outside the dialect
  unary,        // a unary sign in the countdown dialect
  decimal,      // a non-integer literal in the countdown dialect
  overflow,     // a value or literal does not fit (128-bit rationals)
  div_zero,     // division by zero (also 0^-n)
  not_rational, // ^ with a non-integer or huge exponent, \sqrt of a non-square
  too_deep,     // nesting beyond the depth limit
};

const char* expr_error_name(ExprError e);

struct ExprOptions {
  ExprDialect dialect = ExprDialect::math;
  bool thousands = false;  // math: accept "1,234" (groups of exactly three digits) as one number
  int max_depth = 100;
};

struct ExprResult {
  std::optional<Rational> value;
  ExprError error = ExprError::none;
  std::vector<int64_t> literals;  // countdown: the integer literals in reading order
};

ExprResult eval_expr(std::string_view text, const ExprOptions& opts = {});

}  // namespace ds::rl
