#pragma once
// ds-grpo's work (RL.md §1): one GRPO update of a policy checkpoint from rewarded rollouts.
//
//   1. rewards (+ DAPO's soft overlong penalty) -> group advantages (lib/rl/grpo.h); DAPO filters choose the
//      samples that enter the loss (zero-variance groups dropped, truncated samples masked)
//   2. windows prompt_ids + completion_tokens, loss mask 1 exactly on the completion tokens, padded (mask 0) to
//      the longest window of a micro-batch; all log-probs are log softmax(logits / T), T = the sampling
//      temperature, as the rollout engine reports them (§1.1)
//   3. old log-probs: the rollouts' behaviour log-probs (default), or recomputed by the policy before any
//      update; they are fixed for the whole step (π_old is the policy that sampled, DeepSeekMath Alg. 1, §1.6).
//      Reference log-probs (when beta > 0, or --ref is given for the KL metric) once, from the reference model
//   4. μ iterations; each shuffles the samples and cuts them into mini-batches; each mini-batch is one AdamW
//      update (grad clip), run as micro-batches (forward without MTP, backward_policy) whose losses use the
//      mini-batch's token / sequence counts, so the micro-batches add up to exactly the mini-batch loss
//   5. the updated checkpoint (weights, tokenizer files, optimizer.safetensors, trainer_state.json) replaces -o
//      atomically. trainer_state.json carries "grpo_step" and the optimizer step: a checkpoint written by
//      ds-grpo continues its optimizer state in the next call (-o may equal --ckpt), any other checkpoint starts
//      a fresh optimizer.
// The auxiliary-loss-free router-bias update is off (bias_update_gamma 0) unless asked for; padding tokens count
// in the expert load when it is on.
#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "model/model.h"
#include "model/model_io.h"
#include "rl/grpo.h"
#include "tokenizer/tokenizer.h"
#include "train/grpo_data.h"
#include "train/optimizer.h"

namespace ds {

struct GrpoTrainOptions {
  rl::AdvantageOptions adv;
  rl::SampleFilterOptions filter;
  int64_t overlong_max_len = 0;   // soft overlong penalty (DAPO): L_max in completion tokens; 0 = off
  int64_t overlong_buffer = 0;    // L_cache
  double overlong_factor = 1.0;
  rl::GrpoLossOptions loss;       // Dr. GRPO needs loss.norm_length (the generation's max new tokens)
  int64_t iterations = 1;         // μ
  int64_t mini_batch = 0;         // samples per optimizer update; 0 = all (one update per iteration)
  int64_t micro_batch = 8;        // samples per forward / backward
  bool use_behaviour_logprobs = true;
  double lr = 1e-6;
  OptimizerOptions optim;         // set by the constructor to verl's actor defaults
  double bias_update_gamma = 0.0; // router-bias balancing during RL: off
  bool shuffle = true;
  uint64_t seed = 1234;

  GrpoTrainOptions() {
    optim.beta2 = 0.999;
    optim.weight_decay = 0.01;
    optim.grad_clip = 1.0;
  }
};

// What one step did; `json` is its metrics record.
struct GrpoStepStats {
  int64_t grpo_step = 0;          // after this step
  int64_t samples = 0, trained = 0, groups = 0, null_rewards = 0, zero_std_groups = 0;
  int64_t updates = 0;            // optimizer steps in this GRPO step
  double reward_mean = 0, loss = 0, kl = 0, entropy = 0, grad_norm = 0;
  std::vector<double> advantage, group_mean, group_std;  // per sample
  std::string json;
};

class GrpoUpdater {
 public:
  // ref may be null when opt.loss.beta == 0.
  GrpoUpdater(Model& policy, Model* ref, const GrpoTrainOptions& opt);
  // Continues the optimizer and counters of a checkpoint written by a GRPO step (returns false, changing nothing,
  // for any other checkpoint).
  bool resume_from(const std::string& dir);
  // One GRPO step over the samples (the policy is updated in place).
  GrpoStepStats update(const GrpoRollouts& data);
  // Weights, tokenizer files (when tok is loaded), optimizer and trainer state into dir (a tmp dir to commit).
  void save_files(const std::string& dir, const Tokenizer* tok, const ModelSaveOptions& save) const;
  int64_t grpo_step() const { return grpo_step_; }
  int64_t optimizer_step() const { return opt_step_; }
  // Prompts consumed by the loop mode (saved as the trainer state's data_position).
  int64_t data_position() const { return data_position_; }
  void set_data_position(int64_t p) { data_position_ = p; }

 private:
  Model& policy_;
  Model* ref_;
  GrpoTrainOptions opt_;
  AdamW adamw_;
  int64_t grpo_step_ = 0, opt_step_ = 0, tokens_seen_ = 0, data_position_ = 0;
};

struct GrpoOptions {
  std::string input;            // rewarded rollouts JSONL(.zst) or '-'
  std::string ckpt;             // the policy
  std::string ref;              // the reference policy (required when train.loss.beta > 0)
  std::string output_dir;       // the updated checkpoint; may be ckpt
  bool overwrite = false;       // replace a checkpoint in output_dir that is not ckpt
  bool reset_optimizer = false; // ignore a GRPO optimizer state in ckpt
  double temperature = 0;       // > 0 overrides the rollouts' temperature
  std::string metrics_path;     // JSONL, one record per step (appended)
  std::string dump_advantages;  // every input record + advantage, group_mean, group_std
  GrpoTrainOptions train;
  ModelSaveOptions save;
};

GrpoStepStats run_grpo_step(const Context& ctx, const GrpoOptions& opt);

// The checks shared with the loop mode: --ckpt is a checkpoint, -o is it or may be replaced, --beta has --ref
// (usage / bad-input errors); finishes interrupted checkpoint commits first.
void check_grpo_paths(const GrpoOptions& opt);

// Appends one line to a metrics file ('-' = stdout).
void append_metrics(const std::string& path, const std::string& json_line);

}  // namespace ds
