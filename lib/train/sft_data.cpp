#include "train/sft_data.h"

#include <algorithm>
#include <cmath>

#include "core/error.h"
#include "core/log.h"
#include "core/rng.h"

namespace ds {

namespace {

[[noreturn]] void bad_record(const JsonlRecord& r, const std::string& msg) {
  throw_bad_input(msg, r.file_, r.line_no_);
}

// {role, content} objects of `key`; `only_assistant` for a conversational completion.
void read_messages(const JsonlRecord& r, const std::string& key, bool only_assistant, std::vector<ChatMessage>& out) {
  if (r.type_name(key) != "array")
    bad_record(r, "field '" + key + "' must be an array of {\"role\", \"content\"} objects, not " + r.type_name(key));
  size_t i = 0;
  for (const JsonlRecord& m : r.get_object_array(key)) {
    const std::string where = "'" + key + "[" + std::to_string(i++) + "]";
    ChatMessage msg;
    msg.role = m.get_string("role");
    if (!is_chat_role(msg.role))
      bad_record(r, where + ".role' is '" + msg.role + "': roles are system, user and assistant");
    if (only_assistant && msg.role != "assistant")
      bad_record(r, where + ".role' is '" + msg.role + "': a completion holds assistant messages only");
    msg.content = m.get_string("content");
    out.push_back(std::move(msg));
  }
}

// A fixed hash of the conversation (FNV-1a 64 over role, NUL, content, NUL, ...).
uint64_t conversation_hash(const std::vector<ChatMessage>& msgs) {
  uint64_t h = 1469598103934665603ull;
  auto feed = [&](const std::string& s) {
    for (unsigned char c : s) h = (h ^ c) * 1099511628211ull;
    h = (h ^ 0u) * 1099511628211ull;
  };
  for (const ChatMessage& m : msgs) {
    feed(m.role);
    feed(m.content);
  }
  return h;
}

bool is_eval_conversation(const std::vector<ChatMessage>& msgs, double fraction) {
  if (fraction <= 0) return false;
  return rng_uniform_at(0x5eed5eed, 8, conversation_hash(msgs)) < fraction;
}

// Whether window w of `set` has a target (mask 1 at positions 1..T).
bool has_target(const WindowSet& set, int64_t w) {
  const int64_t W = set.T + 1;
  const auto first = set.loss_mask.begin() + w * W;
  return std::any_of(first + 1, first + W, [](uint8_t m) { return m != 0; });
}

// Removes the windows without a target; returns how many.
int64_t drop_targetless(WindowSet& set) {
  const int64_t W = set.T + 1, n = set.size();
  int64_t kept = 0;
  for (int64_t w = 0; w < n; ++w) {
    if (!has_target(set, w)) continue;
    if (kept != w) {
      std::copy_n(set.tokens.begin() + w * W, W, set.tokens.begin() + kept * W);
      std::copy_n(set.loss_mask.begin() + w * W, W, set.loss_mask.begin() + kept * W);
    }
    ++kept;
  }
  set.tokens.resize(size_t(kept * W));
  set.loss_mask.resize(size_t(kept * W));
  return n - kept;
}

int64_t count_targets(const WindowSet& set) {
  int64_t n = 0;
  const int64_t W = set.T + 1;
  for (size_t i = 0; i < set.loss_mask.size(); ++i) n += set.loss_mask[i] != 0 && int64_t(i) % W != 0;
  return n;
}

struct Stream {
  std::vector<int32_t> ids;
  std::vector<uint8_t> mask;
};

// Packing: pads a last partial window (one that holds a target) and cuts the stream.
void pack(Stream& s, int64_t T, int32_t pad, WindowSet& out) {
  out.T = T;
  if (s.ids.size() < 2) return;
  const int64_t rem = (int64_t(s.ids.size()) - 1) % T;
  if (rem != 0 && std::any_of(s.mask.end() - rem, s.mask.end(), [](uint8_t m) { return m != 0; })) {
    s.ids.resize(s.ids.size() + size_t(T - rem), pad);
    s.mask.resize(s.mask.size() + size_t(T - rem), 0);
  }
  cut_windows(s.ids, s.mask, T, out);
}

}  // namespace

std::vector<ChatMessage> chat_record_messages(const JsonlRecord& r) {
  std::vector<ChatMessage> msgs;
  if (r.has("messages")) {
    read_messages(r, "messages", false, msgs);
  } else if (r.has("prompt") || r.has("completion")) {
    if (!r.has("completion")) bad_record(r, "a record with 'prompt' needs 'completion'");
    if (!r.has("prompt")) bad_record(r, "a record with 'completion' needs 'prompt'");
    if (r.type_name("prompt") == "array") read_messages(r, "prompt", false, msgs);
    else msgs.push_back({"user", r.get_string("prompt")});
    if (r.type_name("completion") == "array") read_messages(r, "completion", true, msgs);
    else msgs.push_back({"assistant", r.get_string("completion")});
  } else {
    bad_record(r, "record has neither 'messages' nor 'prompt' + 'completion'");
  }
  if (std::none_of(msgs.begin(), msgs.end(), [](const ChatMessage& m) { return m.role == "assistant"; }))
    bad_record(r, "the conversation has no assistant message: nothing to train on");
  return msgs;
}

SftData load_sft_data(const std::string& path, const Tokenizer& tok, const SftDataOptions& opt) {
  if (opt.seq_len < 1) throw_usage("--seq-len must be >= 1");
  DS_CHECK(!opt.render.add_generation_prompt, "SFT renders whole conversations");
  const int64_t T = opt.seq_len, W = T + 1;
  const int32_t pad = tok.pad_id() >= 0 ? tok.pad_id() : tok.eos_id();
  SftData d;
  d.train.T = d.eval.T = T;
  Stream train_stream, eval_stream;
  JsonlReader reader(path);
  while (const JsonlRecord* r = reader.next()) {
    std::vector<ChatMessage> msgs = chat_record_messages(*r);
    ChatRendering c = render_chat(tok, msgs, opt.render);
    const bool eval = is_eval_conversation(msgs, opt.eval_fraction);
    ++d.n_conversations;
    d.n_eval_conversations += eval;
    d.n_tokens += int64_t(c.ids.size());
    if (opt.packing) {
      Stream& s = eval ? eval_stream : train_stream;
      s.ids.insert(s.ids.end(), c.ids.begin(), c.ids.end());
      s.mask.insert(s.mask.end(), c.trainable.begin(), c.trainable.end());
      continue;
    }
    if (int64_t(c.ids.size()) > W) {
      if (opt.strict)
        throw_bad_input("conversation of " + std::to_string(c.ids.size()) +
                            " tokens does not fit a window of --seq-len " + std::to_string(T) + " + 1 (--strict)",
                        reader.path(), reader.line_number());
      ++d.n_truncated;
      c.ids.resize(size_t(W));
      c.trainable.resize(size_t(W));
    }
    c.ids.resize(size_t(W), pad);
    c.trainable.resize(size_t(W), 0);
    WindowSet& set = eval ? d.eval : d.train;
    set.tokens.insert(set.tokens.end(), c.ids.begin(), c.ids.end());
    set.loss_mask.insert(set.loss_mask.end(), c.trainable.begin(), c.trainable.end());
  }
  if (d.n_conversations == 0) throw_bad_input("empty data: no chat records", path);
  if (opt.packing) {
    pack(train_stream, T, pad, d.train);
    pack(eval_stream, T, pad, d.eval);
  }
  d.n_dropped_windows = drop_targetless(d.train) + drop_targetless(d.eval);
  d.n_trainable = count_targets(d.train);
  if (d.n_truncated > 0)
    log_warn(std::to_string(d.n_truncated) + " of " + std::to_string(d.n_conversations) +
             " conversations are longer than --seq-len " + std::to_string(T) +
             " + 1 tokens and were truncated (--strict makes this an error)");
  if (d.train.size() == 0)
    throw_bad_input("no training window holds an assistant token (" + std::to_string(d.n_conversations) +
                        " conversations, " + std::to_string(d.n_eval_conversations) + " held out)",
                    path);
  return d;
}

int64_t sft_steps_for_epochs(double epochs, int64_t n_windows, int64_t windows_per_step) {
  DS_CHECK(windows_per_step > 0, "windows per step must be positive");
  const double steps = std::ceil(epochs * double(n_windows) / double(windows_per_step) - 1e-9);
  return std::max<int64_t>(1, int64_t(steps));
}

}  // namespace ds
