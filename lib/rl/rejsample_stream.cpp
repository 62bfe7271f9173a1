#include "rl/rejsample_stream.h"

#include "core/error.h"
#include "core/io.h"
#include "core/json.h"
#include "core/jsonl.h"
#include "core/log.h"
#include "rl/record.h"

namespace ds::rl {

int64_t RejsampleReport::dropped_total() const {
  int64_t n = 0;
  for (int64_t d : dropped) n += d;
  return n;
}

std::string RejsampleReport::to_text() const {
  std::string s = "read " + std::to_string(read) + ", kept " + std::to_string(kept) + ", dropped " +
                  std::to_string(dropped_total());
  std::string sep = ": ";
  for (size_t i = 0; i < dropped.size(); ++i) {
    if (dropped[i] == 0) continue;
    s += sep + drop_reason_name(static_cast<DropReason>(i)) + " " + std::to_string(dropped[i]);
    sep = ", ";
  }
  if (bad > 0) s += "; skipped " + std::to_string(bad) + " bad record(s), first: " + first_bad;
  return s;
}

std::string RejsampleReport::to_json() const {
  JsonWriter w(true);
  w.begin_object().kv("read", read).kv("kept", kept).kv("dropped_total", dropped_total());
  w.key("dropped").begin_object();
  for (size_t i = 0; i < dropped.size(); ++i) w.kv(drop_reason_name(static_cast<DropReason>(i)), dropped[i]);
  w.end_object();
  w.kv("bad_records", bad);
  w.key("first_bad");
  if (bad > 0) w.value(first_bad);
  else w.null();
  w.end_object();
  return w.take() + "\n";
}

namespace {

[[noreturn]] void bad(const JsonlRecord& rec, const std::string& msg) { throw_bad_input(msg, rec.file_, rec.line_no_); }

std::optional<double> opt_number(const JsonlRecord& rec, std::string_view key, const std::string& name) {
  std::string t = rec.type_name(key);
  if (t == "missing" || t == "null") return std::nullopt;
  if (t != "integer" && t != "number") bad(rec, "field '" + name + "' must be a number or null");
  return rec.get_double(key);
}

// The output line for a kept sample, or "" (dropped; *reason set).
class Filter {
 public:
  Filter(const RejsampleOptions& o, RejsampleReport& rep) : o_(o), rep_(rep), state_(o.reject) {}

  // Throws bad input for a malformed record; returns the line to write or "".
  std::string process(const JsonlRecord& rec) {
    std::string completion = rec.get_string("completion");
    std::string pt = rec.type_name("prompt");
    if (pt != "string" && pt != "array") bad(rec, "field 'prompt' must be a string or an array of messages");
    std::vector<std::string> prompt_msgs;
    std::string prompt_text;
    if (pt == "array") prompt_msgs = rec.get_object_array_raw("prompt");
    else prompt_text = rec.get_string("prompt");

    Candidate c;
    c.reward = opt_number(rec, "reward", "reward");
    std::string rt = rec.type_name("rewards");
    if (rt == "object") c.accuracy = opt_number(rec.get_object("rewards"), "accuracy", "rewards.accuracy");
    else if (rt != "missing" && rt != "null") bad(rec, "field 'rewards' must be an object");
    std::optional<std::string> finish = rec.opt_string("finish_reason");
    c.truncated = (finish && *finish == "length") || rec.opt_bool("truncated").value_or(false);
    std::string checked;
    if (o_.prepend_think) checked = "<think>\n" + completion;
    c.completion = o_.prepend_think ? std::string_view(checked) : std::string_view(completion);

    ++rep_.read;
    std::optional<DropReason> why = check_sample(c, o_.reject);
    if (!why) why = state_.admit(prompt_key(rec), completion);
    if (why) {
      ++rep_.dropped[static_cast<size_t>(*why)];
      return "";
    }
    ++rep_.kept;
    JsonWriter w;
    w.begin_object().key("messages").begin_array();
    if (pt == "array") {
      for (const std::string& m : prompt_msgs) w.raw(m);
    } else {
      w.begin_object().kv("role", "user").kv("content", prompt_text).end_object();
    }
    w.begin_object().kv("role", "assistant").kv("content", completion).end_object();
    w.end_array();
    if (rec.has("id")) w.key("id").raw(rec.raw("id"));
    if (rec.has("task")) w.key("task").raw(rec.raw("task"));
    w.kv("source", "rejsample").end_object();
    return w.take() + "\n";
  }

 private:
  const RejsampleOptions& o_;
  RejsampleReport& rep_;
  RejectState state_;
};

}  // namespace

RejsampleReport rejsample_stream(const RejsampleOptions& o) {
  RejsampleReport rep;
  JsonlReader in(o.input);
  Writer out(o.output);
  Filter filter(o, rep);
  BadRecords badrec;
  auto finish = [&] {
    out.commit();
    rep.bad = badrec.count;
    rep.first_bad = badrec.first;
    log_info(rep.to_text());
    if (!o.report_json.empty()) write_file_atomic(o.report_json, rep.to_json());
  };
  for_each_record(in, o.skip_bad, badrec, [&](const JsonlRecord& rec) {
    std::string line = filter.process(rec);
    if (!line.empty()) out.write(line);
  }, finish);
  finish();
  return rep;
}

}  // namespace ds::rl
