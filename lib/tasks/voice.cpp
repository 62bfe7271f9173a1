#include "tasks/voice.h"

#include "tasks/random.h"

namespace ds::tasks {

bool contains_cjk(std::string_view text) {
  for (size_t i = 0; i < text.size(); ++i) {
    unsigned char c = static_cast<unsigned char>(text[i]);
    if ((c & 0xF0) != 0xE0 || i + 2 >= text.size()) continue;  // three-byte sequences cover both ranges
    uint32_t cp = (uint32_t(c & 0x0F) << 12) | (uint32_t(text[i + 1] & 0x3F) << 6) | uint32_t(text[i + 2] & 0x3F);
    if ((cp >= 0x3000 && cp <= 0x9FFF) || (cp >= 0xFF00 && cp <= 0xFFEF)) return true;
  }
  return false;
}

std::string column_name(int column, bool zh) {
  static const char* kEn[] = {"ones",     "tens",         "hundreds",         "thousands",
                              "ten-thousands", "hundred-thousands", "millions", "ten-millions",
                              "hundred-millions", "billions"};
  static const char* kZh[] = {"个位", "十位", "百位", "千位", "万位", "十万位", "百万位", "千万位", "亿位", "十亿位"};
  constexpr int kNamed = int(sizeof(kEn) / sizeof(kEn[0]));
  if (column >= 0 && column < kNamed) return zh ? kZh[column] : kEn[column];
  return zh ? "第 " + std::to_string(column + 1) + " 位" : "digit " + std::to_string(column + 1) + " from the right";
}

std::string capitalized(std::string s) {
  if (!s.empty() && s[0] >= 'a' && s[0] <= 'z') s[0] = char(s[0] - 'a' + 'A');
  return s;
}

std::string Voice::render(const char* tmpl, const std::vector<std::string>& args, int column, bool zh) const {
  std::string out;
  size_t next = 0;
  std::string_view t(tmpl);
  for (size_t i = 0; i < t.size(); ++i) {
    if (t.compare(i, 5, "{col}") == 0) {
      std::string name = column_name(column, zh);
      out += i == 0 ? capitalized(name) : name;
      i += 4;
    } else if (t.compare(i, 2, "{}") == 0) {
      out += next < args.size() ? args[next++] : std::string();
      i += 1;
    } else {
      out += t[i];
    }
  }
  return out;
}

std::string Voice::say(const Wording& w, const std::vector<std::string>& args, int column) {
  if (mixed_ && w.zh.size() > 0 && draw_chance(rng_, zh_share_)) {
    used_zh_ = true;
    return render(w.zh.begin()[rng_.next_below(w.zh.size())], args, column, true);
  }
  return english(w, args, column);
}

std::string Voice::english(const Wording& w, const std::vector<std::string>& args, int column) {
  size_t pick = rng_.next_below(w.en.size());
  return render(w.en.begin()[uniform_ ? 0 : pick], args, column, false);
}

}  // namespace ds::tasks
