#include "tasks/task.h"

#include "core/error.h"

namespace ds::tasks {

const char* task_name(Task t) { return t == Task::countdown ? "countdown" : "arithmetic"; }
const char* split_name(Split s) { return s == Split::train ? "train" : "test"; }
const char* difficulty_name(Difficulty d) {
  switch (d) {
    case Difficulty::easy: return "easy";
    case Difficulty::medium: return "medium";
    case Difficulty::hard: return "hard";
    case Difficulty::basic: return "basic";
  }
  return "?";
}

TaskChoice parse_task_choice(std::string_view s) {
  if (s == "countdown") return TaskChoice::countdown;
  if (s == "arithmetic") return TaskChoice::arithmetic;
  if (s == "mixed") return TaskChoice::mixed;
  throw_usage("--task " + std::string(s) + ": expected countdown, arithmetic or mixed");
}

Split parse_split(std::string_view s) {
  if (s == "train") return Split::train;
  if (s == "test") return Split::test;
  throw_usage("--split " + std::string(s) + ": expected train or test");
}

DifficultyChoice parse_difficulty_choice(std::string_view s) {
  if (s == "basic") return DifficultyChoice::basic;
  if (s == "easy") return DifficultyChoice::easy;
  if (s == "medium") return DifficultyChoice::medium;
  if (s == "hard") return DifficultyChoice::hard;
  if (s == "mixed") return DifficultyChoice::mixed;
  throw_usage("--difficulty " + std::string(s) + ": expected basic, easy, medium, hard or mixed");
}

}  // namespace ds::tasks
