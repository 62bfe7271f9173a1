#include "train/trainer.h"

#include <algorithm>
#include <csignal>
#include <cmath>
#include <cstdio>
#include <fstream>
#include <optional>

#include "ckpt/ckpt_dir.h"
#include "core/env.h"
#include "core/io.h"
#include "core/json.h"
#include "core/jsonl.h"
#include "core/log.h"
#include "core/progress.h"
#include "tokenizer/tokenizer_files.h"

namespace ds {

namespace {
volatile std::sig_atomic_t g_stop = 0;
void on_signal(int) { g_stop = 1; }

// MaxVio of one layer's load (V3 report): max_i load_i / mean(load) - 1.
double max_violation(const std::vector<int64_t>& load) {
  double total = 0, mx = 0;
  for (int64_t c : load) {
    total += double(c);
    mx = std::max(mx, double(c));
  }
  if (total == 0) return 0;
  return mx / (total / double(load.size())) - 1.0;
}

// Keeps the records of a JSONL file whose "step" is <= step (a resumed run rewrites what came after).
// A last line that lacks its newline and does not parse is a write torn by a kill: it belongs to a step after
// the checkpoint (records are written before the save of their step), so it is dropped, not an error.
void truncate_jsonl_after(const std::string& path, int64_t step) {
  if (path.empty() || path == "-" || !path_exists(path)) return;
  std::ifstream in(path);
  std::string line, kept;
  int64_t n = 0;
  while (std::getline(in, line)) {
    ++n;
    if (line.empty()) continue;
    JsonlRecord r;
    try {
      r = parse_object(line, path, n);
    } catch (const Error&) {
      if (in.eof()) break;  // unterminated last line: torn
      throw;
    }
    if (!r.has("step") || r.get_int("step") <= step) kept += line + "\n";
  }
  write_file_atomic(path, kept);
}
}  // namespace

void install_stop_handlers() {
  std::signal(SIGINT, on_signal);
  std::signal(SIGTERM, on_signal);
}
bool stop_requested() { return g_stop != 0; }

TrainerState read_trainer_state(const std::string& dir) {
  const std::string path = dir + "/trainer_state.json";
  if (!path_exists(path)) throw_bad_input("no trainer_state.json: not a resumable checkpoint", dir);
  JsonlRecord r = parse_object(read_file(path), path);
  TrainerState s;
  s.step = r.get_int("step");
  s.data_position = r.get_int("data_position");
  s.tokens_seen = r.get_int("tokens_seen");
  s.seed = uint64_t(r.get_int("seed"));
  return s;
}

Trainer::Trainer(Model& model, const Tokenizer& tok, const WindowSet& train, const WindowSet& eval,
                 const TrainerOptions& opt)
    : model_(model), tok_(tok), train_(train), eval_(eval), opt_(opt), adamw_(model, opt.optim),
      stream_(&train, opt.batch_size, opt.seed) {
  opt_.lr.total_steps = opt_.max_steps;
  state_.seed = opt_.seed;
  // bf16 logits in mixed precision (ForwardOptions::compute_dtype_logits; DS_BF16_LOGITS=0 keeps them f32); f32 for
  // distillation, whose loss reads the teacher's f32 logits beside the student's
  opt_.forward.compute_dtype_logits = !opt_.teacher && env_switch("DS_BF16_LOGITS");
  // DS_FUSED_LOSS=1 (an A/B knob): the main head's loss and gradient in one pass (ForwardOptions::loss_grad)
  if (env_opt_in("DS_FUSED_LOSS")) opt_.forward.loss_grad = true;
}

void Trainer::resume_from(const std::string& dir) {
  state_ = read_trainer_state(dir);
  if (state_.seed != opt_.seed)
    log_warn("resuming with --seed " + std::to_string(opt_.seed) + " but the checkpoint was trained with " +
             std::to_string(state_.seed) + ": using the checkpoint's seed for the data order");
  adamw_.load(dir + "/optimizer.safetensors");
  stream_ = BatchStream(&train_, opt_.batch_size, state_.seed);
  stream_.seek(state_.data_position);
  truncate_jsonl_after(opt_.metrics_path, state_.step);
  truncate_jsonl_after(opt_.expert_stats_path, state_.step);
  log_info("resumed at step " + std::to_string(state_.step) + " (data position " +
           std::to_string(state_.data_position) + ")");
}

void Trainer::write_metrics(const std::string& json_line) {
  if (opt_.metrics_path.empty()) return;
  std::FILE* f = opt_.metrics_path == "-" ? stdout : std::fopen(opt_.metrics_path.c_str(), "a");
  if (!f) throw_runtime("cannot open metrics file " + opt_.metrics_path);
  std::fputs((json_line + "\n").c_str(), f);
  std::fflush(f);
  if (f != stdout) std::fclose(f);
}

void Trainer::write_expert_stats(int64_t step, const std::vector<std::vector<int64_t>>& load) {
  if (opt_.expert_stats_path.empty()) return;
  std::FILE* f = std::fopen(opt_.expert_stats_path.c_str(), "a");
  if (!f) throw_runtime("cannot open expert stats file " + opt_.expert_stats_path);
  const auto& ids = model_.moe_layer_ids();
  for (size_t i = 0; i < load.size(); ++i) {
    JsonWriter w;
    w.begin_object().kv("step", step).kv("layer", ids[i]).key("counts").begin_array();
    for (int64_t c : load[i]) w.value(c);
    w.end_array().end_object();
    std::fputs((w.str() + "\n").c_str(), f);
  }
  std::fclose(f);
}

double Trainer::evaluate() {
  if (eval_.size() == 0) return std::nan("");
  double total = 0;
  int64_t n = 0;
  ForwardOptions fo = opt_.forward;
  fo.mtp = false;
  fo.balance_alpha = 0;
  fo.loss_grad = false;  // no backward follows
  for (const Batch& b : fixed_batches(eval_, opt_.batch_size, opt_.eval_batches)) {
    LossInfo li = model_.forward(b, fo);
    total += li.main_loss * double(li.n_targets);
    n += li.n_targets;
  }
  model_.reset_expert_load();  // evaluation traffic is not training load
  return n ? total / double(n) : std::nan("");
}

void Trainer::save_checkpoint() {
  if (opt_.output_dir.empty()) return;
  adamw_.finish();  // the parameters as the last update left them
  CheckpointDirWriter dir(opt_.output_dir);
  save_model_files(dir.tmp_dir(), model_, opt_.save);
  if (tok_.loaded()) write_tokenizer_files(dir.tmp_dir(), tok_);
  adamw_.save(dir.tmp_dir() + "/optimizer.safetensors");
  JsonWriter w(true);
  w.begin_object()
      .kv("step", state_.step)
      .kv("data_position", state_.data_position)
      .kv("epoch", stream_.epoch())
      .kv("tokens_seen", state_.tokens_seen)
      .kv("seed", state_.seed)
      .kv("batch_size", opt_.batch_size)
      .kv("grad_accum", opt_.grad_accum)
      .kv("max_steps", opt_.max_steps)
      .end_object();
  write_text_file(dir.tmp_dir(), "trainer_state.json", w.str() + "\n");
  dir.commit();
  log_debug("saved checkpoint at step " + std::to_string(state_.step) + " to " + opt_.output_dir);
}

// On CUDA the step runs on the trainer's stream (blocking, high priority) and the optimizer's update overlaps the
// next step's forward on a low-priority stream of its own (AdamW::set_overlap; lib/README.md). DS_OPTIM_OVERLAP=0 /
// DS_TRAIN_STREAM=0 turn them off (the A/B switches of bench/README.md). Restored when the run ends or throws.
class Trainer::StepStreams {
 public:
  StepStreams(Model& model, AdamW& adamw) : model_(model), adamw_(adamw), saved_(model.context().cuda_stream) {
    if (!model_.context().device.is_cuda()) return;
    const Device d = model_.context().device;
    if (env_switch("DS_TRAIN_STREAM")) model_.set_cuda_stream(gpu::process_stream(d, gpu::kTrainStream));
    adamw_.set_overlap(env_switch("DS_OPTIM_OVERLAP"));
  }
  ~StepStreams() {
    adamw_.set_overlap(false);  // waits for the last update
    model_.set_cuda_stream(saved_);
  }

 private:
  Model& model_;
  AdamW& adamw_;
  void* saved_;
};

// A step whose work is enqueued and whose line is not yet written. The host reads its losses, gradient norm, skip
// decision and expert counts while the next step runs (Model::begin_loss_read, AdamW::apply_on_device,
// Model::begin_expert_load_read): between two steps it waits for nothing, so the GPU goes from one step's backward
// into the next step's forward without the host's reads and launches in between. (On the H200 that window went
// 0.68 -> 0.31 ms and the step did not shorten: the update's stages pace the forward; bench/gpu/SESSIONS.md, 28th.)
struct Trainer::PendingStep {
  int64_t step = 0, tokens = 0, tokens_seen = 0;
  double lr = 0, t0 = 0;  // t0: when the host began the step
  LossInfo host_sum;      // every micro-batch's losses but the last one's, each / grad_accum (read at once)
  LossInfo last;          // the last micro-batch's forward: its balance loss; the rest is read in report()
  double kd_last = 0, kd_loss = 0;  // distillation: the last micro-batch's KL, and the mean over the micro-batches
};

void Trainer::report(const PendingStep& p, Progress& progress) {
  const ModelConfig& cfg = model_.config();
  LossInfo li = p.last;
  model_.finish_loss_read(li);
  if (opt_.teacher) li.loss += opt_.kd_weight * p.kd_last;
  LossInfo sum = p.host_sum;  // the micro-batches in order, as they were summed before the read moved here
  sum.loss += li.loss / double(opt_.grad_accum);
  sum.main_loss += li.main_loss / double(opt_.grad_accum);
  sum.mtp_loss += li.mtp_loss / double(opt_.grad_accum);
  sum.balance_loss += li.balance_loss / double(opt_.grad_accum);
  const StepVerdict v = adamw_.read_verdict();
  const bool skip = v.skip != 0.0;
  const double gnorm = v.norm;
  // An overflow (NaN/inf loss or gradient norm, mostly a bf16 run's) skipped the update and the router-bias step
  // (on the device); the step and its data still count. Too many in a row mean the run diverged: stop with an error.
  if (skip) {
    ++skipped_in_a_row_;
    ++skipped_total_;
    log_warn("step " + std::to_string(p.step) + ": loss " + std::to_string(sum.loss) + ", gradient norm " +
             std::to_string(gnorm) + " not finite: update skipped (" + std::to_string(skipped_in_a_row_) +
             " in a row)");
    if (skipped_in_a_row_ > opt_.max_skipped_steps)
      throw_runtime("loss or gradient norm not finite for " + std::to_string(skipped_in_a_row_) +
                    " steps in a row (up to step " + std::to_string(p.step) + "): the run diverged");
  } else {
    skipped_in_a_row_ = 0;
  }
  double vio = 0;
  const auto load = model_.expert_load();  // the copy begun with the step
  for (auto& l : load) vio += max_violation(l) / double(load.size());
  write_expert_stats(p.step, load);
  const double now = now_seconds(), dt = now - std::max(p.t0, last_report_);
  last_report_ = now;

  JsonWriter w;
  w.begin_object().kv("step", p.step).kv("loss", sum.loss).kv("main_loss", sum.main_loss);
  if (cfg.num_nextn_predict_layers > 0 && opt_.forward.mtp) w.kv("mtp_loss", sum.mtp_loss);
  if (!load.empty()) w.kv("balance_max_vio", vio);
  if (opt_.forward.balance_alpha > 0) w.kv("balance_loss", sum.balance_loss);
  if (opt_.teacher) w.kv("kd_loss", p.kd_loss);
  w.kv("lr", p.lr).kv("grad_norm", gnorm).kv("tokens", p.tokens_seen).kv("tokens_per_s", double(p.tokens) / dt);
  if (skip) w.kv("skipped", true);
  w.end_object();
  write_metrics(w.str());
  if (opt_.progress) {
    char buf[160];
    std::snprintf(buf, sizeof buf, "loss %.4f | lr %.2e | %.0f tok/s", sum.loss, p.lr, double(p.tokens) / dt);
    progress.update(p.step, buf);
  }
}

double Trainer::run() {
  StepStreams streams(model_, adamw_);
  Progress progress("train", opt_.max_steps, 10.0);
  double eval_loss = std::nan("");
  bool saved_last = false;
  if (opt_.eval_every > 0 && state_.step == 0) {  // the starting point of the held-out curve
    JsonWriter e;
    e.begin_object().kv("step", int64_t(0)).kv("eval_loss", evaluate()).end_object();
    write_metrics(e.str());
  }
  const int64_t last = opt_.stop_at_step > 0 ? std::min(opt_.stop_at_step, opt_.max_steps) : opt_.max_steps;
  std::optional<PendingStep> pending;  // the step before this one, reported once this one is enqueued
  while (state_.step < last && !stop_requested()) {
    PendingStep p;
    p.t0 = now_seconds();
    model_.zero_grads();
    model_.reset_expert_load();
    ForwardOptions fo = opt_.forward;
    fo.defer_loss = true;  // the losses are read after backward is enqueued: no host wait between the two
    for (int64_t m = 0; m < opt_.grad_accum; ++m) {
      Batch b = stream_.next();
      LossInfo li = model_.forward(b, fo);
      double kd = 0;
      if (opt_.teacher) {
        ForwardOptions tf;
        tf.mtp = false;  // only the main head's distribution is distilled
        opt_.teacher->forward(b, tf);
        kd = model_.distill_loss(opt_.teacher->logits());
        model_.backward_distill(opt_.teacher->logits(), opt_.kd_weight);
        p.kd_loss += kd / double(opt_.grad_accum);
      } else {
        model_.backward();
      }
      p.tokens += b.B * b.T;
      const bool last_micro = m + 1 == opt_.grad_accum;
      // The gradient norm's sums first (they run beside backward's tail, stage by stage with the optimizer's
      // overlap); then the step before this one is reported, before anything here reads a loss over its copies.
      if (last_micro) adamw_.begin_grad_norm();
      if (m == 0 && pending) {
        report(*pending, progress);
        pending.reset();
      }
      if (!last_micro) {
        model_.read_loss(li);
        if (opt_.teacher) li.loss += opt_.kd_weight * kd;
        p.host_sum.loss += li.loss / double(opt_.grad_accum);
        p.host_sum.main_loss += li.main_loss / double(opt_.grad_accum);
        p.host_sum.mtp_loss += li.mtp_loss / double(opt_.grad_accum);
        p.host_sum.balance_loss += li.balance_loss / double(opt_.grad_accum);
        continue;
      }
      model_.begin_loss_read();  // the last micro-batch's loss sums, read a step late
      p.last = li;
      p.kd_last = kd;
    }
    p.step = ++state_.step;
    p.lr = lr_at(opt_.lr, state_.step);
    // What the host already knows must be finite (the other micro-batches' losses, the balance and KL terms); the
    // device checks the loss sums and the gradient norm, clips, and skips the update and the router-bias step.
    const bool host_bad = !std::isfinite(p.host_sum.loss) || !std::isfinite(p.last.balance_loss) ||
                          !std::isfinite(p.kd_last);
    adamw_.apply_on_device(state_.step, p.lr, 1.0 / double(opt_.grad_accum), model_.loss_sums(), host_bad);
    model_.begin_expert_load_read();
    model_.update_router_bias(opt_.bias_update_gamma, adamw_.verdict());
    state_.data_position = stream_.position();
    state_.tokens_seen += p.tokens;
    p.tokens_seen = state_.tokens_seen;
    pending = p;

    const bool eval_now = opt_.eval_every > 0 && state_.step % opt_.eval_every == 0 && state_.step < opt_.max_steps;
    const bool save_now = opt_.save_every > 0 && state_.step % opt_.save_every == 0;
    if (eval_now || save_now || state_.step >= last || stop_requested()) {  // its line before anything else's
      report(*pending, progress);
      pending.reset();
    }
    saved_last = false;
    if (eval_now) {
      eval_loss = evaluate();
      JsonWriter e;
      e.begin_object().kv("step", state_.step).kv("eval_loss", eval_loss).end_object();
      write_metrics(e.str());
    }
    if (save_now) {
      save_checkpoint();
      saved_last = true;
    }
  }
  if (pending) report(*pending, progress);
  progress.finish();
  if (stop_requested()) log_warn("stopped by a signal at step " + std::to_string(state_.step) + "; saving");
  eval_loss = evaluate();
  if (std::isfinite(eval_loss)) {
    JsonWriter e;
    e.begin_object().kv("step", state_.step).kv("eval_loss", eval_loss).end_object();
    write_metrics(e.str());
  }
  if (!saved_last) save_checkpoint();
  return eval_loss;
}

}  // namespace ds
