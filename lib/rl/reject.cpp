#include "rl/reject.h"

#include "rl/format.h"
#include "rl/layout.h"
#include "rl/penalty.h"
#include "rl/utf8.h"

namespace ds::rl {

const char* drop_reason_name(DropReason r) {
  switch (r) {
    case DropReason::unscored: return "unscored";
    case DropReason::incorrect: return "incorrect";
    case DropReason::low_reward: return "low_reward";
    case DropReason::truncated: return "truncated";
    case DropReason::think_tags: return "think_tags";
    case DropReason::code_block: return "code_block";
    case DropReason::long_paragraph: return "long_paragraph";
    case DropReason::mixed_language: return "mixed_language";
    case DropReason::repetitive: return "repetitive";
    case DropReason::duplicate: return "duplicate";
    case DropReason::over_cap: return "over_cap";
    case DropReason::count_: break;
  }
  return "unknown";
}

int64_t longest_line(std::string_view s) {
  int64_t best = 0, cur = 0;
  for (size_t i = 0; i < s.size();) {
    auto b = static_cast<unsigned char>(s[i]);
    if (b == '\n') {
      cur = 0;
      ++i;
      continue;
    }
    if (b < 0x80) ++i;
    else utf8_next(s, i);
    if (++cur > best) best = cur;
  }
  return best;
}

uint64_t normalized_text_hash(std::string_view s) {
  uint64_t h = 1469598103934665603ull;
  bool pending_space = false, started = false;
  for (char ch : s) {
    if (ch == ' ' || ch == '\t' || ch == '\n' || ch == '\r' || ch == '\f' || ch == '\v') {
      pending_space = started;
      continue;
    }
    if (pending_space) h = (h ^ static_cast<unsigned char>(' ')) * 1099511628211ull;
    pending_space = false;
    started = true;
    h = (h ^ static_cast<unsigned char>(ch)) * 1099511628211ull;
  }
  return h;
}

std::optional<DropReason> check_sample(const Candidate& c, const RejectOptions& o) {
  if (!c.reward) return DropReason::unscored;
  if (c.accuracy) {
    if (*c.accuracy < 1.0) return DropReason::incorrect;
  } else if (o.min_reward ? *c.reward < *o.min_reward : *c.reward <= 0.0) {
    return DropReason::incorrect;
  }
  if (o.min_reward && *c.reward < *o.min_reward) return DropReason::low_reward;
  if (o.drop_truncated && c.truncated) return DropReason::truncated;
  Layout L = analyse(c.completion);
  if (o.require_think && !check_format(c.completion, L, FormatStyle::think).ok) {
    // The think style forbids answer tags; a think_answer completion is fine too.
    if (!check_format(c.completion, L, FormatStyle::think_answer).ok) return DropReason::think_tags;
  }
  if (o.drop_code_blocks && c.completion.find("```") != std::string_view::npos) return DropReason::code_block;
  if (o.max_paragraph_chars > 0 && longest_line(c.completion) > o.max_paragraph_chars)
    return DropReason::long_paragraph;
  if (o.language) {
    WordCounts wc;
    if (L.think.empty()) wc = count_words(c.completion, *o.language);
    for (const Span& sp : L.think) wc += count_words(sp.of(c.completion), *o.language);
    double foreign = wc.words ? double(wc.words - wc.target) / double(wc.words) : 0.0;
    if (foreign > o.max_mixed_share) return DropReason::mixed_language;
  }
  if (o.max_repetition < 1.0 && repetition_ratio(c.completion, o.repetition_ngram) > o.max_repetition)
    return DropReason::repetitive;
  return std::nullopt;
}

std::optional<DropReason> RejectState::admit(const std::string& prompt_key, std::string_view completion) {
  uint64_t key = 0;
  if (o_.dedupe) {
    uint64_t ph = std::hash<std::string>{}(prompt_key);
    key = normalized_text_hash(completion) ^ (ph * 0x9E3779B97F4A7C15ull + 0x632BE59BD9B4E019ull);
    if (seen_.count(key)) return DropReason::duplicate;
  }
  int64_t& n = kept_[prompt_key];
  if (o_.max_per_prompt > 0 && n >= o_.max_per_prompt) return DropReason::over_cap;
  ++n;
  if (o_.dedupe) seen_.insert(key);
  return std::nullopt;
}

}  // namespace ds::rl
