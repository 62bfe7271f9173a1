// ds-reward: rule rewards for rollouts (accuracy or countdown, format, language consistency, length and
// repetition terms) with pass@k / maj@k summaries. See man/ds-reward.1.
#include <string>
#include <vector>

#include "cmd/common/program.h"
#include "core/error.h"
#include "core/log.h"
#include "rl/reward_stream.h"

int main(int argc, char** argv) {
  return ds::run_program("ds-reward", [&] {
    CLI::App app{"Score rollouts with rule rewards: accuracy (or the countdown verifier), format, language "
                 "consistency, length and repetition terms. Every input field passes through; \"reward\", "
                 "\"rewards\" and \"extracted_answer\" are added."};
    ds::CommonOptions common;
    ds::add_common_options(app, common, 0);
    ds::rl::RewardStreamOptions o;
    ds::rl::RewardConfig& c = o.cfg;
    app.add_option("input,-i,--input", o.input, "Rollouts JSONL (.jsonl.zst too); '-' = stdin")->capture_default_str();
    app.add_option("-o,--output", o.output, "Output JSONL (.zst to compress); '-' = stdout")->capture_default_str();
    app.add_option("--accuracy-weight", c.accuracy_weight, "Weight of the accuracy / countdown reward")
        ->capture_default_str();
    app.add_option("--format-weight", c.format_weight, "Weight of the format reward (0 = off)")->capture_default_str();
    std::string style = "think_answer";
    app.add_option("--format-style", style,
                   "think_answer: <think>..</think><answer>..</answer>; think: <think>..</think> then the answer")
        ->check(CLI::IsMember({"think_answer", "think"}))
        ->capture_default_str();
    app.add_option("--language-weight", c.language_weight, "Weight of the language-consistency reward (0 = off)")
        ->capture_default_str();
    std::string language = "en";
    app.add_option("--language", language, "Target language of the chain of thought (en, zh, ja, ko, ru, ...)")
        ->capture_default_str();
    std::string extract = "answer_tag,boxed,answer_line";
    app.add_option("--extract", extract, "Answer extraction rules to use (priority is fixed: answer_tag, boxed, "
                                         "answer_line)")
        ->capture_default_str();
    app.add_option("--answer-field", o.answer_field, "Field holding the gold answer")->capture_default_str();
    app.add_flag("--prepend-think", c.prepend_think,
                 "The prompt template prefilled \"<think>\\n\": score \"<think>\\n\" + completion");
    std::string length = "none";
    app.add_option("--length-penalty", length, "Length term: none, overlong (DAPO) or kimi (per group)")
        ->check(CLI::IsMember({"none", "overlong", "kimi"}))
        ->capture_default_str();
    app.add_option("--length-weight", c.length_weight, "Weight of the length term")->capture_default_str();
    app.add_option("--max-length", c.max_length, "overlong: L_max")->check(CLI::NonNegativeNumber);
    app.add_option("--overlong-buffer", c.overlong_buffer, "overlong: L_cache, the soft punishment zone")
        ->check(CLI::NonNegativeNumber);
    std::string unit = "auto";
    app.add_option("--length-unit", unit, "Lengths in tokens (completion_tokens), chars (code points) or auto")
        ->check(CLI::IsMember({"auto", "tokens", "chars"}))
        ->capture_default_str();
    app.add_option("--repetition-penalty", c.repetition_penalty,
                   "Maximum n-gram repetition penalty, <= 0 (0 = off; e.g. -1)")
        ->check(CLI::Range(-1e9, 0.0))
        ->capture_default_str();
    app.add_option("--repetition-ngram", c.repetition_ngram, "n of the repetition n-grams")
        ->check(CLI::Range(1, 64))
        ->capture_default_str();
    app.add_flag("--summary", o.summary, "Print per-task n, mean reward, pass@k, maj@k on stderr");
    app.add_option("--summary-json", o.summary_json, "Write the summary as JSON to FILE");
    app.add_option("--k", o.ks, "k values for pass@k / maj@k (clipped to the group size)")
        ->delimiter(',')
        ->check(CLI::Range(int64_t(1), int64_t(1) << 20))
        ->capture_default_str();
    app.add_flag("--skip-bad", o.skip_bad, "Skip bad records (count and report them) instead of stopping");

    if (int rc = ds::parse_cli(app, argc, argv); rc >= 0) return rc;
    ds::apply_common_options(common);

    if (!ds::rl::parse_language(language, &c.language)) ds::throw_usage("--language " + language + ": unknown code");
    if (!ds::rl::parse_extract_rules(extract, &c.extract))
      ds::throw_usage("--extract " + extract + ": use answer_tag, boxed, answer_line");
    c.format_style = style == "think" ? ds::rl::FormatStyle::think : ds::rl::FormatStyle::think_answer;
    c.length = length == "kimi"       ? ds::rl::LengthPenalty::kimi
               : length == "overlong" ? ds::rl::LengthPenalty::overlong
                                      : ds::rl::LengthPenalty::none;
    if (c.length == ds::rl::LengthPenalty::overlong && (c.max_length <= 0 || c.overlong_buffer > c.max_length))
      ds::throw_usage("--length-penalty overlong needs --max-length > 0 and --overlong-buffer <= --max-length");
    o.length_unit = unit == "tokens" ? ds::rl::LengthUnit::tokens
                    : unit == "chars" ? ds::rl::LengthUnit::chars
                                      : ds::rl::LengthUnit::auto_;
    if (o.ks.empty()) ds::throw_usage("--k needs at least one value");

    ds::rl::RewardStreamStats st = ds::rl::reward_stream(o);
    ds::log_debug("scored " + std::to_string(st.written) + " records (" + std::to_string(st.skipped) +
                  " with reward null)");
    return 0;
  });
}
