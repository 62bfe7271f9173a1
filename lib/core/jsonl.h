#pragma once
// Streaming JSONL reader on simdjson. Every record is a JSON object on one line. Errors are bad-input errors
// naming file:line: a malformed line, a line that is not an object, a truncated last line (no closing brace),
// a wrong field type (through the typed getters below). Blank lines are skipped. An empty file yields no
// records (callers decide whether that is an error).
#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

namespace ds {

class JsonlRecord;

class JsonlReader {
 public:
  explicit JsonlReader(const std::string& path);  // path, '-' or .zst
  ~JsonlReader();
  // The next record, or nullptr at the end. The record stays valid until the next call.
  const JsonlRecord* next();
  int64_t line_number() const;  // of the record last returned
  const std::string& path() const;

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

// One parsed line. Getters throw bad-input errors "field 'x' must be a string (file:line)".
class JsonlRecord {
 public:
  bool has(std::string_view key) const;
  std::string get_string(std::string_view key) const;                 // required
  std::optional<std::string> opt_string(std::string_view key) const;  // absent or null -> nullopt
  int64_t get_int(std::string_view key) const;
  double get_double(std::string_view key) const;  // ints accepted
  bool get_bool(std::string_view key) const;
  std::vector<int64_t> get_int_array(std::string_view key) const;
  std::vector<double> get_double_array(std::string_view key) const;
  std::string raw(std::string_view key) const;   // the field's JSON text, exactly as in the input
  std::vector<std::string> keys() const;         // in input order
  const std::string& line() const { return line_; }  // the whole line
  // Array-of-objects access (e.g. "messages"): each element's raw JSON, to be parsed with parse_object.
  std::vector<std::string> get_object_array_raw(std::string_view key) const;

  // Nested documents (config.json's "rope_scaling", "messages" elements). The records share this record's
  // parsed document (valid as long as it is), and their errors name the field path ("rope_scaling.factor").
  JsonlRecord get_object(std::string_view key) const;
  std::vector<JsonlRecord> get_object_array(std::string_view key) const;
  std::vector<std::string> get_string_array(std::string_view key) const;
  // Optional scalars: absent or null -> nullopt; present with another type -> bad-input error.
  std::optional<int64_t> opt_int(std::string_view key) const;
  std::optional<double> opt_double(std::string_view key) const;
  std::optional<bool> opt_bool(std::string_view key) const;
  bool is_null(std::string_view key) const;  // present and null
  // "missing", "null", "bool", "integer", "number" (non-integer), "string", "array" or "object".
  std::string type_name(std::string_view key) const;

  // Internal: built by JsonlReader / parse_object.
  struct Impl;
  JsonlRecord();
  ~JsonlRecord();
  std::shared_ptr<Impl> impl_;
  std::string line_;
  std::string file_;
  int64_t line_no_ = 0;
};

// Parses one JSON object (e.g. config.json, an element of "messages"); bad-input error naming `origin` on failure.
JsonlRecord parse_object(const std::string& json, const std::string& origin, int64_t line = 0);

}  // namespace ds
