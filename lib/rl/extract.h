#pragma once
// Final-answer extraction from a completion. Only text outside think blocks is searched (layout.h), so an
// answer that appears only inside <think> ... </think> (or inside a think block that never closes) is no
// answer. Rules, in priority order (each can be switched off):
//
//  answer_tag   the content of the last complete <answer>...</answer> block; when that content holds a
//               complete \boxed{...}, the last such box's content instead.
//  boxed        the content of the last complete \boxed{...} or \fbox{...} (brace matching, LaTeX escapes
//               \{ \} do not count; "last" = the outermost box that closes last). A box that never closes
//               (truncated output) is skipped and an earlier complete one is used.
//  answer_line  the last line with "answer:" / "final answer:" (case-insensitive, optionally in **bold**),
//               "answer is" ("The answer is 42."), or a line starting with "####" (GSM8K): the rest of that
//               line after the last such marker.
//
// All scans are linear in the input size.
#include <optional>
#include <string>
#include <string_view>

#include "rl/layout.h"

namespace ds::rl {

enum class AnswerRule { none, answer_tag, boxed, answer_line };
const char* answer_rule_name(AnswerRule r);

struct ExtractOptions {
  bool answer_tag = true;
  bool boxed = true;
  bool answer_line = true;
};

// Parses "answer_tag,boxed,answer_line" (any subset, any order is accepted; priority stays fixed).
// Returns false on an unknown name.
bool parse_extract_rules(std::string_view list, ExtractOptions* out);

struct Extracted {
  std::optional<std::string> answer;  // trimmed; nullopt when no rule matched
  AnswerRule rule = AnswerRule::none;
};

Extracted extract_answer(std::string_view completion, const ExtractOptions& opts = {});
// The same on a layout computed already (the text must be the one analysed).
Extracted extract_answer(std::string_view completion, const Layout& layout, const ExtractOptions& opts = {});

// The content of the last complete \boxed{...} / \fbox{...} in s (see above), or nullopt.
std::optional<std::string_view> last_boxed(std::string_view s);

std::string_view trim(std::string_view s);

}  // namespace ds::rl
