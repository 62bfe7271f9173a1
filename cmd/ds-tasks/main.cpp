// ds-tasks: built-in, seeded, verifiable reasoning tasks (countdown, arithmetic) and the data built from them:
// RL prompts with gold answers, a pre-training corpus of worked solutions, cold-start long-CoT chat examples
// and plain chat data. See man/ds-tasks.1.
#include <cstdio>
#include <string>

#include "cmd/common/program.h"
#include "core/error.h"
#include "core/log.h"
#include "tasks/generate.h"

namespace {

constexpr int64_t kMaxN = 1'000'000'000;

void add_n(CLI::App* sub, int64_t& n, const char* what) {
  sub->add_option("-n,--n", n, std::string("Number of ") + what)->check(CLI::Range(int64_t(1), kMaxN))->capture_default_str();
}
void add_output(CLI::App* sub, std::string& out) {
  sub->add_option("-o,--output", out, "Output JSONL ('-' = stdout; a .zst name is compressed)")->capture_default_str();
}
void add_task(CLI::App* sub, std::string& task) {
  sub->add_option("--task", task, "countdown, arithmetic or mixed")
      ->check(CLI::IsMember({"countdown", "arithmetic", "mixed"}))
      ->capture_default_str();
}
void add_difficulty(CLI::App* sub, std::string& d) {
  sub->add_option("--difficulty", d, "basic, easy, medium, hard or mixed (easy/medium/hard drawn per problem)")
      ->check(CLI::IsMember({"basic", "easy", "medium", "hard", "mixed"}))
      ->capture_default_str();
}
CLI::Option* add_share(CLI::App* sub, const char* name, double& v, const char* help) {
  return sub->add_option(name, v, help)->check(CLI::Range(0.0, 1.0))->capture_default_str();
}

}  // namespace

int main(int argc, char** argv) {
  return ds::run_program("ds-tasks", [&] {
    CLI::App app{"Built-in, seeded, verifiable reasoning tasks (countdown, arithmetic): RL prompts, a pre-training "
                 "corpus of worked solutions, cold-start long-CoT examples and chat data, as JSONL."};
    app.require_subcommand(0, 1);
    app.fallthrough();  // common options (--seed, --log-level) may follow the subcommand
    ds::CommonOptions common;
    ds::add_common_options(app, common, ds::kOptSeed);
    bool list = false;
    app.add_flag("--list", list, "Print the tasks, difficulties and record fields, then exit");

    std::string output = "-";
    int64_t n = 0;

    ds::tasks::PromptsOptions po;
    std::string p_task = "mixed", p_split = "train", p_diff = "medium";
    CLI::App* p = app.add_subcommand("prompts", "Problems with gold answers: {\"id\", \"task\", \"prompt\", \"answer\", ...}");
    int64_t p_n = 1000;
    add_n(p, p_n, "problems");
    add_task(p, p_task);
    p->add_option("--split", p_split, "train or test (disjoint, whatever the seed)")
        ->check(CLI::IsMember({"train", "test"}))
        ->capture_default_str();
    add_difficulty(p, p_diff);
    add_output(p, output);

    ds::tasks::CorpusOptions co;
    std::string c_task = "mixed", c_diff = "mixed";
    int64_t c_n = 10000;
    CLI::App* c = app.add_subcommand("corpus", "Pre-training documents of worked solutions: {\"text\", ...}");
    add_n(c, c_n, "documents");
    add_task(c, c_task);
    add_difficulty(c, c_diff);
    add_share(c, "--imperfect-share", co.imperfect_share, "Share of documents with an arithmetic slip");
    add_share(c, "--wrong-fraction", co.wrong_fraction,
              "Of the imperfect documents, the share whose slip is not caught (wrong final answer)");
    add_share(c, "--mixed-language-share", co.mixed_language_share,
              "Share of documents whose reasoning mixes Chinese into English");
    add_share(c, "--template-share", co.template_share, "Share of documents in the R1-Zero template");
    add_share(c, "--prose-share", co.prose_share, "Share of plain prose documents (no tags)");
    add_share(c, "--verify-share", co.verify_share, "Share of documents that check their result");
    add_share(c, "--detail-share", co.detail_share, "Share of documents with digit-level (column) steps");
    c->add_option("--tagged-detail-share", co.tagged_detail_share,
                  "The same for the tagged documents (R1-Zero template and <think>/<answer>); -1: --detail-share")
        ->check(CLI::Range(-1.0, 1.0))
        ->capture_default_str();
    add_share(c, "--drill-share", co.drill_share,
              "Share of arithmetic drill documents (one-step facts: sums, differences, products, division steps)");
    c->add_flag("--uniform-wording", co.uniform_wording,
                "One English phrasing per reasoning step instead of a random variant (faster to learn)");
    c->add_option("--max-dead-ends", co.max_dead_ends, "Countdown: failed attempts before the solution, at most")
        ->check(CLI::Range(0, 20))
        ->capture_default_str();
    add_output(c, output);

    ds::tasks::ColdstartOptions so;
    std::string s_task = "mixed", s_diff = "mixed";
    int64_t s_n = 1000;
    bool no_summary = false;
    CLI::App* s = app.add_subcommand("coldstart", "Cold-start long-CoT chat examples in the R1 output format");
    add_n(s, s_n, "examples");
    add_task(s, s_task);
    add_difficulty(s, s_diff);
    s->add_flag("--no-summary", no_summary, "No summary sentence between </think> and <answer>");
    add_share(s, "--mixed-language-share", so.mixed_language_share,
              "Share of examples whose reasoning mixes Chinese into English (R1's cold start: 0)");
    s->add_option("--max-dead-ends", so.max_dead_ends, "Countdown: failed attempts before the solution, at most")
        ->check(CLI::Range(0, 20))
        ->capture_default_str();
    add_output(s, output);

    ds::tasks::ChatOptions ho;
    int64_t h_n = 500;
    CLI::App* h = app.add_subcommand("chat", "Non-reasoning chat: greetings and short factual answers, no CoT");
    add_n(h, h_n, "conversations");
    add_share(h, "--multi-turn-share", ho.multi_turn_share, "Share of conversations that open with a greeting");
    add_output(h, output);

    if (int rc = ds::parse_cli(app, argc, argv); rc >= 0) return rc;
    ds::apply_common_options(common);
    using namespace ds::tasks;

    if (list) {
      std::fputs(tasks_list_text().c_str(), stdout);
      return 0;
    }
    if (app.get_subcommands().empty())
      ds::throw_usage("a subcommand is required: prompts, corpus, coldstart or chat (or --list)");

    if (*p) {
      po = {common.seed, parse_task_choice(p_task), parse_split(p_split), parse_difficulty_choice(p_diff)};
      n = write_prompts(po, p_n, output);
    } else if (*c) {
      if (co.template_share + co.prose_share > 1.0)
        ds::throw_usage("--template-share plus --prose-share must not exceed 1");
      co.seed = common.seed;
      co.task = parse_task_choice(c_task);
      co.difficulty = parse_difficulty_choice(c_diff);
      n = write_corpus(co, c_n, output);
    } else if (*s) {
      so.seed = common.seed;
      so.task = parse_task_choice(s_task);
      so.difficulty = parse_difficulty_choice(s_diff);
      so.summary = !no_summary;
      n = write_coldstart(so, s_n, output);
    } else {
      ho.seed = common.seed;
      n = write_chat(ho, h_n, output);
    }
    ds::log_debug("wrote " + std::to_string(n) + " records to " + output);
    return 0;
  });
}
