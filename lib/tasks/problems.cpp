#include "tasks/problems.h"

#include "core/error.h"
#include "tasks/generators.h"
#include "tasks/random.h"

namespace ds::tasks {

namespace {

// Stream tags (part of the output format: changing one changes every generated file).
constexpr uint64_t kTagTaskMix = 101, kTagDifficultyMix = 102;

Task task_for(const DrawSpec& s, uint64_t index) {
  switch (s.task) {
    case TaskChoice::countdown: return Task::countdown;
    case TaskChoice::arithmetic: return Task::arithmetic;
    case TaskChoice::mixed: break;
  }
  Rng r{s.seed, stream_of({uint64_t(s.purpose), kTagTaskMix, uint64_t(s.split), index}), 0};
  return r.next_below(2) == 0 ? Task::countdown : Task::arithmetic;
}

Difficulty difficulty_for(const DrawSpec& s, uint64_t index) {
  switch (s.difficulty) {
    case DifficultyChoice::basic: return Difficulty::basic;
    case DifficultyChoice::easy: return Difficulty::easy;
    case DifficultyChoice::medium: return Difficulty::medium;
    case DifficultyChoice::hard: return Difficulty::hard;
    case DifficultyChoice::mixed: break;
  }
  Rng r{s.seed, stream_of({uint64_t(s.purpose), kTagDifficultyMix, uint64_t(s.split), index}), 0};
  return Difficulty(r.next_below(3));
}

}  // namespace

Split split_of_key(std::string_view key) {
  return text_hash(key) % 1000 < kTestPerMille ? Split::test : Split::train;
}

Problem draw_problem(const DrawSpec& spec, uint64_t index, std::unordered_set<std::string>* seen) {
  Task task = task_for(spec, index);
  Difficulty diff = difficulty_for(spec, index);
  uint64_t stream =
      stream_of({uint64_t(spec.purpose), uint64_t(task), uint64_t(spec.split), uint64_t(diff), index});
  for (uint64_t attempt = 0; attempt < kMaxAttempts; ++attempt) {
    Rng rng{spec.seed, stream, attempt << 32};
    std::optional<Problem> p =
        task == Task::countdown ? countdown_candidate(rng, diff) : arithmetic_candidate(rng, diff);
    if (!p || split_of_key(p->key) != spec.split) continue;
    if (seen && !seen->insert(p->key).second) continue;
    return std::move(*p);
  }
  throw_usage(std::string("cannot draw problem ") + std::to_string(index) + " of " + task_name(task) + " (" +
              difficulty_name(diff) + ", " + split_name(spec.split) + "): " +
              (seen ? std::to_string(seen->size()) + " distinct problems drawn already; ask for fewer (--n)"
                    : std::string("no candidate in this split")));
}

}  // namespace ds::tasks
