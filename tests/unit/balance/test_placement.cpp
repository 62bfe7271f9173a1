// EPLB primitives and the README example (MODEL.md §5.4) reproduced exactly; the balanced policy never worse than
// EPLB on seeded Zipf-like loads; bad shapes; routing tokens over replicas.
#include <catch2/catch.hpp>

#include <algorithm>
#include <cmath>
#include <limits>
#include <map>
#include <random>
#include <set>

#include "balance/placement.h"
#include "core/error.h"
#include "balance/zipf.h"

using namespace ds::balance;
using V = std::vector<int64_t>;

namespace {

const std::vector<std::vector<double>> kReadme = {
    {90, 132, 40, 61, 104, 165, 39, 4, 73, 56, 183, 86},
    {20, 107, 104, 64, 19, 197, 187, 157, 172, 86, 16, 27}};
const Shape kReadmeShape{16, 4, 2, 8};

// Structural invariants of any placement.
void check_valid(const LayerPlacement& pl, const std::vector<double>& w, const Shape& s) {
  const int64_t E = int64_t(w.size());
  REQUIRE(int64_t(pl.phy2log.size()) == s.slots);
  REQUIRE(int64_t(pl.logcnt.size()) == E);
  V cnt(E, 0);
  for (int64_t e : pl.phy2log) {
    REQUIRE(e >= 0);
    REQUIRE(e < E);
    ++cnt[e];
  }
  REQUIRE(cnt == pl.logcnt);
  for (int64_t e = 0; e < E; ++e) {
    REQUIRE(pl.logcnt[e] >= 1);
    for (int64_t r = 0; r < int64_t(pl.log2phy[e].size()); ++r) {
      if (r < pl.logcnt[e])
        REQUIRE(pl.phy2log[pl.log2phy[e][r]] == e);
      else
        REQUIRE(pl.log2phy[e][r] == -1);
    }
  }
  auto g = gpu_loads(w, pl.phy2log, pl.logcnt, s.gpus);
  for (int64_t i = 0; i < s.gpus; ++i) REQUIRE(pl.gpu_load[i] == Approx(g[i]));
}

double max_of(const std::vector<double>& v) { return *std::max_element(v.begin(), v.end()); }

}  // namespace

TEST_CASE("balanced_packing: LPT with a cardinality cap, lowest pack on ties") {
  // group loads of the README layer 0: g1 -> 0, g3 -> 1, g0 -> 1, g2 -> 0 (node 1 full)
  Packing p = balanced_packing({262, 330, 116, 325}, 2);
  CHECK(p.pack == V{1, 0, 0, 1});
  CHECK(p.rank == V{1, 0, 1, 0});
  Packing eq = balanced_packing({5, 5, 5, 5}, 2);  // stable order, ties to the lowest pack
  CHECK(eq.pack == V{0, 1, 0, 1});
  CHECK(eq.rank == V{0, 0, 1, 1});
  Packing id = balanced_packing({1, 9, 3}, 3);
  CHECK(id.pack == V{0, 1, 2});
  CHECK(id.rank == V{0, 0, 0});
}

TEST_CASE("replicate_experts: max w/cnt, first on ties") {
  Replication r = replicate_experts({61, 104, 165, 39, 4, 73}, 8);  // README node 0
  CHECK(r.phy2log == V{0, 1, 2, 3, 4, 5, 2, 1});
  CHECK(r.rank == V{0, 0, 0, 0, 0, 0, 1, 1});
  CHECK(r.cnt == V{1, 2, 2, 1, 1, 1});
  Replication t = replicate_experts({4, 4}, 3);
  CHECK(t.phy2log == V{0, 1, 0});
}

TEST_CASE("EPLB README example reproduced exactly (hierarchical)") {
  auto plan0 = plan(kReadme, kReadmeShape, Policy::hierarchical);
  REQUIRE(plan0.size() == 2);
  CHECK(plan0[0].phy2log == V{5, 6, 5, 7, 8, 4, 3, 4, 10, 9, 10, 2, 0, 1, 11, 1});
  CHECK(plan0[1].phy2log == V{7, 10, 6, 8, 6, 11, 8, 9, 2, 4, 5, 1, 5, 0, 3, 1});
  CHECK(plan0[0].logcnt == V{1, 2, 1, 1, 2, 2, 1, 1, 1, 1, 2, 1});
  std::vector<V> l2p = {{12, -1}, {15, 13}, {11, -1}, {6, -1}, {7, 5}, {0, 2},
                        {1, -1},  {3, -1},  {4, -1},  {9, -1}, {8, 10}, {14, -1}};
  CHECK(plan0[0].log2phy == l2p);
  std::vector<double> want{121.5, 86.5, 125, 113, 147.5, 131.5, 156, 152};
  for (int i = 0; i < 8; ++i) CHECK(plan0[0].gpu_load[i] == Approx(want[i]));
  for (int l = 0; l < 2; ++l) check_valid(plan0[l], kReadme[l], kReadmeShape);
}

TEST_CASE("global policy = hierarchical with G=1, N=1") {
  Shape s = kReadmeShape;
  auto g = plan(kReadme, s, Policy::global);
  s.groups = 1;
  s.nodes = 1;
  auto h = plan(kReadme, s, Policy::hierarchical);
  for (int l = 0; l < 2; ++l) {
    CHECK(g[l].phy2log == h[l].phy2log);
    check_valid(g[l], kReadme[l], kReadmeShape);
  }
}

TEST_CASE("balanced policy beats EPLB on the README example") {
  auto b = plan(kReadme, kReadmeShape, Policy::balanced);
  auto e = plan(kReadme, kReadmeShape, Policy::hierarchical);
  for (int l = 0; l < 2; ++l) {
    check_valid(b[l], kReadme[l], kReadmeShape);
    CHECK(max_of(b[l].gpu_load) < max_of(e[l].gpu_load));
    CHECK(max_of(b[l].gpu_load) >= lower_bound(kReadme[l], kReadmeShape) - 1e-9);
  }
}

TEST_CASE("balanced policy is never worse than EPLB on 120 seeded Zipf-like matrices") {
  struct Size { int64_t layers, E; Shape s; };
  const std::vector<Size> sizes = {
      {4, 16, {24, 4, 2, 8}}, {4, 64, {80, 8, 2, 16}}, {2, 256, {288, 8, 4, 32}}, {3, 60, {72, 6, 3, 12}},
      {2, 32, {32, 4, 1, 4}}};
  int cases = 0, better = 0;
  for (int i = 0; i < 118; ++i) {
    const Size& z = sizes[i % sizes.size()];
    auto loads = testing::zipf_loads(z.layers, z.E, 1000 + i, 0.6 + 0.1 * (i % 7));
    auto e = plan(loads, z.s, eplb_default_hierarchical(z.E, z.s) ? Policy::hierarchical : Policy::global);
    auto b = plan(loads, z.s, Policy::balanced);
    for (int64_t l = 0; l < z.layers; ++l) {
      check_valid(b[l], loads[l], z.s);
      REQUIRE(max_of(b[l].gpu_load) <= max_of(e[l].gpu_load));
      better += max_of(b[l].gpu_load) < max_of(e[l].gpu_load);
    }
    ++cases;
  }
  // two full-size DeepSeek-V3 cases: 61 layers x 256 experts, 288 slots, 32 GPUs, 4 nodes, 8 groups
  for (uint64_t seed : {7, 8}) {
    Shape s{288, 8, 4, 32};
    auto loads = testing::zipf_loads(61, 256, seed, 0.9);
    auto e = plan(loads, s, Policy::hierarchical);
    auto b = plan(loads, s, Policy::balanced);
    for (int l = 0; l < 61; ++l) {
      REQUIRE(max_of(b[l].gpu_load) <= max_of(e[l].gpu_load));
      better += max_of(b[l].gpu_load) < max_of(e[l].gpu_load);
    }
    ++cases;
  }
  CHECK(cases == 120);
  CHECK(better > 0);
}

TEST_CASE("bad shapes are usage errors") {
  auto code = [](const Shape& s, Policy p, int64_t E) {
    try {
      validate_shape(E, s, p);
    } catch (const ds::Error& e) {
      return e.exit_code();
    }
    return 0;
  };
  CHECK(code({16, 4, 2, 8}, Policy::hierarchical, 12) == 0);
  CHECK(code({10, 4, 2, 8}, Policy::global, 12) == 2);       // R < E
  CHECK(code({18, 4, 2, 8}, Policy::global, 12) == 2);       // R % P
  CHECK(code({16, 4, 3, 8}, Policy::global, 12) == 2);       // P % N
  CHECK(code({16, 5, 1, 8}, Policy::hierarchical, 12) == 2);  // E % G
  CHECK(code({16, 4, 8, 8}, Policy::hierarchical, 12) == 2);  // G % N
  CHECK(code({16, 5, 1, 8}, Policy::balanced, 12) == 0);      // balanced falls back to global's shape
  CHECK(code({16, 4, 2, 0}, Policy::global, 12) == 2);
  CHECK_THROWS_AS(parse_policy("best"), ds::Error);
}

TEST_CASE("routing over replicas: deterministic, same MoE output, per-GPU load measured") {
  auto pl = plan(kReadme, kReadmeShape, Policy::balanced)[0];
  // a toy MoE layer: expert e maps x to (e + 1) * x + e; top-2 routing of 64 tokens
  const int64_t T = 64, k = 2;
  V topk(T * k);
  for (int64_t t = 0; t < T; ++t) topk[t * k] = (t * 5) % 12, topk[t * k + 1] = (t * 7 + 3) % 12;
  for (int64_t t = 0; t < T; ++t) {
    double plain = 0, placed = 0;
    for (int64_t j = 0; j < k; ++j) {
      const int64_t e = topk[t * k + j];
      plain += double(e + 1) * double(t) + double(e);
      const int64_t slot = route_slot(pl, e, t);
      REQUIRE(slot == route_slot(pl, e, t));   // deterministic
      const int64_t phys_e = pl.phy2log[slot];  // the slot holds a copy of expert e's weights
      placed += double(phys_e + 1) * double(t) + double(phys_e);
    }
    REQUIRE(placed == plain);  // bit-identical
  }
  V g = routed_gpu_tokens(pl, topk, k, 8);
  int64_t sum = 0;
  for (int64_t v : g) sum += v;
  CHECK(sum == T * k);
  // every replica of a replicated expert is used
  std::set<int64_t> used;
  for (int64_t t = 0; t < T; ++t)
    for (int64_t j = 0; j < k; ++j) used.insert(route_slot(pl, topk[t * k + j], t));
  for (int64_t e = 0; e < 12; ++e)
    for (int64_t r = 0; r < pl.logcnt[e]; ++r) CHECK(used.count(pl.log2phy[e][r]) == 1);
}

namespace {

// Plain-scan references for the EPLB primitives: the definitions the fast paths (radix sort, tournament tree,
// replication heap over the candidates only) must reproduce exactly.
Packing naive_packing(const std::vector<double>& w, int64_t m) {
  const int64_t n = int64_t(w.size()), per = n / m;
  std::vector<int64_t> order(n);
  for (int64_t i = 0; i < n; ++i) order[i] = i;
  std::stable_sort(order.begin(), order.end(), [&](int64_t a, int64_t b) { return w[a] > w[b]; });
  Packing r{V(n), V(n, 0)};
  if (per == 1) {  // EPLB: one item per pack is the identity
    for (int64_t i = 0; i < n; ++i) r.pack[i] = i;
    return r;
  }
  std::vector<double> load(m, 0.0);
  V items(m, 0);
  for (int64_t i : order) {
    int64_t best = -1;
    for (int64_t p = 0; p < m; ++p)
      if (items[p] < per && (best < 0 || load[p] < load[best])) best = p;
    r.pack[i] = best;
    r.rank[i] = items[best]++;
    load[best] += w[i];
  }
  return r;
}

Replication naive_replicate(const std::vector<double>& w, int64_t n_phy) {
  const int64_t n_log = int64_t(w.size());
  Replication r{V(n_phy), V(n_phy, 0), V(n_log, 1)};
  for (int64_t e = 0; e < n_log; ++e) r.phy2log[e] = e;
  for (int64_t s = n_log; s < n_phy; ++s) {
    int64_t best = 0;
    for (int64_t e = 1; e < n_log; ++e)
      if (w[e] / double(r.cnt[e]) > w[best] / double(r.cnt[best])) best = e;
    r.phy2log[s] = best;
    r.rank[s] = r.cnt[best]++;
  }
  return r;
}

}  // namespace

TEST_CASE("packing and replication match plain scans (ties, zeros, -0, negative, huge, many items)") {
  std::mt19937_64 rng(11);
  auto pick = [&](int64_t n) { return int64_t(rng() % uint64_t(n)); };
  for (int t = 0; t < 3000; ++t) {
    const int64_t m = 1 + pick(t % 3 == 0 ? 40 : 12), per = 1 + pick(12), n = m * per;  // n up to 480 (radix sort)
    std::vector<double> w(n);
    const int kind = int(pick(6));
    for (double& v : w) {
      switch (kind) {
        case 0: v = double(pick(7)); break;                               // many ties
        case 1: v = pick(2) ? -0.0 : 0.0; break;                          // all zero, both signs
        case 2: v = double(pick(2001)) / 7.0 - 100.0; break;              // negative and fractional
        case 3: v = double(pick(3)) * 1e300; break;                       // sums overflow: the heap path
        case 4: v = pick(5) ? double(pick(100)) : std::numeric_limits<double>::infinity(); break;
        default: v = std::round(10000.0 / std::pow(double(pick(n) + 1), 0.9)) / double(1 + pick(3)); break;
      }
    }
    Packing a = balanced_packing(w, m), b = naive_packing(w, m);
    REQUIRE(a.pack == b.pack);
    REQUIRE(a.rank == b.rank);
    const int64_t extra = pick(n + 1);
    Replication c = replicate_experts(w, n + extra), d = naive_replicate(w, n + extra);
    REQUIRE(c.phy2log == d.phy2log);
    REQUIRE(c.rank == d.rank);
    REQUIRE(c.cnt == d.cnt);
  }
}

TEST_CASE("balanced policy: plan() equals plan_balanced per layer, repeatable, any order of shapes") {
  // The planner reuses per-thread buffers between layers and calls: results must not depend on what ran before.
  struct Case { std::vector<std::vector<double>> loads; Shape s; };
  std::vector<Case> cases = {{testing::zipf_loads(3, 256, 5, 0.9), {288, 8, 4, 32}},
                             {testing::zipf_loads(3, 16, 6, 1.1), {24, 4, 2, 8}},
                             {testing::zipf_loads(3, 160, 7, 0.7), {192, 1, 1, 16}},
                             {testing::zipf_loads(3, 60, 8, 0.8), {72, 5, 3, 12}}};  // E % G != 0: global
  std::vector<std::vector<LayerPlacement>> first;
  for (const Case& c : cases) first.push_back(plan(c.loads, c.s, Policy::balanced));
  for (int round = 0; round < 2; ++round) {
    for (size_t i = cases.size(); i-- > 0;) {  // reverse order: other buffer sizes in between
      const Case& c = cases[i];
      auto again = plan(c.loads, c.s, Policy::balanced);
      for (size_t l = 0; l < c.loads.size(); ++l) {
        CHECK(again[l].phy2log == first[i][l].phy2log);
        CHECK(again[l].log2phy == first[i][l].log2phy);
        CHECK(again[l].gpu_load == first[i][l].gpu_load);
        LayerPlacement one = plan_balanced(c.loads[l], c.s);
        CHECK(one.phy2log == again[l].phy2log);
        CHECK(one.logcnt == again[l].logcnt);
        CHECK(one.phyrank == again[l].phyrank);
        CHECK(one.gpu_load == again[l].gpu_load);
        for (size_t e = 0; e < one.log2phy.size(); ++e) {  // plan() pads every row to the widest layer
          V row = again[l].log2phy[e];
          for (size_t r = one.log2phy[e].size(); r < row.size(); ++r) CHECK(row[r] == -1);
          row.resize(one.log2phy[e].size());
          CHECK(row == one.log2phy[e]);
        }
        check_valid(again[l], c.loads[l], c.s);
      }
    }
  }
}

TEST_CASE("balanced policy with negative, zero and tied loads stays valid and never worse than EPLB") {
  // Negative loads take the search's general path (no pruning by sorted windows), all-zero and tied loads test
  // the tie rules; EPLB's plan must be kept whenever the search does not strictly beat it.
  const Shape s{24, 4, 2, 8};
  std::vector<std::vector<double>> loads = {
      std::vector<double>(16, 0.0), std::vector<double>(16, 5.0),
      {9, -3, 7, 7, 0, 12, -1, 4, 4, 4, 30, 2, 8, 8, -0.5, 1},
      {1e-300, 0, 3, 3, 3, 3, 100, 0, 0, 0, 0, 50, 50, 0, 1, 2}};
  auto e = plan(loads, s, Policy::hierarchical);
  auto b = plan(loads, s, Policy::balanced);
  for (size_t l = 0; l < loads.size(); ++l) {
    check_valid(b[l], loads[l], s);
    CHECK(max_of(b[l].gpu_load) <= max_of(e[l].gpu_load));
    if (!(max_of(b[l].gpu_load) < max_of(e[l].gpu_load))) CHECK(b[l].phy2log == e[l].phy2log);  // EPLB's own plan
  }
  CHECK(b[0].phy2log == e[0].phy2log);  // nothing to improve on all-zero loads
}
