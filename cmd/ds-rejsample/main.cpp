// ds-rejsample: rejection sampling of rewarded rollouts into chat JSONL for ds-sft (keep correct, readable,
// single-language chains of thought). See man/ds-rejsample.1.
#include <string>

#include "cmd/common/program.h"
#include "core/error.h"
#include "rl/language.h"
#include "rl/rejsample_stream.h"

int main(int argc, char** argv) {
  return ds::run_program("ds-rejsample", [&] {
    CLI::App app{"Rejection sampling: keep correct, readable, single-language samples of rewarded rollouts and "
                 "write them as chat JSONL ({\"messages\": [...]}) for ds-sft; report what was dropped and why."};
    ds::CommonOptions common;
    ds::add_common_options(app, common, 0);
    ds::rl::RejsampleOptions o;
    ds::rl::RejectOptions& r = o.reject;
    app.add_option("input,-i,--input", o.input, "Rewarded rollouts JSONL (from ds-reward); '-' = stdin")
        ->capture_default_str();
    app.add_option("-o,--output", o.output, "Chat JSONL output (.zst to compress); '-' = stdout")
        ->capture_default_str();
    double min_reward = 0;
    auto* min_opt = app.add_option("--min-reward", min_reward, "Drop samples whose total reward is below this");
    app.add_option("--max-per-prompt", r.max_per_prompt, "Keep at most N samples per prompt (0 = all)")
        ->check(CLI::NonNegativeNumber)
        ->capture_default_str();
    std::string language;
    app.add_option("--language", language, "Target language of the chain of thought; enables the mixed-language "
                                           "filter (en, zh, ja, ko, ru, ...)");
    app.add_option("--max-mixed-share", r.max_mixed_share,
                   "With --language: drop when more than this share of chain-of-thought words is in another script")
        ->check(CLI::Range(0.0, 1.0))
        ->capture_default_str();
    app.add_option("--max-paragraph-chars", r.max_paragraph_chars,
                   "Drop samples with a line longer than this many characters (0 = off)")
        ->check(CLI::NonNegativeNumber)
        ->capture_default_str();
    app.add_flag("--drop-code-blocks", r.drop_code_blocks, "Drop samples containing a ``` code fence");
    app.add_option("--max-repetition", r.max_repetition,
                   "Drop samples whose n-gram repetition ratio exceeds this (1 = off)")
        ->check(CLI::Range(0.0, 1.0))
        ->capture_default_str();
    app.add_option("--repetition-ngram", r.repetition_ngram, "n of the repetition n-grams")
        ->check(CLI::Range(1, 64))
        ->capture_default_str();
    bool keep_truncated = false, allow_missing_think = false, no_dedupe = false;
    app.add_flag("--keep-truncated", keep_truncated, "Keep samples with finish_reason \"length\"");
    app.add_flag("--allow-missing-think", allow_missing_think, "Do not require one well-formed <think> block");
    app.add_flag("--no-dedupe", no_dedupe, "Keep duplicate completions of the same prompt");
    app.add_flag("--prepend-think", o.prepend_think,
                 "The prompt template prefilled \"<think>\\n\": check \"<think>\\n\" + completion");
    app.add_flag("--skip-bad", o.skip_bad, "Skip bad records (count and report them) instead of stopping");
    app.add_option("--report-json", o.report_json, "Write the counts (kept, dropped per reason) as JSON to FILE");

    if (int rc = ds::parse_cli(app, argc, argv); rc >= 0) return rc;
    ds::apply_common_options(common);

    if (*min_opt) r.min_reward = min_reward;
    if (!language.empty()) {
      ds::rl::LanguageSpec spec;
      if (!ds::rl::parse_language(language, &spec)) ds::throw_usage("--language " + language + ": unknown code");
      r.language = spec;
    }
    r.drop_truncated = !keep_truncated;
    r.require_think = !allow_missing_think;
    r.dedupe = !no_dedupe;
    ds::rl::rejsample_stream(o);
    return 0;
  });
}
