#include <catch2/catch.hpp>

#include <map>
#include <set>

#include "core/jsonl.h"
#include "helpers.h"
#include "tasks/chat.h"
#include "tasks/corpus.h"
#include "tasks/problems.h"

using namespace ds::tasks;

TEST_CASE("coldstart: R1 format, correct answers, English only, train problems", "[tasks][coldstart]") {
  ColdstartOptions o;
  o.seed = 5;
  std::map<std::string, int> tasks;
  for (uint64_t i = 0; i < 600; ++i) {
    ColdstartExample ex = coldstart_example(o, i);
    const Problem& p = ex.problem;
    INFO(ex.assistant);
    tasks[task_name(p.task)]++;
    CHECK(split_of_key(p.key) == Split::train);
    CHECK(ex.user == p.prompt);
    const std::string& a = ex.assistant;
    CHECK(a.rfind("<think>\n", 0) == 0);
    size_t close = a.find("\n</think>\n");
    REQUIRE(close != std::string::npos);
    CHECK(a.find("<think>", 1) == std::string::npos);  // one think block
    std::string tail = "<answer>" + ex.answer + "</answer>";
    REQUIRE(a.size() > tail.size());
    CHECK(a.compare(a.size() - tail.size(), tail.size(), tail) == 0);
    std::string summary = a.substr(close + 10, a.size() - tail.size() - close - 10);
    CHECK(summary.size() > 10);  // a summary line between </think> and <answer>
    CHECK(summary.back() == '\n');
    CHECK_FALSE(ds::test::has_cjk_bytes(a));
    // long and careful: several steps and a verification
    CHECK(std::count(a.begin(), a.end(), '\n') >= 6);
    CHECK((a.find("verify") != std::string::npos || a.find("Check") != std::string::npos ||
           a.find("check") != std::string::npos));
    if (p.task == Task::countdown) {
      CHECK(ds::test::tinyzero_countdown_ok(ex.answer, p.numbers, p.target));
    } else {
      CHECK(ex.answer == p.answer);
      auto v = ds::test::IntEval(format_expr(p.expr)).run();
      REQUIRE(v);
      CHECK(std::to_string(int64_t(*v)) == ex.answer);
    }
    ds::JsonlRecord r = ds::parse_object(coldstart_record_json(ex, i), "coldstart");
    auto msgs = r.get_object_array("messages");
    REQUIRE(msgs.size() == 2);
    CHECK(msgs[0].get_string("role") == "user");
    CHECK(msgs[0].get_string("content") == ex.user);
    CHECK(msgs[1].get_string("role") == "assistant");
    CHECK(msgs[1].get_string("content") == ex.assistant);
    CHECK(r.get_string("answer") == ex.answer);
    CHECK(r.get_string("task") == task_name(p.task));
  }
  CHECK(tasks["countdown"] > 200);
  CHECK(tasks["arithmetic"] > 200);

  o.summary = false;
  ColdstartExample ex = coldstart_example(o, 0);
  CHECK(ex.assistant.find("\n</think>\n<answer>") != std::string::npos);
}

TEST_CASE("chat: a few hundred distinct direct answers, no chain of thought", "[tasks][chat]") {
  const auto& pool = chat_pool();
  CHECK(pool.size() >= 300);
  std::set<std::string> users;
  std::set<std::pair<std::string, std::string>> pairs;
  std::set<std::string> categories;
  for (const ChatPair& c : pool) {
    users.insert(c.user);
    pairs.insert({c.user, c.assistant});
    categories.insert(c.category);
    CHECK(c.assistant.find("<think>") == std::string::npos);
    CHECK_FALSE(c.user.empty());
    CHECK_FALSE(c.assistant.empty());
  }
  CHECK(users.size() == pool.size());  // no question twice
  CHECK(categories.size() >= 8);
  CHECK(pairs.count({"Hi!", "Hello! How can I help you today?"}) == 1);
  CHECK(pairs.count({"What is the capital of France?", "Paris."}) == 1);

  ChatOptions o;
  o.seed = 3;
  ChatSource src(o), again(o);
  std::set<std::string> first_pass;
  int multi = 0;
  for (uint64_t i = 0; i < pool.size() + 50; ++i) {
    std::string line = src.record_json(i);
    CHECK(line == again.record_json(i));
    ds::JsonlRecord r = ds::parse_object(line, "chat");
    auto msgs = r.get_object_array("messages");
    REQUIRE(msgs.size() % 2 == 0);
    REQUIRE(msgs.size() >= 2);
    for (size_t k = 0; k < msgs.size(); ++k)
      CHECK(msgs[k].get_string("role") == (k % 2 ? "assistant" : "user"));
    multi += msgs.size() > 2;
    if (i < pool.size()) first_pass.insert(msgs[msgs.size() - 2].get_string("content"));
    CHECK(r.get_string("task") == "chat");
  }
  CHECK(first_pass.size() == pool.size());  // one pass covers the pool once
  CHECK(multi == Approx(0.15 * double(pool.size() + 50)).margin(0.06 * double(pool.size())));
  // Records are independent of the order they are asked for.
  ChatSource fresh(o);
  CHECK(fresh.record_json(pool.size() + 3) == src.record_json(pool.size() + 3));
  CHECK(fresh.record_json(2) == src.record_json(2));
}
