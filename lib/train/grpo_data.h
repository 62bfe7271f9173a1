#pragma once
// Rewarded rollouts (ds-rollout + ds-reward records, lib/infer/rollout.h) as GRPO training samples.
//
// Fields read (every other field is ignored, and passed through by the advantage dump):
//   group              the prompt the sample belongs to (any JSON value; "prompt" is used when absent)
//   prompt_ids         the rendered prompt, token ids (non-empty)
//   completion_tokens  the sampled ids (may be empty: the sample then has nothing to train)
//   logprobs           behaviour log-probs log softmax(logits / T), one per completion token (required when
//                      they are used as the old log-probs)
//   reward             number, or null: the sample is dropped (counted), as ds-reward's skipped samples
//   rewards            optional {name: number | null}, for the metrics only
//   finish_reason      optional; "length" marks a truncated sample (overlong filtering, truncation rate)
//   temperature        optional sampling temperature; every record must agree (or the caller overrides it)
// A bad record (malformed JSON, a missing or mistyped field, an id outside the vocabulary, a window longer than
// the model's positions) is a bad-input error naming file:line; nothing is trained or written then.
#include <cstdint>
#include <string>
#include <utility>
#include <vector>

namespace ds {

struct GrpoSample {
  int64_t group = 0;                     // dense group index, in order of first appearance
  std::vector<int32_t> prompt;           // prompt_ids
  std::vector<int32_t> completion;       // completion_tokens
  std::vector<double> logprobs;          // behaviour log-probs (empty when not read)
  double reward = 0;
  std::vector<std::pair<std::string, double>> rewards;  // the named terms that are not null
  bool truncated = false;                // finish_reason "length"
  int64_t line = 0;                      // in the input file
};

struct GrpoRollouts {
  std::string path;
  std::vector<GrpoSample> samples;       // the records with a reward
  std::vector<std::string> group_keys;   // per group: the raw JSON of its key
  int64_t null_rewards = 0;              // records dropped for a null reward
  double temperature = 1.0;
  bool temperature_from_records = false;
  // With keep_lines: every input record's line and the index of its sample (-1: null reward), for the dump.
  std::vector<std::string> lines;
  std::vector<int64_t> line_sample;
};

struct GrpoReadOptions {
  bool need_logprobs = true;     // "logprobs" is required (and checked against completion_tokens)
  bool keep_lines = false;
  int64_t vocab_size = 0;        // > 0: ids must be below it
  int64_t max_positions = 0;     // > 0: prompt + completion - 1 must not exceed it
  double temperature = 0;        // > 0 overrides the records' "temperature"
};

GrpoRollouts read_grpo_rollouts(const std::string& path, const GrpoReadOptions& opt);

// Writes every input record with "advantage", "group_mean" and "group_std" added (null for a sample dropped for
// its null reward); all other fields pass through byte for byte. `advantage`, `mean`, `std` are per sample.
void write_advantages(const std::string& out_path, const GrpoRollouts& data, const std::vector<double>& advantage,
                      const std::vector<double>& group_mean, const std::vector<double>& group_std);

}  // namespace ds
