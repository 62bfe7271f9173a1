#pragma once
// Drawing problem number `index` of a split, deterministically, with train and test disjoint.
//
// Split assignment: a problem belongs to the test split iff text_hash(key) % 1000 < kTestPerMille, where key
// is its canonical form (generators.h). The assignment depends on the problem alone — not on the seed, the
// difficulty or the index — so the train split of any run never holds a problem of the test split of any
// other run, and a test problem can never leak into a corpus (which draws train problems only).
//
// Problem `index`: candidates are drawn from Rng{seed, stream_of({purpose, task, split, difficulty, index}),
// attempt << 32} for attempt = 0, 1, ... until one falls in the split (and, when `seen` is given, is not in
// it yet). The task of a mixed draw and the difficulty of a mixed draw come from their own streams.
#include <cstdint>
#include <string>
#include <string_view>
#include <unordered_set>

#include "tasks/task.h"

namespace ds::tasks {

inline constexpr uint64_t kTestPerMille = 100;  // 10% of all problems are test problems; never change it

Split split_of_key(std::string_view key);

// Who draws: each purpose has its own streams, so corpus and cold-start problems differ from the prompts.
enum class Purpose : uint64_t { prompts = 1, corpus = 2, coldstart = 3, chat = 4 };

struct DrawSpec {
  uint64_t seed = 0;
  Purpose purpose = Purpose::prompts;
  TaskChoice task = TaskChoice::mixed;
  DifficultyChoice difficulty = DifficultyChoice::medium;
  Split split = Split::train;
};

// Gives up after this many candidates for one index (the split, difficulty and `seen` exclude too much).
inline constexpr uint64_t kMaxAttempts = 200000;

// Problem `index` of the spec. With `seen`, a problem already in it is skipped and the new one's key added.
// Usage error when kMaxAttempts candidates give nothing new (asking for more distinct problems than exist).
Problem draw_problem(const DrawSpec& spec, uint64_t index, std::unordered_set<std::string>* seen = nullptr);

}  // namespace ds::tasks
