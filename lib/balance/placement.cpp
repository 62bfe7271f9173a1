// Redundant-expert placement: EPLB's greedy (MODEL.md §5), exactly, and the balanced policy. See placement.h.
#include "balance/placement.h"

#include <algorithm>
#include <cmath>
#include <cstring>
#include <functional>
#include <limits>
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
  std::vector<unsigned __int128> key;    // sort_desc: keys (few items)
  std::vector<uint64_t> rk;              // sort_desc: radix keys, two buffers
  std::vector<int64_t> ri, order;        // sort_desc: radix index buffer; the sorted order
  std::vector<double> hw;                // heap weights (pack_into, replicate_into)
  std::vector<int64_t> hi, items;        // heap indices; pack_into's item counts
  std::vector<double> gw, mw, tw, nodew;  // eplb_core, eplb_node_bound
  std::vector<int64_t> gpack, grank, mlog2log, rphy, rrank, rcnt, ppack, prank, phyrank;
};

Scratch& scratch() {
  thread_local Scratch s;
  return s;
}

// Hides a value from the optimiser, so that a mask built from a comparison stays arithmetic (GCC otherwise
// turns the select back into a branch).
inline void opaque(int64_t& x) {
#if defined(__GNUC__)
  asm("" : "+r"(x));
#else
  (void)x;
#endif
}

// An unsigned key that orders as the double does (-0 and +0 alike; NaN has some fixed place).
inline uint64_t order_bits(double x) {
  x += 0.0;  // -0 -> +0
  uint64_t u;
  std::memcpy(&u, &x, sizeof u);
  return (u >> 63) ? ~u : (u | (uint64_t(1) << 63));
}

// A binary heap over positions 0..n-1 of (hw, hi), `first(a, b)` true when position a belongs above b; restores
// the heap after the entry at `pos` moved down the order. With a strict total order the top is the unique first
// entry, so any heap layout makes the same choices as std::pop_heap / push_heap.
template <class First>
inline void sift_down(double* hw, int64_t* hi, int64_t n, int64_t pos, First first) {
  const double v = hw[pos];
  const int64_t id = hi[pos];
  for (;;) {
    int64_t c = 2 * pos + 1;
    if (c >= n) break;
    if (c + 1 < n && first(hw[c + 1], hi[c + 1], hw[c], hi[c])) ++c;
    if (!first(hw[c], hi[c], v, id)) break;
    hw[pos] = hw[c], hi[pos] = hi[c];
    pos = c;
  }
  hw[pos] = v, hi[pos] = id;
}

// The items by weight descending, the lower index first among equal weights (std::stable_sort's order).
const int64_t* sort_desc(const double* w, int64_t n, Scratch& k) {
  k.order.resize(n);
  int64_t* order = k.order.data();
  if (n < 96) {  // one 128-bit key per item: (weight descending, index)
    auto& key = k.key;
    key.resize(n);
    for (int64_t i = 0; i < n; ++i) key[i] = (static_cast<unsigned __int128>(~order_bits(w[i])) << 64) | uint64_t(i);
    std::sort(key.begin(), key.end());
    for (int64_t i = 0; i < n; ++i) order[i] = int64_t(uint64_t(key[i]));
    return order;
  }
  // LSD radix sort of the 64-bit keys, a byte a pass, skipping bytes all keys share: stable, so equal weights
  // stay in index order; no comparisons for a branch predictor to miss.
  k.rk.resize(2 * n);
  k.ri.resize(n);
  uint64_t *src = k.rk.data(), *dst = src + n;
  int64_t *si = order, *di = k.ri.data();
  uint32_t hist[8][256] = {};
  for (int64_t i = 0; i < n; ++i) {
    const uint64_t key = ~order_bits(w[i]);
    src[i] = key, si[i] = i;
    for (int b = 0; b < 8; ++b) ++hist[b][(key >> (8 * b)) & 255];
  }
  for (int b = 0; b < 8; ++b) {
    uint32_t* h = hist[b];
    const int shift = 8 * b;
    if (h[(src[0] >> shift) & 255] == uint32_t(n)) continue;
    for (uint32_t v = 0, sum = 0; v < 256; ++v) {
      const uint32_t c = h[v];
      h[v] = sum, sum += c;
    }
    for (int64_t i = 0; i < n; ++i) {
      const uint32_t at = h[(src[i] >> shift) & 255]++;
      dst[at] = src[i], di[at] = si[i];
    }
    std::swap(src, dst);
    std::swap(si, di);
  }
  if (si != order) std::copy(si, si + n, order);
  return order;
}

// balanced_packing into pack[n] / rank[n].
void pack_into(const double* w, int64_t n, int64_t m, int64_t* pack, int64_t* rank, Scratch& k) {
  const int64_t per = n / m;
  if (per == 1) {
    for (int64_t i = 0; i < n; ++i) pack[i] = i, rank[i] = 0;
    return;
  }
  const int64_t* order = sort_desc(w, n, k);
  double mag = 0;  // sum of |w|: finite means no pack load overflows
  for (int64_t i = 0; i < n; ++i) mag += std::fabs(w[i]);
  k.items.assign(m, 0);
  int64_t* items = k.items.data();
  if (mag <= std::numeric_limits<double>::max()) {
    // Tournament tree over the packs (leaves in index order, full packs at +inf): each node holds the load and
    // index of the lighter of its two children, the left one on ties, so the root is the lightest non-full pack
    // with the lowest index. An update replays the matches on the leaf's path against the siblings' winners.
    int64_t size = 1;
    while (size < m) size *= 2;
    k.hw.assign(2 * size, std::numeric_limits<double>::infinity());
    k.hi.resize(2 * size);
    double* tv = k.hw.data();
    int64_t* ti = k.hi.data();
    for (int64_t p = 0; p < m; ++p) tv[size + p] = 0.0;
    for (int64_t p = 0; p < size; ++p) ti[size + p] = p;
    for (int64_t q = size - 1; q >= 1; --q) {
      const int64_t c = tv[2 * q + 1] < tv[2 * q] ? 2 * q + 1 : 2 * q;
      tv[q] = tv[c], ti[q] = ti[c];
    }
    for (int64_t r = 0; r < n; ++r) {
      const int64_t i = order[r];
      const int64_t best = ti[1];
      pack[i] = best;
      rank[i] = items[best]++;
      double v = items[best] == per ? std::numeric_limits<double>::infinity() : tv[size + best] + w[i];
      int64_t id = best;
      int64_t q = size + best;
      tv[q] = v;
      for (; q > 1; q /= 2) {
        const double sv = tv[q ^ 1];
        const int64_t si = ti[q ^ 1];
        // the sibling wins when lighter, or equal and on the left: selected without a branch, as the outcome is
        // a coin toss for a branch predictor
        int64_t take = -int64_t((sv < v) | ((sv == v) & ((q & 1) != 0)));
        opaque(take);
        id ^= (id ^ si) & take;
        v = sv < v ? sv : v;
        tv[q / 2] = v, ti[q / 2] = id;
      }
    }
    return;
  }
  // Min-heap of the non-full packs by (weight, index): the lightest pack, the lowest index on ties, in O(log m).
  // Equal weights in index order already form a valid heap.
  k.hw.assign(m, 0.0);
  k.hi.resize(m);
  double* hw = k.hw.data();
  int64_t* hi = k.hi.data();
  for (int64_t p = 0; p < m; ++p) hi[p] = p;
  auto lighter = [](double wa, int64_t ia, double wb, int64_t ib) { return wa < wb || (wa == wb && ia < ib); };
  int64_t open = m;
  for (int64_t r = 0; r < n; ++r) {
    const int64_t i = order[r];
    const int64_t best = hi[0];
    pack[i] = best;
    rank[i] = items[best]++;
    if (items[best] == per) {  // full: out of the heap
      --open;
      hw[0] = hw[open], hi[0] = hi[open];
    } else {
      hw[0] += w[i];
    }
    sift_down(hw, hi, open, 0, lighter);
  }
}

// replicate_experts into phy2log[n_phy] / rank[n_phy] / cnt[n_log].
void replicate_into(const double* w, int64_t n_log, int64_t n_phy, int64_t* phy2log, int64_t* rank, int64_t* cnt,
                    Scratch& k) {
  for (int64_t e = 0; e < n_log; ++e) phy2log[e] = e, rank[e] = 0, cnt[e] = 1;
  const int64_t extra = n_phy - n_log;
  if (extra == 0) return;
  // Max-heap by (w/cnt, lowest index on ties): the first maximum, in O(log n). Only experts at least as heavy as
  // the extra-th heaviest can get a replica (a lighter one would need all of those replicated first, i.e. `extra`
  // replicas already), so the heap holds just those when the loads are ordered (no NaN).
  k.hi.resize(n_log);
  int64_t* hi = k.hi.data();
  int64_t n = n_log;
  bool ordered = true;
  for (int64_t e = 0; e < n_log; ++e) ordered &= !std::isnan(w[e]);
  if (ordered && extra < n_log / 2) {
    k.hw.assign(w, w + n_log);
    std::nth_element(k.hw.begin(), k.hw.begin() + (extra - 1), k.hw.end(), std::greater<double>());
    const double cut = k.hw[extra - 1];
    n = 0;
    for (int64_t e = 0; e < n_log; ++e)
      if (w[e] >= cut) hi[n++] = e;
  } else {
    for (int64_t e = 0; e < n_log; ++e) hi[e] = e;
  }
  k.hw.resize(n);
  double* hw = k.hw.data();
  for (int64_t j = 0; j < n; ++j) hw[j] = w[hi[j]];
  auto heavier = [](double wa, int64_t ia, double wb, int64_t ib) { return wa > wb || (wa == wb && ia < ib); };
  for (int64_t p = n / 2 - 1; p >= 0; --p) sift_down(hw, hi, n, p, heavier);
  for (int64_t s = n_log; s < n_phy; ++s) {
    const int64_t best = hi[0];
    phy2log[s] = best;
    rank[s] = cnt[best]++;
    hw[0] = w[best] / double(cnt[best]);
    sift_down(hw, hi, n, 0, heavier);
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
  for (int64_t q = 0, p = 0; q < gpus; ++q)
    for (int64_t i = 0; i < spg; ++i, ++p) g[q] += load[phy2log[p]] / double(logcnt[phy2log[p]]);
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
  for (int64_t g = 0, e = 0; g < G; ++g)
    for (int64_t j = 0; j < gs; ++j, ++e) k.gw[g] += w[e];
  k.gpack.resize(G);
  k.grank.resize(G);
  pack_into(k.gw.data(), G, N, k.gpack.data(), k.grank.data(), k);
  k.mlog2log.resize(E);
  int64_t* mlog2log = k.mlog2log.data();
  for (int64_t g = 0, e = 0; g < G; ++g) {
    int64_t* to = mlog2log + (k.gpack[g] * gpn + k.grank[g]) * gs;
    for (int64_t j = 0; j < gs; ++j, ++e) to[j] = e;
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
  for (int64_t g = 0, e = 0; g < G; ++g)
    for (int64_t j = 0; j < gs; ++j, ++e) k.gw[g] += w[e];
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
  // Each GPU's slots by replica load, ascending: sv [R] the loads, so [R] the slot offsets within the GPU. Used
  // when `window` (all loads finite and >= 0, their sum finite) to visit only the swaps that can help.
  std::vector<double> sv;
  std::vector<int64_t> so;
  bool window = false;
  std::vector<int64_t> order, donors, start, flat, fill;
  std::vector<double> g;
  double start_max = 0;  // max GPU load of the starting plan

  void reset(const double* w_, int64_t E_, int64_t R_, int64_t P_) {
    w = w_, E = E_, R = R_, P = P_, spg = R_ / P_;
    phy2log.resize(R);
    cnt.resize(E);
    double total = 0;
    window = true;
    for (int64_t e = 0; e < E; ++e) window &= w[e] >= 0, total += w[e];
    window &= total <= std::numeric_limits<double>::max();  // no NaN, no overflow
  }

  void recompute(bool sorted = true) {
    sw.resize(R);
    for (int64_t p = 0; p < R; ++p) sw[p] = w[phy2log[p]] / double(cnt[phy2log[p]]);
    gl.assign(P, 0.0);
    for (int64_t q = 0, p = 0; q < P; ++q)
      for (int64_t i = 0; i < spg; ++i, ++p) gl[q] += sw[p];
    if (!window || !sorted) return;
    order.resize(P);
    std::iota(order.begin(), order.end(), 0);
    std::sort(order.begin(), order.end(), [&](int64_t a, int64_t b) { return before(a, b); });
    sv.resize(R);
    so.resize(R);
    // Insertion sort of each GPU's few slots, last slot first: EPLB's packing fills a GPU heaviest first, so the
    // starting plan is already in order and this is linear.
    for (int64_t q = 0; q < P; ++q) {
      double* v = sv.data() + q * spg;
      int64_t* o = so.data() + q * spg;
      for (int64_t n = 0; n < spg; ++n) {
        const int64_t i = spg - 1 - n;
        const double x = sw[q * spg + i];
        int64_t k = n;
        for (; k > 0 && v[k - 1] > x; --k) v[k] = v[k - 1], o[k] = o[k - 1];
        v[k] = x, o[k] = i;
      }
    }
  }
  // GPU q's slot at offset i now holds load x: moves it to its place in q's sorted order.
  void resort(int64_t q, int64_t i, double x) {
    double* v = sv.data() + q * spg;
    int64_t* o = so.data() + q * spg;
    int64_t k = 0;
    while (o[k] != i) ++k;
    for (; k > 0 && v[k - 1] > x; --k) v[k] = v[k - 1], o[k] = o[k - 1];
    for (; k + 1 < spg && v[k + 1] < x; ++k) v[k] = v[k + 1], o[k] = o[k + 1];
    v[k] = x, o[k] = i;
  }
  int64_t argmax() const { return int64_t(std::max_element(gl.begin(), gl.end()) - gl.begin()); }

  // A swap of a replica on the hottest GPU h with a lighter replica on another GPU g that lowers max(L_h, L_g):
  // the GPUs are tried from the least loaded up, and the best swap with the first GPU that has one is made.
  // Each swap strictly lowers the sum of squared GPU loads, so the search terminates.
  // The best improving swap between h and g, made; false when there is none. "Best" is the smallest
  // m = max(L_h - d, L_g + d), d = (load leaving h) - (load coming back) > 0, m < L_h - eps, and among equal m the
  // first pair in slot order (h's slot, then g's).
  bool try_swap(int64_t h, int64_t g, double eps) {
    const double Lh = gl[h], Lg = gl[g];
    double best = Lh - eps;
    int64_t bk = -1;  // (h's slot offset) * spg + (g's slot offset)
    if (window) {
      // Only pairs with 0 < d < L_h - L_g (+ a margin far above rounding) can give m < L_h: with both GPUs' loads
      // sorted, those are a sliding window of g's replicas per replica of h.
      const double W = (Lh - Lg) + 1e-9 * std::max(1.0, Lh);
      const double* hv = sv.data() + h * spg;
      const double* gv = sv.data() + g * spg;
      const int64_t* ho = so.data() + h * spg;
      const int64_t* go = so.data() + g * spg;
      int64_t hi = 0;
      for (int64_t i = 0; i < spg; ++i) {
        const double a = hv[i];
        while (hi < spg && gv[hi] < a) ++hi;
        const double t = a - W;
        int64_t lo = hi;  // back from hi: the window is almost always empty, so this is one predictable test
        while (lo > 0 && gv[lo - 1] >= t) --lo;
        for (int64_t j = lo; j < hi; ++j) {
          const double d = a - gv[j];
          const double m = std::max(Lh - d, Lg + d);
          const int64_t k = ho[i] * spg + go[j];
          if (d > 0 && (m < best || (m == best && k < bk))) best = m, bk = k;
        }
      }
    } else {
      const double* hs = sw.data() + h * spg;
      const double* gs = sw.data() + g * spg;
      for (int64_t i = 0; i < spg; ++i) {
        const double a = hs[i];
        for (int64_t j = 0; j < spg; ++j) {
          const double d = a - gs[j];
          const double m = std::max(Lh - d, Lg + d);
          if (d > 0 && m < best) best = m, bk = i * spg + j;
        }
      }
    }
    if (bk < 0) return false;
    const int64_t bs = h * spg + bk / spg, bt = g * spg + bk % spg;
    const double d = sw[bs] - sw[bt];
    gl[h] -= d;
    gl[g] += d;
    std::swap(phy2log[bs], phy2log[bt]);
    std::swap(sw[bs], sw[bt]);
    if (window) resort(h, bk / spg, sw[bs]), resort(g, bk % spg, sw[bt]);
    return true;
  }

  bool before(int64_t a, int64_t b) const { return gl[a] < gl[b] || (gl[a] == gl[b] && a < b); }

  // The GPUs at positions ka < kb of `order` changed load: both taken out and put back in place (binary search).
  void reorder(int64_t ka, int64_t kb) {
    int64_t* o = order.data();
    const int64_t a = o[ka], b = o[kb];
    std::memmove(o + ka, o + ka + 1, sizeof(int64_t) * size_t(kb - ka - 1));
    std::memmove(o + kb - 1, o + kb + 1, sizeof(int64_t) * size_t(P - kb - 1));
    auto put = [&](int64_t x, int64_t n) {
      int64_t* at = std::lower_bound(o, o + n, x, [&](int64_t u, int64_t v) { return before(u, v); });
      std::memmove(at + 1, at, sizeof(int64_t) * size_t(o + n - at));
      *at = x;
    };
    put(a, P - 2);
    put(b, P - 1);
  }

  bool swap_step() {
    if (window) {
      // `order` holds the GPUs by (load, index), kept sorted across swaps: the lightest first, then the next
      // lightest; h = the first GPU (lowest index) at the maximum load.
      int64_t kh = P - 1;
      const double Lh = gl[order[kh]], eps = 1e-12 * std::max(1.0, Lh);
      while (kh > 0 && gl[order[kh - 1]] == Lh) --kh;
      const int64_t h = order[kh];
      for (int64_t k = 0; k < kh && gl[order[k]] < Lh - eps; ++k) {
        if (try_swap(h, order[k], eps)) {
          reorder(k, kh);
          return true;
        }
      }
      return false;
    }
    const int64_t h = argmax();
    const double Lh = gl[h], eps = 1e-12 * std::max(1.0, Lh);
    const int64_t g0 = int64_t(std::min_element(gl.begin(), gl.end()) - gl.begin());
    if (g0 == h || gl[g0] >= Lh - eps) return false;
    if (try_swap(h, g0, eps)) return true;  // the usual case: the lightest GPU takes the swap
    order.resize(P);
    std::iota(order.begin(), order.end(), 0);
    std::sort(order.begin(), order.end(), [&](int64_t a, int64_t b) { return before(a, b); });
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
  S.recompute(false);
  const double mine = max_of(S.gl);
  bool better;
  if (!hier) {
    better = mine < S.start_max;
  } else {
    // EPLB's plan is worse whenever ours is below a lower bound on its max (the usual case, decided without running
    // EPLB's replication and packing). The margin covers rounding: the bound sums the loads in another order.
    better = S.window && mine < eplb_node_bound(w.data(), E, s, k) * (1 - 1e-9);
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
