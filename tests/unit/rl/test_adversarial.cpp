// Adversarial inputs: 10 MB strings that would make a backtracking regex or a quadratic scan crawl, deep
// nesting, invalid UTF-8. Everything must finish in (generous) linear time and never crash.
#include <catch2/catch.hpp>

#include <chrono>
#include <functional>

#include "rl/answer.h"
#include "rl/countdown.h"
#include "rl/extract.h"
#include "rl/format.h"
#include "rl/language.h"
#include "rl/penalty.h"
#include "rl/reject.h"
#include "rl/reward.h"

using namespace ds::rl;

namespace {

constexpr size_t kBig = 10u << 20;  // 10 MB

std::string repeat(std::string_view unit, size_t bytes) {
  std::string s;
  s.reserve(bytes + unit.size());
  while (s.size() < bytes) s.append(unit);
  return s;
}

// Seconds taken by every scorer on s. The limits are far above the measured times (a few hundred ms for
// 10 MB in a release build) but far below what a quadratic algorithm would need (hours).
double time_all(const std::string& s) {
  auto t0 = std::chrono::steady_clock::now();
  Layout L = analyse(s);
  (void)extract_answer(s, L);
  (void)check_format(s, L);
  (void)check_format(s, L, FormatStyle::think);
  (void)last_boxed(s);
  LanguageSpec en;
  (void)count_words(s, en);
  (void)parse_answer(s);
  (void)verify_countdown(s, {1, 2, 3}, Rational::of(6));
  (void)longest_line(s);
  (void)normalized_text_hash(s);
  RolloutInput in;
  in.completion = s;
  in.gold = "42";
  RewardConfig cfg;
  cfg.language_weight = 1;
  (void)score_rollout(in, cfg);
  return std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
}

}  // namespace

TEST_CASE("adversarial: 10 MB inputs are scored in linear time") {
  const std::vector<std::pair<const char*, std::string>> cases = {
      {"open boxes", repeat("\\boxed{", kBig)},
      {"open braces in a box", "\\boxed{" + repeat("{", kBig)},
      {"closing braces", repeat("}", kBig) + "\\boxed{1}"},
      {"boxes closing late", repeat("\\boxed{", kBig / 2) + repeat("}", kBig / 2)},
      {"think tags", repeat("<think>", kBig)},
      {"close tags", repeat("</think>", kBig)},
      {"answer tags", repeat("<answer>", kBig)},
      {"answer blocks", repeat("<answer>1</answer>", kBig)},
      {"almost tags", repeat("<thin<answe</answe<", kBig)},
      {"answer lines", repeat("The answer is 5\n", kBig)},
      {"one long answer line", repeat("answer is ", kBig)},
      {"no newline", repeat("a", kBig)},
      {"newlines", repeat("\n", kBig)},
      {"backslashes", repeat("\\", kBig)},
      {"parens", repeat("(", kBig)},
      {"invalid utf8", repeat("\xFF\xC0\xE4\xB8", kBig)},
      {"cjk", repeat("\xE4\xB8\xAD", kBig)},
      {"think then huge answer", "<think>a</think><answer>" + repeat("(1+", kBig) + "</answer>"},
  };
  for (const auto& [name, s] : cases) {
    INFO(name);
    double t = time_all(s);
    CHECK(t < 5.0);
  }
}

TEST_CASE("adversarial: repetition on 10 MB") {
  std::string s = repeat("wait wait let me check ", kBig);
  auto t0 = std::chrono::steady_clock::now();
  double r = repetition_ratio(s, 3);
  double t = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  CHECK(r > 0.99);
  CHECK(t < 5.0);
}

TEST_CASE("adversarial: huge extracted answers are refused, not parsed") {
  std::string s = "<answer>" + repeat("9", 1 << 20) + "</answer>";
  Extracted e = extract_answer(s);
  REQUIRE(e.answer);
  std::string why;
  CHECK_FALSE(parse_answer(*e.answer, &why));
  CHECK(why == "too long");
  CHECK(verify_countdown(*e.answer, {9}, Rational::of(9)).status == CountdownStatus::bad_expression);
}

TEST_CASE("adversarial: deep nesting stays within the depth limit") {
  std::string deep = repeat("(", 1000) + "1" + repeat(")", 1000);
  CHECK_FALSE(answers_equal("1", deep));
  CHECK(verify_countdown(deep, {1}, Rational::of(1)).status == CountdownStatus::bad_expression);
  std::string fracs;
  for (int i = 0; i < 300; ++i) fracs += "\\frac{1}{";
  fracs += "2" + repeat("}", 300);
  CHECK_FALSE(answers_equal("1", fracs));
  std::string tuples;
  for (int i = 0; i < 100; ++i) tuples += "(1,";
  tuples += "1" + repeat(")", 100);
  CHECK_FALSE(answers_equal("1", tuples));
  CHECK(answers_equal(tuples, tuples));  // tuples nest 16 levels, deeper parts compare as text
}

TEST_CASE("adversarial: invalid UTF-8 everywhere") {
  std::string bad = "<think>\xFF\xFE caf\xC3 \xE4\xB8</think><answer>\xC0\x80</answer>";
  CHECK_FALSE(answers_equal("0", *extract_answer(bad).answer));
  CHECK(check_format(bad).reason == std::string("empty_answer"));  // invalid bytes are not letters
  LanguageSpec en;
  WordCounts wc = count_words("\xFF\xFE caf\xC3 \xE4\xB8", en);
  CHECK(wc.words == 1);  // "caf" (the broken byte ends it); invalid bytes are never letters
  std::string why;
  CHECK_FALSE(parse_answer("\xC0\x80", &why));
  CHECK(why == "invalid UTF-8");
  for (int b = 0; b < 256; ++b) {
    std::string s(1, char(b));
    (void)time_all(s);
    (void)time_all("<think>" + s + "</think><answer>" + s + "</answer>");
  }
}
