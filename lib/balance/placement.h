#pragma once
// Redundant-expert placement (EPLB, MODEL.md §5) as pure functions.
//
// Input: per-layer expert loads [layers x E] and a shape (R physical slots, G groups, N nodes, P GPUs).
// Output per layer: phy2log [R] (slot = gpu * R/P + local slot), log2phy [E x maxcnt] padded with -1,
// logcnt [E] (>= 1) and the predicted load of each GPU (each replica carries load[e] / logcnt[e]).
//
// Policies:
//   hierarchical  EPLB's rebalance_experts_hierarchical: groups packed to nodes, replicas chosen per node,
//                 replicas packed to the node's GPUs. Needs E % G == 0 and G % N == 0.
//   global        the hierarchical routine with G = 1, N = 1 (EPLB's decode policy).
//   balanced      (default) starts from the global plan and improves the max GPU load by pairwise replica swaps
//                 between the most loaded GPU and the others (the lightest first) and by moving a replica slot from
//                 one expert to another with the packing in view. EPLB's plan (hierarchical when the shape allows
//                 it, else global) is kept unless the result is strictly better, so its max/mean GPU load is never
//                 worse than EPLB's; EPLB's hierarchical plan is only computed when a lower bound on its max (the
//                 heaviest node's total / GPUs per node, from its group packing) does not already show it worse.
//                 It does not keep groups on nodes (a replica may live on any GPU): on Zipf-like loads any plan
//                 that does is far above the lower bound for the V3 shape (ds-bench-rebalance's local_gap, 25%,
//                 against 0.1% here), so locality would forfeit most of the gain; --exact-eplb keeps it.
// Planning time: 61 layers x 256 experts / 288 slots / 32 GPUs in ~3 ms on one core (bench/README.md). Buffers are
// reused per thread, so a layer allocates only its result; the functions are safe to call from several threads.
// Shapes: R % P == 0, P % N == 0, R >= E, E >= 1; hierarchical also E % G == 0 and G % N == 0 (usage errors).
//
// Fidelity to eplb.py: same steps and tie-breaking (stable descending sort, lowest pack index on ties, first
// expert on ties of w/cnt). Loads are doubles here where eplb.py casts to float32, so a plan can differ only where
// float32 rounding would flip a comparison (never for integer loads whose per-replica shares are exact). log2phy
// is as wide as the largest replica count (MODEL.md §5.4), not eplb.py's R - E + 1; the extra columns would be -1.
#include <cstdint>
#include <string>
#include <vector>

namespace ds::balance {

struct Shape {
  int64_t slots = 0;   // R, physical expert slots (all GPUs together)
  int64_t groups = 1;  // G, expert groups (hierarchical)
  int64_t nodes = 1;   // N
  int64_t gpus = 1;    // P
};

enum class Policy { hierarchical, global, balanced };
Policy parse_policy(const std::string& name);  // usage error on an unknown name
std::string policy_name(Policy p);

struct LayerPlacement {
  std::vector<int64_t> phy2log;               // [R]
  std::vector<int64_t> phyrank;               // [R] replica index of each slot within its expert
  std::vector<std::vector<int64_t>> log2phy;  // [E][maxcnt], -1 padded
  std::vector<int64_t> logcnt;                // [E]
  std::vector<double> gpu_load;               // [P]
};

// Throws a usage error naming the broken constraint.
void validate_shape(int64_t experts, const Shape& s, Policy p);

// --- EPLB primitives (one row) ---
struct Packing {
  std::vector<int64_t> pack;  // [n] pack of each item
  std::vector<int64_t> rank;  // [n] position within its pack
};
// n items into m packs of exactly n/m items: items by weight descending (stable), each to the lightest non-full
// pack, lowest index on ties. n/m == 1 gives the identity. Requires n % m == 0.
Packing balanced_packing(const std::vector<double>& w, int64_t m);

struct Replication {
  std::vector<int64_t> phy2log;  // [n_phy]
  std::vector<int64_t> rank;     // [n_phy]
  std::vector<int64_t> cnt;      // [n_log]
};
// Slots 0..n_log-1 are the identity; each extra slot goes to the expert with the largest w/cnt (first on ties).
Replication replicate_experts(const std::vector<double>& w, int64_t n_phy);

// --- planning ---
// One layer with EPLB's greedy (hierarchical or global), exactly as eplb.py. log2phy width = max logcnt.
LayerPlacement plan_eplb(const std::vector<double>& load, const Shape& s, bool hierarchical);
// One layer with the balanced policy (never worse than plan_eplb with EPLB's default choice of policy).
LayerPlacement plan_balanced(const std::vector<double>& load, const Shape& s);
// EPLB's own default choice: hierarchical when E % G == 0 and G % N == 0, else global.
bool eplb_default_hierarchical(int64_t experts, const Shape& s);

// All layers; the log2phy width is made uniform (max logcnt over the layers).
std::vector<LayerPlacement> plan(const std::vector<std::vector<double>>& loads, const Shape& s, Policy p);

// --- evaluation ---
// Per-GPU load of a placement under `load` (each replica of e carries load[e] / logcnt[e]).
std::vector<double> gpu_loads(const std::vector<double>& load, const std::vector<int64_t>& phy2log,
                              const std::vector<int64_t>& logcnt, int64_t gpus);
// The load without redundancy: E experts spread over P GPUs in contiguous blocks (expert e on GPU e*P/E).
std::vector<double> gpu_loads_unreplicated(const std::vector<double>& load, int64_t gpus);
double max_over_mean(const std::vector<double>& gpu_load);  // 1 for an all-zero load
// Lower bound on any plan's max GPU load: max(total / P, the smallest possible largest replica w/cnt).
double lower_bound(const std::vector<double>& load, const Shape& s);
// Rebuilds log2phy (slots in ascending order per expert, width `width` >= max logcnt) and phyrank.
void fill_log2phy(LayerPlacement& pl, int64_t experts, int64_t width);

// --- using a placement ---
// The physical slot serving token `token` routed to logical expert e: log2phy[e][token % logcnt[e]].
inline int64_t route_slot(const LayerPlacement& pl, int64_t e, int64_t token) {
  return pl.log2phy[e][token % pl.logcnt[e]];
}
// Per-GPU token counts of a routing: topk[t * k + j] is token t's j-th logical expert (k experts per token).
std::vector<int64_t> routed_gpu_tokens(const LayerPlacement& pl, const std::vector<int64_t>& topk, int64_t k,
                                       int64_t gpus);

}  // namespace ds::balance
