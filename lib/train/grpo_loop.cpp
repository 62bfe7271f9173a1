#include "train/grpo_loop.h"

#include <stdlib.h>
#include <sys/wait.h>

#include <algorithm>
#include <cstdio>
#include <filesystem>
#include <fstream>

#include "ckpt/ckpt_dir.h"
#include "core/io.h"
#include "core/json.h"
#include "core/jsonl.h"
#include "core/log.h"
#include "core/progress.h"
#include "core/rng.h"
#include "rl/reward_stream.h"
#include "tokenizer/chat_template.h"
#include "train/trainer.h"

namespace ds {

namespace {

std::vector<PromptRecord> load_prompts(const std::string& path, const Tokenizer& tok, const GrpoLoopOptions& L,
                                    int64_t context) {
  std::vector<PromptRecord> out;
  JsonlReader reader(path);
  while (const JsonlRecord* r = reader.next()) {
    PromptRecord p;
    try {
      p = prepare_prompt(*r, out.size(), tok, L.tmpl, L.prefill_think);
    } catch (const Error& e) {
      if (e.kind() != ErrorKind::bad_input) throw;
      throw_bad_input(e.what(), reader.path(), reader.line_number());
    }
    if (int64_t(p.ids.size()) >= context)
      throw_bad_input("prompt of " + std::to_string(p.ids.size()) + " tokens does not fit the context of " +
                          std::to_string(context),
                      reader.path(), reader.line_number());
    out.push_back(std::move(p));
  }
  if (out.empty()) throw_bad_input("no prompt records", path);
  return out;
}

std::string rollout_record(const PromptRecord& p, int64_t draw, const GenSample& g, uint64_t seed, int64_t step,
                           const GrpoLoopOptions& L) {
  const std::string group = p.id + "@" + std::to_string(draw);
  return rollout_record_json(p, group + "#" + std::to_string(g.sample), group, g, L.sp, seed, L.tmpl,
                             template_prefill(L.tmpl, L.prefill_think), {{"step", std::to_string(step)}});
}

struct ScratchDir {
  std::string path;
  ScratchDir() {
    std::string t = (std::filesystem::temp_directory_path() / "ds-grpo.XXXXXX").string();
    if (!::mkdtemp(t.data())) throw_runtime("cannot create a temporary directory in " + t);
    path = t;
  }
  ~ScratchDir() {
    std::error_code ec;
    std::filesystem::remove_all(path, ec);
  }
};

std::string shell_quote(const std::string& s) {
  std::string q = "'";
  for (char c : s) q += c == '\'' ? std::string("'\\''") : std::string(1, c);
  return q + "'";
}

void run_reward_cmd(const std::string& cmd, const std::string& in, const std::string& out) {
  const std::string full = "(" + cmd + ") < " + shell_quote(in) + " > " + shell_quote(out);
  const int rc = std::system(full.c_str());
  if (rc == -1) throw_runtime("cannot run the reward command: " + cmd);
  if (!WIFEXITED(rc) || WEXITSTATUS(rc) != 0)
    throw_runtime("the reward command failed (" +
                  (WIFEXITED(rc) ? "exit status " + std::to_string(WEXITSTATUS(rc)) : std::string("killed")) +
                  "): " + cmd);
}

void append_file(const std::string& dst, const std::string& src) {
  std::ifstream in(src, std::ios::binary);
  std::ofstream out(dst, std::ios::binary | std::ios::app);
  out << in.rdbuf();
  if (!out) throw_runtime("cannot append to " + dst);
}

}  // namespace

GrpoStepStats run_grpo_loop(const Context& ctx, const GrpoOptions& o, const GrpoLoopOptions& L) {
  if (L.prompts.empty()) throw_usage("--prompts FILE is required with --steps");
  if (L.steps < 1 || L.prompts_per_step < 1 || L.samples < 1)
    throw_usage("--steps, --prompts-per-step and --samples must be >= 1");
  if (!(L.sp.temperature > 0)) throw_usage("the loop samples at --temperature > 0 (greedy samples have no log-probs)");
  if (L.save_every < 0) throw_usage("--save-every must be >= 0");
  check_grpo_paths(o);
  if (!path_exists(o.ckpt + "/tokenizer.model")) throw_bad_input("the loop needs the checkpoint's tokenizer.model", o.ckpt);
  Tokenizer tok = Tokenizer::load(o.ckpt);
  std::unique_ptr<Model> policy = load_model(o.ckpt, ctx);
  const ModelConfig& cfg = policy->config();
  std::unique_ptr<Model> ref;
  if (!o.ref.empty()) {
    ref = load_model(o.ref, ctx);
    if (ref->config().vocab_size != cfg.vocab_size)
      throw_bad_input("the reference model's vocabulary differs from the policy's", o.ref);
  }
  EngineOptions eo = L.engine;
  eo.max_batch = std::max(eo.max_batch, L.samples);
  Engine engine(*policy, &tok, eo);
  const std::vector<PromptRecord> prompts = load_prompts(L.prompts, tok, L, engine.options().max_context);
  const std::vector<std::string> stop = template_stops(L.tmpl, L.stop, L.no_default_stop);

  GrpoUpdater up(*policy, ref.get(), o.train);
  if (!o.reset_optimizer && up.resume_from(o.ckpt))
    log_info("continuing GRPO from step " + std::to_string(up.grpo_step()) + " (prompt position " +
             std::to_string(up.data_position()) + ")");
  GrpoReadOptions ro;
  ro.need_logprobs = o.train.use_behaviour_logprobs;
  ro.vocab_size = cfg.vocab_size;
  ro.max_positions = cfg.max_position_embeddings;
  ro.temperature = L.sp.temperature;
  auto save = [&] {
    CheckpointDirWriter dir(o.output_dir);
    up.save_files(dir.tmp_dir(), &tok, o.save);
    dir.commit();
  };

  ScratchDir tmp;
  const std::string rollouts = tmp.path + "/rollouts.jsonl", rewarded = tmp.path + "/rewarded.jsonl";
  install_stop_handlers();
  GrpoStepStats st;
  bool saved_last = true;
  const int64_t n = int64_t(prompts.size()), K = L.prompts_per_step;
  for (int64_t s = 0; s < L.steps && !stop_requested(); ++s) {
    const int64_t step = up.grpo_step() + 1, pos = up.data_position();
    // rollout: K prompts x G samples from the current policy
    const double t0 = now_seconds();
    const EngineStats e0 = engine.stats();
    std::vector<uint64_t> seeds(static_cast<size_t>(K));
    for (int64_t j = 0; j < K; ++j) {
      GenRequest req;
      req.id = uint64_t(j);
      req.prompt = prompts[size_t((pos + j) % n)].ids;
      req.n = L.samples;
      req.sp = L.sp;
      req.sp.seed = seeds[size_t(j)] =
          uint64_t(rng_uniform_at(o.train.seed, 0x6790000 + uint64_t(step), uint64_t(pos + j)) * 9007199254740992.0);
      req.stop = stop;
      req.include_stop = template_keeps_stop(L.tmpl);
      engine.submit(std::move(req));
    }
    std::vector<GenSample> out = engine.run_to_completion();
    std::sort(out.begin(), out.end(), [](const GenSample& a, const GenSample& b) {
      return a.request_id != b.request_id ? a.request_id < b.request_id : a.sample < b.sample;
    });
    {
      Writer w(rollouts);
      for (const GenSample& g : out) {
        const int64_t j = int64_t(g.request_id);
        w.write(rollout_record(prompts[size_t((pos + j) % n)], pos + j, g, seeds[size_t(j)], step, L));
      }
      w.commit();
    }
    const double t1 = now_seconds();
    // reward
    if (!L.reward_cmd.empty()) {
      run_reward_cmd(L.reward_cmd, rollouts, rewarded);
    } else {
      rl::RewardStreamOptions rs;
      rs.input = rollouts;
      rs.output = rewarded;
      rs.cfg = L.reward;
      rs.answer_field = L.answer_field;
      rl::reward_stream(rs);
    }
    const double t2 = now_seconds();
    const GrpoRollouts data = read_grpo_rollouts(rewarded, ro);
    if (!L.rollouts_out.empty()) append_file(L.rollouts_out, rewarded);
    // update, and the engine samples from the new weights from now on
    st = up.update(data);
    engine.decoder().refresh();
    up.set_data_position(pos + K);

    const EngineStats& e1 = engine.stats();
    const int64_t gen_tokens = e1.generated_tokens - e0.generated_tokens;
    JsonWriter x;
    x.begin_object().kv("prompt_position", pos + K).kv("gen_tokens", gen_tokens).kv("gen_s", t1 - t0);
    x.kv("gen_tokens_per_s", t1 > t0 ? double(gen_tokens) / (t1 - t0) : 0.0).kv("reward_s", t2 - t1).end_object();
    st.json = st.json.substr(0, st.json.size() - 1) + "," + x.str().substr(1);
    append_metrics(o.metrics_path, st.json);
    char buf[200];
    std::snprintf(buf, sizeof buf, "step %lld: reward %.4f, %lld samples, %.0f gen tok/s, loss %.4g",
                  static_cast<long long>(step), st.reward_mean, static_cast<long long>(st.samples),
                  t1 > t0 ? double(gen_tokens) / (t1 - t0) : 0.0, st.loss);
    log_info(buf);
    saved_last = false;
    if (L.save_every > 0 && (s + 1) % L.save_every == 0) {
      save();
      saved_last = true;
    }
  }
  if (stop_requested()) log_warn("stopped by a signal after step " + std::to_string(up.grpo_step()) + "; saving");
  if (!saved_last) save();
  log_info("GRPO: " + std::to_string(up.grpo_step()) + " steps done; checkpoint " + o.output_dir);
  return st;
}

}  // namespace ds
