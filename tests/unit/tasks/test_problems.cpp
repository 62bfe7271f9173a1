#include <catch2/catch.hpp>

#include <set>
#include <unordered_set>

#include "core/error.h"
#include "helpers.h"
#include "tasks/corpus.h"
#include "tasks/generators.h"
#include "tasks/problems.h"
#include "tasks/verify.h"

using namespace ds::tasks;

namespace {

std::string difficulty_label(DifficultyChoice d) {
  switch (d) {
    case DifficultyChoice::easy: return "easy";
    case DifficultyChoice::medium: return "medium";
    case DifficultyChoice::hard: return "hard";
    default: return "mixed";
  }
}

std::vector<Problem> draw_many(uint64_t seed, TaskChoice t, DifficultyChoice d, Split s, int n) {
  std::unordered_set<std::string> seen;
  std::vector<Problem> out;
  for (int i = 0; i < n; ++i) out.push_back(draw_problem({seed, Purpose::prompts, t, d, s}, uint64_t(i), &seen));
  return out;
}

int digits(int64_t v) { return int(std::to_string(v).size()); }

}  // namespace

TEST_CASE("problems are a pure function of (seed, task, split, difficulty, index)", "[tasks][problems]") {
  for (TaskChoice t : {TaskChoice::countdown, TaskChoice::arithmetic, TaskChoice::mixed}) {
    auto a = draw_many(7, t, DifficultyChoice::mixed, Split::train, 200);
    auto b = draw_many(7, t, DifficultyChoice::mixed, Split::train, 200);
    auto c = draw_many(8, t, DifficultyChoice::mixed, Split::train, 200);
    int same_as_other_seed = 0;
    for (size_t i = 0; i < a.size(); ++i) {
      CHECK(prompt_record_json(a[i], Split::train, i) == prompt_record_json(b[i], Split::train, i));
      same_as_other_seed += a[i].key == c[i].key;
    }
    CHECK(same_as_other_seed < 20);
  }
  // A prefix of a longer run is the shorter run.
  auto shorter = draw_many(3, TaskChoice::mixed, DifficultyChoice::medium, Split::test, 50);
  auto longer = draw_many(3, TaskChoice::mixed, DifficultyChoice::medium, Split::test, 100);
  for (size_t i = 0; i < shorter.size(); ++i) CHECK(shorter[i].key == longer[i].key);
}

TEST_CASE("train and test splits are disjoint, for any seeds, and problems are distinct", "[tasks][problems]") {
  for (DifficultyChoice d : {DifficultyChoice::easy, DifficultyChoice::medium, DifficultyChoice::hard}) {
    for (TaskChoice t : {TaskChoice::countdown, TaskChoice::arithmetic}) {
      DYNAMIC_SECTION("task " << int(t) << " difficulty " << difficulty_label(d)) {
        auto train = draw_many(11, t, d, Split::train, 2000);
        auto test = draw_many(12, t, d, Split::test, 2000);  // another seed on purpose
        std::set<std::string> train_keys, test_keys;
        for (const Problem& p : train) {
          train_keys.insert(p.key);
          CHECK(split_of_key(p.key) == Split::train);
        }
        for (const Problem& p : test) {
          test_keys.insert(p.key);
          CHECK(split_of_key(p.key) == Split::test);
        }
        CHECK(train_keys.size() == 2000);  // no duplicates within a split
        CHECK(test_keys.size() == 2000);
        for (const std::string& k : test_keys) REQUIRE(train_keys.count(k) == 0);
      }
    }
  }
}

TEST_CASE("every countdown problem is solvable with its solution, each number exactly once", "[tasks][problems]") {
  for (DifficultyChoice d : {DifficultyChoice::easy, DifficultyChoice::medium, DifficultyChoice::hard}) {
    auto ps = draw_many(5, TaskChoice::countdown, d, Split::train, 1000);
    auto more = draw_many(5, TaskChoice::countdown, d, Split::test, 300);
    ps.insert(ps.end(), more.begin(), more.end());
    std::set<size_t> sizes;
    for (const Problem& p : ps) {
      INFO(p.key << " solution " << p.answer);
      CHECK(p.task == Task::countdown);
      sizes.insert(p.numbers.size());
      CHECK(p.numbers.size() >= 3);
      CHECK(p.numbers.size() <= 4);
      for (int64_t n : p.numbers) {
        CHECK(n >= 1);
        CHECK(n <= 100);
      }
      if (d == DifficultyChoice::hard) {
        CHECK(p.numbers.size() == 4);
        CHECK(p.target > 100);
        CHECK(p.target < 1000);
      } else {
        CHECK(p.target >= 1);
        CHECK(p.target <= 100);
      }
      if (d == DifficultyChoice::easy) CHECK(p.numbers.size() == 3);
      // Independent evaluators (the test's, and TinyZero's floating rule), then the library's.
      ds::test::IntEval ev(p.answer);
      auto v = ev.run();
      REQUIRE(v);
      CHECK(int64_t(*v) == p.target);
      std::vector<int64_t> used = ev.numbers, given = p.numbers;
      std::sort(used.begin(), used.end());
      std::sort(given.begin(), given.end());
      CHECK(used == given);
      CHECK(ds::test::tinyzero_countdown_ok(p.answer, p.numbers, p.target));
      CHECK(countdown_check(p.answer, p.numbers, p.target));
      CHECK(p.prompt == countdown_prompt(p.numbers, p.target));
      CHECK(p.prompt.find("create an equation that equals " + std::to_string(p.target) + ".") != std::string::npos);
    }
    if (d == DifficultyChoice::medium) CHECK(sizes == std::set<size_t>{3, 4});
  }
}

TEST_CASE("arithmetic answers are correct and the operands fit the difficulty", "[tasks][problems]") {
  for (DifficultyChoice d : {DifficultyChoice::easy, DifficultyChoice::medium, DifficultyChoice::hard}) {
    auto ps = draw_many(9, TaskChoice::arithmetic, d, Split::train, 1500);
    std::set<char> ops;
    for (const Problem& p : ps) {
      std::string text = format_expr(p.expr);
      INFO(text << " = " << p.answer);
      CHECK(p.prompt == "What is " + text + "?");
      ds::test::IntEval ev(text);
      auto v = ev.run();
      REQUIRE(v);  // integer-exact all the way (every division exact)
      CHECK(*v >= 0);
      CHECK(std::to_string(int64_t(*v)) == p.answer);
      for (const auto& n : p.expr.nodes)
        if (n.op) ops.insert(n.op);
      int nops = 0;
      for (const auto& n : p.expr.nodes) nops += n.op != 0;
      if (d == DifficultyChoice::hard) {
        CHECK(nops >= 2);
        CHECK(nops <= 3);
        CHECK(text.find('(') != std::string::npos);
      } else {
        CHECK(nops == 1);
        char op = p.expr.at(p.expr.root).op;
        int64_t a = p.expr.at(p.expr.at(p.expr.root).left).value, b = p.expr.at(p.expr.at(p.expr.root).right).value;
        if (op == '+' || op == '-') {
          int lo = d == DifficultyChoice::easy ? 2 : 3, hi = d == DifficultyChoice::easy ? 2 : 4;
          CHECK(digits(a) >= lo);
          CHECK(digits(a) <= hi);
          CHECK(digits(b) >= lo);
          CHECK(digits(b) <= hi);
        }
        if (op == '/') CHECK(digits(int64_t(*v)) == (d == DifficultyChoice::easy ? 2 : digits(int64_t(*v))));
      }
    }
    CHECK(ops == std::set<char>{'+', '-', '*', '/'});
  }
}

TEST_CASE("asking for more distinct problems than a split holds is a usage error", "[tasks][problems]") {
  std::unordered_set<std::string> seen;
  DrawSpec spec{1, Purpose::prompts, TaskChoice::arithmetic, DifficultyChoice::easy, Split::test};
  try {
    for (uint64_t i = 0; i < 100000; ++i) draw_problem(spec, i, &seen);
    FAIL("no error");
  } catch (const ds::Error& e) {
    CHECK(e.kind() == ds::ErrorKind::usage);
    CHECK(std::string(e.what()).find("ask for fewer") != std::string::npos);
  }
  CHECK(seen.size() > 1500);  // about 10% of ~22,000 easy problems
}
