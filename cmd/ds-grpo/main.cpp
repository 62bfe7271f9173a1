// ds-grpo: one GRPO update (RL.md §1) of a policy checkpoint from rewarded rollouts (ds-rollout | ds-reward),
// written atomically as a checkpoint directory (-o may be the policy itself: repeated calls continue the
// optimizer state).
#include "cmd/common/program.h"
#include "core/error.h"
#include "train/grpo.h"

int main(int argc, char** argv) {
  return ds::run_program("ds-grpo", [&] {
    CLI::App app{"GRPO update of a DeepSeek-V3-style policy from rewarded rollouts JSONL."};
    app.set_help_flag("-h,--help", "Print this help and exit");
    ds::CommonOptions common;
    ds::add_common_options(app, common, ds::kOptDevice | ds::kOptThreads | ds::kOptSeed);
    ds::GrpoOptions o;
    ds::GrpoTrainOptions& t = o.train;
    std::string scale = "group", agg = "token-mean", kl = "k3", save_dtype = "f32";

    app.add_option("-i,--input", o.input, "Rewarded rollouts JSONL (ds-reward output), .jsonl.zst or - for stdin");
    app.add_option("--ckpt", o.ckpt, "The policy checkpoint to update");
    app.add_option("-o,--output", o.output_dir, "Updated checkpoint directory (may be --ckpt itself)");
    app.add_option("--ref", o.ref, "Reference checkpoint for the KL term (required when --beta > 0)");
    app.add_flag("--overwrite", o.overwrite, "Replace a checkpoint in --output that is not --ckpt");
    app.add_flag("--reset-optimizer", o.reset_optimizer, "Start a fresh optimizer even if --ckpt holds a GRPO one");
    app.add_option("--temperature", o.temperature,
                   "Sampling temperature of the rollouts (default: their \"temperature\" field, else 1)");
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
    if (int rc = ds::parse_cli(app, argc, argv); rc >= 0) return rc;
    ds::Context ctx = ds::apply_common_options(common);

    t.adv.scale = ds::rl::advantage_scale_parse(scale);
    t.loss.agg = ds::rl::loss_agg_parse(agg);
    t.loss.kl = ds::rl::kl_estimator_parse(kl);
    t.seed = common.seed;
    o.save.file_dtype = save_dtype == "bf16" ? ds::DType::bf16 : ds::DType::f32;
    ds::run_grpo_step(ctx, o);
    return 0;
  });
}
