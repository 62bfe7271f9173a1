#pragma once
// The format reward, checked by a hand-written scanner over the tag layout (layout.h) — linear time, no
// regular expressions. R1-Zero's template asks for
//
//     <think> reasoning </think> <answer> answer </answer>
//
// and the check is anchored at both ends (think_answer style):
//   - the text (after leading whitespace) starts with <think>;
//   - the tags are exactly <think>, </think>, <answer>, </answer>, once each and in this order — a repeated
//     or nested block gets no credit (open-r1 PR #418's hack: several think/answer blocks);
//   - the reasoning and the answer each contain at least one letter or digit (an empty or punctuation-only
//     block gets no credit: "<think></think>" hack, RL.md §8.5);
//   - only whitespace between </think> and <answer> and after </answer>.
// The think style (R1's "<think> reasoning </think> summary", no answer tags) requires exactly one <think>
// and one </think>, in order, at the start, a reasoning block with a letter or digit, a non-empty text after
// </think>, and no answer tags at all.
#include <string_view>

#include "rl/layout.h"

namespace ds::rl {

enum class FormatStyle { think_answer, think };

// "ok" or the first failed rule: "text_before_think", "tags" (missing, repeated or out of order),
// "empty_think", "text_between", "empty_answer", "text_after".
struct FormatResult {
  bool ok = false;
  const char* reason = "tags";
};

FormatResult check_format(std::string_view text, const Layout& layout, FormatStyle style = FormatStyle::think_answer);
FormatResult check_format(std::string_view text, FormatStyle style = FormatStyle::think_answer);

// True when s holds a letter (any script) or a decimal digit.
bool has_word_character(std::string_view s);

}  // namespace ds::rl
