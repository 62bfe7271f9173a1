#pragma once
// ds-sft's work, callable from tests: supervised fine-tuning of a trained checkpoint on chat JSONL with the loss
// on assistant tokens only (sft_data.h), through the shared Trainer (checkpoints, resume, metrics, evaluation).
#include <cstdint>
#include <string>

#include "tensor/context.h"
#include "train/sft_data.h"
#include "train/trainer.h"

namespace ds {

struct SftOptions {
  std::string input;       // chat JSONL(.zst) or '-'
  std::string output_dir;  // checkpoint directory (replaced atomically at every save)
  std::string init_from;   // the trained checkpoint to start from (weights + tokenizer; fresh optimizer)
  bool resume = false;     // continue the run saved in output_dir (init_from is then not read)
  bool overwrite = false;  // replace a checkpoint in output_dir instead of refusing
  double epochs = 1.0;     // sets train.max_steps when that is 0
  // Logit distillation (beyond the paper): kd_weight > 0 adds kd_weight * mean KL(teacher || student) on the
  // assistant tokens, the teacher checkpoint (same vocabulary) run on every batch.
  std::string kd_teacher;
  double kd_weight = 0.0;
  SftDataOptions data;
  TrainerOptions train;

  SftOptions() {
    train.max_steps = 0;  // 0 = from epochs
    train.lr.lr = 1e-4;
  }
};

// Returns the final held-out loss on assistant tokens (NaN without an eval split).
double run_sft(const Context& ctx, SftOptions opt);

}  // namespace ds
