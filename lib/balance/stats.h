#pragma once
// Expert-load statistics (what `--expert-stats` writes) and the placement JSON of ds-rebalance.
//
// Statistics: JSONL, one record per (step, MoE layer): {"step": S, "layer": L, "counts": [E numbers]}. Counts are
// finite and non-negative (token counts; a moving average may be fractional). Every record has the same width E,
// and every step lists the same layers, each once. Several files are read in order; a step is identified by
// (file, step), so two runs' files can be concatenated. Errors are bad-input errors naming file:line.
#include <cstdint>
#include <string>
#include <vector>

#include "balance/placement.h"

namespace ds::balance {

struct LoadWindow {
  int64_t last_steps = 0;  // average over the last K steps only (0 = all steps read)
  double ema = 0;          // > 0: exponential moving average with this weight on the newest step, instead of a mean
};

struct ExpertLoads {
  std::vector<int64_t> layer_ids;          // ascending
  std::vector<std::vector<double>> loads;  // [layers][E], averaged per step
  int64_t steps = 0;                       // steps in the window
  int64_t first_step = 0, last_step = 0;   // of the window (step numbers as written)
};

// Reads and validates the files, then averages the window. Empty input (no records at all) is a bad-input error.
ExpertLoads read_expert_stats(const std::vector<std::string>& paths, const LoadWindow& win);

struct PlacementMeta {
  std::string policy;
  Shape shape;
  std::vector<int64_t> layer_ids;
};
// The placement document (JSON, one line per layer):
// {"policy", "slots", "groups", "nodes", "gpus", "experts", "layers": [{"layer", "phy2log", "log2phy", "logcnt",
//  "gpu_load"}]}.
std::string placement_json(const PlacementMeta& meta, const std::vector<LayerPlacement>& layers);
// Reads a placement document back (phy2log, log2phy, logcnt per layer; gpu_load is recomputed by users).
// Inconsistent shapes (a slot outside 0..slots-1, a count that does not match log2phy) are bad-input errors.
struct PlacementFile {
  PlacementMeta meta;
  std::vector<LayerPlacement> layers;  // in meta.layer_ids order
};
PlacementFile read_placement(const std::string& path);

}  // namespace ds::balance
