// EPLB primitives and the README example (MODEL.md §5.4) reproduced exactly; the balanced policy never worse than
// EPLB on seeded Zipf-like loads; bad shapes; routing tokens over replicas.
#include <catch2/catch.hpp>

#include <algorithm>
#include <map>
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
