#pragma once
// Pre-training and cold-start data built from worked solutions of train-split problems.
//
// corpus: {"text"} documents in three styles — the R1-Zero template followed by <think> reasoning </think>
//   <answer>, a bare question followed by the same tags, and plain prose — with a controlled share of imperfect
//   reasoning (a slip that is caught, or one that is not and ends in a wrong answer) and of mixed-language
//   reasoning (Chinese sentences inside English reasoning), so that RL and the language-consistency reward have
//   something to fix.
// coldstart: chat examples in R1's cold-start output format, adapted: the user turn is the problem; the
//   assistant turn is "<think>\n" careful English reasoning with verification "\n</think>\n", a one-sentence
//   summary, then "<answer>X</answer>". Always correct, single-language.
#include <cstdint>
#include <string>

#include "tasks/problems.h"
#include "tasks/task.h"

namespace ds::tasks {

// R1-Zero's training template (DeepSeek-R1 paper, Table 1), the text before "User: ".
extern const char* const kR1ZeroPreamble;

struct CorpusOptions {
  uint64_t seed = 1234;
  TaskChoice task = TaskChoice::mixed;
  DifficultyChoice difficulty = DifficultyChoice::mixed;
  double imperfect_share = 0.1;         // documents with a slip
  double wrong_fraction = 0.5;          // of the imperfect ones: the slip is not caught, the answer is wrong
  double mixed_language_share = 0.1;    // documents whose reasoning switches into Chinese
  double template_share = 0.4;          // R1-Zero template documents
  double prose_share = 0.3;             // plain prose documents (the rest: question + <think>/<answer> tags)
  double verify_share = 0.3;            // documents whose reasoning ends with a check
  double detail_share = 0.8;            // documents with digit-level (column) steps
  // The same for the tagged styles (r1zero, tags); < 0: detail_share. A base model whose tagged answers are
  // mostly short but whose prose works digit by digit is R1-Zero's starting point in miniature: it can reason
  // at length, and RL has to find out that it pays in the template.
  double tagged_detail_share = -1;
  bool uniform_wording = false;         // one English phrasing per sentence (Voice::set_uniform)
  double drill_share = 0;               // arithmetic drill documents (tasks/drill.h), style "drill"
  int max_dead_ends = 3;                // countdown: failed attempts before the solution, at most
};

struct CorpusDoc {
  Problem problem;
  std::string text;
  std::string style;  // "r1zero", "tags", "prose" or "drill"
  bool imperfect = false;
  bool correct = true;
  bool mixed_language = false;
};

// Document `index` (a pure function of the options and the index).
CorpusDoc corpus_doc(const CorpusOptions& o, uint64_t index);
// {"text": ..., "task": ..., "style": ..., "correct": ..., "imperfect": ..., "mixed_language": ..., "key": ...}
std::string corpus_record_json(const CorpusDoc& d);

struct ColdstartOptions {
  uint64_t seed = 1234;
  TaskChoice task = TaskChoice::mixed;
  DifficultyChoice difficulty = DifficultyChoice::mixed;
  bool summary = true;    // a summary sentence between </think> and <answer>
  int max_dead_ends = 3;  // countdown search
  // Share of examples whose reasoning switches into Chinese (R1's cold start is readable, i.e. 0; a noisy cold
  // start gives the language-consistency reward something to remove in a small demo).
  double mixed_language_share = 0.0;
};

struct ColdstartExample {
  Problem problem;
  std::string user, assistant;
  std::string answer;  // the answer the assistant gives (countdown: the equation its search found)
};

ColdstartExample coldstart_example(const ColdstartOptions& o, uint64_t index);
// {"id": ..., "messages": [{"role":"user",...},{"role":"assistant",...}], "task": ..., "answer": ..., ...}
std::string coldstart_record_json(const ColdstartExample& e, uint64_t index);

// The prompt record: {"id", "task", "split", "difficulty", "prompt", "answer", + task fields}.
std::string prompt_record_json(const Problem& p, Split split, uint64_t index);

}  // namespace ds::tasks
