#include "rl/reward.h"

#include "rl/answer.h"
#include "rl/countdown.h"
#include "rl/layout.h"
#include "rl/penalty.h"

namespace ds::rl {

namespace {

void score_accuracy(const RolloutInput& in, std::string_view text, const Layout& L, const RewardConfig& cfg,
                    RewardResult& r) {
  Extracted ex = extract_answer(text, L, cfg.extract);
  r.extracted = ex.answer;
  if (in.kind == TaskKind::countdown) {
    CountdownResult cr = verify_countdown(ex.answer ? *ex.answer : std::string_view(), in.numbers, in.target);
    r.correct = cr.status == CountdownStatus::correct;
    r.accuracy = r.correct ? 1.0 : 0.0;
    if (ex.answer) {  // vote on the equation text without spaces
      for (char c : *ex.answer)
        if (c != ' ' && c != '\t' && c != '\n' && c != '\r') r.vote_key += c;
      if (!r.vote_key.empty()) r.vote_key = "e:" + r.vote_key;
    }
    return;
  }
  if (!in.gold) {
    r.skip_reason = "no gold answer";
    return;
  }
  std::string why;
  std::optional<ParsedAnswer> gold = parse_answer(*in.gold, &why);
  if (!gold) {
    r.skip_reason = "gold answer cannot be parsed: " + why;
    return;
  }
  std::optional<ParsedAnswer> pred;
  if (ex.answer) pred = parse_answer(*ex.answer);
  if (pred) r.vote_key = answer_key(*pred);
  r.correct = pred && answers_equal(*gold, *pred);
  r.accuracy = r.correct ? 1.0 : 0.0;
}

}  // namespace

void finish_total(RewardResult& r, const RewardConfig& cfg) {
  if (cfg.accuracy_weight != 0.0 && !r.accuracy) {
    r.total.reset();
    return;
  }
  double t = 0;
  if (cfg.accuracy_weight != 0.0) t += cfg.accuracy_weight * *r.accuracy;
  if (r.format) t += cfg.format_weight * *r.format;
  if (r.language) t += cfg.language_weight * *r.language;
  if (r.length) t += cfg.length_weight * *r.length;
  if (r.repetition) t += *r.repetition;
  r.total = t;
}

RewardResult score_rollout(const RolloutInput& in, const RewardConfig& cfg) {
  RewardResult r;
  std::string with_think;
  std::string_view text = in.completion;
  if (cfg.prepend_think) {
    with_think.reserve(in.completion.size() + 8);
    with_think.append("<think>\n").append(in.completion);
    text = with_think;
  }
  const Layout L = analyse(text);
  score_accuracy(in, text, L, cfg, r);
  if (cfg.format_weight != 0.0) r.format = check_format(text, L, cfg.format_style).ok ? 1.0 : 0.0;
  if (cfg.language_weight != 0.0) {
    WordCounts wc;
    if (L.think.empty()) wc = count_words(text, cfg.language);
    for (const Span& s : L.think) wc += count_words(s.of(text), cfg.language);
    r.language = language_share(wc);
  }
  if (cfg.length == LengthPenalty::overlong)
    r.length = overlong_penalty(in.length, cfg.max_length, cfg.overlong_buffer);
  else if (cfg.length == LengthPenalty::kimi)
    r.length = 0.0;  // filled in per group by apply_group_length
  if (cfg.repetition_penalty != 0.0)
    r.repetition = repetition_penalty(in.completion, cfg.repetition_ngram, cfg.repetition_penalty);
  finish_total(r, cfg);
  return r;
}

void apply_group_length(std::vector<RewardResult>& group, const std::vector<int64_t>& lengths,
                        const RewardConfig& cfg) {
  std::vector<bool> correct;
  correct.reserve(group.size());
  // A skipped sample (accuracy null) counts as correct, as in open-r1: it is not penalised for a gold
  // answer nobody can check (its total stays null anyway).
  for (const RewardResult& r : group) correct.push_back(r.accuracy ? r.correct : true);
  std::vector<double> v = kimi_length_rewards(lengths, correct);
  for (size_t i = 0; i < group.size(); ++i) {
    group[i].length = v[i];
    finish_total(group[i], cfg);
  }
}

}  // namespace ds::rl
