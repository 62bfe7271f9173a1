#include "infer/rollout.h"

#include <map>
#include <unordered_map>

#include "balance/stats.h"
#include "core/io.h"
#include "core/json.h"
#include "core/jsonl.h"
#include "core/log.h"
#include "core/progress.h"
#include "core/rng.h"
#include "model/model_io.h"
#include "tokenizer/chat_template.h"

namespace ds {

PromptTemplate prompt_template_parse(const std::string& s) {
  if (s == "r1-zero") return PromptTemplate::r1_zero;
  if (s == "chat") return PromptTemplate::chat;
  if (s == "raw") return PromptTemplate::raw;
  throw_usage("unknown template '" + s + "' (r1-zero, chat or raw)");
}

const char* prompt_template_name(PromptTemplate t) {
  switch (t) {
    case PromptTemplate::r1_zero: return "r1-zero";
    case PromptTemplate::chat: return "chat";
    case PromptTemplate::raw: return "raw";
  }
  return "?";
}

std::string r1_zero_prompt(const std::string& question) {
  return "A conversation between User and Assistant. The user asks a question, and the Assistant solves it. The "
         "assistant first thinks about the reasoning process in the mind and then provides the user with the answer. "
         "The reasoning process and answer are enclosed within <think> </think> and <answer> </answer> tags, "
         "respectively, i.e., <think> reasoning process here </think> <answer> answer here </answer>. User: " +
         question + ". Assistant:";
}

namespace {

// The fields a rollout record sets itself; the rest of a prompt record passes through ("step": ds-grpo's loop).
const char* kOwnFields[] = {"id", "group", "sample", "prompt", "completion", "completion_tokens", "logprobs",
                            "finish_reason", "prompt_tokens", "prompt_ids", "template", "prefill", "temperature",
                            "top_p", "top_k", "seed", "step"};

bool is_own_field(const std::string& k) {
  for (const char* f : kOwnFields)
    if (k == f) return true;
  return false;
}

// A prompt record in flight in run_rollout.
struct InFlight {
  PromptRecord rec;
  uint64_t seed = 0;
  int64_t remaining = 0;
};

}  // namespace

std::vector<std::string> template_stops(PromptTemplate t, const std::vector<std::string>& user, bool no_default) {
  std::vector<std::string> stop = user;
  if (t == PromptTemplate::r1_zero && !no_default) stop.push_back("</answer>");
  return stop;
}

bool template_keeps_stop(PromptTemplate t) { return t == PromptTemplate::r1_zero; }

std::string template_prefill(PromptTemplate t, bool prefill_think) {
  if (!prefill_think) return "";
  return t == PromptTemplate::r1_zero ? " <think>\n" : "<think>\n";
}

std::string shown_prefill(const std::string& prefill) {
  return !prefill.empty() && prefill[0] == ' ' ? prefill.substr(1) : prefill;
}

PromptRecord prepare_prompt(const JsonlRecord& r, uint64_t index, const Tokenizer& tok, PromptTemplate t,
                            bool prefill_think) {
  PromptRecord p;
  p.id = r.has("id") && r.type_name("id") == "string" ? r.get_string("id")
         : r.has("id")                                ? r.raw("id")
                                                      : "p" + std::to_string(index);
  if (r.has("prompt")) p.prompt_raw = r.raw("prompt");
  for (const std::string& k : r.keys())
    if (!is_own_field(k)) p.passthrough.emplace_back(k, r.raw(k));
  if (t == PromptTemplate::chat) {
    std::vector<ChatMessage> msgs;
    if (r.has("messages")) {
      for (const JsonlRecord& m : r.get_object_array("messages")) msgs.push_back({m.get_string("role"), m.get_string("content")});
    } else {
      msgs.push_back({"user", r.get_string("prompt")});
    }
    ChatRenderOptions co;
    co.add_generation_prompt = true;
    co.prefill_think = prefill_think;
    p.ids = render_generation_prompt(tok, msgs, co);
    return p;
  }
  std::string text = r.get_string("prompt");
  if (t == PromptTemplate::r1_zero) text = r1_zero_prompt(text);
  p.ids.push_back(tok.bos_id());
  std::vector<int32_t> body = tok.encode(text + template_prefill(t, prefill_think));
  p.ids.insert(p.ids.end(), body.begin(), body.end());
  return p;
}

std::string rollout_record_json(const PromptRecord& p, const std::string& id, const std::string& group,
                                const GenSample& g, const SamplingParams& sp, uint64_t seed, PromptTemplate t,
                                const std::string& prefill,
                                const std::vector<std::pair<std::string, std::string>>& extra) {
  const std::string shown = shown_prefill(prefill);
  JsonWriter w;
  w.begin_object();
  w.kv("id", id).kv("group", group).kv("sample", g.sample);
  if (!p.prompt_raw.empty()) w.key("prompt").raw(p.prompt_raw);
  w.kv("completion", shown + g.text);
  w.key("completion_tokens").begin_array();
  for (int32_t tok : g.tokens) w.value(int64_t(tok));
  w.end_array().key("logprobs").begin_array();
  for (double l : g.logprobs) w.value(l);
  w.end_array();
  w.kv("finish_reason", g.finish_reason).kv("prompt_tokens", g.prompt_tokens);
  w.key("prompt_ids").begin_array();
  for (int32_t tok : p.ids) w.value(int64_t(tok));
  w.end_array();
  w.kv("template", prompt_template_name(t)).kv("prefill", shown);
  w.kv("temperature", sp.temperature).kv("top_p", sp.top_p).kv("top_k", sp.top_k).kv("seed", seed);
  for (const auto& [k, v] : extra) w.key(k).raw(v);
  for (const auto& [k, v] : p.passthrough) w.key(k).raw(v);
  w.end_object();
  return w.str() + "\n";
}

RolloutSummary run_rollout(const Context& ctx, const RolloutOptions& o) {
  if (o.ckpt.empty()) throw_usage("--ckpt DIR is required");
  if (o.samples < 1) throw_usage("--samples must be >= 1");
  if (std::string hint = blas_kernel_hint(); !hint.empty()) log_info(hint);
  ModelLoadOptions lo;
  lo.dtype = o.dtype;
  std::unique_ptr<Model> model = load_model(o.ckpt, ctx, lo);
  Tokenizer tok = Tokenizer::load(o.ckpt);
  if (!o.placement.empty()) {
    balance::PlacementFile pf = balance::read_placement(o.placement);
    model->set_placement(pf.meta.layer_ids, pf.layers, pf.meta.shape.gpus);
  }
  EngineOptions eo = o.engine;
  eo.max_batch = std::max(eo.max_batch, o.samples);
  Engine engine(*model, &tok, eo);
  const std::string prefill = template_prefill(o.tmpl, o.prefill_think);
  const std::vector<std::string> stop = template_stops(o.tmpl, o.stop, o.no_default_stop);

  JsonlReader reader(o.input);
  Writer out(o.output);
  std::unordered_map<uint64_t, InFlight> inflight;
  RolloutSummary sum;
  Progress progress("rollout", 0, 10.0);
  uint64_t index = 0;
  bool input_done = false;
  std::string pending_error;  // a bad record in stop mode: finish what was submitted, then fail
  std::string last_skipped;
  const std::string where = reader.path() == "-" ? "<stdin>" : reader.path();  // as JsonlReader names stdin

  auto write_sample = [&](const GenSample& g) {
    InFlight& p = inflight.at(g.request_id);
    out.write(rollout_record_json(p.rec, p.rec.id + "#" + std::to_string(g.sample), p.rec.id, g, o.sp, p.seed,
                                  o.tmpl, prefill));
    ++sum.samples;
    if (--p.remaining == 0) inflight.erase(g.request_id);
  };

  while (true) {
    // keep about one batch of prompts queued, reading lazily so memory stays bounded
    while (!input_done && pending_error.empty() && int64_t(inflight.size()) * o.samples < 2 * eo.max_batch) {
      const uint64_t i = index++;
      try {
        // inside the try: a malformed line is a bad record like any other (reported with its file:line after
        // the good records before it are written, or skipped with --skip-bad; the reader resumes at the next line)
        const JsonlRecord* r = reader.next();
        if (!r) {
          input_done = true;
          break;
        }
        InFlight info;
        info.rec = prepare_prompt(*r, i, tok, o.tmpl, o.prefill_think);
        GenRequest req;
        req.id = i;
        req.prompt = info.rec.ids;
        req.n = o.samples;
        req.sp = o.sp;
        req.sp.seed = uint64_t(rng_uniform_at(o.sp.seed, 0x7011, i) * 9007199254740992.0);  // per-prompt seed
        req.stop = stop;
        req.include_stop = template_keeps_stop(o.tmpl);
        req.stop_at_eos = !o.ignore_eos;
        info.seed = req.sp.seed;
        info.remaining = o.samples;
        const int64_t context = engine.options().max_context;
        if (int64_t(req.prompt.size()) >= context)
          throw_bad_input("prompt of " + std::to_string(req.prompt.size()) + " tokens does not fit the context of " +
                              std::to_string(context),
                          where, reader.line_number());
        engine.submit(std::move(req));
        inflight.emplace(i, std::move(info));
        ++sum.prompts;
      } catch (const Error& e) {
        if (e.kind() != ErrorKind::bad_input) throw;
        std::string msg = e.what();
        if (msg.find("(" + where) == std::string::npos) msg = with_location(msg, where, reader.line_number());
        if (!o.skip_bad || msg == last_skipped) {  // the same error twice: the reader cannot get past it
          pending_error = msg;
        } else {
          log_warn("skipped: " + msg);
          last_skipped = msg;
          ++sum.skipped;
        }
      }
    }
    if (engine.idle()) break;
    for (const GenSample& g : engine.step()) write_sample(g);
    out.flush();
    if (o.progress) {
      const EngineStats& st = engine.stats();
      char buf[128];
      std::snprintf(buf, sizeof buf, "%lld samples | %.0f tok/s", static_cast<long long>(sum.samples),
                    st.decode_seconds > 0 ? double(st.generated_tokens) / (st.decode_seconds + st.prefill_seconds) : 0.0);
      progress.update(sum.samples, buf);
    }
  }
  progress.finish();
  out.commit();  // the good records are kept even when a bad one stops the run
  sum.engine = engine.stats();
  sum.gpu_load = model->gpu_load();
  if (!pending_error.empty()) throw_bad_input(pending_error);
  return sum;
}

}  // namespace ds
