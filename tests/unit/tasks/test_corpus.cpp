#include <catch2/catch.hpp>

#include <map>
#include <set>
#include <unordered_set>

#include "core/jsonl.h"
#include "helpers.h"
#include "tasks/corpus.h"
#include "tasks/problems.h"
#include "tasks/verify.h"
#include "tasks/voice.h"

using namespace ds::tasks;

namespace {

// Whether `answer` is right for the document's problem, judged without the library's generator.
bool answer_right(const Problem& p, const std::string& answer) {
  if (p.task == Task::countdown) return ds::test::tinyzero_countdown_ok(answer, p.numbers, p.target);
  auto v = ds::test::IntEval(format_expr(p.expr)).run();
  return v && std::to_string(int64_t(*v)) == answer;
}

// Test problems of every task and difficulty, as a corpus could meet them.
std::unordered_set<std::string> test_keys() {
  std::unordered_set<std::string> keys;
  for (DifficultyChoice d : {DifficultyChoice::easy, DifficultyChoice::medium, DifficultyChoice::hard})
    for (TaskChoice t : {TaskChoice::countdown, TaskChoice::arithmetic}) {
      std::unordered_set<std::string> seen;
      for (uint64_t i = 0; i < 2000; ++i) draw_problem({1234, Purpose::prompts, t, d, Split::test}, i, &seen);
      keys.insert(seen.begin(), seen.end());
    }
  return keys;
}

}  // namespace

TEST_CASE("corpus: configured shares of imperfect and mixed-language documents, honest flags", "[tasks][corpus]") {
  CorpusOptions o;
  o.seed = 99;
  o.imperfect_share = 0.1;
  o.mixed_language_share = 0.1;
  const int n = 4000;
  int imperfect = 0, mixed = 0, wrong = 0, corrected = 0;
  std::map<std::string, int> styles, tasks;
  std::set<std::string> texts;
  for (int i = 0; i < n; ++i) {
    CorpusDoc d = corpus_doc(o, uint64_t(i));
    INFO("doc " << i << ": " << d.text);
    texts.insert(d.text);
    styles[d.style]++;
    tasks[task_name(d.problem.task)]++;
    imperfect += d.imperfect;
    mixed += d.mixed_language;
    // The flags describe the text: Chinese iff mixed, the stated answer right iff correct.
    CHECK(ds::test::has_cjk_bytes(d.text) == d.mixed_language);
    CHECK(contains_cjk(d.text) == d.mixed_language);
    std::string answer = ds::test::extract_answer(d.text);
    CHECK(answer_right(d.problem, answer) == d.correct);
    if (!d.imperfect) CHECK(d.correct);
    if (d.imperfect && !d.correct) ++wrong;
    if (d.imperfect && d.correct) ++corrected;
    // Never a test problem.
    CHECK(split_of_key(d.problem.key) == Split::train);
    // Styles
    if (d.style == "r1zero") {
      CHECK(d.text.rfind(kR1ZeroPreamble, 0) == 0);
      CHECK(d.text.find(" User: " + d.problem.prompt + " Assistant: <think>\n") != std::string::npos);
    }
    if (d.style != "prose") {
      CHECK(d.text.find("\n</think>\n<answer>") != std::string::npos);
      CHECK(d.text.size() >= 9);
      CHECK(d.text.compare(d.text.size() - 9, 9, "</answer>") == 0);
    } else {
      CHECK(d.text.find("<think>") == std::string::npos);
    }
    // The record is one line of valid JSON with the text intact.
    std::string line = corpus_record_json(d);
    CHECK(line.find('\n') == std::string::npos);
    ds::JsonlRecord r = ds::parse_object(line, "corpus");
    CHECK(r.get_string("text") == d.text);
    CHECK(r.get_bool("imperfect") == d.imperfect);
  }
  CHECK(imperfect == Approx(0.1 * n).margin(0.025 * n));
  CHECK(mixed == Approx(0.1 * n).margin(0.025 * n));
  CHECK(wrong > 0.03 * n);      // about half of the imperfect ones
  CHECK(corrected > 0.03 * n);  // the rest caught their slip
  CHECK(styles["r1zero"] == Approx(0.4 * n).margin(0.05 * n));
  CHECK(styles["prose"] == Approx(0.3 * n).margin(0.05 * n));
  CHECK(tasks["countdown"] == Approx(0.5 * n).margin(0.05 * n));
  CHECK(texts.size() > size_t(n * 0.99));  // varied
}

TEST_CASE("corpus: shares of 0 and 1 give none and all", "[tasks][corpus]") {
  CorpusOptions o;
  o.imperfect_share = 0;
  o.mixed_language_share = 1;
  o.template_share = 1;
  o.prose_share = 0;
  for (int i = 0; i < 300; ++i) {
    CorpusDoc d = corpus_doc(o, uint64_t(i));
    CHECK_FALSE(d.imperfect);
    CHECK(d.correct);
    CHECK(d.mixed_language);
    CHECK(ds::test::has_cjk_bytes(d.text));
    CHECK(d.style == "r1zero");
  }
  o.imperfect_share = 1;
  o.wrong_fraction = 1;
  o.mixed_language_share = 0;
  int wrong = 0;
  for (int i = 0; i < 300; ++i) {
    CorpusDoc d = corpus_doc(o, uint64_t(i));
    CHECK_FALSE(ds::test::has_cjk_bytes(d.text));
    wrong += !d.correct;
  }
  CHECK(wrong == 300);  // every slip left uncaught ends in a wrong answer
}

TEST_CASE("corpus never holds a test-split problem", "[tasks][corpus]") {
  std::unordered_set<std::string> keys = test_keys();
  REQUIRE(keys.size() > 11000);  // difficulties overlap a little (3-number countdown)
  for (uint64_t seed : {1234ull, 1ull}) {
    CorpusOptions o;
    o.seed = seed;
    for (int i = 0; i < 3000; ++i) REQUIRE(keys.count(corpus_doc(o, uint64_t(i)).problem.key) == 0);
  }
}

TEST_CASE("corpus documents are a pure function of the options and index", "[tasks][corpus]") {
  CorpusOptions o;
  CorpusOptions other = o;
  other.seed = o.seed + 1;
  int same = 0;
  for (int i = 0; i < 200; ++i) {
    CHECK(corpus_record_json(corpus_doc(o, uint64_t(i))) == corpus_record_json(corpus_doc(o, uint64_t(i))));
    same += corpus_doc(o, uint64_t(i)).text == corpus_doc(other, uint64_t(i)).text;
  }
  CHECK(same < 5);
}

TEST_CASE("corpus: drill documents hold true one-step facts; drill_share 0 leaves the other documents as they were",
          "[tasks][corpus]") {
  CorpusOptions o;
  o.task = TaskChoice::arithmetic;
  o.difficulty = DifficultyChoice::basic;
  CorpusOptions drills = o;
  drills.drill_share = 0.3;
  int n_drill = 0, facts = 0;
  for (int i = 0; i < 400; ++i) {
    CorpusDoc d = corpus_doc(drills, uint64_t(i));
    if (d.style != "drill") {
      CHECK(d.text == corpus_doc(o, uint64_t(i)).text);  // the drill draw has a stream of its own
      continue;
    }
    ++n_drill;
    std::vector<std::string> lines;
    size_t start = 0;
    for (size_t nl; (nl = d.text.find('\n', start)) != std::string::npos; start = nl + 1)
      lines.push_back(d.text.substr(start, nl - start));
    lines.push_back(d.text.substr(start));
    REQUIRE(lines.size() == 17);
    CHECK(lines[0] == "Arithmetic facts:");
    for (size_t k = 1; k < lines.size(); ++k) {
      // "<expr> = <value>" or "<n> / <d> = <q>, remainder <r>": checked by an independent evaluator
      std::string line = lines[k];
      const size_t eq = line.find(" = ");
      REQUIRE(eq != std::string::npos);
      const std::string lhs = line.substr(0, eq), rhs = line.substr(eq + 3);
      if (const size_t rem = rhs.find(", remainder "); rem != std::string::npos) {
        const int64_t n = std::stoll(lhs.substr(0, lhs.find(" / "))), dv = std::stoll(lhs.substr(lhs.find(" / ") + 3));
        const int64_t q = std::stoll(rhs.substr(0, rem)), r = std::stoll(rhs.substr(rem + 12));
        CHECK(n == q * dv + r);
        CHECK((r >= 0 && r < dv && dv >= 2 && dv <= 9));
      } else {
        auto v = ds::test::IntEval(lhs).run();
        REQUIRE(v);
        CHECK(std::to_string(int64_t(*v)) == rhs);
      }
      ++facts;
    }
  }
  CHECK(n_drill > 90);
  CHECK(n_drill < 150);
  CHECK(facts == 16 * n_drill);
}

TEST_CASE("corpus: uniform wording keeps the problems and drops the phrasing variants; tagged detail share",
          "[tasks][corpus]") {
  CorpusOptions o;
  o.task = TaskChoice::arithmetic;
  o.difficulty = DifficultyChoice::basic;
  o.template_share = 0;
  o.prose_share = 0;  // all "tags": one line layout, so the openings can be compared
  o.mixed_language_share = 0;
  o.imperfect_share = 0;
  CorpusOptions u = o;
  u.uniform_wording = true;
  std::set<std::string> openings, uniform_openings;
  for (int i = 0; i < 200; ++i) {
    CorpusDoc a = corpus_doc(o, uint64_t(i)), b = corpus_doc(u, uint64_t(i));
    CHECK(a.problem.key == b.problem.key);
    auto first_step = [](const std::string& t) {
      const size_t s = t.find("<think>\n") + 8;
      const std::string line = t.substr(s, t.find('\n', s) - s);
      return line.substr(0, line.find(' ', line.find(' ') + 1));  // the first two words
    };
    openings.insert(first_step(a.text));
    uniform_openings.insert(first_step(b.text));
  }
  CHECK(openings.size() >= 3);
  CHECK(uniform_openings.size() == 1);

  // tagged_detail_share 0 with detail_share 1: prose works digit by digit, tagged documents never do.
  CorpusOptions t = o;
  t.prose_share = 0.5;
  t.detail_share = 1;
  t.tagged_detail_share = 0;
  t.verify_share = 0;
  t.uniform_wording = true;
  int prose_detail = 0, prose = 0, tagged_detail = 0;
  for (int i = 0; i < 300; ++i) {
    CorpusDoc d = corpus_doc(t, uint64_t(i));
    const bool detail = d.text.find("column by column") != std::string::npos ||
                        d.text.find("digit by digit") != std::string::npos ||
                        d.text.find("Long division") != std::string::npos;
    if (d.style == "prose") prose += 1, prose_detail += detail;
    else tagged_detail += detail;
  }
  CHECK(prose > 100);
  CHECK(tagged_detail == 0);
  CHECK(prose_detail > prose * 7 / 10);  // some problems (0 * 4) have no digit work to show
}
