#include "train/distill.h"

#include <filesystem>
#include <system_error>

#include "ckpt/ckpt_dir.h"
#include "core/io.h"
#include "core/json.h"
#include "core/jsonl.h"
#include "core/log.h"
#include "model/config.h"
#include "model/model_io.h"
#include "rl/reward_stream.h"
#include "tokenizer/tokenizer_files.h"
#include "train/pretrain.h"

namespace ds {

namespace {

namespace fs = std::filesystem;

void remove_quietly(const std::string& path) {
  std::error_code ec;
  fs::remove_all(path, ec);
}

// Removes a path when the scope ends unless released.
struct RemoveGuard {
  std::string path;
  ~RemoveGuard() {
    if (!path.empty()) remove_quietly(path);
  }
};

std::string strip_suffix(const std::string& s, const std::string& suffix) {
  if (s.size() > suffix.size() && s.compare(s.size() - suffix.size(), suffix.size(), suffix) == 0)
    return s.substr(0, s.size() - suffix.size());
  return s;
}

// A fresh student (config.json or preset, the teacher's tokenizer) saved as a checkpoint directory.
void write_fresh_student(const Context& ctx, const DistillOptions& o, const Tokenizer& tok, const std::string& dir) {
  const ModelConfig c = config_for_tokenizer(o.student_config, o.student_preset, tok);
  Model model(c, ctx, DType::f32);
  model.init_random(o.sft.train.seed);
  CheckpointDirWriter w(dir);
  save_model_files(w.tmp_dir(), model);
  write_tokenizer_files(w.tmp_dir(), tok);
  w.commit();
}

// Copies the teacher's rollouts to `out`, giving a record of a {"messages"} prompt (which ds-rollout passes
// through, without a "prompt") its conversation as "prompt", the message list ds-rejsample turns into the
// user side of the kept chat record.
void finish_traces(const std::string& in, const std::string& out) {
  JsonlReader reader(in);
  Writer w(out);
  while (const JsonlRecord* r = reader.next()) {
    JsonWriter j;
    j.begin_object();
    for (const std::string& k : r->keys()) {
      j.key(k).raw(r->raw(k));
      if (k == "sample" && !r->has("prompt") && r->has("messages")) j.key("prompt").raw(r->raw("messages"));
    }
    j.end_object();
    w.write(j.str() + "\n");
  }
  w.commit();
}

}  // namespace

DistillPaths distill_paths(const DistillOptions& o) {
  DistillPaths p;
  p.traces = o.traces.empty() ? o.output_dir + ".traces.jsonl" : o.traces;
  std::string stem = strip_suffix(strip_suffix(p.traces, ".zst"), ".jsonl");
  p.scored = stem + ".scored.jsonl";
  p.kept = stem + ".kept.jsonl";
  p.report = stem + ".report.json";
  return p;
}

void check_same_tokenizer(const Tokenizer& teacher, const Tokenizer& student, const std::string& student_origin) {
  if (teacher.vocab_size() != student.vocab_size())
    throw_bad_input("the student's tokenizer has " + std::to_string(student.vocab_size()) +
                        " pieces, the teacher's " + std::to_string(teacher.vocab_size()) +
                        ": the student must share the teacher's tokenizer",
                    student_origin);
  for (int32_t id = 0; id < teacher.vocab_size(); ++id)
    if (teacher.piece(id) != student.piece(id))
      throw_bad_input("the student's tokenizer differs from the teacher's at id " + std::to_string(id) + " ('" +
                          student.piece(id) + "' vs '" + teacher.piece(id) +
                          "'): the student must share the teacher's tokenizer",
                      student_origin);
}

DistillSummary run_distill(const Context& ctx, DistillOptions o) {
  // Every usage check before the teacher runs (generation is the expensive stage).
  if (o.output_dir.empty()) throw_usage("-o/--output DIR is required");
  if (o.teacher.empty()) throw_usage("--teacher CKPT is required");
  if (o.samples < 1) throw_usage("--samples-per-prompt must be >= 1");
  if (o.sft.epochs <= 0) throw_usage("--epochs must be > 0");
  const int n_student = int(!o.student.empty()) + int(!o.student_config.empty()) + int(!o.student_preset.empty());
  if (n_student > 1) throw_usage("give one of --student, --student-config and --student-preset");
  if (n_student == 0 && !o.sft.resume)
    throw_usage("the student is required: --student CKPT, --student-config FILE or --student-preset NAME");
  if (!o.student_preset.empty()) config_preset(o.student_preset);  // usage error for an unknown name
  recover_checkpoint_dir(o.output_dir);
  const bool have_ckpt = path_exists(o.output_dir + "/trainer_state.json");
  if (o.sft.resume && !have_ckpt) throw_usage("--resume: no resumable checkpoint in " + o.output_dir);
  if (!o.sft.resume && have_ckpt && !o.sft.overwrite)
    throw_usage(o.output_dir + " holds a checkpoint: pass --resume to continue it or --overwrite to replace it");
  const DistillPaths paths = distill_paths(o);
  const bool have_traces = path_exists(paths.traces);
  if (!have_traces && o.prompts.empty())
    throw_usage("--prompts FILE is required (the traces file " + paths.traces + " does not exist yet)");

  // The tokenizers: the student must share the teacher's.
  if (!path_exists(o.teacher + "/config.json"))
    throw_bad_input("--teacher: not a checkpoint directory (no config.json)", o.teacher);
  Tokenizer tok = Tokenizer::load(o.teacher);
  const std::string student_src = o.sft.resume ? o.output_dir : o.student;
  if (!student_src.empty()) {
    if (!path_exists(student_src + "/config.json"))
      throw_bad_input(std::string(o.sft.resume ? "--resume" : "--student") +
                          ": not a checkpoint directory (no config.json)",
                      student_src);
    check_same_tokenizer(tok, Tokenizer::load(student_src), student_src);
  }

  DistillSummary sum;
  // 1. generate
  if (have_traces) {
    log_info("traces: reusing " + paths.traces + " (delete it to sample the teacher again)");
  } else {
    if (o.prompts != "-" && !path_exists(o.prompts)) throw_bad_input("--prompts: no such file", o.prompts);
    RolloutOptions ro;
    ro.ckpt = o.teacher;
    ro.input = o.prompts;
    ro.output = paths.traces + ".part";
    ro.samples = o.samples;
    ro.sp = o.sp;
    ro.tmpl = o.tmpl;
    ro.prefill_think = o.prefill_think;
    ro.stop = o.stop;
    ro.no_default_stop = o.no_default_stop;
    ro.engine = o.engine;
    ro.progress = o.progress;
    RemoveGuard part{ro.output};  // removed in every case: a failed generation leaves no traces file
    RolloutSummary rs = run_rollout(ctx, ro);
    finish_traces(ro.output, paths.traces);  // then the guard removes the .part file
    sum.generated = true;
    log_info("traces: the teacher wrote " + std::to_string(rs.samples) + " samples for " +
             std::to_string(rs.prompts) + " prompts to " + paths.traces);
  }

  // 2. score, 3. filter (the completions as written: a prefilled "<think>\n" is already part of them)
  rl::RewardStreamOptions rw;
  rw.input = paths.traces;
  rw.output = paths.scored;
  rw.cfg = o.reward;
  rw.answer_field = o.answer_field;
  const rl::RewardStreamStats rst = rl::reward_stream(rw);
  sum.traces = rst.read;
  rl::RejsampleOptions rj;
  rj.input = paths.scored;
  rj.output = paths.kept;
  rj.reject = o.reject;
  rj.report_json = paths.report;
  sum.report = rl::rejsample_stream(rj);
  sum.kept = sum.report.kept;
  log_info("kept traces: " + paths.kept + " (counts: " + paths.report + ")");
  if (sum.kept == 0)
    throw_bad_input("no trace was kept (" + sum.report.to_text() + "): nothing to fine-tune the student on",
                    paths.traces);

  // 4. fine-tune the student
  RemoveGuard fresh;
  o.sft.input = paths.kept;
  if (o.sft.kd_weight > 0) o.sft.kd_teacher = o.teacher;  // logit distillation from the same teacher
  o.sft.output_dir = o.output_dir;
  o.sft.data.render.prefill_think = o.prefill_think;
  if (!o.sft.resume) {
    if (!o.student.empty()) {
      o.sft.init_from = o.student;
    } else {
      fresh.path = o.output_dir + ".student-init";
      remove_quietly(fresh.path);
      write_fresh_student(ctx, o, tok, fresh.path);
      o.sft.init_from = fresh.path;
    }
  }
  sum.eval_loss = run_sft(ctx, o.sft);
  return sum;
}

}  // namespace ds
