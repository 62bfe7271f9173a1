#include "train/sft.h"

#include <cmath>
#include <cstdio>

#include "ckpt/ckpt_dir.h"
#include "core/io.h"
#include "core/log.h"
#include "model/model_io.h"

namespace ds {

double run_sft(const Context& ctx, SftOptions o) {
  if (o.output_dir.empty()) throw_usage("-o/--output DIR is required");
  if (o.epochs <= 0) throw_usage("--epochs must be > 0");
  if (o.train.batch_size < 1 || o.train.grad_accum < 1 || o.train.max_steps < 0)
    throw_usage("--batch-size and --grad-accum must be >= 1, --max-steps >= 0");
  // As ds-pretrain: finish an interrupted checkpoint commit first, then refuse to clobber a checkpoint.
  recover_checkpoint_dir(o.output_dir);
  const bool have_ckpt = path_exists(o.output_dir + "/trainer_state.json");
  if (o.resume && !have_ckpt) throw_usage("--resume: no resumable checkpoint in " + o.output_dir);
  if (!o.resume && have_ckpt && !o.overwrite)
    throw_usage(o.output_dir + " holds a checkpoint: pass --resume to continue it or --overwrite to replace it");
  if (!o.resume && o.init_from.empty())
    throw_usage("--init-from CKPT is required: fine-tuning starts from a trained model");

  // The tokenizer and the weights come from the base checkpoint (or from the run being resumed).
  const std::string src = o.resume ? o.output_dir : o.init_from;
  if (!path_exists(src + "/config.json"))
    throw_bad_input(std::string(o.resume ? "--resume" : "--init-from") +
                        ": not a checkpoint directory (no config.json)",
                    src);
  Tokenizer tok = Tokenizer::load(src);
  SftData data = load_sft_data(o.input, tok, o.data);
  ModelLoadOptions lo;
  lo.dtype = o.train.model_dtype;
  std::unique_ptr<Model> model = load_model(src, ctx, lo);
  const ModelConfig& cfg = model->config();
  if (cfg.vocab_size < tok.vocab_size()) throw_bad_input("the model's vocabulary is smaller than the tokenizer's", src);
  if (o.data.seq_len > cfg.max_position_embeddings)
    throw_usage("--seq-len " + std::to_string(o.data.seq_len) + " exceeds max_position_embeddings " +
                std::to_string(cfg.max_position_embeddings));

  const int64_t per_step = o.train.batch_size * o.train.grad_accum;
  if (o.train.max_steps == 0) o.train.max_steps = sft_steps_for_epochs(o.epochs, data.train.size(), per_step);
  log_info("data: " + std::to_string(data.n_conversations) + " conversations (" +
           std::to_string(data.n_eval_conversations) + " held out), " + std::to_string(data.n_tokens) + " tokens, " +
           std::to_string(data.n_trainable) + " assistant targets in " + std::to_string(data.train.size()) +
           " training / " + std::to_string(data.eval.size()) + " held-out windows of " +
           std::to_string(o.data.seq_len) + " tokens" + (o.data.packing ? " (packed)" : " (one per window)"));
  if (data.n_dropped_windows > 0)
    log_info(std::to_string(data.n_dropped_windows) + " windows without assistant tokens skipped");
  char buf[160];
  std::snprintf(buf, sizeof buf, "%lld steps of %lld windows = %.2f epochs",
                static_cast<long long>(o.train.max_steps), static_cast<long long>(per_step),
                double(o.train.max_steps * per_step) / double(data.train.size()));
  log_info(buf);

  std::unique_ptr<Model> teacher;
  if (o.kd_weight < 0) throw_usage("--kd-weight must be >= 0");
  if (o.kd_weight > 0) {
    if (o.kd_teacher.empty()) throw_usage("--kd-weight needs a teacher checkpoint (--kd-teacher)");
    if (!path_exists(o.kd_teacher + "/config.json"))
      throw_bad_input("--kd-teacher: not a checkpoint directory (no config.json)", o.kd_teacher);
    ModelLoadOptions tl;
    tl.dtype = model->dtype();
    teacher = load_model(o.kd_teacher, ctx, tl);
    if (teacher->config().vocab_size != cfg.vocab_size)
      throw_bad_input("the teacher's vocab_size " + std::to_string(teacher->config().vocab_size) +
                          " differs from the student's " + std::to_string(cfg.vocab_size) +
                          ": logit distillation needs the same vocabulary",
                      o.kd_teacher + "/config.json");
    o.train.teacher = teacher.get();
    o.train.kd_weight = o.kd_weight;
    log_info("logit distillation from " + o.kd_teacher + ", weight " + std::to_string(o.kd_weight));
  }
  o.train.output_dir = o.output_dir;
  Trainer trainer(*model, tok, data.train, data.eval, o.train);
  if (o.resume) trainer.resume_from(o.output_dir);
  install_stop_handlers();
  const double eval_loss = trainer.run();
  if (std::isfinite(eval_loss)) {
    std::snprintf(buf, sizeof buf, "%.4f", eval_loss);
    log_info("step " + std::to_string(trainer.state().step) + ": held-out assistant-token loss " + buf +
             "; checkpoint " + o.output_dir);
  }
  return eval_loss;
}

}  // namespace ds
