// ds-bench-rebalance: the placement planner (lib/balance) on one core.
//
//  time         planning 61 layers x 256 experts, 288 slots, 8 groups, 4 nodes, 32 GPUs (DeepSeek-V3 EP32): the
//               EPLB greedy (hierarchical) and the default balanced policy; best and median wall time of --rounds
//               (after one untimed warm-up), and the median CPU time of the thread (what other processes on a
//               shared machine cannot inflate).
//  improvement  --cases seeded Zipf-like load matrices of several sizes (skew s in 0.6..1.2): per layer, the
//               balanced policy's max/mean GPU load against EPLB's (exact greedy, EPLB's own choice of policy),
//               the relative improvement (mean, worst, best) and the gap of both to the lower bound
//               max(total / GPUs, smallest possible largest replica). Fails (exit 1) if balanced is ever worse.
//               local_gap: the gap of the best plan that keeps every expert group on one node could have at most:
//               its max is at least the heaviest node's total / (GPUs per node) under the best assignment of
//               groups to nodes (all assignments tried), and at least the lower bound.
#include <algorithm>
#include <chrono>
#include <cstdio>
#include <ctime>
#include <functional>
#include <string>
#include <vector>

#include "balance/placement.h"
#include "balance/zipf.h"
#include <cstdlib>
#include <cstring>

namespace {

using namespace ds::balance;
using Clock = std::chrono::steady_clock;

double max_of(const std::vector<double>& v) { return *std::max_element(v.begin(), v.end()); }

double thread_cpu_ms() {
  timespec ts{};
  clock_gettime(CLOCK_THREAD_CPUTIME_ID, &ts);
  return 1e3 * double(ts.tv_sec) + 1e-6 * double(ts.tv_nsec);
}

// The smallest possible heaviest-node total when the G groups go to N nodes, G / N each (every assignment tried;
// the first empty node only, so node orders are not repeated). Negative when G is too large to try them all.
double best_node_total(const std::vector<double>& load, const Shape& s) {
  const int64_t E = int64_t(load.size()), G = s.groups, N = s.nodes;
  if (G > 16 || E % G != 0 || G % N != 0) return -1;
  std::vector<double> gw(G, 0.0), node(N, 0.0);
  for (int64_t e = 0; e < E; ++e) gw[e / (E / G)] += load[e];
  std::vector<int64_t> fill(N, 0);
  double best = 1e300;
  std::function<void(int64_t, double)> place = [&](int64_t g, double worst) {
    if (worst >= best) return;
    if (g == G) {
      best = worst;
      return;
    }
    for (int64_t n = 0; n < N; ++n) {
      if (fill[n] == G / N) continue;
      node[n] += gw[g], ++fill[n];
      place(g + 1, std::max(worst, node[n]));
      node[n] -= gw[g], --fill[n];
      if (fill[n] == 0) break;  // the other empty nodes would repeat this
    }
  };
  place(0, 0.0);
  return best;
}

struct Size {
  const char* name;
  int64_t layers, E;
  Shape s;
};

}  // namespace

// Plain argument parsing: the bench links lib/balance and lib/core only, so the binary runs on any x86-64 Linux.
int main(int argc, char** argv) {
  {
    int rounds = 20, cases = 200;
    for (int i = 1; i < argc; ++i) {
      const bool has = i + 1 < argc;
      if (!std::strcmp(argv[i], "--rounds") && has) {
        rounds = std::atoi(argv[++i]);
      } else if (!std::strcmp(argv[i], "--cases") && has) {
        cases = std::atoi(argv[++i]);
      } else {
        std::fprintf(stderr, "usage: ds-bench-rebalance [--rounds N (20)] [--cases N (200)]\n");
        return std::strcmp(argv[i], "--help") ? 2 : 0;
      }
    }
    if (rounds < 1 || cases < 5) {
      std::fprintf(stderr, "ds-bench-rebalance: error: --rounds >= 1 and --cases >= 5\n");
      return 2;
    }

    // --- time ---
    const Shape v3{288, 8, 4, 32};
    auto loads = testing::zipf_loads(61, 256, 42, 0.9);
    for (Policy p : {Policy::hierarchical, Policy::balanced}) {
      std::vector<double> ms, cpu;
      if (plan(loads, v3, p).size() != 61) return 1;  // warm-up (the planner's buffers)
      for (int r = 0; r < rounds; ++r) {
        const double c0 = thread_cpu_ms();
        auto t0 = Clock::now();
        auto out = plan(loads, v3, p);
        ms.push_back(std::chrono::duration<double, std::milli>(Clock::now() - t0).count());
        cpu.push_back(thread_cpu_ms() - c0);
        if (out.size() != 61) return 1;
      }
      std::sort(ms.begin(), ms.end());
      std::sort(cpu.begin(), cpu.end());
      std::printf("time %-12s 61 x 256 experts, 288 slots, 32 GPUs, 4 nodes: best %.2f ms, median %.2f ms "
                  "(cpu median %.2f ms)\n",
                  policy_name(p).c_str(), ms.front(), ms[ms.size() / 2], cpu[cpu.size() / 2]);
    }

    // --- improvement ---
    const std::vector<Size> sizes = {{"61x256/288/32gpu/4node", 61, 256, {288, 8, 4, 32}},
                                     {"8x256/320/64gpu/8node", 8, 256, {320, 8, 8, 64}},
                                     {"16x64/80/16gpu/2node", 16, 64, {80, 8, 2, 16}},
                                     {"16x16/24/8gpu/2node", 16, 16, {24, 4, 2, 8}},
                                     {"16x160/192/16gpu/1node", 16, 160, {192, 1, 1, 16}}};
    std::printf("%-24s %6s %7s %9s %9s %9s %10s %10s %10s %8s\n", "size", "cases", "layers", "mean_imp",
                "worst_imp", "best_imp", "eplb_gap", "bal_gap", "local_gap", "better");
    int worse = 0;
    for (const Size& z : sizes) {
      int n = 0, better = 0, layers = 0;
      double sum_imp = 0, worst = 1e9, best = -1e9, gap_e = 0, gap_b = 0, gap_l = 0;
      bool local = z.s.nodes > 1;
      for (int c = 0; c < cases / int(sizes.size()); ++c, ++n) {
        auto w = testing::zipf_loads(z.layers, z.E, 7000 + 97 * c + uint64_t(z.E), 0.6 + 0.1 * (c % 7));
        auto e = plan(w, z.s, eplb_default_hierarchical(z.E, z.s) ? Policy::hierarchical : Policy::global);
        auto b = plan(w, z.s, Policy::balanced);
        for (int64_t l = 0; l < z.layers; ++l, ++layers) {
          const double me = max_of(e[l].gpu_load), mb = max_of(b[l].gpu_load), lb = lower_bound(w[l], z.s);
          const double imp = (me - mb) / me;
          worse += mb > me;
          better += mb < me;
          sum_imp += imp;
          worst = std::min(worst, imp);
          best = std::max(best, imp);
          gap_e += (me - lb) / lb;
          gap_b += (mb - lb) / lb;
          if (local) {
            const double nt = best_node_total(w[l], z.s);
            local = nt >= 0;
            gap_l += (std::max(lb, nt / double(z.s.gpus / z.s.nodes)) - lb) / lb;
          }
        }
      }
      char lg[32] = "-";
      if (local) std::snprintf(lg, sizeof lg, "%.2f%%", 100 * gap_l / layers);
      std::printf("%-24s %6d %7d %8.2f%% %8.2f%% %8.2f%% %9.2f%% %9.2f%% %10s %7.1f%%\n", z.name, n, layers,
                  100 * sum_imp / layers, 100 * worst, 100 * best, 100 * gap_e / layers, 100 * gap_b / layers, lg,
                  100.0 * better / layers);
    }
    std::printf("imp = (EPLB max - balanced max) / EPLB max per layer; gap = (max - lower bound) / lower bound, "
                "mean over layers; local_gap = the least gap any plan keeping each group on one node can have; "
                "better = layers strictly improved\n");
    if (worse) std::printf("FAIL: balanced worse than EPLB on %d layers\n", worse);
    return worse ? 1 : 0;
  }
}
