// ds-rebalance: expert-load statistics -> redundant-expert placement (EPLB's greedy, exactly, or the default
// "balanced" policy that is never worse), with a before/after report; --every re-plans periodically.
// See man/ds-rebalance.1 and MODEL.md §5.
#include <algorithm>
#include <chrono>
#include <cstdio>
#include <string>
#include <thread>
#include <vector>

#include "balance/placement.h"
#include "balance/stats.h"
#include "cmd/common/program.h"
#include "core/error.h"
#include "core/io.h"
#include "core/log.h"

namespace {

using namespace ds::balance;

struct Options {
  std::vector<std::string> inputs;
  std::string output;
  std::string policy = "balanced";
  bool exact_eplb = false;
  Shape shape{0, 1, 1, 8};
  LoadWindow window;
  double hot = 2.0;
  double every = -1;
  int64_t max_iterations = 0;
  double min_improvement = 0.05;
  bool quiet = false;
};

struct Plan {
  Policy policy = Policy::balanced;
  std::vector<int64_t> layer_ids;
  std::vector<LayerPlacement> layers;
};

std::string fmt(const char* f, double v) {
  char b[64];
  std::snprintf(b, sizeof b, f, v);
  return b;
}

// Mean over the layers of max/mean GPU load of `pl` evaluated on `loads`.
double imbalance(const ExpertLoads& loads, const std::vector<LayerPlacement>& pl, int64_t gpus) {
  double s = 0;
  for (size_t l = 0; l < pl.size(); ++l)
    s += max_over_mean(gpu_loads(loads.loads[l], pl[l].phy2log, pl[l].logcnt, gpus));
  return pl.empty() ? 1.0 : s / double(pl.size());
}

Shape resolve_shape(const Options& o, int64_t experts) {
  Shape s = o.shape;
  if (s.slots == 0) {  // default: E + E/8 redundant slots (V3: 256 + 32), rounded up to a multiple of --gpus
    int64_t want = experts + (experts + 7) / 8;
    s.slots = s.gpus > 0 ? (want + s.gpus - 1) / s.gpus * s.gpus : want;
  }
  return s;
}

Policy resolve_policy(const Options& o, int64_t experts, const Shape& s) {
  Policy p = parse_policy(o.policy);
  if (!o.exact_eplb) return p;
  if (p == Policy::balanced)  // EPLB's own choice
    return eplb_default_hierarchical(experts, s) ? Policy::hierarchical : Policy::global;
  return p;
}

Plan make_plan(const Options& o, const ExpertLoads& loads) {
  const int64_t E = int64_t(loads.loads[0].size());
  Shape s = resolve_shape(o, E);
  Plan p;
  p.policy = resolve_policy(o, E, s);
  validate_shape(E, s, p.policy);
  p.layer_ids = loads.layer_ids;
  p.layers = plan(loads.loads, s, p.policy);
  return p;
}

// The before/after report (stdout, or stderr when the placement goes to stdout).
void report(const Options& o, const ExpertLoads& loads, const Plan& p, std::FILE* out) {
  const int64_t E = int64_t(loads.loads[0].size());
  const Shape s = resolve_shape(o, E);
  std::fprintf(out, "policy %s: %zu layers x %lld experts, %lld slots, %lld groups, %lld nodes, %lld GPUs; "
               "%lld steps (%lld..%lld)\n", policy_name(p.policy).c_str(), p.layers.size(), (long long)E,
               (long long)s.slots, (long long)s.groups, (long long)s.nodes, (long long)s.gpus,
               (long long)loads.steps, (long long)loads.first_step, (long long)loads.last_step);
  std::fprintf(out, "%6s %14s %14s %11s %9s  %s\n", "layer", "before_max/mean", "after_max/mean", "lower_bound",
               "replicas", "hot experts (load/mean)");
  int64_t replicas = 0, hot_total = 0;
  double before = 0, after = 0;
  for (size_t l = 0; l < p.layers.size(); ++l) {
    const auto& w = loads.loads[l];
    double total = 0;
    for (double v : w) total += v;
    const double mean_gpu = total / double(s.gpus), mean_e = total / double(E);
    const double b = max_over_mean(gpu_loads_unreplicated(w, s.gpus)), a = max_over_mean(p.layers[l].gpu_load);
    const double lb = mean_gpu > 0 ? lower_bound(w, s) / mean_gpu : 1.0;
    before += b;
    after += a;
    int64_t added = 0;
    for (int64_t c : p.layers[l].logcnt) added += c - 1;
    replicas += added;
    std::vector<int64_t> hot;
    for (int64_t e = 0; e < E; ++e)
      if (mean_e > 0 && w[e] >= o.hot * mean_e) hot.push_back(e);
    std::sort(hot.begin(), hot.end(), [&](int64_t x, int64_t y) { return w[x] > w[y] || (w[x] == w[y] && x < y); });
    hot_total += int64_t(hot.size());
    std::string hs;
    for (size_t i = 0; i < hot.size() && i < 6; ++i)
      hs += (i ? " " : "") + std::to_string(hot[i]) + "(" + fmt("%.1f", w[hot[i]] / mean_e) + "x" +
            (p.layers[l].logcnt[hot[i]] > 1 ? ",r" + std::to_string(p.layers[l].logcnt[hot[i]]) : "") + ")";
    if (hot.size() > 6) hs += " +" + std::to_string(hot.size() - 6);
    std::fprintf(out, "%6lld %14.4f %14.4f %11.4f %9lld  %s\n", (long long)p.layer_ids[l], b, a, lb,
                 (long long)added, hs.c_str());
  }
  const double n = double(std::max<size_t>(1, p.layers.size()));
  std::fprintf(out, "overall: max/mean GPU load %.4f -> %.4f (mean over layers), replicas added %lld, "
               "hot experts %lld (load >= %.3g x mean)\n", before / n, after / n, (long long)replicas,
               (long long)hot_total, o.hot);
}

void write_plan(const Options& o, const Plan& p, const ExpertLoads& loads) {
  const int64_t E = int64_t(loads.loads[0].size());
  ds::Writer w(o.output);
  w.write(placement_json({policy_name(p.policy), resolve_shape(o, E), p.layer_ids}, p.layers));
  w.commit();
}

}  // namespace

int main(int argc, char** argv) {
  return ds::run_program("ds-rebalance", [&] {
    CLI::App app{"Plan redundant-expert placement (EPLB, MODEL.md §5) from expert-load statistics JSONL; print a "
                 "before/after report of the max/mean GPU load."};
    ds::CommonOptions common;
    ds::add_common_options(app, common, 0);
    Options o;
    app.add_option("inputs", o.inputs, "Statistics JSONL files {\"step\",\"layer\",\"counts\"} (--expert-stats), "
                   "read in order; '-' = stdin")->required();
    app.add_option("-o,--output", o.output, "Placement JSON, replaced atomically; '-' = stdout (report to stderr)");
    app.add_option("--policy", o.policy, "balanced (never worse than EPLB), hierarchical or global")
        ->check(CLI::IsMember({"balanced", "hierarchical", "global"}))->capture_default_str();
    app.add_flag("--exact-eplb", o.exact_eplb, "EPLB's greedy exactly: hierarchical when E % G == 0 and G % N == 0, "
                 "else global (or the one given by --policy)");
    app.add_option("--slots", o.shape.slots, "Physical expert slots R (0 = E + E/8 rounded up to a multiple of "
                   "--gpus)")->check(CLI::NonNegativeNumber)->capture_default_str();
    app.add_option("--groups", o.shape.groups, "Expert groups G (hierarchical)")->check(CLI::PositiveNumber)
        ->capture_default_str();
    app.add_option("--nodes", o.shape.nodes, "Nodes N")->check(CLI::PositiveNumber)->capture_default_str();
    app.add_option("--gpus", o.shape.gpus, "GPUs P")->check(CLI::PositiveNumber)->capture_default_str();
    app.add_option("--window", o.window.last_steps, "Use the last K steps only (0 = all)")
        ->check(CLI::NonNegativeNumber)->capture_default_str();
    app.add_option("--ema", o.window.ema, "Exponential moving average with this weight on the newest step "
                   "(0 = plain mean over the window)")->check(CLI::Range(0.0, 1.0))->capture_default_str();
    app.add_option("--hot", o.hot, "An expert is hot when its load is at least this many times the mean")
        ->check(CLI::PositiveNumber)->capture_default_str();
    app.add_option("--every", o.every, "Keep running: re-plan from the latest window every SECONDS")
        ->check(CLI::NonNegativeNumber);
    app.add_option("--max-iterations", o.max_iterations, "With --every: stop after N plans (0 = run forever)")
        ->check(CLI::NonNegativeNumber)->capture_default_str();
    app.add_option("--min-improvement", o.min_improvement, "With --every: keep the current placement unless the "
                   "new one lowers max/mean by at least this fraction")->check(CLI::Range(0.0, 1.0))
        ->capture_default_str();
    app.add_flag("-q,--quiet", o.quiet, "No report");
    if (int rc = ds::parse_cli(app, argc, argv); rc >= 0) return rc;
    ds::apply_common_options(common);
    if (o.exact_eplb && o.policy == "balanced" && app.count("--policy"))
      ds::throw_usage("--exact-eplb reproduces EPLB's greedy; it cannot be combined with --policy balanced");
    if (o.every < 0 && app.count("--max-iterations"))
      ds::throw_usage("--max-iterations needs --every");
    std::FILE* rep = o.output == "-" ? stderr : stdout;

    if (o.every < 0) {  // one plan
      ExpertLoads loads = read_expert_stats(o.inputs, o.window);
      Plan p = make_plan(o, loads);
      if (!o.output.empty()) write_plan(o, p, loads);
      if (!o.quiet) report(o, loads, p, rep);
      return 0;
    }

    // --every: re-plan periodically; keep the current placement unless the new one is better by the threshold,
    // and keep the last good one when the statistics are bad.
    Plan current;
    bool have = false;
    for (int64_t it = 0; o.max_iterations == 0 || it < o.max_iterations; ++it) {
      if (it > 0) std::this_thread::sleep_for(std::chrono::duration<double>(o.every));
      ExpertLoads loads;
      try {
        loads = read_expert_stats(o.inputs, o.window);
      } catch (const ds::Error& e) {
        if (e.kind() != ds::ErrorKind::bad_input) throw;
        ds::log_error(std::string(e.what()) + "; keeping the " + (have ? "last good placement" : "no placement yet"));
        continue;
      }
      Plan p = make_plan(o, loads);
      const int64_t gpus = resolve_shape(o, int64_t(loads.loads[0].size())).gpus;
      const double fresh = imbalance(loads, p.layers, gpus);
      if (have && current.layer_ids == loads.layer_ids &&
          current.layers[0].logcnt.size() == loads.loads[0].size()) {
        const double cur = imbalance(loads, current.layers, gpus);
        if (cur - fresh < o.min_improvement * cur) {
          ds::log_info("iteration " + std::to_string(it + 1) + ": keeping the current placement (max/mean " +
                       fmt("%.4f", cur) + ", a new plan gives " + fmt("%.4f", fresh) + ")");
          continue;
        }
      }
      if (!o.output.empty()) write_plan(o, p, loads);
      ds::log_info("iteration " + std::to_string(it + 1) + ": new placement, max/mean " + fmt("%.4f", fresh) +
                   (o.output.empty() ? "" : " -> " + o.output));
      if (!o.quiet) report(o, loads, p, rep);
      std::fflush(rep);
      current = std::move(p);
      have = true;
    }
    return have ? 0 : 3;
  });
}
