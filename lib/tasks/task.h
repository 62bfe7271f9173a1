#pragma once
// The vocabulary of the built-in reasoning tasks: task kinds, splits, difficulties and one problem.
#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

#include "tasks/expr.h"

namespace ds::tasks {

enum class Task { countdown, arithmetic };
enum class Split { train, test };
// basic (appended last: the enum value seeds the problem streams) is the CPU-sized R1-Zero demo level.
enum class Difficulty { easy, medium, hard, basic };

// What a command asks for: one task or both, one difficulty or a mix.
enum class TaskChoice { countdown, arithmetic, mixed };
enum class DifficultyChoice { easy, medium, hard, mixed, basic };

const char* task_name(Task t);
const char* split_name(Split s);
const char* difficulty_name(Difficulty d);
// Parsers for the command line; a usage error (exit 2) names the accepted values.
TaskChoice parse_task_choice(std::string_view s);
Split parse_split(std::string_view s);
DifficultyChoice parse_difficulty_choice(std::string_view s);

struct Problem {
  Task task = Task::arithmetic;
  Difficulty difficulty = Difficulty::medium;
  std::string prompt;  // the problem statement in plain English
  std::string answer;  // the gold answer: arithmetic the integer, countdown one valid equation
  std::string key;     // canonical form (decides the split, detects duplicates)
  // arithmetic: the expression to evaluate; countdown: the solution the generator built (value = target).
  Expr expr;
  // countdown only: the numbers in the order the prompt lists them, and the target
  std::vector<int64_t> numbers;
  int64_t target = 0;
};

}  // namespace ds::tasks
