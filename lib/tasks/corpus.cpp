#include "tasks/corpus.h"

#include <cstdio>

#include "core/error.h"
#include "core/json.h"
#include "tasks/drill.h"
#include "tasks/random.h"
#include "tasks/worked.h"

namespace ds::tasks {

const char* const kR1ZeroPreamble =
    "A conversation between User and Assistant. The user asks a question, and the Assistant solves it. The "
    "assistant first thinks about the reasoning process in the mind and then provides the user with the answer. "
    "The reasoning process and answer are enclosed within <think> </think> and <answer> </answer> tags, "
    "respectively, i.e., <think> reasoning process here </think> <answer> answer here </answer>.";

namespace {

// Stream tags (part of the output format).
constexpr uint64_t kTagCorpusChoices = 201, kTagCorpusText = 202, kTagCorpusDrill = 203;
constexpr uint64_t kTagColdText = 301, kTagColdMix = 302;

std::string padded(uint64_t i) {
  char buf[32];
  std::snprintf(buf, sizeof buf, "%06llu", static_cast<unsigned long long>(i));
  return buf;
}

std::string tagged(const std::string& reasoning, const std::string& answer) {
  return "<think>\n" + reasoning + "\n</think>\n<answer>" + answer + "</answer>";
}

}  // namespace

std::string prompt_record_json(const Problem& p, Split split, uint64_t index) {
  JsonWriter w;
  w.begin_object();
  w.kv("id", std::string(task_name(p.task)) + "-" + split_name(split) + "-" + padded(index));
  w.kv("task", task_name(p.task));
  w.kv("split", split_name(split));
  w.kv("difficulty", difficulty_name(p.difficulty));
  w.kv("prompt", p.prompt);
  w.kv("answer", p.answer);
  if (p.task == Task::countdown) {
    w.key("numbers").begin_array();
    for (int64_t n : p.numbers) w.value(n);
    w.end_array();
    w.kv("target", p.target);
    w.kv("solution", format_expr(p.expr));
  } else {
    w.kv("expression", format_expr(p.expr));
  }
  w.end_object();
  return w.take();
}

CorpusDoc corpus_doc(const CorpusOptions& o, uint64_t index) {
  // Drills come from a stream of their own: with drill_share 0 every other document is what it always was.
  Rng drill_rng{o.seed, stream_of({uint64_t(Purpose::corpus), kTagCorpusDrill, index}), 0};
  if (o.drill_share > 0 && draw_chance(drill_rng, o.drill_share)) {
    CorpusDoc d;
    d.style = "drill";
    d.problem.task = Task::arithmetic;
    d.problem.key = "arithmetic:drill";
    d.text = arithmetic_drill(drill_rng, 16);
    return d;
  }
  Rng pick{o.seed, stream_of({uint64_t(Purpose::corpus), kTagCorpusChoices, index}), 0};
  CorpusDoc d;
  d.imperfect = draw_chance(pick, o.imperfect_share);
  bool wrong = d.imperfect && draw_chance(pick, o.wrong_fraction);
  d.mixed_language = draw_chance(pick, o.mixed_language_share);
  double u = pick.next_uniform();
  d.style = u < o.template_share ? "r1zero" : u < o.template_share + o.prose_share ? "prose" : "tags";
  WorkOptions wo;
  const bool tagged_style = d.style != "prose";
  wo.detail = draw_chance(pick, tagged_style && o.tagged_detail_share >= 0 ? o.tagged_detail_share : o.detail_share);
  wo.verify = draw_chance(pick, o.verify_share);
  wo.slip = !d.imperfect ? Slip::none : wrong ? Slip::wrong : Slip::corrected;
  wo.max_dead_ends = o.max_dead_ends;

  d.problem = draw_problem({o.seed, Purpose::corpus, o.task, o.difficulty, Split::train}, index);
  Rng text_rng{o.seed, stream_of({uint64_t(Purpose::corpus), kTagCorpusText, index}), 0};
  Voice v(text_rng, d.mixed_language);
  v.set_uniform(o.uniform_wording);
  Worked w = work_problem(d.problem, v, wo);
  if (d.mixed_language && !contains_cjk(join_lines(w.lines)))
    w.lines.insert(w.lines.begin(), draw_chance(text_rng, 0.5) ? "好的，我们一步一步来。" : "我们先想一想。");
  d.correct = w.correct;
  // A "wrong" slip may happen to land on a right answer (countdown); the flags say what the text holds.
  d.imperfect = w.slipped;

  const Problem& p = d.problem;
  if (d.style == "r1zero") {
    d.text = std::string(kR1ZeroPreamble) + " User: " + p.prompt + " Assistant: " + tagged(join_lines(w.lines), w.answer);
  } else if (d.style == "tags") {
    d.text = p.prompt + "\n" + tagged(join_lines(w.lines), w.answer);
  } else {
    bool qa = draw_chance(text_rng, 0.5);
    d.text = std::string(qa ? "Question: " : "Problem: ") + p.prompt + "\n" + (qa ? "" : "Solution: ") +
             join_lines(w.lines, draw_chance(text_rng, 0.5) ? "\n" : " ") + "\n" +
             (qa ? "Answer: " : "Final answer: ") + w.answer;
  }
  return d;
}

std::string corpus_record_json(const CorpusDoc& d) {
  JsonWriter w;
  w.begin_object();
  w.kv("text", d.text);
  w.kv("task", task_name(d.problem.task));
  w.kv("style", d.style);
  w.kv("correct", d.correct);
  w.kv("imperfect", d.imperfect);
  w.kv("mixed_language", d.mixed_language);
  w.kv("key", d.problem.key);
  w.end_object();
  return w.take();
}

ColdstartExample coldstart_example(const ColdstartOptions& o, uint64_t index) {
  ColdstartExample ex;
  ex.problem = draw_problem({o.seed, Purpose::coldstart, o.task, o.difficulty, Split::train}, index);
  const Problem& p = ex.problem;
  Rng text_rng{o.seed, stream_of({uint64_t(Purpose::coldstart), kTagColdText, index}), 0};
  Rng mix_rng{o.seed, stream_of({uint64_t(Purpose::coldstart), kTagColdMix, index}), 0};  // own stream: share 0 = old text
  const bool mixed = o.mixed_language_share > 0 && draw_chance(mix_rng, o.mixed_language_share);
  Voice v(text_rng, mixed);
  WorkOptions wo;
  wo.detail = true;
  wo.verify = true;
  wo.max_dead_ends = o.max_dead_ends;
  Worked w = work_problem(p, v, wo);
  DS_CHECK(w.correct, "a cold-start solution is wrong: " + p.key);
  std::string plan =
      p.task == Task::countdown
          ? v.english({{"I will combine the numbers step by step, drop combinations that cannot reach the target, "
                        "and check the final equation before answering.",
                        "Plan: try combinations of the numbers, back up on dead ends, then verify the equation."},
                       {}})
          : v.english({{"I will work through it carefully, one operation at a time, and then verify the result.",
                        "Plan: compute each operation digit by digit, then check the result with the inverse "
                        "operation."},
                       {}});
  w.lines.insert(w.lines.begin() + 1, plan);
  ex.user = p.prompt;
  ex.answer = w.answer;
  ex.assistant = "<think>\n" + join_lines(w.lines) + "\n</think>\n" + (o.summary ? w.summary + "\n" : "") +
                 "<answer>" + w.answer + "</answer>";
  return ex;
}

std::string coldstart_record_json(const ColdstartExample& e, uint64_t index) {
  const Problem& p = e.problem;
  JsonWriter w;
  w.begin_object();
  w.kv("id", "coldstart-" + padded(index));
  w.key("messages").begin_array();
  w.begin_object().kv("role", "user").kv("content", e.user).end_object();
  w.begin_object().kv("role", "assistant").kv("content", e.assistant).end_object();
  w.end_array();
  w.kv("task", task_name(p.task));
  w.kv("difficulty", difficulty_name(p.difficulty));
  w.kv("answer", e.answer);
  if (p.task == Task::countdown) {
    w.key("numbers").begin_array();
    for (int64_t n : p.numbers) w.value(n);
    w.end_array();
    w.kv("target", p.target);
  }
  w.end_object();
  return w.take();
}

}  // namespace ds::tasks
