// Redundant-expert placement: EPLB's greedy (MODEL.md §5), exactly, and the balanced policy. See placement.h.
#include "balance/placement.h"

#include <algorithm>
#include <cmath>
#include <numeric>

#include "core/error.h"

namespace ds::balance {

Policy parse_policy(const std::string& name) {
  if (name == "hierarchical") return Policy::hierarchical;
  if (name == "global") return Policy::global;
  if (name == "balanced") return Policy::balanced;
  throw_usage("unknown policy '" + name + "' (expected balanced, hierarchical or global)");
}

std::string policy_name(Policy p) {
  switch (p) {
    case Policy::hierarchical: return "hierarchical";
    case Policy::global: return "global";
    default: return "balanced";
  }
}

void validate_shape(int64_t E, const Shape& s, Policy p) {
  auto n = [](int64_t v) { return std::to_string(v); };
  if (E < 1) throw_usage("no experts to place");
  if (s.slots < 1 || s.gpus < 1 || s.nodes < 1 || s.groups < 1)
    throw_usage("--slots, --gpus, --nodes and --groups must be positive");
  if (s.slots < E)
    throw_usage("--slots " + n(s.slots) + " is fewer than the " + n(E) + " experts (every expert needs a slot)");
  if (s.slots % s.gpus != 0)
    throw_usage("--slots " + n(s.slots) + " is not a multiple of --gpus " + n(s.gpus) + " (R % P must be 0)");
  if (s.gpus % s.nodes != 0)
    throw_usage("--gpus " + n(s.gpus) + " is not a multiple of --nodes " + n(s.nodes) + " (P % N must be 0)");
  if (p == Policy::hierarchical) {
    if (E % s.groups != 0)
      throw_usage("hierarchical policy: " + n(E) + " experts do not split into --groups " + n(s.groups) +
                  " (E % G must be 0)");
    if (s.groups % s.nodes != 0)
      throw_usage("hierarchical policy: --groups " + n(s.groups) + " is not a multiple of --nodes " + n(s.nodes) +
                  " (G % N must be 0)");
  }
}

namespace {

// Buffers reused from layer to layer (one set per thread): once warm, planning a layer allocates only its result.
struct Scratch {
  std::vector<std::pair<double, int64_t>> key, heap;  // pack_into, replicate_into
  std::vector<int64_t> items;                          // pack_into
  std::vector<double> gw, mw, tw, nodew;               // eplb_core, eplb_node_bound
  std::vector<int64_t> gpack, grank, mlog2log, rphy, rrank, rcnt, ppack, prank, phyrank;
};

Scratch& scratch() {
  thread_local Scratch s;
  return s;
}

// balanced_packing into pack[n] / rank[n].
void pack_into(const double* w, int64_t n, int64_t m, int64_t* pack, int64_t* rank, Scratch& k) {
  const int64_t per = n / m;
  if (per == 1) {
    for (int64_t i = 0; i < n; ++i) pack[i] = i, rank[i] = 0;
    return;
  }
  // descending by weight, stable (lower index first among equal weights)
  auto& key = k.key;
  key.resize(n);
  for (int64_t i = 0; i < n; ++i) key[i] = {-w[i], i};
  std::sort(key.begin(), key.end(), [](const std::pair<double, int64_t>& a, const std::pair<double, int64_t>& b) {
    return a.first < b.first || (a.first == b.first && a.second < b.second);
  });
  // Min-heap of the non-full packs by (weight, index): the same choice as a scan for the lightest pack with the
  // lowest index on ties, in O(log m). Equal weights in index order already form a valid heap.
  using Entry = std::pair<double, int64_t>;
  auto& heap = k.heap;
  heap.resize(m);
  for (int64_t p = 0; p < m; ++p) heap[p] = {0.0, p};
  k.items.assign(m, 0);
  int64_t* items = k.items.data();
  auto cmp = [](const Entry& a, const Entry& b) {
    return a.first > b.first || (a.first == b.first && a.second > b.second);
  };
  for (const auto& kv : key) {
    const int64_t i = kv.second;
    std::pop_heap(heap.begin(), heap.end(), cmp);
    Entry& top = heap.back();
    const int64_t best = top.second;
    pack[i] = best;
    rank[i] = items[best]++;
    top.first += w[i];
    if (items[best] == per)
      heap.pop_back();
    else
      std::push_heap(heap.begin(), heap.end(), cmp);
  }
}

// replicate_experts into phy2log[n_phy] / rank[n_phy] / cnt[n_log].
void replicate_into(const double* w, int64_t n_log, int64_t n_phy, int64_t* phy2log, int64_t* rank, int64_t* cnt,
                    Scratch& k) {
  for (int64_t e = 0; e < n_log; ++e) phy2log[e] = e, rank[e] = 0, cnt[e] = 1;
  if (n_phy == n_log) return;
  // Max-heap by (w/cnt, lowest index on ties): the same choice as a scan for the first maximum, in O(log n).
  using Entry = std::pair<double, int64_t>;
  auto cmp = [](const Entry& a, const Entry& b) { return a.first < b.first || (a.first == b.first && a.second > b.second); };
  auto& heap = k.heap;
  heap.resize(n_log);
  for (int64_t e = 0; e < n_log; ++e) heap[e] = {w[e], e};
  std::make_heap(heap.begin(), heap.end(), cmp);
  for (int64_t s = n_log; s < n_phy; ++s) {
    std::pop_heap(heap.begin(), heap.end(), cmp);
    const int64_t best = heap.back().second;
    phy2log[s] = best;
    rank[s] = cnt[best]++;
    heap.back().first = w[best] / double(cnt[best]);
    std::push_heap(heap.begin(), heap.end(), cmp);
  }
}

}  // namespace

Packing balanced_packing(const std::vector<double>& w, int64_t m) {
  const int64_t n = int64_t(w.size());
  DS_CHECK(m >= 1 && n % m == 0, "balanced_packing: n % m != 0");
  Packing r{std::vector<int64_t>(n), std::vector<int64_t>(n, 0)};
  pack_into(w.data(), n, m, r.pack.data(), r.rank.data(), scratch());
  return r;
}

Replication replicate_experts(const std::vector<double>& w, int64_t n_phy) {
  const int64_t n_log = int64_t(w.size());
  DS_CHECK(n_phy >= n_log, "replicate_experts: fewer slots than experts");
  Replication r{std::vector<int64_t>(n_phy), std::vector<int64_t>(n_phy, 0), std::vector<int64_t>(n_log, 1)};
  replicate_into(w.data(), n_log, n_phy, r.phy2log.data(), r.rank.data(), r.cnt.data(), scratch());
  return r;
}

bool eplb_default_hierarchical(int64_t E, const Shape& s) {
  return s.groups >= 1 && E % s.groups == 0 && s.groups % s.nodes == 0;
}

std::vector<double> gpu_loads(const std::vector<double>& load, const std::vector<int64_t>& phy2log,
                              const std::vector<int64_t>& logcnt, int64_t gpus) {
  std::vector<double> g(gpus, 0.0);
  const int64_t spg = int64_t(phy2log.size()) / gpus;
  for (size_t p = 0; p < phy2log.size(); ++p) g[p / spg] += load[phy2log[p]] / double(logcnt[phy2log[p]]);
  return g;
}

std::vector<double> gpu_loads_unreplicated(const std::vector<double>& load, int64_t gpus) {
  std::vector<double> g(gpus, 0.0);
  const int64_t E = int64_t(load.size());
  for (int64_t e = 0; e < E; ++e) g[e * gpus / E] += load[e];
  return g;
}

double max_over_mean(const std::vector<double>& g) {
  double mx = 0, sum = 0;
  for (double v : g) mx = std::max(mx, v), sum += v;
  if (sum <= 0) return 1.0;
  return mx / (sum / double(g.size()));
}

double lower_bound(const std::vector<double>& load, const Shape& s) {
  double total = std::accumulate(load.begin(), load.end(), 0.0);
  Replication r = replicate_experts(load, s.slots);
  double rep = 0;
  for (size_t e = 0; e < load.size(); ++e) rep = std::max(rep, load[e] / double(r.cnt[e]));
  return std::max(total / double(s.gpus), rep);
}

namespace {

// log2phy [E][width] from phyrank: slot p is replica phyrank[p] of expert phy2log[p] (EPLB's scatter).
void scatter_log2phy(LayerPlacement& pl, int64_t E, int64_t width) {
  pl.log2phy.assign(E, std::vector<int64_t>(width, -1));
  for (size_t p = 0; p < pl.phy2log.size(); ++p) pl.log2phy[pl.phy2log[p]][pl.phyrank[p]] = int64_t(p);
}

// phyrank in ascending slot order per expert.
void rank_in_slot_order(LayerPlacement& pl, int64_t E, Scratch& k) {
  pl.phyrank.resize(pl.phy2log.size());
  k.rcnt.assign(E, 0);
  for (size_t p = 0; p < pl.phy2log.size(); ++p) pl.phyrank[p] = k.rcnt[pl.phy2log[p]]++;
}

int64_t max_count(const LayerPlacement& pl) { return *std::max_element(pl.logcnt.begin(), pl.logcnt.end()); }

double max_of(const std::vector<double>& v) { return *std::max_element(v.begin(), v.end()); }

// EPLB's greedy for one layer (s already reduced to G = N = 1 for the global policy) into phy2log [R],
// phyrank [R] and logcnt [E]; the shape is validated by the caller.
void eplb_core(const double* w, int64_t E, const Shape& s, int64_t* phy2log, int64_t* phyrank, int64_t* logcnt,
               Scratch& k) {
  const int64_t R = s.slots, G = s.groups, N = s.nodes, P = s.gpus;
  const int64_t gs = E / G, gpn = G / N, spg = R / P, epn = E / N, rpn = R / N, gpus_pn = P / N;

  // 1. groups to nodes
  k.gw.assign(G, 0.0);
  for (int64_t e = 0; e < E; ++e) k.gw[e / gs] += w[e];
  k.gpack.resize(G);
  k.grank.resize(G);
  pack_into(k.gw.data(), G, N, k.gpack.data(), k.grank.data(), k);
  k.mlog2log.resize(E);
  int64_t* mlog2log = k.mlog2log.data();
  for (int64_t e = 0; e < E; ++e) {
    const int64_t g = e / gs;
    mlog2log[(k.gpack[g] * gpn + k.grank[g]) * gs + e % gs] = e;
  }
  k.mw.resize(epn);
  k.rcnt.resize(epn);
  k.rphy.resize(rpn);
  k.rrank.resize(rpn);
  k.tw.resize(rpn);
  k.ppack.resize(rpn);
  k.prank.resize(rpn);
  double* mw = k.mw.data();
  double* tw = k.tw.data();
  int64_t *rphy = k.rphy.data(), *rrank = k.rrank.data(), *rcnt = k.rcnt.data();
  for (int64_t node = 0; node < N; ++node) {
    const int64_t* mlog = mlog2log + node * epn;
    // 2. replicate within the node
    for (int64_t i = 0; i < epn; ++i) mw[i] = w[mlog[i]];
    replicate_into(mw, epn, rpn, rphy, rrank, rcnt, k);
    // 3. replicas to the node's GPUs
    for (int64_t p = 0; p < rpn; ++p) tw[p] = mw[rphy[p]] / double(rcnt[rphy[p]]);
    pack_into(tw, rpn, gpus_pn, k.ppack.data(), k.prank.data(), k);
    for (int64_t p = 0; p < rpn; ++p) {
      const int64_t slot = node * rpn + k.ppack[p] * spg + k.prank[p];
      phy2log[slot] = mlog[rphy[p]];
      phyrank[slot] = rrank[p];
    }
    for (int64_t i = 0; i < epn; ++i) logcnt[mlog[i]] = rcnt[i];
  }
}

// EPLB's plan of one layer without log2phy.
LayerPlacement eplb_layer(const std::vector<double>& w, const Shape& s0, bool hierarchical) {
  const int64_t E = int64_t(w.size());
  Shape s = s0;
  if (!hierarchical) s.groups = 1, s.nodes = 1;
  validate_shape(E, s, Policy::hierarchical);
  LayerPlacement pl;
  pl.phy2log.resize(s.slots);
  pl.phyrank.resize(s.slots);
  pl.logcnt.resize(E);
  eplb_core(w.data(), E, s, pl.phy2log.data(), pl.phyrank.data(), pl.logcnt.data(), scratch());
  pl.gpu_load = gpu_loads(w, pl.phy2log, pl.logcnt, s.gpus);
  return pl;
}

// A lower bound on the max GPU load of EPLB's hierarchical plan, from its first step alone: the groups' packing
// onto nodes fixes each node's total, and some GPU of the heaviest node carries at least total / (P / N).
double eplb_node_bound(const double* w, int64_t E, const Shape& s, Scratch& k) {
  const int64_t G = s.groups, N = s.nodes, gs = E / G;
  k.gw.assign(G, 0.0);
  for (int64_t e = 0; e < E; ++e) k.gw[e / gs] += w[e];
  k.gpack.resize(G);
  k.grank.resize(G);
  pack_into(k.gw.data(), G, N, k.gpack.data(), k.grank.data(), k);
  k.nodew.assign(N, 0.0);
  for (int64_t g = 0; g < G; ++g) k.nodew[k.gpack[g]] += k.gw[g];
  return *std::max_element(k.nodew.begin(), k.nodew.end()) / double(s.gpus / N);
}

// Local search state over one layer: slot contents, replica counts, per-slot and per-GPU loads.
struct Search {
  const double* w = nullptr;
  int64_t E = 0, R = 0, P = 0, spg = 0;
  std::vector<int64_t> phy2log, cnt;
  std::vector<double> gl;
  std::vector<double> sw;  // load of the replica in each slot: w / cnt
  std::vector<int64_t> order, donors, start, flat, fill;
  std::vector<double> g;
  double start_max = 0;  // max GPU load of the starting plan

  void reset(const double* w_, int64_t E_, int64_t R_, int64_t P_) {
    w = w_, E = E_, R = R_, P = P_, spg = R_ / P_;
    phy2log.resize(R);
    cnt.resize(E);
  }

  void recompute() {
    sw.resize(R);
    for (int64_t p = 0; p < R; ++p) sw[p] = w[phy2log[p]] / double(cnt[phy2log[p]]);
    gl.assign(P, 0.0);
    for (int64_t p = 0; p < R; ++p) gl[p / spg] += sw[p];
  }
  int64_t argmax() const { return int64_t(std::max_element(gl.begin(), gl.end()) - gl.begin()); }

  // A swap of a replica on the hottest GPU h with a lighter replica on another GPU g that lowers max(L_h, L_g):
  // the GPUs are tried from the least loaded up, and the best swap with the first GPU that has one is made.
  // Each swap strictly lowers the sum of squared GPU loads, so the search terminates.
  // The best improving swap between h and g, made; false when there is none.
  bool try_swap(int64_t h, int64_t g, double eps) {
    const double Lh = gl[h], Lg = gl[g];
    const double* hs = sw.data() + h * spg;
    const double* gs = sw.data() + g * spg;
    double best = Lh - eps;
    int64_t bs = -1, bt = -1;
    for (int64_t i = 0; i < spg; ++i) {
      const double a = hs[i];
      for (int64_t j = 0; j < spg; ++j) {
        const double d = a - gs[j];
        const double m = std::max(Lh - d, Lg + d);
        if (d > 0 && m < best) best = m, bs = h * spg + i, bt = g * spg + j;
      }
    }
    if (bs < 0) return false;
    const double d = sw[bs] - sw[bt];
    gl[h] -= d;
    gl[g] += d;
    std::swap(phy2log[bs], phy2log[bt]);
    std::swap(sw[bs], sw[bt]);
    return true;
  }

  bool swap_step() {
    const int64_t h = argmax();
    const double Lh = gl[h], eps = 1e-12 * std::max(1.0, Lh);
    const int64_t g0 = int64_t(std::min_element(gl.begin(), gl.end()) - gl.begin());
    if (g0 == h || gl[g0] >= Lh - eps) return false;
    if (try_swap(h, g0, eps)) return true;  // the usual case: the lightest GPU takes the swap
    order.resize(P);
    std::iota(order.begin(), order.end(), 0);
    std::sort(order.begin(), order.end(), [&](int64_t a, int64_t b) { return gl[a] < gl[b] || (gl[a] == gl[b] && a < b); });
    for (int64_t g : order) {
      if (g == h || gl[g] >= Lh - eps) break;
      if (g != g0 && try_swap(h, g, eps)) return true;
    }
    return false;
  }

  // Moves one slot from a donor expert (cnt > 1) to an expert with a replica on the hottest GPU when that lowers
  // the max GPU load. Tries the few donors whose remaining replicas would stay lightest.
  bool recount_step() {
    const int64_t h = argmax();
    const double cur = gl[h], eps = 1e-12 * std::max(1.0, cur);
    donors.clear();
    for (int64_t e = 0; e < E; ++e)
      if (cnt[e] > 1) donors.push_back(e);
    if (donors.empty()) return false;
    auto after = [&](int64_t e) { return w[e] / double(cnt[e] - 1); };
    const size_t keep = std::min<size_t>(4, donors.size());
    std::partial_sort(donors.begin(), donors.begin() + keep, donors.end(),
                      [&](int64_t a, int64_t b) { return after(a) < after(b); });
    donors.resize(keep);
    // slots of each expert, as a flat list (start[e] .. start[e + 1])
    start.assign(E + 1, 0);
    flat.resize(R);
    for (int64_t p = 0; p < R; ++p) ++start[phy2log[p] + 1];
    for (int64_t e = 0; e < E; ++e) start[e + 1] += start[e];
    fill.assign(start.begin(), start.end() - 1);
    for (int64_t p = 0; p < R; ++p) flat[fill[phy2log[p]]++] = p;

    double best = cur - eps;
    int64_t bx = -1, by = -1, bslot = -1;
    for (int64_t i = h * spg; i < (h + 1) * spg; ++i) {
      const int64_t x = phy2log[i];
      for (int64_t y : donors) {
        if (y == x) continue;
        const int64_t* yb = flat.data() + start[y];
        const int64_t* ye = flat.data() + start[y + 1];
        const int64_t* xb = flat.data() + start[x];
        const int64_t* xe = flat.data() + start[x + 1];
        int64_t slot = *yb;  // the donor slot: y's replica on the least loaded GPU
        for (const int64_t* q = yb; q != ye; ++q)
          if (gl[*q / spg] < gl[slot / spg]) slot = *q;
        g = gl;
        const double dx = w[x] / double(cnt[x] + 1) - w[x] / double(cnt[x]);
        const double dy = w[y] / double(cnt[y] - 1) - w[y] / double(cnt[y]);
        for (const int64_t* q = xb; q != xe; ++q) g[*q / spg] += dx;
        for (const int64_t* q = yb; q != ye; ++q) g[*q / spg] += *q == slot ? w[x] / double(cnt[x] + 1) - sw[*q] : dy;
        const double m = *std::max_element(g.begin(), g.end());
        if (m < best) best = m, bx = x, by = y, bslot = slot;
      }
    }
    if (bx < 0) return false;
    phy2log[bslot] = bx;
    ++cnt[bx];
    --cnt[by];
    recompute();
    return true;
  }

  void improve() {
    recompute();
    start_max = max_of(gl);
    for (int round = 0; round < 16; ++round) {
      for (int it = 0; it < 4096 && swap_step(); ++it) {
      }
      if (!recount_step()) break;
    }
  }
};

Search& search_state() {
  thread_local Search s;
  return s;
}

// The balanced plan of one layer without log2phy; eplb_plan tells whether EPLB's plan was kept (its log2phy is
// then EPLB's scatter by phyrank, as plan_eplb has it).
LayerPlacement balanced_layer(const std::vector<double>& w, const Shape& s, bool& eplb_plan) {
  const int64_t E = int64_t(w.size());
  validate_shape(E, s, Policy::balanced);
  const bool hier = eplb_default_hierarchical(E, s) && (s.groups != 1 || s.nodes != 1);
  Scratch& k = scratch();
  // The local search starts from the global greedy plan (no node constraint, so its packing is the better start);
  // EPLB's own plan is the one to beat. Without hierarchy the start is EPLB's plan itself.
  Search& S = search_state();
  S.reset(w.data(), E, s.slots, s.gpus);
  Shape glob = s;
  glob.groups = 1, glob.nodes = 1;
  k.phyrank.resize(s.slots);
  eplb_core(w.data(), E, glob, S.phy2log.data(), k.phyrank.data(), S.cnt.data(), k);
  S.improve();
  S.recompute();
  const double mine = max_of(S.gl);
  bool better;
  if (!hier) {
    better = mine < S.start_max;
  } else {
    // EPLB's plan is worse whenever ours is below a lower bound on its max (the usual case, decided without running
    // EPLB's replication and packing). The margin covers rounding: the bound sums the loads in another order.
    bool nonneg = true;
    for (double v : w) nonneg &= v >= 0;
    better = nonneg && mine < eplb_node_bound(w.data(), E, s, k) * (1 - 1e-9);
  }
  if (!better) {
    LayerPlacement base = eplb_layer(w, s, hier);
    if (!(mine < max_of(base.gpu_load))) {
      eplb_plan = true;
      return base;
    }
  }
  eplb_plan = false;
  LayerPlacement pl;
  pl.phy2log = S.phy2log;
  pl.logcnt = S.cnt;
  pl.gpu_load = S.gl;
  rank_in_slot_order(pl, E, k);
  return pl;
}

}  // namespace

void fill_log2phy(LayerPlacement& pl, int64_t E, int64_t width) {
  rank_in_slot_order(pl, E, scratch());
  scatter_log2phy(pl, E, width);
}

LayerPlacement plan_eplb(const std::vector<double>& w, const Shape& s, bool hierarchical) {
  LayerPlacement pl = eplb_layer(w, s, hierarchical);
  scatter_log2phy(pl, int64_t(w.size()), max_count(pl));
  return pl;
}

LayerPlacement plan_balanced(const std::vector<double>& w, const Shape& s) {
  bool eplb_plan = false;
  LayerPlacement pl = balanced_layer(w, s, eplb_plan);
  scatter_log2phy(pl, int64_t(w.size()), max_count(pl));
  return pl;
}

std::vector<LayerPlacement> plan(const std::vector<std::vector<double>>& loads, const Shape& s, Policy p) {
  std::vector<LayerPlacement> out;
  if (loads.empty()) return out;
  const int64_t E = int64_t(loads[0].size());
  validate_shape(E, s, p);
  out.reserve(loads.size());
  int64_t width = 1;
  for (const auto& w : loads) {
    DS_CHECK(int64_t(w.size()) == E, "plan: layers of different widths");
    bool eplb_plan = true;
    if (p == Policy::balanced)
      out.push_back(balanced_layer(w, s, eplb_plan));
    else
      out.push_back(eplb_layer(w, s, p == Policy::hierarchical));
    width = std::max(width, max_count(out.back()));
  }
  // log2phy once, at the width common to all layers
  for (auto& l : out) scatter_log2phy(l, E, width);
  return out;
}

std::vector<int64_t> routed_gpu_tokens(const LayerPlacement& pl, const std::vector<int64_t>& topk, int64_t k,
                                       int64_t gpus) {
  std::vector<int64_t> g(gpus, 0);
  const int64_t spg = int64_t(pl.phy2log.size()) / gpus;
  for (size_t i = 0; i < topk.size(); ++i) ++g[route_slot(pl, topk[i], int64_t(i) / k) / spg];
  return g;
}

}  // namespace ds::balance
