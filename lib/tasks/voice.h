#pragma once
// How worked solutions are worded. Every sentence is given in one or more English variants and in Chinese;
// a plain voice always speaks English (a variant drawn at random), a mixed voice switches to Chinese for a
// share of its sentences — the code-switching R1-Zero showed and the language-consistency reward targets.
#include <cstdint>
#include <initializer_list>
#include <string>
#include <string_view>
#include <vector>

#include "core/rng.h"

namespace ds::tasks {

// "{}" placeholders filled in order; "{col}" becomes the name of the column in the sentence's language.
struct Wording {
  std::initializer_list<const char*> en;
  std::initializer_list<const char*> zh;
};

class Voice {
 public:
  // zh_share: the probability that a sentence of a mixed voice is Chinese.
  Voice(Rng& rng, bool mixed, double zh_share = 0.4) : rng_(rng), mixed_(mixed), zh_share_(zh_share) {}
  // A uniform voice always takes the first English variant (one phrasing per step: less to learn for a
  // small model trained for minutes); the random draws still happen, so the documents' numbers are the same.
  void set_uniform(bool uniform) { uniform_ = uniform; }

  std::string say(const Wording& w, const std::vector<std::string>& args = {}, int column = -1);
  // English only, whatever the voice (text that must stay parseable, e.g. equations).
  std::string english(const Wording& w, const std::vector<std::string>& args = {}, int column = -1);

  bool mixed() const { return mixed_; }
  bool used_chinese() const { return used_zh_; }
  Rng& rng() { return rng_; }

 private:
  std::string render(const char* tmpl, const std::vector<std::string>& args, int column, bool zh) const;
  Rng& rng_;
  bool mixed_;
  double zh_share_;
  bool used_zh_ = false;
  bool uniform_ = false;
};

// Whether the UTF-8 text holds CJK characters or full-width punctuation (U+3000-U+9FFF, U+FF00-U+FFEF).
bool contains_cjk(std::string_view text);

std::string column_name(int column, bool zh);  // 0 = "ones" / "个位", 1 = "tens" / "十位", ...
std::string capitalized(std::string s);        // first ASCII letter upper-cased

// Shorthand for numbers in argument lists.
inline std::string S(int64_t v) { return std::to_string(v); }

}  // namespace ds::tasks
