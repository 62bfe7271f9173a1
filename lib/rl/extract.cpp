#include "rl/extract.h"

#include <cstring>
#include <vector>

namespace ds::rl {

const char* answer_rule_name(AnswerRule r) {
  switch (r) {
    case AnswerRule::none: return "none";
    case AnswerRule::answer_tag: return "answer_tag";
    case AnswerRule::boxed: return "boxed";
    case AnswerRule::answer_line: return "answer_line";
  }
  return "none";
}

bool parse_extract_rules(std::string_view list, ExtractOptions* out) {
  ExtractOptions o{false, false, false};
  while (!list.empty()) {
    size_t comma = list.find(',');
    std::string_view name = trim(list.substr(0, comma));
    if (name == "answer_tag") o.answer_tag = true;
    else if (name == "boxed") o.boxed = true;
    else if (name == "answer_line") o.answer_line = true;
    else if (!name.empty()) return false;
    if (comma == std::string_view::npos) break;
    list.remove_prefix(comma + 1);
  }
  *out = o;
  return true;
}

std::string_view trim(std::string_view s) {
  auto ws = [](char c) { return c == ' ' || c == '\t' || c == '\n' || c == '\r' || c == '\f' || c == '\v'; };
  while (!s.empty() && ws(s.front())) s.remove_prefix(1);
  while (!s.empty() && ws(s.back())) s.remove_suffix(1);
  return s;
}

namespace {

bool is_alpha(char c) { return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z'); }

// If s[i..] is "\boxed" or "\fbox" (a whole command word) followed by optional spaces and '{', returns the
// offset of that '{'; otherwise npos.
size_t box_brace(std::string_view s, size_t i) {
  size_t j;
  if (s.compare(i, 6, "\\boxed") == 0) j = i + 6;
  else if (s.compare(i, 5, "\\fbox") == 0) j = i + 5;
  else return std::string_view::npos;
  if (j < s.size() && is_alpha(s[j])) return std::string_view::npos;  // \boxedfoo
  while (j < s.size() && (s[j] == ' ' || s[j] == '\t')) ++j;
  return (j < s.size() && s[j] == '{') ? j : std::string_view::npos;
}

char lower(char c) { return (c >= 'A' && c <= 'Z') ? char(c - 'A' + 'a') : c; }

// Case-insensitive search for an ASCII lowercase needle; last occurrence in s, or npos.
size_t rfind_ci(std::string_view s, std::string_view needle) {
  if (needle.size() > s.size()) return std::string_view::npos;
  for (size_t i = s.size() - needle.size() + 1; i-- > 0;) {
    size_t k = 0;
    while (k < needle.size() && lower(s[i + k]) == needle[k]) ++k;
    if (k == needle.size()) return i;
  }
  return std::string_view::npos;
}

// The answer on one line, if the line carries a marker.
std::optional<std::string_view> line_answer(std::string_view line) {
  std::string_view t = trim(line);
  // "#### 42" (GSM8K)
  if (t.size() >= 4 && t.compare(0, 4, "####") == 0) {
    std::string_view v = trim(t.substr(4));
    if (!v.empty()) return v;
  }
  // "... answer is X" / "Answer: X" / "**Final Answer:** X": the marker that ends last wins.
  size_t best_end = std::string_view::npos;
  for (std::string_view m : {std::string_view("answer is"), std::string_view("answer:"), std::string_view("answer**:")}) {
    size_t p = rfind_ci(t, m);
    if (p == std::string_view::npos) continue;
    if (p > 0 && is_alpha(t[p - 1])) continue;  // "reanswer:" is not the marker
    size_t e = p + m.size();
    if (best_end == std::string_view::npos || e > best_end) best_end = e;
  }
  if (best_end == std::string_view::npos) return std::nullopt;
  std::string_view v = t.substr(best_end);
  // "**Answer:** 42", "The answer is: 42"
  for (;;) {
    v = trim(v);
    if (v.size() >= 2 && v.compare(0, 2, "**") == 0) v.remove_prefix(2);
    else if (!v.empty() && v.front() == ':') v.remove_prefix(1);
    else break;
  }
  for (;;) {  // trailing bold markers and the sentence's full stop
    if (v.size() >= 2 && v.compare(v.size() - 2, 2, "**") == 0) v = trim(v.substr(0, v.size() - 2));
    else if (!v.empty() && v.back() == '.') v = trim(v.substr(0, v.size() - 1));
    else break;
  }
  if (v.empty()) return std::nullopt;
  return v;
}

std::optional<std::string_view> last_answer_line(std::string_view s) {
  size_t end = s.size();
  for (;;) {
    size_t nl = end == 0 ? std::string_view::npos : s.rfind('\n', end - 1);
    size_t begin = nl == std::string_view::npos ? 0 : nl + 1;
    if (auto v = line_answer(s.substr(begin, end - begin))) return v;
    if (nl == std::string_view::npos) return std::nullopt;
    end = nl;
  }
}

}  // namespace

std::optional<std::string_view> last_boxed(std::string_view s) {
  // One forward pass: depth counts unescaped braces; a stack remembers the depth at which each box
  // opened, so a closing brace that returns to that depth completes the box.
  struct Open {
    size_t content;  // offset after '{'
    long depth;      // depth before the box's '{'
  };
  std::vector<Open> boxes;
  long depth = 0;
  std::optional<std::string_view> best;
  const char* base = s.data();
  size_t i = 0;
  while (i < s.size()) {
    // Jump to the next character that matters.
    size_t j = i;
    while (j < s.size() && s[j] != '\\' && s[j] != '{' && s[j] != '}') ++j;
    i = j;
    if (i >= s.size()) break;
    char c = s[i];
    if (c == '\\') {
      size_t b = box_brace(s, i);
      if (b != std::string_view::npos) {
        boxes.push_back({b + 1, depth});
        ++depth;
        i = b + 1;
        continue;
      }
      i += 2;  // \{ \} \\ and any other escape: the next character is literal
      continue;
    }
    if (c == '{') {
      ++depth;
    } else {  // '}'
      if (depth > 0) {
        --depth;
        if (!boxes.empty() && boxes.back().depth == depth) {
          size_t start = boxes.back().content;
          boxes.pop_back();
          best = std::string_view(base + start, i - start);  // closes after every earlier box
        }
      }
    }
    ++i;
  }
  return best;
}

Extracted extract_answer(std::string_view completion, const ExtractOptions& opts) {
  return extract_answer(completion, analyse(completion), opts);
}

Extracted extract_answer(std::string_view text, const Layout& L, const ExtractOptions& opts) {
  Extracted r;
  if (opts.answer_tag && !L.answers.empty()) {
    std::string_view content = L.answers.back().of(text);
    if (auto b = last_boxed(content)) content = *b;
    r.answer = std::string(trim(content));
    r.rule = AnswerRule::answer_tag;
    return r;
  }
  if (opts.boxed) {
    for (size_t k = L.outside.size(); k-- > 0;) {
      if (auto b = last_boxed(L.outside[k].of(text))) {
        r.answer = std::string(trim(*b));
        r.rule = AnswerRule::boxed;
        return r;
      }
    }
  }
  if (opts.answer_line) {
    for (size_t k = L.outside.size(); k-- > 0;) {
      if (auto v = last_answer_line(L.outside[k].of(text))) {
        r.answer = std::string(*v);
        r.rule = AnswerRule::answer_line;
        return r;
      }
    }
  }
  return r;
}

}  // namespace ds::rl
