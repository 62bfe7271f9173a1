#include "rl/language.h"

#include <initializer_list>

namespace ds::rl {

namespace {

uint32_t bit(Script s) { return 1u << static_cast<unsigned>(s); }

}  // namespace

bool parse_language(std::string_view code, LanguageSpec* out) {
  struct Entry {
    std::initializer_list<std::string_view> codes;
    uint32_t scripts;
  };
  const Entry table[] = {
      {{"en", "fr", "de", "es", "it", "pt", "nl", "sv", "da", "no", "fi", "pl", "cs", "ro", "hu", "tr", "id", "vi",
        "latin"},
       bit(Script::latin)},
      {{"zh", "han"}, bit(Script::han)},
      {{"ja"}, bit(Script::han) | bit(Script::kana)},
      {{"ko", "hangul"}, bit(Script::hangul)},
      {{"ru", "uk", "bg", "sr", "be", "kk", "cyrillic"}, bit(Script::cyrillic)},
      {{"el", "greek"}, bit(Script::greek)},
      {{"ar", "fa", "ur", "arabic"}, bit(Script::arabic)},
      {{"he", "hebrew"}, bit(Script::hebrew)},
      {{"hi", "mr", "ne", "devanagari"}, bit(Script::devanagari)},
      {{"th", "thai"}, bit(Script::thai)},
  };
  for (const Entry& e : table) {
    for (std::string_view c : e.codes) {
      if (c == code) {
        out->code = std::string(code);
        out->scripts = e.scripts;
        return true;
      }
    }
  }
  return false;
}

WordCounts count_words(std::string_view s, const LanguageSpec& lang) {
  WordCounts wc;
  Script run = Script::none;  // script of the word being read
  int64_t run_letters = 0;
  bool run_is_command = false;  // the word follows a backslash
  bool after_backslash = false;
  bool pending_joiner = false;  // an apostrophe/hyphen right after a letter of the run
  auto finish = [&] {
    if (run != Script::none && !run_is_command && !(run == Script::latin && run_letters < 2)) {
      ++wc.words;
      if (lang.counts(run)) ++wc.target;
    }
    run = Script::none;
    run_letters = 0;
    run_is_command = false;
    pending_joiner = false;
  };
  const size_t n = s.size();
  size_t i = 0;
  while (i < n) {
    auto b = static_cast<unsigned char>(s[i]);
    if (b < 0x80) {
      if (((b | 0x20) >= 'a' && (b | 0x20) <= 'z')) {
        // A run of ASCII letters in one go (the common case).
        size_t j = i + 1;
        while (j < n && ((static_cast<unsigned char>(s[j]) | 0x20) >= 'a' && (static_cast<unsigned char>(s[j]) | 0x20) <= 'z'))
          ++j;
        if (run != Script::latin) {
          if (run != Script::none) finish();
          run = Script::latin;
          run_is_command = after_backslash;
        }
        run_letters += int64_t(j - i);
        pending_joiner = false;
        after_backslash = false;
        i = j;
        continue;
      }
      ++i;
      if ((b == '\'' || b == '-') && run != Script::none && !pending_joiner) {
        pending_joiner = true;
        continue;
      }
      if (run != Script::none) finish();
      after_backslash = (b == '\\');
      continue;
    }
    char32_t c = utf8_next(s, i);
    Script sc = script_of(c);
    if (sc == Script::none) {
      if (c == 0x2019 && run != Script::none && !pending_joiner) {
        pending_joiner = true;
        continue;
      }
      if (run != Script::none) finish();
      after_backslash = false;
      continue;
    }
    if (script_is_ideographic(sc)) {
      if (run != Script::none) finish();
      ++wc.words;
      if (lang.counts(sc)) ++wc.target;
      after_backslash = false;
      continue;
    }
    if (run != Script::none && sc != run) finish();
    if (run == Script::none) {
      run = sc;
      run_is_command = after_backslash;
    }
    pending_joiner = false;
    ++run_letters;
    after_backslash = false;
  }
  finish();
  return wc;
}

double language_share(const WordCounts& c) { return c.words == 0 ? 0.0 : double(c.target) / double(c.words); }

}  // namespace ds::rl
