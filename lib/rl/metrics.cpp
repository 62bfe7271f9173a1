#include "rl/metrics.h"

#include <algorithm>
#include <cstdio>

#include "core/json.h"

namespace ds::rl {

double pass_at_k(int64_t n, int64_t c, int64_t k) {
  if (n - c < k) return 1.0;
  double prod = 1.0;
  for (int64_t i = n - c + 1; i <= n; ++i) prod *= 1.0 - double(k) / double(i);
  return 1.0 - prod;
}

bool majority_correct(const std::vector<Vote>& votes, size_t k) {
  k = std::min(k, votes.size());
  // k is small (tens): a quadratic count keeps first-occurrence tie breaking obvious.
  size_t best = k, best_count = 0;
  for (size_t i = 0; i < k; ++i) {
    if (votes[i].key.empty()) continue;
    bool seen_before = false;
    for (size_t j = 0; j < i && !seen_before; ++j) seen_before = votes[j].key == votes[i].key;
    if (seen_before) continue;
    size_t count = 0;
    for (size_t j = i; j < k; ++j) count += votes[j].key == votes[i].key;
    if (count > best_count) {
      best = i;
      best_count = count;
    }
  }
  return best < k && votes[best].correct;
}

SummaryAggregator::SummaryAggregator(std::vector<int64_t> ks) : ks_(std::move(ks)) {
  std::sort(ks_.begin(), ks_.end());
  ks_.erase(std::unique(ks_.begin(), ks_.end()), ks_.end());
  for (int64_t k : ks_) max_k_ = std::max(max_k_, size_t(k));
}

void SummaryAggregator::add(const Sample& s) {
  auto it = tasks_.find(s.task);
  if (it == tasks_.end()) it = tasks_.emplace(std::string(s.task), Task{}).first;
  Task& t = it->second;
  ++t.samples;
  if (s.reward) {
    ++t.rewarded;
    t.reward_sum += *s.reward;
  }
  if (s.skipped) {
    ++t.skipped;
    return;
  }
  Group& g = t.groups[std::string(s.group)];
  ++g.n;
  g.c += s.correct;
  if (g.votes.size() < max_k_) g.votes.push_back({std::string(s.vote_key), s.correct});
}

SummaryAggregator::TaskSummary SummaryAggregator::summarise(const std::string& name,
                                                            const std::vector<const Task*>& tasks) const {
  TaskSummary r;
  r.task = name;
  double reward_sum = 0;
  bool first = true;
  for (const Task* t : tasks) {
    r.samples += t->samples;
    r.skipped += t->skipped;
    r.rewarded += t->rewarded;
    reward_sum += t->reward_sum;
    for (const auto& [key, g] : t->groups) {
      ++r.prompts;
      r.min_group = first ? g.n : std::min(r.min_group, g.n);
      r.max_group = first ? g.n : std::max(r.max_group, g.n);
      first = false;
      r.pass1 += double(g.c) / double(g.n);
    }
  }
  r.mean_reward = r.rewarded ? reward_sum / double(r.rewarded) : 0.0;
  if (r.prompts == 0) return r;
  r.pass1 /= double(r.prompts);
  std::vector<int64_t> ks;
  for (int64_t k : ks_) ks.push_back(std::min(k, r.min_group));
  ks.erase(std::unique(ks.begin(), ks.end()), ks.end());
  for (int64_t k : ks) {
    double pass = 0, maj = 0;
    for (const Task* t : tasks) {
      for (const auto& [key, g] : t->groups) {
        pass += pass_at_k(g.n, g.c, k);
        maj += majority_correct(g.votes, size_t(k)) ? 1.0 : 0.0;
      }
    }
    r.pass_at.emplace_back(k, pass / double(r.prompts));
    r.maj_at.emplace_back(k, maj / double(r.prompts));
  }
  return r;
}

std::vector<SummaryAggregator::TaskSummary> SummaryAggregator::summaries() const {
  std::vector<TaskSummary> out;
  std::vector<const Task*> all;
  for (const auto& [name, t] : tasks_) {
    out.push_back(summarise(name.empty() ? "(none)" : name, {&t}));
    all.push_back(&t);
  }
  if (tasks_.size() > 1) out.push_back(summarise("all", all));
  return out;
}

namespace {

std::string fmt(double v) {
  char buf[32];
  std::snprintf(buf, sizeof buf, "%.4f", v);
  return buf;
}

void write_summary(JsonWriter& w, const SummaryAggregator::TaskSummary& s) {
  w.begin_object();
  w.kv("prompts", s.prompts).kv("samples", s.samples).kv("skipped", s.skipped);
  w.kv("mean_reward", s.mean_reward).kv("min_group", s.min_group).kv("max_group", s.max_group);
  w.kv("pass@1", s.pass1);
  w.key("pass@k").begin_object();
  for (auto [k, v] : s.pass_at) w.kv(std::to_string(k), v);
  w.end_object();
  w.key("maj@k").begin_object();
  for (auto [k, v] : s.maj_at) w.kv(std::to_string(k), v);
  w.end_object();
  w.end_object();
}

}  // namespace

std::string SummaryAggregator::to_text() const {
  std::string out;
  for (const TaskSummary& s : summaries()) {
    out += "task " + s.task + ": prompts " + std::to_string(s.prompts) + ", samples " + std::to_string(s.samples) +
           ", skipped " + std::to_string(s.skipped) + ", mean reward " + fmt(s.mean_reward) + ", pass@1 " +
           fmt(s.pass1);
    for (auto [k, v] : s.pass_at)
      if (k != 1) out += ", pass@" + std::to_string(k) + " " + fmt(v);
    for (auto [k, v] : s.maj_at) out += ", maj@" + std::to_string(k) + " " + fmt(v);
    out += "\n";
  }
  if (out.empty()) out = "no records\n";
  return out;
}

std::string SummaryAggregator::to_json() const {
  JsonWriter w(true);
  w.begin_object().key("tasks").begin_object();
  std::vector<TaskSummary> all = summaries();
  for (size_t i = 0; i < tasks_.size(); ++i) {  // the per-task entries come first, "all" last
    w.key(all[i].task);
    write_summary(w, all[i]);
  }
  w.end_object();
  w.key("all");
  if (tasks_.size() > 1) write_summary(w, all.back());
  else if (!all.empty()) write_summary(w, all.front());
  else write_summary(w, TaskSummary{});
  w.end_object();
  return w.take() + "\n";
}

}  // namespace ds::rl
