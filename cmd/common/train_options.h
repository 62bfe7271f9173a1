#pragma once
// The training-loop options shared by ds-pretrain and ds-sft (one spelling, one set of defaults and checks).
#include <CLI/CLI.hpp>
#include <string>

#include "train/trainer.h"

namespace ds {

struct TrainerCli {
  TrainerOptions* t = nullptr;
  std::string schedule = "cosine";
  std::string save_dtype = "f32";
  std::string precision = "f32";
  std::string optim_state = "f32";
  double shard_gb = 5.0;
};

// Adds --batch-size ... --expert-stats to app, writing into *cli.t. `max_steps_help` and `mtp_help` let each
// program say what 0 / the MTP weight mean for it.
void add_trainer_options(CLI::App& app, TrainerCli& cli, const std::string& max_steps_help,
                         const std::string& mtp_help);
// After parsing: the schedule, checkpoint dtype and shard size into *cli.t, plus the range checks.
// min_steps is the smallest --max-steps allowed (ds-sft takes 0 = from --epochs).
void finish_trainer_options(TrainerCli& cli, uint64_t seed, int64_t min_steps);

}  // namespace ds
