#pragma once
// ds-reward's stream: rollouts JSONL in, the same records with reward fields out (see man/ds-reward.1).
//
// Each output record is the input record, every field byte for byte, plus
//   "reward": total | null, "rewards": {name: value | null}, "extracted_answer": string | null,
//   and "reward_skip_reason": "..." when the total is null.
// Input fields with these names are replaced. Fields read: completion (string, required), task
// ("countdown" selects the countdown verifier, anything else the accuracy check), answer (string or
// number; missing or null = no gold answer: the sample is skipped), numbers (array of non-negative
// integers) and target (number) for countdown, completion_tokens (count or id array) for token lengths,
// group / prompt / id for the prompt key.
//
// Bad records (malformed JSON, a required field missing or of the wrong type): by default the run stops
// with a bad-input error naming file:line, after every good record before it was written and the output
// committed; with skip_bad they are left out, counted and the first one reported.
// Memory is constant except for the summary (per prompt) and, with the Kimi length reward, one group.
#include <cstdint>
#include <string>
#include <vector>

#include "rl/reward.h"

namespace ds::rl {

enum class LengthUnit { auto_, tokens, chars };

struct RewardStreamOptions {
  std::string input = "-";
  std::string output = "-";
  RewardConfig cfg;
  std::string answer_field = "answer";
  LengthUnit length_unit = LengthUnit::auto_;
  bool skip_bad = false;
  bool summary = false;          // print the summary on stderr
  std::string summary_json;      // and/or write it to this file
  std::vector<int64_t> ks = {1, 4, 8};
};

struct RewardStreamStats {
  int64_t read = 0;     // good records
  int64_t written = 0;
  int64_t skipped = 0;  // written with reward null
  int64_t bad = 0;
  std::string first_bad;
};

RewardStreamStats reward_stream(const RewardStreamOptions& o);

}  // namespace ds::rl
