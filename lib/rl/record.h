#pragma once
// Reading and writing the rollout records both ds-reward and ds-rejsample handle (DESIGN.md formats):
// the prompt key used to group samples, the length of a completion, and splicing new fields into a
// record while every input field passes through byte for byte.
#include <cstdint>
#include <functional>
#include <initializer_list>
#include <string>
#include <string_view>

#include "core/jsonl.h"

namespace ds::rl {

// Which samples belong to one prompt: the raw JSON of "group" if present, else of "prompt", else of "id",
// else "" (all such records form one group).
std::string prompt_key(const JsonlRecord& rec);

// The record's JSON text up to (not including) its closing brace, with the members named in `replaced`
// left out; *empty tells whether no member is left. Input fields pass through exactly as written. The view
// points into rec.line() when no member is replaced (the common case), else into *storage.
std::string_view record_base(const JsonlRecord& rec, std::initializer_list<std::string_view> replaced, bool* empty,
                             std::string* storage);

// base + (",") + members + "}\n" where members is a comma-separated list of "key":value.
std::string splice_record(std::string_view base, bool empty, std::string_view members);

// The error-handling contract shared by the stream programs: a bad record either stops the run (after the
// good records before it were written and committed) or, with skip_bad, is counted and skipped.
struct BadRecords {
  int64_t count = 0;
  std::string first;  // message of the first one, with its file:line
  std::string last;   // to notice a reader that fails on the same spot forever
};

// Runs `each` on every record of `in`. A bad-input error, while reading a line or in `each`, either ends the run —
// `stop()` first saves what was good (commit the output), then the error propagates — or, with skip_bad, is counted
// in `bad` and skipped. The same error twice in a row means the reader cannot get past it: that ends the run too.
void for_each_record(JsonlReader& in, bool skip_bad, BadRecords& bad,
                     const std::function<void(const JsonlRecord&)>& each, const std::function<void()>& stop);

}  // namespace ds::rl
