#pragma once
// ds-rejsample's stream: rewarded rollouts in, chat JSONL for ds-sft out (see man/ds-rejsample.1).
//
// A kept record becomes
//   {"messages":[{"role":"user","content":PROMPT},{"role":"assistant","content":COMPLETION}],
//    "id":ID,"task":TASK,"source":"rejsample"}
// (a prompt that is already a message list is used as it is, the assistant turn appended; id and task are
// copied when present). The completion is written verbatim. Fields read: prompt (string or array of
// message objects), completion (string), reward (number or null), rewards.accuracy, finish_reason
// ("length" = truncated), truncated (bool), group / prompt / id for the prompt key.
// Bad records follow ds-reward's contract (stop after committing the good ones, or skip_bad).
#include <array>
#include <cstdint>
#include <string>

#include "rl/reject.h"

namespace ds::rl {

struct RejsampleOptions {
  std::string input = "-";
  std::string output = "-";
  RejectOptions reject;
  bool prepend_think = false;  // check "<think>\n" + completion (templates that prefill the tag)
  bool skip_bad = false;
  std::string report_json;
};

struct RejsampleReport {
  int64_t read = 0, kept = 0, bad = 0;
  std::array<int64_t, static_cast<size_t>(DropReason::count_)> dropped{};
  std::string first_bad;
  int64_t dropped_total() const;
  std::string to_text() const;  // "read 10, kept 4, dropped 6: incorrect 3, duplicate 2, over_cap 1"
  std::string to_json() const;
};

RejsampleReport rejsample_stream(const RejsampleOptions& o);

}  // namespace ds::rl
