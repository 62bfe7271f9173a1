// Rejection filters with their reasons; combined rewards, weights, skips, length and repetition terms.
#include <catch2/catch.hpp>

#include "rl/penalty.h"
#include "rl/reject.h"
#include "rl/reward.h"

using namespace ds::rl;

namespace {
const char* GOOD = "<think>\nWe add three and four to get seven.\n</think>\n<answer>7</answer>";

std::string reason(std::string_view completion, RejectOptions o = {}, std::optional<double> reward = 2.0,
                   std::optional<double> acc = 1.0, bool truncated = false) {
  Candidate c;
  c.completion = completion;
  c.reward = reward;
  c.accuracy = acc;
  c.truncated = truncated;
  auto r = check_sample(c, o);
  return r ? drop_reason_name(*r) : "keep";
}

RewardResult score(std::string_view completion, std::optional<std::string_view> gold, RewardConfig cfg = {}) {
  RolloutInput in;
  in.completion = completion;
  in.gold = gold;
  return score_rollout(in, cfg);
}
}  // namespace

TEST_CASE("reject: correctness and reward") {
  CHECK(reason(GOOD) == "keep");
  CHECK(reason(GOOD, {}, std::nullopt, std::nullopt) == "unscored");
  CHECK(reason(GOOD, {}, 1.0, 0.0) == "incorrect");
  CHECK(reason(GOOD, {}, 0.0, std::nullopt) == "incorrect");  // no accuracy: reward must be > 0
  CHECK(reason(GOOD, {}, 1.0, std::nullopt) == "keep");
  RejectOptions o;
  o.min_reward = 1.5;
  CHECK(reason(GOOD, o, 1.0, 1.0) == "low_reward");
  CHECK(reason(GOOD, o, 1.0, std::nullopt) == "incorrect");
  CHECK(reason(GOOD, o, 2.0, 1.0) == "keep");
  CHECK(reason(GOOD, {}, 2.0, 1.0, true) == "truncated");
  o = {};
  o.drop_truncated = false;
  CHECK(reason(GOOD, o, 2.0, 1.0, true) == "keep");
}

TEST_CASE("reject: text filters") {
  CHECK(reason("no think at all <answer>7</answer>") == "think_tags");
  CHECK(reason("<think>a</think><think>b</think> 7") == "think_tags");
  CHECK(reason("<think></think> 7") == "think_tags");
  CHECK(reason("<think>unclosed reasoning 7") == "think_tags");
  CHECK(reason("<think>ok</think>") == "think_tags");  // nothing after the reasoning
  CHECK(reason("<think>reasoning here</think> 7") == "keep");
  RejectOptions o;
  o.require_think = false;
  CHECK(reason("no think at all: 7", o) == "keep");

  std::string code = "<think>\n```python\nprint(7)\n```\n</think> 7";
  CHECK(reason(code) == "keep");
  o = {};
  o.drop_code_blocks = true;
  CHECK(reason(code, o) == "code_block");

  o = {};
  o.max_paragraph_chars = 40;
  CHECK(reason(GOOD, o) == "keep");
  std::string para = "<think>\n" + std::string(41, 'a') + "\n</think> 7";
  CHECK(reason(para, o) == "long_paragraph");
  CHECK(longest_line("ab\n\xE4\xB8\xAD\xE4\xB8\xAD\xE4\xB8\xAD\n") == 3);  // code points, not bytes

  o = {};
  LanguageSpec en;
  REQUIRE(parse_language("en", &en));
  o.language = en;
  o.max_mixed_share = 0.2;
  // 9 English words, 1 ideograph: 1/10 foreign
  CHECK(reason("<think>we add the numbers and then check the result \xE5\xA5\xBD</think> 7", o) == "keep");
  // 2 English words, 2 ideographs: 1/2 foreign
  CHECK(reason("<think>we add \xE7\x84\xB6\xE5\x90\x8E</think> 7", o) == "mixed_language");

  o = {};
  o.max_repetition = 0.5;
  std::string rep = "<think>";
  for (int i = 0; i < 50; ++i) rep += "wait let me check again ";
  rep += "</think> 7";
  CHECK(reason(rep, o) == "repetitive");
  CHECK(reason(GOOD, o) == "keep");
}

TEST_CASE("reject: dedupe and per-prompt cap") {
  RejectOptions o;
  o.max_per_prompt = 2;
  RejectState st(o);
  CHECK_FALSE(st.admit("p", "a  b"));
  CHECK(*st.admit("p", " a b\n") == DropReason::duplicate);  // whitespace-normalised
  CHECK_FALSE(st.admit("q", "a b"));                          // another prompt may repeat it
  CHECK_FALSE(st.admit("p", "c"));
  CHECK(*st.admit("p", "d") == DropReason::over_cap);
  CHECK(normalized_text_hash("a b") == normalized_text_hash("  a \t\n b "));
  CHECK(normalized_text_hash("a b") != normalized_text_hash("ab"));
  RejectOptions nd;
  nd.dedupe = false;
  RejectState st2(nd);
  CHECK_FALSE(st2.admit("p", "x"));
  CHECK_FALSE(st2.admit("p", "x"));
}

TEST_CASE("reward: accuracy + format, weights") {
  RewardResult r = score(GOOD, "7");
  CHECK(*r.accuracy == 1.0);
  CHECK(*r.format == 1.0);
  CHECK(*r.total == 2.0);
  CHECK(r.correct);
  CHECK(*r.extracted == "7");
  CHECK(r.vote_key == "n:7");
  r = score(GOOD, "8");
  CHECK(*r.total == 1.0);
  RewardConfig cfg;
  cfg.accuracy_weight = 2.0;
  cfg.format_weight = 0.5;
  r = score(GOOD, "7", cfg);
  CHECK(*r.total == 2.5);
  cfg.format_weight = 0.0;
  r = score(GOOD, "7", cfg);
  CHECK_FALSE(r.format);  // not computed
  CHECK(*r.total == 2.0);
  r = score("The answer is 7.", "7");
  CHECK(*r.accuracy == 1.0);
  CHECK(*r.format == 0.0);
}

TEST_CASE("reward: an unusable gold answer is a skip, not a zero") {
  RewardResult r = score(GOOD, std::nullopt);
  CHECK_FALSE(r.total);
  CHECK_FALSE(r.accuracy);
  CHECK(r.skip_reason == "no gold answer");
  CHECK(*r.format == 1.0);  // the other terms are still reported
  r = score(GOOD, "\\frac{1}{2");
  CHECK_FALSE(r.total);
  CHECK(r.skip_reason == "gold answer cannot be parsed: unbalanced brackets");
  r = score(GOOD, "");
  CHECK(r.skip_reason == "gold answer cannot be parsed: empty");
  RewardConfig cfg;
  cfg.accuracy_weight = 0;  // accuracy not in the total: no skip
  r = score(GOOD, std::nullopt, cfg);
  CHECK(*r.total == 1.0);
}

TEST_CASE("reward: prefilled think") {
  std::string c = "reasoning about it\n</think>\n<answer>7</answer>";
  RewardResult r = score(c, "7");
  CHECK(*r.accuracy == 1.0);   // the implicit block
  CHECK(*r.format == 0.0);     // but the format needs the tag
  RewardConfig cfg;
  cfg.prepend_think = true;
  r = score(c, "7", cfg);
  CHECK(*r.format == 1.0);
  CHECK(*r.total == 2.0);
}

TEST_CASE("reward: language term") {
  RewardConfig cfg;
  cfg.language_weight = 1.0;
  REQUIRE(parse_language("en", &cfg.language));
  RewardResult r = score("<think>we add \xE7\x84\xB6\xE5\x90\x8E</think><answer>7</answer>", "7", cfg);
  CHECK(*r.language == Approx(0.5));
  CHECK(*r.total == Approx(2.5));
  r = score("no tags, plain english words", "7", cfg);  // no think block: the whole completion
  CHECK(*r.language == 1.0);
}

TEST_CASE("length: DAPO overlong punishment") {
  CHECK(overlong_penalty(100, 200, 50) == 0.0);
  CHECK(overlong_penalty(150, 200, 50) == 0.0);
  CHECK(overlong_penalty(175, 200, 50) == Approx(-0.5));
  CHECK(overlong_penalty(200, 200, 50) == Approx(-1.0));
  CHECK(overlong_penalty(201, 200, 50) == -1.0);
  CHECK(overlong_penalty(201, 200, 0) == -1.0);
  RewardConfig cfg;
  cfg.length = LengthPenalty::overlong;
  cfg.max_length = 200;
  cfg.overlong_buffer = 50;
  RolloutInput in;
  in.completion = GOOD;
  in.gold = "7";
  in.length = 175;
  RewardResult r = score_rollout(in, cfg);
  CHECK(*r.length == Approx(-0.5));
  CHECK(*r.total == Approx(1.5));
}

TEST_CASE("length: Kimi group reward") {
  auto v = kimi_length_rewards({10, 20, 30}, {true, true, false});
  CHECK(v[0] == Approx(0.5));
  CHECK(v[1] == Approx(0.0));
  CHECK(v[2] == Approx(-0.5));
  v = kimi_length_rewards({10, 30}, {false, true});
  CHECK(v[0] == 0.0);  // wrong and short: min(0, 0.5)
  CHECK(v[1] == Approx(-0.5));
  v = kimi_length_rewards({7, 7}, {true, false});
  CHECK(v[0] == 0.0);
  CHECK(v[1] == 0.0);
  RewardConfig cfg;
  cfg.length = LengthPenalty::kimi;
  std::vector<RewardResult> g = {score(GOOD, "7", cfg), score(GOOD, "8", cfg)};
  apply_group_length(g, {10, 20}, cfg);
  CHECK(*g[0].length == Approx(0.5));
  CHECK(*g[0].total == Approx(2.5));
  CHECK(*g[1].length == Approx(-0.5));
  CHECK(*g[1].total == Approx(0.5));
}

TEST_CASE("repetition: n-gram ratio and penalty") {
  CHECK(repetition_ratio("a b c d e", 3) == 0.0);
  CHECK(repetition_ratio("a b", 3) == 0.0);
  CHECK(repetition_ratio("", 3) == 0.0);
  // "a b a b a b": 2-grams ab ba ab ba ab -> 2 unique of 5
  CHECK(repetition_ratio("a b a b a b", 2) == Approx(1.0 - 2.0 / 5));
  CHECK(repetition_ratio("A b a B", 2) == Approx(1.0 - 2.0 / 3));  // lower-cased
  CHECK(repetition_ratio("\xE5\xA5\xBD\xE5\xA5\xBD\xE5\xA5\xBD", 1) == Approx(1.0 - 1.0 / 3));  // 好好好
  CHECK(repetition_penalty("a b a b a b", 2, -1.0) == Approx(-0.6));
  CHECK(repetition_penalty("a b a b a b", 2, 0.0) == 0.0);
  RewardConfig cfg;
  cfg.repetition_penalty = -1.0;
  cfg.repetition_ngram = 2;
  RewardResult r = score("<think>a b a b a b</think><answer>7</answer>", "7", cfg);
  CHECK(*r.repetition < 0.0);
  CHECK(*r.total == Approx(2.0 + *r.repetition));
}
