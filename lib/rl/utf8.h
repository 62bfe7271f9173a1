#pragma once
// UTF-8 decoding and a coarse script classification, enough for the language-consistency reward and the
// rejection filters. Invalid bytes never stop a scan: each one decodes as U+FFFD and advances one byte, so
// arbitrary input is handled in linear time.
#include <cstddef>
#include <cstdint>
#include <string_view>

namespace ds::rl {

constexpr char32_t kReplacement = 0xFFFD;

// Decodes the code point at s[i] and advances i by its length (1 for an invalid byte, which yields
// U+FFFD). Rejects overlong forms, surrogates and values above U+10FFFF. Precondition: i < s.size().
char32_t utf8_next(std::string_view s, size_t& i);

// True when s is entirely well-formed UTF-8.
bool utf8_valid(std::string_view s);

// Number of code points (invalid bytes count one each).
size_t utf8_length(std::string_view s);

enum class Script : uint8_t {
  none,      // not a letter: digits, punctuation, symbols, spaces, controls, U+FFFD
  latin,     // ASCII letters, Latin-1 / Latin Extended letters, combining diacritics
  han,       // CJK unified ideographs (all extensions), compatibility ideographs, CJK punctuation excluded
  kana,      // hiragana, katakana (incl. half-width)
  hangul,    // hangul syllables and jamo
  cyrillic,
  greek,
  arabic,
  hebrew,
  devanagari,
  thai,
  other,     // letters of any other script we can recognise as such (Armenian, Georgian, Ethiopic, ...)
};

Script script_of(char32_t c);

// CJK-style scripts have no spaces between words: each character is one word.
inline bool script_is_ideographic(Script s) { return s == Script::han || s == Script::kana || s == Script::hangul; }

}  // namespace ds::rl
