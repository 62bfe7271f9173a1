#include "tasks/generate.h"

#include <functional>
#include <unordered_set>

#include "core/io.h"
#include "tasks/problems.h"

namespace ds::tasks {

namespace {

int64_t write_records(int64_t n, const std::string& output, const std::function<std::string(uint64_t)>& record) {
  Writer w(output);
  for (int64_t i = 0; i < n; ++i) {
    std::string line = record(uint64_t(i));
    line += '\n';
    w.write(line);
  }
  w.commit();
  return n;
}

}  // namespace

int64_t write_prompts(const PromptsOptions& o, int64_t n, const std::string& output) {
  std::unordered_set<std::string> seen;
  DrawSpec spec{o.seed, Purpose::prompts, o.task, o.difficulty, o.split};
  return write_records(n, output, [&](uint64_t i) {
    return prompt_record_json(draw_problem(spec, i, &seen), o.split, i);
  });
}

int64_t write_corpus(const CorpusOptions& o, int64_t n, const std::string& output) {
  return write_records(n, output, [&](uint64_t i) { return corpus_record_json(corpus_doc(o, i)); });
}

int64_t write_coldstart(const ColdstartOptions& o, int64_t n, const std::string& output) {
  return write_records(n, output, [&](uint64_t i) { return coldstart_record_json(coldstart_example(o, i), i); });
}

int64_t write_chat(const ChatOptions& o, int64_t n, const std::string& output) {
  ChatSource src(o);
  return write_records(n, output, [&](uint64_t i) { return src.record_json(i); });
}

std::string tasks_list_text() {
  return R"(TASKS (ds-tasks prompts --task NAME)
  countdown   TinyZero's Countdown: reach the target from 3-4 numbers (1-100) with + - * /, each number
              used exactly once. Any equation that does so is correct.
              fields: id, task, split, difficulty, prompt, answer (one valid equation), numbers [int],
                      target (int), solution (the generator's equation, = answer)
              easy: 3 numbers, target 1-100; medium: 3 or 4 numbers, target 1-100; hard: 4 numbers, target 101-999
  arithmetic  Exact integer arithmetic: + - * and exact division.
              fields: id, task, split, difficulty, prompt, answer (the integer, as a string), expression
              easy: one operation on 2-digit numbers; medium: one operation on 3-4 digit numbers;
              hard: 2-3 operations with parentheses on 5-6 digit numbers
  mixed       countdown and arithmetic, half each (each record's "task" says which)

SPLITS
  train, test: a problem is in test iff a fixed hash of its canonical form falls in the first 10%;
  the same for every seed and difficulty, so the splits never overlap. corpus and coldstart use train only.

OTHER RECORDS
  corpus      {"text", "task", "style" (r1zero|tags|prose), "correct", "imperfect", "mixed_language", "key"}
  coldstart   {"id", "messages" [user, assistant], "task", "difficulty", "answer", + numbers/target for countdown}
  chat        {"id", "messages" [user, assistant, ...], "task": "chat", "category"}
)";
}

}  // namespace ds::tasks
