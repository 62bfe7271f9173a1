// ds-grpo: one GRPO update (RL.md §1) of a policy checkpoint from rewarded rollouts (ds-rollout | ds-reward),
// written atomically as a checkpoint directory (-o may be the policy itself: repeated calls continue the
// optimizer state); or, with --steps N --prompts FILE, N rounds of rollout -> reward -> update in one process.
#include <limits>

#include "cmd/common/program.h"
#include "core/error.h"
#include "train/grpo.h"
#include "train/grpo_loop.h"

int main(int argc, char** argv) {
  return ds::run_program("ds-grpo", [&] {
    CLI::App app{"GRPO update of a DeepSeek-V3-style policy from rewarded rollouts JSONL."};
    app.set_help_flag("-h,--help", "Print this help and exit");
    ds::CommonOptions common;
    ds::add_common_options(app, common, ds::kOptDevice | ds::kOptThreads | ds::kOptSeed);
    ds::GrpoOptions o;
    ds::GrpoTrainOptions& t = o.train;
    ds::GrpoLoopOptions L;
    std::string scale = "group", agg = "token-mean", kl = "k3", save_dtype = "f32", tmpl = "r1-zero";
    double format_weight = 1.0;

    app.add_option("-i,--input", o.input, "Rewarded rollouts JSONL (ds-reward output), .jsonl.zst or - for stdin");
    app.add_option("--ckpt", o.ckpt, "The policy checkpoint to update");
    app.add_option("-o,--output", o.output_dir, "Updated checkpoint directory (may be --ckpt itself)");
    app.add_option("--ref", o.ref, "Reference checkpoint for the KL term (required when --beta > 0)");
    app.add_flag("--overwrite", o.overwrite, "Replace a checkpoint in --output that is not --ckpt");
    app.add_flag("--reset-optimizer", o.reset_optimizer, "Start a fresh optimizer even if --ckpt holds a GRPO one");
    app.add_option("--temperature", o.temperature,
                   "Sampling temperature of the rollouts (default: their \"temperature\" field, else 1); loop mode "
                   "samples at it (default 1)");
    // advantages and sample filters
    app.add_option("--adv-scale", scale, "Advantage scale: group (std per group), batch (std over the batch), "
                   "none (Dr. GRPO: centred only)")->capture_default_str();
    app.add_option("--adv-eps", t.adv.eps, "epsilon added to the std")->capture_default_str();
    app.add_flag("--drop-zero-std", t.filter.drop_zero_std_groups,
                 "DAPO dynamic-sampling filter: leave out groups whose rewards are all equal");
    app.add_flag("--mask-truncated", t.filter.mask_truncated,
                 "DAPO overlong filtering: truncated samples (finish_reason length) leave the loss");
    app.add_option("--overlong-max", t.overlong_max_len,
                   "DAPO soft overlong punishment: L_max in completion tokens (0 = off)")->capture_default_str();
    app.add_option("--overlong-buffer", t.overlong_buffer, "DAPO soft overlong punishment: L_cache")
        ->capture_default_str();
    app.add_option("--overlong-factor", t.overlong_factor, "Weight of the overlong punishment")->capture_default_str();
    // the loss
    app.add_option("--eps-low", t.loss.eps_low, "Clip range below: rho >= 1 - eps_low")->capture_default_str();
    app.add_option("--eps-high", t.loss.eps_high, "Clip range above: rho <= 1 + eps_high (DAPO clip-higher: 0.28)")
        ->capture_default_str();
    app.add_option("--dual-clip", t.loss.dual_clip, "Dual-clip c > 1 for negative advantages (verl 3; 0 = off)")
        ->capture_default_str();
    app.add_option("--delta", t.loss.delta, "Cap of the ratio in the unclipped branch (TRL delta; 0 = off)")
        ->capture_default_str();
    app.add_option("--beta", t.loss.beta, "KL weight (R1 0.001; 0 = no KL term, no --ref needed)")
        ->capture_default_str();
    app.add_option("--kl", kl, "KL estimator: k1, k2 or k3 (low-variance, DeepSeekMath/R1)")->capture_default_str();
    app.add_option("--loss-agg", agg,
                   "seq-mean-token-mean (grpo), token-mean (dapo), seq-mean-token-sum, seq-mean-token-sum-norm "
                   "(dr-grpo)")->capture_default_str();
    app.add_option("--norm-length", t.loss.norm_length, "Dr. GRPO constant normaliser C (the max new tokens)");
    // the updates
    app.add_option("--iterations", t.iterations, "mu: passes over the rollouts per step")->capture_default_str();
    app.add_option("--mini-batch", t.mini_batch, "Samples per optimizer update (0 = all)")->capture_default_str();
    app.add_option("--micro-batch", t.micro_batch, "Samples per forward/backward")->capture_default_str();
    app.add_flag("--use-behaviour-logprobs,!--recompute-old-logprobs", t.use_behaviour_logprobs,
                 "Old log-probs: the rollouts' behaviour log-probs (default), or recomputed by the policy before "
                 "the update");
    app.add_flag("--no-shuffle{false}", t.shuffle, "Keep the input order in the mini-batches");
    app.add_option("--lr", t.lr, "Learning rate (constant)")->capture_default_str();
    app.add_option("--weight-decay", t.optim.weight_decay, "AdamW decoupled weight decay")->capture_default_str();
    app.add_option("--beta1", t.optim.beta1, "AdamW beta1")->capture_default_str();
    app.add_option("--beta2", t.optim.beta2, "AdamW beta2")->capture_default_str();
    app.add_option("--grad-clip", t.optim.grad_clip, "Max global gradient norm (0 = off)")->capture_default_str();
    app.add_option("--bias-update-speed", t.bias_update_gamma,
                   "Router-bias balancing during RL: b += gamma*sign(mean_load - load) per update (0 = off)")
        ->capture_default_str();
    // outputs
    app.add_option("--metrics", o.metrics_path, "Metrics JSONL, one record per step (appended)");
    app.add_option("--dump-advantages", o.dump_advantages,
                   "Write every input record with advantage, group_mean and group_std added");
    app.add_option("--save-dtype", save_dtype, "Weights in the checkpoint: f32 or bf16")
        ->check(CLI::IsMember({"f32", "bf16"}))
        ->capture_default_str();
    // loop mode
    auto* steps = app.add_option("--steps", L.steps, "Loop mode: N rounds of rollout -> reward -> update");
    app.add_option("--prompts", L.prompts, "Loop mode: prompts JSONL ({\"prompt\"} or {\"messages\"}, e.g. ds-tasks)");
    app.add_option("--prompts-per-step", L.prompts_per_step, "Loop: prompts per step")->capture_default_str();
    app.add_option("-n,--samples", L.samples, "Loop: samples per prompt (G)")->capture_default_str();
    app.add_option("--top-p", L.sp.top_p, "Loop: nucleus sampling mass")->capture_default_str();
    app.add_option("--top-k", L.sp.top_k, "Loop: keep the k most likely tokens (0 = off)")->capture_default_str();
    app.add_option("--max-new-tokens", L.sp.max_new_tokens, "Loop: tokens per sample at most")->capture_default_str();
    app.add_option("--template", tmpl, "Loop: prompt template r1-zero, chat or raw (as ds-rollout)")
        ->capture_default_str();
    app.add_flag("--prefill-think", L.prefill_think, "Loop: start every answer with \"<think>\\n\"");
    app.add_option("--stop", L.stop, "Loop: stop string (repeatable); r1-zero also stops at </answer>");
    app.add_flag("--no-default-stop", L.no_default_stop, "Loop: do not add r1-zero's </answer> stop string");
    app.add_option("--max-batch", L.engine.max_batch, "Loop: sequences decoded together")->capture_default_str();
    app.add_option("--prefill-tokens", L.engine.prefill_tokens,
                   "Loop: prompts prefilled together, up to this many padded tokens (as ds-rollout)")
        ->check(CLI::Range(int64_t(-1), std::numeric_limits<int64_t>::max()))
        ->capture_default_str();
    app.add_option("--reward-cmd", L.reward_cmd,
                   "Loop: score with this shell command (rollouts JSONL on stdin, rewarded JSONL on stdout) instead "
                   "of ds-reward's default scoring in process");
    app.add_option("--format-weight", format_weight, "Loop, in-process reward: weight of the format reward")
        ->capture_default_str();
    app.add_option("--answer-field", L.answer_field, "Loop, in-process reward: gold answer field")
        ->capture_default_str();
    app.add_option("--rollouts-out", L.rollouts_out, "Loop: append every step's rewarded rollouts to this file");
    app.add_option("--save-every", L.save_every, "Loop: checkpoint every N steps (0 = at the end)")
        ->capture_default_str();
    if (int rc = ds::parse_cli(app, argc, argv); rc >= 0) return rc;
    ds::Context ctx = ds::apply_common_options(common);

    t.adv.scale = ds::rl::advantage_scale_parse(scale);
    t.loss.agg = ds::rl::loss_agg_parse(agg);
    t.loss.kl = ds::rl::kl_estimator_parse(kl);
    t.seed = common.seed;
    o.save.file_dtype = save_dtype == "bf16" ? ds::DType::bf16 : ds::DType::f32;
    if (steps->count() > 0) {
      if (!o.input.empty()) ds::throw_usage("loop mode (--steps) samples its own rollouts: drop -i/--input");
      L.tmpl = ds::prompt_template_parse(tmpl);
      if (o.temperature > 0) L.sp.temperature = o.temperature;
      L.reward.format_weight = format_weight;
      ds::run_grpo_loop(ctx, o, L);
    } else {
      if (!L.prompts.empty()) ds::throw_usage("--prompts needs --steps N (loop mode)");
      ds::run_grpo_step(ctx, o);
    }
    return 0;
  });
}
