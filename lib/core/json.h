#pragma once
// JSON: parsing of small documents (config.json, trainer_state.json) through simdjson's DOM, and a streaming
// writer for output records (JSONL lines, metrics, checkpoints' JSON files).
#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

namespace ds {

// A builder for one JSON value, written compactly (JSONL) or indented (files people read).
// Numbers: integers exactly; doubles with the shortest round-trip representation (%.17g fallback);
// NaN/Inf are written as null. Strings are escaped per RFC 8259 (UTF-8 passed through).
class JsonWriter {
 public:
  explicit JsonWriter(bool pretty = false) : pretty_(pretty) {}
  JsonWriter& begin_object();
  JsonWriter& end_object();
  JsonWriter& begin_array();
  JsonWriter& end_array();
  JsonWriter& key(std::string_view k);
  JsonWriter& value(std::string_view s);
  JsonWriter& value(const char* s) { return value(std::string_view(s)); }
  JsonWriter& value(const std::string& s) { return value(std::string_view(s)); }
  JsonWriter& value(double d);
  JsonWriter& value(float f) { return value(double(f)); }
  JsonWriter& value(int64_t i);
  JsonWriter& value(int i) { return value(int64_t(i)); }
  JsonWriter& value(uint64_t u);
  // Integer types that would otherwise be ambiguous between the overloads above.
  JsonWriter& value(unsigned u) { return value(uint64_t(u)); }
  JsonWriter& value(long long i) { return value(int64_t(i)); }
  JsonWriter& value(unsigned long long u) { return value(uint64_t(u)); }
  JsonWriter& value(bool b);
  JsonWriter& null();
  JsonWriter& raw(std::string_view json);  // an already-serialised value (pass-through of input fields)
  template <class T> JsonWriter& kv(std::string_view k, const T& v) { key(k); return value(v); }
  const std::string& str() const { return out_; }
  std::string take() { return std::move(out_); }

 private:
  void before_value();
  std::string out_;
  bool pretty_;
  std::vector<int> counts_;  // values written per open container
  bool after_key_ = false;
};

std::string json_escape(std::string_view s);  // the quoted, escaped string

}  // namespace ds
