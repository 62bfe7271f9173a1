#include "train/grpo.h"

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <filesystem>
#include <map>

#include "ckpt/ckpt_dir.h"
#include "core/io.h"
#include "core/json.h"
#include "core/jsonl.h"
#include "core/log.h"
#include "core/progress.h"
#include "core/rng.h"
#include "tokenizer/tokenizer_files.h"

namespace ds {

namespace {

// B windows prompt + completion, mask 1 on the completion tokens, padded with id 0 / mask 0 to the longest.
struct Window {
  Batch batch;
  std::vector<int64_t> first_row;  // per sample: the row predicting its first completion token
};

Window make_window(const GrpoRollouts& d, const std::vector<int64_t>& idx) {
  int64_t W = 0;
  for (int64_t i : idx) W = std::max<int64_t>(W, int64_t(d.samples[size_t(i)].prompt.size() +
                                                        d.samples[size_t(i)].completion.size()));
  Window w;
  Batch& b = w.batch;
  b.B = int64_t(idx.size());
  b.T = W - 1;
  DS_CHECK(b.B > 0 && b.T > 0, "a micro-batch needs samples with completion tokens");
  b.tokens.assign(size_t(b.B * W), 0);
  b.loss_mask.assign(size_t(b.B * W), 0);
  for (int64_t j = 0; j < b.B; ++j) {
    const GrpoSample& s = d.samples[size_t(idx[size_t(j)])];
    const int64_t P = int64_t(s.prompt.size()), C = int64_t(s.completion.size());
    std::copy(s.prompt.begin(), s.prompt.end(), b.tokens.begin() + j * W);
    std::copy(s.completion.begin(), s.completion.end(), b.tokens.begin() + j * W + P);
    std::fill(b.loss_mask.begin() + j * W + P, b.loss_mask.begin() + j * W + P + C, uint8_t(1));
    w.first_row.push_back(j * b.T + P - 1);
  }
  return w;
}

// Entropy of softmax(z) for one row of (temperature-scaled) logits.
double row_entropy(const std::vector<double>& z) {
  double mx = -INFINITY;
  for (double v : z) mx = std::max(mx, v);
  double s = 0, sz = 0;
  for (double v : z) {
    const double e = std::exp(v - mx);
    s += e;
    sz += e * (v - mx);
  }
  return std::log(s) - sz / s;  // H = lse - E_p[z], shifted by mx
}

struct Acc {  // a running mean / std / min / max
  double n = 0, sum = 0, sq = 0, mn = INFINITY, mx = -INFINITY;
  void add(double v) {
    n += 1;
    sum += v;
    sq += v * v;
    mn = std::min(mn, v);
    mx = std::max(mx, v);
  }
  double mean() const { return n ? sum / n : 0.0; }
  double std() const { return n > 1 ? std::sqrt(std::max(0.0, (sq - sum * sum / n) / (n - 1))) : 0.0; }
};

std::string normal_path(const std::string& p) {
  std::string s = std::filesystem::weakly_canonical(std::filesystem::path(p)).lexically_normal().string();
  while (s.size() > 1 && s.back() == '/') s.pop_back();
  return s;
}

}  // namespace

GrpoUpdater::GrpoUpdater(Model& policy, Model* ref, const GrpoTrainOptions& opt)
    : policy_(policy), ref_(ref), opt_(opt), adamw_(policy, opt.optim) {
  if (opt_.iterations < 1) throw_usage("--iterations must be >= 1");
  if (opt_.micro_batch < 1) throw_usage("--micro-batch must be >= 1");
  if (opt_.mini_batch < 0) throw_usage("--mini-batch must be >= 0");
  if (opt_.loss.beta > 0 && !ref_) throw_usage("a KL term (--beta > 0) needs the reference model (--ref)");
  if (opt_.loss.eps_low < 0 || opt_.loss.eps_low >= 1 || opt_.loss.eps_high < 0)
    throw_usage("clip ranges: 0 <= --eps-low < 1, --eps-high >= 0");
  if (opt_.loss.dual_clip != 0 && opt_.loss.dual_clip <= 1) throw_usage("--dual-clip must be > 1 (or 0 = off)");
}

bool GrpoUpdater::resume_from(const std::string& dir) {
  const std::string path = dir + "/trainer_state.json";
  if (!path_exists(path)) return false;
  JsonlRecord r = parse_object(read_file(path), path);
  if (!r.has("grpo_step")) return false;  // a pre-training / SFT checkpoint: fresh optimizer
  if (!path_exists(dir + "/optimizer.safetensors"))
    throw_bad_input("a GRPO checkpoint without optimizer.safetensors (pass --reset-optimizer to start afresh)", dir);
  grpo_step_ = r.get_int("grpo_step");
  opt_step_ = r.get_int("optimizer_step");
  tokens_seen_ = r.get_int("tokens_seen");
  data_position_ = r.get_int("data_position");
  adamw_.load(dir + "/optimizer.safetensors");
  return true;
}

void GrpoUpdater::save_files(const std::string& dir, const Tokenizer* tok, const ModelSaveOptions& save) const {
  save_model_files(dir, policy_, save);
  if (tok && tok->loaded()) write_tokenizer_files(dir, *tok);
  adamw_.save(dir + "/optimizer.safetensors");
  JsonWriter w(true);
  w.begin_object()
      .kv("stage", "grpo")
      .kv("grpo_step", grpo_step_)
      .kv("optimizer_step", opt_step_)
      .kv("step", opt_step_)
      .kv("data_position", data_position_)
      .kv("tokens_seen", tokens_seen_)
      .kv("seed", opt_.seed)
      .end_object();
  write_text_file(dir, "trainer_state.json", w.str() + "\n");
}

GrpoStepStats GrpoUpdater::update(const GrpoRollouts& d) {
  const double t_start = now_seconds();
  const auto& S = d.samples;
  const int64_t n = int64_t(S.size());
  GrpoStepStats st;
  st.samples = n;
  st.null_rewards = d.null_rewards;

  // 1. advantages and the samples that enter the loss
  std::vector<double> rewards(static_cast<size_t>(n));
  std::vector<int64_t> group(static_cast<size_t>(n)), lengths(static_cast<size_t>(n));
  std::vector<uint8_t> truncated(static_cast<size_t>(n));
  for (int64_t i = 0; i < n; ++i) {
    rewards[size_t(i)] = S[size_t(i)].reward;
    group[size_t(i)] = S[size_t(i)].group;
    lengths[size_t(i)] = int64_t(S[size_t(i)].completion.size());
    truncated[size_t(i)] = S[size_t(i)].truncated;
  }
  std::vector<double> shaped = rewards;
  rl::add_overlong_penalty(shaped, lengths, opt_.overlong_max_len, opt_.overlong_buffer, opt_.overlong_factor);
  const rl::Advantages adv = rl::group_advantages(shaped, group, opt_.adv);
  rl::SampleFilterCounts fc;
  const std::vector<uint8_t> keep = rl::loss_samples(adv, group, truncated, opt_.filter, &fc);
  std::vector<int64_t> train;
  for (int64_t i = 0; i < n; ++i)
    if (keep[size_t(i)] && lengths[size_t(i)] > 0) train.push_back(i);
  st.advantage = adv.advantage;
  for (int64_t i = 0; i < n; ++i) {
    st.group_mean.push_back(adv.groups[size_t(group[size_t(i)])].mean);
    st.group_std.push_back(adv.groups[size_t(group[size_t(i)])].std);
  }
  int64_t groups_with_samples = 0;
  for (const rl::GroupStats& g : adv.groups) groups_with_samples += g.size > 0;
  st.groups = groups_with_samples;
  st.zero_std_groups = adv.zero_std_groups;
  st.trained = int64_t(train.size());

  // 2. per-token old and reference log-probs, flat by sample
  std::vector<int64_t> off(size_t(n + 1), 0);
  for (int64_t i = 0; i < n; ++i) off[size_t(i + 1)] = off[size_t(i)] + lengths[size_t(i)];
  std::vector<double> old(size_t(off.back()), 0.0), ref;
  ForwardOptions fo;
  fo.mtp = false;
  fo.balance_alpha = 0;
  fo.logit_temperature = d.temperature;
  const int64_t mb = opt_.micro_batch;
  auto score = [&](Model& m, std::vector<double>& out) {  // log-probs of every trained token under m
    for (size_t b = 0; b < train.size(); b += size_t(mb)) {
      std::vector<int64_t> idx(train.begin() + int64_t(b), train.begin() + int64_t(std::min(train.size(), b + size_t(mb))));
      Window w = make_window(d, idx);
      m.forward(w.batch, fo);
      const std::vector<double> lp = m.target_logprobs();
      for (size_t j = 0; j < idx.size(); ++j)
        for (int64_t k = 0; k < lengths[size_t(idx[j])]; ++k)
          out[size_t(off[size_t(idx[j])] + k)] = lp[size_t(w.first_row[j] + k)];
    }
  };
  if (opt_.use_behaviour_logprobs) {
    for (int64_t i : train) std::copy(S[size_t(i)].logprobs.begin(), S[size_t(i)].logprobs.end(), old.begin() + off[size_t(i)]);
  } else {
    score(policy_, old);
    policy_.reset_expert_load();  // scoring traffic is not training load
  }
  if (ref_) {
    ref.assign(old.size(), 0.0);
    score(*ref_, ref);
  }

  // 3. μ iterations over shuffled mini-batches; one AdamW update per mini-batch
  rl::GrpoMetrics gm;
  Acc ent, gnorm, loss_acc;
  double mismatch = 0;
  int64_t mismatch_n = 0, window_tokens = 0;
  const double t_update = now_seconds();
  const size_t mini = opt_.mini_batch > 0 ? size_t(opt_.mini_batch) : std::max<size_t>(train.size(), 1);
  for (int64_t it = 0; it < opt_.iterations && !train.empty(); ++it) {
    std::vector<int64_t> order = train;
    if (opt_.shuffle) {
      Rng rng{opt_.seed, 0x67a000000000ull + uint64_t(grpo_step_), uint64_t(it) << 32};
      for (size_t i = order.size(); i > 1; --i) std::swap(order[i - 1], order[size_t(rng.next_below(i))]);
    }
    for (size_t m0 = 0; m0 < order.size(); m0 += mini) {
      const size_t m1 = std::min(order.size(), m0 + mini);
      rl::LossNormaliser norm;
      for (size_t j = m0; j < m1; ++j) {
        norm.tokens += double(lengths[size_t(order[j])]);
        norm.seqs += 1;
      }
      policy_.zero_grads();
      policy_.reset_expert_load();
      double mloss = 0;
      for (size_t b = m0; b < m1; b += size_t(mb)) {
        std::vector<int64_t> idx(order.begin() + int64_t(b), order.begin() + int64_t(std::min(m1, b + size_t(mb))));
        Window w = make_window(d, idx);
        policy_.forward(w.batch, fo);
        const std::vector<double> lp = policy_.target_logprobs();
        std::vector<int64_t> offsets = {0};
        std::vector<double> a, logp, lold, lref;
        for (size_t j = 0; j < idx.size(); ++j) {
          const int64_t i = idx[j];
          a.push_back(adv.advantage[size_t(i)]);
          for (int64_t k = 0; k < lengths[size_t(i)]; ++k) {
            logp.push_back(lp[size_t(w.first_row[j] + k)]);
            lold.push_back(old[size_t(off[size_t(i)] + k)]);
            if (ref_) lref.push_back(ref[size_t(off[size_t(i)] + k)]);
          }
          offsets.push_back(int64_t(logp.size()));
        }
        if (it == 0 && m0 == 0 && !S[size_t(idx[0])].logprobs.empty()) {  // before any update: engine vs trainer
          for (size_t j = 0, t = 0; j < idx.size(); ++j)
            for (int64_t k = 0; k < lengths[size_t(idx[j])]; ++k, ++t) {
              mismatch += std::abs(logp[t] - S[size_t(idx[j])].logprobs[size_t(k)]);
              ++mismatch_n;
            }
        }
        const rl::GrpoTokens toks{offsets, a, logp, lold, lref, {}};
        const rl::GrpoLossResult r = rl::grpo_loss(toks, opt_.loss, norm);
        std::vector<double> d_rows(size_t(w.batch.B * w.batch.T), 0.0);
        for (size_t j = 0; j < idx.size(); ++j)
          for (int64_t k = 0; k < lengths[size_t(idx[j])]; ++k)
            d_rows[size_t(w.first_row[j] + k)] = r.d_logp[size_t(offsets[j] + k)];
        if (it == 0) {  // entropy of the policy at its forward, once per sample
          const Tensor logits = policy_.logits();
          for (size_t j = 0; j < idx.size(); ++j)
            for (int64_t k = 0; k < lengths[size_t(idx[j])]; ++k)
              ent.add(row_entropy(to_host_f64(logits.index0(w.first_row[j] + k))));
        }
        policy_.backward_policy(d_rows);
        gm.add(r.metrics);
        mloss += r.loss;
        window_tokens += w.batch.B * w.batch.T;
      }
      if (!std::isfinite(mloss)) throw_runtime("GRPO loss is not finite at step " + std::to_string(grpo_step_ + 1));
      gnorm.add(adamw_.step(++opt_step_, opt_.lr, 1.0));
      if (opt_.bias_update_gamma > 0) policy_.update_router_bias(opt_.bias_update_gamma);
      loss_acc.add(mloss);
      ++st.updates;
    }
  }
  if (train.empty()) log_warn("no sample carries a learning signal (every group filtered or empty): no update");
  ++grpo_step_;
  tokens_seen_ += window_tokens;
  const double t_end = now_seconds();

  // 4. metrics
  Acc rew, len;
  int64_t trunc = 0;
  std::map<std::string, Acc> terms;
  for (const GrpoSample& s : S) {
    rew.add(s.reward);
    len.add(double(s.completion.size()));
    trunc += s.truncated;
    for (const auto& [k, v] : s.rewards) terms[k].add(v);
  }
  st.grpo_step = grpo_step_;
  st.reward_mean = rew.mean();
  st.loss = loss_acc.mean();
  st.kl = gm.mean(gm.kl);
  st.entropy = ent.mean();
  st.grad_norm = gnorm.mean();
  JsonWriter w;
  w.begin_object().kv("step", grpo_step_).kv("samples", n).kv("null_rewards", d.null_rewards);
  w.kv("groups", st.groups).kv("trained_samples", st.trained).kv("reward_mean", rew.mean()).kv("reward_std", rew.std());
  if (opt_.overlong_max_len > 0) {
    Acc sh;
    for (double v : shaped) sh.add(v);
    w.kv("reward_shaped_mean", sh.mean());
  }
  for (const auto& [k, a] : terms) w.kv("rewards/" + k + "/mean", a.mean()).kv("rewards/" + k + "/std", a.std());
  if (terms.count("accuracy")) w.kv("accuracy", terms["accuracy"].mean());
  w.kv("frac_reward_zero_std", st.groups ? double(adv.zero_std_groups) / double(st.groups) : 0.0);
  if (opt_.filter.drop_zero_std_groups) w.kv("dropped_zero_std", fc.dropped_zero_std);
  if (opt_.filter.mask_truncated) w.kv("masked_truncated", fc.masked_truncated);
  w.kv("loss", st.loss).kv("pg_loss", gm.mean(gm.pg_loss));
  if (ref_) w.kv("kl", st.kl);
  w.kv("clip_frac_low", gm.frac(gm.clipped_low)).kv("clip_frac_high", gm.frac(gm.clipped_high));
  if (opt_.loss.dual_clip > 0) w.kv("clip_frac_dual", gm.frac(gm.clipped_dual));
  w.kv("ratio_mean", gm.mean(gm.ratio)).kv("ppo_kl", gm.mean(gm.neg_log_ratio));
  if (ent.n) w.kv("entropy", ent.mean());
  if (mismatch_n) w.kv("behaviour_logprob_abs_diff", mismatch / double(mismatch_n));
  w.kv("completion_len_mean", len.mean()).kv("completion_len_min", len.mn).kv("completion_len_max", len.mx);
  w.kv("truncation_rate", n ? double(trunc) / double(n) : 0.0);
  w.kv("updates", st.updates).kv("optimizer_step", opt_step_).kv("lr", opt_.lr);
  if (gnorm.n) w.kv("grad_norm", gnorm.mean());
  w.kv("temperature", d.temperature).kv("tokens", window_tokens);
  w.kv("tokens_per_s", t_end > t_update ? double(window_tokens) / (t_end - t_update) : 0.0);
  w.kv("time_s", t_end - t_start).end_object();
  st.json = w.str();
  return st;
}

void append_metrics(const std::string& path, const std::string& json_line) {
  if (path.empty()) return;
  std::FILE* f = path == "-" ? stdout : std::fopen(path.c_str(), "a");
  if (!f) throw_runtime("cannot open metrics file " + path);
  std::fputs((json_line + "\n").c_str(), f);
  std::fflush(f);
  if (f != stdout) std::fclose(f);
}

void check_grpo_paths(const GrpoOptions& o) {
  if (o.ckpt.empty()) throw_usage("--ckpt DIR is required");
  if (o.output_dir.empty()) throw_usage("-o/--output DIR is required");
  if (o.train.loss.beta > 0 && o.ref.empty()) throw_usage("--beta > 0 needs the reference model: --ref DIR");
  if (o.train.loss.agg == rl::LossAgg::seq_mean_token_sum_norm && !(o.train.loss.norm_length > 0))
    throw_usage("--loss-agg seq-mean-token-sum-norm (Dr. GRPO) needs --norm-length (the max new tokens)");
  recover_checkpoint_dir(o.ckpt);
  if (!path_exists(o.ckpt + "/config.json")) throw_bad_input("--ckpt: not a checkpoint directory (no config.json)", o.ckpt);
  if (normal_path(o.ckpt) != normal_path(o.output_dir)) {
    recover_checkpoint_dir(o.output_dir);
    if (path_exists(o.output_dir + "/config.json") && !o.overwrite)
      throw_usage(o.output_dir + " holds a checkpoint: pass --overwrite to replace it (or -o " + o.ckpt +
                  " to update the policy in place)");
  }
  if (!o.ref.empty() && !path_exists(o.ref + "/config.json"))
    throw_bad_input("--ref: not a checkpoint directory (no config.json)", o.ref);
}

GrpoStepStats run_grpo_step(const Context& ctx, const GrpoOptions& o) {
  if (o.input.empty()) throw_usage("-i/--input is required");
  check_grpo_paths(o);

  // the data first (cheap, and bad input stops the run before any model is loaded)
  const ModelConfig cfg = config_load(o.ckpt);
  GrpoReadOptions ro;
  ro.need_logprobs = o.train.use_behaviour_logprobs;
  ro.keep_lines = !o.dump_advantages.empty();
  ro.vocab_size = cfg.vocab_size;
  ro.max_positions = cfg.max_position_embeddings;
  ro.temperature = o.temperature;
  const GrpoRollouts data = read_grpo_rollouts(o.input, ro);
  if (!data.temperature_from_records && o.temperature <= 0)
    log_warn("the rollouts carry no temperature: scoring at T = 1 (pass --temperature if they were sampled otherwise)");

  std::unique_ptr<Model> policy = load_model(o.ckpt, ctx);
  std::unique_ptr<Model> ref;
  if (!o.ref.empty()) {
    ref = load_model(o.ref, ctx);
    if (ref->config().vocab_size != cfg.vocab_size)
      throw_bad_input("the reference model's vocabulary differs from the policy's", o.ref);
  }
  Tokenizer tok;
  if (path_exists(o.ckpt + "/tokenizer.model")) tok = Tokenizer::load(o.ckpt);
  else log_warn("--ckpt has no tokenizer.model: the output checkpoint will have none either");

  GrpoUpdater up(*policy, ref.get(), o.train);
  if (!o.reset_optimizer && up.resume_from(o.ckpt))
    log_info("continuing GRPO from step " + std::to_string(up.grpo_step()) + " (optimizer step " +
             std::to_string(up.optimizer_step()) + ")");
  GrpoStepStats st = up.update(data);
  log_info("rollouts: " + std::to_string(st.samples) + " samples in " + std::to_string(st.groups) + " groups" +
           (st.null_rewards ? ", " + std::to_string(st.null_rewards) + " dropped for a null reward" : ""));
  if (!o.dump_advantages.empty()) write_advantages(o.dump_advantages, data, st.advantage, st.group_mean, st.group_std);

  CheckpointDirWriter dir(o.output_dir);
  up.save_files(dir.tmp_dir(), &tok, o.save);
  dir.commit();
  append_metrics(o.metrics_path, st.json);
  char buf[200];
  std::snprintf(buf, sizeof buf, "GRPO step %lld: reward %.4f, loss %.4g, %lld updates; checkpoint %s",
                static_cast<long long>(st.grpo_step), st.reward_mean, st.loss, static_cast<long long>(st.updates),
                o.output_dir.c_str());
  log_info(buf);
  return st;
}

}  // namespace ds
