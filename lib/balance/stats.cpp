// Expert-load statistics reader and placement JSON. See stats.h.
#include "balance/stats.h"

#include <algorithm>
#include <cmath>
#include <map>
#include <set>

#include "core/error.h"
#include "core/io.h"
#include "core/json.h"
#include "core/jsonl.h"

namespace ds::balance {

namespace {

struct StepRecord {
  std::string file;
  int64_t line = 0;  // first record of the step
  int64_t step = 0;
  std::map<int64_t, std::vector<double>> layers;
};

}  // namespace

ExpertLoads read_expert_stats(const std::vector<std::string>& paths, const LoadWindow& win) {
  if (paths.empty()) throw_usage("no statistics files given");
  if (win.last_steps < 0) throw_usage("the window must be >= 0 steps");
  if (!(win.ema >= 0 && win.ema <= 1)) throw_usage("the moving-average weight must be in [0, 1]");
  std::vector<StepRecord> steps;
  int64_t width = -1;
  std::string width_at;
  for (const std::string& path : paths) {
    JsonlReader rd(path);
    std::map<int64_t, size_t> index;  // step -> position in `steps` (this file)
    while (const JsonlRecord* r = rd.next()) {
      const int64_t ln = rd.line_number();
      const int64_t step = r->get_int("step"), layer = r->get_int("layer");
      if (layer < 0) throw_bad_input("negative layer " + std::to_string(layer), path, ln);
      std::vector<double> c = r->get_double_array("counts");
      if (c.empty()) throw_bad_input("empty 'counts'", path, ln);
      for (size_t e = 0; e < c.size(); ++e)
        if (!std::isfinite(c[e]) || c[e] < 0)
          throw_bad_input("counts[" + std::to_string(e) + "] of layer " + std::to_string(layer) +
                              " is not a finite non-negative number", path, ln);
      if (width < 0) {
        width = int64_t(c.size());
        width_at = path + ":" + std::to_string(ln);
      } else if (int64_t(c.size()) != width) {
        throw_bad_input("'counts' has " + std::to_string(c.size()) + " experts, but " + std::to_string(width) +
                            " at " + width_at, path, ln);
      }
      auto it = index.find(step);
      if (it == index.end()) {
        it = index.emplace(step, steps.size()).first;
        steps.push_back(StepRecord{path, ln, step, {}});
      }
      if (!steps[it->second].layers.emplace(layer, std::move(c)).second)
        throw_bad_input("layer " + std::to_string(layer) + " appears twice in step " + std::to_string(step), path,
                        ln);
    }
  }
  if (steps.empty()) {
    std::string names;
    for (const auto& p : paths) names += (names.empty() ? "" : ", ") + p;
    throw_bad_input("no expert-load records (empty statistics)", names);
  }
  // every step must list the same layers
  std::set<int64_t> all;
  for (const auto& s : steps)
    for (const auto& [l, c] : s.layers) all.insert(l);
  for (const auto& s : steps)
    if (s.layers.size() != all.size())
      for (int64_t l : all)
        if (!s.layers.count(l))
          throw_bad_input("step " + std::to_string(s.step) + " has no record for layer " + std::to_string(l) +
                              " (other steps have it)", s.file, s.line);
  size_t first = 0;
  if (win.last_steps > 0 && size_t(win.last_steps) < steps.size()) first = steps.size() - size_t(win.last_steps);
  ExpertLoads out;
  out.layer_ids.assign(all.begin(), all.end());
  out.loads.assign(all.size(), std::vector<double>(size_t(width), 0.0));
  out.steps = int64_t(steps.size() - first);
  out.first_step = steps[first].step;
  out.last_step = steps.back().step;
  for (size_t i = first; i < steps.size(); ++i) {
    size_t li = 0;
    for (const auto& [l, c] : steps[i].layers) {
      auto& acc = out.loads[li++];
      for (size_t e = 0; e < c.size(); ++e) {
        if (win.ema > 0)
          acc[e] = i == first ? c[e] : win.ema * c[e] + (1 - win.ema) * acc[e];
        else
          acc[e] += c[e] / double(out.steps);
      }
    }
  }
  return out;
}

std::string placement_json(const PlacementMeta& meta, const std::vector<LayerPlacement>& layers) {
  // One line per layer, so that the file is both valid JSON and easy to diff.
  JsonWriter h;
  h.begin_object().kv("policy", meta.policy).kv("slots", meta.shape.slots).kv("groups", meta.shape.groups);
  h.kv("nodes", meta.shape.nodes).kv("gpus", meta.shape.gpus);
  h.kv("experts", layers.empty() ? int64_t(0) : int64_t(layers[0].logcnt.size()));
  h.kv("layers", int64_t(0)).end_object();  // placeholder, replaced below
  std::string out = h.str();
  out.resize(out.size() - 2);  // drop "0}"
  out += "[";
  for (size_t i = 0; i < layers.size(); ++i) {
    const LayerPlacement& l = layers[i];
    JsonWriter w;
    w.begin_object().kv("layer", i < meta.layer_ids.size() ? meta.layer_ids[i] : int64_t(i));
    w.key("phy2log").begin_array();
    for (int64_t v : l.phy2log) w.value(v);
    w.end_array().key("log2phy").begin_array();
    for (const auto& row : l.log2phy) {
      w.begin_array();
      for (int64_t v : row) w.value(v);
      w.end_array();
    }
    w.end_array().key("logcnt").begin_array();
    for (int64_t v : l.logcnt) w.value(v);
    w.end_array().key("gpu_load").begin_array();
    for (double v : l.gpu_load) w.value(v);
    w.end_array().end_object();
    out += (i ? ",\n " : "\n ") + w.str();
  }
  out += "\n]}\n";
  return out;
}

PlacementFile read_placement(const std::string& path) {
  JsonlRecord r = parse_object(read_file(path), path);
  PlacementFile f;
  f.meta.policy = r.has("policy") ? r.get_string("policy") : "";
  f.meta.shape.slots = r.get_int("slots");
  f.meta.shape.groups = r.has("groups") ? r.get_int("groups") : 1;
  f.meta.shape.nodes = r.has("nodes") ? r.get_int("nodes") : 1;
  f.meta.shape.gpus = r.get_int("gpus");
  const int64_t experts = r.get_int("experts");
  const int64_t R = f.meta.shape.slots, P = f.meta.shape.gpus;
  if (R <= 0 || P <= 0 || R % P != 0 || experts <= 0 || experts > R)
    throw_bad_input("placement: need slots % gpus == 0 and 0 < experts <= slots", path);
  for (const JsonlRecord& l : r.get_object_array("layers")) {
    LayerPlacement pl;
    const int64_t id = l.get_int("layer");
    pl.phy2log = l.get_int_array("phy2log");
    pl.logcnt = l.get_int_array("logcnt");
    const std::string where = "layer " + std::to_string(id);
    if (int64_t(pl.phy2log.size()) != R || int64_t(pl.logcnt.size()) != experts)
      throw_bad_input("placement: " + where + " needs " + std::to_string(R) + " phy2log and " +
                          std::to_string(experts) + " logcnt entries",
                      path);
    pl.log2phy.assign(size_t(experts), {});
    std::vector<int64_t> seen(size_t(experts), 0);
    for (int64_t slot = 0; slot < R; ++slot) {
      const int64_t e = pl.phy2log[size_t(slot)];
      if (e < 0 || e >= experts) throw_bad_input("placement: " + where + " maps a slot to no expert", path);
      pl.log2phy[size_t(e)].push_back(slot);
      ++seen[size_t(e)];
    }
    for (int64_t e = 0; e < experts; ++e)
      if (seen[size_t(e)] != pl.logcnt[size_t(e)] || seen[size_t(e)] == 0)
        throw_bad_input("placement: " + where + ": logcnt of expert " + std::to_string(e) + " does not match phy2log",
                        path);
    f.meta.layer_ids.push_back(id);
    f.layers.push_back(std::move(pl));
  }
  if (f.layers.empty()) throw_bad_input("placement: no layers", path);
  return f;
}

}  // namespace ds::balance
