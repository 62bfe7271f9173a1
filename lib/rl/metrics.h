#pragma once
// Evaluation metrics over groups of samples (RL.md §5).
//
// pass@k (Chen et al. 2021, unbiased): for a prompt with n scored samples of which c are correct,
//   pass@k = 1 - C(n-c, k) / C(n, k) = 1 - prod_{i=n-c+1}^{n} (1 - k/i), and 1 when n - c < k;
//   averaged over prompts. The product form never forms a binomial coefficient, so it is stable for any n.
// maj@k (self-consistency): among the first k scored samples of a prompt (in input order), the answers
//   with a key (answer.h's answer_key of the extracted answer; samples without an answer do not vote)
//   vote; the most frequent key wins, ties go to the key seen first; the prompt counts as correct when the
//   winning key's first sample was correct. No vote at all = not correct.
// Skipped samples (reward null: the gold answer could not be used) count neither as n nor as c.
#include <cstdint>
#include <map>
#include <optional>
#include <string>
#include <string_view>
#include <unordered_map>
#include <vector>

namespace ds::rl {

// Requires 0 <= c <= n and 1 <= k <= n.
double pass_at_k(int64_t n, int64_t c, int64_t k);

struct Vote {
  std::string key;  // empty = no answer
  bool correct = false;
};

// The majority decision over votes[0..k) (k clipped to the size).
bool majority_correct(const std::vector<Vote>& votes, size_t k);

// Streaming aggregation of per-task summaries: memory grows with the number of prompts (and, per prompt,
// with max(k) votes), not with the number of samples.
class SummaryAggregator {
 public:
  explicit SummaryAggregator(std::vector<int64_t> ks);

  struct Sample {  // the views need to live only for the add() call
    std::string_view task;    // "" is reported as "(none)"
    std::string_view group;   // the prompt key
    bool skipped = false;
    std::optional<double> reward;
    bool correct = false;
    std::string_view vote_key;  // "" = no answer
  };
  void add(const Sample& s);

  struct TaskSummary {
    std::string task;
    int64_t prompts = 0;      // prompts with at least one scored sample
    int64_t samples = 0;      // all samples, scored or skipped
    int64_t skipped = 0;
    double mean_reward = 0;   // over samples with a non-null reward
    int64_t rewarded = 0;     // how many those are
    int64_t min_group = 0, max_group = 0;  // scored samples per prompt
    double pass1 = 0;         // mean of c/n
    std::vector<std::pair<int64_t, double>> pass_at;  // (k clipped to min_group, value)
    std::vector<std::pair<int64_t, double>> maj_at;
  };
  // One entry per task in name order, then "all" (every task together) when there is more than one task.
  std::vector<TaskSummary> summaries() const;

  std::string to_text() const;  // one line per task, for stderr
  std::string to_json() const;  // {"tasks": {name: {...}}, "all": {...}}

 private:
  struct Group {
    int64_t n = 0, c = 0;
    std::vector<Vote> votes;  // first max(k) scored samples
  };
  struct Task {
    int64_t samples = 0, skipped = 0, rewarded = 0;
    double reward_sum = 0;
    std::unordered_map<std::string, Group> groups;
  };
  TaskSummary summarise(const std::string& name, const std::vector<const Task*>& tasks) const;

  std::vector<int64_t> ks_;
  size_t max_k_ = 1;
  std::map<std::string, Task, std::less<>> tasks_;
};

}  // namespace ds::rl
