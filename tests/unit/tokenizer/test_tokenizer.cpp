// Encoding and decoding with a trained tokenizer: special tokens, byte fallback, split digits, round trips.
#include <catch2/catch.hpp>

#include <algorithm>

#include "corpus.h"
#include "tokenizer/tokenizer.h"

using namespace ds;

TEST_CASE("special tokens are spelled exactly as DeepSeek's", "[tokenizer]") {
  // U+FF5C FULLWIDTH VERTICAL LINE = EF BD 9C, U+2581 LOWER ONE EIGHTH BLOCK = E2 96 81.
  CHECK(kBosToken == "<\xEF\xBD\x9C" "begin\xE2\x96\x81of\xE2\x96\x81sentence\xEF\xBD\x9C>");
  CHECK(kEosToken == "<\xEF\xBD\x9C" "end\xE2\x96\x81of\xE2\x96\x81sentence\xEF\xBD\x9C>");
  CHECK(kPadToken == "<\xEF\xBD\x9C\xE2\x96\x81pad\xE2\x96\x81\xEF\xBD\x9C>");
  CHECK(kUserToken == "<\xEF\xBD\x9CUser\xEF\xBD\x9C>");
  CHECK(kAssistantToken == "<\xEF\xBD\x9C" "Assistant\xEF\xBD\x9C>");
}

TEST_CASE("the vocabulary starts with the special tokens at fixed ids", "[tokenizer]") {
  const Tokenizer& tok = test::trained();
  REQUIRE(tok.loaded());
  CHECK(tok.vocab_size() > 266);
  CHECK(tok.vocab_size() <= 400);
  CHECK(tok.bos_id() == 0);
  CHECK(tok.eos_id() == 1);
  CHECK(tok.pad_id() == 2);
  CHECK(tok.unk_id() == 3);
  CHECK(tok.user_id() == 4);
  CHECK(tok.assistant_id() == 5);
  CHECK(tok.think_id() == 6);
  CHECK(tok.think_end_id() == 7);
  CHECK(tok.answer_id() == 8);
  CHECK(tok.answer_end_id() == 9);
  for (int32_t id = 0; id < 10; ++id) CHECK(tok.piece(id) == special_tokens()[size_t(id)]);
  CHECK(tok.is_byte(10));
  CHECK(tok.piece(10) == "<0x00>");
  CHECK(tok.piece_to_id("<think>") == 6);
  CHECK(tok.piece_to_id("no-such-piece") == -1);
  CHECK(tok.is_special(0));
  CHECK_FALSE(tok.is_special(3));  // <unk> is not cut out of text
  CHECK_FALSE(tok.is_special(10));
}

TEST_CASE("special token text encodes to single ids and decodes back", "[tokenizer]") {
  const Tokenizer& tok = test::trained();
  for (auto t : special_tokens()) {
    if (t == kUnkToken) continue;
    auto ids = tok.encode(t);
    REQUIRE(ids.size() == 1);
    CHECK(ids[0] == tok.special_id(t));
    CHECK(tok.decode(ids) == t);
  }
  std::string chat = std::string(kBosToken) + "sys" + std::string(kUserToken) + "What is 12+3?" +
                     std::string(kAssistantToken) + std::string(kThinkToken) + "\n12+3=15\n" +
                     std::string(kThinkEndToken) + std::string(kAnswerToken) + "15" + std::string(kAnswerEndToken) +
                     std::string(kEosToken) + std::string(kPadToken);
  auto ids = tok.encode(chat);
  CHECK(ids.front() == tok.bos_id());
  CHECK(std::count(ids.begin(), ids.end(), tok.user_id()) == 1);
  CHECK(std::count(ids.begin(), ids.end(), tok.think_end_id()) == 1);
  CHECK(ids[ids.size() - 2] == tok.eos_id());
  CHECK(ids.back() == tok.pad_id());
  CHECK(tok.decode(ids) == chat);
  CHECK(tok.decode(ids, true) == "sysWhat is 12+3?\n12+3=15\n15");
  // Adjacent specials and partial matches.
  CHECK(tok.encode("<think></think>") == std::vector<int32_t>{6, 7});
  CHECK(tok.decode(tok.encode("<thin<think>k>")) == "<thin<think>k>");
  auto partial = tok.encode("<thin<think>k>");
  CHECK(std::count(partial.begin(), partial.end(), 6) == 1);
  // <unk> in text is ordinary text.
  CHECK(tok.decode(tok.encode("a <unk> b")) == "a <unk> b");
}

TEST_CASE("round trips keep every byte, unseen characters go through byte fallback", "[tokenizer]") {
  const Tokenizer& tok = test::trained();
  const std::string samples[] = {"the model", " leading and trailing spaces  ", "two\nlines\r\nand\ttabs",
                                 "你好世界，数学问题", "unseen: é ß Ж 日本語 🙂 𝄞", "", " ", "\n\n",
                                 "x = -12.5e3 * (7 / 2)", "mixed你好123abc"};
  for (const auto& s : samples) {
    INFO("sample: " << s);
    CHECK(tok.decode(tok.encode(s)) == s);
  }
  auto ids = tok.encode("🙂");
  REQUIRE(ids.size() == 4);  // four UTF-8 bytes, none of them seen in training
  for (int32_t id : ids) CHECK(tok.is_byte(id));
  CHECK(tok.piece(ids[0]) == "<0xF0>");
  CHECK(tok.encode("").empty());
}

TEST_CASE("digits are split into single-digit tokens", "[tokenizer]") {
  const Tokenizer& tok = test::trained();
  auto ids = tok.encode("1234567890");
  REQUIRE(ids.size() == 10);
  for (size_t i = 0; i < ids.size(); ++i) CHECK(tok.piece(ids[i]) == std::string(1, "1234567890"[i]));
  CHECK(tok.decode(tok.encode("x 2024 + 17 = 2041")) == "x 2024 + 17 = 2041");
  // A digit never shares a piece with anything else, not even with the whitespace mark.
  for (int32_t id = 0; id < tok.vocab_size(); ++id) {
    std::string p = tok.piece(id);
    if (tok.is_byte(id) || tok.is_special(id)) continue;
    if (p.find_first_of("0123456789") != std::string::npos) CHECK(p.size() == 1);
  }
}

TEST_CASE("decode refuses ids outside the vocabulary", "[tokenizer]") {
  const Tokenizer& tok = test::trained();
  try {
    tok.decode({5, tok.vocab_size()});
    FAIL("no error");
  } catch (const Error& e) {
    CHECK(e.kind() == ErrorKind::bad_input);
    CHECK_THAT(e.what(), Catch::Contains("outside the vocabulary"));
  }
  CHECK_THROWS_AS(tok.decode({-1}), Error);
}

TEST_CASE("split_on_special: leftmost match, longest on a tie", "[tokenizer]") {
  std::vector<std::string_view> toks = {"<a", "<ab>", "</a>"};
  std::vector<std::string> parts;
  split_on_special("x<ab>y<a></a><a", toks, [&](std::string_view t) { parts.push_back("T:" + std::string(t)); },
                   [&](size_t k) { parts.push_back("S:" + std::string(toks[k])); });
  CHECK(parts == std::vector<std::string>{"T:x", "S:<ab>", "T:y", "S:<a", "T:>", "S:</a>", "S:<a"});
  parts.clear();
  split_on_special("plain", toks, [&](std::string_view t) { parts.push_back(std::string(t)); }, [](size_t) {});
  CHECK(parts == std::vector<std::string>{"plain"});
}
