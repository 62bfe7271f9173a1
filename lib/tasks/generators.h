#pragma once
// Candidate problems of each task, drawn from one Rng. A candidate is not yet assigned to a split: see
// problems.h, which draws candidates until one falls in the requested split.
#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include "core/rng.h"
#include "tasks/task.h"

namespace ds::tasks {

// Countdown (TinyZero): 3-4 numbers in 1..100 and a target reachable with + - * / using every number exactly
// once. The target is made by combining all the numbers in a random order with random operations whose
// intermediate results are positive integers (division only when exact); that combination is the solution.
//   easy: 3 numbers, target 1..100;  medium: 3 or 4 numbers, target 1..100;  hard: 4 numbers, target 101..999.
// Nothing when the draw misses the target range (the caller draws again).
std::optional<Problem> countdown_candidate(Rng& rng, Difficulty d);
// "Using the numbers [19, 36, 55, 7], create an equation that equals 65. You can use basic arithmetic
// operations (+, -, *, /) and each number can only be used once."  (TinyZero's wording)
std::string countdown_prompt(const std::vector<int64_t>& numbers, int64_t target);
// "countdown:7,19,36,55=65" (numbers sorted: the order they are listed in does not make another problem)
std::string countdown_key(const std::vector<int64_t>& numbers, int64_t target);

// Arithmetic on non-negative integers with an exact integer answer.
//   easy: one of + - * / on 2-digit numbers (division: a 2-digit quotient and a divisor of 2..20);
//   medium: one operation on 3-4 digit numbers (* by a 2-3 digit factor; / by a 2-digit divisor);
//   hard: 2-3 operations with parentheses on 5-6 digit numbers (* by a 2-3 digit factor, / by a 2-digit
//         divisor of a number it divides).
// Subtractions never go below zero.
std::optional<Problem> arithmetic_candidate(Rng& rng, Difficulty d);
std::string arithmetic_prompt(const std::string& expression);  // "What is 1234 + 5678?"
std::string arithmetic_key(const std::string& expression);     // "arithmetic:1234 + 5678"

}  // namespace ds::tasks
