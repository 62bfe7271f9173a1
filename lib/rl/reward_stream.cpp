#include "rl/reward_stream.h"

#include <cmath>
#include <cstdio>
#include <unordered_set>

#include "core/error.h"
#include "core/io.h"
#include "core/json.h"
#include "core/jsonl.h"
#include "core/log.h"
#include "rl/countdown.h"
#include "rl/metrics.h"
#include "rl/record.h"
#include "rl/utf8.h"

namespace ds::rl {

namespace {

// The record without its closing brace, less the fields ds-reward writes (a re-scored file replaces them).
std::string_view base_of(const JsonlRecord& rec, bool* empty, std::string* storage) {
  return record_base(rec, {"reward", "rewards", "reward_skip_reason", "extracted_answer"}, empty, storage);
}

[[noreturn]] void bad(const JsonlRecord& rec, const std::string& msg) { throw_bad_input(msg, rec.file_, rec.line_no_); }

// A JSON number's exact value from its spelling ("24", "-3", "2.5"; "1e3" through the double when integral).
Rational number_field(const JsonlRecord& rec, std::string_view key) {
  std::string t = rec.type_name(key);
  if (t != "integer" && t != "number") bad(rec, "field '" + std::string(key) + "' must be a number");
  std::string raw = rec.raw(key);
  bool negative = !raw.empty() && raw[0] == '-';
  if (auto v = parse_decimal(std::string_view(raw).substr(negative ? 1 : 0)))
    return negative ? Rational{-v->num, v->den} : *v;
  double d = rec.get_double(key);
  if (d == double(int64_t(d)) && d > -9e15 && d < 9e15) return Rational::of(int64_t(d));
  bad(rec, "field '" + std::string(key) + "' is not a usable number: " + raw);
}

// A gold answer given as a JSON number, as text: its spelling ("42", "3.50"), except exponent forms that are
// whole numbers ("1e3" -> "1000"), which the answer parser would not read.
std::string number_text(const JsonlRecord& rec, std::string_view key) {
  std::string raw = rec.raw(key);
  if (raw.find_first_of("eE") == std::string::npos) return raw;
  double d = rec.get_double(key);
  if (std::isfinite(d) && d == std::floor(d) && std::fabs(d) < 9e15) return std::to_string(int64_t(d));
  return raw;
}

struct Item {
  std::string base_storage;  // a rebuilt record, or a copy while the item waits for its group
  std::string_view base;     // the record without its closing brace
  bool empty = false;
  std::string task, group;
  RewardResult result;
  int64_t length = 0;
};

class Scorer {
 public:
  Scorer(const RewardStreamOptions& o, Writer& out) : o_(o), out_(out), summary_(o.ks) {}

  // Parses and scores one record (throws bad input); the result is queued.
  void add(const JsonlRecord& rec) {
    Item it;
    RolloutInput in;
    std::string completion = rec.get_string("completion");
    in.completion = completion;
    std::optional<std::string> task = rec.opt_string("task");
    it.task = task.value_or("");
    std::string gold;
    if (it.task == "countdown") {
      in.kind = TaskKind::countdown;
      in.numbers = rec.get_int_array("numbers");
      if (in.numbers.size() > kMaxCountdownNumbers)
        bad(rec, "countdown task with " + std::to_string(in.numbers.size()) + " numbers (at most " +
                     std::to_string(kMaxCountdownNumbers) + ")");
      for (int64_t v : in.numbers)
        if (v < 0) bad(rec, "countdown numbers must be non-negative, got " + std::to_string(v));
      in.target = number_field(rec, "target");
    } else {
      std::string t = rec.type_name(o_.answer_field);
      if (t == "string") gold = rec.get_string(o_.answer_field);
      else if (t == "integer" || t == "number") gold = number_text(rec, o_.answer_field);
      else if (t != "missing" && t != "null")
        bad(rec, "field '" + o_.answer_field + "' must be a string or a number");
      if (t != "missing" && t != "null") in.gold = gold;
    }
    if (o_.cfg.length != LengthPenalty::none) in.length = length_of(rec, completion);
    it.length = in.length;
    it.group = prompt_key(rec);
    it.base = base_of(rec, &it.empty, &it.base_storage);
    it.result = score_rollout(in, o_.cfg);

    if (o_.cfg.length == LengthPenalty::kimi) {
      std::string key = it.task + '\x1f' + it.group;
      if (!pending_.empty() && key != pending_key_) flush_group();
      if (pending_.empty()) {
        if (closed_.count(key))
          bad(rec, "the samples of group " + it.group +
                       " are not together (the Kimi length reward needs each group's samples in one run)");
        pending_key_ = key;
      }
      if (it.base.data() != it.base_storage.data()) it.base_storage = std::string(it.base);  // outlive the record
      pending_.push_back(std::move(it));  // base is re-pointed at base_storage when the group is written
      return;
    }
    emit(it);
  }

  // Writes what is queued (a partial group too).
  void flush() { flush_group(); }

  const SummaryAggregator& summary() const { return summary_; }
  int64_t written() const { return written_; }
  int64_t skipped() const { return skipped_; }

 private:
  int64_t length_of(const JsonlRecord& rec, const std::string& completion) const {
    bool tokens = o_.length_unit == LengthUnit::tokens ||
                  (o_.length_unit == LengthUnit::auto_ && rec.has("completion_tokens"));
    if (!tokens) return int64_t(utf8_length(completion));
    std::string t = rec.type_name("completion_tokens");
    if (t == "integer") return rec.get_int("completion_tokens");
    if (t == "array") return int64_t(rec.get_int_array("completion_tokens").size());
    bad(rec, "field 'completion_tokens' must be a token count or an array of token ids");
  }

  void flush_group() {
    if (pending_.empty()) return;
    if (o_.cfg.length == LengthPenalty::kimi) {
      std::vector<RewardResult> results;
      std::vector<int64_t> lens;
      for (Item& it : pending_) {
        results.push_back(std::move(it.result));
        lens.push_back(it.length);
      }
      apply_group_length(results, lens, o_.cfg);
      for (size_t i = 0; i < pending_.size(); ++i) pending_[i].result = std::move(results[i]);
    }
    closed_.insert(pending_key_);
    for (Item& it : pending_) {
      it.base = it.base_storage;  // moves inside the vector may have moved a short string's bytes
      emit(it);
    }
    pending_.clear();
  }

  void emit(const Item& it) {
    const RewardResult& r = it.result;
    JsonWriter w;
    w.begin_object();
    w.key("reward");
    if (r.total) w.value(*r.total);
    else w.null();
    w.key("rewards").begin_object();
    auto term = [&](const char* name, const std::optional<double>& v) {
      w.key(name);
      if (v) w.value(*v);
      else w.null();
    };
    term("accuracy", r.accuracy);
    if (o_.cfg.format_weight != 0.0) term("format", r.format);
    if (o_.cfg.language_weight != 0.0) term("language", r.language);
    if (o_.cfg.length != LengthPenalty::none) term("length", r.length);
    if (o_.cfg.repetition_penalty != 0.0) term("repetition", r.repetition);
    w.end_object();
    if (!r.total) w.kv("reward_skip_reason", r.skip_reason);
    w.key("extracted_answer");
    if (r.extracted) w.value(*r.extracted);
    else w.null();
    w.end_object();
    std::string_view members = w.str();
    members = members.substr(1, members.size() - 2);
    out_.write(splice_record(it.base, it.empty, members));
    ++written_;
    if (!r.total) ++skipped_;

    SummaryAggregator::Sample s;
    s.task = it.task;
    s.group = it.group;
    s.skipped = !r.accuracy.has_value();
    s.reward = r.total;
    s.correct = r.correct;
    s.vote_key = r.vote_key;
    summary_.add(s);
  }

  const RewardStreamOptions& o_;
  Writer& out_;
  SummaryAggregator summary_;
  std::vector<Item> pending_;
  std::string pending_key_;
  std::unordered_set<std::string> closed_;
  int64_t written_ = 0, skipped_ = 0;
};

void report_summary(const RewardStreamOptions& o, const SummaryAggregator& s) {
  if (o.summary) std::fputs(s.to_text().c_str(), stderr);
  if (!o.summary_json.empty()) write_file_atomic(o.summary_json, s.to_json());
}

}  // namespace

RewardStreamStats reward_stream(const RewardStreamOptions& o) {
  RewardStreamStats st;
  JsonlReader in(o.input);  // before the writer: an unreadable input leaves no output file
  Writer out(o.output);
  Scorer scorer(o, out);
  BadRecords badrec;
  // A bad record: stop (after committing what was good) or skip it.
  auto stop = [&] {
    scorer.flush();
    out.commit();
    report_summary(o, scorer.summary());
    if (o.skip_bad && badrec.count > 0)
      log_warn("skipped " + std::to_string(badrec.count) + " bad record(s) before this one; first: " + badrec.first);
  };
  for_each_record(in, o.skip_bad, badrec, [&](const JsonlRecord& rec) {
    scorer.add(rec);
    ++st.read;
  }, stop);
  scorer.flush();
  out.commit();
  report_summary(o, scorer.summary());
  st.written = scorer.written();
  st.skipped = scorer.skipped();
  st.bad = badrec.count;
  st.first_bad = badrec.first;
  if (st.bad > 0)
    log_warn("skipped " + std::to_string(st.bad) + " bad record(s); first: " + st.first_bad);
  return st;
}

}  // namespace ds::rl
