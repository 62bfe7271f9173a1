// The C++ rendering of DeepSeek-R1's chat template: text equal to the Jinja template's (expected strings written
// by hand from deepseek_r1_chat_template()), ids equal to encode(text), and the trainable mask.
#include <catch2/catch.hpp>

#include "core/error.h"
#include "sft_fixture.h"
#include "tokenizer/chat_template.h"
#include "tokenizer/tokenizer_files.h"

using namespace ds;
using ds::test::chat_tokenizer;

namespace {

const std::string B(kBosToken), U(kUserToken), A(kAssistantToken), E(kEosToken);

// The trainable ids, decoded.
std::string trainable_text(const Tokenizer& tok, const ChatRendering& r) {
  std::vector<int32_t> ids;
  for (size_t i = 0; i < r.ids.size(); ++i)
    if (r.trainable[i]) ids.push_back(r.ids[i]);
  return tok.decode(ids);
}

// Prompt-side special tokens are never targets; the mask has one flag per id.
void check_structure(const Tokenizer& tok, const ChatRendering& r) {
  REQUIRE(r.trainable.size() == r.ids.size());
  REQUIRE(!r.ids.empty());
  CHECK(r.ids[0] == tok.bos_id());
  for (size_t i = 0; i < r.ids.size(); ++i)
    if (r.ids[i] == tok.bos_id() || r.ids[i] == tok.user_id() || r.ids[i] == tok.assistant_id())
      CHECK(r.trainable[i] == 0);
}

ChatRenderOptions jinja_exact() {
  ChatRenderOptions o;
  o.keep_final_reasoning = false;
  return o;
}

const std::string kQ1 = "What is 2 + 3?", kR1 = "<think>\n2 plus 3 is 5</think>\n\nThe answer is 5.";
const std::string kQ2 = "And 5 + 4?", kR2 = "<think>\n5 plus 4 is 9</think>\n\nThe answer is 9.";

}  // namespace

TEST_CASE("chat template: the Jinja source has the rules the C++ renderer follows", "[sft][template]") {
  const std::string& j = deepseek_r1_chat_template();
  CHECK(j.find("ns.system_prompt + '\\n\\n' + message['content']") != std::string::npos);
  CHECK(j.find("{{- bos_token + ns.system_prompt -}}") != std::string::npos);
  CHECK(j.find("content.split('</think>')[-1]") != std::string::npos);
  CHECK(j.find("'<｜Assistant｜>' + content + '<｜end▁of▁sentence｜>'") != std::string::npos);
  CHECK(j.find("'<｜Assistant｜><think>\\n'") != std::string::npos);
}

TEST_CASE("chat template: single turn with a system prompt, text as the Jinja template renders it",
          "[sft][template]") {
  const Tokenizer& tok = chat_tokenizer();
  std::vector<ChatMessage> msgs = {{"system", "You are a helpful assistant."}, {"user", kQ1}, {"assistant", kR1}};
  // Jinja: every assistant message drops its reasoning up to the last </think>.
  ChatRendering j = render_chat(tok, msgs, jinja_exact());
  CHECK(j.text == B + "You are a helpful assistant." + U + kQ1 + A + "\n\nThe answer is 5." + E);
  check_structure(tok, j);
  CHECK(j.ids == tok.encode(j.text));
  CHECK(trainable_text(tok, j) == "\n\nThe answer is 5." + E);
  // Default: the final assistant message is the training target and keeps its reasoning.
  ChatRendering r = render_chat(tok, msgs);
  CHECK(r.text == B + "You are a helpful assistant." + U + kQ1 + A + kR1 + E);
  check_structure(tok, r);
  CHECK(r.ids == tok.encode(r.text));
  CHECK(trainable_text(tok, r) == kR1 + E);
  CHECK(r.n_trainable() == int64_t(tok.encode(kR1).size()) + 1);
  // The trainable tokens are exactly the tail after the last <｜Assistant｜>: content + eos.
  size_t a = 0;
  for (size_t i = 0; i < r.ids.size(); ++i)
    if (r.ids[i] == tok.assistant_id()) a = i;
  for (size_t i = 0; i < r.ids.size(); ++i) CHECK(int(r.trainable[i]) == int(i > a));
  CHECK(r.ids.back() == tok.eos_id());
}

TEST_CASE("chat template: system messages are joined by a blank line and emitted after bos", "[sft][template]") {
  const Tokenizer& tok = chat_tokenizer();
  std::vector<ChatMessage> msgs = {{"system", "S1"}, {"user", "hi"}, {"system", "S2"}, {"assistant", "hello"}};
  ChatRendering r = render_chat(tok, msgs);
  CHECK(r.text == B + "S1\n\nS2" + U + "hi" + A + "hello" + E);
  CHECK(r.ids == tok.encode(r.text));
  CHECK(trainable_text(tok, r) == "hello" + E);
  // No system message: nothing between bos and the first user turn.
  ChatRendering n = render_chat(tok, {{"user", "hi"}, {"assistant", "hello"}});
  CHECK(n.text == B + U + "hi" + A + "hello" + E);
  CHECK(n.ids == tok.encode(n.text));
}

TEST_CASE("chat template: multi-turn drops the reasoning of earlier assistant turns", "[sft][template]") {
  const Tokenizer& tok = chat_tokenizer();
  std::vector<ChatMessage> msgs = {{"user", kQ1}, {"assistant", kR1}, {"user", kQ2}, {"assistant", kR2}};
  ChatRendering r = render_chat(tok, msgs);
  CHECK(r.text == B + U + kQ1 + A + "\n\nThe answer is 5." + E + U + kQ2 + A + kR2 + E);
  check_structure(tok, r);
  CHECK(r.ids == tok.encode(r.text));
  // The shortened earlier answer is context (the model never generated it); the final one is the target.
  CHECK(trainable_text(tok, r) == kR2 + E);
  ChatRendering j = render_chat(tok, msgs, jinja_exact());
  CHECK(j.text == B + U + kQ1 + A + "\n\nThe answer is 5." + E + U + kQ2 + A + "\n\nThe answer is 9." + E);
  CHECK(trainable_text(tok, j) == "\n\nThe answer is 9." + E);

  // Earlier turns without reasoning are rendered as generated, so they are targets too.
  std::vector<ChatMessage> plain = {
      {"user", "Hello there"}, {"assistant", "Hello!"}, {"user", kQ2}, {"assistant", kR2}};
  ChatRendering p = render_chat(tok, plain);
  CHECK(p.text == B + U + "Hello there" + A + "Hello!" + E + U + kQ2 + A + kR2 + E);
  CHECK(trainable_text(tok, p) == "Hello!" + E + kR2 + E);

  // Reasoning with several </think>: everything up to the last one goes.
  CHECK(drop_reasoning("a</think>b</think>c") == "c");
  CHECK(drop_reasoning("no reasoning") == "no reasoning");
  CHECK(drop_reasoning("</think>") == "");
}

TEST_CASE("chat template: generation prompt, with and without the <think> prefill", "[sft][template]") {
  const Tokenizer& tok = chat_tokenizer();
  ChatRenderOptions g;
  g.add_generation_prompt = true;
  g.prefill_think = true;
  ChatRendering r = render_chat(tok, {{"user", kQ1}}, g);
  CHECK(r.text == B + U + kQ1 + A + "<think>\n");
  CHECK(r.ids == tok.encode(r.text));
  CHECK(r.n_trainable() == 0);
  CHECK(render_generation_prompt(tok, {{"user", kQ1}}, g) == r.ids);
  g.prefill_think = false;
  CHECK(render_chat(tok, {{"user", kQ1}}, g).text == B + U + kQ1 + A);
  CHECK(render_generation_prompt(tok, {{"user", kQ1}}, g) == tok.encode(B + U + kQ1 + A));
  // Every earlier assistant message is history: its reasoning is dropped.
  g.prefill_think = true;
  ChatRendering h = render_chat(tok, {{"user", kQ1}, {"assistant", kR1}, {"user", kQ2}}, g);
  CHECK(h.text == B + U + kQ1 + A + "\n\nThe answer is 5." + E + U + kQ2 + A + "<think>\n");
  CHECK(h.ids == tok.encode(h.text));
}

TEST_CASE("chat template: --prefill-think makes the leading <think> newline prompt, ids as the sampler sees them",
          "[sft][template]") {
  const Tokenizer& tok = chat_tokenizer();
  ChatRenderOptions o;
  o.prefill_think = true;
  std::vector<ChatMessage> msgs = {{"user", kQ1}, {"assistant", kR1}};
  ChatRendering r = render_chat(tok, msgs, o);
  CHECK(r.text == B + U + kQ1 + A + kR1 + E);  // the text is unchanged
  check_structure(tok, r);
  CHECK(trainable_text(tok, r) == kR1.substr(kThinkPrefill.size()) + E);
  // The prompt ids of the sampler followed by what the model writes.
  std::vector<int32_t> prompt = render_generation_prompt(tok, {{"user", kQ1}}, o);
  REQUIRE(prompt.size() < r.ids.size());
  CHECK(std::vector<int32_t>(r.ids.begin(), r.ids.begin() + long(prompt.size())) == prompt);
  for (size_t i = 0; i < r.ids.size(); ++i) CHECK(int(r.trainable[i]) == int(i >= prompt.size()));
  std::vector<int32_t> rest = tok.encode(kR1.substr(kThinkPrefill.size()));
  rest.push_back(tok.eos_id());
  CHECK(std::vector<int32_t>(r.ids.begin() + long(prompt.size()), r.ids.end()) == rest);
  // An answer that does not start with "<think>\n" is all target.
  ChatRendering p = render_chat(tok, {{"user", "hi"}, {"assistant", "hello"}}, o);
  CHECK(trainable_text(tok, p) == "hello" + E);
}

TEST_CASE("chat template: prompt/completion records, empty answers, bad roles", "[sft][template]") {
  const Tokenizer& tok = chat_tokenizer();
  std::vector<ChatMessage> pc = prompt_completion_messages(kQ1, kR1);
  REQUIRE(pc.size() == 2);
  CHECK(render_chat(tok, pc).text == render_chat(tok, {{"user", kQ1}, {"assistant", kR1}}).text);
  CHECK(render_chat(tok, pc).text == B + U + kQ1 + A + kR1 + E);

  ChatRendering e = render_chat(tok, {{"user", "hi"}, {"assistant", ""}});
  CHECK(e.text == B + U + "hi" + A + E);
  CHECK(e.n_trainable() == 1);  // the eos: the model learns to stop
  CHECK(e.trainable.back() == 1);

  // Special-token text inside content becomes the special ids, as encode() does.
  ChatRendering s = render_chat(tok, {{"user", "hi"}, {"assistant", "<answer>5</answer>"}});
  CHECK(s.ids == tok.encode(s.text));
  CHECK(trainable_text(tok, s) == "<answer>5</answer>" + E);

  try {
    render_chat(tok, {{"user", "hi"}, {"tool", "x"}, {"assistant", "y"}});
    FAIL("no error for role 'tool'");
  } catch (const Error& err) {
    CHECK(err.kind() == ErrorKind::bad_input);
    CHECK(std::string(err.what()).find("'tool'") != std::string::npos);
  }
}
