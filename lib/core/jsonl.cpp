#include "core/jsonl.h"

#include <simdjson.h>

#include <cmath>
#include <limits>

#include "core/error.h"
#include "core/io.h"

namespace ds {

namespace dom = simdjson::dom;

struct JsonlRecord::Impl {
  std::shared_ptr<dom::parser> parser;  // owns the parsed document the object points into
  dom::object obj;
  std::string prefix;  // "rope_scaling." for nested records, so that errors name the full field path
};

namespace {

// ------------------------------------------------------------------------------------ raw text of a field
// simdjson's DOM keeps no source offsets, so raw() finds the value's span in the (already validated) text
// itself: that keeps pass-through fields byte-exact (number spellings, \u escapes) instead of re-serialised.

bool is_ws(char c) { return c == ' ' || c == '\t' || c == '\n' || c == '\r'; }

void skip_ws(std::string_view s, size_t& i) {
  while (i < s.size() && is_ws(s[i])) ++i;
}

// s[i] is the opening quote; leaves i after the closing quote.
void skip_string(std::string_view s, size_t& i) {
  for (++i; i < s.size(); ++i) {
    if (s[i] == '\\') ++i;
    else if (s[i] == '"') { ++i; return; }
  }
}

void skip_value(std::string_view s, size_t& i) {
  if (i >= s.size()) return;
  if (s[i] == '"') { skip_string(s, i); return; }
  if (s[i] == '{' || s[i] == '[') {
    int depth = 0;
    while (i < s.size()) {
      char c = s[i];
      if (c == '"') { skip_string(s, i); continue; }
      if (c == '{' || c == '[') ++depth;
      else if (c == '}' || c == ']') {
        if (--depth == 0) { ++i; return; }
      }
      ++i;
    }
    return;
  }
  while (i < s.size() && !is_ws(s[i]) && s[i] != ',' && s[i] != '}' && s[i] != ']') ++i;
}

enum class RawFind { found, absent, escaped_key };

// The span of the first top-level member named `key`. Keys spelled with escapes cannot be compared on the
// raw text; the caller then falls back to re-serialising.
RawFind find_raw(std::string_view s, std::string_view key, std::string_view* out) {
  size_t i = 0;
  skip_ws(s, i);
  if (i >= s.size() || s[i] != '{') return RawFind::absent;
  ++i;
  bool saw_escape = false;
  for (;;) {
    skip_ws(s, i);
    if (i >= s.size() || s[i] != '"') break;
    size_t kstart = i + 1;
    skip_string(s, i);
    std::string_view k = s.substr(kstart, i - 1 - kstart);
    bool escaped = k.find('\\') != std::string_view::npos;
    saw_escape |= escaped;
    skip_ws(s, i);
    if (i >= s.size() || s[i] != ':') break;
    ++i;
    skip_ws(s, i);
    size_t vstart = i;
    skip_value(s, i);
    if (!escaped && k == key) {
      *out = s.substr(vstart, i - vstart);
      return RawFind::found;
    }
    skip_ws(s, i);
    if (i >= s.size() || s[i] != ',') break;
    ++i;
  }
  return saw_escape ? RawFind::escaped_key : RawFind::absent;
}

// ------------------------------------------------------------------------------------------ field access

[[noreturn]] void fail(const JsonlRecord& r, const std::string& msg) { throw_bad_input(msg, r.file_, r.line_no_); }

std::string field_name(const JsonlRecord& r, std::string_view key) {
  return "'" + (r.impl_ ? r.impl_->prefix : std::string()) + std::string(key) + "'";
}

bool find(const JsonlRecord& r, std::string_view key, dom::element* out) {
  if (!r.impl_) return false;
  auto res = r.impl_->obj.at_key(key);
  if (res.error()) return false;
  *out = res.value_unsafe();
  return true;
}

dom::element require(const JsonlRecord& r, std::string_view key) {
  dom::element e;
  if (!find(r, key, &e)) fail(r, "missing field " + field_name(r, key));
  return e;
}

[[noreturn]] void wrong_type(const JsonlRecord& r, std::string_view key, const char* what) {
  fail(r, "field " + field_name(r, key) + " must be " + what);
}

// Integers: JSON integers that fit in int64, and doubles with an exact integer value (1e3, 2.0).
bool as_int(dom::element e, int64_t* out) {
  switch (e.type()) {
    case dom::element_type::INT64: *out = e.get_int64().value_unsafe(); return true;
    case dom::element_type::UINT64: {
      uint64_t u = e.get_uint64().value_unsafe();
      if (u > uint64_t(std::numeric_limits<int64_t>::max())) return false;
      *out = int64_t(u);
      return true;
    }
    case dom::element_type::DOUBLE: {
      double d = e.get_double().value_unsafe();
      if (d != std::floor(d) || d < -9.2233720368547758e18 || d >= 9.2233720368547758e18) return false;
      *out = int64_t(d);
      return true;
    }
    default: return false;
  }
}

bool as_double(dom::element e, double* out) {
  switch (e.type()) {
    case dom::element_type::INT64: *out = double(e.get_int64().value_unsafe()); return true;
    case dom::element_type::UINT64: *out = double(e.get_uint64().value_unsafe()); return true;
    case dom::element_type::DOUBLE: *out = e.get_double().value_unsafe(); return true;
    default: return false;
  }
}

JsonlRecord make_record(std::shared_ptr<dom::parser> parser, dom::object obj, std::string text, std::string file,
                        int64_t line_no, std::string prefix) {
  JsonlRecord r;
  r.impl_ = std::make_shared<JsonlRecord::Impl>();
  r.impl_->parser = std::move(parser);
  r.impl_->obj = obj;
  r.impl_->prefix = std::move(prefix);
  r.line_ = std::move(text);
  r.file_ = std::move(file);
  r.line_no_ = line_no;
  return r;
}

// Parses `text` as one JSON object with `parser`. Messages follow DESIGN.md: "what (file:line)".
dom::object parse_into(dom::parser& parser, const std::string& text, const std::string& file, int64_t line,
                       bool truncated_if_bad) {
  dom::element doc;
  auto err = parser.parse(text).get(doc);
  if (err) {
    if (truncated_if_bad) throw_bad_input("truncated last line", file, line);
    throw_bad_input(std::string("malformed JSON: ") + simdjson::error_message(err), file, line);
  }
  dom::object obj;
  if (doc.get_object().get(obj)) throw_bad_input("expected a JSON object", file, line);
  return obj;
}

const std::string kStdinName = "<stdin>";  // how '-' is named in error locations

bool is_blank(const std::string& s) {
  for (char c : s)
    if (!is_ws(c)) return false;
  return true;
}

}  // namespace

// ------------------------------------------------------------------------------------------- JsonlRecord

JsonlRecord::JsonlRecord() = default;
JsonlRecord::~JsonlRecord() = default;

bool JsonlRecord::has(std::string_view key) const {
  dom::element e;
  return find(*this, key, &e);
}

std::string JsonlRecord::get_string(std::string_view key) const {
  std::string_view v;
  if (require(*this, key).get_string().get(v)) wrong_type(*this, key, "a string");
  return std::string(v);
}

std::optional<std::string> JsonlRecord::opt_string(std::string_view key) const {
  dom::element e;
  if (!find(*this, key, &e) || e.is_null()) return std::nullopt;
  std::string_view v;
  if (e.get_string().get(v)) wrong_type(*this, key, "a string");
  return std::string(v);
}

int64_t JsonlRecord::get_int(std::string_view key) const {
  int64_t v;
  if (!as_int(require(*this, key), &v)) wrong_type(*this, key, "an integer");
  return v;
}

double JsonlRecord::get_double(std::string_view key) const {
  double v;
  if (!as_double(require(*this, key), &v)) wrong_type(*this, key, "a number");
  return v;
}

bool JsonlRecord::get_bool(std::string_view key) const {
  bool v;
  if (require(*this, key).get_bool().get(v)) wrong_type(*this, key, "true or false");
  return v;
}

std::optional<int64_t> JsonlRecord::opt_int(std::string_view key) const {
  dom::element e;
  if (!find(*this, key, &e) || e.is_null()) return std::nullopt;
  int64_t v;
  if (!as_int(e, &v)) wrong_type(*this, key, "an integer");
  return v;
}

std::optional<double> JsonlRecord::opt_double(std::string_view key) const {
  dom::element e;
  if (!find(*this, key, &e) || e.is_null()) return std::nullopt;
  double v;
  if (!as_double(e, &v)) wrong_type(*this, key, "a number");
  return v;
}

std::optional<bool> JsonlRecord::opt_bool(std::string_view key) const {
  dom::element e;
  if (!find(*this, key, &e) || e.is_null()) return std::nullopt;
  bool v;
  if (e.get_bool().get(v)) wrong_type(*this, key, "true or false");
  return v;
}

bool JsonlRecord::is_null(std::string_view key) const {
  dom::element e;
  return find(*this, key, &e) && e.is_null();
}

std::string JsonlRecord::type_name(std::string_view key) const {
  dom::element e;
  if (!find(*this, key, &e)) return "missing";
  switch (e.type()) {
    case dom::element_type::NULL_VALUE: return "null";
    case dom::element_type::BOOL: return "bool";
    case dom::element_type::INT64:
    case dom::element_type::UINT64: return "integer";
    case dom::element_type::DOUBLE: return "number";
    case dom::element_type::STRING: return "string";
    case dom::element_type::ARRAY: return "array";
    case dom::element_type::OBJECT: return "object";
  }
  return "unknown";
}

std::vector<int64_t> JsonlRecord::get_int_array(std::string_view key) const {
  dom::array arr;
  if (require(*this, key).get_array().get(arr)) wrong_type(*this, key, "an array of integers");
  std::vector<int64_t> out;
  out.reserve(arr.size());
  for (dom::element e : arr) {
    int64_t v;
    if (!as_int(e, &v)) wrong_type(*this, key, "an array of integers");
    out.push_back(v);
  }
  return out;
}

std::vector<double> JsonlRecord::get_double_array(std::string_view key) const {
  dom::array arr;
  if (require(*this, key).get_array().get(arr)) wrong_type(*this, key, "an array of numbers");
  std::vector<double> out;
  out.reserve(arr.size());
  for (dom::element e : arr) {
    double v;
    if (!as_double(e, &v)) wrong_type(*this, key, "an array of numbers");
    out.push_back(v);
  }
  return out;
}

std::vector<std::string> JsonlRecord::get_string_array(std::string_view key) const {
  dom::array arr;
  if (require(*this, key).get_array().get(arr)) wrong_type(*this, key, "an array of strings");
  std::vector<std::string> out;
  out.reserve(arr.size());
  for (dom::element e : arr) {
    std::string_view v;
    if (e.get_string().get(v)) wrong_type(*this, key, "an array of strings");
    out.emplace_back(v);
  }
  return out;
}

std::string JsonlRecord::raw(std::string_view key) const {
  dom::element e = require(*this, key);
  std::string_view span;
  if (find_raw(line_, key, &span) == RawFind::found) return std::string(span);
  return simdjson::to_string(e);  // key spelled with escapes: the minified value is equivalent
}

std::vector<std::string> JsonlRecord::keys() const {
  std::vector<std::string> out;
  if (!impl_) return out;
  for (dom::key_value_pair kv : impl_->obj) out.emplace_back(kv.key);
  return out;
}

std::vector<std::string> JsonlRecord::get_object_array_raw(std::string_view key) const {
  dom::array arr;
  if (require(*this, key).get_array().get(arr)) wrong_type(*this, key, "an array of objects");
  std::vector<std::string> out;
  out.reserve(arr.size());
  for (dom::element e : arr) {
    if (!e.is_object()) wrong_type(*this, key, "an array of objects");
    out.push_back(simdjson::to_string(e));
  }
  return out;
}

JsonlRecord JsonlRecord::get_object(std::string_view key) const {
  dom::object obj;
  if (require(*this, key).get_object().get(obj)) wrong_type(*this, key, "an object");
  return make_record(impl_->parser, obj, simdjson::to_string(obj), file_, line_no_,
                     impl_->prefix + std::string(key) + ".");
}

std::vector<JsonlRecord> JsonlRecord::get_object_array(std::string_view key) const {
  dom::array arr;
  if (require(*this, key).get_array().get(arr)) wrong_type(*this, key, "an array of objects");
  std::vector<JsonlRecord> out;
  out.reserve(arr.size());
  size_t i = 0;
  for (dom::element e : arr) {
    dom::object obj;
    if (e.get_object().get(obj)) wrong_type(*this, key, "an array of objects");
    out.push_back(make_record(impl_->parser, obj, simdjson::to_string(obj), file_, line_no_,
                              impl_->prefix + std::string(key) + "[" + std::to_string(i++) + "]."));
  }
  return out;
}

JsonlRecord parse_object(const std::string& json, const std::string& origin, int64_t line) {
  auto parser = std::make_shared<dom::parser>();
  dom::object obj = parse_into(*parser, json, origin, line, false);
  return make_record(std::move(parser), obj, json, origin, line, "");
}

// ------------------------------------------------------------------------------------------- JsonlReader

struct JsonlReader::Impl {
  explicit Impl(const std::string& path) : lines(path) {}
  LineReader lines;
  std::shared_ptr<dom::parser> parser = std::make_shared<dom::parser>();
  JsonlRecord rec;
  std::string line;
};

JsonlReader::JsonlReader(const std::string& path) : impl_(std::make_unique<Impl>(path)) {}
JsonlReader::~JsonlReader() = default;

const JsonlRecord* JsonlReader::next() {
  Impl& m = *impl_;
  bool had_newline = true;
  for (;;) {
    if (!m.lines.next(&m.line, &had_newline)) return nullptr;
    if (m.lines.line_number() == 1 && m.line.rfind("\xEF\xBB\xBF", 0) == 0) m.line.erase(0, 3);  // UTF-8 BOM
    if (!m.line.empty() && m.line.back() == '\r') m.line.pop_back();                              // CRLF files
    if (!is_blank(m.line)) break;
  }
  int64_t no = m.lines.line_number();
  const std::string& where = m.lines.path() == "-" ? kStdinName : m.lines.path();
  dom::object obj = parse_into(*m.parser, m.line, where, no, !had_newline);
  // A fresh Impl per record: copies of an earlier record must not silently change under their holder.
  m.rec = make_record(m.parser, obj, std::move(m.line), where, no, "");
  return &m.rec;
}

int64_t JsonlReader::line_number() const { return impl_->rec.line_no_; }
const std::string& JsonlReader::path() const { return impl_->lines.path(); }

}  // namespace ds
