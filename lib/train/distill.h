#pragma once
// ds-distill's work, callable from tests: distillation as in DeepSeek-R1 §2.4 / RL.md §4 — a teacher checkpoint
// samples traces for prompts (the engine, as ds-rollout), the traces are scored and filtered by the ds-reward and
// ds-rejsample rules (library calls, same options and results), and the student is fine-tuned on the kept ones
// (the ds-sft path, loss on assistant tokens).
//
// Stages and files (TRACES is --traces, default OUT.traces.jsonl; STEM is TRACES without ".jsonl"):
//   1. generate  prompts -> TRACES: ds-rollout records of the teacher. Written as TRACES.part and renamed when
//                every prompt is done, so an existing TRACES is complete: it is reused and the teacher does not
//                run (a finished stage is skipped; delete the file to sample again; a hand-made rollouts file
//                given as --traces is filtered the same way). A record of a {"messages"} prompt gets that
//                conversation as its "prompt", which ds-rejsample turns into the kept record's context.
//   2. score     TRACES -> STEM.scored.jsonl: each trace with ds-reward's fields (reward, rewards, ...).
//   3. filter    STEM.scored.jsonl -> STEM.kept.jsonl (ds-rejsample's chat records) + STEM.report.json (counts).
//   4. fine-tune STEM.kept.jsonl -> OUT: run_sft from the student (a checkpoint, or a fresh model built from a
//                config.json / preset with the teacher's tokenizer); resume/overwrite as ds-sft.
// The student must share the teacher's tokenizer: same vocabulary size and the same piece at every id
// (bad-input error otherwise). The student may have another config (e.g. dense, smaller).
#include <cstdint>
#include <string>
#include <vector>

#include "infer/rollout.h"
#include "rl/reject.h"
#include "rl/rejsample_stream.h"
#include "rl/reward.h"
#include "tensor/context.h"
#include "train/sft.h"

namespace ds {

struct DistillOptions {
  std::string teacher;         // teacher checkpoint (generates the traces; its tokenizer is the reference)
  std::string student;         // student checkpoint (initial weights) ...
  std::string student_config;  // ... or a fresh student from a config.json ...
  std::string student_preset;  // ... or from a preset (vocab sized to the teacher's tokenizer)
  std::string prompts;         // prompts JSONL (ds-rollout's input); not read when the traces file exists
  std::string output_dir;      // the student's checkpoint directory
  std::string traces;          // generated traces (default output_dir + ".traces.jsonl")

  // generation (ds-rollout)
  int64_t samples = 4;
  SamplingParams sp;
  PromptTemplate tmpl = PromptTemplate::chat;
  bool prefill_think = false;
  std::vector<std::string> stop;
  bool no_default_stop = false;
  EngineOptions engine;

  // scoring and filtering (ds-reward, ds-rejsample)
  rl::RewardConfig reward;
  std::string answer_field = "answer";
  rl::RejectOptions reject;

  // fine-tuning (ds-sft): input, output_dir and init_from are set by run_distill
  SftOptions sft;
  bool progress = true;
};

struct DistillSummary {
  bool generated = false;         // false: an existing traces file was reused
  int64_t traces = 0, kept = 0;
  rl::RejsampleReport report;
  double eval_loss = 0;
};

// The file names derived from the options (see the top of this file).
struct DistillPaths {
  std::string traces, scored, kept, report;
};
DistillPaths distill_paths(const DistillOptions& o);

// Bad-input error naming `student_origin` unless both tokenizers have the same pieces at the same ids.
void check_same_tokenizer(const Tokenizer& teacher, const Tokenizer& student, const std::string& student_origin);

DistillSummary run_distill(const Context& ctx, DistillOptions o);

}  // namespace ds
