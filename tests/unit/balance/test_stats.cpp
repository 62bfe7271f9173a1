// The expert-load statistics reader: window / moving average, and bad files (file:line errors, exit 3).
#include <catch2/catch.hpp>

#include <cstdio>
#include <fstream>
#include <string>
#include <unistd.h>

#include "balance/stats.h"
#include "core/error.h"

using namespace ds::balance;

namespace {

std::string write_tmp(const std::string& name, const std::string& text) {
  std::string p = "/tmp/ds_test_balance_" + std::to_string(::getpid()) + "_" + name;
  std::ofstream(p) << text;
  return p;
}

// The error's exit code and message of reading `text`.
std::pair<int, std::string> read_error(const std::string& text) {
  std::string p = write_tmp("bad.jsonl", text);
  try {
    read_expert_stats({p}, {});
  } catch (const ds::Error& e) {
    std::remove(p.c_str());
    return {e.exit_code(), e.what()};
  }
  std::remove(p.c_str());
  return {0, ""};
}

const char* kTwoSteps =
    "{\"step\":1,\"layer\":1,\"counts\":[1,2,3]}\n"
    "{\"step\":1,\"layer\":2,\"counts\":[4,5,6]}\n"
    "{\"step\":2,\"layer\":1,\"counts\":[3,2,1]}\n"
    "{\"step\":2,\"layer\":2,\"counts\":[6,5,4]}\n";

}  // namespace

TEST_CASE("stats: mean over all steps, last K steps, moving average, several files") {
  std::string p = write_tmp("two.jsonl", kTwoSteps);
  ExpertLoads all = read_expert_stats({p}, {});
  CHECK(all.layer_ids == std::vector<int64_t>{1, 2});
  CHECK(all.steps == 2);
  CHECK(all.loads[0] == std::vector<double>{2, 2, 2});
  CHECK(all.loads[1] == std::vector<double>{5, 5, 5});
  ExpertLoads last = read_expert_stats({p}, {1, 0});
  CHECK(last.loads[0] == std::vector<double>{3, 2, 1});
  CHECK(last.first_step == 2);
  ExpertLoads ema = read_expert_stats({p}, {0, 0.25});
  CHECK(ema.loads[0][0] == Approx(0.25 * 3 + 0.75 * 1));
  // the same file twice: four steps (file, step), same mean
  ExpertLoads two = read_expert_stats({p, p}, {});
  CHECK(two.steps == 4);
  CHECK(two.loads[1] == std::vector<double>{5, 5, 5});
  std::remove(p.c_str());
}

TEST_CASE("stats: bad files are bad-input errors naming file:line") {
  auto [c1, m1] = read_error("");
  CHECK(c1 == 3);
  CHECK_THAT(m1, Catch::Contains("empty"));
  auto [c2, m2] = read_error("{\"step\":1,\"layer\":0,\"counts\":[1,2,3]}\n{\"step\":1,\"layer\":1,\"counts\":[1,2]}\n");
  CHECK(c2 == 3);
  CHECK_THAT(m2, Catch::Contains(":2)"));
  CHECK_THAT(m2, Catch::Contains("2 experts"));
  auto [c3, m3] = read_error("{\"step\":1,\"layer\":0,\"counts\":[1,-2,3]}\n");
  CHECK(c3 == 3);
  CHECK_THAT(m3, Catch::Contains("counts[1]"));
  auto [c4, m4] = read_error("{\"step\":1,\"layer\":0,\"counts\":[1,NaN,3]}\n");
  CHECK(c4 == 3);
  CHECK_THAT(m4, Catch::Contains(":1)"));
  auto [c5, m5] = read_error(
      "{\"step\":1,\"layer\":0,\"counts\":[1]}\n{\"step\":1,\"layer\":1,\"counts\":[1]}\n"
      "{\"step\":2,\"layer\":0,\"counts\":[1]}\n");
  CHECK(c5 == 3);
  CHECK_THAT(m5, Catch::Contains("no record for layer 1"));
  CHECK_THAT(m5, Catch::Contains(":3)"));
  auto [c6, m6] = read_error("{\"step\":1,\"layer\":0,\"counts\":[1]}\n{\"step\":1,\"layer\":0,\"counts\":[2]}\n");
  CHECK(c6 == 3);
  CHECK_THAT(m6, Catch::Contains("twice"));
  auto [c7, m7] = read_error("{\"step\":1,\"layer\":0,\"counts\":\"x\"}\n");
  CHECK(c7 == 3);
  auto [c8, m8] = read_error("{\"step\":1,\"layer\":0,\"counts\":[]}\n");
  CHECK(c8 == 3);
  auto [c9, m9] = read_error("{\"step\":1,\"layer\":0,\"counts\":[1,2");
  CHECK(c9 == 3);
}
