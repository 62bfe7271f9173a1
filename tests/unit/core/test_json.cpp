#include <catch2/catch.hpp>

#include <cmath>
#include <limits>

#include "core/json.h"
#include "core/jsonl.h"
#include "core/rng.h"

using namespace ds;

TEST_CASE("json_escape follows RFC 8259", "[json]") {
  CHECK(json_escape("plain") == "\"plain\"");
  CHECK(json_escape("q\"b\\s/") == "\"q\\\"b\\\\s/\"");
  CHECK(json_escape("\n\r\t\b\f") == "\"\\n\\r\\t\\b\\f\"");
  CHECK(json_escape(std::string("\x01\x1f", 2)) == "\"\\u0001\\u001f\"");
  CHECK(json_escape(std::string("a\0b", 3)) == "\"a\\u0000b\"");
  CHECK(json_escape("caf\xC3\xA9 \xE4\xB8\xAD \xF0\x9F\x98\x80") == "\"caf\xC3\xA9 \xE4\xB8\xAD \xF0\x9F\x98\x80\"");
  // Invalid UTF-8 (a lone continuation byte, a cut sequence, a surrogate) becomes U+FFFD.
  CHECK(json_escape("a\x80z") == "\"a\xEF\xBF\xBDz\"");
  CHECK(json_escape("\xE4\xB8") == "\"\xEF\xBF\xBD\xEF\xBF\xBD\"");
  CHECK(json_escape("\xED\xA0\x80") == "\"\xEF\xBF\xBD\xEF\xBF\xBD\xEF\xBF\xBD\"");
}

TEST_CASE("JsonWriter compact output", "[json]") {
  JsonWriter w;
  w.begin_object().kv("text", "hi\n").kv("n", 3).kv("u", uint64_t(18446744073709551615ull)).kv("neg", int64_t(-7));
  w.key("arr").begin_array().value(1.5).value(true).null().begin_object().end_object().begin_array().end_array()
      .end_array();
  w.key("raw").raw("{\"x\":[1,2]}");
  w.kv("nan", std::nan("")).kv("inf", std::numeric_limits<double>::infinity()).kv("f", 0.1f);
  w.end_object();
  CHECK(w.str() ==
        "{\"text\":\"hi\\n\",\"n\":3,\"u\":18446744073709551615,\"neg\":-7,\"arr\":[1.5,true,null,{},[]],"
        "\"raw\":{\"x\":[1,2]},\"nan\":null,\"inf\":null,\"f\":0.10000000149011612}");
}

TEST_CASE("JsonWriter pretty output", "[json]") {
  JsonWriter w(true);
  w.begin_object().kv("a", 1).key("b").begin_array().value(2).value(3).end_array().key("c").begin_object()
      .end_object().end_object();
  CHECK(w.str() == "{\n  \"a\": 1,\n  \"b\": [\n    2,\n    3\n  ],\n  \"c\": {}\n}");
  auto rec = parse_object(w.str(), "pretty");
  CHECK(rec.get_int_array("b") == std::vector<int64_t>{2, 3});
}

TEST_CASE("doubles and strings survive a write/parse round trip", "[json]") {
  Rng rng{7, 1, 0};
  std::vector<double> values = {0.0, -0.0, 1.0, 0.1, 1e-300, 5e-324, 1.7976931348623157e308, -2.5e-7, 123456789.125,
                                3.141592653589793, 1180591620717411303424.0, 1e22, -1e300, 123456789012345680.0};
  for (int i = 0; i < 200; ++i) values.push_back(std::ldexp(rng.next_uniform() - 0.5, int(rng.next_below(200)) - 100));
  JsonWriter w;
  w.begin_object().key("v").begin_array();
  for (double v : values) w.value(v);
  w.end_array();
  std::string nasty = "tab\t quote\" back\\ ctl\x02 nl\n emoji \xF0\x9F\x98\x80";
  w.kv("s", nasty).kv("big", int64_t(-9223372036854775807LL - 1));
  w.end_object();
  auto rec = parse_object(w.str(), "roundtrip");
  auto back = rec.get_double_array("v");
  REQUIRE(back.size() == values.size());
  for (size_t i = 0; i < values.size(); ++i) {
    INFO(i << ": " << values[i]);
    CHECK(back[i] == values[i]);
  }
  CHECK(rec.get_string("s") == nasty);
  CHECK(rec.get_int("big") == std::numeric_limits<int64_t>::min());
}
