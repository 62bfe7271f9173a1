#pragma once
// Rejection-sampling filters (DeepSeek-R1 §2.3.3, RL.md §4): keep correct samples whose chain of thought is
// readable, drop the rest with one reason each. The per-sample checks run in this order and the first
// failing one names the drop:
//
//   unscored        reward is null or missing (the reward could not be computed)
//   incorrect       rewards.accuracy < 1 (when the record has no rewards.accuracy: reward < --min-reward,
//                   or reward <= 0 when no --min-reward is given)
//   low_reward      reward < min_reward (when given)
//   truncated       finish_reason "length" (the sample never finished)
//   think_tags      not exactly one <think> ... </think> block with a letter or digit in it and a non-empty
//                   answer after it (missing, duplicated or unclosed tags)
//   code_block      a ``` fence anywhere in the completion (with drop_code_blocks)
//   long_paragraph  a line (text between newlines) longer than max_paragraph_chars code points
//   mixed_language  share of chain-of-thought words outside the target language > max_mixed_share
//   repetitive      n-gram repetition ratio (penalty.h) > max_repetition
// and then, over the samples that passed:
//   duplicate       the same prompt already kept a completion with the same normalised text (whitespace
//                   runs collapsed to one space, ends trimmed; compared by a 64-bit hash)
//   over_cap        the prompt already kept max_per_prompt samples
#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <unordered_map>
#include <unordered_set>

#include "rl/language.h"

namespace ds::rl {

enum class DropReason {
  unscored,
  incorrect,
  low_reward,
  truncated,
  think_tags,
  code_block,
  long_paragraph,
  mixed_language,
  repetitive,
  duplicate,
  over_cap,
  count_
};
const char* drop_reason_name(DropReason r);

struct RejectOptions {
  std::optional<double> min_reward;
  bool drop_truncated = true;
  bool require_think = true;
  bool drop_code_blocks = false;
  int64_t max_paragraph_chars = 0;           // 0 = off
  std::optional<LanguageSpec> language;      // mixed-language filter when set
  double max_mixed_share = 0.1;
  double max_repetition = 1.0;               // >= 1 = off
  int repetition_ngram = 3;
  bool dedupe = true;
  int64_t max_per_prompt = 0;                // 0 = no cap
};

struct Candidate {
  std::string_view completion;      // as checked (with "<think>\n" prepended when the template prefilled it)
  std::optional<double> reward;
  std::optional<double> accuracy;   // rewards.accuracy
  bool truncated = false;
};

std::optional<DropReason> check_sample(const Candidate& c, const RejectOptions& o);

// Longest line, in code points.
int64_t longest_line(std::string_view s);

// 64-bit hash of s with whitespace runs collapsed and the ends trimmed.
uint64_t normalized_text_hash(std::string_view s);

// The stateful part: dedupe and the per-prompt cap. Memory: one hash per kept sample, one counter per prompt.
class RejectState {
 public:
  explicit RejectState(const RejectOptions& o) : o_(o) {}
  // nullopt = keep (and remember it).
  std::optional<DropReason> admit(const std::string& prompt_key, std::string_view completion);

 private:
  const RejectOptions& o_;
  std::unordered_set<uint64_t> seen_;
  std::unordered_map<std::string, int64_t> kept_;
};

}  // namespace ds::rl
