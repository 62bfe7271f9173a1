#include "train/grpo_data.h"

#include <cmath>
#include <map>

#include "core/error.h"
#include "core/io.h"
#include "core/json.h"
#include "core/jsonl.h"

namespace ds {

namespace {

[[noreturn]] void bad(const JsonlRecord& rec, const std::string& msg) { throw_bad_input(msg, rec.file_, rec.line_no_); }

std::vector<int32_t> token_ids(const JsonlRecord& rec, const char* key, int64_t vocab) {
  if (!rec.has(key)) bad(rec, std::string("missing field '") + key + "' (rollouts from ds-rollout carry it)");
  std::vector<int32_t> out;
  for (int64_t id : rec.get_int_array(key)) {
    if (id < 0 || (vocab > 0 && id >= vocab))
      bad(rec, std::string("field '") + key + "': token id " + std::to_string(id) + " outside the vocabulary of " +
                   std::to_string(vocab));
    out.push_back(int32_t(id));
  }
  return out;
}

}  // namespace

GrpoRollouts read_grpo_rollouts(const std::string& path, const GrpoReadOptions& o) {
  GrpoRollouts d;
  d.path = path;
  JsonlReader reader(path);
  std::map<std::string, int64_t> groups;
  bool have_temp = false;
  double temp = 0;
  int64_t records = 0;
  while (const JsonlRecord* r = reader.next()) {
    ++records;
    const JsonlRecord& rec = *r;
    std::string key;
    if (rec.has("group")) key = rec.raw("group");
    else if (rec.has("prompt")) key = rec.raw("prompt");
    else bad(rec, "no 'group' (or 'prompt') field: the samples of one prompt cannot be grouped");

    const std::string rt = rec.type_name("reward");
    if (rt == "missing") bad(rec, "no 'reward' field (score the rollouts with ds-reward first)");
    if (rt != "null" && rt != "integer" && rt != "number") bad(rec, "field 'reward' must be a number or null");

    GrpoSample s;
    s.line = reader.line_number();
    s.prompt = token_ids(rec, "prompt_ids", o.vocab_size);
    s.completion = token_ids(rec, "completion_tokens", o.vocab_size);
    if (s.prompt.empty()) bad(rec, "field 'prompt_ids' is empty");
    const int64_t window = int64_t(s.prompt.size() + s.completion.size()) - 1;
    if (o.max_positions > 0 && window > o.max_positions)
      bad(rec, "prompt + completion of " + std::to_string(window + 1) + " tokens exceed the model's " +
                   std::to_string(o.max_positions) + " positions");
    if (o.need_logprobs) {
      if (!rec.has("logprobs")) bad(rec, "missing field 'logprobs' (or pass --recompute-old-logprobs)");
      s.logprobs = rec.get_double_array("logprobs");
      if (s.logprobs.size() != s.completion.size())
        bad(rec, "'logprobs' has " + std::to_string(s.logprobs.size()) + " entries for " +
                     std::to_string(s.completion.size()) + " completion tokens");
      for (double l : s.logprobs)
        if (!(l <= 0)) bad(rec, "'logprobs' holds a value above 0 (not a log-probability)");
    }
    if (rec.has("finish_reason") && !rec.is_null("finish_reason"))
      s.truncated = rec.get_string("finish_reason") == "length";
    if (rec.has("rewards") && !rec.is_null("rewards")) {
      if (rec.type_name("rewards") != "object") bad(rec, "field 'rewards' must be an object");
      JsonlRecord terms = rec.get_object("rewards");
      for (const std::string& k : terms.keys()) {
        if (terms.is_null(k)) continue;
        const std::string t = terms.type_name(k);
        if (t != "integer" && t != "number") bad(rec, "field 'rewards." + k + "' must be a number or null");
        s.rewards.emplace_back(k, terms.get_double(k));
      }
    }
    if (o.temperature <= 0) {
      if (std::optional<double> t = rec.opt_double("temperature")) {
        if (!(*t > 0)) bad(rec, "temperature " + rec.raw("temperature") + ": greedy samples have no log-probs to train");
        if (have_temp && *t != temp)
          bad(rec, "temperature " + rec.raw("temperature") + " differs from the earlier records' " +
                       std::to_string(temp) + " (one GRPO step uses one; pass --temperature to override)");
        have_temp = true;
        temp = *t;
      }
    }

    auto [it, fresh] = groups.emplace(key, int64_t(d.group_keys.size()));
    if (fresh) d.group_keys.push_back(key);
    int64_t index = -1;
    if (rt == "null") {
      ++d.null_rewards;
    } else {
      s.reward = rec.get_double("reward");
      s.group = it->second;
      index = int64_t(d.samples.size());
      d.samples.push_back(std::move(s));
    }
    if (o.keep_lines) {
      d.lines.push_back(rec.line());
      d.line_sample.push_back(index);
    }
  }
  if (records == 0) throw_bad_input("no rollout records", path);
  if (d.samples.empty()) throw_bad_input("every reward is null: nothing to train on", path);
  if (o.temperature > 0) d.temperature = o.temperature;
  else if (have_temp) {
    d.temperature = temp;
    d.temperature_from_records = true;
  }
  return d;
}

void write_advantages(const std::string& out_path, const GrpoRollouts& d, const std::vector<double>& advantage,
                      const std::vector<double>& group_mean, const std::vector<double>& group_std) {
  DS_CHECK(d.lines.size() == d.line_sample.size(), "write_advantages needs the kept lines");
  Writer out(out_path);
  for (size_t i = 0; i < d.lines.size(); ++i) {
    const JsonlRecord rec = parse_object(d.lines[i], d.path);
    JsonWriter w;
    w.begin_object();
    for (const std::string& k : rec.keys())  // every input field, its value byte for byte
      if (k != "advantage" && k != "group_mean" && k != "group_std") w.key(k).raw(rec.raw(k));
    const int64_t s = d.line_sample[i];
    if (s < 0) w.key("advantage").null().key("group_mean").null().key("group_std").null();
    else
      w.kv("advantage", advantage.at(size_t(s))).kv("group_mean", group_mean.at(size_t(s)))
          .kv("group_std", group_std.at(size_t(s)));
    w.end_object();
    out.write(w.str());
    out.write("\n");
  }
  out.commit();
}

}  // namespace ds
