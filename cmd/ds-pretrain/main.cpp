// ds-pretrain: {"text"} JSONL -> a DeepSeek-V3-style model trained from scratch (next-token + MTP), saved as a
// Hugging Face checkpoint directory. Also --dump-logits for checking a checkpoint against another implementation.
#include "cmd/common/program.h"
#include "cmd/common/train_options.h"
#include "core/error.h"
#include "train/pretrain.h"

int main(int argc, char** argv) {
  return ds::run_program("ds-pretrain", [&] {
    CLI::App app{"Pre-train a DeepSeek-V3-style model (MLA, DeepSeekMoE, MTP) on {\"text\"} JSONL."};
    app.set_help_flag("-h,--help", "Print this help and exit");
    ds::CommonOptions common;
    ds::add_common_options(app, common, ds::kOptDevice | ds::kOptThreads | ds::kOptSeed);
    ds::PretrainOptions o;
    ds::TrainerOptions& t = o.train;
    std::string dump_logits, ckpt;

    app.add_option("-i,--input", o.input, "Training corpus: {\"text\"} JSONL, .jsonl.zst or - for stdin");
    app.add_option("-o,--output", o.output_dir, "Checkpoint directory (replaced atomically at every save)");
    app.add_option("--preset", o.preset, "New model from a preset: tiny or small (vocab from the tokenizer)");
    app.add_option("--config", o.config_path, "New model from a Hugging Face config.json (deepseek_v3)");
    app.add_option("--init-from", o.init_from, "Start from a checkpoint's weights (fresh optimizer)");
    app.add_option("--tokenizer", o.tokenizer, "tokenizer.model, or a directory holding one");
    app.add_flag("--resume", o.resume, "Continue the run saved in --output (weights, optimizer, data position)");
    app.add_flag("--overwrite", o.overwrite, "Replace a checkpoint already in --output");
    app.add_option("--text-field", o.corpus.text_field, "JSON field holding the text")->capture_default_str();
    app.add_option("--seq-len", o.corpus.seq_len, "Tokens per training window")->capture_default_str();
    app.add_option("--eval-fraction", o.corpus.eval_fraction, "Share of documents held out for evaluation")
        ->capture_default_str();
    ds::TrainerCli tcli{&t};
    ds::add_trainer_options(app, tcli, "Optimizer steps", "lambda, weight of the MTP loss");
    app.add_option("--dump-logits", dump_logits,
                   "Instead of training: print the logits of every {\"ids\": [...]} record of --input "
                   "computed by --ckpt, to this file (- = stdout)");
    app.add_option("--ckpt", ckpt, "Checkpoint for --dump-logits");
    if (int rc = ds::parse_cli(app, argc, argv); rc >= 0) return rc;
    ds::Context ctx = ds::apply_common_options(common);

    if (o.input.empty()) ds::throw_usage("-i/--input is required");
    if (!dump_logits.empty()) {
      if (ckpt.empty()) ds::throw_usage("--dump-logits needs --ckpt DIR");
      ds::dump_logits(ctx, ckpt, o.input, dump_logits);
      return 0;
    }
    ds::finish_trainer_options(tcli, common.seed, 1);
    ds::run_pretrain(ctx, o);
    return 0;
  });
}
