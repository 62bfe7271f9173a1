#include "rl/answer.h"

#include <initializer_list>

#include "rl/expr.h"
#include "rl/extract.h"
#include "rl/utf8.h"

namespace ds::rl {

namespace {

bool is_alpha(char c) { return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z'); }
bool is_space(char c) { return c == ' ' || c == '\t' || c == '\n' || c == '\r' || c == '\f' || c == '\v'; }

// The index of the '}' matching the '{' at s[open] (backslash escapes skipped), or npos.
size_t match_brace(std::string_view s, size_t open) {
  long depth = 0;
  for (size_t i = open; i < s.size(); ++i) {
    char c = s[i];
    if (c == '\\') { ++i; continue; }
    if (c == '{') ++depth;
    else if (c == '}' && --depth == 0) return i;
  }
  return std::string_view::npos;
}

bool starts_with(std::string_view s, std::string_view p) { return s.substr(0, p.size()) == p; }
bool ends_with(std::string_view s, std::string_view p) {
  return s.size() >= p.size() && s.substr(s.size() - p.size()) == p;
}

// s == "\cmd{X}" for one of cmds (spaces allowed before the brace): X; otherwise nullopt.
std::optional<std::string_view> whole_command(std::string_view s, std::initializer_list<std::string_view> cmds) {
  for (std::string_view c : cmds) {
    if (!starts_with(s, c)) continue;
    size_t j = c.size();
    if (j < s.size() && is_alpha(s[j])) continue;
    while (j < s.size() && s[j] == ' ') ++j;
    if (j >= s.size() || s[j] != '{') continue;
    size_t close = match_brace(s, j);
    if (close == s.size() - 1) return s.substr(j + 1, close - j - 1);
  }
  return std::nullopt;
}

constexpr std::string_view kTextCommands[] = {
    "\\text", "\\textbf", "\\textit", "\\textrm", "\\mathrm", "\\mathbf", "\\mathit", "\\mbox"};

// \text{X} -> X everywhere; a trailing unit \text{ cm} (letters and spaces only) after other content is dropped.
std::string unwrap_text(std::string_view s) {
  std::string out;
  out.reserve(s.size());
  size_t i = 0;
  while (i < s.size()) {
    bool done = false;
    if (s[i] == '\\') {
      for (std::string_view c : kTextCommands) {
        if (!starts_with(s.substr(i), c)) continue;
        size_t j = i + c.size();
        if (j < s.size() && is_alpha(s[j])) continue;
        while (j < s.size() && s[j] == ' ') ++j;
        if (j >= s.size() || s[j] != '{') continue;
        size_t close = match_brace(s, j);
        if (close == std::string_view::npos) continue;
        std::string_view content = s.substr(j + 1, close - j - 1);
        bool unit = trim(s.substr(close + 1)).empty() && !trim(out).empty() && !trim(content).empty();
        for (char ch : content) unit = unit && (is_alpha(ch) || ch == ' ');
        if (!unit) out.append(unwrap_text(content));
        i = close + 1;
        done = true;
        break;
      }
      if (!done) {  // some other command or escape: copy the backslash and the next character as they are
        out += s[i++];
        if (i < s.size()) out += s[i++];
        continue;
      }
    }
    if (!done) out += s[i++];
  }
  return out;
}

// LaTeX spacing and sizing, degree marks, the {,} thousands group, \% and \$.
std::string remove_noise(std::string_view s) {
  static constexpr std::string_view kDrop[] = {
      "^{\\circ}", "^\\circ", "\\circ", "\xC2\xB0", "\\left", "\\right", "\\displaystyle", "\\!", "\\,", "\\;",
      "\\:", "\\ ", "{,}", "\\$", "$", "~"};
  std::string out;
  out.reserve(s.size());
  size_t i = 0;
  while (i < s.size()) {
    const char c0 = s[i];
    if (c0 != '^' && c0 != '\\' && c0 != '\xC2' && c0 != '{' && c0 != '$' && c0 != '~') {  // no pattern starts here
      out += s[i++];
      continue;
    }
    bool dropped = false;
    for (std::string_view d : kDrop) {
      if (starts_with(s.substr(i), d)) {
        // \left( keeps the bracket; \leftarrow is another command
        if ((d == "\\left" || d == "\\right" || d == "\\circ" || d == "\\displaystyle") && i + d.size() < s.size() &&
            is_alpha(s[i + d.size()]))
          continue;
        i += d.size();
        dropped = true;
        break;
      }
    }
    if (dropped) continue;
    if (s[i] == '\\' && i + 1 < s.size() && s[i + 1] == '%') {
      out += '%';
      i += 2;
      continue;
    }
    if (s[i] == '\\' && i + 1 < s.size()) {  // keep other escapes whole (\\ must not start a \, match)
      out += s[i++];
      out += s[i++];
      continue;
    }
    out += s[i++];
  }
  return out;
}

bool balanced(std::string_view s) {
  long paren = 0, brace = 0;  // ( and [ pair with ) and ] in any combination: intervals "(0, 1]"
  for (size_t i = 0; i < s.size(); ++i) {
    char c = s[i];
    if (c == '\\') { ++i; continue; }
    if (c == '(' || c == '[') ++paren;
    else if (c == ')' || c == ']') { if (--paren < 0) return false; }
    else if (c == '{') ++brace;
    else if (c == '}') { if (--brace < 0) return false; }
  }
  return paren == 0 && brace == 0;
}

// Offsets of commas at bracket depth `level` (counting ( [ {), within s.
std::vector<size_t> commas_at(std::string_view s, long level) {
  std::vector<size_t> out;
  long depth = 0;
  for (size_t i = 0; i < s.size(); ++i) {
    char c = s[i];
    if (c == '\\') { ++i; continue; }
    if (c == '(' || c == '[' || c == '{') ++depth;
    else if (c == ')' || c == ']' || c == '}') --depth;
    else if (c == ',' && depth == level) out.push_back(i);
  }
  return out;
}

// True when the bracket at s[0] closes exactly at the last character.
bool encloses_all(std::string_view s) {
  long depth = 0;
  for (size_t i = 0; i < s.size(); ++i) {
    char c = s[i];
    if (c == '\\') { ++i; continue; }
    if (c == '(' || c == '[' || c == '{') ++depth;
    else if (c == ')' || c == ']' || c == '}') {
      if (--depth == 0) return i == s.size() - 1;
    }
  }
  return false;
}

bool parse_number(std::string_view s, bool thousands, ParsedAnswer* out) {
  s = trim(s);
  bool percent = false;
  if (!s.empty() && s.back() == '%') {
    percent = true;
    s = trim(s.substr(0, s.size() - 1));
  }
  ExprOptions o;
  o.thousands = thousands;
  ExprResult r = eval_expr(s, o);
  if (!r.value) return false;
  out->kind = AnswerKind::number;
  out->value = *r.value;
  out->percent = percent;
  return true;
}

std::string canonical_text(std::string_view s) {
  std::string out;
  out.reserve(s.size());
  for (char c : s) {
    if (is_space(c)) continue;
    out += (c >= 'A' && c <= 'Z') ? char(c - 'A' + 'a') : c;
  }
  return out;
}

ParsedAnswer parse_value(std::string_view s, int depth, bool top) {
  s = trim(s);
  ParsedAnswer a;
  if (top && parse_number(s, /*thousands=*/true, &a)) return a;
  if (depth < 16 && s.size() >= 2) {
    char o = s.front(), c = s.back();
    if ((o == '(' || o == '[') && (c == ')' || c == ']') && encloses_all(s)) {
      std::string_view inner = s.substr(1, s.size() - 2);
      std::vector<size_t> commas = commas_at(inner, 0);
      if (!commas.empty()) {
        a.kind = AnswerKind::tuple;
        a.open = o;
        a.close = c;
        size_t start = 0;
        for (size_t k = 0; k <= commas.size(); ++k) {
          size_t end = k < commas.size() ? commas[k] : inner.size();
          a.items.push_back(parse_value(inner.substr(start, end - start), depth + 1, false));
          start = end + 1;
        }
        return a;
      }
    }
    std::vector<size_t> commas = commas_at(s, 0);
    if (!commas.empty()) {
      a.kind = AnswerKind::tuple;
      size_t start = 0;
      for (size_t k = 0; k <= commas.size(); ++k) {
        size_t end = k < commas.size() ? commas[k] : s.size();
        a.items.push_back(parse_value(s.substr(start, end - start), depth + 1, false));
        start = end + 1;
      }
      return a;
    }
  }
  if (!top && parse_number(s, /*thousands=*/false, &a)) return a;
  a.kind = AnswerKind::text;
  a.text = canonical_text(s);
  return a;
}

bool numbers_equal(const ParsedAnswer& g, const ParsedAnswer& p) {
  if (g.percent == p.percent) return g.value == p.value;
  const ParsedAnswer& pc = g.percent ? g : p;     // the side with the %
  const ParsedAnswer& other = g.percent ? p : g;
  if (pc.value == other.value) return true;
  auto hundredth = div(pc.value, Rational::of(100));
  return hundredth && *hundredth == other.value;
}

bool brackets_compatible(const ParsedAnswer& a, const ParsedAnswer& b) {
  auto norm = [](char c, char dflt) { return c == 0 ? dflt : c; };
  return norm(a.open, '(') == norm(b.open, '(') && norm(a.close, ')') == norm(b.close, ')');
}

}  // namespace

std::string normalize_answer(std::string_view raw) {
  std::string s(trim(raw));
  for (int iter = 0; iter < 16; ++iter) {
    std::string before = s;
    std::string_view v = trim(s);
    if (starts_with(v, "\\(") && ends_with(v, "\\)") && v.size() >= 4) v = v.substr(2, v.size() - 4);
    else if (starts_with(v, "\\[") && ends_with(v, "\\]") && v.size() >= 4) v = v.substr(2, v.size() - 4);
    else if (starts_with(v, "**") && ends_with(v, "**") && v.size() >= 4) v = v.substr(2, v.size() - 4);
    else if (auto b = whole_command(v, {"\\boxed", "\\fbox"})) v = *b;
    else if (!v.empty() && v.front() == '$') v = v.substr(v.find_first_not_of('$') == std::string_view::npos ? v.size() : v.find_first_not_of('$'));
    else if (!v.empty() && v.back() == '$') v = v.substr(0, v.find_last_not_of('$') + 1);
    else if (!v.empty() && v.back() == '.') v.remove_suffix(1);
    s = std::string(trim(v));
    if (s == before) break;
  }
  s = remove_noise(unwrap_text(s));
  // "x = 5" -> "5" when the left side is one or two letters
  size_t eq = s.find('=');
  if (eq != std::string::npos && s.find('=', eq + 1) == std::string::npos) {
    std::string_view lhs = trim(std::string_view(s).substr(0, eq));
    bool var = !lhs.empty() && lhs.size() <= 2;
    for (char c : lhs) var = var && is_alpha(c);
    if (var) s = std::string(std::string_view(s).substr(eq + 1));
  }
  std::string_view t = trim(s);
  while (!t.empty() && t.back() == '.') t = trim(t.substr(0, t.size() - 1));
  return std::string(t);
}

std::optional<ParsedAnswer> parse_answer(std::string_view raw, std::string* why) {
  auto refuse = [&](const char* reason) -> std::optional<ParsedAnswer> {
    if (why) *why = reason;
    return std::nullopt;
  };
  if (raw.size() > kMaxAnswerBytes) return refuse("too long");
  if (!utf8_valid(raw)) return refuse("invalid UTF-8");
  std::string s = normalize_answer(raw);
  if (s.empty()) return refuse("empty");
  if (!balanced(s)) return refuse("unbalanced brackets");
  return parse_value(s, 0, true);
}

bool answers_equal(const ParsedAnswer& g, const ParsedAnswer& p) {
  if (g.kind != p.kind) return false;
  switch (g.kind) {
    case AnswerKind::number: return numbers_equal(g, p);
    case AnswerKind::text: return g.text == p.text;
    case AnswerKind::tuple:
      if (g.items.size() != p.items.size() || !brackets_compatible(g, p)) return false;
      for (size_t i = 0; i < g.items.size(); ++i)
        if (!answers_equal(g.items[i], p.items[i])) return false;
      return true;
  }
  return false;
}

bool answers_equal(std::string_view gold, std::string_view pred) {
  auto g = parse_answer(gold);
  auto p = parse_answer(pred);
  return g && p && answers_equal(*g, *p);
}

std::string answer_key(const ParsedAnswer& a) {
  switch (a.kind) {
    case AnswerKind::number: {
      Rational v = a.value;
      if (a.percent)
        if (auto h = div(v, Rational::of(100))) v = *h;
      return "n:" + to_string(v);
    }
    case AnswerKind::text: return "t:" + a.text;
    case AnswerKind::tuple: {
      std::string k(1, a.open ? a.open : '(');
      for (size_t i = 0; i < a.items.size(); ++i) {
        if (i) k += ',';
        k += answer_key(a.items[i]);
      }
      k += a.close ? a.close : ')';
      return k;
    }
  }
  return "";
}

}  // namespace ds::rl
