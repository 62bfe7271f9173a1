// lib/train/grpo: GRPO steps on a tiny model from hand-made rewarded rollouts. The reward prefers one completion
// pattern; a few steps must raise its log-prob and lower the other's. Also: the trainer's log-probs of the
// padded micro-batch windows equal an unpadded forward of each sample, the in-place checkpoint continues its
// optimizer state, the advantage dump, and bad input (file:line, nothing written).
#include <catch2/catch.hpp>

#include <unistd.h>

#include <cmath>
#include <filesystem>
#include <fstream>
#include <sstream>
#include <string>
#include <vector>

#include "ckpt/ckpt_dir.h"
#include "core/error.h"
#include "core/io.h"
#include "core/jsonl.h"
#include "model/model_io.h"
#include "train/grpo.h"

using namespace ds;

namespace {

struct TmpDir {
  std::string path;
  TmpDir() {
    std::string t = (std::filesystem::temp_directory_path() / "ds_test_grpo.XXXXXX").string();
    path = ::mkdtemp(t.data());
  }
  ~TmpDir() { std::filesystem::remove_all(path); }
};

const double kTemp = 0.8;

ModelConfig tiny_config() {
  ModelConfig c = config_preset("tiny");
  c.vocab_size = 64;
  return c;
}

Context test_ctx() {
  Context ctx;
  init_threads(ctx, 1);
  return ctx;
}

void write_ckpt(Model& m, const std::string& dir) {
  CheckpointDirWriter w(dir);
  save_model_files(w.tmp_dir(), m);
  w.commit();
}

// log p(completion) per token under softmax(logits / T), from an unpadded single-sample forward.
std::vector<double> completion_logprobs(Model& m, const std::vector<int32_t>& prompt, const std::vector<int32_t>& comp) {
  Batch b;
  b.B = 1;
  b.tokens = prompt;
  b.tokens.insert(b.tokens.end(), comp.begin(), comp.end());
  b.T = int64_t(b.tokens.size()) - 1;
  b.loss_mask.assign(b.tokens.size(), 0);
  for (size_t k = 0; k < comp.size(); ++k) b.loss_mask[prompt.size() + k] = 1;
  ForwardOptions fo;
  fo.mtp = false;
  fo.logit_temperature = kTemp;
  m.forward(b, fo);
  std::vector<double> lp = m.target_logprobs(), out;
  for (size_t k = 0; k < comp.size(); ++k) out.push_back(lp[prompt.size() - 1 + k]);
  return out;
}

double sum(const std::vector<double>& v) {
  double s = 0;
  for (double x : v) s += x;
  return s;
}

std::string ids_json(const std::vector<int32_t>& v) {
  std::ostringstream s;
  s << "[";
  for (size_t i = 0; i < v.size(); ++i) s << (i ? "," : "") << v[i];
  s << "]";
  return s.str();
}

std::string dbl_json(const std::vector<double>& v) {
  std::ostringstream s;
  s.precision(17);
  s << "[";
  for (size_t i = 0; i < v.size(); ++i) s << (i ? "," : "") << v[i];
  s << "]";
  return s.str();
}

const std::vector<int32_t> kPromptA = {0, 5, 6, 7}, kPromptB = {0, 8, 9};
const std::vector<int32_t> kGood = {20, 21, 22, 1}, kBad = {30, 31, 1};

// Two groups of four (two good, two bad samples each), a group whose rewards are all 1, and a null reward.
// Behaviour log-probs from the model `m` (fresh rollouts of the current policy).
std::string rollouts(Model& m) {
  std::string out;
  auto rec = [&](const std::string& group, const std::vector<int32_t>& prompt, const std::vector<int32_t>& comp,
                 const std::string& reward, const char* finish) {
    out += "{\"id\":\"" + group + "#" + std::to_string(out.size()) + "\",\"group\":\"" + group +
           "\",\"prompt_ids\":" + ids_json(prompt) + ",\"completion_tokens\":" + ids_json(comp) +
           ",\"logprobs\":" + dbl_json(completion_logprobs(m, prompt, comp)) + ",\"finish_reason\":\"" + finish +
           "\",\"temperature\":0.8,\"task\":\"toy\",\"reward\":" + reward +
           ",\"rewards\":{\"accuracy\":" + reward + ",\"format\":null}}\n";
  };
  for (const auto* p : {&kPromptA, &kPromptB}) {
    const std::string g = p == &kPromptA ? "a" : "b";
    rec(g, *p, kGood, "1", "stop");
    rec(g, *p, kBad, "0", "stop");
    rec(g, *p, kGood, "1", "stop");
    rec(g, *p, kBad, "0", "length");
  }
  rec("c", {0, 11}, {40, 41}, "1", "stop");
  rec("c", {0, 11}, {42}, "1", "stop");
  rec("d", {0, 12}, {43}, "null", "stop");
  return out;
}

void write_text(const std::string& path, const std::string& text) {
  std::ofstream f(path);
  f << text;
}

JsonlRecord metrics_of(const GrpoStepStats& st) { return parse_object(st.json, "metrics"); }

}  // namespace

TEST_CASE("GRPO steps raise the rewarded completion's log-prob and lower the other's", "[grpo][step]") {
  TmpDir tmp;
  Context ctx = test_ctx();
  const std::string ckpt = tmp.path + "/policy", data = tmp.path + "/rollouts.jsonl";
  {
    Model m(tiny_config(), ctx);
    m.init_random(7);
    write_ckpt(m, ckpt);
  }
  GrpoOptions o;
  o.input = data;
  o.ckpt = ckpt;
  o.output_dir = ckpt;  // in place: each call continues the previous one's optimizer
  o.metrics_path = tmp.path + "/metrics.jsonl";
  o.train.lr = 3e-3;
  o.train.micro_batch = 3;  // windows of different lengths share a padded micro-batch
  double good0 = 0, bad0 = 0, good = 0, bad = 0;
  for (int step = 1; step <= 4; ++step) {
    std::unique_ptr<Model> m = load_model(ckpt, ctx);
    const double g = sum(completion_logprobs(*m, kPromptA, kGood)) + sum(completion_logprobs(*m, kPromptB, kGood));
    const double b = sum(completion_logprobs(*m, kPromptA, kBad)) + sum(completion_logprobs(*m, kPromptB, kBad));
    if (step == 1) good0 = g, bad0 = b;
    write_text(data, rollouts(*m));
    GrpoStepStats st = run_grpo_step(ctx, o);
    JsonlRecord r = metrics_of(st);
    INFO(st.json);
    CHECK(st.grpo_step == step);
    CHECK(st.samples == 10);
    CHECK(st.null_rewards == 1);
    CHECK(st.groups == 3);
    CHECK(st.zero_std_groups == 1);
    CHECK(st.updates == 1);
    CHECK(r.get_double("reward_mean") == Approx(0.6));
    CHECK(r.get_double("accuracy") == Approx(0.6));
    CHECK(r.get_double("frac_reward_zero_std") == Approx(1.0 / 3));
    CHECK(r.get_double("truncation_rate") == Approx(0.2));
    CHECK(r.get_double("completion_len_max") == 4);
    CHECK(r.get_double("completion_len_min") == 1);
    // the padded windows score exactly as the unpadded forward that produced the behaviour log-probs
    CHECK(r.get_double("behaviour_logprob_abs_diff") < 1e-5);
    CHECK(r.get_double("ratio_mean") == Approx(1.0).epsilon(1e-5));  // on-policy: fresh rollouts, one update
    CHECK(r.get_double("entropy") > 0);
    CHECK(r.get_int("optimizer_step") == step);
    good = g, bad = b;
  }
  std::unique_ptr<Model> m = load_model(ckpt, ctx);
  good = sum(completion_logprobs(*m, kPromptA, kGood)) + sum(completion_logprobs(*m, kPromptB, kGood));
  bad = sum(completion_logprobs(*m, kPromptA, kBad)) + sum(completion_logprobs(*m, kPromptB, kBad));
  INFO("good " << good0 << " -> " << good << ", bad " << bad0 << " -> " << bad);
  CHECK(good > good0 + 0.5);
  CHECK(bad < bad0 - 0.5);

  // the checkpoint: GRPO state, optimizer, metrics appended once per step
  JsonlRecord state = parse_object(read_file(ckpt + "/trainer_state.json"), "state");
  CHECK(state.get_int("grpo_step") == 4);
  CHECK(state.get_int("optimizer_step") == 4);
  CHECK(path_exists(ckpt + "/optimizer.safetensors"));
  std::ifstream mf(o.metrics_path);
  std::string line;
  int lines = 0;
  while (std::getline(mf, line)) ++lines;
  CHECK(lines == 4);
}

TEST_CASE("GRPO step: mu iterations over mini-batches, recomputed old log-probs, KL to a reference", "[grpo][step]") {
  TmpDir tmp;
  Context ctx = test_ctx();
  const std::string ckpt = tmp.path + "/policy", out = tmp.path + "/out", data = tmp.path + "/r.jsonl";
  Model m(tiny_config(), ctx);
  m.init_random(11);
  write_ckpt(m, ckpt);
  write_text(data, rollouts(m));
  GrpoOptions o;
  o.input = data;
  o.ckpt = ckpt;
  o.ref = ckpt;
  o.output_dir = out;
  o.train.loss.beta = 0.1;
  o.train.iterations = 2;
  o.train.mini_batch = 4;  // 8 samples with a signal (the zero-variance group still trains: A = 0)
  o.train.use_behaviour_logprobs = false;
  o.train.lr = 1e-2;
  GrpoStepStats st = run_grpo_step(ctx, o);
  JsonlRecord r = metrics_of(st);
  INFO(st.json);
  CHECK(st.trained == 10);
  CHECK(st.updates == 2 * 3);  // ceil(10 / 4) per iteration
  CHECK(r.get_double("kl") > 0);  // later updates moved away from the reference
  CHECK(r.get_double("ppo_kl") != 0);
  CHECK(path_exists(out + "/model.safetensors"));
  CHECK(parse_object(read_file(out + "/trainer_state.json"), "s").get_int("optimizer_step") == 6);

  // -o holding another checkpoint: refused without --overwrite
  try {
    run_grpo_step(ctx, o);
    FAIL("expected a usage error");
  } catch (const Error& e) {
    CHECK(e.kind() == ErrorKind::usage);
  }
  // DAPO filters: the zero-variance group and the truncated sample leave the loss
  o.overwrite = true;
  o.train.filter.drop_zero_std_groups = true;
  o.train.filter.mask_truncated = true;
  o.train.iterations = 1;
  o.train.mini_batch = 0;
  st = run_grpo_step(ctx, o);
  CHECK(st.trained == 10 - 2 - 2);
  CHECK(metrics_of(st).get_int("dropped_zero_std") == 2);
  CHECK(metrics_of(st).get_int("masked_truncated") == 2);
}

TEST_CASE("GRPO step: advantage dump passes every record through", "[grpo][step]") {
  TmpDir tmp;
  Context ctx = test_ctx();
  Model m(tiny_config(), ctx);
  m.init_random(3);
  const std::string ckpt = tmp.path + "/policy", data = tmp.path + "/r.jsonl", dump = tmp.path + "/adv.jsonl";
  write_ckpt(m, ckpt);
  write_text(data, rollouts(m));
  GrpoOptions o;
  o.input = data;
  o.ckpt = ckpt;
  o.output_dir = tmp.path + "/out";
  o.dump_advantages = dump;
  run_grpo_step(ctx, o);
  JsonlReader rd(dump);
  int n = 0;
  while (const JsonlRecord* r = rd.next()) {
    ++n;
    CHECK(r->get_string("task") == "toy");
    CHECK(r->has("logprobs"));
    if (r->is_null("reward")) {
      CHECK(r->is_null("advantage"));
      continue;
    }
    const double want = r->get_string("group") == "c" ? 0.0 : (r->get_double("reward") > 0 ? 1.0 : -1.0);
    // rewards 1 1 0 0: mean .5, std sqrt(1/3), A = +-.5 / (sqrt(1/3) + 1e-6)
    CHECK(r->get_double("advantage") == Approx(want * 0.5 / (std::sqrt(1.0 / 3) + 1e-6)));
  }
  CHECK(n == 11);
}

TEST_CASE("GRPO step: bad records are bad-input errors with file:line and write nothing", "[grpo][step]") {
  TmpDir tmp;
  Context ctx = test_ctx();
  Model m(tiny_config(), ctx);
  m.init_random(5);
  const std::string ckpt = tmp.path + "/policy", data = tmp.path + "/r.jsonl", out = tmp.path + "/out";
  write_ckpt(m, ckpt);
  const std::string good = rollouts(m);
  const std::string first = good.substr(0, good.find('\n') + 1);
  GrpoOptions o;
  o.input = data;
  o.ckpt = ckpt;
  o.output_dir = out;
  o.dump_advantages = tmp.path + "/adv.jsonl";
  struct Bad {
    std::string line, message;
  };
  const Bad bads[] = {
      {"{\"group\":\"a\",\"prompt_ids\":[0,1],\"completion_tokens\":[99],\"logprobs\":[-1],\"reward\":1}",
       "outside the vocabulary"},
      {"{\"group\":\"a\",\"prompt_ids\":[0,1],\"completion_tokens\":[3],\"logprobs\":[-1]}", "no 'reward' field"},
      {"{\"group\":\"a\",\"prompt_ids\":[0,1],\"completion_tokens\":[3,4],\"logprobs\":[-1],\"reward\":1}",
       "'logprobs' has 1 entries for 2"},
      {"{\"group\":\"a\",\"prompt_ids\":[],\"completion_tokens\":[3],\"logprobs\":[-1],\"reward\":1}", "is empty"},
      {"{\"prompt_ids\":[0],\"completion_tokens\":[3],\"logprobs\":[-1],\"reward\":1}", "cannot be grouped"},
      {"{\"group\":\"a\",\"prompt_ids\":[0],\"completion_tokens\":[3],\"logprobs\":[-1],\"reward\":\"1\"}",
       "'reward' must be a number"},
      {"{\"group\":\"a\",\"prompt_ids\":[0],\"completion_tokens\":[3],\"logprobs\":[-1],\"reward\":1,\"temperature\":1}",
       "differs from the earlier records"},
      {"{\"group\":\"a\",\"prompt_ids\":[0],\"completion_tokens\":[3],", "r.jsonl:3"},
  };
  for (const Bad& b : bads) {
    write_text(data, first + first + b.line + "\n");
    INFO(b.line);
    try {
      run_grpo_step(ctx, o);
      FAIL("expected a bad-input error");
    } catch (const Error& e) {
      CHECK(e.kind() == ErrorKind::bad_input);
      const std::string msg = e.what();
      INFO(msg);
      CHECK(msg.find(b.message) != std::string::npos);
      CHECK(msg.find("r.jsonl:3") != std::string::npos);
    }
    CHECK_FALSE(std::filesystem::exists(out));
    CHECK_FALSE(std::filesystem::exists(o.dump_advantages));
  }
  // beta > 0 without a reference: usage error
  write_text(data, good);
  o.train.loss.beta = 0.01;
  CHECK_THROWS_AS(run_grpo_step(ctx, o), Error);
  CHECK_FALSE(std::filesystem::exists(out));
}
