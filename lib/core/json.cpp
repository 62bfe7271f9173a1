#include "core/json.h"

#include <algorithm>
#include <charconv>
#include <cmath>

#include "core/error.h"

namespace ds {

namespace {

// Length of the valid UTF-8 sequence starting at s[i], or 0 when the bytes there are not valid UTF-8
// (overlong forms, surrogates and code points above U+10FFFF count as invalid, as RFC 3629 says).
size_t utf8_sequence_length(std::string_view s, size_t i) {
  auto b = [&](size_t k) { return static_cast<unsigned char>(s[k]); };
  unsigned char c = b(i);
  size_t n = s.size() - i;
  auto cont = [&](size_t k) { return (b(k) & 0xC0) == 0x80; };
  if (c < 0x80) return 1;
  if (c >= 0xC2 && c <= 0xDF) return n >= 2 && cont(i + 1) ? 2 : 0;
  if (c >= 0xE0 && c <= 0xEF) {
    if (n < 3 || !cont(i + 1) || !cont(i + 2)) return 0;
    if (c == 0xE0 && b(i + 1) < 0xA0) return 0;  // overlong
    if (c == 0xED && b(i + 1) > 0x9F) return 0;  // UTF-16 surrogate
    return 3;
  }
  if (c >= 0xF0 && c <= 0xF4) {
    if (n < 4 || !cont(i + 1) || !cont(i + 2) || !cont(i + 3)) return 0;
    if (c == 0xF0 && b(i + 1) < 0x90) return 0;  // overlong
    if (c == 0xF4 && b(i + 1) > 0x8F) return 0;  // above U+10FFFF
    return 4;
  }
  return 0;
}

void append_escaped(std::string& out, std::string_view s) {
  static const char* hex = "0123456789abcdef";
  out.push_back('"');
  for (size_t i = 0; i < s.size();) {
    unsigned char c = static_cast<unsigned char>(s[i]);
    if (c >= 0x80) {
      // Valid UTF-8 passes through. Invalid bytes (e.g. a token that splits a multi-byte character) become
      // U+FFFD, so that the output is always valid JSON that any reader, ours included, accepts.
      size_t len = utf8_sequence_length(s, i);
      if (len == 0) {
        out += "\xEF\xBF\xBD";
        ++i;
      } else {
        out.append(s.data() + i, len);
        i += len;
      }
      continue;
    }
    switch (c) {
      case '"': out += "\\\""; break;
      case '\\': out += "\\\\"; break;
      case '\b': out += "\\b"; break;
      case '\f': out += "\\f"; break;
      case '\n': out += "\\n"; break;
      case '\r': out += "\\r"; break;
      case '\t': out += "\\t"; break;
      default:
        if (c < 0x20) {
          out += "\\u00";
          out.push_back(hex[c >> 4]);
          out.push_back(hex[c & 15]);
        } else {
          out.push_back(char(c));
        }
    }
    ++i;
  }
  out.push_back('"');
}

}  // namespace

std::string json_escape(std::string_view s) {
  std::string out;
  out.reserve(s.size() + 2);
  append_escaped(out, s);
  return out;
}

void JsonWriter::before_value() {
  if (after_key_) {  // the key already placed the separator
    after_key_ = false;
    return;
  }
  if (counts_.empty()) {
    DS_CHECK(out_.empty(), "JsonWriter: a second top-level value");
    return;
  }
  if (counts_.back()++ > 0) out_.push_back(',');
  if (pretty_) {
    out_.push_back('\n');
    out_.append(2 * counts_.size(), ' ');
  }
}

JsonWriter& JsonWriter::begin_object() {
  before_value();
  out_.push_back('{');
  counts_.push_back(0);
  return *this;
}

JsonWriter& JsonWriter::begin_array() {
  before_value();
  out_.push_back('[');
  counts_.push_back(0);
  return *this;
}

JsonWriter& JsonWriter::end_object() {
  DS_CHECK(!counts_.empty() && !after_key_, "JsonWriter: end_object without an open object");
  int n = counts_.back();
  counts_.pop_back();
  if (pretty_ && n > 0) {
    out_.push_back('\n');
    out_.append(2 * counts_.size(), ' ');
  }
  out_.push_back('}');
  return *this;
}

JsonWriter& JsonWriter::end_array() {
  DS_CHECK(!counts_.empty() && !after_key_, "JsonWriter: end_array without an open array");
  int n = counts_.back();
  counts_.pop_back();
  if (pretty_ && n > 0) {
    out_.push_back('\n');
    out_.append(2 * counts_.size(), ' ');
  }
  out_.push_back(']');
  return *this;
}

JsonWriter& JsonWriter::key(std::string_view k) {
  DS_CHECK(!counts_.empty() && !after_key_, "JsonWriter: key outside an object");
  before_value();
  append_escaped(out_, k);
  out_ += pretty_ ? ": " : ":";
  after_key_ = true;
  return *this;
}

JsonWriter& JsonWriter::value(std::string_view s) {
  before_value();
  append_escaped(out_, s);
  return *this;
}

JsonWriter& JsonWriter::value(double d) {
  if (!std::isfinite(d)) return null();  // JSON has no NaN/Inf
  before_value();
  char buf[64];
  auto r = std::to_chars(buf, buf + sizeof buf, d);  // shortest form that parses back to the same double
  DS_CHECK(r.ec == std::errc(), "to_chars failed");
  // to_chars prefers plain digits on a length tie (2^70 -> "1180591620717411300000"): readers would see an
  // integer too big for 64 bits (simdjson rejects it), so large integral values use the exponent form.
  if (std::fabs(d) >= 1e16 && std::find_if(buf, r.ptr, [](char c) { return c == '.' || c == 'e'; }) == r.ptr) {
    r = std::to_chars(buf, buf + sizeof buf, d, std::chars_format::scientific);
    DS_CHECK(r.ec == std::errc(), "to_chars failed");
  }
  out_.append(buf, r.ptr);
  return *this;
}

JsonWriter& JsonWriter::value(int64_t i) {
  before_value();
  char buf[32];
  auto r = std::to_chars(buf, buf + sizeof buf, i);
  out_.append(buf, r.ptr);
  return *this;
}

JsonWriter& JsonWriter::value(uint64_t u) {
  before_value();
  char buf[32];
  auto r = std::to_chars(buf, buf + sizeof buf, u);
  out_.append(buf, r.ptr);
  return *this;
}

JsonWriter& JsonWriter::value(bool b) {
  before_value();
  out_ += b ? "true" : "false";
  return *this;
}

JsonWriter& JsonWriter::null() {
  before_value();
  out_ += "null";
  return *this;
}

JsonWriter& JsonWriter::raw(std::string_view json) {
  before_value();
  out_.append(json);
  return *this;
}

}  // namespace ds
