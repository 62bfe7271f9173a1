#include "rl/utf8.h"

namespace ds::rl {

char32_t utf8_next(std::string_view s, size_t& i) {
  const auto b0 = static_cast<unsigned char>(s[i]);
  if (b0 < 0x80) {
    ++i;
    return b0;
  }
  int len;
  char32_t cp;
  char32_t min;
  if ((b0 & 0xE0) == 0xC0) { len = 2; cp = b0 & 0x1F; min = 0x80; }
  else if ((b0 & 0xF0) == 0xE0) { len = 3; cp = b0 & 0x0F; min = 0x800; }
  else if ((b0 & 0xF8) == 0xF0) { len = 4; cp = b0 & 0x07; min = 0x10000; }
  else { ++i; return kReplacement; }
  if (i + size_t(len) > s.size()) { ++i; return kReplacement; }
  for (int k = 1; k < len; ++k) {
    const auto b = static_cast<unsigned char>(s[i + size_t(k)]);
    if ((b & 0xC0) != 0x80) { ++i; return kReplacement; }
    cp = (cp << 6) | (b & 0x3F);
  }
  if (cp < min || cp > 0x10FFFF || (cp >= 0xD800 && cp <= 0xDFFF)) { ++i; return kReplacement; }
  i += size_t(len);
  return cp;
}

bool utf8_valid(std::string_view s) {
  size_t i = 0;
  while (i < s.size()) {
    if (static_cast<unsigned char>(s[i]) < 0x80) { ++i; continue; }
    size_t before = i;
    char32_t c = utf8_next(s, i);
    // A literal U+FFFD in the text is 3 bytes; an invalid byte advances by one.
    if (c == kReplacement && i - before == 1) return false;
  }
  return true;
}

size_t utf8_length(std::string_view s) {
  size_t n = 0;
  for (size_t i = 0; i < s.size(); ++n) utf8_next(s, i);
  return n;
}

Script script_of(char32_t c) {
  if (c < 0x80) {
    return ((c | 0x20) >= 'a' && (c | 0x20) <= 'z') ? Script::latin : Script::none;
  }
  if (c < 0x0250) {  // Latin-1 Supplement + Latin Extended-A/B letters (not ×, ÷, nor the symbols below 0xC0)
    if (c < 0xC0 || c == 0xD7 || c == 0xF7) return (c == 0xAA || c == 0xBA || c == 0xB5) ? Script::latin : Script::none;
    return Script::latin;
  }
  if (c < 0x02B0) return Script::latin;                      // IPA extensions
  if (c >= 0x0300 && c < 0x0370) return Script::latin;       // combining diacritics (mostly on Latin)
  if (c >= 0x0370 && c < 0x0400) return (c == 0x037E || c == 0x0387) ? Script::none : Script::greek;
  if (c >= 0x0400 && c < 0x0530) return Script::cyrillic;
  if (c >= 0x0530 && c < 0x0590) return Script::other;       // Armenian
  if (c >= 0x0590 && c < 0x0600) return (c >= 0x05D0 && c <= 0x05EA) ? Script::hebrew : Script::none;
  if (c >= 0x0600 && c < 0x0700) {
    if ((c >= 0x0620 && c <= 0x064A) || (c >= 0x0671 && c <= 0x06D3)) return Script::arabic;
    return Script::none;
  }
  if (c >= 0x0900 && c < 0x0980) return (c >= 0x0964 && c <= 0x096F) ? Script::none : Script::devanagari;
  if (c >= 0x0980 && c < 0x0E00) return Script::other;       // other Indic scripts, Sinhala
  if (c >= 0x0E00 && c < 0x0E80) return (c >= 0x0E50 && c <= 0x0E59) ? Script::none : Script::thai;
  if (c >= 0x0E80 && c < 0x1100) return Script::other;       // Lao, Tibetan, Myanmar, Georgian
  if (c >= 0x1100 && c < 0x1200) return Script::hangul;      // jamo
  if (c >= 0x1200 && c < 0x1400) return Script::other;       // Ethiopic, Cherokee
  if (c >= 0x1E00 && c < 0x1F00) return Script::latin;       // Latin Extended Additional
  if (c >= 0x1F00 && c < 0x2000) return Script::greek;       // Greek Extended
  if (c >= 0x2C60 && c < 0x2C80) return Script::latin;       // Latin Extended-C
  if (c >= 0x2E80 && c < 0x2FE0) return Script::han;         // CJK radicals, Kangxi radicals
  if (c == 0x3005 || c == 0x3007 || (c >= 0x3021 && c <= 0x3029)) return Script::han;
  if (c >= 0x3040 && c < 0x3100) return (c == 0x30FB) ? Script::none : Script::kana;  // hiragana, katakana
  if (c >= 0x3130 && c < 0x3190) return Script::hangul;      // compatibility jamo
  if (c >= 0x31F0 && c < 0x3200) return Script::kana;
  if (c >= 0x3400 && c < 0x4DC0) return Script::han;         // extension A
  if (c >= 0x4E00 && c < 0xA000) return Script::han;         // unified ideographs
  if (c >= 0xA640 && c < 0xA6A0) return Script::cyrillic;
  if (c >= 0xA720 && c < 0xA800) return Script::latin;       // Latin Extended-D
  if (c >= 0xAC00 && c < 0xD7B0) return Script::hangul;      // syllables
  if (c >= 0xF900 && c < 0xFB00) return Script::han;         // compatibility ideographs
  if (c >= 0xFB00 && c < 0xFB07) return Script::latin;       // ligatures
  if (c >= 0xFB1D && c < 0xFB50) return Script::hebrew;
  if (c >= 0xFB50 && c < 0xFE00) return Script::arabic;
  if (c >= 0xFE70 && c < 0xFF00) return Script::arabic;
  if (c >= 0xFF21 && c <= 0xFF3A) return Script::latin;      // full-width Latin
  if (c >= 0xFF41 && c <= 0xFF5A) return Script::latin;
  if (c >= 0xFF66 && c < 0xFFA0) return Script::kana;        // half-width katakana
  if (c >= 0xFFA0 && c < 0xFFE0) return Script::hangul;      // half-width hangul
  if (c >= 0x20000 && c < 0x32000) return Script::han;       // extensions B..H
  return Script::none;
}

}  // namespace ds::rl
