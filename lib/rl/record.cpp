#include "rl/record.h"

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

}  // namespace ds::rl
