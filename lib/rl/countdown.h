#pragma once
// The countdown verifier (TinyZero's rule, RL.md §2.4, made exact and strict):
//  - the equation is the extracted answer (extract.h; normally the last <answer> block outside <think>);
//    an optional trailing "= N" is allowed when N is a plain integer equal to the target;
//  - the left side uses only non-negative integer literals, binary + - * / and ( ) (no unary signs, no
//    decimals, no other characters: expr.h's countdown dialect);
//  - its integer literals, as a multiset, equal the given numbers (each used exactly once, none missing);
//  - it is evaluated in exact rationals (non-integer intermediate values such as 1/3 are allowed; division
//    by zero rejects the equation) and is correct when |value - target| < 1e-5, decided exactly.
#include <cstdint>
#include <optional>
#include <string_view>
#include <vector>

#include "rl/rational.h"

namespace ds::rl {

enum class CountdownStatus { correct, no_answer, bad_expression, wrong_numbers, div_zero, overflow, wrong_value };
const char* countdown_status_name(CountdownStatus s);

struct CountdownResult {
  CountdownStatus status = CountdownStatus::no_answer;
  std::optional<Rational> value;  // when the expression evaluated
};

// Limits on the task itself (a bigger task is bad input for the caller to report).
constexpr size_t kMaxCountdownNumbers = 64;

CountdownResult verify_countdown(std::string_view equation, const std::vector<int64_t>& numbers,
                                 const Rational& target);

}  // namespace ds::rl
