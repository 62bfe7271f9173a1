// The anchored format reward (reward-hacking cases of RL.md §8.5) and the language-consistency share.
#include <catch2/catch.hpp>

#include "rl/format.h"
#include "rl/language.h"
#include "rl/utf8.h"

using namespace ds::rl;

namespace {
std::string fmt(std::string_view s, FormatStyle st = FormatStyle::think_answer) {
  FormatResult r = check_format(s, st);
  return r.ok ? "ok" : r.reason;
}
double share(std::string_view s, const char* lang) {
  LanguageSpec spec;
  REQUIRE(parse_language(lang, &spec));
  return language_share(count_words(s, spec));
}
WordCounts words(std::string_view s, const char* lang = "en") {
  LanguageSpec spec;
  REQUIRE(parse_language(lang, &spec));
  return count_words(s, spec);
}
}  // namespace

TEST_CASE("format: the R1-Zero template passes") {
  CHECK(fmt("<think>\nreasoning\n</think>\n<answer>\n42\n</answer>") == "ok");
  CHECK(fmt("<think>r</think><answer>4</answer>") == "ok");
  CHECK(fmt("  <think> r </think>   <answer> 4 </answer>  \n") == "ok");
}

TEST_CASE("format: reward-hacking cases get no credit") {
  CHECK(fmt("<think></think><answer>4</answer>") == "empty_think");            // Soup #814
  CHECK(fmt("<think>\n\n</think><answer>4</answer>") == "empty_think");
  CHECK(fmt("<think> ... !!! </think><answer>4</answer>") == "empty_think");   // punctuation only
  CHECK(fmt("<think>r</think><answer></answer>") == "empty_answer");
  CHECK(fmt("<think>r</think><answer> . </answer>") == "empty_answer");
  // several blocks (open-r1 PR #418)
  CHECK(fmt("<think>a</think><answer>1</answer><think>b</think><answer>2</answer>") == "tags");
  CHECK(fmt("<think>a</think><think>b</think><answer>1</answer>") == "tags");
  CHECK(fmt("<think>a</think><answer>1</answer><answer>2</answer>") == "tags");
  CHECK(fmt("<think>a <think> b</think><answer>1</answer>") == "tags");        // nested
  CHECK(fmt("<think>a</think><answer>1 <think>x</think></answer>") == "tags");
  // missing, unbalanced or out-of-order tags
  CHECK(fmt("just an answer") == "tags");
  CHECK(fmt("<think>a</think>") == "tags");
  CHECK(fmt("<think>a<answer>1</answer>") == "tags");
  CHECK(fmt("<answer>1</answer><think>a</think>") == "tags");
  CHECK(fmt("<think>a</think><answer>1") == "tags");
  CHECK(fmt("a</think><answer>1</answer>") == "tags");  // prefilled think: the caller prepends the tag
  // anchored at both ends
  CHECK(fmt("Sure! <think>a</think><answer>1</answer>") == "text_before_think");
  CHECK(fmt("<think>a</think> so <answer>1</answer>") == "text_between");
  CHECK(fmt("<think>a</think><answer>1</answer> bye") == "text_after");
  // tags must be spelled exactly
  CHECK(fmt("<Think>a</Think><answer>1</answer>") == "tags");
  CHECK(fmt("<think >a</think><answer>1</answer>") == "tags");
}

TEST_CASE("format: think style (R1: reasoning block, then the answer)") {
  CHECK(fmt("<think>\nr\n</think>\nThe answer is 4.", FormatStyle::think) == "ok");
  CHECK(fmt("<think>r</think>", FormatStyle::think) == "empty_answer");
  CHECK(fmt("<think>r</think>  \n", FormatStyle::think) == "empty_answer");
  CHECK(fmt("<think></think>4", FormatStyle::think) == "empty_think");
  CHECK(fmt("<think>r</think>4<think>again</think>5", FormatStyle::think) == "tags");
  CHECK(fmt("<think>r</think><answer>4</answer>", FormatStyle::think) == "tags");
}

TEST_CASE("format: long inputs are linear") {
  std::string s = "<think>" + std::string(1 << 20, 'a') + "</think><answer>" + std::string(1 << 20, '<') + "b</answer>";
  CHECK(fmt(s) == "ok");
  std::string many;
  for (int i = 0; i < 100000; ++i) many += "<think>";
  CHECK(fmt(many) == "tags");
}

TEST_CASE("utf8: decoding and validation") {
  CHECK(utf8_valid("abc \xE4\xB8\xAD\xE6\x96\x87"));
  CHECK_FALSE(utf8_valid("\xC0\x80"));          // overlong NUL
  CHECK_FALSE(utf8_valid("\xED\xA0\x80"));      // surrogate
  CHECK_FALSE(utf8_valid("\xF4\x90\x80\x80"));  // above U+10FFFF
  CHECK_FALSE(utf8_valid("\xE4\xB8"));          // truncated
  CHECK_FALSE(utf8_valid("\x80"));
  CHECK(utf8_valid("\xEF\xBF\xBD"));            // a literal U+FFFD is valid
  CHECK(utf8_length("a\xE4\xB8\xAD\xFF") == 3);
  size_t i = 0;
  CHECK(utf8_next("\xF0\x9F\x98\x80", i) == 0x1F600);
  CHECK(i == 4);
  CHECK(script_of(U'a') == Script::latin);
  CHECK(script_of(U'\u00E9') == Script::latin);
  CHECK(script_of(U'\u00D7') == Script::none);  // ×
  CHECK(script_of(U'\u4E2D') == Script::han);
  CHECK(script_of(U'\u3042') == Script::kana);
  CHECK(script_of(U'\uAC00') == Script::hangul);
  CHECK(script_of(U'\u0434') == Script::cyrillic);
  CHECK(script_of(U'7') == Script::none);
}

TEST_CASE("language: word definition") {
  CHECK(words("Let us compute the sum").words == 5);
  CHECK(words("don't well-known").words == 2);
  CHECK(words("x + y = 2 and a b c").words == 1);            // single letters are variables
  CHECK(words("\\frac{ab}{cd} \\cdot value").words == 3);     // ab, cd, value; \frac and \cdot are LaTeX
  CHECK(words("\xE6\x88\x91\xE4\xBB\xAC\xE7\xAE\x97").words == 3);  // 我们算: one word per ideograph
  CHECK(words("3.14 ... !!!").words == 0);
  CHECK(words("caf\xC3\xA9 na\xC3\xAFve").words == 2);
  CHECK(words("abc\xD0\xB4\xD0\xB5\xD1\x84").words == 2);    // a script change splits a word
  CHECK(words("ab\xFF\xFE" "cd").words == 2);                // invalid bytes separate, never letters
}

TEST_CASE("language: share of target-language words") {
  CHECK(share("We add the numbers carefully", "en") == 1.0);
  // 4 English words + 4 ideographs
  CHECK(share("first we compute \xE7\x84\xB6\xE5\x90\x8E\xE8\xAE\xA1\xE7\xAE\x97 result", "en") == Approx(0.5));
  CHECK(share("first we compute \xE7\x84\xB6\xE5\x90\x8E\xE8\xAE\xA1\xE7\xAE\x97 result", "zh") == Approx(0.5));
  CHECK(share("\xE8\xAE\xA1\xE7\xAE\x97 x + y", "zh") == 1.0);   // variables do not count against zh
  CHECK(share("", "en") == 0.0);                                  // no words: no credit
  CHECK(share("1 + 2 = 3", "en") == 0.0);
  CHECK(share("\xD0\xBF\xD1\x80\xD0\xB8\xD0\xB2\xD0\xB5\xD1\x82 hello", "ru") == Approx(0.5));
  CHECK(share("\xE3\x81\x82\xE4\xB8\xAD", "ja") == 1.0);
  LanguageSpec spec;
  CHECK_FALSE(parse_language("klingon", &spec));
}
