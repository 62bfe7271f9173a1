#include "train/pretrain.h"

#include <cmath>

#include "ckpt/ckpt_dir.h"
#include "core/io.h"
#include "core/json.h"
#include "core/jsonl.h"
#include "core/log.h"
#include "model/model_io.h"

namespace ds {

namespace {

std::string fmt_count(int64_t n) {
  char buf[32];
  if (n >= 1000000) std::snprintf(buf, sizeof buf, "%.2fM", double(n) / 1e6);
  else if (n >= 1000) std::snprintf(buf, sizeof buf, "%.1fk", double(n) / 1e3);
  else std::snprintf(buf, sizeof buf, "%lld", static_cast<long long>(n));
  return buf;
}

// A fresh model's config: a preset (vocab sized to the tokenizer) or a config.json.
ModelConfig fresh_config(const PretrainOptions& o, const Tokenizer& tok) {
  if (!o.preset.empty() && !o.config_path.empty()) throw_usage("give either --preset or --config, not both");
  ModelConfig c = config_for_tokenizer(o.config_path, o.preset.empty() ? "tiny" : o.preset, tok);
  if (o.corpus.seq_len > c.max_position_embeddings)
    throw_usage("--seq-len " + std::to_string(o.corpus.seq_len) + " exceeds max_position_embeddings " +
                std::to_string(c.max_position_embeddings));
  return c;
}

}  // namespace

ModelConfig config_for_tokenizer(const std::string& config_path, const std::string& preset, const Tokenizer& tok) {
  ModelConfig c;
  if (config_path.empty()) {
    c = config_preset(preset);
  } else {
    c = config_load(config_path);
    if (c.vocab_size < tok.vocab_size())
      throw_bad_input("vocab_size " + std::to_string(c.vocab_size) + " is smaller than the tokenizer's " +
                          std::to_string(tok.vocab_size()),
                      config_path);
    // A larger vocab_size (padding, or a config written for another tokenizer) would leave rows the tokenizer
    // cannot decode, yet sampling could still draw them.
    if (c.vocab_size > tok.vocab_size())
      log_info("vocab_size " + std::to_string(c.vocab_size) + " of " + config_path + " fitted to the tokenizer's " +
               std::to_string(tok.vocab_size()));
  }
  c.vocab_size = tok.vocab_size();
  c.bos_token_id = tok.bos_id();
  c.eos_token_id = tok.eos_id();
  return c;
}

double run_pretrain(const Context& ctx, PretrainOptions o) {
  if (o.output_dir.empty()) throw_usage("-o/--output DIR is required");
  // A run killed between the two renames of a checkpoint commit leaves only DIR.old-PID (+ DIR.tmp-PID):
  // put the checkpoint back before deciding whether DIR holds one (--resume, or refuse without --overwrite).
  recover_checkpoint_dir(o.output_dir);
  const bool have_ckpt = path_exists(o.output_dir + "/trainer_state.json");
  if (o.resume && !have_ckpt) throw_usage("--resume: no resumable checkpoint in " + o.output_dir);
  if (!o.resume && have_ckpt && !o.overwrite)
    throw_usage(o.output_dir + " holds a checkpoint: pass --resume to continue it or --overwrite to replace it");

  // tokenizer: the checkpoint's when resuming or initialising from one, else --tokenizer
  std::string tok_path = o.tokenizer;
  if (tok_path.empty()) tok_path = o.resume ? o.output_dir : o.init_from;
  if (tok_path.empty()) throw_usage("--tokenizer is required for a new model");
  Tokenizer tok = Tokenizer::load(tok_path);

  std::unique_ptr<Model> model;
  if (o.resume || !o.init_from.empty()) {
    if (o.resume && (!o.preset.empty() || !o.config_path.empty() || !o.init_from.empty()))
      log_warn("--resume uses the checkpoint's model; --preset/--config/--init-from are ignored");
    ModelLoadOptions lo;
    lo.dtype = o.train.model_dtype;
    model = load_model(o.resume ? o.output_dir : o.init_from, ctx, lo);
  } else {
    model = std::make_unique<Model>(fresh_config(o, tok), ctx, o.train.model_dtype);
    model->init_random(o.train.seed);
  }
  const ModelConfig& cfg = model->config();
  if (cfg.vocab_size < tok.vocab_size()) throw_bad_input("the model's vocabulary is smaller than the tokenizer's", tok_path);

  if (std::string hint = blas_kernel_hint(); !hint.empty()) log_info(hint);
  Corpus corpus = load_pretrain_corpus(o.input, tok, o.corpus);
  log_info("model: " + fmt_count(config_param_count(cfg)) + " parameters (" + std::to_string(cfg.num_hidden_layers) +
           " layers, " + std::to_string(cfg.n_routed_experts) + " routed experts, MTP depth " +
           std::to_string(cfg.num_nextn_predict_layers) + ")");
  log_info("corpus: " + fmt_count(corpus.n_docs) + " documents, " + fmt_count(corpus.n_tokens) + " tokens, " +
           std::to_string(corpus.train.size()) + " training / " + std::to_string(corpus.eval.size()) +
           " held-out windows of " + std::to_string(o.corpus.seq_len) + " tokens");

  o.train.output_dir = o.output_dir;
  Trainer trainer(*model, tok, corpus.train, corpus.eval, o.train);
  if (o.resume) trainer.resume_from(o.output_dir);
  install_stop_handlers();
  double eval_loss = trainer.run();
  if (std::isfinite(eval_loss)) {
    char buf[64];
    std::snprintf(buf, sizeof buf, "%.4f", eval_loss);
    log_info("step " + std::to_string(trainer.state().step) + ": held-out loss " + buf + "; checkpoint " +
             o.output_dir);
  }
  return eval_loss;
}

void dump_logits(const Context& ctx, const std::string& ckpt_dir, const std::string& input, const std::string& output) {
  std::unique_ptr<Model> model = load_model(ckpt_dir, ctx, ModelLoadOptions{});
  const int64_t V = model->config().vocab_size;
  JsonlReader reader(input);
  Writer out(output);
  while (const JsonlRecord* r = reader.next()) {
    std::vector<int64_t> ids = r->get_int_array("ids");
    if (ids.empty()) throw_bad_input("field 'ids' is empty", reader.path(), reader.line_number());
    for (int64_t id : ids)
      if (id < 0 || id >= V)
        throw_bad_input("token id " + std::to_string(id) + " outside the vocabulary", reader.path(),
                        reader.line_number());
    Batch b;
    b.B = 1;
    b.T = int64_t(ids.size());
    b.tokens.assign(ids.begin(), ids.end());
    b.tokens.push_back(0);  // a dummy next token: the loss is not used
    ForwardOptions fo;
    fo.mtp = false;
    model->forward(b, fo);
    std::vector<double> logits = to_host_f64(model->logits());
    JsonWriter w;
    w.begin_object().key("ids").begin_array();
    for (int64_t id : ids) w.value(id);
    w.end_array().key("logits").begin_array();
    for (int64_t t = 0; t < b.T; ++t) {
      w.begin_array();
      for (int64_t v = 0; v < V; ++v) w.value(float(logits[size_t(t * V + v)]));
      w.end_array();
    }
    w.end_array().end_object();
    out.write(w.str());
    out.write("\n");
  }
  out.commit();
}

}  // namespace ds
