#pragma once
// The training loop shared by ds-pretrain and ds-sft: gradient accumulation, AdamW with clipping, LR schedule,
// auxiliary-loss-free router-bias updates, held-out evaluation, metrics JSONL, expert-load statistics,
// atomic checkpoints with optimizer + trainer state, and exact resume.
#include <cstdint>
#include <memory>
#include <string>

#include "core/progress.h"
#include "model/model.h"
#include "model/model_io.h"
#include "tokenizer/tokenizer.h"
#include "train/data.h"
#include "train/optimizer.h"
#include "train/schedule.h"

namespace ds {

struct TrainerOptions {
  int64_t batch_size = 8;       // windows per micro-batch
  int64_t grad_accum = 1;       // micro-batches per optimizer step
  int64_t max_steps = 100;
  int64_t stop_at_step = 0;     // > 0: save and stop after this step, leaving the schedule of max_steps intact
                                // (time-sliced jobs: resume in the next one)
  LrScheduleOptions lr;         // lr.total_steps is set from max_steps
  OptimizerOptions optim;
  double bias_update_gamma = 0.001;  // γ of the auxiliary-loss-free balancing (0 = frozen biases)
  ForwardOptions forward;            // balance_alpha (α), mtp_lambda (λ)
  int64_t eval_every = 0;            // steps; 0 = only at the end
  int64_t eval_batches = 8;
  int64_t save_every = 0;            // steps; 0 = only at the end
  std::string output_dir;            // the checkpoint directory, replaced atomically at every save
  std::string metrics_path;          // JSONL, one record per step (and per evaluation)
  std::string expert_stats_path;     // JSONL, one record per MoE layer per step
  uint64_t seed = 1234;
  ModelSaveOptions save;
  bool progress = true;
  // Steps whose loss or gradient norm is NaN/inf skip their update (logged, "skipped": true in the metrics);
  // more than this many in a row stop the run with an error.
  int64_t max_skipped_steps = 5;
  // The model's precision (ds-pretrain / ds-sft --precision): f32, or bf16 mixed precision on CUDA (Model).
  DType model_dtype = DType::f32;
  // Logit distillation (ds-distill / ds-sft --kd-weight): a teacher run on every micro-batch, its logits pulling
  // the student's main head by kd_weight * mean KL(teacher || student) over the counted tokens. Not owned.
  Model* teacher = nullptr;
  double kd_weight = 0.0;
};

// What trainer_state.json holds.
struct TrainerState {
  int64_t step = 0;           // optimizer steps done
  int64_t data_position = 0;  // training windows served
  int64_t tokens_seen = 0;
  uint64_t seed = 0;
};

TrainerState read_trainer_state(const std::string& dir);

class Trainer {
 public:
  Trainer(Model& model, const Tokenizer& tok, const WindowSet& train, const WindowSet& eval,
          const TrainerOptions& opt);
  // Continues from the optimizer and trainer state in `dir` (weights must already be loaded into the model).
  void resume_from(const std::string& dir);
  // Runs up to max_steps. Returns the final held-out loss (NaN when there is no eval set).
  double run();
  double evaluate();  // mean next-token loss over the held-out batches
  void save_checkpoint();
  const TrainerState& state() const { return state_; }

 private:
  class StepStreams;  // the CUDA streams of a run (trainer.cpp)
  struct PendingStep;  // a step enqueued, its line not yet written (trainer.cpp)
  // Reads back what the step left on the device, decides on a skipped step's warnings and the divergence error,
  // and writes its metrics and expert-stats lines (run() calls it once the next step is enqueued).
  void report(const PendingStep& p, Progress& progress);
  void write_metrics(const std::string& json_line);
  void write_expert_stats(int64_t step, const std::vector<std::vector<int64_t>>& load);
  Model& model_;
  const Tokenizer& tok_;
  const WindowSet& train_;
  const WindowSet& eval_;
  TrainerOptions opt_;
  AdamW adamw_;
  BatchStream stream_;
  TrainerState state_;
  int64_t skipped_in_a_row_ = 0, skipped_total_ = 0;
  double last_report_ = 0;  // when report() last ran (now_seconds): the step's time is the span since
};

// Installs SIGINT/SIGTERM handlers that ask the running trainer to save and stop after the current step.
void install_stop_handlers();
bool stop_requested();

}  // namespace ds
