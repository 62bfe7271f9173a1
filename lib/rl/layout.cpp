#include "rl/layout.h"

#include <cstring>

namespace ds::rl {

namespace {

constexpr std::string_view kTagText[] = {"<think>", "</think>", "<answer>", "</answer>"};

}  // namespace

size_t tag_length(Tag t) { return kTagText[static_cast<int>(t)].size(); }

std::vector<TagHit> scan_tags(std::string_view s) {
  std::vector<TagHit> out;
  const char* base = s.data();
  size_t i = 0;
  while (i < s.size()) {
    const void* p = std::memchr(base + i, '<', s.size() - i);
    if (!p) break;
    i = size_t(static_cast<const char*>(p) - base);
    std::string_view rest = s.substr(i);
    bool hit = false;
    for (int t = 0; t < 4; ++t) {
      if (rest.size() >= kTagText[t].size() && rest.compare(0, kTagText[t].size(), kTagText[t]) == 0) {
        out.push_back({static_cast<Tag>(t), i});
        i += kTagText[t].size();
        hit = true;
        break;
      }
    }
    if (!hit) ++i;
  }
  return out;
}

Layout analyse(std::string_view s) {
  Layout L;
  L.tags = scan_tags(s);
  bool in_think = false, seen_think = false;
  size_t out_start = 0, think_start = 0;
  bool answer_open = false;
  size_t answer_start = 0;
  for (const TagHit& h : L.tags) {
    const size_t after = h.pos + tag_length(h.tag);
    switch (h.tag) {
      case Tag::think_open:
        ++L.n_think_open;
        if (!in_think) {
          L.outside.push_back({out_start, h.pos});
          in_think = true;
          think_start = after;
        }
        seen_think = true;
        break;
      case Tag::think_close:
        ++L.n_think_close;
        if (in_think) {
          L.think.push_back({think_start, h.pos});
          in_think = false;
          out_start = after;
        } else if (!seen_think) {
          // Prefilled "<think>": everything so far was reasoning; answers found there do not count.
          L.implicit_think = true;
          L.think.push_back({0, h.pos});
          L.answers.clear();
          answer_open = false;
          out_start = after;
        }
        seen_think = true;
        break;
      case Tag::answer_open:
        ++L.n_answer_open;
        if (!in_think) {
          answer_open = true;
          answer_start = after;
        }
        break;
      case Tag::answer_close:
        ++L.n_answer_close;
        if (!in_think && answer_open) {
          L.answers.push_back({answer_start, h.pos});
          answer_open = false;
        }
        break;
    }
  }
  if (in_think) {
    L.think.push_back({think_start, s.size()});
    L.unclosed_think = true;
  } else {
    L.outside.push_back({out_start, s.size()});
  }
  return L;
}

}  // namespace ds::rl
