// SFT data: records -> rendered conversations -> windows with loss masks (packing and one per window),
// truncation, the held-out split and bad records.
#include <catch2/catch.hpp>

#include <algorithm>
#include <set>

#include "core/error.h"
#include "sft_fixture.h"
#include "train/sft_data.h"

using namespace ds;
using ds::test::arith_chat;
using ds::test::chat_tokenizer;
using ds::test::SftTmp;
using ds::test::write_chats;
using ds::test::write_text;

namespace {

std::vector<std::vector<ChatMessage>> arith_chats(int n, int first = 0) {
  std::vector<std::vector<ChatMessage>> out;
  for (int i = first; i < first + n; ++i) out.push_back(arith_chat(i));
  return out;
}

SftDataOptions opts(int64_t T, bool packing) {
  SftDataOptions o;
  o.seq_len = T;
  o.packing = packing;
  o.eval_fraction = 0;
  return o;
}

std::vector<int32_t> window(const WindowSet& s, int64_t w) {
  return {s.tokens.begin() + w * (s.T + 1), s.tokens.begin() + (w + 1) * (s.T + 1)};
}
std::vector<uint8_t> window_mask(const WindowSet& s, int64_t w) {
  return {s.loss_mask.begin() + w * (s.T + 1), s.loss_mask.begin() + (w + 1) * (s.T + 1)};
}

// Error kind and message of load_sft_data on `path`.
std::string load_error(const std::string& path, const SftDataOptions& o) {
  try {
    load_sft_data(path, chat_tokenizer(), o);
  } catch (const Error& e) {
    CHECK(e.kind() == ErrorKind::bad_input);
    return e.what();
  }
  return "(no error)";
}

}  // namespace

TEST_CASE("sft data: packing concatenates conversations and cuts windows with the assistant mask", "[sft][data]") {
  const Tokenizer& tok = chat_tokenizer();
  SftTmp dir;
  auto chats = arith_chats(6);
  write_chats(dir / "chat.jsonl", chats);
  const int64_t T = 32;
  SftData d = load_sft_data(dir / "chat.jsonl", tok, opts(T, true));
  std::vector<int32_t> stream;
  std::vector<uint8_t> mask;
  int64_t trainable = 0;
  for (const auto& c : chats) {
    ChatRendering r = render_chat(tok, c);
    stream.insert(stream.end(), r.ids.begin(), r.ids.end());
    mask.insert(mask.end(), r.trainable.begin(), r.trainable.end());
    trainable += r.n_trainable();
  }
  CHECK(d.n_conversations == 6);
  CHECK(d.n_eval_conversations == 0);
  CHECK(d.eval.size() == 0);
  CHECK(d.n_tokens == int64_t(stream.size()));
  REQUIRE(d.n_dropped_windows == 0);
  REQUIRE(d.train.T == T);
  // Windows of T+1 with stride T; the last one padded (pad token, mask 0).
  const int64_t n = (int64_t(stream.size()) - 1 + T - 1) / T;
  REQUIRE(d.train.size() == n);
  REQUIRE(d.train.loss_mask.size() == d.train.tokens.size());
  for (int64_t w = 0; w < n; ++w)
    for (int64_t i = 0; i <= T; ++i) {
      const size_t s = size_t(w * T + i);
      const int32_t want_tok = s < stream.size() ? stream[s] : tok.pad_id();
      const uint8_t want_mask = s < stream.size() ? mask[s] : 0;
      CHECK(window(d.train, w)[size_t(i)] == want_tok);
      CHECK(window_mask(d.train, w)[size_t(i)] == want_mask);
    }
  REQUIRE((stream.size() - 1) % size_t(T) != 0);  // this data leaves a partial last window
  CHECK(window(d.train, n - 1).back() == tok.pad_id());
  // Every assistant token is a target exactly once (position 0 of a window is never a target).
  CHECK(d.n_trainable == trainable);
}

TEST_CASE("sft data: windows without an assistant token are skipped", "[sft][data]") {
  const Tokenizer& tok = chat_tokenizer();
  SftTmp dir;
  std::string long_q;
  for (int i = 0; i < 30; ++i) long_q += "Hello there, how are you today? ";
  std::vector<std::vector<ChatMessage>> chats = {{{"user", long_q}, {"assistant", "Fine thanks."}}, arith_chat(1)};
  write_chats(dir / "chat.jsonl", chats);
  SftData d = load_sft_data(dir / "chat.jsonl", tok, opts(8, true));
  CHECK(d.n_dropped_windows > 0);
  int64_t trainable = 0;
  for (const auto& c : chats) trainable += render_chat(tok, c).n_trainable();
  CHECK(d.n_trainable == trainable);  // no target lost
  for (int64_t w = 0; w < d.train.size(); ++w) {
    auto m = window_mask(d.train, w);
    CHECK(std::any_of(m.begin() + 1, m.end(), [](uint8_t x) { return x != 0; }));
  }
}

TEST_CASE("sft data: --no-packing gives one padded conversation per window, truncation counted or strict",
          "[sft][data]") {
  const Tokenizer& tok = chat_tokenizer();
  SftTmp dir;
  auto chats = arith_chats(5);
  std::string long_a;
  for (int i = 0; i < 20; ++i) long_a += "The answer is " + std::to_string(i) + ". ";
  chats.insert(chats.begin() + 2, {{"user", "What is 2 + 3?"}, {"assistant", long_a}});
  write_chats(dir / "chat.jsonl", chats);
  const int64_t T = 48;
  SftData d = load_sft_data(dir / "chat.jsonl", tok, opts(T, false));
  REQUIRE(d.train.size() == 6);
  CHECK(d.n_truncated == 1);
  CHECK(d.n_dropped_windows == 0);
  int64_t trainable = 0;
  for (size_t k = 0; k < chats.size(); ++k) {
    ChatRendering r = render_chat(tok, chats[k]);
    if (int64_t(r.ids.size()) > T + 1) {  // keeps its first T+1 tokens
      REQUIRE(k == 2);
      r.ids.resize(size_t(T + 1));
      r.trainable.resize(size_t(T + 1));
    }
    r.ids.resize(size_t(T + 1), tok.pad_id());
    r.trainable.resize(size_t(T + 1), 0);
    CHECK(window(d.train, int64_t(k)) == r.ids);
    CHECK(window_mask(d.train, int64_t(k)) == r.trainable);
    CHECK(r.ids[0] == tok.bos_id());
    for (size_t i = 1; i < r.trainable.size(); ++i) trainable += r.trainable[i];
  }
  CHECK(d.n_trainable == trainable);

  SftDataOptions strict = opts(T, false);
  strict.strict = true;
  std::string msg = load_error(dir / "chat.jsonl", strict);
  CHECK(msg.find("chat.jsonl:3)") != std::string::npos);
  CHECK(msg.find("--strict") != std::string::npos);

  // A conversation whose assistant part lies beyond the window has no target: skipped, not trained on.
  std::string long_q;
  for (int i = 0; i < 30; ++i) long_q += "Hello there, how are you today? ";
  write_chats(dir / "cut.jsonl", {{{"user", long_q}, {"assistant", "Fine."}}, arith_chat(3)});
  SftData c = load_sft_data(dir / "cut.jsonl", tok, opts(T, false));
  CHECK(c.n_truncated == 1);
  CHECK(c.n_dropped_windows == 1);
  CHECK(c.train.size() == 1);
}

TEST_CASE("sft data: prompt/completion records render as a user turn and an assistant turn", "[sft][data]") {
  const Tokenizer& tok = chat_tokenizer();
  SftTmp dir;
  auto c = arith_chat(4);
  write_text(dir / "pc.jsonl",
             "{\"prompt\":" + JsonWriter().value(c[0].content).str() + ",\"completion\":" +
                 JsonWriter().value(c[1].content).str() + ",\"answer\":\"x\"}\n" +
                 "{\"prompt\":[{\"role\":\"system\",\"content\":\"Be brief.\"}," +
                 "{\"role\":\"user\",\"content\":\"hi\"}]," +
                 "\"completion\":[{\"role\":\"assistant\",\"content\":\"hello\"}]}\n");
  write_chats(dir / "m.jsonl", {c, {{"system", "Be brief."}, {"user", "hi"}, {"assistant", "hello"}}});
  SftData a = load_sft_data(dir / "pc.jsonl", tok, opts(64, false));
  SftData b = load_sft_data(dir / "m.jsonl", tok, opts(64, false));
  CHECK(a.train.tokens == b.train.tokens);
  CHECK(a.train.loss_mask == b.train.loss_mask);
  CHECK(a.n_conversations == 2);
}

TEST_CASE("sft data: the held-out split is a hash of the conversation", "[sft][data]") {
  const Tokenizer& tok = chat_tokenizer();
  SftTmp dir;
  auto chats = arith_chats(120);
  write_chats(dir / "a.jsonl", chats);
  std::reverse(chats.begin(), chats.end());
  write_chats(dir / "b.jsonl", chats);
  SftDataOptions o = opts(64, false);
  o.eval_fraction = 0.25;
  SftData a = load_sft_data(dir / "a.jsonl", tok, o);
  SftData b = load_sft_data(dir / "b.jsonl", tok, o);
  CHECK(a.n_eval_conversations > 10);
  CHECK(a.n_eval_conversations < 60);
  CHECK(a.train.size() + a.eval.size() == 120);
  // The order of the file does not move a conversation across the split.
  auto windows = [](const WindowSet& s) {
    std::multiset<std::vector<int32_t>> out;
    for (int64_t w = 0; w < s.size(); ++w) out.insert(window(s, w));
    return out;
  };
  CHECK(b.n_eval_conversations == a.n_eval_conversations);
  CHECK(windows(a.eval) == windows(b.eval));
  // Duplicates land on the same side.
  o.eval_fraction = 0.5;
  bool seen_held_out = false, seen_train = false;
  for (int i = 0; i < 40 && !(seen_held_out && seen_train); ++i) {
    write_chats(dir / "dup.jsonl", std::vector<std::vector<ChatMessage>>(20, arith_chat(i)));
    SftData d;
    try {
      d = load_sft_data(dir / "dup.jsonl", tok, o);
    } catch (const Error&) {  // all 20 held out: no training window
      seen_held_out = true;
      continue;
    }
    CHECK(d.n_eval_conversations == 0);
    seen_train = true;
  }
  CHECK(seen_held_out);
  CHECK(seen_train);
}

TEST_CASE("sft data: bad records are bad-input errors naming file:line", "[sft][data]") {
  SftTmp dir;
  const std::string good = ds::test::messages_json(arith_chat(0));
  const std::vector<std::pair<std::string, std::string>> cases = {
      {R"({"text":"hi"})", "neither 'messages' nor 'prompt'"},
      {R"({"messages":[{"role":"tool","content":"x"},{"role":"assistant","content":"y"}]})",
       "'messages[0].role' is 'tool'"},
      {R"({"messages":[{"role":"user","content":5},{"role":"assistant","content":"y"}]})", "messages[0].content"},
      {R"({"messages":[{"role":"user","content":null},{"role":"assistant","content":"y"}]})", "messages[0].content"},
      {R"({"messages":[{"content":"x"},{"role":"assistant","content":"y"}]})", "messages[0].role"},
      {R"({"messages":[{"role":"user","content":"x"}]})", "no assistant message"},
      {R"({"messages":[]})", "no assistant message"},
      {R"({"messages":"hello"})", "must be an array"},
      {R"({"messages":["hello"]})", "messages"},
      {R"({"prompt":"x"})", "needs 'completion'"},
      {R"({"completion":"x"})", "needs 'prompt'"},
      {R"({"prompt":"x","completion":7})", "completion"},
      {R"({"prompt":"x","completion":[{"role":"user","content":"y"}]})", "assistant messages only"},
      {R"({"messages":[{"role":"user","content":"x"},{"role":"assistant","content":"y"})", "bad.jsonl:2"},
  };
  for (const auto& [line, what] : cases) {
    write_text(dir / "bad.jsonl", good + "\n" + line + "\n" + good + "\n");
    std::string msg = load_error(dir / "bad.jsonl", opts(16, true));
    INFO(line << " -> " << msg);
    CHECK(msg.find(what) != std::string::npos);
    CHECK(msg.find("bad.jsonl:2)") != std::string::npos);
  }
  write_text(dir / "empty.jsonl", "");
  CHECK(load_error(dir / "empty.jsonl", opts(16, true)).find("empty") != std::string::npos);
}

TEST_CASE("sft data: epochs to optimizer steps", "[sft][data]") {
  CHECK(sft_steps_for_epochs(1, 10, 4) == 3);
  CHECK(sft_steps_for_epochs(2, 10, 4) == 5);
  CHECK(sft_steps_for_epochs(1, 8, 4) == 2);
  CHECK(sft_steps_for_epochs(0.1, 10, 4) == 1);
  CHECK(sft_steps_for_epochs(3, 100, 1) == 300);
}
