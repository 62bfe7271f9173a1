#include "rl/record.h"

#include "core/error.h"

#include "core/json.h"

namespace ds::rl {

std::string prompt_key(const JsonlRecord& rec) {
  for (std::string_view k : {std::string_view("group"), std::string_view("prompt"), std::string_view("id")})
    if (rec.has(k)) return std::string(k) + "=" + rec.raw(k);
  return "";
}

std::string_view record_base(const JsonlRecord& rec, std::initializer_list<std::string_view> replaced, bool* empty,
                             std::string* storage) {
  bool clash = false;
  for (std::string_view k : replaced) clash = clash || rec.has(k);
  if (!clash) {
    std::string_view line = rec.line();
    while (!line.empty() && (line.back() == ' ' || line.back() == '\t' || line.back() == '\r')) line.remove_suffix(1);
    line.remove_suffix(1);  // the closing brace: the reader only returns objects
    size_t last = line.find_last_not_of(" \t\r\n");
    *empty = last == std::string_view::npos || line[last] == '{';
    return line;
  }
  JsonWriter w;
  w.begin_object();
  *empty = true;
  for (const std::string& k : rec.keys()) {
    bool drop = false;
    for (std::string_view r : replaced) drop = drop || k == r;
    if (drop) continue;
    w.key(k).raw(rec.raw(k));
    *empty = false;
  }
  w.end_object();
  *storage = w.take();
  storage->pop_back();
  return *storage;
}

std::string splice_record(std::string_view base, bool empty, std::string_view members) {
  std::string out;
  out.reserve(base.size() + members.size() + 3);
  out.append(base);
  if (!empty && !members.empty()) out += ',';
  out.append(members);
  out.append("}\n");
  return out;
}

void for_each_record(JsonlReader& in, bool skip_bad, BadRecords& bad,
                     const std::function<void(const JsonlRecord&)>& each, const std::function<void()>& stop) {
  auto on_bad = [&](const Error& e) {  // true: skip the record and go on
    if (!skip_bad || e.what() == bad.last) {
      stop();
      return false;
    }
    if (bad.count++ == 0) bad.first = e.what();
    bad.last = e.what();
    return true;
  };
  for (;;) {
    const JsonlRecord* rec = nullptr;
    try {
      rec = in.next();
    } catch (const Error& e) {
      if (e.kind() == ErrorKind::bad_input && on_bad(e)) continue;
      throw;
    }
    if (!rec) break;
    bad.last.clear();
    try {
      each(*rec);
    } catch (const Error& e) {
      if (e.kind() == ErrorKind::bad_input && on_bad(e)) continue;
      throw;
    }
  }
}

}  // namespace ds::rl
