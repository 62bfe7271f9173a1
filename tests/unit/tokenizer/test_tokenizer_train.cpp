// Training: outputs, determinism, tokenizer files, and the errors (bad JSONL, empty corpus, tiny vocabulary).
#include <catch2/catch.hpp>

#include <filesystem>
#include <fstream>

#include "corpus.h"
#include "tokenizer/tokenizer_files.h"

using namespace ds;
namespace fs = std::filesystem;

namespace {

std::string slurp(const std::string& path) {
  std::ifstream f(path, std::ios::binary);
  return std::string(std::istreambuf_iterator<char>(f), {});
}

template <class F> Error error_of(F&& f) {
  try {
    f();
  } catch (const Error& e) {
    return e;
  }
  FAIL("no error thrown");
  return Error(ErrorKind::runtime, "");
}

TrainOptions small(const std::string& input, const std::string& output) {
  TrainOptions o;
  o.input = input;
  o.output = output;
  o.vocab_size = 350;
  o.threads = 2;
  return o;
}

}  // namespace

TEST_CASE("training writes a directory with the tokenizer files, or a single .model file", "[tokenizer][train]") {
  test::TmpDir dir;
  test::write_corpus(dir / "c.jsonl", 200);
  Tokenizer a = train_tokenizer(small(dir / "c.jsonl", dir / "tok"));
  REQUIRE(fs::exists(dir / "tok/tokenizer.model"));
  REQUIRE(fs::exists(dir / "tok/tokenizer_config.json"));
  REQUIRE(fs::exists(dir / "tok/special_tokens_map.json"));
  CHECK(slurp(dir / "tok/tokenizer.model") == a.serialized_model());

  std::string cfg = slurp(dir / "tok/tokenizer_config.json");
  CHECK_THAT(cfg, Catch::Contains("\"chat_template_name\": \"deepseek-r1\""));
  CHECK_THAT(cfg, Catch::Contains("\"bos_token\": \"" + std::string(kBosToken) + "\""));
  CHECK_THAT(cfg, Catch::Contains("\"eos_token\": \"" + std::string(kEosToken) + "\""));
  CHECK_THAT(cfg, Catch::Contains("\"pad_token\": \"" + std::string(kPadToken) + "\""));
  CHECK_THAT(cfg, Catch::Contains("\"model_max_length\": 16384"));
  CHECK_THAT(cfg, Catch::Contains("<think>\\\\n"));  // the generation prompt, escaped twice (Jinja, JSON)
  CHECK_THAT(slurp(dir / "tok/special_tokens_map.json"), Catch::Contains(std::string(kUserToken)));

  // Loading from the directory or the file gives the same tokenizer.
  Tokenizer b = Tokenizer::load(dir / "tok");
  Tokenizer c = Tokenizer::load(dir / "tok/tokenizer.model");
  std::string s = std::string(kUserToken) + "数学 123 the model";
  CHECK(b.encode(s) == a.encode(s));
  CHECK(c.encode(s) == a.encode(s));
  CHECK(b.source() == dir / "tok/tokenizer.model");

  Tokenizer d = train_tokenizer(small(dir / "c.jsonl", dir / "sub/my.model"));
  CHECK(fs::exists(dir / "sub/my.model"));
  CHECK_FALSE(fs::exists(dir / "sub/tokenizer_config.json"));
  // Same corpus and options (even with 2 threads): the same model, byte for byte.
  CHECK(d.serialized_model() == a.serialized_model());
}

TEST_CASE("write_tokenizer_files copies the model next to a checkpoint", "[tokenizer][train]") {
  test::TmpDir dir;
  write_tokenizer_files(dir.path, test::trained(), 2048);
  CHECK(Tokenizer::load(dir.path).vocab_size() == test::trained().vocab_size());
  CHECK_THAT(slurp(dir / "tokenizer_config.json"), Catch::Contains("\"model_max_length\": 2048"));
  CHECK(deepseek_r1_chat_template().find("<｜Assistant｜><think>\\n") != std::string::npos);
}

TEST_CASE("a malformed JSONL line is a bad-input error naming file:line, and nothing is written", "[tokenizer][train]") {
  test::TmpDir dir;
  std::ofstream(dir / "bad.jsonl") << "{\"text\": \"fine\"}\n{\"text\": \"broken\n{\"text\": \"x\"}\n";
  Error e = error_of([&] { train_tokenizer(small(dir / "bad.jsonl", dir / "out")); });
  CHECK(e.kind() == ErrorKind::bad_input);
  CHECK_THAT(e.what(), Catch::Contains(dir / "bad.jsonl:2"));
  CHECK_FALSE(fs::exists(dir / "out"));

  std::ofstream(dir / "notext.jsonl") << "{\"text\": \"fine\"}\n{\"content\": \"x\"}\n";
  e = error_of([&] { train_tokenizer(small(dir / "notext.jsonl", dir / "out.model")); });
  CHECK(e.kind() == ErrorKind::bad_input);
  CHECK_THAT(e.what(), Catch::Contains("text"));
  CHECK_THAT(e.what(), Catch::Contains(dir / "notext.jsonl:2"));
  CHECK_FALSE(fs::exists(dir / "out.model"));
}

TEST_CASE("empty corpora, missing input and tiny vocabularies are refused", "[tokenizer][train]") {
  test::TmpDir dir;
  std::ofstream(dir / "empty.jsonl") << "";
  std::ofstream(dir / "blank.jsonl") << "{\"text\": \"\"}\n{\"text\": \"\\n\\n\"}\n";
  for (const char* f : {"empty.jsonl", "blank.jsonl"}) {
    Error e = error_of([&] { train_tokenizer(small(dir / f, dir / "out")); });
    CHECK(e.kind() == ErrorKind::bad_input);
    CHECK_THAT(e.what(), Catch::Contains("empty corpus"));
  }
  Error e = error_of([&] { train_tokenizer(small(dir / "missing.jsonl", dir / "out")); });
  CHECK(e.kind() == ErrorKind::bad_input);

  test::write_corpus(dir / "c.jsonl", 50);
  auto o = small(dir / "c.jsonl", dir / "out");
  o.vocab_size = 100;
  e = error_of([&] { train_tokenizer(o); });
  CHECK(e.kind() == ErrorKind::usage);
  CHECK_FALSE(fs::exists(dir / "out"));
}
