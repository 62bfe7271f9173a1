// Answer extraction: the tag layout, <answer> blocks outside <think>, \boxed brace matching, answer lines.
#include <catch2/catch.hpp>

#include "rl/extract.h"
#include "rl/layout.h"

using namespace ds::rl;

namespace {
std::string ans(std::string_view s, ExtractOptions o = {}) {
  Extracted e = extract_answer(s, o);
  return e.answer ? *e.answer : std::string("<none>");
}
AnswerRule rule(std::string_view s) { return extract_answer(s).rule; }
}  // namespace

TEST_CASE("layout: think blocks, outside text, answer blocks") {
  std::string s = "<think>a</think> b <answer>1</answer>";
  Layout L = analyse(s);
  REQUIRE(L.think.size() == 1);
  CHECK(L.think[0].of(s) == "a");
  REQUIRE(L.answers.size() == 1);
  CHECK(L.answers[0].of(s) == "1");
  CHECK(L.n_think_open == 1);
  CHECK(L.n_answer_close == 1);
  CHECK_FALSE(L.implicit_think);
  CHECK_FALSE(L.unclosed_think);
}

TEST_CASE("extract: the last complete answer block outside think wins") {
  CHECK(ans("<think>x</think><answer>5</answer>") == "5");
  CHECK(ans("<think>x</think><answer>1</answer> then <answer> 2 </answer>") == "2");
  CHECK(rule("<think>x</think><answer>5</answer>") == AnswerRule::answer_tag);
  // an unclosed last block (truncated output) is no block: the earlier complete one counts
  CHECK(ans("<answer>1</answer><answer>2") == "1");
  // a second <answer> before the close restarts the block
  CHECK(ans("<answer>1<answer>2</answer>") == "2");
  // a stray </answer> without an opening tag is ignored
  CHECK(ans("</answer><answer>3</answer></answer>") == "3");
  // an empty block is an (empty) answer, not a fall-through to other rules
  CHECK(ans("<answer></answer> \\boxed{4}") == "");
}

TEST_CASE("extract: answers hidden inside think do not count") {
  CHECK(ans("<think>the answer is <answer>5</answer></think>") == "<none>");
  CHECK(ans("<think>\\boxed{5}</think> I am not sure") == "<none>");
  CHECK(ans("<think>Answer: 5</think>") == "<none>");
  // a think block that never closes swallows everything after it
  CHECK(ans("<think>reasoning <answer>5</answer>") == "<none>");
  CHECK(ans("<answer>4</answer><think>never closed <answer>5</answer>") == "4");
  // answer after the think block still counts
  CHECK(ans("<think><answer>5</answer></think><answer>6</answer>") == "6");
}

TEST_CASE("extract: prefilled think (the completion starts inside the block)") {
  // a </think> before any <think> closes an implicit block from the start
  CHECK(ans("reasoning <answer>1</answer> more</think><answer>2</answer>") == "2");
  CHECK(ans("reasoning \\boxed{1}</think> no answer here") == "<none>");
  Layout L = analyse("abc</think>x");
  CHECK(L.implicit_think);
  // after a real block, a stray </think> is plain text
  CHECK(ans("<think>a</think><answer>1</answer></think>") == "1");
}

TEST_CASE("extract: unbalanced and nested think tags") {
  CHECK(ans("<think>a<think>b</think>c<answer>1</answer>") == "1");  // nested <think> is text
  CHECK(ans("<think>a</think></think><answer>2</answer>") == "2");
  CHECK(ans("</think></think><answer>3</answer>") == "3");
}

TEST_CASE("extract: boxed with brace matching") {
  CHECK(ans("so \\boxed{\\frac{1}{2}}.") == "\\frac{1}{2}");
  CHECK(ans("\\boxed{1} and finally \\boxed{2}") == "2");
  CHECK(ans("\\boxed{{{3}}}") == "{{3}}");
  CHECK(ans("\\boxed{\\{1,2\\}}") == "\\{1,2\\}");  // escaped braces are literal
  CHECK(ans("\\boxed{a \\\\ b}") == "a \\\\ b");     // \\ is a line break, not an escaped brace
  CHECK(ans("\\fbox{7}") == "7");
  CHECK(ans("\\boxed {8}") == "8");
  CHECK(ans("\\boxedx{8}") == "<none>");
  // nested boxes: the outermost box that closes last
  CHECK(ans("\\boxed{\\boxed{5}}") == "\\boxed{5}");
  // a box that never closes is skipped; an earlier complete one is used
  CHECK(ans("\\boxed{1} then \\boxed{2") == "1");
  CHECK(ans("\\boxed{ \\boxed{5}") == "5");
  CHECK(ans("\\boxed{") == "<none>");
  CHECK(ans("}}}\\boxed{9}}}") == "9");
  CHECK(rule("\\boxed{1}") == AnswerRule::boxed);
}

TEST_CASE("extract: a box inside the answer block is unwrapped") {
  CHECK(ans("<answer>The result is \\boxed{42}.</answer>") == "42");
  CHECK(ans("<answer>\\boxed{1} or \\boxed{2}</answer>") == "2");
}

TEST_CASE("extract: answer lines") {
  CHECK(ans("blah\nThe answer is 42.") == "42");
  CHECK(ans("Answer: 17") == "17");
  CHECK(ans("**Final Answer:** 3/4") == "3/4");
  CHECK(ans("**Answer**: 9") == "9");
  CHECK(ans("work\n#### 1,234\n") == "1,234");
  CHECK(ans("Answer: 1\nsome more\nAnswer: 2\nthanks") == "2");
  CHECK(ans("Therefore, the final answer is $\\frac{1}{3}$.") == "$\\frac{1}{3}$");
  CHECK(ans("I wonder what the answer is.\nAnswer: 5") == "5");
  CHECK(ans("Answer: 5\nI wonder what the answer is.") == "5");  // an empty marker line is passed over
  CHECK(ans("reanswer: 5") == "<none>");
  CHECK(rule("Answer: 5") == AnswerRule::answer_line);
}

TEST_CASE("extract: priority and switched-off rules") {
  std::string s = "Answer: 1 \\boxed{2} <answer>3</answer>";
  CHECK(ans(s) == "3");
  ExtractOptions no_tag{false, true, true};
  CHECK(ans(s, no_tag) == "2");
  ExtractOptions line_only{false, false, true};
  CHECK(ans(s, line_only) == "1 \\boxed{2} <answer>3</answer>");
  ExtractOptions tag_only{true, false, false};
  CHECK(ans("\\boxed{2}", tag_only) == "<none>");
  ExtractOptions o;
  CHECK(parse_extract_rules("boxed", &o));
  CHECK_FALSE(o.answer_tag);
  CHECK(o.boxed);
  CHECK(parse_extract_rules("answer_tag, answer_line", &o));
  CHECK(o.answer_tag);
  CHECK_FALSE(o.boxed);
  CHECK_FALSE(parse_extract_rules("regex", &o));
}

TEST_CASE("extract: answer text is trimmed and otherwise verbatim") {
  CHECK(ans("<answer>\n  (1, 2)  \n</answer>") == "(1, 2)");
  CHECK(ans("<answer>\xE4\xB8\x83</answer>") == "\xE4\xB8\x83");
}
