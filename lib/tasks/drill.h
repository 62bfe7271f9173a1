#pragma once
// Arithmetic drills: documents of one-step facts in shuffled order — the facts that column addition and
// subtraction, multiplication by partial products and long division are made of. A base model learns its
// "times tables" from text like this; a small model trained for minutes gets most of its digit errors from
// missing facts, not from the methods (r1-zero's base wrote "2 + 6 = 7" inside correct column layouts).
#include <string>

#include "core/rng.h"

namespace ds::tasks {

// `lines` facts, one per line, under a title line. Forms (each drawn with equal chance):
//   a + b = s and a + b + 1 = s (a carry), a - b = d with a <= 18 (a borrow), a * b = p, a * b + c = p (a carry
//   in a product), n / d = q, remainder r (a long-division step, 2 <= d <= 9).
std::string arithmetic_drill(Rng& rng, int lines);

}  // namespace ds::tasks
