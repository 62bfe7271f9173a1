#include <catch2/catch.hpp>

#include "core/error.h"
#include "core/io.h"
#include "core/jsonl.h"
#include "std_redirect.h"
#include "../common/temp_dir.h"

using namespace ds;
using ds::test::TempDir;

namespace {

// Reads every record; returns the bad-input message, or "" when the whole file was good.
std::string read_all(const std::string& path, std::vector<std::string>* texts = nullptr,
                     std::vector<int64_t>* line_numbers = nullptr) {
  try {
    JsonlReader r(path);
    while (const JsonlRecord* rec = r.next()) {
      if (texts) texts->push_back(rec->get_string("text"));
      if (line_numbers) line_numbers->push_back(r.line_number());
    }
  } catch (const Error& e) {
    REQUIRE(e.kind() == ErrorKind::bad_input);
    return e.what();
  }
  return "";
}

std::string error_of(const std::function<void()>& f) {
  try {
    f();
  } catch (const Error& e) {
    CHECK(e.kind() == ErrorKind::bad_input);
    return e.what();
  }
  return "";
}

}  // namespace

TEST_CASE("JsonlReader reads a good file and skips blank lines", "[jsonl]") {
  TempDir d;
  std::string p = d.file("a.jsonl");
  ds::test::write_raw(p, "{\"text\":\"a\"}\n\n   \n{\"text\":\"b\\n\\u00e9\"}\r\n{\"text\":\"c\"}");
  std::vector<std::string> texts;
  std::vector<int64_t> lines;
  CHECK(read_all(p, &texts, &lines) == "");
  CHECK(texts == std::vector<std::string>{"a", "b\n\xC3\xA9", "c"});
  CHECK(lines == std::vector<int64_t>{1, 4, 5});
}

TEST_CASE("an empty file yields no records", "[jsonl]") {
  TempDir d;
  ds::test::write_raw(d.file("e.jsonl"), "");
  ds::test::write_raw(d.file("blank.jsonl"), "\n\n \n");
  JsonlReader r(d.file("e.jsonl"));
  CHECK(r.next() == nullptr);
  JsonlReader r2(d.file("blank.jsonl"));
  CHECK(r2.next() == nullptr);
}

TEST_CASE("malformed lines name file and exact line", "[jsonl]") {
  TempDir d;
  std::string p = d.file("bad.jsonl");
  ds::test::write_raw(p, "{\"text\":\"a\"}\n\n{\"text\":\"b\"}\n{\"text\": nope}\n{\"text\":\"d\"}\n");
  std::vector<std::string> texts;
  std::string msg = read_all(p, &texts);
  CHECK(texts == std::vector<std::string>{"a", "b"});  // the good records before the error were delivered
  CHECK(msg.rfind("malformed JSON: ", 0) == 0);
  CHECK_THAT(msg, Catch::EndsWith("(" + p + ":4)"));
}

TEST_CASE("a line that is not an object is rejected", "[jsonl]") {
  TempDir d;
  std::string p = d.file("arr.jsonl");
  ds::test::write_raw(p, "{\"text\":\"a\"}\n[1,2]\n");
  CHECK(read_all(p) == "expected a JSON object (" + p + ":2)");
}

TEST_CASE("a truncated last line is reported as such", "[jsonl]") {
  TempDir d;
  std::string p = d.file("cut.jsonl");
  ds::test::write_raw(p, "{\"text\":\"a\"}\n{\"text\":\"b\"}\n{\"text\":\"trunc");
  std::vector<std::string> texts;
  CHECK(read_all(p, &texts) == "truncated last line (" + p + ":3)");
  CHECK(texts.size() == 2);
  // With the newline present the same bytes are just malformed.
  ds::test::write_raw(p, "{\"text\":\"a\"}\n{\"text\":\"trunc\n");
  CHECK(read_all(p).rfind("malformed JSON", 0) == 0);
}

TEST_CASE("typed getters report wrong types and missing fields", "[jsonl]") {
  TempDir d;
  std::string p = d.file("t.jsonl");
  ds::test::write_raw(p, "{\"text\":5,\"n\":3,\"x\":2.5,\"b\":true,\"ids\":[1,2,3],\"z\":null,\"f\":[0.5,1]}\n");
  JsonlReader r(p);
  const JsonlRecord* rec = r.next();
  REQUIRE(rec);
  CHECK(error_of([&] { rec->get_string("text"); }) == "field 'text' must be a string (" + p + ":1)");
  CHECK(error_of([&] { rec->get_string("missing"); }) == "missing field 'missing' (" + p + ":1)");
  CHECK(error_of([&] { rec->get_int("x"); }) == "field 'x' must be an integer (" + p + ":1)");
  CHECK(error_of([&] { rec->get_bool("n"); }) == "field 'n' must be true or false (" + p + ":1)");
  CHECK(error_of([&] { rec->get_int_array("f"); }) == "field 'f' must be an array of integers (" + p + ":1)");
  CHECK(rec->get_int("n") == 3);
  CHECK(rec->get_double("n") == 3.0);  // ints are accepted as doubles
  CHECK(rec->get_double("x") == 2.5);
  CHECK(rec->get_bool("b"));
  CHECK(rec->get_int_array("ids") == std::vector<int64_t>{1, 2, 3});
  CHECK(rec->get_double_array("f") == std::vector<double>{0.5, 1.0});
  CHECK_FALSE(rec->opt_string("z").has_value());
  CHECK_FALSE(rec->opt_string("absent").has_value());
  CHECK(error_of([&] { rec->opt_string("n"); }) == "field 'n' must be a string (" + p + ":1)");
  CHECK(rec->is_null("z"));
  CHECK_FALSE(rec->is_null("n"));
  CHECK(rec->type_name("n") == "integer");
  CHECK(rec->type_name("x") == "number");
  CHECK(rec->type_name("ids") == "array");
  CHECK(rec->type_name("absent") == "missing");
  CHECK(rec->has("text"));
  CHECK_FALSE(rec->has("absent"));
  CHECK(rec->keys() == std::vector<std::string>{"text", "n", "x", "b", "ids", "z", "f"});
}

TEST_CASE("raw() returns a field's JSON text exactly", "[jsonl]") {
  auto rec = parse_object(R"({"a": 1.50, "s":"x\u00e9\"y", "o" : {"k": [1, {"q":"}"}]} , "e":[], "n":null})", "mem");
  CHECK(rec.raw("a") == "1.50");
  CHECK(rec.raw("s") == R"("x\u00e9\"y")");
  CHECK(rec.raw("o") == R"({"k": [1, {"q":"}"}]})");
  CHECK(rec.raw("e") == "[]");
  CHECK(rec.raw("n") == "null");
  CHECK(error_of([&] { rec.raw("zz"); }) == "missing field 'zz' (mem)");
  // A key written with an escape still resolves (via re-serialisation).
  auto esc = parse_object(R"({"k\u0031": [1, 2]})", "mem");
  CHECK(esc.raw("k1") == "[1,2]");
}

TEST_CASE("parse_object handles nested config documents", "[jsonl]") {
  std::string config = R"({
    "model_type": "deepseek_v3",
    "hidden_size": 256,
    "rope_scaling": {"type": "yarn", "factor": 4.0, "beta_fast": 32},
    "quantization_config": null,
    "rms_norm_eps": 1e-06,
    "messages": [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "yo"}]
  })";
  auto rec = parse_object(config, "config.json");
  CHECK(rec.get_string("model_type") == "deepseek_v3");
  CHECK(rec.get_int("hidden_size") == 256);
  CHECK(rec.get_double("rms_norm_eps") == 1e-6);
  CHECK(rec.is_null("quantization_config"));
  CHECK(rec.opt_int("missing") == std::nullopt);
  CHECK(rec.opt_double("rms_norm_eps") == 1e-6);
  auto rope = rec.get_object("rope_scaling");
  CHECK(rope.get_string("type") == "yarn");
  CHECK(rope.get_double("factor") == 4.0);
  CHECK(rope.get_int("factor") == 4);  // an integral double is an acceptable integer
  CHECK(error_of([&] { rope.get_string("factor"); }) == "field 'rope_scaling.factor' must be a string (config.json)");
  CHECK(error_of([&] { rec.get_object("hidden_size"); }) == "field 'hidden_size' must be an object (config.json)");
  auto msgs = rec.get_object_array("messages");
  REQUIRE(msgs.size() == 2);
  CHECK(msgs[1].get_string("content") == "yo");
  CHECK(error_of([&] { msgs[0].get_int("role"); }) == "field 'messages[0].role' must be an integer (config.json)");
  auto raws = rec.get_object_array_raw("messages");
  REQUIRE(raws.size() == 2);
  CHECK(parse_object(raws[0], "m").get_string("role") == "user");

  CHECK(error_of([&] { parse_object("{\"a\":", "cfg.json"); }).rfind("malformed JSON: ", 0) == 0);
  CHECK(error_of([&] { parse_object("[1]", "cfg.json", 7); }) == "expected a JSON object (cfg.json:7)");
}

TEST_CASE("JSONL through zstd and stdin", "[jsonl]") {
  TempDir d;
  std::string zst = d.file("x.jsonl.zst");
  {
    Writer w(zst);
    for (int i = 0; i < 1000; ++i) w.write("{\"text\":\"r" + std::to_string(i) + "\"}\n");
    w.write("\n{\"text\":\"bad\"\n");
    w.commit();
  }
  std::vector<std::string> texts;
  std::string msg = read_all(zst, &texts);
  CHECK(texts.size() == 1000);
  CHECK(texts[999] == "r999");
  CHECK_THAT(msg, Catch::EndsWith("(" + zst + ":1002)"));

  ds::test::write_raw(d.file("in.jsonl"), "{\"text\":\"s\"}\n{oops}\n");
  ds::test::Redirect in(STDIN_FILENO, d.file("in.jsonl"));
  texts.clear();
  msg = read_all("-", &texts);
  CHECK(texts == std::vector<std::string>{"s"});
  CHECK_THAT(msg, Catch::EndsWith("(<stdin>:2)"));
}
