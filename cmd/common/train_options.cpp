#include "cmd/common/train_options.h"

#include "core/log.h"

namespace ds {

void add_trainer_options(CLI::App& app, TrainerCli& cli, const std::string& max_steps_help,
                         const std::string& mtp_help) {
  TrainerOptions& t = *cli.t;
  app.add_option("--batch-size", t.batch_size, "Windows per micro-batch")->capture_default_str();
  app.add_option("--grad-accum", t.grad_accum, "Micro-batches per optimizer step")->capture_default_str();
  app.add_option("--max-steps", t.max_steps, max_steps_help)->capture_default_str();
  app.add_option("--stop-at-step", t.stop_at_step,
                 "Save and stop after this step, keeping the --max-steps schedule (0 = off; time-sliced jobs)")
      ->capture_default_str();
  app.add_option("--lr", t.lr.lr, "Peak learning rate")->capture_default_str();
  app.add_option("--min-lr-ratio", t.lr.min_lr_ratio, "Final learning rate as a fraction of the peak")
      ->capture_default_str();
  app.add_option("--warmup", t.lr.warmup_steps, "Linear warm-up steps")->capture_default_str();
  app.add_option("--schedule", cli.schedule, "cosine, wsd (constant then linear decay) or constant")
      ->capture_default_str();
  app.add_option("--decay-fraction", t.lr.decay_fraction, "wsd: share of steps in the final decay")
      ->capture_default_str();
  app.add_option("--weight-decay", t.optim.weight_decay, "AdamW decoupled weight decay")->capture_default_str();
  app.add_option("--beta1", t.optim.beta1, "AdamW beta1")->capture_default_str();
  app.add_option("--beta2", t.optim.beta2, "AdamW beta2")->capture_default_str();
  app.add_option("--grad-clip", t.optim.grad_clip, "Max global gradient norm (0 = off)")->capture_default_str();
  app.add_option("--optim-state", cli.optim_state,
                 "AdamW moments: f32, or bf16 as DeepSeek-V3 keeps them (half the optimizer memory and traffic; "
                 "needs beta2 well below 1, e.g. 0.95)")
      ->check(CLI::IsMember({"f32", "bf16"}))
      ->capture_default_str();
  app.add_option("--bias-update-speed", t.bias_update_gamma,
                 "gamma of the auxiliary-loss-free balancing: b += gamma*sign(mean_load - load) per step")
      ->capture_default_str();
  app.add_option("--balance-alpha", t.forward.balance_alpha, "alpha of the sequence-wise balance loss (0 = off)")
      ->capture_default_str();
  app.add_option("--mtp-lambda", t.forward.mtp_lambda, mtp_help)->capture_default_str();
  app.add_option("--eval-every", t.eval_every, "Evaluate every N steps (0 = at the end only)")->capture_default_str();
  app.add_option("--eval-batches", t.eval_batches, "Held-out batches per evaluation")->capture_default_str();
  app.add_option("--save-every", t.save_every, "Checkpoint every N steps (0 = at the end only)")
      ->capture_default_str();
  app.add_option("--save-dtype", cli.save_dtype, "Weights in the checkpoint: f32 or bf16")
      ->check(CLI::IsMember({"f32", "bf16"}))
      ->capture_default_str();
  app.add_option("--precision", cli.precision,
                 "f32, or bf16: mixed precision on --device cuda (bf16 weights and activations; f32 master weights, "
                 "AdamW moments unless --optim-state bf16, gradients, norms and losses)")
      ->check(CLI::IsMember({"f32", "bf16"}))
      ->capture_default_str();
  app.add_option("--shard-size", cli.shard_gb, "Max safetensors shard size in GB")->capture_default_str();
  app.add_option("--metrics", t.metrics_path, "Metrics JSONL, one record per step");
  app.add_option("--expert-stats", t.expert_stats_path,
                 "Expert token counts JSONL, one record per MoE layer per step");
}

void finish_trainer_options(TrainerCli& cli, uint64_t seed, int64_t min_steps) {
  TrainerOptions& t = *cli.t;
  if (t.batch_size < 1 || t.grad_accum < 1 || t.max_steps < min_steps)
    throw_usage("--batch-size and --grad-accum must be >= 1, --max-steps >= " + std::to_string(min_steps));
  t.lr.kind = lr_schedule_parse(cli.schedule);
  t.seed = seed;
  t.save.file_dtype = cli.save_dtype == "bf16" ? DType::bf16 : DType::f32;
  t.model_dtype = cli.precision == "bf16" ? DType::bf16 : DType::f32;
  t.optim.state_dtype = cli.optim_state == "bf16" ? DType::bf16 : DType::f32;
  // beta2 = 0.999 moves v by 0.1% a step at most, under bf16's half-ulp (0.2-0.4%): v would stop following g^2.
  if (t.optim.state_dtype == DType::bf16 && t.optim.beta2 > 0.99)
    log_warn("--optim-state bf16 with --beta2 " + std::to_string(t.optim.beta2) +
             ": the second moment's updates fall under bf16's resolution (keep beta2 <= 0.99, e.g. 0.95)");
  t.save.max_shard_bytes = size_t(cli.shard_gb * 1e9);
}

}  // namespace ds
