#pragma once
// Answer normalisation and equivalence without a computer algebra system.
//
// normalize_answer() cleans the LaTeX around an answer: surrounding $...$, $$...$$, \(...\), \[...\],
// a whole-answer \boxed{...}/\fbox{...}, **bold**, a trailing full stop; \text{...}, \textbf, \mathrm,
// \mathbf, \mbox, \textit, \mathit keep their content, except a trailing unit (\text{ cm}: letters and
// spaces only, after something else) which is dropped; ^\circ, ^{\circ}, °, \left, \right, \displaystyle,
// LaTeX spaces (\, \! \; \: "\ " ~) and the thousands group "{,}" go away; \% becomes %; "x = 5" becomes
// "5" when the left side is one or two letters.
//
// parse_answer() classifies the cleaned answer:
//   number  an exact rational from expr.h's math dialect ("3.50", "7/2", "\frac{7}{2}", "\dfrac72",
//           "1,234", "-2^{3}", "2\frac{1}{2}", "(1+2)*3"), with a percent flag for a trailing %.
//   tuple   "(1, 2)", "[0, 1]", "(0, 1]" or a bare "1, 2": items split at top-level commas; each item is
//           a number, a tuple or text. A comma list that reads as one number with thousands separators
//           ("1,234", every group exactly three digits) is that number, not a tuple.
//   text    anything else: compared as a string with whitespace removed and ASCII lower-cased
//           ("\sqrt{2}", "\pi", "B", "yes").
// It refuses (returns nullopt with a reason) answers that are empty after cleaning, longer than
// kMaxAnswerBytes, not valid UTF-8, or with unbalanced ( ) [ ] { }.
//
// answers_equal(gold, pred):
//   number/number  exact rational equality ("3.50" == "3.5" == "7/2"... no rounding: 0.333 != 1/3).
//                  Percent rule: when exactly one side has a %, X% equals Y if Y == X or Y == X/100
//                  ("50%" matches both "50" and "0.5"; datasets spell percentages both ways); when both
//                  have one, the numbers must be equal.
//   tuple/tuple    same length, item-wise equal in order; "(...)" and a bare list are interchangeable,
//                  any other bracket must match exactly ("[0,1]" != "(0,1)").
//   text/text      the canonical strings are equal.
//   otherwise      not equal (an integer gold never matches text such as "5 apples").
#include <cstddef>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "rl/rational.h"

namespace ds::rl {

constexpr size_t kMaxAnswerBytes = 1024;

std::string normalize_answer(std::string_view s);

enum class AnswerKind { number, tuple, text };

struct ParsedAnswer {
  AnswerKind kind = AnswerKind::text;
  Rational value;          // number
  bool percent = false;    // number written with a trailing %
  char open = 0, close = 0;  // tuple brackets; 0 for a bare list
  std::vector<ParsedAnswer> items;  // tuple
  std::string text;        // text: the canonical string
};

// nullopt when the answer cannot be used; *why (if given) then says why ("empty", "too long",
// "invalid UTF-8", "unbalanced brackets").
std::optional<ParsedAnswer> parse_answer(std::string_view raw, std::string* why = nullptr);

bool answers_equal(const ParsedAnswer& gold, const ParsedAnswer& pred);

// Convenience: parse both and compare; a prediction that cannot be parsed is not equal.
bool answers_equal(std::string_view gold, std::string_view pred);

// A canonical key: answers with the same key are equal (the converse holds except for the percent rule,
// where "50%" gets the key of 1/2). Used to group answers for majority voting.
std::string answer_key(const ParsedAnswer& a);

}  // namespace ds::rl
