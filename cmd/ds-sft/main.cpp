// ds-sft: chat JSONL + a trained checkpoint -> the checkpoint fine-tuned on the assistant tokens (DeepSeek-R1 chat
// template), saved as a Hugging Face checkpoint directory. The work is lib/train/sft.
#include "cmd/common/program.h"
#include "cmd/common/train_options.h"
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
    app.add_option("--kd-teacher", o.kd_teacher,
                   "Teacher checkpoint for logit distillation (same vocabulary; runs on every batch)");
    app.add_option("--kd-weight", o.kd_weight,
                   "Weight of KL(teacher || student) on the assistant tokens, added to the loss (0 = off)")
        ->capture_default_str();
    ds::TrainerCli tcli{&t};
    ds::add_trainer_options(app, tcli, "Optimizer steps (0 = from --epochs)",
                            "lambda, weight of the MTP loss (MTP keeps training)");
    if (int rc = ds::parse_cli(app, argc, argv); rc >= 0) return rc;
    ds::Context ctx = ds::apply_common_options(common);

    if (o.input.empty()) ds::throw_usage("-i/--input is required");
    o.data.packing = !no_packing;
    if (o.data.strict && o.data.packing) ds::throw_usage("--strict applies to --no-packing");
    ds::finish_trainer_options(tcli, common.seed, 0);
    ds::run_sft(ctx, o);
    return 0;
  });
}
