#pragma once
// Rule rewards for one rollout (pure: no I/O). The total is the weighted sum of the enabled terms:
//
//   accuracy   1 when the extracted answer equals the gold answer (answer.h), else 0; for countdown tasks 1
//              when the equation verifies (countdown.h). null (the sample is skipped) when the gold answer
//              is missing or cannot be parsed — never a silent 0.
//   format     1 when the completion passes the anchored format check (format.h), else 0.
//   language   share of chain-of-thought words in the target language (language.h); the chain of thought
//              is the text of the think blocks, or the whole completion when it has none.
//   length     DAPO overlong punishment per sample, or Kimi's group length reward (penalty.h).
//   repetition n-gram repetition penalty (penalty.h), weight 1, value in [max_penalty, 0].
//
// A term with weight 0 is not computed and not reported, except accuracy, which is always computed (it is
// the correctness every summary and ds-rejsample rely on). When accuracy is null and its weight is not 0,
// the total is null too and skip_reason says why.
#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "rl/extract.h"
#include "rl/format.h"
#include "rl/language.h"
#include "rl/rational.h"

namespace ds::rl {

enum class LengthPenalty { none, overlong, kimi };

struct RewardConfig {
  double accuracy_weight = 1.0;
  double format_weight = 1.0;
  FormatStyle format_style = FormatStyle::think_answer;
  double language_weight = 0.0;
  LanguageSpec language;
  ExtractOptions extract;
  bool prepend_think = false;  // the prompt template prefilled "<think>\n": score "<think>\n" + completion
  LengthPenalty length = LengthPenalty::none;
  double length_weight = 1.0;
  int64_t max_length = 0;       // overlong: L_max
  int64_t overlong_buffer = 0;  // overlong: L_cache
  double repetition_penalty = 0.0;  // max penalty (<= 0); 0 = off
  int repetition_ngram = 3;
};

enum class TaskKind { accuracy, countdown };

struct RolloutInput {
  std::string_view completion;
  TaskKind kind = TaskKind::accuracy;
  std::optional<std::string_view> gold;  // accuracy: the gold answer text (nullopt = none given)
  std::vector<int64_t> numbers;          // countdown
  Rational target;                       // countdown
  int64_t length = 0;                    // for the length terms (tokens or characters, the caller decides)
};

struct RewardResult {
  std::optional<double> accuracy, format, language, length, repetition;
  std::optional<double> total;
  std::string skip_reason;               // set when total is null
  std::optional<std::string> extracted;  // the extracted answer, if any
  bool correct = false;
  std::string vote_key;                  // for maj@k; "" when there is no answer
};

RewardResult score_rollout(const RolloutInput& in, const RewardConfig& cfg);

// Kimi's group length reward: fills `length` for each result of one group and recomputes the totals.
void apply_group_length(std::vector<RewardResult>& group, const std::vector<int64_t>& lengths,
                        const RewardConfig& cfg);

// Recomputes total / skip_reason from the terms (used after a group-level term was filled in).
void finish_total(RewardResult& r, const RewardConfig& cfg);

}  // namespace ds::rl
