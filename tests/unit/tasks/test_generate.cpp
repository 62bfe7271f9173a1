#include <catch2/catch.hpp>

#include "core/error.h"
#include "core/io.h"
#include "core/jsonl.h"
#include "helpers.h"
#include "tasks/generate.h"

using namespace ds::tasks;

namespace {

int count_records(const std::string& path) {
  ds::JsonlReader r(path);  // parses every line (simdjson also validates the UTF-8)
  int n = 0;
  while (r.next()) ++n;
  return n;
}

}  // namespace

TEST_CASE("every subcommand writes byte-identical output for the same seed", "[tasks][generate]") {
  ds::test::TempDir dir;
  auto run_all = [&](uint64_t seed, const std::string& tag) {
    PromptsOptions po;
    po.seed = seed;
    CorpusOptions co;
    co.seed = seed;
    ColdstartOptions so;
    so.seed = seed;
    ChatOptions ho;
    ho.seed = seed;
    CHECK(write_prompts(po, 300, dir.file("p" + tag + ".jsonl")) == 300);
    CHECK(write_corpus(co, 300, dir.file("c" + tag + ".jsonl")) == 300);
    CHECK(write_coldstart(so, 100, dir.file("s" + tag + ".jsonl")) == 100);
    CHECK(write_chat(ho, 300, dir.file("h" + tag + ".jsonl")) == 300);
  };
  run_all(42, "a");
  run_all(42, "b");
  run_all(43, "c");
  for (std::string f : {"p", "c", "s", "h"}) {
    INFO(f);
    std::string a = ds::test::slurp(dir.file(f + "a.jsonl"));
    CHECK_FALSE(a.empty());
    CHECK(a == ds::test::slurp(dir.file(f + "b.jsonl")));
    CHECK(a != ds::test::slurp(dir.file(f + "c.jsonl")));
    CHECK(count_records(dir.file(f + "a.jsonl")) == (f == "s" ? 100 : 300));
  }
}

TEST_CASE("prompt records carry the documented fields", "[tasks][generate]") {
  ds::test::TempDir dir;
  PromptsOptions po;
  po.split = Split::test;
  write_prompts(po, 200, dir.file("p.jsonl"));
  ds::JsonlReader r(dir.file("p.jsonl"));
  int i = 0, countdown = 0;
  while (const ds::JsonlRecord* rec = r.next()) {
    std::string task = rec->get_string("task");
    char id[64];
    std::snprintf(id, sizeof id, "%s-test-%06d", task.c_str(), i);
    CHECK(rec->get_string("id") == id);
    CHECK(rec->get_string("split") == "test");
    CHECK(rec->get_string("difficulty") == "medium");
    CHECK_FALSE(rec->get_string("prompt").empty());
    std::string answer = rec->get_string("answer");
    if (task == "countdown") {
      ++countdown;
      auto nums = rec->get_int_array("numbers");
      CHECK(rec->get_string("solution") == answer);
      CHECK(ds::test::tinyzero_countdown_ok(answer, nums, rec->get_int("target")));
    } else {
      REQUIRE(task == "arithmetic");
      auto v = ds::test::IntEval(rec->get_string("expression")).run();
      REQUIRE(v);
      CHECK(std::to_string(int64_t(*v)) == answer);
    }
    ++i;
  }
  CHECK(i == 200);
  CHECK(countdown == Approx(100).margin(25));
}

TEST_CASE(".zst output round-trips and a failed run leaves no file", "[tasks][generate]") {
  ds::test::TempDir dir;
  PromptsOptions po;
  write_prompts(po, 100, dir.file("p.jsonl"));
  write_prompts(po, 100, dir.file("p.jsonl.zst"));
  CHECK(ds::read_file(dir.file("p.jsonl.zst")) == ds::test::slurp(dir.file("p.jsonl")));
  CHECK(ds::test::slurp(dir.file("p.jsonl.zst")) != ds::test::slurp(dir.file("p.jsonl")));

  // more distinct easy test problems than exist: usage error, nothing written
  po.task = TaskChoice::arithmetic;
  po.difficulty = DifficultyChoice::easy;
  po.split = Split::test;
  CHECK_THROWS_AS(write_prompts(po, 10000, dir.file("too_many.jsonl")), ds::Error);
  CHECK_FALSE(ds::path_exists(dir.file("too_many.jsonl")));
  CHECK(std::filesystem::directory_iterator(dir.path()) != std::filesystem::directory_iterator());
  int entries = 0;
  for (auto& e : std::filesystem::directory_iterator(dir.path())) (void)e, ++entries;
  CHECK(entries == 2);  // p.jsonl and p.jsonl.zst only: no temporary left behind
  CHECK_THROWS_AS(write_chat(ChatOptions{}, 5, dir.file("no/such/dir/x.jsonl")), ds::Error);
}

TEST_CASE("the list text names every task and record kind", "[tasks][generate]") {
  std::string t = tasks_list_text();
  for (const char* w : {"countdown", "arithmetic", "mixed", "corpus", "coldstart", "chat", "numbers", "target",
                        "expression", "solution", "easy", "medium", "hard"})
    CHECK(t.find(w) != std::string::npos);
}
