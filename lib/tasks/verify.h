#pragma once
// Checking answers to the built-in tasks: an exact evaluator for "+ - * / ( )" expressions over integer
// literals, and the countdown rule (TinyZero's: every given number used exactly once, value equals the target).
#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

namespace ds::tasks {

struct Fraction {
  int64_t num = 0, den = 1;  // reduced, den > 0
  bool is_integer() const { return den == 1; }
};

// Evaluates an expression of non-negative integer literals, + - * /, unary minus and parentheses, exactly (as
// reduced fractions). Returns nothing on a syntax error, a division by zero, a non-integer literal or an
// overflow; *literals (when given) receives the literals in order.
std::optional<Fraction> eval_expression(std::string_view text, std::vector<int64_t>* literals = nullptr);

// TinyZero's countdown rule: `equation` uses only digits, + - * / ( ) and spaces, its literals are the given
// numbers (as a multiset: each exactly once) and its value equals `target` exactly. *why gets the reason of a
// rejection.
bool countdown_check(std::string_view equation, const std::vector<int64_t>& numbers, int64_t target,
                     std::string* why = nullptr);

}  // namespace ds::tasks
