#include "rl/format.h"

#include "rl/extract.h"
#include "rl/utf8.h"

namespace ds::rl {

bool has_word_character(std::string_view s) {
  size_t i = 0;
  while (i < s.size()) {
    auto b = static_cast<unsigned char>(s[i]);
    if (b < 0x80) {
      if ((b >= '0' && b <= '9') || ((b | 0x20) >= 'a' && (b | 0x20) <= 'z')) return true;
      ++i;
      continue;
    }
    if (script_of(utf8_next(s, i)) != Script::none) return true;
  }
  return false;
}

namespace {

bool blank(std::string_view s) { return trim(s).empty(); }

FormatResult fail(const char* why) { return FormatResult{false, why}; }

}  // namespace

FormatResult check_format(std::string_view text, const Layout& L, FormatStyle style) {
  const auto& t = L.tags;
  const size_t want = style == FormatStyle::think_answer ? 4 : 2;
  if (t.empty() || !blank(text.substr(0, t[0].pos))) {
    if (!t.empty() && t[0].tag == Tag::think_open) return fail("text_before_think");
    return fail("tags");
  }
  if (t.size() != want || t[0].tag != Tag::think_open || t[1].tag != Tag::think_close) return fail("tags");
  if (style == FormatStyle::think_answer && (t[2].tag != Tag::answer_open || t[3].tag != Tag::answer_close))
    return fail("tags");
  auto between = [&](size_t a, size_t b) {
    size_t from = t[a].pos + tag_length(t[a].tag);
    return text.substr(from, t[b].pos - from);
  };
  if (!has_word_character(between(0, 1))) return fail("empty_think");
  size_t after_think = t[1].pos + tag_length(t[1].tag);
  if (style == FormatStyle::think) {
    if (blank(text.substr(after_think))) return fail("empty_answer");
    return FormatResult{true, "ok"};
  }
  if (!blank(between(1, 2))) return fail("text_between");
  if (!has_word_character(between(2, 3))) return fail("empty_answer");
  if (!blank(text.substr(t[3].pos + tag_length(t[3].tag)))) return fail("text_after");
  return FormatResult{true, "ok"};
}

FormatResult check_format(std::string_view text, FormatStyle style) { return check_format(text, analyse(text), style); }

}  // namespace ds::rl
