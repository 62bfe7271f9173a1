#pragma once
// Worked solutions: the reasoning a careful solver writes down for a problem, line by line — column
// addition and subtraction with carries and borrows, multiplication by partial products, long division,
// order of operations, and for countdown a search that tries combinations, backtracks and reaches the target.
// Optionally with a slip: an arithmetic mistake that is caught and corrected, or one that is not and leads to a
// wrong final answer (material for RL to fix).
#include <string>
#include <vector>

#include "tasks/task.h"
#include "tasks/voice.h"

namespace ds::tasks {

enum class Slip { none, corrected, wrong };

struct WorkOptions {
  bool detail = true;   // digit-level steps inside each operation (column methods)
  bool verify = false;  // end with a check of the result (inverse operations; countdown: the numbers used)
  Slip slip = Slip::none;
  int max_dead_ends = 3;  // countdown: at most this many failed attempts before the solution
};

struct Worked {
  std::vector<std::string> lines;  // the reasoning, one step per line
  std::string answer;              // what the solver concludes (may be wrong with Slip::wrong)
  std::string summary;             // one English sentence stating the result and how it was reached
  bool correct = true;             // the answer is right (checked, not assumed)
  bool slipped = false;            // a slip was written (corrected or not)
};

Worked work_arithmetic(const Problem& p, Voice& v, const WorkOptions& o);
Worked work_countdown(const Problem& p, Voice& v, const WorkOptions& o);
inline Worked work_problem(const Problem& p, Voice& v, const WorkOptions& o) {
  return p.task == Task::countdown ? work_countdown(p, v, o) : work_arithmetic(p, v, o);
}

std::string join_lines(const std::vector<std::string>& lines, const char* sep = "\n");

}  // namespace ds::tasks
