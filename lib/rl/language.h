#pragma once
// Language consistency (DeepSeek-R1 stage-2 RL): the share of chain-of-thought words written in the target
// language, decided by script.
//
// Words (over properly decoded UTF-8; an invalid byte is a separator, never a letter):
//  - every Han ideograph, kana or hangul character is one word on its own (these scripts do not put spaces
//    between words);
//  - otherwise a word is a maximal run of letters of one script (Latin, Cyrillic, Greek, ...), which may
//    contain an apostrophe (' or U+2019) or a hyphen between two letters ("don't", "well-known");
//  - not counted: single Latin letters (math variables: x, n; English "a" and "I" are lost, which does not
//    change a share noticeably), LaTeX control words (the letters right after a backslash: \frac, \cdot),
//    digits, punctuation and symbols.
// Languages map to scripts: en fr de es it pt nl sv da no fi pl cs ro hu tr id vi latin -> Latin;
// zh -> Han; ja -> Han + kana; ko -> hangul; ru uk bg sr be kk cyrillic -> Cyrillic; el -> Greek;
// ar fa ur -> Arabic; he -> Hebrew; hi mr ne -> Devanagari; th -> Thai. Latin-script languages are not
// told apart (a French sentence in an English chain of thought counts as English).
#include <cstdint>
#include <string>
#include <string_view>

#include "rl/utf8.h"

namespace ds::rl {

struct LanguageSpec {
  std::string code = "en";
  uint32_t scripts = 1u << static_cast<unsigned>(Script::latin);  // bit per Script
  bool counts(Script s) const { return (scripts >> static_cast<unsigned>(s)) & 1u; }
};

// False for an unknown language code.
bool parse_language(std::string_view code, LanguageSpec* out);

struct WordCounts {
  int64_t words = 0;   // all counted words
  int64_t target = 0;  // of them, in the target language's script(s)
  WordCounts& operator+=(const WordCounts& o) {
    words += o.words;
    target += o.target;
    return *this;
  }
};

WordCounts count_words(std::string_view text, const LanguageSpec& lang);

// target / words; 0 when there are no words (an empty chain of thought earns nothing).
double language_share(const WordCounts& c);

}  // namespace ds::rl
