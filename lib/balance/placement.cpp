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

Packing balanced_packing(const std::vector<double>& w, int64_t m) {
  const int64_t n = int64_t(w.size());
  DS_CHECK(m >= 1 && n % m == 0, "balanced_packing: n % m != 0");
  Packing r{std::vector<int64_t>(n), std::vector<int64_t>(n, 0)};
  const int64_t per = n / m;
  if (per == 1) {
    std::iota(r.pack.begin(), r.pack.end(), 0);
    return r;
  }
  // descending by weight, stable (lower index first among equal weights)
  std::vector<std::pair<double, int64_t>> key(n);
  for (int64_t i = 0; i < n; ++i) key[i] = {-w[i], i};
  std::sort(key.begin(), key.end(), [](const std::pair<double, int64_t>& a, const std::pair<double, int64_t>& b) {
    return a.first < b.first || (a.first == b.first && a.second < b.second);
  });
  std::vector<int64_t> order(n);
  for (int64_t i = 0; i < n; ++i) order[i] = key[i].second;
  // Min-heap of the non-full packs by (weight, index): the same choice as a scan for the lightest pack with the
  // lowest index on ties, in O(log m).
  using Entry = std::pair<double, int64_t>;
  std::vector<Entry> heap(m);
  for (int64_t p = 0; p < m; ++p) heap[p] = {0.0, p};
  std::vector<int64_t> items(m, 0);
  auto cmp = [](const Entry& a, const Entry& b) {
    return a.first > b.first || (a.first == b.first && a.second > b.second);
  };
  for (int64_t i : order) {
    std::pop_heap(heap.begin(), heap.end(), cmp);
    Entry& top = heap.back();
    const int64_t best = top.second;
    r.pack[i] = best;
    r.rank[i] = items[best]++;
    top.first += w[i];
    if (items[best] == per)
      heap.pop_back();
    else
      std::push_heap(heap.begin(), heap.end(), cmp);
  }
  return r;
}

Replication replicate_experts(const std::vector<double>& w, int64_t n_phy) {
  const int64_t n_log = int64_t(w.size());
  DS_CHECK(n_phy >= n_log, "replicate_experts: fewer slots than experts");
  Replication r{std::vector<int64_t>(n_phy), std::vector<int64_t>(n_phy, 0), std::vector<int64_t>(n_log, 1)};
  std::iota(r.phy2log.begin(), r.phy2log.begin() + n_log, 0);
  if (n_phy == n_log) return r;
  // Max-heap by (w/cnt, lowest index on ties): the same choice as a scan for the first maximum, in O(log n).
  using Entry = std::pair<double, int64_t>;
  auto cmp = [](const Entry& a, const Entry& b) { return a.first < b.first || (a.first == b.first && a.second > b.second); };
  std::vector<Entry> heap(n_log);
  for (int64_t e = 0; e < n_log; ++e) heap[e] = {w[e], e};
  std::make_heap(heap.begin(), heap.end(), cmp);
  for (int64_t s = n_log; s < n_phy; ++s) {
    std::pop_heap(heap.begin(), heap.end(), cmp);
    const int64_t best = heap.back().second;
    r.phy2log[s] = best;
    r.rank[s] = r.cnt[best]++;
    heap.back().first = w[best] / double(r.cnt[best]);
    std::push_heap(heap.begin(), heap.end(), cmp);
  }
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

void fill_log2phy(LayerPlacement& pl, int64_t E, int64_t width) {
  pl.log2phy.assign(E, std::vector<int64_t>(width, -1));
  pl.phyrank.assign(pl.phy2log.size(), 0);
  std::vector<int64_t> seen(E, 0);
  for (size_t p = 0; p < pl.phy2log.size(); ++p) {
    int64_t e = pl.phy2log[p];
    pl.phyrank[p] = seen[e];
    pl.log2phy[e][seen[e]++] = int64_t(p);
  }
}

namespace {

LayerPlacement eplb_impl(const std::vector<double>& w, const Shape& s0, bool hierarchical, bool with_log2phy) {
  const int64_t E = int64_t(w.size());
  Shape s = s0;
  if (!hierarchical) s.groups = 1, s.nodes = 1;
  validate_shape(E, s, Policy::hierarchical);
  const int64_t R = s.slots, G = s.groups, N = s.nodes, P = s.gpus;
  const int64_t gs = E / G, gpn = G / N, spg = R / P, epn = E / N, rpn = R / N, gpus_pn = P / N;

  // 1. groups to nodes
  std::vector<double> gw(G, 0.0);
  for (int64_t e = 0; e < E; ++e) gw[e / gs] += w[e];
  Packing gp = balanced_packing(gw, N);
  std::vector<int64_t> log2mlog(E), mlog2log(E);
  for (int64_t e = 0; e < E; ++e) {
    int64_t g = e / gs;
    log2mlog[e] = (gp.pack[g] * gpn + gp.rank[g]) * gs + e % gs;
    mlog2log[log2mlog[e]] = e;
  }
  LayerPlacement pl;
  pl.phy2log.assign(R, 0);
  pl.phyrank.assign(R, 0);
  pl.logcnt.assign(E, 0);
  for (int64_t node = 0; node < N; ++node) {
    // 2. replicate within the node
    std::vector<double> mw(epn);
    for (int64_t i = 0; i < epn; ++i) mw[i] = w[mlog2log[node * epn + i]];
    Replication rep = replicate_experts(mw, rpn);
    // 3. replicas to the node's GPUs
    std::vector<double> tw(rpn);
    for (int64_t p = 0; p < rpn; ++p) tw[p] = mw[rep.phy2log[p]] / double(rep.cnt[rep.phy2log[p]]);
    Packing pk = balanced_packing(tw, gpus_pn);
    for (int64_t p = 0; p < rpn; ++p) {
      int64_t pphy = pk.pack[p] * spg + pk.rank[p];
      pl.phy2log[node * rpn + pphy] = mlog2log[node * epn + rep.phy2log[p]];
      pl.phyrank[node * rpn + pphy] = rep.rank[p];
    }
    for (int64_t i = 0; i < epn; ++i) pl.logcnt[mlog2log[node * epn + i]] = rep.cnt[i];
  }
  pl.gpu_load = gpu_loads(w, pl.phy2log, pl.logcnt, P);
  if (!with_log2phy) return pl;
  // 4. log2phy from phyrank (EPLB's scatter)
  int64_t width = *std::max_element(pl.logcnt.begin(), pl.logcnt.end());
  pl.log2phy.assign(E, std::vector<int64_t>(width, -1));
  for (int64_t p = 0; p < R; ++p) pl.log2phy[pl.phy2log[p]][pl.phyrank[p]] = p;
  return pl;
}

}  // namespace

LayerPlacement plan_eplb(const std::vector<double>& w, const Shape& s, bool hierarchical) {
  return eplb_impl(w, s, hierarchical, true);
}

namespace {

// Local search state over one layer: slot contents, replica counts, per-slot and per-GPU loads.
struct Search {
  const std::vector<double>& w;
  int64_t P, spg;
  std::vector<int64_t> phy2log, cnt;
  std::vector<double> gl;
  std::vector<double> sw;  // load of the replica in each slot: w / cnt
  std::vector<int64_t> order;

  void recompute() {
    sw.resize(phy2log.size());
    for (size_t p = 0; p < phy2log.size(); ++p) sw[p] = w[phy2log[p]] / double(cnt[phy2log[p]]);
    gl.assign(P, 0.0);
    for (size_t p = 0; p < sw.size(); ++p) gl[p / spg] += sw[p];
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
    const int64_t E = int64_t(w.size()), R = int64_t(phy2log.size());
    std::vector<int64_t> donors;
    for (int64_t e = 0; e < E; ++e)
      if (cnt[e] > 1) donors.push_back(e);
    if (donors.empty()) return false;
    auto after = [&](int64_t e) { return w[e] / double(cnt[e] - 1); };
    const size_t keep = std::min<size_t>(4, donors.size());
    std::partial_sort(donors.begin(), donors.begin() + keep, donors.end(),
                      [&](int64_t a, int64_t b) { return after(a) < after(b); });
    donors.resize(keep);
    // slots of each expert, as a flat list (start[e] .. start[e + 1])
    std::vector<int64_t> start(E + 1, 0), flat(R);
    for (int64_t p = 0; p < R; ++p) ++start[phy2log[p] + 1];
    for (int64_t e = 0; e < E; ++e) start[e + 1] += start[e];
    {
      std::vector<int64_t> fill(start.begin(), start.end() - 1);
      for (int64_t p = 0; p < R; ++p) flat[fill[phy2log[p]]++] = p;
    }

    double best = cur - eps;
    int64_t bx = -1, by = -1, bslot = -1;
    std::vector<double> g;
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
    for (int round = 0; round < 16; ++round) {
      for (int it = 0; it < 4096 && swap_step(); ++it) {
      }
      if (!recount_step()) break;
    }
  }
};

double max_of(const std::vector<double>& v) { return *std::max_element(v.begin(), v.end()); }

}  // namespace

LayerPlacement plan_balanced(const std::vector<double>& w, const Shape& s) {
  const int64_t E = int64_t(w.size());
  validate_shape(E, s, Policy::balanced);
  const bool hier = eplb_default_hierarchical(E, s) && (s.groups != 1 || s.nodes != 1);
  LayerPlacement base = eplb_impl(w, s, hier, false);
  // The local search starts from the global greedy plan (no node constraint, so its packing is the better start);
  // EPLB's own plan is the one to beat.
  LayerPlacement glob = hier ? eplb_impl(w, s, false, false) : LayerPlacement{};
  const LayerPlacement& st = hier ? glob : base;
  Search S{w, s.gpus, s.slots / s.gpus, st.phy2log, st.logcnt, {}, {}, {}};
  S.improve();
  S.recompute();
  if (max_of(S.gl) < max_of(base.gpu_load)) {
    base.phy2log = std::move(S.phy2log);
    base.logcnt = std::move(S.cnt);
    base.gpu_load = std::move(S.gl);
    fill_log2phy(base, E, *std::max_element(base.logcnt.begin(), base.logcnt.end()));
    return base;
  }
  // EPLB's plan stays (log2phy exactly as EPLB's scatter)
  return eplb_impl(w, s, hier, true);
}

std::vector<LayerPlacement> plan(const std::vector<std::vector<double>>& loads, const Shape& s, Policy p) {
  std::vector<LayerPlacement> out;
  if (loads.empty()) return out;
  const int64_t E = int64_t(loads[0].size());
  validate_shape(E, s, p);
  for (const auto& w : loads) {
    DS_CHECK(int64_t(w.size()) == E, "plan: layers of different widths");
    if (p == Policy::balanced)
      out.push_back(plan_balanced(w, s));
    else
      out.push_back(plan_eplb(w, s, p == Policy::hierarchical));
  }
  int64_t width = 1;
  for (const auto& l : out) width = std::max(width, *std::max_element(l.logcnt.begin(), l.logcnt.end()));
  for (auto& l : out)
    for (auto& row : l.log2phy) row.resize(width, -1);
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
