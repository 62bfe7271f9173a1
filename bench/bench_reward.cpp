// ds-bench-reward: throughput of ds-reward on one core, on synthetic rollouts shaped like real ones
// (1-2 KB completions with a <think> block and an <answer>, arithmetic and countdown tasks mixed,
// some wrong, some boxed, some with a few CJK words).
//
//  score     score_rollout() over rollouts held in memory: extraction, answer parsing + equivalence or the
//            countdown verifier, the format check — ds-reward's default terms (accuracy + format).
//  score+    the same with every optional term on (language consistency, repetition, overlong length).
//  read      the JSONL file read and parsed (simdjson) with the fields ds-reward reads extracted, no
//            scoring, no output: the input side of the pipeline.
//  pipeline  reward_stream() end to end: JSONL read + parse (simdjson), scoring, the output record written
//            to a file (pass-through splice, JSON writer, atomic commit) — what the ds-reward program does.
// Each phase runs --rounds times over --n rollouts; the best round is reported. Single-threaded by design
// (ds-reward is), so the numbers are per core.
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <random>
#include <string>
#include <vector>

#include "cmd/common/program.h"
#include "core/error.h"
#include "core/io.h"
#include "core/json.h"
#include "core/jsonl.h"
#include "rl/reward.h"
#include "rl/reward_stream.h"

namespace {

using Clock = std::chrono::steady_clock;

struct Rollout {
  std::string task;  // "arithmetic" | "countdown"
  std::string completion;
  std::string gold;  // arithmetic
  std::vector<int64_t> numbers;
  int64_t target = 0;
};

const char* kWords[] = {"let", "me", "compute", "the", "product", "first", "then", "check", "again", "wait",
                        "so", "we", "have", "carry", "the", "one", "which", "gives", "hmm", "that", "seems",
                        "right", "but", "verify", "by", "adding", "back", "okay", "now", "subtract", "remainder"};

std::vector<Rollout> make_rollouts(int64_t n, uint64_t seed) {
  std::mt19937_64 rng(seed);
  auto pick = [&](int64_t lo, int64_t hi) { return lo + int64_t(rng() % uint64_t(hi - lo + 1)); };
  std::vector<Rollout> out;
  out.reserve(size_t(n));
  for (int64_t i = 0; i < n; ++i) {
    Rollout r;
    std::string think;
    const int64_t want = pick(1000, 1900);
    while (int64_t(think.size()) < want) {
      int64_t a = pick(2, 999), b = pick(2, 99);
      think += kWords[rng() % 31];
      think += ' ';
      think += kWords[rng() % 31];
      think += " " + std::to_string(a) + " * " + std::to_string(b) + " = " + std::to_string(a * b) + ". ";
      if (rng() % 7 == 0) think += "\n";
      if (rng() % 50 == 0) think += "\xE7\x84\xB6\xE5\x90\x8E ";  // a CJK word now and then
    }
    std::string answer;
    if (i % 2 == 0) {
      r.task = "arithmetic";
      int64_t a = pick(2, 999), b = pick(2, 999);
      bool fraction = rng() % 4 == 0;
      r.gold = fraction ? std::to_string(a) + "/" + std::to_string(b) : std::to_string(a * b);
      bool wrong = rng() % 5 == 0;
      answer = fraction ? "\\frac{" + std::to_string(a * 2) + "}{" + std::to_string(b * (wrong ? 3 : 2)) + "}"
                        : std::to_string(a * b + (wrong ? 1 : 0));
    } else {
      r.task = "countdown";
      int64_t x = pick(1, 99), y = pick(1, 99), z = pick(1, 20);
      r.numbers = {x, y, z};
      r.target = (x + y) * z;
      bool wrong = rng() % 5 == 0;
      answer = "(" + std::to_string(x) + " + " + std::to_string(y) + ") * " + std::to_string(wrong ? z + 1 : z);
    }
    if (rng() % 10 == 0) r.completion = "<think>\n" + think + "\n</think>\nThe answer is \\boxed{" + answer + "}.";
    else r.completion = "<think>\n" + think + "\n</think>\n<answer>" + answer + "</answer>";
    out.push_back(std::move(r));
  }
  return out;
}

std::string to_jsonl(const std::vector<Rollout>& rs) {
  std::string s;
  for (size_t i = 0; i < rs.size(); ++i) {
    const Rollout& r = rs[i];
    ds::JsonWriter w;
    w.begin_object().kv("id", "p" + std::to_string(i / 8)).kv("group", int64_t(i / 8)).kv("sample", int64_t(i % 8));
    w.kv("prompt", "Solve the problem and put the answer in <answer> tags.").kv("completion", r.completion);
    w.kv("task", r.task).kv("finish_reason", "stop");
    if (r.task == "countdown") {
      w.key("numbers").begin_array();
      for (int64_t v : r.numbers) w.value(v);
      w.end_array().kv("target", r.target);
    } else {
      w.kv("answer", r.gold);
    }
    w.end_object();
    s += w.take() + "\n";
  }
  return s;
}

struct Phase {
  std::string name;
  double best_s = 1e300;
  int64_t items = 0;
  int64_t bytes = 0;
  double correct = 0;
  double rate() const { return double(items) / best_s; }
  double mbps() const { return double(bytes) / best_s / 1e6; }
};

Phase time_scoring(const char* name, const std::vector<Rollout>& rs, const ds::rl::RewardConfig& cfg, int rounds) {
  Phase p;
  p.name = name;
  p.items = int64_t(rs.size());
  for (const Rollout& r : rs) p.bytes += int64_t(r.completion.size());
  std::vector<ds::rl::RolloutInput> inputs(rs.size());
  for (size_t i = 0; i < rs.size(); ++i) {
    ds::rl::RolloutInput& in = inputs[i];
    in.completion = rs[i].completion;
    if (rs[i].task == "countdown") {
      in.kind = ds::rl::TaskKind::countdown;
      in.numbers = rs[i].numbers;
      in.target = ds::rl::Rational::of(rs[i].target);
    } else {
      in.gold = rs[i].gold;
    }
    in.length = int64_t(rs[i].completion.size());
  }
  for (int round = 0; round < rounds; ++round) {
    int64_t correct = 0;
    auto t0 = Clock::now();
    for (const ds::rl::RolloutInput& in : inputs) correct += ds::rl::score_rollout(in, cfg).correct;
    double s = std::chrono::duration<double>(Clock::now() - t0).count();
    p.best_s = std::min(p.best_s, s);
    p.correct = double(correct) / double(rs.size());
  }
  return p;
}

Phase time_read(const std::string& input, int64_t n, int64_t bytes, int rounds) {
  Phase p;
  p.name = "read";
  p.items = n;
  p.bytes = bytes;
  for (int round = 0; round < rounds; ++round) {
    auto t0 = Clock::now();
    ds::JsonlReader in(input);
    int64_t count = 0, chars = 0;
    while (const ds::JsonlRecord* rec = in.next()) {
      chars += int64_t(rec->get_string("completion").size());
      chars += int64_t(rec->opt_string("task").value_or("").size());
      if (rec->has("answer")) chars += int64_t(rec->raw("answer").size());
      chars += int64_t(rec->raw("group").size());
      ++count;
    }
    double s = std::chrono::duration<double>(Clock::now() - t0).count();
    if (count != n || chars == 0) ds::throw_runtime("read " + std::to_string(count) + " records");
    p.best_s = std::min(p.best_s, s);
  }
  return p;
}

Phase time_pipeline(const std::string& input, int64_t n, int64_t bytes, const std::string& dir, int rounds) {
  Phase p;
  p.name = "pipeline";
  p.items = n;
  p.bytes = bytes;
  ds::rl::RewardStreamOptions o;
  o.input = input;
  o.output = dir + "/scored.jsonl";
  for (int round = 0; round < rounds; ++round) {
    auto t0 = Clock::now();
    ds::rl::RewardStreamStats st = ds::rl::reward_stream(o);
    double s = std::chrono::duration<double>(Clock::now() - t0).count();
    if (st.written != n) ds::throw_runtime("pipeline wrote " + std::to_string(st.written) + " records");
    p.best_s = std::min(p.best_s, s);
  }
  std::remove(o.output.c_str());
  return p;
}

}  // namespace

int main(int argc, char** argv) {
  return ds::run_program("ds-bench-reward", [&] {
    CLI::App app{"Throughput of ds-reward's scoring (rollouts/s on one core) on synthetic 1-2 KB rollouts."};
    ds::CommonOptions common;
    ds::add_common_options(app, common, ds::kOptSeed);
    int64_t n = 20000;
    int rounds = 5;
    std::string json_out;
    app.add_option("--n", n, "Rollouts per round")->check(CLI::Range(int64_t(8), int64_t(10000000)))->capture_default_str();
    app.add_option("--rounds", rounds, "Rounds per phase (the best is reported)")->check(CLI::Range(1, 1000))
        ->capture_default_str();
    app.add_option("--json", json_out, "Also write the results as JSON to FILE");
    if (int rc = ds::parse_cli(app, argc, argv); rc >= 0) return rc;
    ds::apply_common_options(common);

    std::vector<Rollout> rs = make_rollouts(n, common.seed);
    int64_t bytes = 0;
    for (const Rollout& r : rs) bytes += int64_t(r.completion.size());
    std::printf("== ds-bench-reward: %lld rollouts, mean completion %.0f bytes, best of %d rounds, 1 thread\n",
                (long long)n, double(bytes) / double(n), rounds);

    std::vector<Phase> phases;
    ds::rl::RewardConfig base;
    phases.push_back(time_scoring("score", rs, base, rounds));
    ds::rl::RewardConfig full = base;
    full.language_weight = 1.0;
    full.repetition_penalty = -1.0;
    full.length = ds::rl::LengthPenalty::overlong;
    full.max_length = 2048;
    full.overlong_buffer = 512;
    phases.push_back(time_scoring("score+", rs, full, rounds));

    char tmpl[] = "/tmp/ds_bench_reward.XXXXXX";
    if (!mkdtemp(tmpl)) ds::throw_runtime("cannot create a temporary directory");
    std::string dir = tmpl;
    std::string input = dir + "/rollouts.jsonl";
    std::string jsonl = to_jsonl(rs);
    ds::write_file_atomic(input, jsonl);
    phases.push_back(time_read(input, n, int64_t(jsonl.size()), rounds));
    Phase pipe = time_pipeline(input, n, int64_t(jsonl.size()), dir, rounds);
    std::remove(input.c_str());
    rmdir(dir.c_str());
    phases.push_back(pipe);

    std::printf("%-10s %12s %12s %10s\n", "phase", "rollouts/s", "MB/s", "us/rollout");
    for (const Phase& p : phases)
      std::printf("%-10s %12.0f %12.1f %10.2f\n", p.name.c_str(), p.rate(), p.mbps(), 1e6 / p.rate());
    std::printf("(score, score+: MB/s of completion text; read, pipeline: MB/s of JSONL input; %.0f%% correct)\n",
                100.0 * phases[0].correct);
    if (!json_out.empty()) {
      ds::JsonWriter w(true);
      w.begin_object().kv("n", n).kv("rounds", int64_t(rounds)).kv("mean_completion_bytes", double(bytes) / double(n));
      for (const Phase& p : phases) {
        w.key(p.name).begin_object().kv("rollouts_per_s", p.rate()).kv("mb_per_s", p.mbps()).kv("seconds", p.best_s);
        w.end_object();
      }
      w.end_object();
      ds::write_file_atomic(json_out, w.take() + "\n");
    }
    return 0;
  });
}
