#pragma once
// ds-grpo's loop mode: rollout -> reward -> GRPO update, N times in one process with one model.
//
// Each step takes the next prompts_per_step prompt records (in file order, wrapping around; the position is
// saved as the checkpoint's data_position, so a later call continues with the next prompts), samples G
// completions of each with the generation engine (lib/infer/engine.h) on the policy being trained, writes them as
// ds-rollout records (plus "step"), scores them with ds-reward's scoring (lib/rl/reward_stream.h, in process)
// or an external command (rollouts JSONL on its stdin, rewarded JSONL on its stdout), and runs one GRPO update
// (train/grpo.h) with the behaviour log-probs the engine reported. After the update the engine's decoder
// re-derives its absorbed weights (Decoder::refresh), so the next step samples from the new policy.
// The checkpoint is written every save_every steps and at the end (also after SIGINT / SIGTERM, between steps).
//
// A sample's group is "<prompt id>@<draw index>" (unique even when a prompt comes round again within a step).
#include <cstdint>
#include <string>
#include <vector>

#include "infer/engine.h"
#include "infer/rollout.h"
#include "rl/reward.h"
#include "train/grpo.h"

namespace ds {

struct GrpoLoopOptions {
  std::string prompts;              // prompts JSONL: {"prompt"} or {"messages"}, plus the reward's fields
  int64_t steps = 1;
  int64_t prompts_per_step = 8;
  int64_t samples = 8;              // G
  SamplingParams sp;                // sp.seed: unused; each prompt's seed comes from (--seed, step, draw)
  PromptTemplate tmpl = PromptTemplate::r1_zero;
  bool prefill_think = false;
  std::vector<std::string> stop;    // r1-zero adds "</answer>" unless no_default_stop
  bool no_default_stop = false;
  EngineOptions engine;
  std::string reward_cmd;           // external scorer (run by /bin/sh); empty = ds-reward's scoring in process
  rl::RewardConfig reward;          // the in-process scoring
  std::string answer_field = "answer";
  std::string rollouts_out;         // append every step's rewarded rollouts here (optional)
  int64_t save_every = 1;           // steps between checkpoints (0 = only at the end)
};

// Runs the loop; returns the last step's statistics.
GrpoStepStats run_grpo_loop(const Context& ctx, const GrpoOptions& opt, const GrpoLoopOptions& loop);

}  // namespace ds
