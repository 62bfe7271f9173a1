// ds-sft: chat JSONL + a trained checkpoint -> the checkpoint fine-tuned on the assistant tokens (DeepSeek-R1 chat
// template), saved as a Hugging Face checkpoint directory. The work is lib/train/sft.
#include "cmd/common/program.h"
#include "core/error.h"
#include "train/sft.h"

int main(int argc, char** argv) {
  return ds::run_program("ds-sft", [&] {
    CLI::App app{"Supervised fine-tuning of a DeepSeek-V3-style checkpoint on chat JSONL "
                 "(loss on assistant tokens only)."};
    app.set_help_flag("-h,--help", "Print this help and exit");
    ds::CommonOptions common;
    ds::add_common_options(app, common, ds::kOptDevice | ds::kOptThreads | ds::kOptSeed);
    ds::SftOptions o;
    ds::TrainerOptions& t = o.train;
    std::string schedule = "cosine", save_dtype = "f32";
    double shard_gb = 5.0;
    bool no_packing = false;

    app.add_option("-i,--input", o.input,
                   "Chat data: JSONL of {\"messages\": [{role, content}]} or {\"prompt\", \"completion\"}, "
                   ".jsonl.zst or - for stdin");
    app.add_option("-o,--output", o.output_dir, "Checkpoint directory (replaced atomically at every save)");
    app.add_option("--init-from", o.init_from, "The trained checkpoint to fine-tune (weights and tokenizer)");
    app.add_flag("--resume", o.resume, "Continue the run saved in --output (weights, optimizer, data position)");
    app.add_flag("--overwrite", o.overwrite, "Replace a checkpoint already in --output");
    app.add_option("--seq-len", o.data.seq_len, "Tokens per training window")->capture_default_str();
    app.add_option("--eval-fraction", o.data.eval_fraction, "Share of conversations held out for evaluation")
        ->capture_default_str();
    app.add_flag("--no-packing", no_packing,
                 "One conversation per window, padded (default: conversations concatenated and cut into windows)");
    app.add_flag("--strict", o.data.strict,
                 "--no-packing: a conversation longer than a window is an error instead of being truncated");
    app.add_flag("--prefill-think", o.data.render.prefill_think,
                 "The sampler prefills \"<think>\\n\": an assistant answer's leading \"<think>\\n\" is prompt, "
                 "not a target");
    app.add_option("--epochs", o.epochs, "Passes over the training windows; sets the steps unless --max-steps")
        ->capture_default_str();
    app.add_option("--batch-size", t.batch_size, "Windows per micro-batch")->capture_default_str();
    app.add_option("--grad-accum", t.grad_accum, "Micro-batches per optimizer step")->capture_default_str();
    app.add_option("--max-steps", t.max_steps, "Optimizer steps (0 = from --epochs)")->capture_default_str();
    app.add_option("--stop-at-step", t.stop_at_step,
                   "Save and stop after this step, keeping the --max-steps schedule (0 = off; time-sliced jobs)")
        ->capture_default_str();
    app.add_option("--lr", t.lr.lr, "Peak learning rate")->capture_default_str();
    app.add_option("--min-lr-ratio", t.lr.min_lr_ratio, "Final learning rate as a fraction of the peak")
        ->capture_default_str();
    app.add_option("--warmup", t.lr.warmup_steps, "Linear warm-up steps")->capture_default_str();
    app.add_option("--schedule", schedule, "cosine, wsd (constant then linear decay) or constant")
        ->capture_default_str();
    app.add_option("--decay-fraction", t.lr.decay_fraction, "wsd: share of steps in the final decay")
        ->capture_default_str();
    app.add_option("--weight-decay", t.optim.weight_decay, "AdamW decoupled weight decay")->capture_default_str();
    app.add_option("--beta1", t.optim.beta1, "AdamW beta1")->capture_default_str();
    app.add_option("--beta2", t.optim.beta2, "AdamW beta2")->capture_default_str();
    app.add_option("--grad-clip", t.optim.grad_clip, "Max global gradient norm (0 = off)")->capture_default_str();
    app.add_option("--bias-update-speed", t.bias_update_gamma,
                   "gamma of the auxiliary-loss-free balancing: b += gamma*sign(mean_load - load) per step")
        ->capture_default_str();
    app.add_option("--balance-alpha", t.forward.balance_alpha, "alpha of the sequence-wise balance loss (0 = off)")
        ->capture_default_str();
    app.add_option("--mtp-lambda", t.forward.mtp_lambda, "lambda, weight of the MTP loss (MTP keeps training)")
        ->capture_default_str();
    app.add_option("--eval-every", t.eval_every, "Evaluate every N steps (0 = at the end only)")
        ->capture_default_str();
    app.add_option("--eval-batches", t.eval_batches, "Held-out batches per evaluation")->capture_default_str();
    app.add_option("--save-every", t.save_every, "Checkpoint every N steps (0 = at the end only)")
        ->capture_default_str();
    app.add_option("--save-dtype", save_dtype, "Weights in the checkpoint: f32 or bf16")
        ->check(CLI::IsMember({"f32", "bf16"}))
        ->capture_default_str();
    app.add_option("--shard-size", shard_gb, "Max safetensors shard size in GB")->capture_default_str();
    app.add_option("--metrics", t.metrics_path, "Metrics JSONL, one record per step");
    app.add_option("--expert-stats", t.expert_stats_path,
                   "Expert token counts JSONL, one record per MoE layer per step");
    if (int rc = ds::parse_cli(app, argc, argv); rc >= 0) return rc;
    ds::Context ctx = ds::apply_common_options(common);

    if (o.input.empty()) ds::throw_usage("-i/--input is required");
    if (t.batch_size < 1 || t.grad_accum < 1 || t.max_steps < 0)
      ds::throw_usage("--batch-size and --grad-accum must be >= 1, --max-steps >= 0");
    o.data.packing = !no_packing;
    if (o.data.strict && o.data.packing) ds::throw_usage("--strict applies to --no-packing");
    t.lr.kind = ds::lr_schedule_parse(schedule);
    t.seed = common.seed;
    t.save.file_dtype = save_dtype == "bf16" ? ds::DType::bf16 : ds::DType::f32;
    t.save.max_shard_bytes = size_t(shard_gb * 1e9);
    ds::run_sft(ctx, o);
    return 0;
  });
}
