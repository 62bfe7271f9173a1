// ds-distill: a teacher checkpoint samples traces for prompts, the traces are scored and filtered by the
// ds-reward / ds-rejsample rules, and a student (same tokenizer, any config) is fine-tuned on the kept ones by
// the ds-sft path. The work is lib/train/distill. See man/ds-distill.1.
#include <cstdio>
#include <string>

#include "cmd/common/program.h"
#include "cmd/common/train_options.h"
#include "core/error.h"
#include "core/log.h"
#include "rl/language.h"
#include "train/distill.h"

int main(int argc, char** argv) {
  return ds::run_program("ds-distill", [&] {
    CLI::App app{"Distillation: a teacher checkpoint generates traces for prompts, the correct and readable ones "
                 "are kept (ds-reward / ds-rejsample rules) and a student sharing the teacher's tokenizer is "
                 "fine-tuned on them (ds-sft, loss on assistant tokens)."};
    app.set_help_flag("-h,--help", "Print this help and exit");
    ds::CommonOptions common;
    ds::add_common_options(app, common, ds::kOptDevice | ds::kOptThreads | ds::kOptSeed);
    ds::DistillOptions o;
    ds::SftOptions& s = o.sft;
    ds::rl::RewardConfig& c = o.reward;
    ds::rl::RejectOptions& r = o.reject;

    // models and files
    app.add_option("--teacher", o.teacher, "Teacher checkpoint: generates the traces; its tokenizer is the reference");
    app.add_option("--student", o.student, "Student checkpoint (initial weights; must share the teacher's tokenizer)");
    app.add_option("--student-config", o.student_config,
                   "A fresh student from this config.json (with the teacher's tokenizer)");
    app.add_option("--student-preset", o.student_preset,
                   "A fresh student from a preset (tiny, small; vocab sized to the teacher's tokenizer)");
    app.add_option("--prompts", o.prompts, "Prompts JSONL ({\"prompt\"} or {\"messages\"}, plus \"answer\", \"task\", "
                                           "...; .zst ok; - = stdin)");
    app.add_option("-o,--output", o.output_dir, "Student checkpoint directory (replaced atomically at every save)");
    app.add_option("--traces", o.traces,
                   "Generated traces JSONL (default OUT.traces.jsonl); reused when it exists; the scored, kept "
                   "traces and the filter report go next to it (STEM.scored.jsonl, STEM.kept.jsonl, "
                   "STEM.report.json)");
    app.add_flag("--resume", s.resume, "Continue the fine-tuning saved in --output (weights, optimizer, data position)");
    app.add_flag("--overwrite", s.overwrite, "Replace a checkpoint already in --output");

    // generation
    std::string tmpl = "chat";
    app.add_option("-n,--samples-per-prompt", o.samples, "Teacher samples per prompt")->capture_default_str();
    app.add_option("--temperature", o.sp.temperature, "Sampling temperature (0 = greedy)")->capture_default_str();
    app.add_option("--top-p", o.sp.top_p, "Nucleus sampling mass")->capture_default_str();
    app.add_option("--top-k", o.sp.top_k, "Keep the k most likely tokens (0 = off)")->capture_default_str();
    app.add_option("--max-new-tokens", o.sp.max_new_tokens, "Tokens generated per sample at most")
        ->capture_default_str();
    app.add_option("--template", tmpl, "Prompt template: chat (DeepSeek-R1 chat), r1-zero or raw")
        ->capture_default_str();
    app.add_flag("--prefill-think", o.prefill_think,
                 "Start every answer with \"<think>\\n\" (kept in the trace; not a target of the student)");
    app.add_option("--stop", o.stop, "Stop string (repeatable); r1-zero also stops at </answer>");
    app.add_flag("--no-default-stop", o.no_default_stop, "Do not add r1-zero's </answer> stop string");
    app.add_option("--max-batch", o.engine.max_batch, "Sequences decoded together")->capture_default_str();
    app.add_option("--max-context", o.engine.max_context, "Context limit in tokens (0 = the teacher's)")
        ->capture_default_str();

    // scoring (ds-reward)
    std::string style = "think-answer", language, extract = "answer_tag,boxed,answer_line";
    app.add_option("--accuracy-weight", c.accuracy_weight, "Weight of the accuracy / countdown reward")
        ->capture_default_str();
    app.add_option("--format-weight", c.format_weight, "Weight of the format reward (0 = off)")->capture_default_str();
    app.add_option("--format-style", style, "Format checked: think-answer or think")->capture_default_str();
    app.add_option("--language-weight", c.language_weight, "Weight of the language-consistency reward (0 = off)")
        ->capture_default_str();
    app.add_option("--language", language,
                   "Target language of the chain of thought (en, zh, ...): the language reward's target and the "
                   "mixed-language filter");
    app.add_option("--extract", extract, "Answer extraction rules (answer_tag, boxed, answer_line)")
        ->capture_default_str();
    app.add_option("--answer-field", o.answer_field, "Field of the prompt records holding the gold answer")
        ->capture_default_str();

    // filtering (ds-rejsample)
    double min_reward = 0;
    auto* min_opt = app.add_option("--min-reward", min_reward, "Drop traces whose total reward is below this");
    app.add_option("--max-per-prompt", r.max_per_prompt, "Keep at most N traces per prompt (0 = all)")
        ->check(CLI::NonNegativeNumber)
        ->capture_default_str();
    app.add_option("--max-mixed-share", r.max_mixed_share,
                   "With --language: drop when more than this share of chain-of-thought words is in another script")
        ->check(CLI::Range(0.0, 1.0))
        ->capture_default_str();
    app.add_option("--max-paragraph-chars", r.max_paragraph_chars, "Drop traces with a longer line (0 = off)")
        ->check(CLI::NonNegativeNumber)
        ->capture_default_str();
    app.add_flag("--drop-code-blocks", r.drop_code_blocks, "Drop traces containing a ``` code fence");
    app.add_option("--max-repetition", r.max_repetition, "Drop traces whose n-gram repetition ratio exceeds this")
        ->check(CLI::Range(0.0, 1.0))
        ->capture_default_str();
    bool keep_truncated = false, allow_missing_think = false, no_dedupe = false;
    app.add_flag("--keep-truncated", keep_truncated, "Keep traces with finish_reason \"length\"");
    app.add_flag("--allow-missing-think", allow_missing_think, "Do not require one well-formed <think> block");
    app.add_flag("--no-dedupe", no_dedupe, "Keep duplicate traces of the same prompt");

    // fine-tuning (ds-sft)
    bool no_packing = false;
    app.add_option("--seq-len", s.data.seq_len, "Tokens per training window")->capture_default_str();
    app.add_option("--eval-fraction", s.data.eval_fraction, "Share of kept traces held out for evaluation")
        ->capture_default_str();
    app.add_flag("--no-packing", no_packing, "One trace per window, padded (default: packed)");
    app.add_option("--epochs", s.epochs, "Passes over the kept traces; sets the steps unless --max-steps")
        ->capture_default_str();
    app.add_option("--kd-weight", s.kd_weight,
                   "Logit distillation (beyond the paper): add this weight times KL(teacher || student) on the "
                   "trace tokens to the SFT loss; the teacher runs on every batch (0 = off, SFT on traces only)")
        ->capture_default_str();
    ds::TrainerCli tcli{&s.train};
    ds::add_trainer_options(app, tcli, "Optimizer steps (0 = from --epochs)",
                            "lambda, weight of the MTP loss (when the student has MTP modules)");
    if (int rc = ds::parse_cli(app, argc, argv); rc >= 0) return rc;
    ds::Context ctx = ds::apply_common_options(common);

    o.tmpl = ds::prompt_template_parse(tmpl);
    o.sp.seed = common.seed;
    if (o.sp.temperature < 0 || o.sp.top_p <= 0 || o.sp.top_p > 1 || o.sp.top_k < 0 || o.sp.max_new_tokens < 1)
      ds::throw_usage("need --temperature >= 0, 0 < --top-p <= 1, --top-k >= 0, --max-new-tokens >= 1");
    if (style != "think-answer" && style != "think") ds::throw_usage("--format-style: think-answer or think");
    c.format_style = style == "think" ? ds::rl::FormatStyle::think : ds::rl::FormatStyle::think_answer;
    if (!ds::rl::parse_extract_rules(extract, &c.extract))
      ds::throw_usage("--extract " + extract + ": use answer_tag, boxed, answer_line");
    if (!language.empty()) {
      if (!ds::rl::parse_language(language, &c.language)) ds::throw_usage("--language " + language + ": unknown code");
      r.language = c.language;
    } else {
      ds::rl::parse_language("en", &c.language);  // the language reward's default target, as ds-reward
    }
    if (*min_opt) r.min_reward = min_reward;
    r.drop_truncated = !keep_truncated;
    r.require_think = !allow_missing_think;
    r.dedupe = !no_dedupe;
    s.data.packing = !no_packing;
    ds::finish_trainer_options(tcli, common.seed, 0);

    const ds::DistillSummary sum = ds::run_distill(ctx, o);
    char buf[200];
    std::snprintf(buf, sizeof buf, "distilled: %lld traces%s, %lld kept; student %s", static_cast<long long>(sum.traces),
                  sum.generated ? " generated" : " reused", static_cast<long long>(sum.kept), o.output_dir.c_str());
    ds::log_info(buf);
    return 0;
  });
}
